import assert from "node:assert/strict";
import { test } from "node:test";
import { ApiError } from "../src/api";
import { Deliveries, isFinal, isOver, isRunning, retryDelayMs, type KeyValue, type LeaseStatusView } from "../src/delivery";

function memory(): KeyValue & { data: Map<string, string> } {
  const data = new Map<string, string>();
  return { data, getItem: (key) => data.get(key) ?? null, setItem: (key, value) => void data.set(key, value) };
}

function status(state: string, ...replicas: [number, number][]): LeaseStatusView {
  return {
    lease_id: "7",
    state,
    message: "",
    revision: 1,
    services: replicas.map(([ready, total], index) => ({ name: `s${index}`, ready_replicas: ready, total_replicas: total, uris: [], hostnames: [], states: [] })),
  };
}

test("a posted order's manifest is remembered until it is sent and the lease runs", () => {
  const storage = memory();
  const deliveries = new Deliveries(storage);
  deliveries.remember("5", '{"a":1}');
  deliveries.remember("6", '{"b":2}');
  deliveries.remember("5", '{"a":2}');
  assert.deepEqual(
    deliveries.all().map((entry) => [entry.orderId, entry.manifestJson, entry.sentToLease]),
    [
      ["6", '{"b":2}', null],
      ["5", '{"a":2}', null],
    ],
  );
  deliveries.markSent("5", "5");
  assert.equal(new Deliveries(storage).all().find((entry) => entry.orderId === "5")?.sentToLease, "5", "survives a reload");
  deliveries.forget("5");
  assert.deepEqual(
    deliveries.all().map((entry) => entry.orderId),
    ["6"],
  );
});

test("corrupted or foreign storage reads as no deliveries, never as a crash", () => {
  const storage = memory();
  storage.setItem("leasehold.console.deliveries", "{not json");
  assert.deepEqual(new Deliveries(storage).all(), []);
  storage.setItem("leasehold.console.deliveries", JSON.stringify([{ orderId: 5 }, null, { orderId: "1", manifestJson: "{}", sentToLease: null }]));
  assert.deepEqual(
    new Deliveries(storage).all().map((entry) => entry.orderId),
    ["1"],
  );
});

test("running means every replica of every service is ready, as tenant deploy says", () => {
  assert.equal(isRunning(status("Running", [1, 1], [2, 2])), true);
  assert.equal(isRunning(status("running", [1, 1])), true);
  assert.equal(isRunning(status("Running", [1, 1], [1, 2])), false, "one replica short");
  assert.equal(isRunning(status("Running")), false, "no services yet");
  assert.equal(isRunning(status("Running", [0, 0])), false, "no replicas");
  assert.equal(isRunning(status("Deploying", [1, 1])), false);
  assert.equal(isOver(status("Closed")), true);
  assert.equal(isOver(status("failed")), true);
  assert.equal(isOver(status("AwaitingManifest")), false);
});

test("only refusals a retry cannot change stop the delivery", () => {
  const relay = (code: string) => new ApiError(code, "x", null, 400);
  assert.equal(isFinal(relay("gateway_invalid_argument")), true);
  assert.equal(isFinal(relay("gateway_certificate_mismatch")), true);
  assert.equal(isFinal(relay("gateway_permission_denied")), true);
  assert.equal(isFinal(relay("gateway_not_found")), false, "the provider has not seen the lease yet");
  assert.equal(isFinal(relay("gateway_unreachable")), false);
  assert.equal(isFinal(relay("network")), false);
  assert.equal(isFinal(new Error("other")), false);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 60].map(retryDelayMs), [250, 500, 1000, 2000, 4000, 4000, 4000]);
});
