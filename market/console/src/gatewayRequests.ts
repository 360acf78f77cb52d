// Protobuf encodings of the gateway's lease requests (proto/leasehold/gateway/v1), byte for
// byte what prost produces: the signature covers these bytes, so they must match the
// provider's re-encoding. proto3 rules: fields in number order, default values left out.
import { GATEWAY_METHODS } from "./gatewayAuth";

const WIRE_VARINT = 0;
const WIRE_LENGTH_DELIMITED = 2;

class Writer {
  private readonly bytes: number[] = [];

  private varint(value: bigint): void {
    let rest = value;
    while (rest >= 0x80n) {
      this.bytes.push(Number((rest & 0x7fn) | 0x80n));
      rest >>= 7n;
    }
    this.bytes.push(Number(rest));
  }

  private key(field: number, wire: number): void {
    this.varint(BigInt((field << 3) | wire));
  }

  uint(field: number, value: bigint | number, max: bigint): this {
    const v = BigInt(value);
    if (v < 0n || v > max) throw new RangeError(`protobuf field ${field}: ${v} is outside 0..=${max}`);
    if (v !== 0n) {
      this.key(field, WIRE_VARINT);
      this.varint(v);
    }
    return this;
  }

  bool(field: number, value: boolean): this {
    return this.uint(field, value ? 1n : 0n, 1n);
  }

  bytesField(field: number, value: Uint8Array): this {
    if (value.length !== 0) {
      this.key(field, WIRE_LENGTH_DELIMITED);
      this.varint(BigInt(value.length));
      this.bytes.push(...value);
    }
    return this;
  }

  string(field: number, value: string): this {
    return this.bytesField(field, new TextEncoder().encode(value));
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

const U64 = (1n << 64n) - 1n;
const U32 = (1n << 32n) - 1n;

/// A lease request and the id its signature names.
export type LeaseRequest =
  | { method: typeof GATEWAY_METHODS.sendManifest; leaseId: bigint; manifestJson: Uint8Array }
  | { method: typeof GATEWAY_METHODS.sendOrderManifest; orderId: bigint; bidId: bigint; manifestJson: Uint8Array }
  | { method: typeof GATEWAY_METHODS.getStatus; leaseId: bigint }
  | { method: typeof GATEWAY_METHODS.streamLogs; leaseId: bigint; service: string; follow: boolean; tail: number }
  | { method: typeof GATEWAY_METHODS.streamEvents; leaseId: bigint };

/// The id the signed message carries: the order id for SendOrderManifest, else the lease id.
export function signedId(request: LeaseRequest): bigint {
  return request.method === GATEWAY_METHODS.sendOrderManifest ? request.orderId : request.leaseId;
}

export function encodeRequest(request: LeaseRequest): Uint8Array {
  const w = new Writer();
  switch (request.method) {
    case GATEWAY_METHODS.sendManifest:
      return w.uint(1, request.leaseId, U64).bytesField(2, request.manifestJson).finish();
    case GATEWAY_METHODS.sendOrderManifest:
      return w.uint(1, request.orderId, U64).uint(2, request.bidId, U64).bytesField(3, request.manifestJson).finish();
    case GATEWAY_METHODS.getStatus:
    case GATEWAY_METHODS.streamEvents:
      return w.uint(1, request.leaseId, U64).finish();
    case GATEWAY_METHODS.streamLogs:
      return w
        .uint(1, request.leaseId, U64)
        .string(2, request.service)
        .bool(3, request.follow)
        .uint(4, request.tail, U32)
        .finish();
  }
}
