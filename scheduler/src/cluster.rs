//! The placement engine: node states, replica placement on concrete GPU devices, and
//! the index that keeps placement fast.
//!
//! Speed comes from two observations. Nodes with the same hardware and the same free
//! amounts are interchangeable, so nodes are grouped into interned *states* and a
//! policy scores a state once. And a state's score for a request never changes, so
//! each distinct request keeps an ordered set of `(score, lowest node, state)`
//! entries, updated lazily from a log of state-membership changes. Placing a replica
//! then costs a few set operations plus scoring the states that changed since the
//! same request was last seen, instead of a scan over every node.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::explain::PlacementFailure;
use crate::policy::PlacementPolicy;
use crate::resources::{
    GpuDemand, GpuModelKey, GpuSpec, MILLI_PER_GPU, ReplicaRequest, ResourceError, Resources, add,
    sub,
};

/// One GPU device of a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GpuDevice {
    /// The device's own index on the node (as `nvidia-smi` reports it).
    pub index: u32,
    #[serde(flatten)]
    pub spec: GpuSpec,
}

/// A node's allocatable capacity and devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub id: String,
    pub capacity: Resources,
    #[serde(default)]
    pub gpus: Vec<GpuDevice>,
}

/// Errors of node bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error("duplicate node id `{0}`")]
    DuplicateNode(String),
    #[error("node `{node}`: duplicate gpu device index {index}")]
    DuplicateGpuIndex { node: String, index: u32 },
    #[error("unknown node `{0}`")]
    UnknownNode(String),
    #[error("node `{node}`: unknown gpu device index {index}")]
    UnknownGpu { node: String, index: u32 },
    #[error("node `{node}`: {source}")]
    Resource {
        node: String,
        #[source]
        source: ResourceError,
    },
    #[error("node `{node}`: gpu {index} would exceed 1000 milli-GPU")]
    GpuOverCommitted { node: String, index: u32 },
    #[error("node `{node}`: releasing more {what} than its capacity")]
    ReleaseBeyondCapacity { node: String, what: &'static str },
    #[error("node `{node}`: no persistent storage class `{class}`")]
    UnknownStorageClass { node: String, class: String },
}

/// A share of one GPU device taken by a replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GpuShare {
    pub device_index: u32,
    pub model: GpuModelKey,
    pub milli: u32,
}

/// Where one replica went and exactly what it holds there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplicaPlacement {
    pub node_id: String,
    pub resources: Resources,
    #[serde(default)]
    pub gpus: Vec<GpuShare>,
}

/// Lower is better; the engine breaks exact ties by the lowest node index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Score(pub i64, pub i64);

/// A node's hardware without its name: nodes sharing a shape can share states.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeShape {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
    /// Persistent storage classes and capacities, in class-name order.
    pub persistent_storage: Vec<(String, u64)>,
    /// Distinct GPU specs on the node; a state refers to them by position.
    pub gpu_kinds: Vec<GpuSpec>,
    /// Kind of each device, in device order.
    device_kinds: Vec<u16>,
}

impl NodeShape {
    fn of(spec: &NodeSpec) -> Result<Self, ClusterError> {
        let mut gpu_kinds: Vec<GpuSpec> = Vec::new();
        let mut device_kinds = Vec::with_capacity(spec.gpus.len());
        for device in &spec.gpus {
            let kind = match gpu_kinds.iter().position(|k| *k == device.spec) {
                Some(kind) => kind,
                None => {
                    gpu_kinds.push(device.spec.clone());
                    gpu_kinds.len() - 1
                }
            };
            device_kinds.push(u16::try_from(kind).map_err(|_| ClusterError::Resource {
                node: spec.id.clone(),
                source: ResourceError::Overflow {
                    what: "gpu kinds per node",
                },
            })?);
        }
        Ok(Self {
            cpu_millis: spec.capacity.cpu_millis,
            memory_bytes: spec.capacity.memory_bytes,
            ephemeral_storage_bytes: spec.capacity.ephemeral_storage_bytes,
            persistent_storage: spec
                .capacity
                .persistent_storage
                .iter()
                .map(|(class, bytes)| (class.clone(), *bytes))
                .collect(),
            gpu_kinds,
            device_kinds,
        })
    }

