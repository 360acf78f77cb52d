//! The lease manager: the persisted state machine (store + [`crate::lease`]) driven by
//! chain events, the tenant's manifest and the runtime.
//!
//! Won -> AwaitingManifest (the allocation is committed, the manifest window opens) ->
//! Deploying (a manifest whose keccak256 equals the order's `manifestHash`) -> Running ->
//! Closing (tenant, provider, insolvency or a manifest that never came) -> Closed.

use std::time::Duration;

use alloy::primitives::{Address, keccak256};
use leasehold_contracts::{CloseReason as ChainCloseReason, OrderInfo};
use tracing::{info, warn};

use crate::bidder::Holding;
use crate::daemon::{Core, DaemonError, unix_now};
use crate::deployment::{lease_deployment, order_group, parse_manifest};
use crate::lease::{CloseReason, LeaseEvent, LeaseState, LeaseStateKind, ManifestHash};
use crate::runtime::{LeaseDeployment, LeaseRuntimeStatus};
use crate::sealing::CredentialSeal;
use crate::store::{LeaseRecord, NewLease, StoreError};

/// After a fresh deployment, how long [`Core::confirm_delivery`] waits for every replica to
/// run before leaving the confirmation to the next reconcile pass, and how often it looks.
const READY_WAIT: Duration = Duration::from_secs(15);
const READY_POLL: Duration = Duration::from_millis(500);

/// Why a manifest was refused; each names what the tenant must fix.
#[derive(Debug, thiserror::Error)]
pub enum ManifestRejected {
    #[error("lease {0} is not a lease of this provider")]
    UnknownLease(u64),
    #[error("lease {lease_id} is {state}; it takes no manifest now")]
    WrongState {
        lease_id: u64,
        state: LeaseStateKind,
    },
    #[error("manifest hash {got} differs from the order's manifestHash {expected}")]
    HashMismatch { expected: String, got: String },
    #[error("a different manifest ({0}) was already accepted for this lease")]
    DifferentManifest(String),
    /// A pre-lease manifest this provider will not start now; the lease's path still works.
    #[error("order {order_id}: {reason}")]
    OrderNotStartable { order_id: u64, reason: String },
    #[error("manifest is not UTF-8 JSON")]
    NotUtf8,
    #[error("manifest: {0}")]
    Invalid(String),
    /// An `accept` hostname another lease holds, or one under the ingress domain.
    #[error(transparent)]
    Hostname(#[from] crate::ingress::HostnameError),
    /// Boxed: the daemon's error is large, and refusals are the common case.
    #[error(transparent)]
    Internal(Box<DaemonError>),
}

impl From<DaemonError> for ManifestRejected {
    fn from(error: DaemonError) -> Self {
        Self::Internal(Box::new(error))
    }
}

impl From<StoreError> for ManifestRejected {
    fn from(error: StoreError) -> Self {
        DaemonError::from(error).into()
    }
}

/// A manifest that passed [`Core::check_manifest`].
pub(crate) struct CheckedManifest {
    pub(crate) hash: ManifestHash,
    /// The manifest group the order was created for.
    pub(crate) group: String,
    /// The text the store keeps (registry passwords sealed).
    pub(crate) stored: String,
}

/// Every state in which the lease still exists on chain as far as the store knows.
pub const OPEN_STATES: [LeaseStateKind; 6] = [
    LeaseStateKind::Won,
    LeaseStateKind::AwaitingManifest,
    LeaseStateKind::Deploying,
    LeaseStateKind::Running,
    LeaseStateKind::Failed,
    LeaseStateKind::Closing,
];

fn chain_reason(reason: CloseReason) -> ChainCloseReason {
    match reason {
        CloseReason::ManifestTimeout => ChainCloseReason::ManifestNotDelivered,
        CloseReason::TenantRequested => ChainCloseReason::TenantRequest,
        CloseReason::ProviderRequested => ChainCloseReason::ProviderRequest,
        CloseReason::Insolvent => ChainCloseReason::Insolvent,
        CloseReason::DeployFailed => ChainCloseReason::WorkloadFailed,
        CloseReason::ClosedOnChain => ChainCloseReason::Unspecified,
    }
}

impl Core {
    /// Every lease not yet closed, by id.
    pub async fn open_leases(&self) -> Result<Vec<LeaseRecord>, DaemonError> {
        let mut leases = Vec::new();
        for kind in OPEN_STATES {
            leases.extend(self.store.leases_in_state(kind).await?);
        }
        leases.sort_by_key(|lease| lease.lease_id);
        Ok(leases)
    }

