//! The bid engine: order -> eligibility -> placement against the inventory (reserving) ->
//! price for what was reserved -> `placeBid` naming the GPU model.
//!
//! The inventory is the one place capacity is counted: every order reserves through its
//! lock, so reservations plus allocations never exceed the hardware, however many orders
//! arrive at once. Each reservation or allocation is also a row in the store (its
//! placement as JSON), so a restarted daemon rebuilds the same inventory.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use alloy::primitives::{Address, B256, U256};
use leasehold_contracts::{OrderPosted, OrderSpec};
use leasehold_scheduler::inventory::{GroupPlacement, InventorySnapshot, Reservation as Held};
use leasehold_scheduler::pricing::{PriceInput, PricingStrategy, Utilisation};
use leasehold_scheduler::{
    BestFit, GpuConstraint, GpuDemand, GpuModelKey, GpuModelPattern, GroupRequest, GroupUnit,
    Inventory, InventoryError, NodeSpec, ReplicaRequest, Resources,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::daemon::{Core, DaemonError, unix_now};
use crate::deployment::gpu_model_key;
use crate::ip_pool::{IpPool, IpPoolError};
use crate::store::{Reservation, Store};

const MIB: u64 = 1024 * 1024;

/// Expiry stored for allocations: they last until the lease closes.
pub const ALLOCATED_UNTIL: u64 = i64::MAX as u64;

/// What a reservation row of the store holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    pub placement: GroupPlacement,
    /// The lease exists: this is an allocation, not a reservation.
    pub allocated: bool,
    /// The GPU model the bid named, when the order wants GPUs.
    pub gpu_model: Option<GpuModelKey>,
    /// The manifest group the lease runs, once the manifest arrived.
    #[serde(default)]
    pub group: Option<String>,
    /// The pool addresses the order holds, one per IP endpoint of its group, in the order
    /// the pool handed them out (see [`crate::ip_pool`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leased_ips: Vec<IpAddr>,
}

impl Holding {
    /// GPU device ids of the placement, in replica order.
    pub fn gpu_devices(&self) -> Vec<String> {
        self.placement
            .replicas
            .iter()
            .flat_map(|replica| replica.gpus.iter())
            .map(|share| share.device_index.to_string())
            .collect()
    }
}

/// The inventory key of an order (and of its lease: lease id == order id).
pub fn inventory_id(order_id: u64) -> String {
    order_id.to_string()
}

/// Why an order gets no bid (not an error: most orders are simply not for us).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    MissingAttribute(B256),
    /// The order's `signedBy` auditors do not attest us: this one (zero: no `anyOf` auditor).
    NotAudited(Address),
    NoAllowedGpuModel,
    NoReplicas,
    /// More replicas than one lease network addresses: it could never run.
    TooManyReplicas(u64),
    DoesNotFit(String),
    /// The order needs more leased IP addresses than the pool has free.
    NoFreeLeasedIp {
        wanted: usize,
        free: usize,
    },
    AboveMaxPrice {
        price: U256,
        max: U256,
    },
    NotOpen,
    /// The stake cannot back one more bid: the contract would refuse it.
    StakeShort(Box<StakeShortfall>),
    /// The reservation would lapse before the tenant's grace ends, and withdrawing the lapsed
    /// bid then would forfeit its bond to the tenant (unix seconds).
    WindowOutlastsReservation {
        grace_ends: u64,
        reservation_ends: u64,
    },
}

/// Slack between the end of the tenant's grace and the lapse of our reservation: the
/// withdrawal of a lapsed bid is mined a block or two after it is sent, and the chain's clock
/// may run a little behind ours.
pub const GRACE_MARGIN_SECS: u64 = 30;

/// When holding a bid on `order` stops costing its bond: the end of the tenant's grace plus
/// [`GRACE_MARGIN_SECS`]. A bid withdrawn earlier forfeits its bond to the tenant.
pub fn bond_free_from(order: &OrderPosted) -> u64 {
    order
        .bid_window_end
        .saturating_add(leasehold_contracts::TENANT_GRACE_SECS)
        .saturating_add(GRACE_MARGIN_SECS)
}

/// `Err` when a reservation taken `now` for `timeout_secs` lapses before withdrawing its bid
/// is free: a tenant could then post long-window orders it never matches and collect the bond
/// of every bid that lapses (`ProviderRegistry.forfeitBond`).
pub fn reservation_outlasts_grace(
    order: &OrderPosted,
    now: u64,
    timeout_secs: u64,
) -> Result<(), Skip> {
    let grace_ends = bond_free_from(order);
    let reservation_ends = now.saturating_add(timeout_secs);
    if reservation_ends < grace_ends {
        return Err(Skip::WindowOutlastsReservation {
            grace_ends,
            reservation_ends,
        });
    }
    Ok(())
}

/// Why the stake cannot back a new bid: every bid locks `bond` of the stake, which must
/// cover it beyond the bonds already locked, and a stake below the minimum may not bid at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StakeShortfall {
    pub stake: U256,
    pub free_stake: U256,
    pub minimum: U256,
    pub bond: U256,
}