    pub fn gpu_capacity_milli(&self) -> u64 {
        self.device_kinds.len() as u64 * u64::from(MILLI_PER_GPU)
    }
}

/// Free amounts of a node, independent of its name and of device order: the unit of caching.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateKey {
    shape: u32,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
    /// Free persistent bytes, aligned with [`NodeShape::persistent_storage`].
    pub persistent_storage: Vec<u64>,
    /// `(gpu kind, free milli)` per device, sorted: kind ascending, free descending.
    pub gpus: Vec<(u16, u32)>,
}

/// What a policy sees of a node state.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    pub shape: &'a NodeShape,
    pub state: &'a StateKey,
}

impl<'a> NodeView<'a> {
    /// Each device's spec and free milli-GPU, in canonical order.
    pub fn gpus(&self) -> impl Iterator<Item = (&'a GpuSpec, u32)> + 'a {
        let shape = self.shape;
        self.state.gpus.iter().filter_map(move |&(kind, free)| {
            shape
                .gpu_kinds
                .get(usize::from(kind))
                .map(|spec| (spec, free))
        })
    }

    pub fn gpu_free_milli(&self) -> u64 {
        self.state
            .gpus
            .iter()
            .map(|&(_, free)| u64::from(free))
            .sum()
    }

    /// Whether the non-GPU part of a request fits this state.
    pub fn fits_resources(&self, want: &Resources) -> bool {
        want.cpu_millis <= self.state.cpu_millis
            && want.memory_bytes <= self.state.memory_bytes
            && want.ephemeral_storage_bytes <= self.state.ephemeral_storage_bytes
            && want.persistent_storage.iter().all(|(class, bytes)| {
                self.persistent_free(class)
                    .is_some_and(|free| *bytes <= free)
            })
    }

    pub fn persistent_free(&self, class: &str) -> Option<u64> {
        let position = self
            .shape
            .persistent_storage
            .iter()
            .position(|(name, _)| name == class)?;
        self.state.persistent_storage.get(position).copied()
    }
}

/// A GPU choice in canonical terms: take `milli` from a device of `kind` that has `free`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct GpuChoice {
    takes: Vec<(u16, u32, u32)>,
}

/// The ways a request can take GPUs from a state; empty when it cannot.
fn gpu_choices(view: &NodeView<'_>, request: &ReplicaRequest) -> Vec<GpuChoice> {
    let eligible = |kind: u16| {
        view.shape
            .gpu_kinds
            .get(usize::from(kind))
            .is_some_and(|spec| request.gpu_constraint.check(spec).is_ok())
    };
    match request.gpu {
        GpuDemand::None => vec![GpuChoice::default()],
        GpuDemand::Fraction(milli) => {
            let mut choices: Vec<GpuChoice> = Vec::new();
            let mut last = None;
            for &(kind, free) in &view.state.gpus {
                if free >= milli && eligible(kind) && last != Some((kind, free)) {
                    choices.push(GpuChoice {
                        takes: vec![(kind, free, milli)],
                    });
                }
                last = Some((kind, free));
            }
            // Tightest GPU first, so that among equally scored choices the engine
            // keeps the roomier GPUs whole.
            choices.reverse();
            choices
        }
        GpuDemand::Whole(units) => {
            let takes: Vec<(u16, u32, u32)> = view
                .state
                .gpus
                .iter()
                .filter(|&&(kind, free)| free == MILLI_PER_GPU && eligible(kind))
                .take(units as usize)
                .map(|&(kind, free)| (kind, free, MILLI_PER_GPU))
                .collect();
            if takes.len() == units as usize {
                vec![GpuChoice { takes }]
            } else {
                Vec::new()
            }
        }
    }
}

struct StateSlot {
    key: StateKey,
    members: BTreeSet<u32>,
    cost: Option<i64>,
}

impl StateSlot {
    fn lowest_member(&self) -> Option<u32> {
        self.members.first().copied()
    }
}

/// Interned node states with their members and cached policy cost.
#[derive(Default)]
struct StateTable {
    slots: Vec<StateSlot>,
    ids: HashMap<StateKey, u32>,
    /// States whose lowest member changed (including becoming live), oldest first.
    changes: Vec<u32>,
}

impl StateTable {
    fn intern(&mut self, key: StateKey) -> u32 {
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = self.slots.len() as u32;
        self.ids.insert(key.clone(), id);
        self.slots.push(StateSlot {
            key,
            members: BTreeSet::new(),
            cost: None,
        });
        id
    }

