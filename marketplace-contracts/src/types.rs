//! Plain Rust views of the on-chain structs and events (snake_case, serde-serialisable), so
//! callers do not depend on the generated binding types.

use alloy::primitives::{Address, B256, U256};
use serde::{Deserialize, Serialize};

/// Token amounts in JSON as decimal strings (`"1500000"`), the way people read them and
/// JSON numbers cannot hold. Reading also takes `0x` hex, the form alloy writes.
pub mod decimal_amount {
    use alloy::primitives::U256;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(amount: &U256, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&amount.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<U256, D::Error> {
        let text = String::deserialize(deserializer)?;
        let parsed = match text.strip_prefix("0x") {
            Some(hex) => U256::from_str_radix(hex, 16),
            None => U256::from_str_radix(&text, 10),
        };
        parsed.map_err(|error| serde::de::Error::custom(format!("amount `{text}`: {error}")))
    }
}

use crate::bindings::{Marketplace, ProviderRegistry};

/// Compute resources: CPU in millicores, memory and storage in MiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_milli: u64,
    pub memory_mib: u64,
    pub storage_mib: u64,
}

macro_rules! resources_conversions {
    ($($sol:ty),*) => {$(
        impl From<Resources> for $sol {
            fn from(r: Resources) -> Self {
                Self { cpuMilli: r.cpu_milli, memoryMiB: r.memory_mib, storageMiB: r.storage_mib }
            }
        }
        impl From<$sol> for Resources {
            fn from(r: $sol) -> Self {
                Self { cpu_milli: r.cpuMilli, memory_mib: r.memoryMiB, storage_mib: r.storageMiB }
            }
        }
    )*};
}
resources_conversions!(Marketplace::Resources, ProviderRegistry::Resources);

/// GPUs of one model a provider offers; `model_key` is keccak256 of the canonical model string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GpuCapacity {
    pub model_key: B256,
    pub count: u32,
}

impl From<GpuCapacity> for ProviderRegistry::GpuCapacity {
    fn from(g: GpuCapacity) -> Self {
        Self {
            modelKey: g.model_key,
            count: g.count,
        }
    }
}

/// What a provider registers (or updates to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderProfile {
    pub endpoint: String,
    /// SHA-256 of the DER certificate the gateway serves: tenants accept exactly that one.
    pub gateway_cert_sha256: B256,
    pub attributes: Vec<B256>,
    pub capacity: Resources,
    pub gpus: Vec<GpuCapacity>,
}

/// The argument list `register` and `update` share.
pub(crate) type ProfileArgs = (
    String,
    B256,
    Vec<B256>,
    ProviderRegistry::Resources,
    Vec<ProviderRegistry::GpuCapacity>,
);

impl ProviderProfile {
    pub(crate) fn sol_args(&self) -> ProfileArgs {
        (
            self.endpoint.clone(),
            self.gateway_cert_sha256,
            self.attributes.clone(),
            self.capacity.into(),
            self.gpus.iter().copied().map(Into::into).collect(),
        )
    }
}

/// The GPU-model and attribute lists of an order. Bidders must re-supply the first two to
/// `placeBid`; they are published in `OrderCreated` (the contract stores only their hash). The
/// auditors are stored by the contract (every match re-checks them) and never re-supplied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRequirements {
    pub allowed_gpu_models: Vec<B256>,
    pub required_attributes: Vec<B256>,
    /// Akash's `signedBy`: auditors that must attest `required_attributes` for the bidder.
    #[serde(default)]
    pub signed_by: Auditors,
}

/// Akash's `signedBy` with EVM addresses: every `all_of` auditor, and at least one `any_of`
/// auditor when that list is not empty, must attest each required attribute of the provider
/// (`ProviderRegistry.checkAudit`). Both empty: no audit is required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auditors {
    pub all_of: Vec<Address>,
    pub any_of: Vec<Address>,
}

impl Auditors {
    pub fn is_empty(&self) -> bool {
        self.all_of.is_empty() && self.any_of.is_empty()
    }
}

/// An auditor's standing attestation that a provider holds an attribute (its chain key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    pub auditor: Address,
    pub provider: Address,
    pub attribute: B256,
}

/// `Marketplace.MAX_AUDITORS`: an order's `all_of` and `any_of` auditors together.
pub const MAX_AUDITORS: usize = 4;

