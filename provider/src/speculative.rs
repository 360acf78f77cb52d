//! The pre-lease start: a tenant that has decided which bid to accept sends that bidder the
//! manifest (`Lease.SendOrderManifest`) while its `acceptBid` is being mined, and the
//! provider starts the workload at once, under the reservation its bid already holds, so
//! that the lease finds it running.
//!
//! Invariants (ARCHITECTURE.md, "Pre-lease starts"):
//! - Started only for the order's tenant, while the order is open, for this provider's own
//!   bid whose reservation is live (the capacity is already held: nothing is over-committed),
//!   with a manifest that passes the lease's own check (`Core::check_manifest`). One per
//!   order. For an order whose auto-accept rule covers this provider ([`PreLeaseBid::AutoAccept`])
//!   the manifest comes before the bid: taken once the bidder holds the reservation it writes
//!   before sending `placeBid`, and recorded without a bid id until the receipt fills it in.
//! - Recorded in the store before anything starts, so a restarted daemon finds every one.
//! - It runs under the names and labels of the lease it would become (lease id = order id),
//!   so adopting it renames nothing and restarts nothing: `LeaseCreated` for our bid makes
//!   its manifest the lease's, and the lease's ordinary deploy (idempotent) finds every
//!   replica running and confirms delivery.
//! - Anything else (the order leased to another provider, cancelled or expired, our bid
//!   withdrawn or evicted, the reservation lapsed, the start failing) removes the workload
//!   first, then the record, then the reservation. A lease's workload is never removed here.
//! - Every transition of one order's pre-lease start (accept, start, adopt, remove, and the
//!   reconciler's verdict on a workload of that id) runs under the order's lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use alloy::primitives::keccak256;
use leasehold_contracts::OrderStatus;
use tokio::sync::OwnedMutexGuard;
use tracing::{info, warn};

use crate::bidder::Holding;
use crate::daemon::{Core, DaemonError, unix_now};
use crate::lease::{LeaseStateKind, ManifestHash};
use crate::leases::ManifestRejected;
use crate::store::SpeculativeDeployment;

/// One async lock per order (and so per lease, whose id is the order's), created on demand
/// and forgotten once nobody holds or waits for it.
#[derive(Debug, Default)]
pub(crate) struct OrderLocks(Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>);

impl OrderLocks {
    pub(crate) async fn lock(&self, order_id: u64) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            // Only the map holds an idle lock.
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            Arc::clone(locks.entry(order_id).or_default())
        };
        lock.lock_owned().await
    }
}

/// What became of a pre-lease manifest the gateway passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreLease {
    /// Recorded; the caller starts the workload ([`Core::deploy_speculative`]).
    Accepted,
    /// The same manifest was already accepted for this bid: nothing new.
    AlreadyAccepted,
    /// The lease exists already: the manifest went the lease's way ([`Core::accept_manifest`]);
    /// the caller deploys the lease.
    Leased,
}

/// Which bid of this provider a pre-lease manifest comes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreLeaseBid {
    /// The bid the tenant is accepting (its `acceptBid` is being mined).
    Bid(u64),
    /// The bid the order's auto-accept rule will make the lease: the one this provider is
    /// placing or has placed (`SendOrderManifest.auto_accept`).
    AutoAccept,
}

/// What the chain says of a pre-lease start found by the reconciler.
enum Fate {
    /// The order is open and our bid's reservation live: keep it (and complete its start).
    Keep,
    /// The order became our lease while nobody watched: adopt it now.
    Won { tenant: alloy::primitives::Address },
    /// Remove it, for this reason.
    Remove(String),
}

fn not_startable(order_id: u64, reason: impl Into<String>) -> ManifestRejected {
    ManifestRejected::OrderNotStartable {
        order_id,
        reason: reason.into(),
    }
}