    fn slot(&self, id: u32) -> &StateSlot {
        &self.slots[id as usize]
    }

    fn slot_mut(&mut self, id: u32) -> &mut StateSlot {
        &mut self.slots[id as usize]
    }

    fn add_member(&mut self, id: u32, node: u32) {
        let slot = self.slot_mut(id);
        let before = slot.lowest_member();
        slot.members.insert(node);
        if slot.lowest_member() != before {
            self.changes.push(id);
        }
    }

    fn remove_member(&mut self, id: u32, node: u32) {
        let slot = self.slot_mut(id);
        let before = slot.lowest_member();
        slot.members.remove(&node);
        let after = slot.lowest_member();
        if after.is_some() && after != before {
            self.changes.push(id);
        }
    }

    fn cost(&mut self, policy: &dyn PlacementPolicy, shapes: &[NodeShape], id: u32) -> i64 {
        if let Some(cost) = self.slot(id).cost {
            return cost;
        }
        let slot = self.slot(id);
        let view = NodeView {
            shape: &shapes[slot.key.shape as usize],
            state: &slot.key,
        };
        let cost = policy.state_cost(&view);
        self.slot_mut(id).cost = Some(cost);
        cost
    }
}

/// What a policy is asked to score: one way of placing a replica on a node state.
pub struct Candidate<'a> {
    pub request: &'a ReplicaRequest,
    pub before: NodeView<'a>,
    pub after: NodeView<'a>,
    pub before_cost: i64,
    pub after_cost: i64,
}

/// Applies a canonical choice and a resource request to a state key.
fn state_after(
    key: &StateKey,
    shape: &NodeShape,
    request: &ReplicaRequest,
    choice: &GpuChoice,
) -> Option<StateKey> {
    let want = &request.resources;
    let mut after = key.clone();
    after.cpu_millis = after.cpu_millis.checked_sub(want.cpu_millis)?;
    after.memory_bytes = after.memory_bytes.checked_sub(want.memory_bytes)?;
    after.ephemeral_storage_bytes = after
        .ephemeral_storage_bytes
        .checked_sub(want.ephemeral_storage_bytes)?;
    for (class, bytes) in &want.persistent_storage {
        let position = shape
            .persistent_storage
            .iter()
            .position(|(name, _)| name == class)?;
        let free = after.persistent_storage.get_mut(position)?;
        *free = free.checked_sub(*bytes)?;
    }
    for &(kind, free, milli) in &choice.takes {
        let slot = after
            .gpus
            .iter_mut()
            .find(|entry| **entry == (kind, free))?;
        slot.1 = free.checked_sub(milli)?;
    }
    sort_gpus(&mut after.gpus);
    Some(after)
}

fn sort_gpus(gpus: &mut [(u16, u32)]) {
    gpus.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
}

/// Scores every GPU choice of a request on a state; the best, if any fits.
fn evaluate(
    policy: &dyn PlacementPolicy,
    states: &mut StateTable,
    shapes: &[NodeShape],
    state: u32,
    request: &ReplicaRequest,
) -> Option<(Score, GpuChoice)> {
    let key = states.slot(state).key.clone();
    let shape = &shapes[key.shape as usize];
    let view = NodeView { shape, state: &key };
    if !view.fits_resources(&request.resources) {
        return None;
    }
    let choices = gpu_choices(&view, request);
    if choices.is_empty() {
        return None;
    }
    let before_cost = states.cost(policy, shapes, state);
    let mut best: Option<(Score, GpuChoice)> = None;
    for choice in choices {
        let after_key = state_after(&key, shape, request, &choice)?;
        let after_id = states.intern(after_key);
        let after_cost = states.cost(policy, shapes, after_id);
        let candidate = Candidate {
            request,
            before: view,
            after: NodeView {
                shape,
                state: &states.slot(after_id).key,
            },
            before_cost,
            after_cost,
        };
        let score = policy.score(&candidate);
        if best
            .as_ref()
            .is_none_or(|(best_score, _)| score < *best_score)
        {
            best = Some((score, choice));
        }
    }
    best
}

struct NodeSlot {
    spec: NodeSpec,
    shape: u32,
    /// Free milli-GPU per device, in device order.
    gpu_free: Vec<u32>,
    free: Resources,
    state: u32,
}

