//! Collects what running leases owe, and closes leases whose escrow ran dry.

use tracing::{info, warn};

use crate::daemon::{Core, DaemonError};
use crate::lease::CloseReason;

impl Core {
    /// One pass over the open leases: insolvent ones are closed and torn down, the others
    /// pay what has accrued.
    pub async fn withdraw_all(&self) -> Result<(), DaemonError> {
        for lease in self.open_leases().await? {
            if lease.state.kind() == crate::lease::LeaseStateKind::Closing {
                continue;
            }
            if let Err(error) = self.collect(lease.lease_id).await {
                warn!(lease_id = lease.lease_id, %error, "collecting payment failed");
            }
        }
        Ok(())
    }

    /// Closes the lease when insolvent, else withdraws what it owes (if anything).
    /// Returns the amount withdrawn.
    pub async fn collect(&self, lease_id: u64) -> Result<alloy::primitives::U256, DaemonError> {
        // Read at the head: a lease closed, or whose creation was reorged away, is not paid.
        let active = self
            .chain
            .find_lease(lease_id)
            .await?
            .is_some_and(|lease| lease.active);
        if !active {
            return Ok(alloy::primitives::U256::ZERO);
        }
        if self.chain.is_insolvent(lease_id).await? {
            warn!(lease_id, "lease is insolvent; closing it");
            self.close_lease(lease_id, CloseReason::Insolvent).await?;
            self.metrics.insolvent_closes.inc();
            return Ok(alloy::primitives::U256::ZERO);
        }
        let owed = self.chain.owed(lease_id).await?;
        if owed.withdrawable.is_zero() {
            return Ok(owed.withdrawable);
        }
        let payment = self.chain.withdraw_payment(lease_id).await?;
        self.metrics.withdrawals.inc();
        self.metrics.add_withdrawn(payment.amount);
        info!(lease_id, amount = %payment.amount, total = %payment.total_paid, "payment withdrawn");
        Ok(payment.amount)
    }
}