/// `Some` when a provider with `info`'s stake may not bid under `minimum` and `bond`
/// (mirrors `ProviderRegistry.lockBond` and its below-minimum mark).
pub fn stake_shortfall(
    info: &leasehold_contracts::ProviderInfo,
    minimum: U256,
    bond: U256,
) -> Option<StakeShortfall> {
    let free_stake = info.free_stake();
    (info.stake < minimum || free_stake < bond).then_some(StakeShortfall {
        stake: info.stake,
        free_stake,
        minimum,
        bond,
    })
}

/// Rebuilds the inventory over `nodes`, and the pool of `leased_ips`, from the store's rows.
pub async fn restore_holdings(
    store: &Store,
    nodes: Vec<NodeSpec>,
    leased_ips: Vec<IpAddr>,
) -> Result<(Inventory, IpPool), DaemonError> {
    let mut snapshot = InventorySnapshot {
        nodes,
        reservations: BTreeMap::new(),
        allocations: BTreeMap::new(),
    };
    let mut pool = IpPool::new(leased_ips);
    for row in store.reservations().await? {
        let holding = parse_holding(&row)?;
        pool.hold(row.order_id, holding.leased_ips.clone(), holding.allocated)?;
        let id = inventory_id(row.order_id);
        if holding.allocated {
            snapshot.allocations.insert(id, holding.placement);
        } else {
            snapshot.reservations.insert(
                id,
                Held {
                    placement: holding.placement,
                    expires_at: row.expires_at,
                },
            );
        }
    }
    Ok((Inventory::restore(snapshot, Box::new(BestFit))?, pool))
}

fn parse_holding(row: &Reservation) -> Result<Holding, DaemonError> {
    serde_json::from_value(row.resources.clone()).map_err(|error| DaemonError::Holding {
        order_id: row.order_id,
        reason: format!("stored placement is not readable: {error}"),
    })
}

/// The replicas an order asks for. An order carries only totals, so the replicas share
/// them evenly and the first replica takes what does not divide.
pub fn group_request(order: &OrderPosted, gpu: Option<&GpuModelKey>) -> Result<GroupRequest, Skip> {
    let spec = &order.spec;
    let replicas = u64::from(spec.replicas);
    if replicas == 0 {
        return Err(Skip::NoReplicas);
    }
    if !crate::runtime::lease_fits_one_network(replicas) {
        return Err(Skip::TooManyReplicas(replicas));
    }
    let split = |total: u64| (total / replicas, total % replicas);
    let (cpu, cpu_rest) = split(spec.resources.cpu_milli);
    let memory_total = spec.resources.memory_mib.saturating_mul(MIB);
    let storage_total = spec.resources.storage_mib.saturating_mul(MIB);
    let (memory, memory_rest) = split(memory_total);
    let (storage, storage_rest) = split(storage_total);
    let (gpus, gpu_rest) = split(u64::from(spec.gpu_count));
    let constraint = GpuConstraint {
        models: gpu
            .map(|offered| GpuModelPattern::from(offered.clone()))
            .into_iter()
            .collect(),
        ..GpuConstraint::default()
    };
    let replica = |cpu: u64, memory: u64, storage: u64, gpus: u64| ReplicaRequest {
        resources: Resources {
            cpu_millis: cpu,
            memory_bytes: memory,
            ephemeral_storage_bytes: storage,
            persistent_storage: BTreeMap::new(),
        },
        gpu: GpuDemand::whole(u32::try_from(gpus).unwrap_or(u32::MAX)),
        gpu_constraint: constraint.clone(),
    };
    let uneven = cpu_rest + memory_rest + storage_rest + gpu_rest > 0;
    let mut units = Vec::new();
    let mut even_count = replicas;
    if uneven {
        units.push(GroupUnit {
            replica: replica(
                cpu + cpu_rest,
                memory + memory_rest,
                storage + storage_rest,
                gpus + gpu_rest,
            ),
            count: 1,
        });
        even_count -= 1;
    }
    if even_count > 0 {
        units.push(GroupUnit {
            replica: replica(cpu, memory, storage, gpus),
            count: u32::try_from(even_count).unwrap_or(u32::MAX),
        });
    }
    Ok(GroupRequest {
        name: format!("order-{}", order.order_id),
        units,
    })
}

impl Core {
    /// The GPU models an order may get from us, cheapest first.
    fn gpu_candidates(&self, order: &OrderPosted) -> Vec<GpuModelKey> {
        let allowed = &order.spec.requirements.allowed_gpu_models;
        let mut candidates: Vec<(u128, GpuModelKey)> = self
            .gpus
            .iter()
            // The contract's rule: the offered model, with some parts replaced by `*`, is
            // one of the order's entries.
            .filter(|gpu| leasehold_contracts::gpu_bid(gpu, allowed).is_some())
            .map(|gpu| (self.rates.gpu.rate(gpu).unwrap_or(u128::MAX), gpu.clone()))
            .collect();
        candidates.sort_by_key(|(rate, _)| *rate);
        candidates.into_iter().map(|(_, gpu)| gpu).collect()
    }

