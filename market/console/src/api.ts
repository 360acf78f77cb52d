// The market API client. Every page reads through one `Api`; the backend behind it is the
// real HTTP server, or the fixtures of `fake.ts` when the page was opened with `?fake`
// (local UI work without a chain; never the default).
import type {
  Bid,
  CapacityPoint,
  ChainEvent,
  Lease,
  Order,
  Page,
  Preflight,
  PricePoint,
  Provider,
  SdlValidation,
  Status,
} from "./types";
import { parsePreflight } from "./preflight";

/// An error answer of the API, or a transport failure (`code` "network").
export class ApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly field: string | null,
    readonly status: number,
  ) {
    super(field ? `${message} (field ${field})` : message);
    this.name = "ApiError";
  }
}

export interface Backend {
  get(path: string): Promise<unknown>;
  postText(path: string, body: string, contentType: string): Promise<unknown>;
  /// Calls `onEvent` for every event of the live stream; returns a function that stops it.
  stream(onEvent: (event: ChainEvent) => void, onState: (open: boolean) => void): () => void;
}

export class HttpBackend implements Backend {
  constructor(private readonly base: string) {}

  async get(path: string): Promise<unknown> {
    return this.request(path, { method: "GET" });
  }

  async postText(path: string, body: string, contentType: string): Promise<unknown> {
    return this.request(path, { method: "POST", body, headers: { "content-type": contentType } });
  }

  private async request(path: string, init: RequestInit): Promise<unknown> {
    let response: Response;
    try {
      response = await fetch(this.base + path, init);
    } catch (error) {
      throw new ApiError("network", `cannot reach the market API at ${this.base}: ${String(error)}`, null, 0);
    }
    const text = await response.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      throw new ApiError("bad_response", `${path} answered ${response.status} with non-JSON text`, null, response.status);
    }
    if (!response.ok) {
      const body = json as { error?: { code?: string; message?: string; field?: string | null } } | null;
      throw new ApiError(
        body?.error?.code ?? `http_${response.status}`,
        body?.error?.message ?? `${path} answered ${response.status}`,
        body?.error?.field ?? null,
        response.status,
      );
    }
    return json;
  }

  stream(onEvent: (event: ChainEvent) => void, onState: (open: boolean) => void): () => void {
    // EventSource reconnects by itself and sends Last-Event-ID, which the server honours.
    const source = new EventSource(this.base + "/api/v1/stream");
    source.onopen = () => onState(true);
    source.onerror = () => onState(false);
    source.onmessage = (message) => dispatch(message.data);
    // Named SSE events (`event: LeaseCreated`) do not reach `onmessage`: listen to each kind.
    for (const kind of STREAMED_KINDS) {
      source.addEventListener(kind, (message) => dispatch((message as MessageEvent<string>).data));
    }
    function dispatch(data: string) {
      try {
        onEvent(JSON.parse(data) as ChainEvent);
      } catch {
        // A malformed frame is skipped; the next event still arrives.
      }
    }
    return () => source.close();
  }
}

/// The event kinds the pages react to (ChainEvent variant names).
export const STREAMED_KINDS = [
  "ProviderRegistered",
  "ProviderUpdated",
  "OrderCreated",
  "OrderCancelled",
  "BidPlaced",
  "BidWithdrawn",
  "LeaseCreated",
  "LeaseConfirmed",
  "LeaseClosed",
  "PaymentWithdrawn",
  "EscrowToppedUp",
] as const;

function query(params: Record<string, string | number | undefined>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export class Api {
  constructor(readonly backend: Backend) {}

  status(): Promise<Status> {
    return this.backend.get("/api/v1/status") as Promise<Status>;
  }
  providers(): Promise<Page<Provider>> {
    return this.backend.get(`/api/v1/providers${query({ limit: 500 })}`) as Promise<Page<Provider>>;
  }
  provider(address: string): Promise<Provider> {
    return this.backend.get(`/api/v1/providers/${address.toLowerCase()}`) as Promise<Provider>;
  }
  orders(filter: { tenant?: string; state?: Order["state"] }): Promise<Page<Order>> {
    return this.backend.get(`/api/v1/orders${query({ ...filter, tenant: filter.tenant?.toLowerCase() })}`) as Promise<Page<Order>>;
  }
  order(id: string): Promise<Order> {
    return this.backend.get(`/api/v1/orders/${id}`) as Promise<Order>;
  }
  bids(orderId: string): Promise<Page<Bid>> {
    return this.backend.get(`/api/v1/orders/${orderId}/bids`) as Promise<Page<Bid>>;
  }
  leases(filter: { tenant?: string; provider?: string; state?: Lease["state"]; limit?: number }): Promise<Page<Lease>> {
    return this.backend.get(
      `/api/v1/leases${query({ ...filter, tenant: filter.tenant?.toLowerCase(), provider: filter.provider?.toLowerCase() })}`,
    ) as Promise<Page<Lease>>;
  }
  lease(id: string): Promise<Lease> {
    return this.backend.get(`/api/v1/leases/${id}`) as Promise<Lease>;
  }
  prices(since: number, gpuModel?: string): Promise<{ items: PricePoint[] }> {
    return this.backend.get(`/api/v1/prices${query({ since, gpu_model: gpuModel })}`) as Promise<{ items: PricePoint[] }>;
  }
  capacityHistory(since: number, provider?: string): Promise<{ items: CapacityPoint[] }> {
    return this.backend.get(`/api/v1/capacity/history${query({ since, provider: provider?.toLowerCase() })}`) as Promise<{
      items: CapacityPoint[];
    }>;
  }
  validateSdl(yaml: string): Promise<SdlValidation> {
    return this.backend.postText("/api/v1/sdl/validate", yaml, "application/yaml") as Promise<SdlValidation>;
  }
  /// Which providers can serve each group (an SDL that does not validate is an ApiError).
  async preflight(yaml: string): Promise<Preflight> {
    return parsePreflight(await this.backend.postText("/api/v1/preflight", yaml, "application/yaml"));
  }
}
