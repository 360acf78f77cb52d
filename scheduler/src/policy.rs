//! Placement policies: first-fit, best-fit and fragmentation-aware (FGD-style).
//!
//! A policy scores one candidate (a node state before and after the replica); the
//! engine picks the lowest score and breaks ties by the lowest node index, so every
//! policy is deterministic.

use std::fmt;
use std::str::FromStr;

use crate::cluster::{Candidate, NodeSpec, NodeView, Score};
use std::collections::HashMap;

use crate::resources::{GpuConstraint, GpuDemand, GpuSpec, MILLI_PER_GPU, ReplicaRequest};

/// One placement policy.
pub trait PlacementPolicy: Send + Sync {
    fn name(&self) -> &'static str;

    /// A cost of a node state alone; the engine caches it per distinct state.
    fn state_cost(&self, _node: &NodeView<'_>) -> i64 {
        0
    }

    /// The score of one candidate; lower is better.
    fn score(&self, candidate: &Candidate<'_>) -> Score;
}

/// The lowest-index node that fits.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstFit;

impl PlacementPolicy for FirstFit {
    fn name(&self) -> &'static str {
        "first-fit"
    }

    fn score(&self, _candidate: &Candidate<'_>) -> Score {
        Score::default()
    }
}

/// The node left with the least free GPU, then the least free CPU.
#[derive(Debug, Clone, Copy, Default)]
pub struct BestFit;

impl PlacementPolicy for BestFit {
    fn name(&self) -> &'static str {
        "best-fit"
    }

    fn score(&self, candidate: &Candidate<'_>) -> Score {
        let after = candidate.after;
        Score(
            after.gpu_free_milli() as i64,
            i64::try_from(after.state.cpu_millis).unwrap_or(i64::MAX),
        )
    }
}

/// The demand mix a fragmentation-aware policy expects: requests with relative weights.
#[derive(Debug, Clone, Default)]
pub struct WorkloadProfile {
    classes: Vec<DemandClass>,
    /// Mean CPU millis and memory bytes the workload asks per milli-GPU.
    cpu_per_gpu_milli: f64,
    memory_per_gpu_milli: f64,
    total_weight: i64,
    /// Per GPU spec: constrained demand per milli-GPU of the supply that can serve it.
    pressure: Vec<(GpuSpec, f64)>,
}

/// Requests sharing one GPU demand and constraint; they differ only in CPU and memory.
#[derive(Debug, Clone)]
struct DemandClass {
    gpu: GpuDemand,
    constraint: GpuConstraint,
    /// `(cpu millis, memory bytes, weight)` of each member request.
    members: Vec<(u64, u64, i64)>,
    weight: i64,
}

