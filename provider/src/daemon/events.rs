//! Maps followed contract logs to the daemon's reactions. Every reaction is idempotent:
//! after a restart the follower redelivers the range whose cursor was not saved.

use std::sync::Arc;

use alloy::rpc::types::Log;
use leasehold_contracts::bindings::Marketplace::MarketplaceEvents;
use leasehold_contracts::{LeaseholdEvent, LogHandler, OrderPosted};
use tracing::{debug, warn};

use super::{Core, DaemonError};

pub struct EventHandler {
    core: Arc<Core>,
}

impl EventHandler {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

impl LogHandler for EventHandler {
    type Error = DaemonError;

    async fn handle(&mut self, log: &Log) -> Result<(), DaemonError> {
        let core = &self.core;
        if log.address() != core.chain.deployment().marketplace {
            return Ok(());
        }
        let Some(LeaseholdEvent::Marketplace(event)) = LeaseholdEvent::decode(log) else {
            return Ok(());
        };
        let me = core.chain.address();
        match event {
            MarketplaceEvents::OrderCreated(created) => match OrderPosted::try_from(created) {
                Ok(order) => core.on_order_created(&order).await?,
                Err(error) => warn!(%error, "ignoring an order with an out-of-range id"),
            },
            MarketplaceEvents::BidPlaced(bid) if bid.provider == me => {
                let (Ok(order_id), Ok(bid_id)) =
                    (u64::try_from(bid.orderId), u64::try_from(bid.bidId))
                else {
                    return Ok(());
                };
                core.on_bid_placed(order_id, bid_id).await?;
            }
            MarketplaceEvents::BidWithdrawn(bid) if bid.provider == me => {
                if let Ok(order_id) = u64::try_from(bid.orderId) {
                    core.release_reservation(order_id).await?;
                }
            }
            MarketplaceEvents::OrderCancelled(cancelled) => {
                if let Ok(order_id) = u64::try_from(cancelled.orderId) {
                    core.release_reservation(order_id).await?;
                }
            }
            MarketplaceEvents::LeaseCreated(lease) => {
                let Ok(lease_id) = u64::try_from(lease.leaseId) else {
                    return Ok(());
                };
                if lease.provider == me {
                    core.on_lease_won(lease_id, lease.tenant).await?;
                } else {
                    // Someone else won: our bid lost.
                    core.release_reservation(lease_id).await?;
                }
            }
            MarketplaceEvents::LeaseClosed(closed) => {
                if let Ok(lease_id) = u64::try_from(closed.leaseId) {
                    core.on_lease_closed(lease_id).await?;
                }
            }
            other => debug!(event = ?std::mem::discriminant(&other), "event needs no reaction"),
        }
        Ok(())
    }
}
