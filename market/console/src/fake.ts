// Fixture data for working on the UI without a chain or an indexer: only when the page is
// opened with `?fake`. Never used otherwise.
import type { Backend } from "./api";
import { ApiError } from "./api";
import type { CapacityPoint, ChainEvent, Lease, Preflight, PricePoint, Provider, SdlValidation, Status } from "./types";

const NOW = Math.floor(Date.now() / 1000);
const TENANT = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";
const PROVIDER = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";

const status: Status = {
  chain_id: 31337,
  head_block: 1240,
  indexed_block: 1238,
  confirmations: 2,
  contracts: {
    marketplace: "0x5fbdb2315678afecb367f032d93f642f64180aa3",
    registry: "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512",
    token: "0x9fe46736679d2d9a65f0992f2272de9f3c7fa6e0",
  },
  token: { symbol: "tUSD", decimals: 6 },
  rpc_url: "http://127.0.0.1:8545",
};

const provider: Provider = {
  address: PROVIDER,
  endpoint: "https://127.0.0.1:8443",
  status: "active",
  gateway_cert_sha256: "ab".repeat(32),
  attributes: [
    { key: "0x01", name: "region=eu-west" },
    { key: "0x02", name: null },
  ],
  gpus: [{ model_key: "0x03", name: "nvidia/a100/80Gi/sxm", total: 8, allocated: 3 }],
  capacity: { cpu_millis: "64000", memory_bytes: String(256 * 2 ** 30), storage_bytes: String(2 * 2 ** 40) },
  allocated: { cpu_millis: "24000", memory_bytes: String(96 * 2 ** 30), storage_bytes: String(300 * 2 ** 30) },
  stake: "1000000000",
  deliveries_confirmed: 41,
  deliveries_failed: 1,
  active_leases: 3,
  registered_block: 12,
  updated_block: 1200,
};

const leases: Lease[] = [1, 2, 3].map((n) => ({
  id: String(n),
  order_id: String(n),
  bid_id: "0",
  tenant: TENANT,
  provider: PROVIDER,
  price_per_hour: String(1_500_000 * n),
  state: n === 3 ? "closed" : "active",
  escrow_left: String(30_000_000 / n),
  paid_total: String(2_000_000 * n),
  runs_out_at: n === 3 ? null : NOW + 20 * 3600 * n,
  created_block: 1000 + n * 10,
  created_at: NOW - 3600 * (4 - n),
  confirmed: n !== 2,
  confirmed_at: n === 2 ? null : NOW - 3600 * (4 - n) + 30,
  closed: n === 3 ? { block: 1230, at: NOW - 600, reason: "tenant_request", refund: "5000000", paid: "6000000" } : null,
}));

const prices: PricePoint[] = Array.from({ length: 12 }, (_, i) => ({
  at: NOW - (12 - i) * 3600,
  block: 100 * i,
  lease_id: String(i),
  price_per_hour: String(1_000_000 + ((i * 7919) % 5) * 250_000),
  gpu_model: i % 3 === 0 ? null : "nvidia/a100/80Gi/sxm",
}));

const capacity: CapacityPoint[] = Array.from({ length: 12 }, (_, i) => ({
  at: NOW - (12 - i) * 3600,
  block: 100 * i,
  provider: PROVIDER,
  capacity: provider.capacity,
  allocated: { ...provider.allocated, cpu_millis: String(8000 + i * 2000) },
}));

const preflight: Preflight = {
  groups: [
    {
      group: "dcloud",
      replicas: 1,
      cpu_milli: 100,
      memory_mib: 64,
      storage_mib: 128,
      gpu_count: 0,
      max_price_per_hour: "1000",
      eligible: [
        {
          provider: PROVIDER,
          endpoint: "https://provider.example:8443",
          gpu_models: [{ key: `0x${"33".repeat(32)}`, name: "nvidia/a100/80Gi/sxm" }],
          attributes: [{ key: `0x${"44".repeat(32)}`, name: "region=eu-west" }],
          estimated_price_per_hour: "800",
        },
      ],
      ineligible: [
        {
          provider: "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc",
          endpoint: "https://other.example:8443",
          gpu_models: [],
          attributes: [],
          reason: { kind: "attributes", message: "lacks the required attribute region=eu-west" },
        },
      ],
    },
  ],
};

export class FakeBackend implements Backend {
  async get(path: string): Promise<unknown> {
    const url = new URL(path, "http://fake");
    const p = url.pathname;
    if (p === "/api/v1/status") return status;
    if (p === "/api/v1/providers") return { items: [provider], next: null };
    if (p.startsWith("/api/v1/providers/")) return provider;
    if (p === "/api/v1/leases") {
      const state = url.searchParams.get("state");
      return { items: leases.filter((l) => !state || l.state === state), next: null };
    }
    if (p === "/api/v1/orders") return { items: [], next: null };
    if (p === "/api/v1/prices") return { items: prices };
    if (p === "/api/v1/capacity/history") return { items: capacity };
    throw new ApiError("not_found", `fake data has no ${p}`, null, 404);
  }

  async postText(path: string, body: string): Promise<unknown> {
    if (path === "/api/v1/preflight") return preflight;
    if (path !== "/api/v1/sdl/validate") throw new ApiError("not_found", `fake data has no ${path}`, null, 404);
    const tab = body.split("\n").findIndex((line) => line.includes("\t"));
    const answer: SdlValidation =
      tab >= 0
        ? { ok: false, errors: [{ field: "sdl", line: tab + 1, column: 1, message: "tabs are not allowed in YAML indentation" }], warnings: [], groups: [], manifest_hash: null, manifest_json: null }
        : {
            ok: true,
            errors: [],
            warnings: [],
            groups: [
              {
                name: "dcloud",
                count: 1,
                order: {
                  group_name: `0x${"22".repeat(32)}`,
                  resources: { cpu_milli: "100", memory_mib: "64", storage_mib: "128" },
                  gpu_count: 0,
                  replicas: 1,
                  leased_ips: 0,
                  allowed_gpu_models: [],
                  required_attributes: [],
                  signed_by_all_of: [],
                  signed_by_any_of: [],
                  max_price_per_hour: "1000",
                  denom: "usdc",
                  manifest_hash: `0x${"11".repeat(32)}`,
                },
              },
            ],
            manifest_hash: `0x${"11".repeat(32)}`,
            manifest_json: "{}",
          };
    return answer;
  }

  stream(onEvent: (event: ChainEvent) => void, onState: (open: boolean) => void): () => void {
    onState(true);
    let block = status.head_block;
    const timer = setInterval(() => {
      block += 1;
      onEvent({ block, log_index: 0, tx_hash: `0x${"00".repeat(32)}`, at: Math.floor(Date.now() / 1000), kind: "PaymentWithdrawn", data: {} });
    }, 5000);
    return () => clearInterval(timer);
  }
}
