//! Chain (the truth) vs store vs runtime, at start and periodically: what should run is
//! deployed (idempotently, so nothing is duplicated or restarted), what should not is
//! removed, leases the chain closed while the daemon was away are closed here too, and a
//! lease is never torn down merely because the daemon restarted.

use std::collections::BTreeSet;

use tracing::{info, warn};

use crate::daemon::{Core, DaemonError};
use crate::lease::{CloseReason, LeaseStateKind};

impl Core {
    /// One reconcile pass. Problems with one lease are logged and do not stop the others.
    pub async fn reconcile(&self) -> Result<(), DaemonError> {
        // Before anything else, so that a deleted rule is back within one pass.
        if let Err(error) = self.runtime.enforce_policies().await {
            tracing::error!(%error, "the runtime's policies could not be re-applied");
        }
        let leases = self.open_leases().await?;
        let mut wanted = BTreeSet::new();
        for lease in &leases {
            let lease_id = lease.lease_id;
            let on_chain = self.chain.lease(lease_id).await?;
            if !on_chain.active {
                info!(lease_id, "lease closed on chain while unobserved");
                if let Err(error) = self.on_lease_closed(lease_id).await {
                    warn!(lease_id, %error, "cleanup of a closed lease failed");
                }
                continue;
            }
            match lease.state.kind() {
                LeaseStateKind::Deploying | LeaseStateKind::Running | LeaseStateKind::Failed => {
                    wanted.insert(lease_id);
                    if let Err(error) = self.deploy_lease(lease_id).await {
                        warn!(lease_id, %error, "reconcile deploy failed");
                    }
                }
                LeaseStateKind::Closing => {
                    let reason = match &lease.state {
                        crate::lease::LeaseState::Closing { reason } => *reason,
                        _ => CloseReason::ProviderRequested,
                    };
                    if let Err(error) = self.close_lease(lease_id, reason).await {
                        warn!(lease_id, %error, "retrying the close failed");
                    }
                }
                LeaseStateKind::Won | LeaseStateKind::AwaitingManifest => {
                    // Allocation must survive a restart even before the manifest arrives.
                    if let Err(error) = self.allocate_for_lease(lease_id).await {
                        warn!(lease_id, %error, "allocation check failed");
                    }
                }
                LeaseStateKind::Closed => {}
            }
        }
        for lease_id in self.runtime.list_leases().await? {
            if wanted.contains(&lease_id) {
                continue;
            }
            let known = self.store.find_lease(lease_id).await?;
            let remove = match &known {
                Some(record) => {
                    !record.state.wants_workload() && record.state.kind() != LeaseStateKind::Failed
                }
                None => self.options.remove_unknown_workloads,
            };
            if remove {
                info!(lease_id, "removing a workload that should not run");
                self.runtime.teardown(lease_id).await?;
            }
        }
        self.metrics.reconciles.inc();
        Ok(())
    }
}