    /// Reacts to our `LeaseCreated`: commits the allocation, stores the lease and opens the
    /// manifest window, or, when the tenant's manifest came before the lease, adopts the
    /// deployment it started (`true`: the caller deploys the lease, which restarts nothing).
    pub async fn on_lease_won(&self, lease_id: u64, tenant: Address) -> Result<bool, DaemonError> {
        let _guard = self.order_locks.lock(lease_id).await;
        if let Some(existing) = self.store.find_lease(lease_id).await?
            && existing.state.kind() != LeaseStateKind::Won
        {
            // Redelivered: a pre-lease start left behind by a crash mid-adoption goes now.
            return self.adopt_speculative(lease_id).await;
        }
        let Some(_) = self.allocate_for_lease(lease_id).await? else {
            warn!(lease_id, "won a lease that no longer fits; closing it");
            self.close_lease(lease_id, CloseReason::ProviderRequested)
                .await?;
            return Ok(false);
        };
        let deadline = unix_now().saturating_add(self.options.manifest_timeout_secs);
        let (record, inserted) = self
            .store
            .insert_won(&NewLease {
                lease_id,
                order_id: lease_id,
                tenant: tenant.to_string().to_lowercase(),
                manifest_deadline: deadline,
            })
            .await?;
        if record.state.kind() == LeaseStateKind::Won {
            self.store
                .apply(lease_id, &LeaseEvent::ManifestWindowOpened)
                .await?;
        }
        if inserted {
            self.store
                .record_history(
                    lease_id,
                    "won",
                    &format!("lease created on chain; the manifest is due by unix time {deadline}"),
                )
                .await?;
        }
        if self.adopt_speculative(lease_id).await? {
            info!(lease_id, %tenant, "lease won; its manifest came before it");
            return Ok(true);
        }
        info!(lease_id, %tenant, deadline, "lease won; waiting for the manifest");
        Ok(false)
    }

    /// Reacts to `LeaseClosed`: removes the workload, marks the lease closed and frees its
    /// allocation. Leases of other providers are ignored.
    pub async fn on_lease_closed(&self, lease_id: u64) -> Result<(), DaemonError> {
        let Some(record) = self.store.find_lease(lease_id).await? else {
            return Ok(());
        };
        self.runtime.teardown(lease_id).await?;
        self.unroute_lease(lease_id);
        // The provider's own close and the chain's `LeaseClosed` event can both get here;
        // only the call whose transition lands writes the history entry.
        let mut current = record;
        while current.state.kind() != LeaseStateKind::Closed {
            match self
                .store
                .apply_at_version(lease_id, current.version, &LeaseEvent::ClosedOnChain)
                .await
            {
                Ok(closed) => {
                    let reason = closed.state.reason().unwrap_or_default();
                    self.store
                        .record_history(
                            lease_id,
                            "closed",
                            &format!("closed on chain ({reason}); workload removed"),
                        )
                        .await?;
                    info!(lease_id, "lease closed");
                    break;
                }
                Err(StoreError::Conflict { .. }) => current = self.store.lease(lease_id).await?,
                Err(error) => return Err(error.into()),
            }
        }
        self.release_allocation(lease_id).await
    }

    /// Closes a lease from the provider's side: Closing, then `closeLease` on chain, then
    /// the same cleanup as a `LeaseClosed` event (which stays idempotent).
    pub async fn close_lease(&self, lease_id: u64, reason: CloseReason) -> Result<(), DaemonError> {
        if self.store.find_lease(lease_id).await?.is_some() {
            self.store
                .apply(lease_id, &LeaseEvent::CloseRequested { reason })
                .await?;
        }
        match self.chain.close_lease(lease_id, chain_reason(reason)).await {
            Ok(settlement) => {
                info!(lease_id, %reason, paid = %settlement.paid_to_provider, "lease closed on chain");
            }
            Err(error) => {
                // Already closed by the tenant or by someone closing an insolvent lease.
                if self.chain.lease(lease_id).await?.active {
                    return Err(error.into());
                }
            }
        }
        if self.store.find_lease(lease_id).await?.is_some() {
            self.on_lease_closed(lease_id).await
        } else {
            self.release_allocation(lease_id).await
        }
    }