impl Core {
    /// Checks and records a pre-lease manifest for `order_id` (the gateway has proven the
    /// caller to be the order's tenant). Nothing is started here: on
    /// [`PreLease::Accepted`] the caller runs [`Core::deploy_speculative`].
    pub async fn accept_order_manifest(
        &self,
        order_id: u64,
        bid: PreLeaseBid,
        manifest: &[u8],
    ) -> Result<PreLease, ManifestRejected> {
        let guard = self.order_locks.lock(order_id).await;
        if self.store.find_lease(order_id).await?.is_some() {
            // The lease's own path takes the order's lock where it needs it.
            drop(guard);
            self.accept_manifest(order_id, manifest).await?;
            return Ok(PreLease::Leased);
        }
        let hash = ManifestHash(keccak256(manifest).0);
        if let Some(started) = self.store.speculative(order_id).await? {
            let same_bid = match bid {
                PreLeaseBid::Bid(bid_id) => started.bid_id == Some(bid_id),
                PreLeaseBid::AutoAccept => true,
            };
            if started.manifest_hash == hash && same_bid {
                return Ok(PreLease::AlreadyAccepted);
            }
            return Err(not_startable(
                order_id,
                format!(
                    "manifest {} was already started for {}; one pre-lease start per order",
                    started.manifest_hash,
                    started
                        .bid_id
                        .map_or_else(|| "our bid".to_owned(), |bid_id| format!("bid {bid_id}")),
                ),
            ));
        }
        let now = unix_now();
        let Some((row, holding)) = self.holding(order_id).await? else {
            return Err(not_startable(
                order_id,
                match bid {
                    PreLeaseBid::Bid(_) => {
                        "this provider holds no reservation for it (no live bid of ours)"
                    }
                    PreLeaseBid::AutoAccept => {
                        "this provider holds no reservation for it yet (not bidding on it, or \
                         not yet); send it again"
                    }
                },
            ));
        };
        if holding.allocated {
            return Err(not_startable(order_id, "its resources belong to a lease"));
        }
        // After the store's answer: the rule is read from the chain's logs, so a tenant
        // sending before we reserve (or for an order we skip) costs no chain calls.
        if bid == PreLeaseBid::AutoAccept {
            self.check_auto_accept_rule(order_id).await?;
        }
        let bid_id = match bid {
            // The rule makes whichever bid we place the lease: the one in flight, or placed.
            PreLeaseBid::AutoAccept => row.bid_id,
            PreLeaseBid::Bid(bid_id) => {
                self.check_own_bid(order_id, bid_id, row.bid_id).await?;
                Some(bid_id)
            }
        };
        if row.expires_at <= now {
            return Err(not_startable(order_id, "our bid's reservation has lapsed"));
        }
        let order = self
            .chain
            .order(order_id)
            .await
            .map_err(DaemonError::from)?;
        if order.status != OrderStatus::Open {
            return Err(not_startable(
                order_id,
                format!("the order is {:?}, not open", order.status),
            ));
        }
        if self
            .chain
            .order_expired(&order)
            .await
            .map_err(DaemonError::from)?
        {
            return Err(not_startable(order_id, "the order has expired"));
        }
        let tenant = order.tenant.to_string().to_lowercase();
        let checked = self.check_manifest(order_id, &tenant, &order, manifest, &holding)?;
        // The group lives in the record, not the reservation, which the bidder may still be
        // writing (it records the bid id once `placeBid`'s receipt is back).
        let record = SpeculativeDeployment {
            order_id,
            bid_id,
            tenant,
            manifest_hash: checked.hash,
            manifest_json: checked.stored,
            group: checked.group.clone(),
        };
        // Before anything starts: a daemon killed from here on finds the record.
        if self.store.insert_speculative(&record).await?.is_some() {
            return Err(not_startable(order_id, "a manifest was already started"));
        }
        self.store
            .record_history(
                order_id,
                "manifest_accepted",
                &format!(
                    "manifest {hash} sent before the lease matches the order; starting group `{}` under the reservation of {}",
                    checked.group,
                    bid_id.map_or_else(|| "the bid being placed".to_owned(), |bid_id| format!("bid {bid_id}")),
                ),
            )
            .await?;
        self.metrics.speculative_starts.inc();
        info!(order_id, ?bid_id, manifest = %hash, "pre-lease manifest accepted; starting");
        Ok(PreLease::Accepted)
    }

    /// `bid_id` is this provider's live bid on the order (`recorded`: the bid id its
    /// reservation knows, `None` while our `placeBid` receipt is not back).
    async fn check_own_bid(
        &self,
        order_id: u64,
        bid_id: u64,
        recorded: Option<u64>,
    ) -> Result<(), ManifestRejected> {
        let ours = match recorded {
            Some(ours) => Some(ours),
            // Our `placeBid` is mined but its receipt not yet back (the tenant saw the bid in
            // the same block): the chain says whose bid it is.
            None => {
                let bids = self.chain.bids(order_id).await.map_err(DaemonError::from)?;
                let me = self.chain.address();
                bids.iter()
                    .find(|bid| bid.provider == me && !bid.withdrawn)
                    .map(|bid| bid.bid_id)
            }
        };
        if ours == Some(bid_id) {
            return Ok(());
        }
        let ours = ours.map_or_else(|| "none on chain".to_owned(), |ours| ours.to_string());
        Err(not_startable(
            order_id,
            format!("bid {bid_id} is not this provider's bid (ours: {ours})"),
        ))
    }

