//! Chain (the truth) vs store vs runtime, at start and periodically: what should run is
//! deployed (idempotently, so nothing is duplicated or restarted), what should not is
//! removed, leases the chain closed while the daemon was away are closed here too, and a
//! lease is never torn down merely because the daemon restarted.
//!
//! A workload the store does not know is judged by the chain alone: when its lease is
//! active and ours, the store was lost (or pointed elsewhere) and the workload is adopted
//! as it runs; only a workload whose lease the chain says is closed, or never ours, is
//! removed. A chain that does not answer removes nothing.

use std::collections::BTreeSet;

use tracing::{info, warn};

use crate::daemon::{Core, DaemonError};
use crate::lease::{CloseReason, LeaseStateKind, ManifestHash};
use crate::store::NewLease;

/// What the chain says of a workload the store does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// Its lease is active and ours: now recorded as running.
    Adopted,
    /// Its lease is closed, unknown or another provider's.
    NotOurs,
}

impl Core {
    /// One reconcile pass. Problems with one lease are logged and do not stop the others.
    pub async fn reconcile(&self) -> Result<(), DaemonError> {
        // Before anything else, so that a deleted rule is back within one pass.
        if let Err(error) = self.runtime.enforce_policies().await {
            tracing::error!(%error, "the runtime's policies could not be re-applied");
        }
        // Pre-lease starts first: adopted or removed by the chain's word, so that the runtime
        // pass below sees only what is left of them.
        if let Err(error) = self.reconcile_speculative().await {
            warn!(%error, "reconciling pre-lease starts failed");
        }
        let leases = self.open_leases().await?;
        let mut wanted = BTreeSet::new();
        for lease in &leases {
            let lease_id = lease.lease_id;
            let Some(on_chain) = self.chain.find_lease(lease_id).await? else {
                // Its creation was reorged away: the follower's resync removes it.
                warn!(
                    lease_id,
                    "lease not on chain (reorged away?); left to the reorg resync"
                );
                continue;
            };
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
                        // Its hostnames stay claimed, routed to what still runs.
                        if let Err(error) = self.route_lease(lease_id).await {
                            warn!(lease_id, %error, "routing the lease failed");
                        }
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
        self.prune_routes(&wanted).await?;
        for lease_id in self.runtime.list_leases().await? {
            if wanted.contains(&lease_id) {
                continue;
            }
            // Under the order's lock, so that a pre-lease start being accepted or adopted is
            // seen whole: as its record, or as the lease that adopted it.
            let _guard = self.order_locks.lock(lease_id).await;
            if self.store.speculative(lease_id).await?.is_some() {
                continue;
            }
            let known = self.store.find_lease(lease_id).await?;
            let remove = match &known {
                Some(record) => {
                    !record.state.wants_workload() && record.state.kind() != LeaseStateKind::Failed
                }
                None => match self.adopt_workload(lease_id).await {
                    Ok(Adoption::Adopted) => false,
                    Ok(Adoption::NotOurs) => self.options.remove_unknown_workloads,
                    Err(error) => {
                        warn!(lease_id, %error, "cannot tell whether an unknown workload is ours; leaving it");
                        false
                    }
                },
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

impl Core {
    /// Records a running workload whose lease the store lost, if the chain says the lease
    /// is active and ours: state `Running` with the order's manifest hash, the allocation
    /// taken again from the order, nothing asked of the tenant. The manifest text is not on
    /// chain, so it stays unknown until the tenant sends it again (`SendManifest` accepts
    /// the same manifest for an adopted lease); until then the workload runs as found.
    pub async fn adopt_workload(&self, lease_id: u64) -> Result<Adoption, DaemonError> {
        let Some(lease) = self.chain.find_lease(lease_id).await? else {
            return Ok(Adoption::NotOurs);
        };
        if !lease.active || lease.provider != self.chain.address() {
            return Ok(Adoption::NotOurs);
        }
        let order = self.chain.order(lease_id).await?;
        if self.allocate_for_lease(lease_id).await?.is_none() {
            warn!(
                lease_id,
                "an adopted lease does not fit the inventory as configured now; it keeps running"
            );
        }
        let (_, inserted) = self
            .store
            .insert_adopted(
                &NewLease {
                    lease_id,
                    order_id: lease_id,
                    tenant: lease.tenant.to_string().to_lowercase(),
                    manifest_deadline: 0,
                },
                ManifestHash(order.manifest_hash.0),
            )
            .await?;
        if inserted {
            self.store
                .record_history(
                    lease_id,
                    "adopted",
                    "the provider's store did not know this running lease; adopted it from the runtime and the chain",
                )
                .await?;
            warn!(
                lease_id,
                "adopted a running workload missing from the store"
            );
            self.metrics.leases_adopted.inc();
        }
        Ok(Adoption::Adopted)
    }
}
