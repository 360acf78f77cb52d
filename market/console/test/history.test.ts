import assert from "node:assert/strict";
import { test } from "node:test";
import { chainHistory, providerRow } from "../src/history";
import type { Lease } from "../src/types";

const lease: Lease = {
  id: "7",
  order_id: "7",
  bid_id: "1",
  tenant: "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
  provider: "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc",
  price_per_hour: "8000",
  state: "closed",
  escrow_left: "0",
  paid_total: "2666",
  runs_out_at: null,
  created_block: 20,
  created_at: 1_000,
  confirmed: true,
  confirmed_at: 1_004,
  closed: { block: 40, at: 1_900, reason: "tenant_request", refund: "2521334", paid: "1333" },
  payments: [{ block: 30, at: 1_700, amount: "1333", total_paid: "1333" }],
  top_ups: [{ block: 25, at: 1_004, from: "0x70997970c51812dc3a010c7d01b50e0d17dc79c8", amount: "2500000", escrow: "2524000" }],
};

test("the chain history is in time order, same-time rows in the contract's order", () => {
  const rows = chainHistory(lease, 6, "tUSD");
  assert.deepEqual(
    rows.map((row) => [row.at, row.what.split(" ")[0]]),
    [
      [1_000, "lease"],
      [1_004, "delivery"],
      [1_004, "topped"],
      [1_700, "provider"],
      [1_900, "closed"],
    ],
  );
  assert.ok(rows.every((row) => row.source === "chain"));
  assert.match(rows[2]!.what, /topped up 2\.5 tUSD by 0x7099…79c8 \(escrow 2\.524 tUSD\)/);
  assert.match(rows[4]!.what, /closed \(tenant_request\): 0\.001333 tUSD paid to the provider, 2\.521334 tUSD refunded/);
});

test("an unconfirmed open lease has only its creation", () => {
  const open: Lease = { ...lease, state: "active", confirmed: false, confirmed_at: null, closed: null, payments: [], top_ups: [] };
  assert.equal(chainHistory(open, 6, "tUSD").length, 1);
});

test("a provider event becomes a row at its second", () => {
  const row = providerRow({ timestamp_unix_nanos: "1700000000999999999", kind: "exec_start", service: "web", message: "true" });
  assert.deepEqual(row, { at: 1_700_000_000, source: "provider", what: "exec_start web: true" });
  assert.equal(providerRow({ timestamp_unix_nanos: "not a number", kind: "deployed", service: "", message: "" }).at, 0);
  assert.equal(providerRow({ timestamp_unix_nanos: "1", kind: "deployed", service: "", message: "" }).what, "deployed");
});