    /// A manifest sent before our bid is taken only for an order whose auto-accept rule
    /// covers this provider: no other order's tenant has committed to our bid.
    async fn check_auto_accept_rule(&self, order_id: u64) -> Result<(), ManifestRejected> {
        let rule = self
            .chain
            .auto_accept_rule(order_id)
            .await
            .map_err(DaemonError::from)?;
        match rule {
            None => Err(not_startable(
                order_id,
                "it has no auto-accept rule; a manifest before the lease needs the bid being accepted",
            )),
            Some(rule) => match rule.provider {
                Some(named) if named != self.chain.address() => Err(not_startable(
                    order_id,
                    format!("its auto-accept rule names provider {named}, not this one"),
                )),
                _ => Ok(()),
            },
        }
    }

    /// Starts (or completes: the runtime's deploy is idempotent) the workload of a pre-lease
    /// start. A start that fails is removed: the lease, if it comes, deploys on its own path.
    pub async fn deploy_speculative(&self, order_id: u64) -> Result<(), DaemonError> {
        let _guard = self.order_locks.lock(order_id).await;
        let Some(started) = self.store.speculative(order_id).await? else {
            return Ok(());
        };
        if self.store.find_lease(order_id).await?.is_some() {
            // Adopted meanwhile: the lease deploys.
            return Ok(());
        }
        let deployment = match self
            .deployment_from(
                order_id,
                &started.tenant,
                Some(&started.manifest_json),
                Some(&started.group),
            )
            .await
        {
            Ok(deployment) => deployment,
            Err(error) => {
                self.remove_speculative(order_id, &format!("it cannot start: {error}"))
                    .await?;
                return Err(error);
            }
        };
        if let Err(error) = self.runtime.deploy(&deployment).await {
            self.remove_speculative(order_id, &format!("its start failed: {error}"))
                .await?;
            return Err(error.into());
        }
        info!(order_id, "pre-lease deployment started");
        Ok(())
    }

    /// Makes a pre-lease start's manifest the manifest of the lease just won (the caller
    /// holds the order's lock and has stored the lease). The workload keeps running; the
    /// lease's ordinary deploy finds it and confirms delivery. `true` when there was one.
    pub(crate) async fn adopt_speculative(&self, lease_id: u64) -> Result<bool, DaemonError> {
        let Some(started) = self.store.speculative(lease_id).await? else {
            return Ok(false);
        };
        let record = self.store.lease(lease_id).await?;
        let waiting = matches!(
            record.state.kind(),
            LeaseStateKind::Won | LeaseStateKind::AwaitingManifest
        );
        if waiting && record.tenant == started.tenant {
            // The lease's holding (committed from the bid's reservation) learns its group,
            // as the lease's own manifest path would record it.
            let Some((row, holding)) = self.holding(lease_id).await? else {
                return Err(DaemonError::Lease {
                    lease_id,
                    reason: "no allocation is recorded".into(),
                });
            };
            let holding = Holding {
                group: Some(started.group.clone()),
                ..holding
            };
            self.persist_holding(lease_id, &holding, row.bid_id, row.expires_at)
                .await?;
            self.store
                .receive_manifest(lease_id, started.manifest_hash, &started.manifest_json)
                .await?;
            self.record_revision_of_first_manifest(lease_id, started.manifest_hash)
                .await?;
            self.store
                .record_history(
                    lease_id,
                    "adopted_pre_lease",
                    &format!(
                        "the lease adopts the deployment started before it (manifest {}, bid {})",
                        started.manifest_hash,
                        started
                            .bid_id
                            .map_or_else(|| "being placed".to_owned(), |bid_id| bid_id.to_string())
                    ),
                )
                .await?;
            self.metrics.speculative_adopted.inc();
            info!(lease_id, "lease adopts its pre-lease deployment");
        }
        // Otherwise the lease already took a manifest on its own path: the workload has the
        // lease's names, so that path owns it now.
        self.store.remove_speculative(lease_id).await?;
        Ok(waiting)
    }

