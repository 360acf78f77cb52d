//! A provider's inventory: nodes plus two ledgers, reservations (held for open bids,
//! each with an expiry) and allocations (active leases). Time is a number the caller
//! passes in (for instance unix seconds or a block height); the library has no clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ClusterError, NodeSpec, ReplicaPlacement};
use crate::explain::PlacementFailure;
use crate::policy::PlacementPolicy;
use crate::resources::{GroupRequest, ResourceError};

/// Where every replica of a group went, in unit order then replica order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupPlacement {
    pub group: String,
    pub replicas: Vec<ReplicaPlacement>,
}

/// A tentative hold for an open bid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub placement: GroupPlacement,
    /// The reservation lapses when `expire(now)` is called with `now >= expires_at`.
    pub expires_at: u64,
}

/// Inventory errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("group `{group}` unit {unit} replica {replica} fits nowhere: {failure}")]
    NoFit {
        group: String,
        unit: usize,
        replica: u32,
        failure: PlacementFailure,
    },
    #[error("group `{0}` has no replicas")]
    EmptyGroup(String),
    #[error("unknown reservation `{0}`")]
    UnknownReservation(String),
    #[error("reservation `{id}` expired at {expires_at} (now {now})")]
    Expired {
        id: String,
        expires_at: u64,
        now: u64,
    },
    #[error("`{0}` is already an active allocation")]
    AlreadyAllocated(String),
    #[error("id `{id}` is already reserved for a different group")]
    ConflictingReservation { id: String },
    #[error("snapshot entry `{id}`: {source}")]
    Restore {
        id: String,
        #[source]
        source: ClusterError,
    },
    #[error("duplicate id `{0}` in snapshot")]
    DuplicateId(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Resource(#[from] ResourceError),
}

/// The serialisable state of an inventory, to rebuild it when the provider starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventorySnapshot {
    pub nodes: Vec<NodeSpec>,
    pub reservations: BTreeMap<String, Reservation>,
    pub allocations: BTreeMap<String, GroupPlacement>,
}

/// Nodes, reservations and allocations; capacity is never exceeded.
#[derive(Debug)]
pub struct Inventory {
    cluster: Cluster,
    reservations: BTreeMap<String, Reservation>,
    allocations: BTreeMap<String, GroupPlacement>,
}