    /// The tenant's manifest for a lease (the gateway calls this after checking the
    /// signature). Idempotent: the same manifest again succeeds without a change.
    pub async fn accept_manifest(
        &self,
        lease_id: u64,
        manifest: &[u8],
    ) -> Result<LeaseRecord, ManifestRejected> {
        let record = self
            .store
            .find_lease(lease_id)
            .await?
            .ok_or(ManifestRejected::UnknownLease(lease_id))?;
        let hash = ManifestHash(keccak256(manifest).0);
        match &record.state {
            LeaseState::Won { .. } | LeaseState::AwaitingManifest { .. } => {}
            LeaseState::Deploying { manifest_hash }
            | LeaseState::Running { manifest_hash }
            | LeaseState::Failed { manifest_hash, .. } => {
                if *manifest_hash != hash {
                    if record.manifest_json.is_some() {
                        // A new manifest for a lease that runs one: update in place.
                        return self.accept_manifest_update(record, manifest, hash).await;
                    }
                    return Err(ManifestRejected::DifferentManifest(
                        manifest_hash.to_string(),
                    ));
                }
                if record.manifest_json.is_some() {
                    return Ok(record);
                }
                // Adopted after the store was lost: take the text again, checked as new.
            }
            other => {
                return Err(ManifestRejected::WrongState {
                    lease_id,
                    state: other.kind(),
                });
            }
        }
        let Some((row, holding)) = self.holding(lease_id).await? else {
            return Err(DaemonError::Lease {
                lease_id,
                reason: "no allocation is recorded".into(),
            }
            .into());
        };
        let order = self
            .chain
            .order(record.order_id)
            .await
            .map_err(DaemonError::from)?;
        let checked = self.check_manifest(lease_id, &record.tenant, &order, manifest, &holding)?;
        let group_name = checked.group.clone();
        let holding = Holding {
            group: Some(checked.group),
            ..holding
        };
        self.persist_holding(lease_id, &holding, row.bid_id, row.expires_at)
            .await?;
        let stored = checked.stored;
        let text = stored.as_str();
        let record = if record.state.manifest_hash().is_some() {
            self.store.attach_manifest(lease_id, hash, text).await?;
            self.store.lease(lease_id).await?
        } else {
            self.store.receive_manifest(lease_id, hash, text).await?
        };
        self.record_revision_of_first_manifest(lease_id, hash)
            .await?;
        self.store
            .record_history(
                lease_id,
                "manifest_accepted",
                &format!("manifest {hash} matches the order; deploying group `{group_name}`"),
            )
            .await?;
        info!(lease_id, manifest = %hash, "manifest accepted; deploying");
        Ok(record)
    }

    /// The one check of a manifest against its order, for a lease and before one (the
    /// pre-lease start): it hashes to the order's `manifestHash`, parses, names the order's
    /// group (no larger than what the order bought), and makes a valid deployment on
    /// `holding`'s devices. `lease_id` is the order id (the lease's id once it exists).
    pub(crate) fn check_manifest(
        &self,
        lease_id: u64,
        tenant: &str,
        order: &OrderInfo,
        manifest: &[u8],
        holding: &Holding,
    ) -> Result<CheckedManifest, ManifestRejected> {
        let hash = ManifestHash(keccak256(manifest).0);
        if order.manifest_hash.0 != hash.0 {
            return Err(ManifestRejected::HashMismatch {
                expected: order.manifest_hash.to_string(),
                got: hash.to_string(),
            });
        }
        let text = std::str::from_utf8(manifest).map_err(|_| ManifestRejected::NotUtf8)?;
        let parsed =
            parse_manifest(manifest).map_err(|e| ManifestRejected::Invalid(e.to_string()))?;
        let group = order_group(&parsed, &order.bought())
            .map_err(|e| ManifestRejected::Invalid(e.to_string()))?
            .name
            .clone();
        let deployment = lease_deployment(
            lease_id,
            tenant,
            &parsed,
            &group,
            &holding.gpu_devices(),
            &holding.leased_ips,
        )
        .map_err(|e| ManifestRejected::Invalid(e.to_string()))?;
        deployment
            .validate()
            .map_err(|e| ManifestRejected::Invalid(e.to_string()))?;
        // Claimed before anything starts, on either path: a pre-lease start that is later
        // removed leaves its claim until the next reconcile pass prunes routes of non-leases.
        if let Some(manifest_group) = parsed.groups.iter().find(|g| g.name == group) {
            self.claim_hostnames(lease_id, manifest_group)?;
        }
        let stored = self.manifest_to_store(lease_id, &parsed, text)?;
        Ok(CheckedManifest {
            hash,
            group,
            stored,
        })
    }