    /// Reserves room for the order (trying each allowed GPU model) and prices it.
    /// All in one hold of the inventory lock.
    fn reserve_and_price(
        &self,
        order: &OrderPosted,
        expires_at: u64,
    ) -> Result<Result<(Holding, U256), Skip>, DaemonError> {
        let id = inventory_id(order.order_id);
        let models: Vec<Option<GpuModelKey>> = if order.spec.gpu_count == 0 {
            vec![None]
        } else {
            self.gpu_candidates(order).into_iter().map(Some).collect()
        };
        if models.is_empty() {
            return Ok(Err(Skip::NoAllowedGpuModel));
        }
        let mut inventory = self.inventory()?;
        let mut last_failure = String::new();
        for model in models {
            let request = match group_request(order, model.as_ref()) {
                Ok(request) => request,
                Err(skip) => return Ok(Err(skip)),
            };
            match inventory.reserve(&id, &request, expires_at) {
                Ok(placement) => {
                    let utilisation = Utilisation::of(inventory.cluster());
                    let price = self.rates.price(&PriceInput {
                        placement: &placement,
                        utilisation,
                    });
                    let price = match price {
                        Ok(price) => U256::from(price.max(1)),
                        Err(error) => {
                            inventory.release(&id)?;
                            return Err(error.into());
                        }
                    };
                    if price > order.max_price_per_hour {
                        inventory.release(&id)?;
                        return Ok(Err(Skip::AboveMaxPrice {
                            price,
                            max: order.max_price_per_hour,
                        }));
                    }
                    // Taken under the inventory's lock (always inventory, then pool), so
                    // two orders never get the same address.
                    let wanted = usize::from(order.spec.leased_ips);
                    let leased_ips = match self.ip_pool()?.reserve(order.order_id, wanted) {
                        Ok(addresses) => addresses,
                        Err(IpPoolError::Exhausted { free, .. }) => {
                            inventory.release(&id)?;
                            self.metrics.bids_no_leased_ip.inc();
                            return Ok(Err(Skip::NoFreeLeasedIp { wanted, free }));
                        }
                        Err(other) => {
                            inventory.release(&id)?;
                            return Err(other.into());
                        }
                    };
                    let holding = Holding {
                        placement,
                        allocated: false,
                        gpu_model: model,
                        group: None,
                        leased_ips,
                    };
                    return Ok(Ok((holding, price)));
                }
                Err(InventoryError::NoFit { failure, .. }) => last_failure = failure.to_string(),
                Err(other) => return Err(other.into()),
            }
        }
        Ok(Err(Skip::DoesNotFit(last_failure)))
    }

    /// Reacts to `OrderCreated`: bids when eligible and the order fits.
    pub async fn on_order_created(&self, order: &OrderPosted) -> Result<(), DaemonError> {
        let order_id = order.order_id;
        if let Some(row) = self.store.reservation(order_id).await? {
            let holding = parse_holding(&row)?;
            if holding.allocated || row.bid_id.is_some() {
                return Ok(());
            }
        }
        if let Some(missing) = missing_attribute(&order.spec, &self.attributes) {
            self.skip(order_id, Skip::MissingAttribute(missing));
            return Ok(());
        }
        // Akash's `signedBy`: without the auditors' attestations the contract refuses the bid
        // (`ProviderNotAudited`), so do not reserve or send one.
        if let Some(auditor) = self.chain.missing_audit(&order.spec.requirements).await? {
            self.skip(order_id, Skip::NotAudited(auditor));
            return Ok(());
        }
        // Redelivered after a restart: the order may be gone, or we may have bid already.
        let info = self.chain.order(order_id).await?;
        // Holding capacity for an expired order would only block other orders.
        let expired = self.chain.order_expired(&info).await?;
        if info.status != leasehold_contracts::OrderStatus::Open || expired {
            let leased_to_us = info.status == leasehold_contracts::OrderStatus::Leased
                && self.own_bid_stands(order_id).await?;
            if !leased_to_us {
                self.release_reservation(order_id).await?;
            }
            self.skip(order_id, Skip::NotOpen);
            return Ok(());
        }
        let me = self.chain.address();
        if let Some(shortfall) = self.chain.stake_shortfall().await? {
            self.metrics.bids_stake_short.inc();
            warn!(
                order_id,
                stake = %shortfall.stake,
                free_stake = %shortfall.free_stake,
                minimum = %shortfall.minimum,
                bond = %shortfall.bond,
                "not bidding: the stake cannot back one more bid bond; run `provider add-stake` \
                 or wait for ended orders' bonds to be released"
            );
            self.skip(order_id, Skip::StakeShort(Box::new(shortfall)));
            return Ok(());
        }
        let existing_bid = self
            .chain
            .bids(order_id)
            .await?
            .into_iter()
            .find(|bid| bid.provider == me);
        let now = unix_now();
        let timeout = self.config.bid.reservation_timeout_secs;
        if existing_bid.is_none()
            && let Err(skip) = reservation_outlasts_grace(order, now, timeout)
        {
            self.metrics.bids_window_too_long.inc();
            warn!(
                order_id,
                bid_window_end = order.bid_window_end,
                reservation_timeout_secs = timeout,
                "not bidding: the bid window plus the tenant's grace outlasts the reservation, \
                 and withdrawing the lapsed bid would forfeit its bond; raise \
                 bid.reservation_timeout_secs to bid on such orders"
            );
            self.skip(order_id, skip);
            return Ok(());
        }
        // A bid placed before a restart is held at least until withdrawing it is free.
        let expires_at = now.saturating_add(timeout).max(bond_free_from(order));
        let (holding, price) = match self.reserve_and_price(order, expires_at)? {
            Ok(reserved) => reserved,
            Err(skip) => {
                if let Some(bid) = existing_bid
                    && !bid.withdrawn
                {
                    // Bid before a restart but no longer fits: take the bid back.
                    let _ = self.chain.withdraw_bid(order_id, bid.bid_id).await;
                }
                self.skip(order_id, skip);
                return Ok(());
            }
        };
        let bid_id = existing_bid.map(|bid| bid.bid_id);
        if !self
            .keep_reservation(order_id, &holding, bid_id, expires_at)
            .await?
            || bid_id.is_some()
        {
            return Ok(());
        }
        match self
            .chain
            .place_bid(
                order_id,
                price,
                holding.gpu_model.as_ref(),
                &order.spec.requirements,
            )
            .await
        {
            Ok(bid_id) => {
                self.record_bid(order_id, bid_id).await?;
                self.metrics.bids_placed.inc();
                info!(order_id, bid_id, %price, model = ?holding.gpu_model, "bid placed");
                Ok(())
            }
            Err(error) => {
                // `AlreadyBid` or `OrderNotOpen` after a restart: the previous run's bid
                // was mined after all.
                if error.revert().is_some() && self.own_bid_stands(order_id).await? {
                    info!(order_id, %error, "our bid sent before the restart stands; its reservation is kept");
                    return Ok(());
                }
                self.metrics.bids_failed.inc();
                self.release_reservation(order_id).await?;
                if error.revert().is_some() {
                    warn!(order_id, %error, "bid refused by the contract");
                    Ok(())
                } else {
                    Err(error.into())
                }
            }
        }
    }

