// Checks the TypeScript signer against vectors produced by the Rust code the CLI and the
// provider use (`LEASEHOLD_BLESS=1 cargo test -p leasehold-proto --test it console_vectors`).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { bytesToHex, hexToBytes, recoverMessageAddress, type Hex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { GATEWAY_METHODS, GatewayAuthError, METADATA, signCall, signingMessage, toLowS, type GatewayMethod } from "../src/gatewayAuth";
import { encodeRequest, signedId, type LeaseRequest } from "../src/gatewayRequests";

interface Vector {
  private_key: Hex;
  address: string;
  method: GatewayMethod;
  lease_id: string;
  timestamp: number;
  nonce: Hex;
  request: Record<string, string | number | boolean>;
  body_hex: Hex;
  message: string;
  signature: Hex;
}

// Bundled into test-dist/, run from the package root by `npm test`.
const vectors = JSON.parse(readFileSync("test/vectors/gateway-auth.json", "utf8")) as Vector[];

function requestOf(vector: Vector): LeaseRequest {
  const r = vector.request;
  const manifestJson = new TextEncoder().encode(String(r.manifest_json ?? ""));
  switch (vector.method) {
    case GATEWAY_METHODS.sendManifest:
      return { method: vector.method, leaseId: BigInt(String(r.lease_id)), manifestJson };
    case GATEWAY_METHODS.sendOrderManifest:
      return { method: vector.method, orderId: BigInt(String(r.order_id)), bidId: BigInt(String(r.bid_id)), manifestJson };
    case GATEWAY_METHODS.getStatus:
    case GATEWAY_METHODS.streamEvents:
      return { method: vector.method, leaseId: BigInt(String(r.lease_id)) };
    case GATEWAY_METHODS.streamLogs:
      return { method: vector.method, leaseId: BigInt(String(r.lease_id)), service: String(r.service), follow: Boolean(r.follow), tail: Number(r.tail) };
    default:
      throw new Error(`no vector support for ${vector.method}`);
  }
}

test("there are vectors for every request kind the console sends", () => {
  const methods = new Set(vectors.map((v) => v.method));
  for (const method of [GATEWAY_METHODS.sendManifest, GATEWAY_METHODS.sendOrderManifest, GATEWAY_METHODS.getStatus, GATEWAY_METHODS.streamLogs, GATEWAY_METHODS.streamEvents]) {
    assert.ok(methods.has(method), `missing a vector for ${method}`);
  }
});

for (const [index, vector] of vectors.entries()) {
  test(`vector ${index} (${vector.method}): protobuf body, message and signature match Rust`, async () => {
    const request = requestOf(vector);
    const body = encodeRequest(request);
    assert.equal(bytesToHex(body), vector.body_hex);
    assert.equal(signedId(request).toString(), vector.lease_id);
    assert.equal(signingMessage(vector.method, BigInt(vector.lease_id), BigInt(vector.timestamp), vector.nonce, body), vector.message);
    const account = privateKeyToAccount(vector.private_key);
    const call = await signCall({ address: account.address, signMessage: (message) => account.signMessage({ message }) }, vector.method, BigInt(vector.lease_id), body, {
      timestamp: BigInt(vector.timestamp),
      nonce: vector.nonce,
    });
    assert.equal(call.headers[METADATA.signature], vector.signature);
    assert.equal(call.headers[METADATA.address], vector.address);
    assert.equal(call.headers[METADATA.timestamp], String(vector.timestamp));
    assert.equal(call.headers[METADATA.nonce], vector.nonce);
  });
}

test("a high-s signature is turned into its low-s twin that recovers the same signer", async () => {
  const vector = vectors[0]!;
  const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
  const bytes = hexToBytes(vector.signature);
  const s = BigInt(bytesToHex(bytes.slice(32, 64)));
  bytes.set(hexToBytes(`0x${(n - s).toString(16).padStart(64, "0")}`), 32);
  bytes[64] = bytes[64] === 27 ? 28 : 27;
  const highS = bytesToHex(bytes);
  assert.notEqual(highS, vector.signature);
  assert.equal(await recoverMessageAddress({ message: vector.message, signature: highS }), vector.address);
  assert.equal(toLowS(highS), vector.signature);
  assert.equal(toLowS(vector.signature), vector.signature);
});

test("bad inputs are refused with the field named", () => {
  const body = new Uint8Array();
  assert.throws(() => signingMessage("/leasehold.gateway.v1.Provider/GetStatus" as GatewayMethod, 1n, 1n, `0x${"42".repeat(16)}`, body), (e: unknown) => e instanceof GatewayAuthError && e.field === "method");
  assert.throws(() => signingMessage(GATEWAY_METHODS.getStatus, 1n << 64n, 1n, `0x${"42".repeat(16)}`, body), (e: unknown) => e instanceof GatewayAuthError && e.field === "leaseId");
  assert.throws(() => signingMessage(GATEWAY_METHODS.getStatus, 1n, 1n, "0x42", body), (e: unknown) => e instanceof GatewayAuthError && e.field === "nonce");
  assert.throws(() => toLowS("0x1234"), (e: unknown) => e instanceof GatewayAuthError && e.field === "signature");
});

test("the Rust crate's own fixed message is reproduced (keccak of an empty body)", () => {
  assert.equal(
    signingMessage(GATEWAY_METHODS.sendManifest, 7n, 1_700_000_000n, `0x${"42".repeat(16)}`, new Uint8Array()),
    "leasehold:/leasehold.gateway.v1.Lease/SendManifest:7:1700000000:0x42424242424242424242424242424242:0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470",
  );
});
