//! After a chain reorg: what the daemon did for an order is brought back in line with the
//! canonical chain. The follower has already rewound and re-delivers the canonical events
//! from the fork, which redo what still holds (each reaction is idempotent); this undoes
//! what no longer does. A lease whose `LeaseCreated` was reorged away is not run (its
//! workload is removed) and not paid (collection reads the lease on chain first and finds
//! nothing), its allocation is freed, and it is forgotten so that a `LeaseCreated` for the
//! same id on the canonical chain starts it afresh. A lease whose `LeaseCreated` merely
//! moved to another block is still on chain: nothing is undone and its re-delivered event
//! changes nothing, so it runs once; if our delivery confirmation was among the abandoned
//! transactions, it is sent again (payment accrues only from it).

use leasehold_contracts::OrderStatus;
use tracing::{info, warn};

use crate::daemon::controller::{Work, WorkKey};
use crate::daemon::{Core, DaemonError};
use crate::lease::LeaseStateKind;

impl Core {
    /// Queues [`Work::Resync`] for every order the store holds a lease (not closed) or a
    /// reservation for, held at `block` so the follower's cursor waits for them.
    pub async fn queue_resyncs(&self, block: u64) -> Result<(), DaemonError> {
        let mut orders: std::collections::BTreeSet<u64> = self
            .open_leases()
            .await?
            .iter()
            .map(|lease| lease.lease_id)
            .collect();
        orders.extend(
            self.store
                .reservations()
                .await?
                .iter()
                .map(|reservation| reservation.order_id),
        );
        info!(
            block,
            orders = orders.len(),
            "resyncing orders after a reorg"
        );
        for order_id in orders {
            self.queue
                .push(WorkKey::Order(order_id), Some(block), Work::Resync);
        }
        Ok(())
    }

    /// Makes the daemon's lease and reservation for `order_id` match the canonical chain.
    pub async fn resync_order(&self, order_id: u64) -> Result<(), DaemonError> {
        let me = self.chain.address();
        if let Some(record) = self.store.find_lease(order_id).await?
            && record.state.kind() != LeaseStateKind::Closed
        {
            let Some(on_chain) = self
                .chain
                .find_lease(order_id)
                .await?
                .filter(|lease| lease.provider == me)
            else {
                return self.forget_reorged_lease(order_id).await;
            };
            if !on_chain.active {
                // Its close is on the canonical chain; the re-delivered event may not have
                // been handled yet: same cleanup, idempotent.
                return self.on_lease_closed(order_id).await;
            }
            if !on_chain.confirmed && record.state.wants_workload() {
                // Our delivery confirmation was in the abandoned blocks: without it nothing
                // accrues and the lease could be closed as undelivered. Confirm again.
                info!(
                    order_id,
                    "the delivery confirmation was reorged away; confirming again"
                );
                self.confirm_delivery(order_id, std::time::Duration::ZERO)
                    .await?;
            }
            return Ok(());
        }
        if self.store.reservation(order_id).await?.is_some() {
            let order = self.chain.order(order_id).await?;
            let gone = matches!(
                order.status,
                OrderStatus::None | OrderStatus::Cancelled | OrderStatus::Closed
            ) || (matches!(order.status, OrderStatus::Leased)
                && self.chain.lease(order_id).await?.provider != me);
            if gone {
                info!(
                    order_id,
                    "after a reorg the order is gone or leased elsewhere; releasing its reservation"
                );
                self.release_reservation(order_id).await?;
            }
        }
        Ok(())
    }

    async fn forget_reorged_lease(&self, lease_id: u64) -> Result<(), DaemonError> {
        warn!(
            lease_id,
            "the lease's creation was reorged away: removing its workload and freeing its allocation"
        );
        self.runtime.teardown(lease_id).await?;
        self.unroute_lease(lease_id);
        self.release_allocation(lease_id).await?;
        if self.store.forget_lease(lease_id).await? {
            self.store
                .record_history(
                    lease_id,
                    "reorged",
                    "the lease's creation was undone by a chain reorg; workload removed",
                )
                .await?;
            self.metrics.leases_reorged_away.inc();
        }
        Ok(())
    }
}
