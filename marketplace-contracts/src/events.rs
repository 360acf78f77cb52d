//! Every contract event as a plain Rust value: ids as `u64`, amounts as `U256`, no binding
//! types. Consumers (the provider daemon, indexers, tests) match on [`ChainEvent`] and never
//! see the `sol!` bindings, so an ABI change is absorbed here.

use alloy::primitives::{Address, B256, U256};
use alloy::rpc::types::Log;
use alloy::sol_types::SolEventInterface;

use crate::bindings::Marketplace::MarketplaceEvents;
use crate::bindings::ProviderRegistry::ProviderRegistryEvents;
use crate::deploy::Deployment;
use crate::types::{GpuCapacity, IdOutOfRange, OrderPosted, ProviderProfile, Resources, id_to_u64};

/// A followed log, decoded, with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLog {
    pub block: u64,
    pub log_index: u64,
    pub event: ChainEvent,
}

/// A Leasehold contract event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainEvent {
    OrderCreated(OrderPosted),
    OrderCancelled {
        order_id: u64,
        tenant: Address,
        refund: U256,
    },
    /// The order's first bid this rule covers becomes its lease inside `placeBid`
    /// ([`crate::AutoAcceptRule`]); follows the order's `OrderCreated`.
    AutoAcceptSet {
        order_id: u64,
        /// `None`: any provider the order's requirements admit.
        provider: Option<Address>,
        max_price_per_hour: U256,
    },
    BidPlaced {
        order_id: u64,
        bid_id: u64,
        provider: Address,
        price_per_hour: U256,
        gpu_model: B256,
    },
    /// `settle` passed over this bid because its provider had no room.
    BidSkipped {
        order_id: u64,
        bid_id: u64,
        provider: Address,
    },
    BidWithdrawn {
        order_id: u64,
        bid_id: u64,
        provider: Address,
    },
    /// A cheaper or eligible bid took this bid's place in a full order.
    BidEvicted {
        order_id: u64,
        bid_id: u64,
        provider: Address,
        /// The contract's eviction-reason code.
        reason: u8,
    },
    EscrowToppedUp {
        order_id: u64,
        from: Address,
        amount: U256,
        escrow: U256,
    },
    /// Lease ids are order ids.
    LeaseCreated {
        lease_id: u64,
        tenant: Address,
        provider: Address,
        bid_id: u64,
        price_per_hour: U256,
        gpu_model: B256,
    },
    /// The tenant recorded a new manifest for the lease: the provider runs the manifest
    /// whose hash is `manifest_hash` next (`revision` 2 is the first update).
    ManifestUpdated {
        lease_id: u64,
        revision: u32,
        manifest_hash: B256,
    },
    /// The provider confirmed that every replica runs: accrual starts.
    LeaseConfirmed {
        lease_id: u64,
        provider: Address,
    },
    /// The lease was closed undelivered; `slashed` of the provider's stake went to the tenant.
    DeliveryFailed {
        lease_id: u64,
        provider: Address,
        slashed: U256,
    },
    LeaseClosed {
        lease_id: u64,
        closed_by: Address,
        /// The contract's close-reason code (see [`crate::CloseReason`]).
        reason: u8,
        paid_to_provider: U256,
        refunded_to_tenant: U256,
    },
    PaymentWithdrawn {
        lease_id: u64,
        provider: Address,
        amount: U256,
        total_paid: U256,
    },
    /// A transfer out could not be pushed; `account` may claim `amount` later.
    PaymentCredited {
        token: Address,
        account: Address,
        amount: U256,
    },
    Claimed {
        token: Address,
        account: Address,
        to: Address,
        amount: U256,
    },
    DeliveryRecorded {
        provider: Address,
        deliveries_confirmed: u32,
    },
    StakeSlashed {
        provider: Address,
        tenant: Address,
        amount: U256,
        deliveries_failed: u32,
    },
    ProviderRegistered {
        provider: Address,
        profile: ProviderProfile,
        stake: U256,
    },
    ProviderUpdated {
        provider: Address,
        profile: ProviderProfile,
    },
    ProviderDeregistered {
        provider: Address,
        unbonding_ends: u64,
    },
    StakeWithdrawn {
        provider: Address,
        amount: U256,
    },
    MarketplaceBound {
        marketplace: Address,
    },
    StakeAdded {
        provider: Address,
        amount: U256,
        stake: U256,
    },
    /// The bond of bid `bid_id` on `order_id` went back to its provider's free stake.
    BondReleased {
        order_id: u64,
        bid_id: u64,
        provider: Address,
        amount: U256,
    },
    /// The bond of bid `bid_id` on `order_id` left its provider's stake and is claimable by
    /// the order's tenant from the registry.
    BondForfeited {
        order_id: u64,
        bid_id: u64,
        provider: Address,
        tenant: Address,
        amount: U256,
    },
    /// `auditor` attests that `provider` holds `attribute` (a chain key).
    AttributeAttested {
        auditor: Address,
        provider: Address,
        attribute: B256,
    },
    AttestationRevoked {
        auditor: Address,
        provider: Address,
        attribute: B256,
    },
    /// `key` is keccak256 of `name` (the registry computes it): the readable form of an
    /// attribute or GPU model key. Emitted once per key.
    KeyNamed {
        key: B256,
        name: String,
    },
}