    /// Removes the pre-lease start of an order whose lease will not come here, workload
    /// first. The reservation is the caller's to release, after this.
    pub(crate) async fn discard_speculative(
        &self,
        order_id: u64,
        why: &str,
    ) -> Result<(), DaemonError> {
        let _guard = self.order_locks.lock(order_id).await;
        self.remove_speculative(order_id, why).await
    }

    /// [`Core::discard_speculative`] for a caller that holds the order's lock.
    pub(crate) async fn remove_speculative(
        &self,
        order_id: u64,
        why: &str,
    ) -> Result<(), DaemonError> {
        if self.store.speculative(order_id).await?.is_none() {
            return Ok(());
        }
        // A lease of this id owns the workload from its adoption on: never removed here.
        if self.store.find_lease(order_id).await?.is_none() {
            self.runtime.teardown(order_id).await?;
            // The hostnames its manifest claimed (`check_manifest`) go with it.
            self.unroute_lease(order_id);
            self.store
                .record_history(
                    order_id,
                    "pre_lease_removed",
                    &format!("the deployment started before the lease was removed: {why}"),
                )
                .await?;
            self.metrics.speculative_removed.inc();
        }
        self.store.remove_speculative(order_id).await?;
        info!(order_id, why, "pre-lease deployment removed");
        Ok(())
    }

    /// The reconciler's pass over pre-lease starts (also the one after a restart): each is
    /// kept (and its start completed), adopted by a lease the chain created for our bid
    /// while the daemon was away, or removed. A chain that does not answer removes nothing.
    pub(crate) async fn reconcile_speculative(&self) -> Result<(), DaemonError> {
        for started in self.store.speculative_deployments().await? {
            let order_id = started.order_id;
            if self.store.find_lease(order_id).await?.is_some() {
                let adopted = {
                    let _guard = self.order_locks.lock(order_id).await;
                    self.adopt_speculative(order_id).await?
                };
                if adopted && let Err(error) = self.deploy_lease(order_id).await {
                    warn!(order_id, %error, "deploying an adopted pre-lease start failed; retried");
                }
                continue;
            }
            match self.speculative_fate(&started).await {
                Ok(Fate::Keep) => {
                    if let Err(error) = self.deploy_speculative(order_id).await {
                        warn!(order_id, %error, "completing a pre-lease start failed");
                    }
                }
                Ok(Fate::Won { tenant }) => {
                    info!(order_id, "the order became our lease while unobserved");
                    self.on_lease_won(order_id, tenant).await?;
                    if let Err(error) = self.deploy_lease(order_id).await {
                        warn!(order_id, %error, "deploying an adopted pre-lease start failed; retried");
                    }
                }
                Ok(Fate::Remove(why)) => {
                    self.discard_speculative(order_id, &why).await?;
                    self.release_reservation(order_id).await?;
                }
                Err(error) => {
                    warn!(order_id, %error, "cannot tell what became of a pre-lease start's order; leaving it");
                }
            }
        }
        Ok(())
    }

    async fn speculative_fate(&self, started: &SpeculativeDeployment) -> Result<Fate, DaemonError> {
        let order_id = started.order_id;
        let order = self.chain.order(order_id).await?;
        let now = unix_now();
        Ok(match order.status {
            OrderStatus::Leased => {
                let lease = self.chain.lease(order_id).await?;
                if lease.provider != self.chain.address() {
                    Fate::Remove("the order was leased to another provider".into())
                } else if !lease.active {
                    Fate::Remove("its lease was created and closed while unobserved".into())
                } else {
                    Fate::Won {
                        tenant: lease.tenant,
                    }
                }
            }
            OrderStatus::Open if self.chain.order_expired(&order).await? => {
                Fate::Remove("the order expired".into())
            }
            OrderStatus::Open => match self.holding(order_id).await? {
                // A start recorded while our `placeBid` was mined (auto-accept) runs under
                // whichever bid the reservation gets; once known, only under that one.
                Some((row, holding))
                    if !holding.allocated
                        && started
                            .bid_id
                            .is_none_or(|bid_id| row.bid_id == Some(bid_id))
                        && row.expires_at > now =>
                {
                    if started.bid_id.is_none()
                        && let Some(bid_id) = row.bid_id
                    {
                        self.store.set_speculative_bid(order_id, bid_id).await?;
                    }
                    Fate::Keep
                }
                _ => Fate::Remove("our bid's reservation is gone".into()),
            },
            other => Fate::Remove(format!("the order is {other:?}")),
        })
    }
}
