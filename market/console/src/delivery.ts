// The console's half of `tenant deploy` after an order: once the order is a lease, send
// the deployment's manifest to the winning provider (through the relay, signed by the
// tenant) and follow the lease's status until every replica runs, then show its URLs.
// The manifest is remembered per order in the browser's storage when the order is posted,
// so a reload, or a lease made later (accepted on another page, or by `settle`), still
// gets its manifest.
import { ApiError } from "./api";
import { GATEWAY_METHODS, type MessageSigner } from "./gatewayAuth";
import { relayCall } from "./relay";
import type { Address } from "./types";

const STORAGE_KEY = "leasehold.console.deliveries";

/// The gateway's `LeaseStatus` as the relay answers it.
export interface LeaseStatusView {
  lease_id: string;
  state: string;
  message: string;
  revision: number;
  services: { name: string; ready_replicas: number; total_replicas: number; uris: string[]; hostnames: string[]; states: string[] }[];
}

/// What the console remembers of one posted order until its lease runs.
export interface PendingDelivery {
  orderId: string;
  manifestJson: string;
  /// Set once the provider took the manifest: a reload polls the status instead of resending.
  sentToLease: string | null;
}

/// The key/value storage the deliveries live in (`localStorage` in the browser).
export interface KeyValue {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export class Deliveries {
  constructor(private readonly storage: KeyValue) {}

  all(): PendingDelivery[] {
    try {
      const parsed = JSON.parse(this.storage.getItem(STORAGE_KEY) ?? "[]") as unknown;
      return Array.isArray(parsed) ? parsed.filter(isPendingDelivery) : [];
    } catch {
      // A corrupted entry must not break the page; the tenant can still send with the CLI.
      return [];
    }
  }

  /// Remembers the manifest of a posted order (posting the same order twice keeps one entry).
  remember(orderId: string, manifestJson: string): void {
    this.save([...this.all().filter((entry) => entry.orderId !== orderId), { orderId, manifestJson, sentToLease: null }]);
  }

  markSent(orderId: string, leaseId: string): void {
    this.save(this.all().map((entry) => (entry.orderId === orderId ? { ...entry, sentToLease: leaseId } : entry)));
  }

  forget(orderId: string): void {
    this.save(this.all().filter((entry) => entry.orderId !== orderId));
  }

  private save(entries: PendingDelivery[]): void {
    this.storage.setItem(STORAGE_KEY, JSON.stringify(entries));
  }
}

function isPendingDelivery(value: unknown): value is PendingDelivery {
  const entry = value as PendingDelivery;
  return (
    typeof entry === "object" &&
    entry !== null &&
    typeof entry.orderId === "string" &&
    typeof entry.manifestJson === "string" &&
    (entry.sentToLease === null || typeof entry.sentToLease === "string")
  );
}

/// Every service has all its replicas ready (the rule of `tenant deploy`).
export function isRunning(status: LeaseStatusView): boolean {
  return (
    status.state.toLowerCase() === "running" &&
    status.services.length > 0 &&
    status.services.every((service) => service.total_replicas > 0 && service.ready_replicas >= service.total_replicas)
  );
}

/// The lease failed or ended for good: waiting longer changes nothing.
export function isOver(status: LeaseStatusView): boolean {
  return ["closing", "closed", "failed"].includes(status.state.toLowerCase());
}

/// Relay errors a retry cannot fix: the manifest itself refused, the gateway's certificate
/// not the registered one, the caller not the lease's tenant. Everything else (the provider
/// has not seen the lease yet, a network failure) is retried.
export function isFinal(error: unknown): boolean {
  return (
    error instanceof ApiError &&
    ["gateway_invalid_argument", "gateway_certificate_mismatch", "gateway_endpoint_invalid", "gateway_permission_denied"].includes(error.code)
  );
}

/// Delay before retry `attempt` (0-based): doubling from 250 ms, at most 4 s.
export function retryDelayMs(attempt: number): number {
  return Math.min(4000, 250 * 2 ** Math.min(attempt, 4));
}

export interface DeliveryTarget {
  base: string;
  provider: Address;
  leaseId: string;
  signer: MessageSigner;
}

export type DeliveryProgress = { step: "sending"; attempt: number; lastError: string | null } | { step: "starting"; status: LeaseStatusView | null; lastError: string | null };

const SEND_DEADLINE_MS = 5 * 60_000;
const RUN_DEADLINE_MS = 10 * 60_000;
const STATUS_POLL_MS = 1000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/// Sends the manifest (unless `alreadySent`), retrying while the provider has not seen the
/// lease, then polls the status until the lease runs (resolves with it) or is over, the
/// provider refuses for good, or the deadlines pass (rejects).
export async function deliver(
  target: DeliveryTarget,
  manifestJson: string,
  alreadySent: boolean,
  onSent: () => void,
  onProgress: (progress: DeliveryProgress) => void,
): Promise<LeaseStatusView> {
  const leaseId = BigInt(target.leaseId);
  const describe = (error: unknown) => (error instanceof Error ? error.message : String(error));
  if (!alreadySent) {
    const manifest = new TextEncoder().encode(manifestJson);
    const deadline = Date.now() + SEND_DEADLINE_MS;
    let lastError: string | null = null;
    for (let attempt = 0; ; attempt += 1) {
      onProgress({ step: "sending", attempt, lastError });
      try {
        await relayCall(target.base, target.provider, target.signer, { method: GATEWAY_METHODS.sendManifest, leaseId, manifestJson: manifest });
        break;
      } catch (error) {
        if (isFinal(error)) throw new Error(`the provider refused the manifest of lease ${target.leaseId}: ${describe(error)}`);
        lastError = describe(error);
      }
      if (Date.now() >= deadline) throw new Error(`could not deliver the manifest of lease ${target.leaseId}: ${lastError}`);
      await sleep(retryDelayMs(attempt));
    }
    onSent();
  }
  const deadline = Date.now() + RUN_DEADLINE_MS;
  let status: LeaseStatusView | null = null;
  let lastError: string | null = null;
  for (;;) {
    onProgress({ step: "starting", status, lastError });
    let reply: LeaseStatusView | null = null;
    try {
      reply = (await relayCall(target.base, target.provider, target.signer, { method: GATEWAY_METHODS.getStatus, leaseId })) as LeaseStatusView;
    } catch (error) {
      if (!(error instanceof ApiError) || isFinal(error)) throw error;
      lastError = describe(error);
    }
    if (reply) {
      status = reply;
      lastError = null;
      if (isRunning(reply)) return reply;
      if (isOver(reply)) throw new Error(`lease ${target.leaseId} is ${reply.state}: ${reply.message}`);
    }
    if (Date.now() >= deadline) throw new Error(`lease ${target.leaseId} did not run within ${RUN_DEADLINE_MS / 60_000} minutes: ${lastError ?? status?.state ?? "no status"}`);
    await sleep(STATUS_POLL_MS);
  }
}