    /// Whether a bid of ours on `order_id` is live or became its lease. A bid sent just
    /// before a restart is mined with its receipt unrecorded, so the replayed order finds
    /// the order matched (or `placeBid` refused as `AlreadyBid`): the reservation is that
    /// bid's, and the lease's own work, queued behind this one, commits it and adopts any
    /// pre-lease start the tenant already sent its manifest for.
    async fn own_bid_stands(&self, order_id: u64) -> Result<bool, DaemonError> {
        let me = self.chain.address();
        Ok(match self.chain.order(order_id).await?.status {
            leasehold_contracts::OrderStatus::Leased => {
                self.chain.lease(order_id).await?.provider == me
            }
            leasehold_contracts::OrderStatus::Open => self
                .chain
                .bids(order_id)
                .await?
                .iter()
                .any(|bid| bid.provider == me && !bid.withdrawn),
            _ => false,
        })
    }

    /// Resolves the bonds our bids on the ended order `order_id` still lock: released back to
    /// the free stake, or forfeited to the tenant for a bid we withdrew or that was passed
    /// over. Nothing to do when none is locked.
    pub async fn release_own_bonds(&self, order_id: u64) -> Result<(), DaemonError> {
        let bid_ids = self.chain.my_locked_bonds(order_id).await?;
        if bid_ids.is_empty() {
            return Ok(());
        }
        for bond in self.chain.release_bonds(order_id, &bid_ids).await? {
            self.metrics.bonds_resolved.inc();
            match bond.forfeited_to {
                None => {
                    info!(order_id, bid_id = bond.bid_id, amount = %bond.amount, "bid bond released")
                }
                Some(tenant) => warn!(
                    order_id,
                    bid_id = bond.bid_id,
                    amount = %bond.amount,
                    %tenant,
                    "bid bond forfeited to the tenant (the bid was withdrawn or passed over)"
                ),
            }
        }
        Ok(())
    }

    fn skip(&self, order_id: u64, reason: Skip) {
        self.metrics.bids_skipped.inc();
        info!(order_id, ?reason, "not bidding");
    }

    pub(crate) async fn persist_holding(
        &self,
        order_id: u64,
        holding: &Holding,
        bid_id: Option<u64>,
        expires_at: u64,
    ) -> Result<(), DaemonError> {
        let resources = serde_json::to_value(holding).map_err(|error| DaemonError::Holding {
            order_id,
            reason: error.to_string(),
        })?;
        self.store
            .put_reservation(&Reservation {
                order_id,
                bid_id,
                resources,
                expires_at,
            })
            .await?;
        Ok(())
    }

    /// The stored holding of an order or lease.
    pub(crate) async fn holding(
        &self,
        order_id: u64,
    ) -> Result<Option<(Reservation, Holding)>, DaemonError> {
        match self.store.reservation(order_id).await? {
            Some(row) => {
                let holding = parse_holding(&row)?;
                Ok(Some((row, holding)))
            }
            None => Ok(None),
        }
    }