impl WorkloadProfile {
    /// Builds a profile from observed requests (for instance the order history);
    /// GPU-less requests are left out: they never use GPU capacity.
    pub fn from_requests<'a>(requests: impl IntoIterator<Item = &'a ReplicaRequest>) -> Self {
        let mut classes: Vec<DemandClass> = Vec::new();
        let mut index: HashMap<(GpuDemand, &GpuConstraint), usize> = HashMap::new();
        let mut members: Vec<HashMap<(u64, u64), i64>> = Vec::new();
        let (mut cpu, mut memory, mut milli) = (0f64, 0f64, 0f64);
        for request in requests {
            if request.gpu.is_none() {
                continue;
            }
            let position = *index
                .entry((request.gpu, &request.gpu_constraint))
                .or_insert_with(|| {
                    classes.push(DemandClass {
                        gpu: request.gpu,
                        constraint: request.gpu_constraint.clone(),
                        members: Vec::new(),
                        weight: 0,
                    });
                    members.push(HashMap::new());
                    classes.len() - 1
                });
            let want = &request.resources;
            *members[position]
                .entry((want.cpu_millis, want.memory_bytes))
                .or_insert(0) += 1;
            classes[position].weight += 1;
            cpu += want.cpu_millis as f64;
            memory += want.memory_bytes as f64;
            milli += request.gpu.milli().unwrap_or(0) as f64;
        }
        for (class, counts) in classes.iter_mut().zip(members) {
            class.members = counts.into_iter().map(|((c, m), w)| (c, m, w)).collect();
            class.members.sort_unstable();
        }
        let per = |total: f64| if milli > 0.0 { total / milli } else { 0.0 };
        Self {
            total_weight: classes.iter().map(|class| class.weight).sum(),
            classes,
            cpu_per_gpu_milli: per(cpu),
            memory_per_gpu_milli: per(memory),
            pressure: Vec::new(),
        }
    }

    /// Weighs each GPU model by how much model-constrained demand depends on it,
    /// given the supply on these nodes: a constrained request's demand is spread over
    /// the capacity it may use, so a model only few requests can use, in short supply,
    /// gets a high pressure.
    pub fn with_supply(mut self, nodes: &[NodeSpec]) -> Self {
        let mut supply: Vec<(GpuSpec, f64)> = Vec::new();
        for device in nodes.iter().flat_map(|node| &node.gpus) {
            match supply.iter_mut().find(|(spec, _)| *spec == device.spec) {
                Some((_, milli)) => *milli += f64::from(MILLI_PER_GPU),
                None => supply.push((device.spec.clone(), f64::from(MILLI_PER_GPU))),
            }
        }
        let mut pressure: Vec<(GpuSpec, f64)> =
            supply.iter().map(|(spec, _)| (spec.clone(), 0.0)).collect();
        for class in self
            .classes
            .iter()
            .filter(|class| class.constraint != GpuConstraint::default())
        {
            let allowed = |spec: &GpuSpec| class.constraint.check(spec).is_ok();
            let capacity: f64 = supply
                .iter()
                .filter(|(spec, _)| allowed(spec))
                .map(|(_, milli)| milli)
                .sum();
            if capacity <= 0.0 {
                continue;
            }
            let demand = class.weight as f64 * class.gpu.milli().unwrap_or(0) as f64;
            for (_, value) in pressure.iter_mut().filter(|(spec, _)| allowed(spec)) {
                *value += demand / capacity;
            }
        }
        self.pressure = pressure;
        self
    }

    /// Free GPU milli weighted by model pressure: what the constrained demand would lose
    /// if this capacity went to someone else.
    pub fn pressured_free_milli(&self, node: &NodeView<'_>) -> f64 {
        if self.pressure.is_empty() {
            return 0.0;
        }
        node.gpus()
            .map(|(spec, free)| {
                let pressure = self
                    .pressure
                    .iter()
                    .find(|(s, _)| s == spec)
                    .map_or(0.0, |(_, p)| *p);
                pressure * f64::from(free)
            })
            .sum()
    }

    /// Number of distinct GPU demands (with constraints) in the profile.
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// Expected GPU milli on this node that the workload could NOT use, weighted by
    /// request frequency (FGD's fragmentation measure, Weng et al., ATC'23).
    pub fn fragmentation(&self, node: &NodeView<'_>) -> i64 {
        let total = node.gpu_free_milli() as i64;
        if total == 0 {
            return 0;
        }
        let (cpu, memory) = (node.state.cpu_millis, node.state.memory_bytes);
        let mut fragment = 0i64;
        for class in &self.classes {
            let fitting: i64 = class
                .members
                .iter()
                .take_while(|(want_cpu, _, _)| *want_cpu <= cpu)
                .filter(|(_, want_memory, _)| *want_memory <= memory)
                .map(|(_, _, weight)| weight)
                .sum();
            let unusable = if fitting == 0 {
                total
            } else {
                unusable_gpu_milli(node, class.gpu, &class.constraint, total)
            };
            fragment += fitting * unusable + (class.weight - fitting) * total;
        }
        fragment
    }

    /// Free GPU milli the node's free CPU or memory cannot feed at the workload's mean ratio.
    pub fn starved_gpu_milli(&self, node: &NodeView<'_>) -> f64 {
        let free = node.gpu_free_milli() as f64;
        let mut fed = free;
        if self.cpu_per_gpu_milli > 0.0 {
            fed = fed.min(node.state.cpu_millis as f64 / self.cpu_per_gpu_milli);
        }
        if self.memory_per_gpu_milli > 0.0 {
            fed = fed.min(node.state.memory_bytes as f64 / self.memory_per_gpu_milli);
        }
        free - fed
    }
}

/// Free GPU milli on a node that a demand could not use, given it fits otherwise.
fn unusable_gpu_milli(
    node: &NodeView<'_>,
    gpu: GpuDemand,
    constraint: &GpuConstraint,
    total: i64,
) -> i64 {
    match gpu {
        GpuDemand::None => 0,
        GpuDemand::Fraction(milli) => node
            .gpus()
            .filter(|(spec, free)| *free < milli || constraint.check(spec).is_err())
            .map(|(_, free)| i64::from(free))
            .sum(),
        GpuDemand::Whole(units) => {
            let mut whole = 0u32;
            let mut partial = 0i64;
            for (spec, free) in node.gpus() {
                if free == MILLI_PER_GPU && constraint.check(spec).is_ok() {
                    whole += 1;
                } else {
                    partial += i64::from(free);
                }
            }
            if whole < units { total } else { partial }
        }
    }
}