/// Per distinct request: the ordered candidates and how far the change log was read.
struct RequestRank {
    log_cursor: usize,
    ranked: BTreeSet<(Score, u32, u32)>,
}

/// Nodes, their free capacity, and the policy-driven placement index.
pub struct Cluster {
    policy: Box<dyn PlacementPolicy>,
    shapes: Vec<NodeShape>,
    shape_ids: HashMap<NodeShape, u32>,
    nodes: Vec<NodeSlot>,
    node_ids: HashMap<String, u32>,
    states: StateTable,
    request_ids: HashMap<ReplicaRequest, u32>,
    ranks: Vec<RequestRank>,
}

/// Past this many logged state changes the index is rebuilt, bounding memory in long runs.
const MAX_CHANGE_LOG: usize = 4_000_000;

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("policy", &self.policy.name())
            .field("nodes", &self.nodes.len())
            .field("states", &self.states.slots.len())
            .finish()
    }
}

impl Cluster {
    /// An empty cluster of these nodes.
    pub fn new(
        nodes: Vec<NodeSpec>,
        policy: Box<dyn PlacementPolicy>,
    ) -> Result<Self, ClusterError> {
        let mut cluster = Self {
            policy,
            shapes: Vec::new(),
            shape_ids: HashMap::new(),
            nodes: Vec::with_capacity(nodes.len()),
            node_ids: HashMap::new(),
            states: StateTable::default(),
            request_ids: HashMap::new(),
            ranks: Vec::new(),
        };
        for spec in nodes {
            cluster.add_node(spec)?;
        }
        Ok(cluster)
    }

    fn add_node(&mut self, spec: NodeSpec) -> Result<(), ClusterError> {
        let index = u32::try_from(self.nodes.len()).map_err(|_| ClusterError::Resource {
            node: spec.id.clone(),
            source: ResourceError::Overflow { what: "node count" },
        })?;
        if self.node_ids.contains_key(&spec.id) {
            return Err(ClusterError::DuplicateNode(spec.id));
        }
        let mut seen = BTreeSet::new();
        for device in &spec.gpus {
            if !seen.insert(device.index) {
                return Err(ClusterError::DuplicateGpuIndex {
                    node: spec.id.clone(),
                    index: device.index,
                });
            }
        }
        let shape = NodeShape::of(&spec)?;
        let shape_id = match self.shape_ids.get(&shape) {
            Some(&id) => id,
            None => {
                let id = self.shapes.len() as u32;
                self.shape_ids.insert(shape.clone(), id);
                self.shapes.push(shape);
                id
            }
        };
        self.node_ids.insert(spec.id.clone(), index);
        let mut slot = NodeSlot {
            gpu_free: vec![MILLI_PER_GPU; spec.gpus.len()],
            free: spec.capacity.clone(),
            shape: shape_id,
            spec,
            state: 0,
        };
        let state = self
            .states
            .intern(Self::key_of(&slot, &self.shapes[shape_id as usize]));
        slot.state = state;
        self.nodes.push(slot);
        self.states.add_member(state, index);
        Ok(())
    }

    fn key_of(slot: &NodeSlot, shape: &NodeShape) -> StateKey {
        let mut gpus: Vec<(u16, u32)> = shape
            .device_kinds
            .iter()
            .zip(&slot.gpu_free)
            .map(|(&kind, &free)| (kind, free))
            .collect();
        sort_gpus(&mut gpus);
        StateKey {
            shape: slot.shape,
            cpu_millis: slot.free.cpu_millis,
            memory_bytes: slot.free.memory_bytes,
            ephemeral_storage_bytes: slot.free.ephemeral_storage_bytes,
            persistent_storage: shape
                .persistent_storage
                .iter()
                .map(|(class, _)| {
                    slot.free
                        .persistent_storage
                        .get(class)
                        .copied()
                        .unwrap_or(0)
                })
                .collect(),
            gpus,
        }
    }