    /// Bookkeeping of our `BidPlaced`: remembers the bid id.
    pub async fn on_bid_placed(&self, order_id: u64, bid_id: u64) -> Result<(), DaemonError> {
        self.record_bid(order_id, bid_id).await
    }

    /// Remembers our bid's id on the order's reservation, as stored now. An auto-accept bid
    /// is the lease in the same transaction, so the lease (on its own path, or the
    /// reconciler's pass over pre-lease starts) may already have made the holding its
    /// allocation, with the manifest's group, while `placeBid` was mined: that row is the
    /// lease's and is left alone. Rewriting it with the holding the bidder reserved took both
    /// back, and the lease could no longer be deployed (nor counted as allocated after a
    /// restart). Under the order's lock, like the lease's path.
    async fn record_bid(&self, order_id: u64, bid_id: u64) -> Result<(), DaemonError> {
        let _guard = self.order_locks.lock(order_id).await;
        if let Some((row, holding)) = self.holding(order_id).await?
            && row.bid_id.is_none()
            && !holding.allocated
        {
            self.persist_holding(order_id, &holding, Some(bid_id), row.expires_at)
                .await?;
        }
        // An auto-accept order's workload may have started while the bid was mined.
        self.store.set_speculative_bid(order_id, bid_id).await?;
        Ok(())
    }

    /// Stores the reservation the bidder just made, under the order's lock, unless the
    /// order's lease has made the stored row its allocation meanwhile (a bid placed before a
    /// restart may be the lease the reconciler adopted while this ran): that row is the
    /// lease's, as in [`Self::record_bid`]. `false` when it was left alone.
    async fn keep_reservation(
        &self,
        order_id: u64,
        holding: &Holding,
        bid_id: Option<u64>,
        expires_at: u64,
    ) -> Result<bool, DaemonError> {
        let _guard = self.order_locks.lock(order_id).await;
        if let Some((_, stored)) = self.holding(order_id).await?
            && stored.allocated
        {
            return Ok(false);
        }
        self.persist_holding(order_id, holding, bid_id, expires_at)
            .await?;
        Ok(true)
    }

    /// Gives back an order's reservation (lost, withdrawn, cancelled). Allocations of
    /// leases are left alone: only closing the lease frees them.
    ///
    /// Under the order's lock, as the lease's path: a lease that commits the reservation
    /// between the check and the release would otherwise run on capacity given back.
    pub async fn release_reservation(&self, order_id: u64) -> Result<(), DaemonError> {
        let _guard = self.order_locks.lock(order_id).await;
        let Some((_, holding)) = self.holding(order_id).await? else {
            self.remove_speculative(order_id, "the order's reservation is gone")
                .await?;
            self.release_held(order_id)?;
            return Ok(());
        };
        if holding.allocated {
            return Ok(());
        }
        // The workload started before the lease goes before the capacity it runs on.
        self.remove_speculative(
            order_id,
            "our bid lost, was withdrawn or evicted, or the order ended",
        )
        .await?;
        self.release_held(order_id)?;
        self.store.remove_reservation(order_id).await?;
        info!(order_id, "reservation released");
        Ok(())
    }

    /// Frees a lease's allocation (the lease closed).
    pub async fn release_allocation(&self, lease_id: u64) -> Result<(), DaemonError> {
        self.release_held(lease_id)?;
        self.store.remove_reservation(lease_id).await?;
        Ok(())
    }

    /// Gives an order's resources and leased addresses back (idempotent); the caller
    /// removes its stored row.
    fn release_held(&self, order_id: u64) -> Result<(), DaemonError> {
        self.inventory()?.release(&inventory_id(order_id))?;
        let addresses = self.ip_pool()?.release(order_id);
        if !addresses.is_empty() {
            info!(order_id, ?addresses, "leased IPs returned to the pool");
        }
        Ok(())
    }

