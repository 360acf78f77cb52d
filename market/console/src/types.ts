// Shapes of the market API v1 (`/api/v1`, served by `leasehold-market`). Token amounts,
// ids and other u256 values are decimal strings; addresses lower-case hex; times unix seconds.

export type Address = `0x${string}`;
export type Hex = `0x${string}`;

export interface ApiErrorBody {
  error: { code: string; message: string; field: string | null };
}

export interface Page<T> {
  items: T[];
  next: string | null;
}

export interface Status {
  chain_id: number;
  head_block: number;
  indexed_block: number;
  confirmations: number;
  contracts: { marketplace: Address; registry: Address; token: Address };
  token: { symbol: string; decimals: number };
  /// The chain RPC URL browsers use (`leasehold-market run --public-rpc-url`).
  rpc_url: string;
}

export interface Resources {
  cpu_millis: string;
  memory_bytes: string;
  storage_bytes: string;
}

export interface Provider {
  address: Address;
  endpoint: string;
  status: "active" | "unbonding" | "deregistered";
  gateway_cert_sha256: string;
  attributes: { key: Hex; name: string | null }[];
  gpus: { model_key: Hex; name: string | null; total: number; allocated: number }[];
  capacity: Resources;
  allocated: Resources;
  stake: string;
  deliveries_confirmed: number;
  deliveries_failed: number;
  active_leases: number;
  registered_block: number;
  updated_block: number;
}

export interface Bid {
  order_id: string;
  bid_id: string;
  provider: Address;
  price_per_hour: string;
  state: "open" | "withdrawn" | "evicted" | "won" | "lost";
  gpu_model: string | null;
  placed_block: number;
  placed_at: number;
}

export interface Order {
  id: string;
  tenant: Address;
  manifest_hash: Hex;
  state: "open" | "matched" | "cancelled" | "expired";
  max_price_per_hour: string;
  escrow: string;
  bid_window_end: number;
  created_block: number;
  created_at: number;
  auto_accept: { provider: Address; max_price_per_hour: string } | null;
  bids?: Bid[];
}

export interface Lease {
  id: string;
  order_id: string;
  bid_id: string;
  tenant: Address;
  provider: Address;
  price_per_hour: string;
  state: "active" | "closed";
  escrow_left: string;
  paid_total: string;
  runs_out_at: number | null;
  created_block: number;
  created_at: number;
  confirmed: boolean;
  confirmed_at: number | null;
  closed: { block: number; at: number; reason: string; refund: string; paid: string } | null;
  payments?: { block: number; at: number; amount: string; total_paid: string }[];
  top_ups?: { block: number; at: number; from: Address; amount: string; escrow: string }[];
}

export interface PricePoint {
  at: number;
  block: number;
  lease_id: string;
  price_per_hour: string;
  gpu_model: string | null;
}

export interface CapacityPoint {
  at: number;
  block: number;
  provider: Address;
  capacity: Resources;
  allocated: Resources;
}

export interface ChainEvent {
  block: number;
  log_index: number;
  tx_hash: Hex;
  at: number;
  kind: string;
  data: Record<string, unknown>;
}

export interface SdlProblem {
  field: string;
  line: number | null;
  column: number | null;
  message: string;
}

/// The order a group posts, in contract units: `sdl/validate`'s `order`, the contracts
/// crate's `group_order` (the encoding `tenant deploy` posts), so the console never encodes
/// an order itself.
export interface GroupOrderSpec {
  group_name: Hex;
  resources: { cpu_milli: string; memory_mib: string; storage_mib: string };
  gpu_count: number;
  replicas: number;
  leased_ips: number;
  allowed_gpu_models: Hex[];
  required_attributes: Hex[];
  signed_by_all_of: Address[];
  signed_by_any_of: Address[];
  max_price_per_hour: string;
  denom: string;
  /// keccak256 of the validation's `manifest_json`.
  manifest_hash: Hex;
}

export interface SdlGroup {
  name: string;
  count: number;
  [summary: string]: unknown;
  /// null when the group cannot be encoded (the reason is in `errors`).
  order?: GroupOrderSpec | null;
}

export interface SdlValidation {
  ok: boolean;
  errors: SdlProblem[];
  warnings: SdlProblem[];
  groups: SdlGroup[];
  manifest_hash: Hex | null;
  /// The manifest the tenant sends to the provider (canonical JSON; hashes to manifest_hash).
  manifest_json: string | null;
}

/// An on-chain key with the string it is the hash of (null: nobody named it).
export interface NamedKey {
  key: Hex;
  name: string | null;
}

interface PreflightProvider {
  provider: Address;
  endpoint: string;
  gpu_models: NamedKey[];
  attributes: NamedKey[];
}

/// `POST /api/v1/preflight`: the tenant CLI's `preflight --output json`.
export interface PreflightGroup {
  group: string;
  replicas: number;
  cpu_milli: number;
  memory_mib: number;
  storage_mib: number;
  gpu_count: number;
  max_price_per_hour: string;
  eligible: (PreflightProvider & { estimated_price_per_hour: string | null })[];
  ineligible: (PreflightProvider & { reason: { kind: string; message: string } })[];
}

export interface Preflight {
  groups: PreflightGroup[];
}
