import assert from "node:assert/strict";
import { test } from "node:test";
import { parsePreflight, preflightView } from "../src/preflight";

const A = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";
const B = "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc";
const KEY = `0x${"ab".repeat(32)}`;

/// An answer as the market server gives it (`tenant preflight --output json`'s shape).
function answer(): Record<string, unknown> {
  return {
    groups: [
      {
        group: "sd",
        replicas: 2,
        cpu_milli: 2000,
        memory_mib: 4096,
        storage_mib: 10240,
        gpu_count: 2,
        max_price_per_hour: "10000000",
        eligible: [
          {
            provider: A,
            endpoint: "https://a.example:8443",
            gpu_models: [{ key: KEY, name: "nvidia/rtx4090/24Gi/pcie" }],
            attributes: [{ key: KEY, name: null }],
            estimated_price_per_hour: "4500000",
          },
          { provider: B, endpoint: "https://b.example:8443", gpu_models: [{ key: KEY, name: null }], attributes: [], estimated_price_per_hour: null },
        ],
        ineligible: [
          {
            provider: B,
            endpoint: "https://b.example:8443",
            gpu_models: [],
            attributes: [],
            reason: { kind: "gpu_model", message: "has no GPUs, but the order needs some" },
          },
        ],
      },
    ],
  };
}

test("each group lists who can serve it with GPU names and price, and why the others cannot", () => {
  const [group, ...rest] = preflightView(parsePreflight(answer()), 6, "tUSD");
  assert.equal(rest.length, 0);
  assert.ok(group);
  assert.equal(group.group, "sd");
  assert.match(group.summary, /max 10 tUSD\/h: 2 of 3 provider\(s\) can serve it/);
  assert.deepEqual(
    group.eligible.map((row) => [row.provider, row.gpuModels, row.detail]),
    [
      [A, "nvidia/rtx4090/24Gi/pcie", "~4.5 tUSD/h from its recent bids"],
      [B, "0xabab…abab", "price unknown until it bids"],
    ],
  );
  assert.deepEqual(
    group.ineligible.map((row) => [row.provider, row.gpuModels, row.detail]),
    [[B, "no GPUs", "has no GPUs, but the order needs some [gpu_model]"]],
  );
});

test("a malformed answer is refused naming the field", () => {
  const bad = answer();
  const group = (bad.groups as Record<string, unknown>[])[0] as Record<string, unknown>;
  (group.eligible as Record<string, unknown>[])[0] = { ...(group.eligible as Record<string, unknown>[])[0], estimated_price_per_hour: 4.5 };
  assert.throws(() => parsePreflight(bad), /groups\[0\]\.eligible\[0\]\.estimated_price_per_hour is not a string/);
  const fresh = (answer().groups as Record<string, unknown>[])[0];
  assert.throws(() => parsePreflight({ groups: [{ ...fresh, ineligible: [{ provider: B }] }] }), /groups\[0\]\.ineligible\[0\]\.endpoint is not a string/);
  assert.throws(() => parsePreflight(null), /body is not an object/);
});