    /// Turns the order's reservation into the lease's allocation; reserves afresh when the
    /// reservation already lapsed. `Ok(None)` when the lease no longer fits.
    pub async fn allocate_for_lease(&self, lease_id: u64) -> Result<Option<Holding>, DaemonError> {
        let id = inventory_id(lease_id);
        let stored = self.holding(lease_id).await?;
        if let Some((_, holding)) = &stored
            && holding.allocated
        {
            return Ok(Some(holding.clone()));
        }
        let committed = {
            let mut inventory = self.inventory()?;
            if inventory.reservations().contains_key(&id)
                || inventory.allocations().contains_key(&id)
            {
                // The chain awarded the lease, so a reservation that lapsed a moment ago
                // still counts: commit as of time zero.
                Some(inventory.commit(&id, 0)?.clone())
            } else {
                None
            }
        };
        let holding = match (committed, stored) {
            (Some(placement), Some((_, holding))) => {
                self.ip_pool()?.allocate(lease_id);
                Holding {
                    placement,
                    allocated: true,
                    ..holding
                }
            }
            (Some(placement), None) => {
                let order = self.chain.order_posted(lease_id).await?;
                let Some(leased_ips) = self.allocate_leased_ips(&order)? else {
                    return Ok(None);
                };
                Holding {
                    placement,
                    allocated: true,
                    gpu_model: None,
                    group: None,
                    leased_ips,
                }
            }
            (None, _) => {
                let order = self.chain.order_posted(lease_id).await?;
                let lease = self.chain.lease(lease_id).await?;
                let model = self
                    .gpus
                    .iter()
                    .find(|gpu| gpu_model_key(gpu) == lease.gpu_model)
                    .cloned();
                let Ok(request) = group_request(&order, model.as_ref()) else {
                    return Ok(None);
                };
                let placement = {
                    let mut inventory = self.inventory()?;
                    match inventory.reserve(&id, &request, ALLOCATED_UNTIL) {
                        Ok(_) => inventory.commit(&id, 0)?.clone(),
                        Err(InventoryError::NoFit { .. }) => return Ok(None),
                        Err(other) => return Err(other.into()),
                    }
                };
                let Some(leased_ips) = self.allocate_leased_ips(&order)? else {
                    return Ok(None);
                };
                Holding {
                    placement,
                    allocated: true,
                    gpu_model: model,
                    group: None,
                    leased_ips,
                }
            }
        };
        self.persist_holding(lease_id, &holding, None, ALLOCATED_UNTIL)
            .await?;
        Ok(Some(holding))
    }