/// A group's total resources and constraints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSpec {
    /// keccak256 of the SDL group's (placement's) name: the manifest group the provider runs.
    pub group_name: B256,
    pub resources: Resources,
    pub gpu_count: u32,
    pub replicas: u16,
    /// Leased IP addresses the group needs ([`MAX_LEASED_IPS`] at most). Published in
    /// `OrderCreated` only: the contract does not store it, so an [`OrderInfo`] has none.
    #[serde(default)]
    pub leased_ips: u8,
    pub requirements: OrderRequirements,
}

/// `Marketplace.MAX_LEASED_IPS`: leased IP addresses one order may ask for.
pub const MAX_LEASED_IPS: u8 = 16;

impl From<OrderSpec> for Marketplace::OrderSpec {
    fn from(spec: OrderSpec) -> Self {
        Self {
            groupName: spec.group_name,
            resources: spec.resources.into(),
            gpuCount: spec.gpu_count,
            replicas: spec.replicas,
            leasedIps: spec.leased_ips,
            allowedGpuModels: spec.requirements.allowed_gpu_models,
            requiredAttributes: spec.requirements.required_attributes,
            signedByAllOf: spec.requirements.signed_by.all_of,
            signedByAnyOf: spec.requirements.signed_by.any_of,
        }
    }
}

impl From<Marketplace::OrderSpec> for OrderSpec {
    fn from(spec: Marketplace::OrderSpec) -> Self {
        Self {
            group_name: spec.groupName,
            resources: spec.resources.into(),
            gpu_count: spec.gpuCount,
            replicas: spec.replicas,
            leased_ips: spec.leasedIps,
            requirements: OrderRequirements {
                allowed_gpu_models: spec.allowedGpuModels,
                required_attributes: spec.requiredAttributes,
                signed_by: Auditors {
                    all_of: spec.signedByAllOf,
                    any_of: spec.signedByAnyOf,
                },
            },
        }
    }
}

/// A bid's GPU model for `placeBid`: the concrete model's four parts and which allowed entry it
/// matches with which parts replaced by `*` (built by [`crate::order::gpu_bid`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuBid {
    /// vendor, model, RAM, interface: `["nvidia", "a100", "80Gi", "sxm"]`.
    pub parts: [String; 4],
    pub pattern_index: u8,
    pub wildcards: u8,
}

impl GpuBid {
    /// `model`'s parts claiming the first entry unmasked: what an empty allowed list takes, and
    /// what is sent for a model no entry matches, so that the contract says why.
    pub fn unmatched(model: &leasehold_manifests::GpuModelKey) -> GpuBid {
        GpuBid {
            parts: [
                model.vendor(),
                model.model(),
                model.ram(),
                model.interface(),
            ]
            .map(str::to_owned),
            pattern_index: 0,
            wildcards: 0,
        }
    }
}

impl From<Option<GpuBid>> for Marketplace::GpuBid {
    /// `None` (a CPU-only order) is the all-empty value the contract expects.
    fn from(bid: Option<GpuBid>) -> Self {
        let bid = bid.unwrap_or_default();
        let [vendor, model, ram, iface] = bid.parts;
        Self {
            model: Marketplace::GpuModelParts {
                vendor,
                model,
                ram,
                iface,
            },
            patternIndex: bid.pattern_index,
            wildcards: bid.wildcards,
        }
    }
}

/// Parameters of `createOrder`. Prices are token base units per hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    pub token: Address,
    pub spec: OrderSpec,
    pub manifest_hash: B256,
    #[serde(with = "decimal_amount")]
    pub max_price_per_hour: U256,
    #[serde(with = "decimal_amount")]
    pub deposit: U256,
    pub bid_window_secs: u64,
    /// Seconds the winning provider has to confirm delivery once the lease starts
    /// ([`DELIVERY_WINDOW_SECS`]); unconfirmed, the lease can be closed with a full refund and
    /// part of the provider's stake goes to the tenant.
    pub delivery_window_secs: u64,
}

/// The tenant's standing acceptance of an order (`Marketplace.AutoAccept`): the first bid
/// from `provider` (`None`: any provider the order's requirements admit) at or below
/// `max_price_per_hour` becomes the lease in the bid's own transaction, when it passes the
/// checks of `acceptBid`. Saves the block the tenant's `acceptBid` would wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoAcceptRule {
    pub provider: Option<Address>,
    pub max_price_per_hour: U256,
}

