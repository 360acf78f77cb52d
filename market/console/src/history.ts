// A lease's history for the leases page's Events view: what the chain recorded (from the
// index), oldest first, and the provider's own lease events as the gateway streams them.

import { formatUnits, shortAddress } from "./format";
import type { Lease } from "./types";

/// One row of the history: when (unix seconds), who said it, what happened.
export interface HistoryRow {
  at: number;
  source: "chain" | "provider";
  what: string;
}

/// A provider's lease event as the relay streams it.
export interface RelayedLeaseEvent {
  timestamp_unix_nanos: string;
  kind: string;
  service: string;
  message: string;
}

/// The lease's on-chain history from its indexed detail (`GET /api/v1/leases/{id}`), oldest
/// first; same-time rows keep the contract's order (created, confirmed, payments, top-ups,
/// close).
export function chainHistory(lease: Lease, decimals: number, symbol: string): HistoryRow[] {
  const amount = (value: string) => formatUnits(value, decimals, symbol);
  const rows: HistoryRow[] = [
    { at: lease.created_at, source: "chain", what: `lease created at ${amount(lease.price_per_hour)}/h (block ${lease.created_block})` },
  ];
  if (lease.confirmed_at !== null && lease.confirmed_at !== undefined) {
    rows.push({ at: lease.confirmed_at, source: "chain", what: "delivery confirmed by the provider: payment accrues from here" });
  }
  for (const payment of lease.payments ?? []) {
    rows.push({ at: payment.at, source: "chain", what: `provider withdrew ${amount(payment.amount)} (paid in all ${amount(payment.total_paid)})` });
  }
  for (const topUp of lease.top_ups ?? []) {
    rows.push({ at: topUp.at, source: "chain", what: `topped up ${amount(topUp.amount)} by ${shortAddress(topUp.from)} (escrow ${amount(topUp.escrow)})` });
  }
  if (lease.closed) {
    rows.push({
      at: lease.closed.at,
      source: "chain",
      what: `closed (${lease.closed.reason}): ${amount(lease.closed.paid)} paid to the provider, ${amount(lease.closed.refund)} refunded`,
    });
  }
  // Array.prototype.sort is stable: equal times keep the order above.
  return rows.sort((a, b) => a.at - b.at);
}

/// A provider's lease event as a history row.
export function providerRow(event: RelayedLeaseEvent): HistoryRow {
  let at = 0;
  try {
    at = Number(BigInt(event.timestamp_unix_nanos) / 1_000_000_000n);
  } catch {
    // a malformed timestamp shows as the epoch rather than dropping the event
  }
  const service = event.service ? ` ${event.service}` : "";
  const message = event.message ? `: ${event.message}` : "";
  return { at, source: "provider", what: `${event.kind}${service}${message}` };
}
