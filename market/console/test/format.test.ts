import assert from "node:assert/strict";
import { test } from "node:test";
import { formatUnits, parseUnits, share } from "../src/format";

test("token amounts format without floating point", () => {
  assert.equal(formatUnits("1500000", 6, "tUSD"), "1.5 tUSD");
  assert.equal(formatUnits("340282366920938463463374607431768211455", 6), "340282366920938463463374607431768.211455");
  assert.equal(formatUnits(0n, 6), "0");
});

test("typed amounts parse to base units or name the field", () => {
  assert.equal(parseUnits("1.25", 6, "deposit"), 1_250_000n);
  assert.equal(parseUnits("7", 6, "deposit"), 7_000_000n);
  assert.throws(() => parseUnits("-1", 6, "deposit"), /deposit: `-1` is not a non-negative decimal number/);
  assert.throws(() => parseUnits("0.0000001", 6, "top-up amount"), /top-up amount: at most 6 decimal places/);
});

test("share is 0 for an empty total", () => {
  assert.equal(share("5", "0"), 0);
  assert.equal(share("1", "4"), 0.25);
});