    /// The manifest text the store keeps. The store never holds a registry password in
    /// clear: what it keeps of a manifest with credentials is the manifest with each
    /// password sealed.
    pub(crate) fn manifest_to_store(
        &self,
        lease_id: u64,
        parsed: &leasehold_manifests::Manifest,
        text: &str,
    ) -> Result<String, DaemonError> {
        if !CredentialSeal::has_credentials(parsed) {
            return Ok(text.to_owned());
        }
        let mut sealed = parsed.clone();
        self.credential_seal.seal(lease_id, &mut sealed)?;
        Ok(sealed.canonical_json())
    }

    /// What the runtime should run for a lease, from its stored manifest and allocation.
    pub async fn deployment_of(
        &self,
        record: &LeaseRecord,
    ) -> Result<LeaseDeployment, DaemonError> {
        self.deployment_from(
            record.lease_id,
            &record.tenant,
            record.manifest_json.as_deref(),
            None,
        )
        .await
    }

    /// What the runtime runs for lease (or, before it exists, order) `lease_id` of `tenant`
    /// from the stored manifest text and the stored holding (its devices, and its group
    /// unless `group` names it).
    pub(crate) async fn deployment_from(
        &self,
        lease_id: u64,
        tenant: &str,
        manifest_json: Option<&str>,
        group: Option<&str>,
    ) -> Result<LeaseDeployment, DaemonError> {
        let missing = |what: &str| DaemonError::Lease {
            lease_id,
            reason: format!("no {what} is stored"),
        };
        let json = manifest_json.ok_or_else(|| missing("manifest"))?;
        let (_, holding) = self
            .holding(lease_id)
            .await?
            .ok_or_else(|| missing("allocation"))?;
        let group = group
            .or(holding.group.as_deref())
            .ok_or_else(|| missing("manifest group"))?;
        let mut manifest = parse_manifest(json.as_bytes())?;
        self.credential_seal.open(lease_id, &mut manifest)?;
        Ok(lease_deployment(
            lease_id,
            tenant,
            &manifest,
            group,
            &holding.gpu_devices(),
            &holding.leased_ips,
        )?)
    }

    /// Brings the runtime to the lease's manifest (idempotent) and records the outcome.
    /// A Failed lease is retried; after [`crate::daemon::DaemonOptions::max_deploy_attempts`]
    /// failures in a row the lease is closed (deploy failed) so the tenant stops paying for
    /// a workload that cannot run, and its history says why.
    pub async fn deploy_lease(&self, lease_id: u64) -> Result<(), DaemonError> {
        let mut record = self.store.lease(lease_id).await?;
        if record.state.kind() == LeaseStateKind::Failed {
            record = self
                .store
                .apply(lease_id, &LeaseEvent::DeployStarted)
                .await?;
        }
        if !record.state.wants_workload() {
            return Ok(());
        }
        if record.manifest_json.is_none() {
            // Adopted after the store was lost: the workload runs as it was found until
            // the tenant sends the manifest again; there is nothing to deploy from.
            return Ok(());
        }
        let deployment = self.deployment_of(&record).await?;
        match self.runtime.deploy(&deployment).await {
            Ok(()) => {
                self.store.reset_deploy_failures(lease_id).await?;
                if record.state.kind() == LeaseStateKind::Deploying {
                    self.store
                        .apply(lease_id, &LeaseEvent::DeploySucceeded)
                        .await?;
                    self.store
                        .record_history(lease_id, "running", "every replica was started")
                        .await?;
                    info!(lease_id, "lease running");
                }
                if let Err(error) = self.route_lease(lease_id).await {
                    warn!(lease_id, %error, "routing the lease failed; the reconciler retries");
                }
                let wait = if record.state.kind() == LeaseStateKind::Deploying {
                    READY_WAIT
                } else {
                    Duration::ZERO
                };
                if let Err(error) = self.confirm_delivery(lease_id, wait).await {
                    warn!(lease_id, %error, "delivery not confirmed yet; the reconciler retries");
                }
                Ok(())
            }
            Err(error) => {
                warn!(lease_id, %error, "deploy failed");
                self.record_deploy_failure(lease_id, &error.to_string(), error.is_workload_fault())
                    .await?;
                Err(error.into())
            }
        }
    }

