// Gateway calls from the browser. A browser cannot pin the provider's self-signed
// certificate nor speak gRPC, so the market server relays (API.md, "Gateway relay"): the
// browser signs the call (gatewayAuth.ts) over the protobuf bytes it sends, and the server
// forwards those bytes and headers over the pinned TLS connection unchanged.
// POST /api/v1/gateway/{provider}/{Method}, body = the protobuf-encoded request
// (application/x-protobuf), the four x-leasehold-* headers; unary answers are the gateway's
// reply as JSON, streams are Server-Sent Events read here from the fetch body (EventSource
// cannot POST).
import { ApiError } from "./api";
import { signCall, type MessageSigner } from "./gatewayAuth";
import { encodeRequest, signedId, type LeaseRequest } from "./gatewayRequests";
import type { Address } from "./types";

interface ErrorBody {
  error?: { code: string; message: string; field: string | null };
}

function errorOf(json: ErrorBody | null, status: number): ApiError {
  return new ApiError(json?.error?.code ?? `http_${status}`, json?.error?.message ?? "relay failed", json?.error?.field ?? null, status);
}

async function post(base: string, provider: Address, signer: MessageSigner, request: LeaseRequest, signal?: AbortSignal): Promise<Response> {
  const body = encodeRequest(request);
  const call = await signCall(signer, request.method, signedId(request), body);
  const methodName = request.method.split("/").pop() ?? "";
  let response: Response;
  try {
    response = await fetch(`${base}/api/v1/gateway/${provider.toLowerCase()}/${methodName}`, {
      method: "POST",
      headers: { "content-type": "application/x-protobuf", ...call.headers },
      body: body.slice().buffer,
      signal,
    });
  } catch (error) {
    throw new ApiError("network", `cannot reach the gateway relay: ${String(error)}`, null, 0);
  }
  if (!response.ok) {
    throw errorOf((await response.json().catch(() => null)) as ErrorBody | null, response.status);
  }
  return response;
}

/// A unary call (SendManifest, SendOrderManifest, GetStatus): the gateway's reply as JSON.
export async function relayCall(base: string, provider: Address, signer: MessageSigner, request: LeaseRequest): Promise<unknown> {
  const response = await post(base, provider, signer, request);
  return (await response.json()) as unknown;
}

/// One Server-Sent Event.
export interface SseEvent {
  event: string;
  data: string;
}

/// Splits SSE text into complete events; returns them and the unfinished rest (keep it for
/// the next chunk). Comments (`: keepalive`) are dropped.
export function parseSse(buffer: string): { events: SseEvent[]; rest: string } {
  const normalized = buffer.replace(/\r\n?/g, "\n");
  const blocks = normalized.split("\n\n");
  const rest = blocks.pop() ?? "";
  const events: SseEvent[] = [];
  for (const block of blocks) {
    let event = "message";
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (data.length > 0) events.push({ event, data: data.join("\n") });
  }
  return { events, rest };
}

/// A streaming call (StreamLogs, StreamEvents): calls `onMessage` with each message's JSON
/// until the provider ends the stream (resolves), it fails (rejects with the relay's error),
/// or `signal` aborts.
export async function relayStream(
  base: string,
  provider: Address,
  signer: MessageSigner,
  request: LeaseRequest,
  onMessage: (message: unknown) => void,
  signal?: AbortSignal,
): Promise<void> {
  const response = await post(base, provider, signer, request, signal);
  if (!response.body) throw new ApiError("relay_stream", "the relay's answer has no body", null, response.status);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    const parsed = parseSse(buffer + value);
    buffer = parsed.rest;
    for (const { event, data } of parsed.events) {
      if (event === "end") return;
      if (event === "error") throw errorOf(JSON.parse(data) as ErrorBody, 502);
      onMessage(JSON.parse(data) as unknown);
    }
  }
  // The connection closed without the relay's `end` event: the stream was cut.
  throw new ApiError("relay_stream", "the log stream was cut before its end", null, 0);
}