/// Bounds of [`NewOrder::delivery_window_secs`] (`MIN_DELIVERY_WINDOW..=MAX_DELIVERY_WINDOW`).
pub const DELIVERY_WINDOW_SECS: std::ops::RangeInclusive<u64> = 60..=3600;

/// Bids one order takes (`Marketplace.MAX_BIDS`).
pub const MAX_BIDS: usize = 16;

/// After an order's bid window only its tenant may match it for this long
/// (`Marketplace.TENANT_GRACE`); then anyone may `settle`.
pub const TENANT_GRACE_SECS: u64 = 120;

/// `Marketplace.SETTLE_SKIP_LIMIT`: bids one `settle` call may pass over before it returns
/// without a lease; one on orders with `signedBy` auditors.
pub const SETTLE_SKIP_LIMIT: usize = 2;

/// The delivery window the CLIs use unless told otherwise: ten minutes, room for an image pull.
pub const DEFAULT_DELIVERY_WINDOW_SECS: u64 = 600;

/// An order as announced by `OrderCreated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPosted {
    pub order_id: u64,
    pub tenant: Address,
    pub token: Address,
    pub spec: OrderSpec,
    pub manifest_hash: B256,
    #[serde(with = "decimal_amount")]
    pub max_price_per_hour: U256,
    #[serde(with = "decimal_amount")]
    pub deposit: U256,
    pub bid_window_end: u64,
}

impl TryFrom<Marketplace::OrderCreated> for OrderPosted {
    type Error = IdOutOfRange;
    fn try_from(event: Marketplace::OrderCreated) -> Result<Self, IdOutOfRange> {
        Ok(Self {
            order_id: id_to_u64(event.orderId)?,
            tenant: event.tenant,
            token: event.token,
            spec: event.spec.into(),
            manifest_hash: event.manifestHash,
            max_price_per_hour: event.maxPricePerHour,
            deposit: event.deposit,
            bid_window_end: event.bidWindowEnd,
        })
    }
}

/// An order or bid id that does not fit in u64 (never produced by the contracts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("id {0} does not fit in 64 bits")]
pub struct IdOutOfRange(pub U256);

pub(crate) fn id_to_u64(id: U256) -> Result<u64, IdOutOfRange> {
    u64::try_from(id).map_err(|_| IdOutOfRange(id))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    None,
    Open,
    Leased,
    Cancelled,
    Closed,
}

