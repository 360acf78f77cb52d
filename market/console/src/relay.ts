// Gateway calls from the browser. A browser cannot pin the provider's self-signed
// certificate nor speak gRPC, so the market server relays: the browser signs the call
// (gatewayAuth.ts) over the protobuf bytes it sends, the server forwards those bytes and
// headers over the pinned TLS connection unchanged. The relay route is planned (not in
// API v1 yet); its assumed shape: POST /api/v1/gateway/{provider}/{Method}, body = the
// protobuf-encoded request (application/x-protobuf), the four x-leasehold-* headers,
// answer = the gateway's reply as JSON.
import { ApiError } from "./api";
import { signCall, type MessageSigner } from "./gatewayAuth";
import { encodeRequest, signedId, type LeaseRequest } from "./gatewayRequests";
import type { Address } from "./types";

export async function relayCall(base: string, provider: Address, signer: MessageSigner, request: LeaseRequest): Promise<unknown> {
  const body = encodeRequest(request);
  const call = await signCall(signer, request.method, signedId(request), body);
  const methodName = request.method.split("/").pop() ?? "";
  let response: Response;
  try {
    response = await fetch(`${base}/api/v1/gateway/${provider.toLowerCase()}/${methodName}`, {
      method: "POST",
      headers: { "content-type": "application/x-protobuf", ...call.headers },
      body: body.slice().buffer,
    });
  } catch (error) {
    throw new ApiError("network", `cannot reach the gateway relay: ${String(error)}`, null, 0);
  }
  if (response.status === 404) {
    throw new ApiError("relay_unavailable", "this market server has no gateway relay yet (planned after API v1)", null, 404);
  }
  const json = (await response.json().catch(() => null)) as { error?: { code: string; message: string; field: string | null } } | null;
  if (!response.ok) {
    throw new ApiError(json?.error?.code ?? `http_${response.status}`, json?.error?.message ?? "relay failed", json?.error?.field ?? null, response.status);
  }
  return json;
}