/// Why a log of a Leasehold contract could not be turned into a [`ChainEvent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventDecodeError {
    #[error("{event} at block {block}: {source}")]
    IdOutOfRange {
        event: &'static str,
        block: u64,
        #[source]
        source: IdOutOfRange,
    },
}

impl ChainEvent {
    /// Decodes a log emitted by the deployment's marketplace or registry. `Ok(None)` for logs
    /// of other contracts and for events these contracts do not declare.
    pub fn decode(
        log: &Log,
        deployment: &Deployment,
    ) -> Result<Option<ChainLog>, EventDecodeError> {
        let block = log.block_number.unwrap_or_default();
        let log_index = log.log_index.unwrap_or_default();
        let event = if log.address() == deployment.marketplace {
            match MarketplaceEvents::decode_raw_log(log.topics(), &log.data().data) {
                Ok(event) => Some(from_marketplace(event, block)?),
                Err(_) => None,
            }
        } else if log.address() == deployment.registry {
            match ProviderRegistryEvents::decode_raw_log(log.topics(), &log.data().data) {
                Ok(event) => Some(from_registry(event, block)?),
                Err(_) => None,
            }
        } else {
            None
        };
        Ok(event.map(|event| ChainLog {
            block,
            log_index,
            event,
        }))
    }

    /// The order (lease ids are order ids) the event is about, if any.
    pub fn order_id(&self) -> Option<u64> {
        match self {
            Self::OrderCreated(order) => Some(order.order_id),
            Self::OrderCancelled { order_id, .. }
            | Self::BidPlaced { order_id, .. }
            | Self::BidSkipped { order_id, .. }
            | Self::BidWithdrawn { order_id, .. }
            | Self::BidEvicted { order_id, .. }
            | Self::EscrowToppedUp { order_id, .. }
            | Self::LeaseCreated {
                lease_id: order_id, ..
            }
            | Self::ManifestUpdated {
                lease_id: order_id, ..
            }
            | Self::LeaseConfirmed {
                lease_id: order_id, ..
            }
            | Self::DeliveryFailed {
                lease_id: order_id, ..
            }
            | Self::LeaseClosed {
                lease_id: order_id, ..
            }
            | Self::PaymentWithdrawn {
                lease_id: order_id, ..
            } => Some(*order_id),
            _ => None,
        }
    }

    /// The event's name as the contract declares it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::OrderCreated(_) => "OrderCreated",
            Self::OrderCancelled { .. } => "OrderCancelled",
            Self::BidPlaced { .. } => "BidPlaced",
            Self::BidSkipped { .. } => "BidSkipped",
            Self::BidWithdrawn { .. } => "BidWithdrawn",
            Self::BidEvicted { .. } => "BidEvicted",
            Self::EscrowToppedUp { .. } => "EscrowToppedUp",
            Self::AutoAcceptSet { .. } => "AutoAcceptSet",
            Self::LeaseCreated { .. } => "LeaseCreated",
            Self::ManifestUpdated { .. } => "ManifestUpdated",
            Self::LeaseConfirmed { .. } => "LeaseConfirmed",
            Self::DeliveryFailed { .. } => "DeliveryFailed",
            Self::LeaseClosed { .. } => "LeaseClosed",
            Self::PaymentCredited { .. } => "PaymentCredited",
            Self::Claimed { .. } => "Claimed",
            Self::DeliveryRecorded { .. } => "DeliveryRecorded",
            Self::StakeSlashed { .. } => "StakeSlashed",
            Self::PaymentWithdrawn { .. } => "PaymentWithdrawn",
            Self::ProviderRegistered { .. } => "ProviderRegistered",
            Self::ProviderUpdated { .. } => "ProviderUpdated",
            Self::ProviderDeregistered { .. } => "ProviderDeregistered",
            Self::StakeWithdrawn { .. } => "StakeWithdrawn",
            Self::MarketplaceBound { .. } => "MarketplaceBound",
            Self::StakeAdded { .. } => "StakeAdded",
            Self::AttributeAttested { .. } => "AttributeAttested",
            Self::AttestationRevoked { .. } => "AttestationRevoked",
            Self::BondReleased { .. } => "BondReleased",
            Self::BondForfeited { .. } => "BondForfeited",
            Self::KeyNamed { .. } => "KeyNamed",
        }
    }
}

