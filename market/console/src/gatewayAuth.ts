// Signed lease calls, exactly as the CLI signs them (Rust: `leasehold_proto::auth`).
//
// The tenant signs, EIP-191 `personal_sign`, the text
//   leasehold:{method}:{leaseId}:{timestamp}:{nonce}:{keccak256(body)}
// where `method` is the full gRPC path, `leaseId` (the order id for SendOrderManifest) and
// `timestamp` (unix seconds) are decimal, `nonce` is 16 random bytes and the body hash is
// keccak256 over the protobuf-encoded request, both 0x-prefixed lower-case hex. The provider
// accepts only low-s signatures, a clock skew of at most 5 minutes and no replays.
// test/vectors/gateway-auth.json holds vectors produced by the Rust code.
import { bytesToHex, getAddress, hexToBytes, keccak256, type Hex } from "viem";
import type { Address } from "./types";

export const GATEWAY_METHODS = {
  sendManifest: "/leasehold.gateway.v1.Lease/SendManifest",
  sendOrderManifest: "/leasehold.gateway.v1.Lease/SendOrderManifest",
  getStatus: "/leasehold.gateway.v1.Lease/GetStatus",
  streamLogs: "/leasehold.gateway.v1.Lease/StreamLogs",
  streamEvents: "/leasehold.gateway.v1.Lease/StreamEvents",
  shell: "/leasehold.gateway.v1.Lease/Shell",
} as const;

export type GatewayMethod = (typeof GATEWAY_METHODS)[keyof typeof GATEWAY_METHODS];

/// The gRPC metadata keys (HTTP headers on the relay) of a signed call.
export const METADATA = {
  address: "x-leasehold-address",
  timestamp: "x-leasehold-timestamp",
  nonce: "x-leasehold-nonce",
  signature: "x-leasehold-signature",
} as const;

const U64_MAX = (1n << 64n) - 1n;
/// Order of secp256k1; a signature's `s` must be at most half of it.
const SECP256K1_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;

export class GatewayAuthError extends Error {
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`${field}: ${reason}`);
    this.name = "GatewayAuthError";
  }
}

function checkU64(field: string, value: bigint): void {
  if (value < 0n || value > U64_MAX) {
    throw new GatewayAuthError(field, `${value} is outside 0..=2^64-1`);
  }
}

/// The text the tenant signs for one call.
export function signingMessage(method: GatewayMethod, leaseId: bigint, timestamp: bigint, nonce: Hex, body: Uint8Array): string {
  if (!Object.values(GATEWAY_METHODS).includes(method)) {
    throw new GatewayAuthError("method", `\`${method}\` is not a signed lease call`);
  }
  checkU64("leaseId", leaseId);
  checkU64("timestamp", timestamp);
  if (!/^0x[0-9a-f]{32}$/.test(nonce)) {
    throw new GatewayAuthError("nonce", "expected 16 bytes of 0x-prefixed lower-case hex");
  }
  return `leasehold:${method}:${leaseId}:${timestamp}:${nonce}:${keccak256(body)}`;
}

/// 16 fresh random bytes.
export function newNonce(): Hex {
  return bytesToHex(crypto.getRandomValues(new Uint8Array(16)));
}

/// Rewrites a 65-byte `r || s || v` signature into its low-s twin when `s` is high (the
/// provider refuses high s; both recover the same signer). Wallets normally sign low-s already.
export function toLowS(signature: Hex): Hex {
  const bytes = hexToBytes(signature);
  if (bytes.length !== 65) {
    throw new GatewayAuthError("signature", `expected 65 bytes, got ${bytes.length}`);
  }
  const s = BigInt(bytesToHex(bytes.slice(32, 64)));
  if (s <= SECP256K1_N / 2n) {
    return bytesToHex(bytes);
  }
  const lowS = hexToBytes(`0x${(SECP256K1_N - s).toString(16).padStart(64, "0")}`);
  bytes.set(lowS, 32);
  const v = bytes[64] ?? 0;
  // v is 27/28 (or 0/1): the twin has the other parity.
  bytes[64] = v === 27 ? 28 : v === 28 ? 27 : v ^ 1;
  return bytesToHex(bytes);
}

/// Anything that can EIP-191-sign a text as `address`: a viem account or an EIP-1193 wallet.
export interface MessageSigner {
  address: Address;
  signMessage(message: string): Promise<Hex>;
}

export interface SignedCall {
  method: GatewayMethod;
  leaseId: bigint;
  body: Uint8Array;
  /// The four metadata values, keyed by their header names.
  headers: Record<(typeof METADATA)[keyof typeof METADATA], string>;
}

/// Signs one call as `signer` (`nonce` and `timestamp` are fresh unless given, for tests).
export async function signCall(
  signer: MessageSigner,
  method: GatewayMethod,
  leaseId: bigint,
  body: Uint8Array,
  options: { timestamp?: bigint; nonce?: Hex } = {},
): Promise<SignedCall> {
  const timestamp = options.timestamp ?? BigInt(Math.floor(Date.now() / 1000));
  const nonce = options.nonce ?? newNonce();
  const message = signingMessage(method, leaseId, timestamp, nonce, body);
  const signature = toLowS(await signer.signMessage(message));
  return {
    method,
    leaseId,
    body,
    headers: {
      [METADATA.address]: getAddress(signer.address),
      [METADATA.timestamp]: timestamp.toString(),
      [METADATA.nonce]: nonce,
      [METADATA.signature]: signature.toLowerCase(),
    } as SignedCall["headers"],
  };
}