/// Weights of the terms `fgd-balanced` adds to FGD's fragmentation, per milli-GPU
/// and relative to the profile's total weight (1.0 counts a milli-GPU like one that
/// every request in the profile finds unusable).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BalanceWeights {
    /// Free GPU capacity the node's free CPU/memory cannot feed.
    pub starvation: f64,
    /// Free capacity of models that model-constrained requests depend on (a credit).
    pub pressure: f64,
}

impl BalanceWeights {
    /// FGD as published.
    pub const NONE: Self = Self {
        starvation: 0.0,
        pressure: 0.0,
    };
    /// Tuned on the openb traces (seeds 42..45); see the crate's benchmark notes.
    pub const TUNED: Self = Self {
        starvation: 2.0,
        pressure: 1.0,
    };
}

/// Fragmentation-aware placement in the spirit of FGD (Weng et al., ATC'23): place
/// where the expected unusable GPU capacity grows least.
///
/// `fgd-balanced` adds two terms to the cost. Starvation: free GPU capacity the
/// node's free CPU and memory can no longer feed at the workload's mean ratio (on
/// openb, CPU runs out before GPU at 130% demand, and pure FGD strands whole GPUs on
/// nodes whose CPU went to CPU-heavy pods). Pressure: a credit for keeping free the
/// models that model-constrained requests depend on, so unconstrained requests go
/// elsewhere first. Ties prefer the node left with less free GPU.
#[derive(Debug, Clone)]
pub struct FragmentationAware {
    profile: WorkloadProfile,
    weights: BalanceWeights,
}

impl FragmentationAware {
    /// The measure as published: fragmentation only.
    pub fn new(profile: WorkloadProfile) -> Self {
        Self::balanced(profile, BalanceWeights::NONE)
    }

    pub fn balanced(profile: WorkloadProfile, weights: BalanceWeights) -> Self {
        Self { profile, weights }
    }
}

impl PlacementPolicy for FragmentationAware {
    fn name(&self) -> &'static str {
        if self.weights == BalanceWeights::NONE {
            "fgd"
        } else {
            "fgd-balanced"
        }
    }

    fn state_cost(&self, node: &NodeView<'_>) -> i64 {
        let total_weight = self.profile.total_weight as f64;
        let extra = total_weight
            * (self.weights.starvation * self.profile.starved_gpu_milli(node)
                - self.weights.pressure * self.profile.pressured_free_milli(node));
        // Costs are integers so that equal placements tie exactly.
        self.profile
            .fragmentation(node)
            .saturating_add(extra.round() as i64)
    }

    fn score(&self, candidate: &Candidate<'_>) -> Score {
        let growth = candidate.after_cost.saturating_sub(candidate.before_cost);
        Score(growth, candidate.after.gpu_free_milli() as i64)
    }
}