fn from_marketplace(event: MarketplaceEvents, block: u64) -> Result<ChainEvent, EventDecodeError> {
    let id = |event: &'static str, id: U256| {
        id_to_u64(id).map_err(|source| EventDecodeError::IdOutOfRange {
            event,
            block,
            source,
        })
    };
    Ok(match event {
        MarketplaceEvents::OrderCreated(created) => {
            ChainEvent::OrderCreated(OrderPosted::try_from(created).map_err(|source| {
                EventDecodeError::IdOutOfRange {
                    event: "OrderCreated",
                    block,
                    source,
                }
            })?)
        }
        MarketplaceEvents::OrderCancelled(event) => ChainEvent::OrderCancelled {
            order_id: id("OrderCancelled", event.orderId)?,
            tenant: event.tenant,
            refund: event.refund,
        },
        MarketplaceEvents::AutoAcceptSet(event) => ChainEvent::AutoAcceptSet {
            order_id: id("AutoAcceptSet", event.orderId)?,
            provider: (event.provider != Address::ZERO).then_some(event.provider),
            max_price_per_hour: event.maxPricePerHour,
        },
        MarketplaceEvents::BidPlaced(event) => ChainEvent::BidPlaced {
            order_id: id("BidPlaced", event.orderId)?,
            bid_id: id("BidPlaced", event.bidId)?,
            provider: event.provider,
            price_per_hour: event.pricePerHour,
            gpu_model: event.gpuModel,
        },
        MarketplaceEvents::BidSkipped(event) => ChainEvent::BidSkipped {
            order_id: id("BidSkipped", event.orderId)?,
            bid_id: id("BidSkipped", event.bidId)?,
            provider: event.provider,
        },
        MarketplaceEvents::BidWithdrawn(event) => ChainEvent::BidWithdrawn {
            order_id: id("BidWithdrawn", event.orderId)?,
            bid_id: id("BidWithdrawn", event.bidId)?,
            provider: event.provider,
        },
        MarketplaceEvents::BidEvicted(event) => ChainEvent::BidEvicted {
            order_id: id("BidEvicted", event.orderId)?,
            bid_id: id("BidEvicted", event.bidId)?,
            provider: event.provider,
            reason: event.reason,
        },
        MarketplaceEvents::EscrowToppedUp(event) => ChainEvent::EscrowToppedUp {
            order_id: id("EscrowToppedUp", event.orderId)?,
            from: event.from,
            amount: event.amount,
            escrow: event.escrow,
        },
        MarketplaceEvents::LeaseCreated(event) => ChainEvent::LeaseCreated {
            lease_id: id("LeaseCreated", event.leaseId)?,
            tenant: event.tenant,
            provider: event.provider,
            bid_id: id("LeaseCreated", event.bidId)?,
            price_per_hour: event.pricePerHour,
            gpu_model: event.gpuModel,
        },
        MarketplaceEvents::ManifestUpdated(event) => ChainEvent::ManifestUpdated {
            lease_id: id("ManifestUpdated", event.leaseId)?,
            revision: event.revision,
            manifest_hash: event.manifestHash,
        },
        MarketplaceEvents::LeaseConfirmed(event) => ChainEvent::LeaseConfirmed {
            lease_id: id("LeaseConfirmed", event.leaseId)?,
            provider: event.provider,
        },
        MarketplaceEvents::DeliveryFailed(event) => ChainEvent::DeliveryFailed {
            lease_id: id("DeliveryFailed", event.leaseId)?,
            provider: event.provider,
            slashed: event.slashed,
        },
        MarketplaceEvents::PaymentCredited(event) => ChainEvent::PaymentCredited {
            token: event.token,
            account: event.account,
            amount: event.amount,
        },
        MarketplaceEvents::Claimed(event) => ChainEvent::Claimed {
            token: event.token,
            account: event.account,
            to: event.to,
            amount: event.amount,
        },
        MarketplaceEvents::LeaseClosed(event) => ChainEvent::LeaseClosed {
            lease_id: id("LeaseClosed", event.leaseId)?,
            closed_by: event.closedBy,
            reason: event.reason,
            paid_to_provider: event.paidToProvider,
            refunded_to_tenant: event.refundedToTenant,
        },
        MarketplaceEvents::PaymentWithdrawn(event) => ChainEvent::PaymentWithdrawn {
            lease_id: id("PaymentWithdrawn", event.leaseId)?,
            provider: event.provider,
            amount: event.amount,
            total_paid: event.totalPaid,
        },
    })
}