    pub fn policy_name(&self) -> &str {
        self.policy.name()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn node_specs(&self) -> impl Iterator<Item = &NodeSpec> {
        self.nodes.iter().map(|slot| &slot.spec)
    }

    /// Free non-GPU resources and per-device free milli of a node.
    pub fn node_free(&self, node_id: &str) -> Option<(&Resources, Vec<(u32, u32)>)> {
        let slot = &self.nodes[*self.node_ids.get(node_id)? as usize];
        let gpus = slot
            .spec
            .gpus
            .iter()
            .zip(&slot.gpu_free)
            .map(|(device, &free)| (device.index, free))
            .collect();
        Some((&slot.free, gpus))
    }

    /// Total GPU capacity and allocated milli-GPU over all nodes.
    pub fn gpu_milli(&self) -> (u64, u64) {
        let mut capacity = 0u64;
        let mut free = 0u64;
        for slot in &self.nodes {
            capacity += slot.gpu_free.len() as u64 * u64::from(MILLI_PER_GPU);
            free += slot.gpu_free.iter().map(|&f| u64::from(f)).sum::<u64>();
        }
        (capacity, capacity - free.min(capacity))
    }

    /// Capacity and free totals of the non-GPU resources, for utilisation-based pricing.
    pub fn resource_totals(&self) -> (Resources, Resources) {
        let mut capacity = Resources::default();
        let mut free = Resources::default();
        for slot in &self.nodes {
            capacity.cpu_millis = capacity
                .cpu_millis
                .saturating_add(slot.spec.capacity.cpu_millis);
            capacity.memory_bytes = capacity
                .memory_bytes
                .saturating_add(slot.spec.capacity.memory_bytes);
            free.cpu_millis = free.cpu_millis.saturating_add(slot.free.cpu_millis);
            free.memory_bytes = free.memory_bytes.saturating_add(slot.free.memory_bytes);
        }
        (capacity, free)
    }

    fn request_id(&mut self, request: &ReplicaRequest) -> u32 {
        if let Some(&id) = self.request_ids.get(request) {
            return id;
        }
        let id = self.ranks.len() as u32;
        self.request_ids.insert(request.clone(), id);
        self.ranks.push(RequestRank {
            log_cursor: 0,
            ranked: BTreeSet::new(),
        });
        // A new request starts from every live state.
        let live: Vec<u32> = self
            .states
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| !slot.members.is_empty())
            .map(|(id, _)| id as u32)
            .collect();
        let cursor = self.states.changes.len();
        for state in live {
            self.rank_state(id, state, request);
        }
        self.ranks[id as usize].log_cursor = cursor;
        id
    }

    fn rank_state(&mut self, rank: u32, state: u32, request: &ReplicaRequest) {
        let Some(lowest) = self.states.slot(state).lowest_member() else {
            return;
        };
        if let Some((score, _)) = evaluate(
            self.policy.as_ref(),
            &mut self.states,
            &self.shapes,
            state,
            request,
        ) {
            self.ranks[rank as usize]
                .ranked
                .insert((score, lowest, state));
        }
    }

    /// The best node and GPU choice for a request, without applying it.
    fn best(&mut self, request: &ReplicaRequest) -> Option<(u32, GpuChoice)> {
        if self.states.changes.len() > MAX_CHANGE_LOG {
            self.reset_index();
        }
        let rank = self.request_id(request);
        let start = self.ranks[rank as usize].log_cursor;
        let end = self.states.changes.len();
        for position in start..end {
            let state = self.states.changes[position];
            self.rank_state(rank, state, request);
        }
        self.ranks[rank as usize].log_cursor = end;
        loop {
            let &(score, node, state) = self.ranks[rank as usize].ranked.first()?;
            if self.states.slot(state).lowest_member() == Some(node) {
                let (_, choice) = evaluate(
                    self.policy.as_ref(),
                    &mut self.states,
                    &self.shapes,
                    state,
                    request,
                )?;
                debug_assert_eq!(
                    evaluate(
                        self.policy.as_ref(),
                        &mut self.states,
                        &self.shapes,
                        state,
                        request
                    )
                    .map(|(s, _)| s),
                    Some(score)
                );
                return Some((node, choice));
            }
            self.ranks[rank as usize].ranked.pop_first();
        }
    }

    fn reset_index(&mut self) {
        self.request_ids.clear();
        self.ranks.clear();
        let mut fresh = StateTable::default();
        for index in 0..self.nodes.len() {
            let slot = &self.nodes[index];
            let key = Self::key_of(slot, &self.shapes[slot.shape as usize]);
            let state = fresh.intern(key);
            self.nodes[index].state = state;
            fresh.add_member(state, index as u32);
        }
        fresh.changes.clear();
        self.states = fresh;
    }