/// The policies selectable by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyKind {
    FirstFit,
    BestFit,
    Fgd,
    #[default]
    FgdBalanced,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 4] = [Self::FirstFit, Self::BestFit, Self::Fgd, Self::FgdBalanced];

    /// Builds the policy; the fragmentation-aware one needs the expected workload.
    pub fn build(self, profile: WorkloadProfile) -> Box<dyn PlacementPolicy> {
        self.build_with(profile, BalanceWeights::TUNED)
    }

    /// Like [`PolicyKind::build`] with chosen weights for `fgd-balanced`.
    pub fn build_with(
        self,
        profile: WorkloadProfile,
        weights: BalanceWeights,
    ) -> Box<dyn PlacementPolicy> {
        match self {
            Self::FirstFit => Box::new(FirstFit),
            Self::BestFit => Box::new(BestFit),
            Self::Fgd => Box::new(FragmentationAware::new(profile)),
            Self::FgdBalanced => Box::new(FragmentationAware::balanced(profile, weights)),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::FirstFit => "first-fit",
            Self::BestFit => "best-fit",
            Self::Fgd => "fgd",
            Self::FgdBalanced => "fgd-balanced",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown policy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown placement policy `{0}` (expected first-fit, best-fit, fgd or fgd-balanced)")]
pub struct UnknownPolicy(pub String);

impl FromStr for PolicyKind {
    type Err = UnknownPolicy;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| UnknownPolicy(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Cluster, GpuDevice};
    use crate::resources::{GpuModelKey, GpuModelPattern, Resources};

    const GIB: u64 = 1 << 30;

    fn node(id: &str, cpu: u64, model: &str, gpus: u32) -> NodeSpec {
        let key = model.parse::<GpuModelKey>().unwrap();
        NodeSpec {
            id: id.into(),
            capacity: Resources {
                cpu_millis: cpu,
                memory_bytes: 256 * GIB,
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

    fn pod(cpu: u64, gpu: GpuDemand, models: &[&str]) -> ReplicaRequest {
        ReplicaRequest {
            resources: Resources {
                cpu_millis: cpu,
                memory_bytes: GIB,
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

    fn cluster(nodes: Vec<NodeSpec>, kind: PolicyKind, workload: &[ReplicaRequest]) -> Cluster {
        let profile = WorkloadProfile::from_requests(workload).with_supply(&nodes);
        Cluster::new(nodes, kind.build(profile)).unwrap()
    }

    #[test]
    fn fgd_keeps_whole_nodes_for_multi_gpu_demand() {
        let workload = [
            pod(1000, GpuDemand::Whole(8), &[]),
            pod(1000, GpuDemand::Fraction(500), &[]),
        ];
        let nodes = || {
            vec![
                node("empty", 64_000, "nvidia/t4/16gi/pcie", 8),
                node("used", 64_000, "nvidia/t4/16gi/pcie", 8),
            ]
        };
        for kind in [PolicyKind::Fgd, PolicyKind::FgdBalanced] {
            let mut cluster = cluster(nodes(), kind, &workload);
            // Make "used" partially used first, by hand.
            let first = cluster
                .place(&pod(1000, GpuDemand::Fraction(500), &[]))
                .unwrap();
            assert_eq!(first.node_id, "empty", "ties go to the lowest index");
            let second = cluster
                .place(&pod(1000, GpuDemand::Fraction(300), &[]))
                .unwrap();
            assert_eq!(
                (second.node_id.as_str(), second.gpus[0].device_index),
                ("empty", 1),
                "{kind}"
            );
            // Two half-GPU pods share a GPU rather than opening the other node.
            let third = cluster
                .place(&pod(1000, GpuDemand::Fraction(500), &[]))
                .unwrap();
            assert_eq!(
                (third.node_id.as_str(), third.gpus[0].device_index),
                ("empty", 0),
                "{kind}"
            );
        }
    }

    #[test]
    fn balanced_sends_cpu_heavy_pods_where_gpus_are_already_used() {
        let workload = [
            pod(12_000, GpuDemand::Whole(1), &[]),
            pod(30_000, GpuDemand::None, &[]),
        ];
        let nodes = vec![
            node("free-gpus", 32_000, "nvidia/t4/16gi/pcie", 2),
            node("busy-gpus", 32_000, "nvidia/t4/16gi/pcie", 2),
        ];
        let mut cluster = cluster(nodes, PolicyKind::FgdBalanced, &workload);
        for _ in 0..2 {
            let gpu_pod = pod(1000, GpuDemand::Whole(1), &[]);
            let placed = cluster.place(&gpu_pod).unwrap();
            assert_eq!(placed.node_id, "free-gpus");
        }
        // "free-gpus" has no GPU left; "busy-gpus" is untouched. The CPU hog must not
        // starve the untouched node's GPUs.
        let hog = cluster.place(&pod(30_000, GpuDemand::None, &[])).unwrap();
        assert_eq!(hog.node_id, "free-gpus");
    }

    #[test]
    fn balanced_keeps_models_that_constrained_demand_needs() {
        let workload = [
            pod(1000, GpuDemand::Whole(1), &["nvidia/t4/*"]),
            pod(1000, GpuDemand::Whole(1), &[]),
            pod(1000, GpuDemand::Whole(1), &[]),
        ];
        let nodes = || {
            vec![
                node("t4", 64_000, "nvidia/t4/16gi/pcie", 2),
                node("v100", 64_000, "nvidia/v100/32gi/pcie", 2),
            ]
        };
        let anyone = pod(1000, GpuDemand::Whole(1), &[]);
        let mut first_fit = cluster(nodes(), PolicyKind::FirstFit, &workload);
        assert_eq!(first_fit.place(&anyone).unwrap().node_id, "t4");
        let mut balanced = cluster(nodes(), PolicyKind::FgdBalanced, &workload);
        assert_eq!(balanced.place(&anyone).unwrap().node_id, "v100");
    }

    #[test]
    fn policy_names_parse() {
        for kind in PolicyKind::ALL {
            assert_eq!(kind.name().parse::<PolicyKind>().unwrap(), kind);
        }
        assert!(
            "worst-fit"
                .parse::<PolicyKind>()
                .unwrap_err()
                .to_string()
                .contains("worst-fit")
        );
    }
}