    /// Confirms on chain that the lease is delivered once the runtime reports every replica of
    /// every service running (waiting up to `wait` for that): payment accrues only from the
    /// confirmation, and a lease left unconfirmed past its delivery deadline is closed as
    /// undelivered with part of the stake going to the tenant. Idempotent: a lease already
    /// confirmed or closed is left alone. Returns whether this call confirmed it.
    pub async fn confirm_delivery(
        &self,
        lease_id: u64,
        wait: Duration,
    ) -> Result<bool, DaemonError> {
        let on_chain = self.chain.lease(lease_id).await?;
        if !on_chain.active || on_chain.confirmed {
            return Ok(false);
        }
        let deadline = tokio::time::Instant::now() + wait;
        while !self.runtime.status(lease_id).await?.is_ready() {
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(READY_POLL).await;
        }
        if let Err(error) = self.chain.confirm_lease(lease_id).await {
            // A concurrent pass confirmed it, or the lease closed meanwhile.
            let now = self.chain.lease(lease_id).await?;
            if now.confirmed || !now.active {
                return Ok(false);
            }
            return Err(error.into());
        }
        self.store
            .record_history(
                lease_id,
                "confirmed",
                "delivery confirmed on chain: every replica runs, payment accrues from now",
            )
            .await?;
        info!(lease_id, "delivery confirmed on chain");
        Ok(true)
    }

    /// Records a failed deployment in the lease's state and history. A failure of the
    /// workload's own (`counts`) brings the lease closer to being closed; once the attempts
    /// are used up it is. An unreachable engine is retried without counting.
    async fn record_deploy_failure(
        &self,
        lease_id: u64,
        reason: &str,
        counts: bool,
    ) -> Result<(), DaemonError> {
        self.metrics.deploy_failures.inc();
        if self.store.lease(lease_id).await?.state.kind() == LeaseStateKind::Running {
            // A running lease whose workload had to be re-created: the attempt failed.
            self.store
                .apply(lease_id, &LeaseEvent::DeployStarted)
                .await?;
        }
        self.store
            .apply(
                lease_id,
                &LeaseEvent::DeployFailed {
                    reason: reason.to_owned(),
                },
            )
            .await?;
        if !counts {
            // Logged, not recorded: an outage would repeat this every reconcile pass.
            return Ok(());
        }
        let failures = self.store.count_deploy_failure(lease_id).await?;
        let allowed = self.options.max_deploy_attempts;
        self.store
            .record_history(
                lease_id,
                "deploy_failed",
                &format!("attempt {failures} of {allowed}: {reason}"),
            )
            .await?;
        if failures >= allowed {
            self.store
                .record_history(
                    lease_id,
                    "closing",
                    &format!(
                        "the deployment failed {failures} times in a row; closing the lease (deploy failed) so that nothing more is charged"
                    ),
                )
                .await?;
            warn!(
                lease_id,
                failures, "deployment keeps failing; closing the lease"
            );
            self.metrics.failed_deploy_closes.inc();
            self.close_lease(lease_id, CloseReason::DeployFailed)
                .await?;
        }
        Ok(())
    }

    /// The lease as stored and as the runtime sees it.
    pub async fn lease_status(
        &self,
        lease_id: u64,
    ) -> Result<Option<(LeaseRecord, LeaseRuntimeStatus)>, DaemonError> {
        let Some(record) = self.store.find_lease(lease_id).await? else {
            return Ok(None);
        };
        let status = self.runtime.status(lease_id).await?;
        Ok(Some((record, status)))
    }

    /// Closes leases whose manifest never came.
    pub async fn close_overdue_leases(&self) -> Result<(), DaemonError> {
        let now = unix_now();
        for lease in self.store.leases_past_manifest_deadline(now).await? {
            warn!(lease_id = lease.lease_id, "manifest deadline passed");
            self.store
                .apply(lease.lease_id, &LeaseEvent::ManifestDeadlinePassed { now })
                .await?;
            self.close_lease(lease.lease_id, CloseReason::ManifestTimeout)
                .await?;
        }
        Ok(())
    }

    /// One housekeeping pass: lapsed reservations, overdue manifests and the gateway's
    /// replay cache.
    pub async fn housekeeping(&self) -> Result<(), DaemonError> {
        self.expire_reservations().await?;
        self.close_overdue_leases().await?;
        self.prune_replay_cache().await
    }

    /// Forgets signed calls the gateway would refuse as too old anyway. Twice the skew
    /// window, so a provider clock that steps back a little still finds recent ones.
    pub async fn prune_replay_cache(&self) -> Result<(), DaemonError> {
        let cutoff = unix_now().saturating_sub(2 * leasehold_proto::auth::MAX_CLOCK_SKEW_SECS);
        let removed = self.store.prune_signatures(cutoff).await?;
        if removed > 0 {
            tracing::debug!(removed, "replay cache pruned");
        }
        Ok(())
    }
}