    /// Places one replica on the best node and applies it; `None` when it fits nowhere.
    pub fn place(&mut self, request: &ReplicaRequest) -> Option<ReplicaPlacement> {
        let (node, choice) = self.best(request)?;
        let gpus = self.devices_for(node, &choice)?;
        let placement = ReplicaPlacement {
            node_id: self.nodes[node as usize].spec.id.clone(),
            resources: request.resources.clone(),
            gpus,
        };
        self.apply(&placement).ok()?;
        Some(placement)
    }

    /// Like [`Cluster::place`], but says why nothing fits.
    pub fn place_or_explain(
        &mut self,
        request: &ReplicaRequest,
    ) -> Result<ReplicaPlacement, PlacementFailure> {
        self.place(request)
            .ok_or_else(|| PlacementFailure::explain(request, self.views()))
    }

    fn views(&self) -> impl Iterator<Item = NodeView<'_>> {
        self.nodes.iter().map(|slot| {
            let state = &self.states.slot(slot.state).key;
            NodeView {
                shape: &self.shapes[slot.shape as usize],
                state,
            }
        })
    }

    /// Maps a canonical choice to concrete devices: the lowest-index device of each kind and free.
    fn devices_for(&self, node: u32, choice: &GpuChoice) -> Option<Vec<GpuShare>> {
        let slot = &self.nodes[node as usize];
        let shape = &self.shapes[slot.shape as usize];
        let mut taken = vec![false; slot.gpu_free.len()];
        let mut shares = Vec::with_capacity(choice.takes.len());
        for &(kind, free, milli) in &choice.takes {
            let position = (0..slot.gpu_free.len()).find(|&p| {
                !taken[p] && shape.device_kinds[p] == kind && slot.gpu_free[p] == free
            })?;
            taken[position] = true;
            let device = &slot.spec.gpus[position];
            shares.push(GpuShare {
                device_index: device.index,
                model: device.spec.model.clone(),
                milli,
            });
        }
        Some(shares)
    }

    fn node_index(&self, node_id: &str) -> Result<u32, ClusterError> {
        self.node_ids
            .get(node_id)
            .copied()
            .ok_or_else(|| ClusterError::UnknownNode(node_id.to_string()))
    }

    /// Takes a placement's resources from its node; fails without change if they do not fit.
    pub fn apply(&mut self, placement: &ReplicaPlacement) -> Result<(), ClusterError> {
        self.change(placement, Direction::Take)
    }

    /// Gives a placement's resources back; fails without change if that would exceed capacity.
    pub fn release(&mut self, placement: &ReplicaPlacement) -> Result<(), ClusterError> {
        self.change(placement, Direction::Give)
    }

    fn change(
        &mut self,
        placement: &ReplicaPlacement,
        direction: Direction,
    ) -> Result<(), ClusterError> {
        let index = self.node_index(&placement.node_id)?;
        let slot = &self.nodes[index as usize];
        let node = || slot.spec.id.clone();
        let resource_error = |source| ClusterError::Resource {
            node: node(),
            source,
        };
        let step = |have: u64, amount: u64, cap: u64, what: &'static str| match direction {
            Direction::Take => sub(have, amount, what).map_err(resource_error),
            Direction::Give => {
                let total = add(have, amount, what).map_err(resource_error)?;
                if total > cap {
                    Err(ClusterError::ReleaseBeyondCapacity { node: node(), what })
                } else {
                    Ok(total)
                }
            }
        };
        let want = &placement.resources;
        let cap = &slot.spec.capacity;
        let mut free = slot.free.clone();
        free.cpu_millis = step(free.cpu_millis, want.cpu_millis, cap.cpu_millis, "cpu")?;
        free.memory_bytes = step(
            free.memory_bytes,
            want.memory_bytes,
            cap.memory_bytes,
            "memory",
        )?;
        free.ephemeral_storage_bytes = step(
            free.ephemeral_storage_bytes,
            want.ephemeral_storage_bytes,
            cap.ephemeral_storage_bytes,
            "ephemeral storage",
        )?;
        for (class, bytes) in &want.persistent_storage {
            let (Some(have), Some(capacity)) = (
                free.persistent_storage.get(class),
                cap.persistent_storage.get(class),
            ) else {
                return Err(ClusterError::UnknownStorageClass {
                    node: node(),
                    class: class.clone(),
                });
            };
            let next = step(*have, *bytes, *capacity, "persistent storage")?;
            free.persistent_storage.insert(class.clone(), next);
        }
        let mut gpu_free = slot.gpu_free.clone();
        for share in &placement.gpus {
            let position = slot
                .spec
                .gpus
                .iter()
                .position(|device| device.index == share.device_index)
                .ok_or(ClusterError::UnknownGpu {
                    node: node(),
                    index: share.device_index,
                })?;
            let have = u64::from(gpu_free[position]);
            let next = step(
                have,
                u64::from(share.milli),
                u64::from(MILLI_PER_GPU),
                "gpu milli",
            )
            .map_err(|error| match (direction, error) {
                (Direction::Take, ClusterError::Resource { .. }) => {
                    ClusterError::GpuOverCommitted {
                        node: node(),
                        index: share.device_index,
                    }
                }
                (_, other) => other,
            })?;
            gpu_free[position] = u32::try_from(next).unwrap_or(MILLI_PER_GPU);
        }
        let slot = &mut self.nodes[index as usize];
        slot.free = free;
        slot.gpu_free = gpu_free;
        self.refresh_state(index);
        Ok(())
    }

    fn refresh_state(&mut self, index: u32) {
        let slot = &self.nodes[index as usize];
        let key = Self::key_of(slot, &self.shapes[slot.shape as usize]);
        let old = slot.state;
        let new = self.states.intern(key);
        if new != old {
            self.states.remove_member(old, index);
            self.states.add_member(new, index);
            self.nodes[index as usize].state = new;
        }
    }

    /// Free non-GPU resources and GPU milli per node, keyed by node id (for audits and tests).
    pub fn free_by_node(&self) -> BTreeMap<String, (Resources, Vec<u32>)> {
        self.nodes
            .iter()
            .map(|slot| {
                (
                    slot.spec.id.clone(),
                    (slot.free.clone(), slot.gpu_free.clone()),
                )
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    Take,
    Give,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::policy::{PolicyKind, WorkloadProfile};
    use crate::resources::{GpuConstraint, GpuModelPattern};

    const GIB: u64 = 1 << 30;

    fn node(id: &str, cpu: u64, memory_gib: u64, model: &str, gpus: u32) -> NodeSpec {
        let key = model.parse::<GpuModelKey>().unwrap();
        NodeSpec {
            id: id.into(),
            capacity: Resources {
                cpu_millis: cpu,
                memory_bytes: memory_gib * GIB,
                ..Resources::default()
            },
            gpus: (0..gpus)
                .map(|index| GpuDevice {
                    index,
                    spec: GpuSpec::from_key(key.clone(), 16 * GIB),
                })
                .collect(),
        }
    }

    fn request(cpu: u64, memory_gib: u64, gpu: GpuDemand, models: &[&str]) -> ReplicaRequest {
        ReplicaRequest {
            resources: Resources {
                cpu_millis: cpu,
                memory_bytes: memory_gib * GIB,
                ..Resources::default()
            },
            gpu,
            gpu_constraint: GpuConstraint {
                models: models
                    .iter()
                    .map(|m| m.parse::<GpuModelPattern>().unwrap())
                    .collect(),
                ..GpuConstraint::default()
            },
        }
    }

    #[test]
    fn failure_explanation_groups_nodes_by_reason() {
        let mut nodes: Vec<NodeSpec> = (0..3)
            .map(|i| node(&format!("t4-{i}"), 8000, 64, "nvidia/t4/16gi/pcie", 2))
            .collect();
        nodes
            .extend((0..2).map(|i| node(&format!("a100-{i}"), 8000, 4, "nvidia/a100/80gi/sxm", 2)));
        let mut cluster = Cluster::new(nodes, Box::new(crate::policy::FirstFit)).unwrap();
        let failure = cluster
            .place_or_explain(&request(1000, 8, GpuDemand::Whole(1), &["nvidia/a100/*"]))
            .unwrap_err();
        assert_eq!(
            failure.to_string(),
            "3 nodes: gpu model not allowed; 2 nodes: insufficient memory (need 8 GiB, max free 4 GiB)"
        );
        let failure = cluster
            .place_or_explain(&request(1000, 1, GpuDemand::Whole(3), &[]))
            .unwrap_err();
        assert_eq!(
            failure.to_string(),
            "5 nodes: not enough whole free gpus (need 3 gpus, max free 2 gpus)"
        );
        let fraction = request(100, 1, GpuDemand::Fraction(700), &[]);
        for _ in 0..10 {
            cluster.place(&fraction).unwrap();
        }
        let failure = cluster.place_or_explain(&fraction).unwrap_err();
        assert_eq!(
            failure.to_string(),
            "5 nodes: no gpu with enough free share (need 700 milli-gpu, max free 300 milli-gpu)"
        );
    }

    #[test]
    fn multi_gpu_replica_takes_whole_free_devices_on_one_node() {
        let nodes = vec![
            node("a", 64_000, 256, "nvidia/v100/32gi/pcie", 4),
            node("b", 64_000, 256, "nvidia/v100/32gi/pcie", 4),
        ];
        let mut cluster = Cluster::new(nodes, Box::new(crate::policy::FirstFit)).unwrap();
        let share = cluster
            .place(&request(1000, 1, GpuDemand::Fraction(500), &[]))
            .unwrap();
        assert_eq!(
            (share.node_id.as_str(), share.gpus[0].device_index),
            ("a", 0)
        );
        let whole = cluster
            .place(&request(1000, 1, GpuDemand::Whole(3), &[]))
            .unwrap();
        assert_eq!(whole.node_id, "a");
        let devices: Vec<u32> = whole.gpus.iter().map(|g| g.device_index).collect();
        assert_eq!(devices, [1, 2, 3]);
        let next = cluster
            .place(&request(1000, 1, GpuDemand::Whole(2), &[]))
            .unwrap();
        assert_eq!(next.node_id, "b");
    }

    /// The indexed search must pick exactly what a scan over every node would.
    fn scan_best(cluster: &mut Cluster, request: &ReplicaRequest) -> Option<(Score, u32)> {
        let mut best: Option<(Score, u32)> = None;
        for index in 0..cluster.nodes.len() {
            let state = cluster.nodes[index].state;
            if let Some((score, _)) = evaluate(
                cluster.policy.as_ref(),
                &mut cluster.states,
                &cluster.shapes,
                state,
                request,
            ) && best.is_none_or(|b| (score, index as u32) < b)
            {
                best = Some((score, index as u32));
            }
        }
        best
    }

    fn arbitrary_request() -> impl Strategy<Value = ReplicaRequest> {
        let gpu = prop_oneof![
            Just(GpuDemand::None),
            (1u32..=4).prop_map(GpuDemand::Whole),
            (1u32..1000).prop_map(GpuDemand::Fraction),
        ];
        let models = prop_oneof![
            Just(vec![]),
            Just(vec!["nvidia/t4/*"]),
            Just(vec!["nvidia/a100/*", "nvidia/t4"])
        ];
        (0u64..16_000, 0u64..64, gpu, models)
            .prop_map(|(cpu, mem, gpu, models)| request(cpu, mem, gpu, &models))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn index_matches_a_full_scan(
            shapes in prop::collection::vec((0usize..3, 1u32..=8), 1..12),
            requests in prop::collection::vec(arbitrary_request(), 1..60),
            policy in 0usize..4,
        ) {
            let models = ["nvidia/t4/16gi/pcie", "nvidia/a100/80gi/sxm", "nvidia/v100/32gi/pcie"];
            let nodes = shapes
                .iter()
                .enumerate()
                .map(|(i, &(model, gpus))| node(&format!("n{i}"), 32_000, 128, models[model], gpus))
                .collect();
            let kind = PolicyKind::ALL[policy];
            let profile = WorkloadProfile::from_requests(&requests);
            let mut cluster = Cluster::new(nodes, kind.build(profile)).unwrap();
            for request in &requests {
                let expected = scan_best(&mut cluster, request);
                let placed = cluster.place(request);
                match (expected, placed) {
                    (None, None) => {}
                    (Some((_, index)), Some(placement)) => {
                        prop_assert_eq!(&placement.node_id, &format!("n{index}"));
                    }
                    (expected, placed) => prop_assert!(false, "scan {:?} vs index {:?}", expected, placed),
                }
            }
        }
    }
}
