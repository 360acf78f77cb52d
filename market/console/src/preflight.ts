// `POST /api/v1/preflight`: which providers can serve each group of an SDL and why the
// others cannot: the market server's answer is the tenant CLI's `preflight --output json`,
// made by the same library. This module checks its shape and turns it into rows; the deploy
// page renders them.
import { formatUnits, shortAddress } from "./format";
import type { NamedKey, Preflight, PreflightGroup } from "./types";

/// One provider as the deploy page lists it.
export interface PreflightRow {
  provider: string;
  endpoint: string;
  /// GPU models by their published or recovered names (a short key where nobody named one).
  gpuModels: string;
  /// Eligible providers: the estimate from its recent bids; the others: why not.
  detail: string;
}

export interface PreflightGroupView {
  group: string;
  summary: string;
  eligible: PreflightRow[];
  ineligible: PreflightRow[];
}

function fail(field: string, what: string): never {
  throw new Error(`preflight answer: ${field} ${what}`);
}

function object(value: unknown, field: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) fail(field, "is not an object");
  return value as Record<string, unknown>;
}

function array(value: unknown, field: string): unknown[] {
  if (!Array.isArray(value)) fail(field, "is not a list");
  return value;
}

function text(value: unknown, field: string): string {
  if (typeof value !== "string") fail(field, "is not a string");
  return value;
}

function hex(value: unknown, field: string): `0x${string}` {
  const digits = text(value, field);
  if (!/^0x[0-9a-fA-F]+$/.test(digits)) fail(field, `\`${digits}\` is not 0x-hex`);
  return digits as `0x${string}`;
}

function decimal(value: unknown, field: string): string {
  const digits = text(value, field);
  if (!/^\d+$/.test(digits)) fail(field, `\`${digits}\` is not a decimal amount`);
  return digits;
}

function count(value: unknown, field: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) fail(field, "is not a count");
  return value;
}

function namedKeys(value: unknown, field: string): NamedKey[] {
  return array(value, field).map((entry, i) => {
    const named = object(entry, `${field}[${i}]`);
    const name = named.name;
    if (name !== null && typeof name !== "string") fail(`${field}[${i}].name`, "is neither a string nor null");
    return { key: hex(named.key, `${field}[${i}].key`), name };
  });
}

/// Checks the API's answer field by field (an error names the first bad one).
export function parsePreflight(json: unknown): Preflight {
  const root = object(json, "body");
  return {
    groups: array(root.groups, "groups").map((entry, g): PreflightGroup => {
      const at = `groups[${g}]`;
      const group = object(entry, at);
      const provider = (candidate: Record<string, unknown>, field: string) => ({
        provider: hex(candidate.provider, `${field}.provider`),
        endpoint: text(candidate.endpoint, `${field}.endpoint`),
        gpu_models: namedKeys(candidate.gpu_models, `${field}.gpu_models`),
        attributes: namedKeys(candidate.attributes, `${field}.attributes`),
      });
      return {
        group: text(group.group, `${at}.group`),
        replicas: count(group.replicas, `${at}.replicas`),
        cpu_milli: count(group.cpu_milli, `${at}.cpu_milli`),
        memory_mib: count(group.memory_mib, `${at}.memory_mib`),
        storage_mib: count(group.storage_mib, `${at}.storage_mib`),
        gpu_count: count(group.gpu_count, `${at}.gpu_count`),
        max_price_per_hour: decimal(group.max_price_per_hour, `${at}.max_price_per_hour`),
        eligible: array(group.eligible, `${at}.eligible`).map((value, i) => {
          const field = `${at}.eligible[${i}]`;
          const candidate = object(value, field);
          const price = candidate.estimated_price_per_hour;
          return {
            ...provider(candidate, field),
            estimated_price_per_hour: price === null ? null : decimal(price, `${field}.estimated_price_per_hour`),
          };
        }),
        ineligible: array(group.ineligible, `${at}.ineligible`).map((value, i) => {
          const field = `${at}.ineligible[${i}]`;
          const rejected = object(value, field);
          const base = provider(rejected, field);
          const reason = object(rejected.reason, `${field}.reason`);
          return {
            ...base,
            reason: { kind: text(reason.kind, `${field}.reason.kind`), message: text(reason.message, `${field}.reason.message`) },
          };
        }),
      };
    }),
  };
}

function names(keys: NamedKey[]): string {
  return keys.length === 0 ? "no GPUs" : keys.map((named) => named.name ?? shortAddress(named.key)).join(", ");
}

/// Per group: who can serve it (GPU models by name, estimated price) and why the others cannot.
export function preflightView(report: Preflight, decimals: number, symbol: string): PreflightGroupView[] {
  return report.groups.map((group) => ({
    group: group.group,
    summary:
      `${group.replicas} replica(s) of ${group.cpu_milli}m CPU, ${group.memory_mib} MiB memory, ${group.storage_mib} MiB storage, ` +
      `${group.gpu_count} GPU(s); max ${formatUnits(group.max_price_per_hour, decimals, symbol)}/h: ` +
      `${group.eligible.length} of ${group.eligible.length + group.ineligible.length} provider(s) can serve it`,
    eligible: group.eligible.map((candidate) => ({
      provider: candidate.provider,
      endpoint: candidate.endpoint,
      gpuModels: names(candidate.gpu_models),
      detail:
        candidate.estimated_price_per_hour === null
          ? "price unknown until it bids"
          : `~${formatUnits(candidate.estimated_price_per_hour, decimals, symbol)}/h from its recent bids`,
    })),
    ineligible: group.ineligible.map((rejected) => ({
      provider: rejected.provider,
      endpoint: rejected.endpoint,
      gpuModels: names(rejected.gpu_models),
      detail: `${rejected.reason.message} [${rejected.reason.kind}]`,
    })),
  }));
}