    /// The leased addresses of a lease whose reservation was not stored: taken from the
    /// pool now. `None` (its inventory allocation given back) when the pool has too few.
    fn allocate_leased_ips(&self, order: &OrderPosted) -> Result<Option<Vec<IpAddr>>, DaemonError> {
        let wanted = usize::from(order.spec.leased_ips);
        let mut pool = self.ip_pool()?;
        match pool.reserve(order.order_id, wanted) {
            Ok(addresses) => {
                pool.allocate(order.order_id);
                Ok(Some(addresses))
            }
            Err(IpPoolError::Exhausted { free, .. }) => {
                drop(pool);
                self.inventory()?.release(&inventory_id(order.order_id))?;
                warn!(
                    order_id = order.order_id,
                    wanted, free, "the lease's leased IPs are no longer free"
                );
                Ok(None)
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Releases reservations whose bids lapsed and takes those bids back on chain.
    pub async fn expire_reservations(&self) -> Result<(), DaemonError> {
        let now = unix_now();
        for row in self.store.take_expired_reservations(now).await? {
            self.discard_speculative(row.order_id, "our bid's reservation lapsed")
                .await?;
            self.release_held(row.order_id)?;
            info!(order_id = row.order_id, "reservation expired");
            if let Some(bid_id) = row.bid_id
                && let Err(error) = self.chain.withdraw_bid(row.order_id, bid_id).await
            {
                info!(order_id = row.order_id, %error, "expired bid not withdrawn");
            }
        }
        let mut inventory = self.inventory()?;
        inventory.expire(now)?;
        self.ip_pool()?.retain_orders(|order_id| {
            let id = inventory_id(order_id);
            inventory.reservations().contains_key(&id) || inventory.allocations().contains_key(&id)
        });
        Ok(())
    }
}

/// The first attribute the order requires that the provider did not register, if any:
/// placement attributes and the storage class of each persistent volume alike.
pub fn missing_attribute(spec: &OrderSpec, registered: &BTreeSet<B256>) -> Option<B256> {
    spec.requirements
        .required_attributes
        .iter()
        .find(|attribute| !registered.contains(*attribute))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    use leasehold_contracts::{OrderRequirements, OrderSpec};

    fn provider_with(stake: u64, locked_bonds: u64) -> leasehold_contracts::ProviderInfo {
        leasehold_contracts::ProviderInfo {
            address: Address::ZERO,
            status: leasehold_contracts::ProviderStatus::Active,
            stake: U256::from(stake),
            unbonding_ends: 0,
            active_leases: 0,
            endpoint: String::new(),
            gateway_cert_sha256: alloy::primitives::B256::repeat_byte(0xce),
            attributes: Vec::new(),
            capacity: Default::default(),
            allocated: Default::default(),
            gpus: Vec::new(),
            deliveries_confirmed: 0,
            deliveries_failed: 0,
            locked_bonds: U256::from(locked_bonds),
        }
    }

    #[test]
    fn a_bid_needs_the_minimum_stake_and_one_free_bond() {
        let (minimum, bond) = (U256::from(100u64), U256::from(1u64));
        assert_eq!(stake_shortfall(&provider_with(100, 0), minimum, bond), None);
        assert_eq!(
            stake_shortfall(&provider_with(100, 99), minimum, bond),
            None
        );
        let full = stake_shortfall(&provider_with(100, 100), minimum, bond).expect("no free bond");
        assert_eq!((full.free_stake, full.bond), (U256::ZERO, bond));
        let slashed = stake_shortfall(&provider_with(99, 0), minimum, bond).expect("below minimum");
        assert_eq!(slashed.stake, U256::from(99u64));
        // a slash may take the stake below the locked bonds: no underflow
        let under = stake_shortfall(&provider_with(100, 150), minimum, bond).expect("short");
        assert_eq!(under.free_stake, U256::ZERO);
    }

    fn order(replicas: u16, cpu: u64, gpus: u32) -> OrderPosted {
        OrderPosted {
            order_id: 3,
            tenant: Default::default(),
            token: Default::default(),
            spec: OrderSpec {
                group_name: B256::repeat_byte(9),
                resources: leasehold_contracts::Resources {
                    cpu_milli: cpu,
                    memory_mib: 100,
                    storage_mib: 10,
                },
                gpu_count: gpus,
                replicas,
                leased_ips: 0,
                requirements: OrderRequirements::default(),
            },
            manifest_hash: B256::ZERO,
            max_price_per_hour: U256::from(1),
            deposit: U256::from(1),
            bid_window_end: 0,
        }
    }

    #[test]
    fn a_reservation_must_outlast_the_tenants_grace() {
        let now = 1_000_000;
        let mut long = order(1, 100, 0);
        long.bid_window_end = now + 3_600;
        // default timeout: the reservation lapses an hour before withdrawing is free
        let Err(skip) = reservation_outlasts_grace(&long, now, 900) else {
            panic!("a one-hour window outlasts a 15-minute reservation");
        };
        assert_eq!(
            skip,
            Skip::WindowOutlastsReservation {
                grace_ends: now + 3_600 + 120 + GRACE_MARGIN_SECS,
                reservation_ends: now + 900,
            }
        );
        assert_eq!(
            reservation_outlasts_grace(&long, now, 3_600 + 120 + GRACE_MARGIN_SECS),
            Ok(())
        );
        let mut short = order(1, 100, 0);
        short.bid_window_end = now + 10;
        assert_eq!(reservation_outlasts_grace(&short, now, 900), Ok(()));
        // the boundary: one second short is refused
        assert!(reservation_outlasts_grace(&short, now, 10 + 120 + GRACE_MARGIN_SECS - 1).is_err());
        // a hostile window end cannot overflow
        let mut hostile = order(1, 100, 0);
        hostile.bid_window_end = u64::MAX;
        assert!(reservation_outlasts_grace(&hostile, u64::MAX, u64::MAX).is_ok());
        assert!(reservation_outlasts_grace(&hostile, now, 900).is_err());
    }

    #[test]
    fn uneven_totals_go_to_the_first_replica_and_sum_up() {
        let request = group_request(&order(3, 1000, 4), None).unwrap();
        let totals = request.totals().unwrap();
        assert_eq!(totals.replicas, 3);
        assert_eq!(totals.resources.cpu_millis, 1000);
        assert_eq!(totals.resources.memory_bytes, 100 * MIB);
        assert_eq!(totals.gpu_milli, 4000);
        assert_eq!(request.units[0].count, 1);
        assert_eq!(request.units[0].replica.resources.cpu_millis, 334);
    }

    #[test]
    fn even_totals_make_one_unit_and_zero_replicas_are_skipped() {
        let request = group_request(&order(2, 1000, 0), None).unwrap();
        assert_eq!(request.units.len(), 1);
        assert_eq!(request.units[0].count, 2);
        assert!(request.units[0].replica.gpu.is_none());
        assert_eq!(group_request(&order(0, 1, 0), None), Err(Skip::NoReplicas));
    }

    #[test]
    fn orders_one_lease_network_cannot_address_are_not_bid_on() {
        let most = u16::try_from(crate::runtime::MAX_REPLICAS_PER_LEASE).unwrap();
        assert!(group_request(&order(most, 100_000, 0), None).is_ok());
        assert_eq!(
            group_request(&order(most + 1, 100_000, 0), None),
            Err(Skip::TooManyReplicas(u64::from(most) + 1))
        );
    }
}

/// GPU leases on a provider with several models: a lease gets devices of the model it bid
/// for, a device is in at most one lease, and a freed device is reusable (issue #18).
#[cfg(test)]
mod gpu_device_tests {
    use super::*;
    use crate::hardware::{DiskSpace, GpuDevice, GpuSource, Hardware};
    use leasehold_contracts::{OrderRequirements, OrderSpec};
    use leasehold_scheduler::Inventory;

    const H100: &str = "nvidia/h100/80Gi/sxm";
    const A100: &str = "nvidia/a100/40Gi/pcie";

    fn device(index: u32, model: &str) -> GpuDevice {
        GpuDevice {
            index,
            name: model.to_owned(),
            model_key: model.parse().unwrap(),
            vram_mib: 40_960,
            interface: model.rsplit('/').next().unwrap_or("pcie").to_owned(),
            pci_bus_id: None,
            uuid: None,
        }
    }

    /// One H100 (device 0) and three A100s (devices 1-3).
    fn mixed() -> (Inventory, Vec<GpuModelKey>) {
        let hardware = Hardware {
            cpu_millis: 8_000,
            memory_mib: 16_384,
            storage_mib: 100_000,
            disk: DiskSpace {
                total_bytes: 0,
                available_bytes: 0,
            },
            gpus: vec![
                device(0, H100),
                device(1, A100),
                device(2, A100),
                device(3, A100),
            ],
            gpu_source: GpuSource::Declared,
            notes: Vec::new(),
        };
        let (node, offered) = crate::daemon::local_node(&hardware).unwrap();
        let inventory =
            Inventory::new(vec![node], Box::new(leasehold_scheduler::policy::FirstFit)).unwrap();
        (inventory, offered)
    }

    fn gpu_order(order_id: u64, gpus: u32) -> OrderPosted {
        OrderPosted {
            order_id,
            tenant: Default::default(),
            token: Default::default(),
            spec: OrderSpec {
                group_name: B256::repeat_byte(1),
                resources: leasehold_contracts::Resources {
                    cpu_milli: 100,
                    memory_mib: 64,
                    storage_mib: 64,
                },
                gpu_count: gpus,
                replicas: 1,
                leased_ips: 0,
                requirements: OrderRequirements::default(),
            },
            manifest_hash: B256::ZERO,
            max_price_per_hour: U256::from(1),
            deposit: U256::from(1),
            bid_window_end: 0,
        }
    }

    fn devices_of(placement: &GroupPlacement) -> Vec<String> {
        Holding {
            placement: placement.clone(),
            allocated: false,
            gpu_model: None,
            group: None,
            leased_ips: Vec::new(),
        }
        .gpu_devices()
    }

    #[test]
    fn orders_for_a_storage_class_the_provider_lacks_get_no_bid() {
        let sdl =
            leasehold_manifests::parse(include_str!("../../manifests/examples/gpu-inference.yaml"))
                .unwrap();
        let spec = crate::deployment::order_spec_for_group(&sdl.groups()[0]).unwrap();
        let registered = |attributes: &[&str]| -> BTreeSet<B256> {
            attributes
                .iter()
                .map(|text| crate::deployment::attribute_key(text))
                .collect()
        };
        // A Docker provider with only the default class announces that one.
        let mut config = crate::config::Config::default_for(
            &crate::hardware::Hardware::detect(std::path::Path::new("/tmp"), &Default::default())
                .unwrap(),
            "/tmp".into(),
        );
        config.attributes = vec!["region=eu-west".to_owned()];
        let default_only: Vec<String> = config.announced_attributes();
        let default_only: Vec<&str> = default_only.iter().map(String::as_str).collect();
        assert_eq!(
            missing_attribute(&spec, &registered(&default_only)),
            Some(crate::deployment::attribute_key(
                "capabilities/storage/1/class=beta3"
            ))
        );
        config.runtime.docker.storage_classes.insert(
            "beta3".to_owned(),
            crate::config::StorageClassConfig {
                driver: Some("local".to_owned()),
                ..Default::default()
            },
        );
        let with_beta3 = config.announced_attributes();
        let with_beta3: Vec<&str> = with_beta3.iter().map(String::as_str).collect();
        assert_eq!(missing_attribute(&spec, &registered(&with_beta3)), None);
    }

    #[test]
    fn leases_get_devices_of_their_model_exclusively_and_freed_ones_are_reused() {
        let (mut inventory, offered) = mixed();
        let model = |name: &str| offered.iter().find(|gpu| gpu.to_string() == name).unwrap();
        let two = gpu_order(1, 2);

        // Two H100s do not exist; two A100s do, and the lease gets exactly A100 devices.
        let h100_request = group_request(&two, Some(model(H100))).unwrap();
        assert!(inventory.reserve("h", &h100_request, u64::MAX).is_err());
        let a100_request = group_request(&two, Some(model(A100))).unwrap();
        let first = inventory.reserve("1", &a100_request, u64::MAX).unwrap();
        let mut first_devices = devices_of(&first);
        first_devices.sort();
        assert_eq!(first_devices.len(), 2);
        assert!(
            first_devices
                .iter()
                .all(|d| ["1", "2", "3"].contains(&d.as_str()))
        );

        // One A100 is left: a second two-A100 lease does not fit, and never shares a device.
        assert!(inventory.reserve("2", &a100_request, u64::MAX).is_err());
        let one = group_request(&gpu_order(3, 1), Some(model(A100))).unwrap();
        let third = devices_of(&inventory.reserve("3", &one, u64::MAX).unwrap());
        assert_eq!(third.len(), 1);
        assert!(!first_devices.contains(&third[0]), "{third:?} shared");

        // Freed devices are reusable.
        inventory.release("1").unwrap();
        let mut again = devices_of(&inventory.reserve("2", &a100_request, u64::MAX).unwrap());
        again.sort();
        assert_eq!(again, first_devices);

        // The runtime is handed exactly those device ids.
        let sdl = leasehold_manifests::parse(
            &include_str!("../../manifests/examples/stable-diffusion.yaml").replace(
                "units: 1\n          attributes",
                "units: 2\n          attributes",
            ),
        )
        .unwrap();
        let manifest = sdl.manifest();
        let deployment = crate::deployment::lease_deployment(
            2,
            "0xabc",
            &manifest,
            &manifest.groups[0].name,
            &again,
            &[],
        )
        .unwrap();
        assert_eq!(deployment.services[0].gpu_devices, vec![again.clone()]);
    }
}