fn profile(
    endpoint: String,
    gateway_cert_sha256: B256,
    attributes: Vec<B256>,
    capacity: crate::bindings::ProviderRegistry::Resources,
    gpus: Vec<crate::bindings::ProviderRegistry::GpuCapacity>,
) -> ProviderProfile {
    ProviderProfile {
        endpoint,
        gateway_cert_sha256,
        attributes,
        capacity: Resources::from(capacity),
        gpus: gpus
            .into_iter()
            .map(|gpu| GpuCapacity {
                model_key: gpu.modelKey,
                count: gpu.count,
            })
            .collect(),
    }
}

fn from_registry(
    event: ProviderRegistryEvents,
    block: u64,
) -> Result<ChainEvent, EventDecodeError> {
    let id = |event: &'static str, id: U256| {
        id_to_u64(id).map_err(|source| EventDecodeError::IdOutOfRange {
            event,
            block,
            source,
        })
    };
    Ok(match event {
        ProviderRegistryEvents::BondReleased(event) => ChainEvent::BondReleased {
            order_id: id("BondReleased", event.orderId)?,
            bid_id: id("BondReleased", event.bidId)?,
            provider: event.provider,
            amount: event.amount,
        },
        ProviderRegistryEvents::BondForfeited(event) => ChainEvent::BondForfeited {
            order_id: id("BondForfeited", event.orderId)?,
            bid_id: id("BondForfeited", event.bidId)?,
            provider: event.provider,
            tenant: event.tenant,
            amount: event.amount,
        },
        ProviderRegistryEvents::ProviderRegistered(event) => ChainEvent::ProviderRegistered {
            provider: event.provider,
            profile: profile(
                event.endpoint,
                event.gatewayCertSha256,
                event.attributes,
                event.capacity,
                event.gpus,
            ),
            stake: event.stake,
        },
        ProviderRegistryEvents::ProviderUpdated(event) => ChainEvent::ProviderUpdated {
            provider: event.provider,
            profile: profile(
                event.endpoint,
                event.gatewayCertSha256,
                event.attributes,
                event.capacity,
                event.gpus,
            ),
        },
        ProviderRegistryEvents::ProviderDeregistered(event) => ChainEvent::ProviderDeregistered {
            provider: event.provider,
            unbonding_ends: event.unbondingEnds,
        },
        ProviderRegistryEvents::StakeWithdrawn(event) => ChainEvent::StakeWithdrawn {
            provider: event.provider,
            amount: event.amount,
        },
        ProviderRegistryEvents::PaymentCredited(event) => ChainEvent::PaymentCredited {
            token: event.token,
            account: event.account,
            amount: event.amount,
        },
        ProviderRegistryEvents::Claimed(event) => ChainEvent::Claimed {
            token: event.token,
            account: event.account,
            to: event.to,
            amount: event.amount,
        },
        ProviderRegistryEvents::DeliveryRecorded(event) => ChainEvent::DeliveryRecorded {
            provider: event.provider,
            deliveries_confirmed: event.deliveriesConfirmed,
        },
        ProviderRegistryEvents::StakeSlashed(event) => ChainEvent::StakeSlashed {
            provider: event.provider,
            tenant: event.tenant,
            amount: event.amount,
            deliveries_failed: event.deliveriesFailed,
        },
        ProviderRegistryEvents::MarketplaceBound(event) => ChainEvent::MarketplaceBound {
            marketplace: event.marketplace,
        },
        ProviderRegistryEvents::StakeAdded(event) => ChainEvent::StakeAdded {
            provider: event.provider,
            amount: event.amount,
            stake: event.stake,
        },
        ProviderRegistryEvents::AttributeAttested(event) => ChainEvent::AttributeAttested {
            auditor: event.auditor,
            provider: event.provider,
            attribute: event.attribute,
        },
        ProviderRegistryEvents::AttestationRevoked(event) => ChainEvent::AttestationRevoked {
            auditor: event.auditor,
            provider: event.provider,
            attribute: event.attribute,
        },
        ProviderRegistryEvents::KeyNamed(event) => ChainEvent::KeyNamed {
            key: event.key,
            name: event.name,
        },
    })
}