impl Inventory {
    pub fn new(
        nodes: Vec<NodeSpec>,
        policy: Box<dyn PlacementPolicy>,
    ) -> Result<Self, InventoryError> {
        Ok(Self {
            cluster: Cluster::new(nodes, policy)?,
            reservations: BTreeMap::new(),
            allocations: BTreeMap::new(),
        })
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub fn reservations(&self) -> &BTreeMap<String, Reservation> {
        &self.reservations
    }

    pub fn allocations(&self) -> &BTreeMap<String, GroupPlacement> {
        &self.allocations
    }

    /// Places a whole group without recording it anywhere; all replicas or none.
    fn place_group(&mut self, group: &GroupRequest) -> Result<GroupPlacement, InventoryError> {
        if group.replica_count()? == 0 {
            return Err(InventoryError::EmptyGroup(group.name.clone()));
        }
        group.totals()?;
        let mut placed: Vec<ReplicaPlacement> = Vec::new();
        for (unit_index, unit) in group.units.iter().enumerate() {
            for replica in 0..unit.count {
                match self.cluster.place_or_explain(&unit.replica) {
                    Ok(placement) => placed.push(placement),
                    Err(failure) => {
                        self.undo(&placed)?;
                        return Err(InventoryError::NoFit {
                            group: group.name.clone(),
                            unit: unit_index,
                            replica,
                            failure,
                        });
                    }
                }
            }
        }
        Ok(GroupPlacement {
            group: group.name.clone(),
            replicas: placed,
        })
    }

    fn undo(&mut self, placed: &[ReplicaPlacement]) -> Result<(), InventoryError> {
        for placement in placed.iter().rev() {
            self.cluster.release(placement)?;
        }
        Ok(())
    }

    /// Whether the group would fit right now, and where; changes nothing.
    pub fn try_fit(&mut self, group: &GroupRequest) -> Result<GroupPlacement, InventoryError> {
        let placement = self.place_group(group)?;
        self.undo(&placement.replicas)?;
        Ok(placement)
    }

    /// Reserves capacity for a group under `id` until `expires_at`. Idempotent: the
    /// same id and group returns the existing reservation.
    pub fn reserve(
        &mut self,
        id: &str,
        group: &GroupRequest,
        expires_at: u64,
    ) -> Result<GroupPlacement, InventoryError> {
        if self.allocations.contains_key(id) {
            return Err(InventoryError::AlreadyAllocated(id.to_string()));
        }
        if let Some(existing) = self.reservations.get(id) {
            if existing.placement.group != group.name {
                return Err(InventoryError::ConflictingReservation { id: id.to_string() });
            }
            return Ok(existing.placement.clone());
        }
        let placement = self.place_group(group)?;
        self.reservations.insert(
            id.to_string(),
            Reservation {
                placement: placement.clone(),
                expires_at,
            },
        );
        Ok(placement)
    }

    /// Turns a live reservation into an allocation. Idempotent once committed.
    pub fn commit(&mut self, id: &str, now: u64) -> Result<&GroupPlacement, InventoryError> {
        if self.allocations.contains_key(id) {
            return self
                .allocations
                .get(id)
                .ok_or_else(|| InventoryError::UnknownReservation(id.to_string()));
        }
        let reservation = self
            .reservations
            .get(id)
            .ok_or_else(|| InventoryError::UnknownReservation(id.to_string()))?;
        if now >= reservation.expires_at {
            return Err(InventoryError::Expired {
                id: id.to_string(),
                expires_at: reservation.expires_at,
                now,
            });
        }
        let reservation = self
            .reservations
            .remove(id)
            .ok_or_else(|| InventoryError::UnknownReservation(id.to_string()))?;
        let entry = self
            .allocations
            .entry(id.to_string())
            .or_insert(reservation.placement);
        Ok(entry)
    }

    /// Returns a reservation's or an allocation's capacity. Idempotent: releasing an
    /// unknown or already released id returns `Ok(false)`.
    pub fn release(&mut self, id: &str) -> Result<bool, InventoryError> {
        let placement = if let Some(reservation) = self.reservations.get(id) {
            reservation.placement.clone()
        } else if let Some(allocation) = self.allocations.get(id) {
            allocation.clone()
        } else {
            return Ok(false);
        };
        self.undo(&placement.replicas)?;
        self.reservations.remove(id);
        self.allocations.remove(id);
        Ok(true)
    }

    /// Drops every reservation with `expires_at <= now`, returning their ids.
    pub fn expire(&mut self, now: u64) -> Result<Vec<String>, InventoryError> {
        let expired: Vec<String> = self
            .reservations
            .iter()
            .filter(|(_, reservation)| reservation.expires_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.release(id)?;
        }
        Ok(expired)
    }

    pub fn snapshot(&self) -> InventorySnapshot {
        InventorySnapshot {
            nodes: self.cluster.node_specs().cloned().collect(),
            reservations: self.reservations.clone(),
            allocations: self.allocations.clone(),
        }
    }

    /// Rebuilds an inventory; every ledger entry is re-applied and checked against capacity.
    pub fn restore(
        snapshot: InventorySnapshot,
        policy: Box<dyn PlacementPolicy>,
    ) -> Result<Self, InventoryError> {
        let mut inventory = Self::new(snapshot.nodes, policy)?;
        for (id, placement) in &snapshot.allocations {
            inventory.apply_entry(id, placement)?;
        }
        for (id, reservation) in &snapshot.reservations {
            if snapshot.allocations.contains_key(id) {
                return Err(InventoryError::DuplicateId(id.clone()));
            }
            inventory.apply_entry(id, &reservation.placement)?;
        }
        inventory.allocations = snapshot.allocations;
        inventory.reservations = snapshot.reservations;
        Ok(inventory)
    }

    fn apply_entry(&mut self, id: &str, placement: &GroupPlacement) -> Result<(), InventoryError> {
        for (position, replica) in placement.replicas.iter().enumerate() {
            if let Err(source) = self.cluster.apply(replica) {
                // Leave nothing half-applied before reporting.
                if let Some(applied) = placement.replicas.get(..position) {
                    self.undo(applied)?;
                }
                return Err(InventoryError::Restore {
                    id: id.to_string(),
                    source,
                });
            }
        }
        Ok(())
    }
}