impl TryFrom<u8> for OrderStatus {
    type Error = u8;
    fn try_from(value: u8) -> Result<Self, u8> {
        Ok(match value {
            0 => Self::None,
            1 => Self::Open,
            2 => Self::Leased,
            3 => Self::Cancelled,
            4 => Self::Closed,
            other => return Err(other),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderInfo {
    pub order_id: u64,
    pub tenant: Address,
    pub token: Address,
    pub status: OrderStatus,
    pub bid_count: u8,
    pub replicas: u16,
    pub gpu_count: u32,
    pub bid_window_end: u64,
    pub resources: Resources,
    #[serde(with = "decimal_amount")]
    pub max_price_per_hour: U256,
    #[serde(with = "decimal_amount")]
    pub escrow: U256,
    pub manifest_hash: B256,
    /// keccak256 of the SDL group's name (see [`OrderSpec::group_name`]).
    pub group_name: B256,
    pub requirements_hash: B256,
    /// After this the order can no longer be matched, only cancelled.
    pub expires_at: u64,
    /// Seconds the winner has to confirm delivery (see [`NewOrder::delivery_window_secs`]).
    pub delivery_window_secs: u32,
}

impl OrderInfo {
    /// What the order buys, as an [`OrderSpec`] without its bidding requirements (those are
    /// stored on chain only as hashes): the shape a manifest for its lease must fit.
    pub fn bought(&self) -> OrderSpec {
        OrderSpec {
            group_name: self.group_name,
            resources: self.resources,
            gpu_count: self.gpu_count,
            replicas: self.replicas,
            leased_ips: 0,
            requirements: OrderRequirements::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidInfo {
    pub bid_id: u64,
    pub provider: Address,
    #[serde(with = "decimal_amount")]
    pub price_per_hour: U256,
    pub gpu_model: B256,
    pub withdrawn: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// Equals the order id.
    pub lease_id: u64,
    pub tenant: Address,
    pub provider: Address,
    pub token: Address,
    pub bid_id: u8,
    pub active: bool,
    pub started_at: u64,
    pub closed_at: u64,
    #[serde(with = "decimal_amount")]
    pub price_per_hour: U256,
    pub gpu_model: B256,
    #[serde(with = "decimal_amount")]
    pub paid: U256,
    #[serde(with = "decimal_amount")]
    pub escrow: U256,
    /// The provider confirmed the workload runs; payment accrues from `started_at`.
    pub confirmed: bool,
    /// Until this the provider may confirm; after it, unconfirmed, anyone may close the lease
    /// as undelivered.
    pub delivery_deadline: u64,
    /// 1 for the order's manifest, one more for each `updateManifest` (0 when read from a
    /// record written before revisions existed).
    #[serde(default)]
    pub revision: u32,
    /// The manifest the provider must run: the order's, or the latest update's.
    #[serde(default)]
    pub manifest_hash: B256,
}

impl LeaseInfo {
    pub(crate) fn from_view(lease_id: u64, v: Marketplace::LeaseView) -> Self {
        Self {
            lease_id,
            tenant: v.tenant,
            provider: v.provider,
            token: v.token,
            bid_id: v.bidId,
            active: v.active,
            started_at: v.startedAt,
            closed_at: v.closedAt,
            price_per_hour: v.pricePerHour,
            gpu_model: v.gpuModel,
            paid: v.paid,
            escrow: v.escrow,
            confirmed: v.confirmed,
            delivery_deadline: v.deliveryDeadline,
            revision: v.revision,
            manifest_hash: v.manifestHash,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderStatus {
    None,
    Active,
    Unbonding,
}

impl TryFrom<u8> for ProviderStatus {
    type Error = u8;
    fn try_from(value: u8) -> Result<Self, u8> {
        Ok(match value {
            0 => Self::None,
            1 => Self::Active,
            2 => Self::Unbonding,
            other => return Err(other),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuState {
    pub model_key: B256,
    pub capacity: u32,
    pub allocated: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInfo {
    pub address: Address,
    pub status: ProviderStatus,
    #[serde(with = "decimal_amount")]
    pub stake: U256,
    pub unbonding_ends: u64,
    pub active_leases: u32,
    pub endpoint: String,
    /// SHA-256 of the DER certificate its gateway serves (see [`ProviderProfile`]).
    pub gateway_cert_sha256: B256,
    pub attributes: Vec<B256>,
    pub capacity: Resources,
    pub allocated: Resources,
    pub gpus: Vec<GpuState>,
    /// Leases whose delivery the provider confirmed in time.
    pub deliveries_confirmed: u32,
    /// Leases closed as undelivered (each cost it part of its stake).
    pub deliveries_failed: u32,
    /// Part of `stake` the bonds of its standing bids hold (not withdrawable, not usable for
    /// more bids until released).
    #[serde(with = "decimal_amount")]
    pub locked_bonds: U256,
}

impl ProviderInfo {
    /// The stake not held by bonds: a new bid needs at least one bond of it.
    pub fn free_stake(&self) -> U256 {
        self.stake.saturating_sub(self.locked_bonds)
    }
}

/// What a lease owes its provider right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owed {
    /// Accrued, unpaid and covered by the escrow.
    #[serde(with = "decimal_amount")]
    pub withdrawable: U256,
    /// Accrued and unpaid beyond the escrow; non-zero means insolvent.
    #[serde(with = "decimal_amount")]
    pub shortfall: U256,
}

/// The `reason` code of `closeLease` (free-form on chain; these are the conventional values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum CloseReason {
    Unspecified = 0,
    TenantRequest = 1,
    ProviderRequest = 2,
    ManifestNotDelivered = 3,
    Insolvent = 4,
    WorkloadFailed = 5,
}

impl CloseReason {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// How one bid's bond was resolved by `releaseBonds` (or an eviction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedBond {
    pub order_id: u64,
    pub bid_id: u64,
    pub provider: Address,
    #[serde(with = "decimal_amount")]
    pub amount: U256,
    /// The tenant it went to; `None` when it went back to the provider's free stake.
    pub forfeited_to: Option<Address>,
}

/// A bid whose bond is still locked, and what `releaseBonds` will do with it once the order
/// has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedBond {
    pub bid_id: u64,
    pub provider: Address,
    /// The bid was withdrawn or passed over by `settle`: the bond goes to the tenant.
    pub forfeits: bool,
}

/// A bid `settle` passed over because its provider had no room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedBid {
    pub bid_id: u64,
    pub provider: Address,
}

/// A lease created by `acceptBid` or `settle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStarted {
    pub lease_id: u64,
    pub tenant: Address,
    pub provider: Address,
    pub bid_id: u64,
    #[serde(with = "decimal_amount")]
    pub price_per_hour: U256,
    pub gpu_model: B256,
    /// Bids `settle` skipped before finding room; always empty for `acceptBid`.
    pub skipped: Vec<SkippedBid>,
}

/// Outcome of `updateManifest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestUpdate {
    pub lease_id: u64,
    pub revision: u32,
    pub manifest_hash: B256,
}

/// Outcome of `closeUndelivered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndeliveredClose {
    /// The whole escrow.
    #[serde(with = "decimal_amount")]
    pub refunded_to_tenant: U256,
    /// The part of the provider's stake that went to the tenant.
    #[serde(with = "decimal_amount")]
    pub slashed_to_tenant: U256,
}

/// Outcome of `closeLease`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseSettlement {
    #[serde(with = "decimal_amount")]
    pub paid_to_provider: U256,
    #[serde(with = "decimal_amount")]
    pub refunded_to_tenant: U256,
}

/// Outcome of a provider's `withdraw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    #[serde(with = "decimal_amount")]
    pub amount: U256,
    #[serde(with = "decimal_amount")]
    pub total_paid: U256,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_and_reject_unknown() {
        assert_eq!(OrderStatus::try_from(2), Ok(OrderStatus::Leased));
        assert_eq!(OrderStatus::try_from(9), Err(9));
        assert_eq!(ProviderStatus::try_from(2), Ok(ProviderStatus::Unbonding));
        assert_eq!(ProviderStatus::try_from(3), Err(3));
        assert_eq!(CloseReason::Insolvent.code(), 4);
    }

    #[test]
    fn order_spec_round_trips_through_the_binding() {
        let spec = OrderSpec {
            group_name: B256::repeat_byte(3),
            resources: Resources {
                cpu_milli: 500,
                memory_mib: 256,
                storage_mib: 1024,
            },
            gpu_count: 1,
            replicas: 2,
            leased_ips: 0,
            requirements: OrderRequirements {
                allowed_gpu_models: vec![B256::repeat_byte(1)],
                required_attributes: vec![B256::repeat_byte(2)],
                signed_by: Auditors {
                    all_of: vec![Address::repeat_byte(4)],
                    any_of: vec![Address::repeat_byte(5), Address::repeat_byte(6)],
                },
            },
        };
        let sol: Marketplace::OrderSpec = spec.clone().into();
        assert_eq!(sol.resources.memoryMiB, 256);
        assert_eq!(OrderSpec::from(sol), spec);
    }

    #[test]
    fn ids_beyond_u64_are_rejected() {
        assert_eq!(id_to_u64(U256::from(7)), Ok(7));
        assert!(id_to_u64(U256::MAX).is_err());
    }

    #[test]
    fn amounts_are_decimal_strings_in_json_and_hex_is_still_read() {
        let owed = Owed {
            withdrawable: U256::from(1_500_000u64),
            shortfall: U256::MAX,
        };
        let json = serde_json::to_value(owed).unwrap();
        assert_eq!(json["withdrawable"], "1500000");
        assert_eq!(json["shortfall"], U256::MAX.to_string());
        let back: Owed = serde_json::from_value(json).unwrap();
        assert_eq!(back, owed);
        let hex: Owed = serde_json::from_str(r#"{"withdrawable":"0x10","shortfall":"0"}"#).unwrap();
        assert_eq!(hex.withdrawable, U256::from(16u64));
        assert!(serde_json::from_str::<Owed>(r#"{"withdrawable":"ten","shortfall":"0"}"#).is_err());
    }
}
