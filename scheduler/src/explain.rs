//! Why a replica fits nowhere: one reason per node, grouped into classes of nodes.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::cluster::NodeView;
use crate::resources::{GpuDemand, GpuIneligibility, MILLI_PER_GPU, ReplicaRequest};

/// The first resource or constraint that rules a node out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "class")]
pub enum Shortfall {
    NoGpus,
    GpuModelNotAllowed,
    GpuVramTooSmall,
    GpuInterfaceMismatch,
    Cpu,
    Memory,
    EphemeralStorage,
    NoStorageClass(String),
    PersistentStorage(String),
    WholeGpus,
    GpuFraction,
}

impl Shortfall {
    fn unit(&self) -> Unit {
        match self {
            Self::Cpu => Unit::Millis,
            Self::Memory | Self::EphemeralStorage | Self::PersistentStorage(_) => Unit::Bytes,
            Self::WholeGpus => Unit::Gpus,
            Self::GpuFraction => Unit::MilliGpu,
            _ => Unit::None,
        }
    }
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoGpus => f.write_str("no gpus"),
            Self::GpuModelNotAllowed => f.write_str("gpu model not allowed"),
            Self::GpuVramTooSmall => f.write_str("gpu vram too small"),
            Self::GpuInterfaceMismatch => f.write_str("gpu interface mismatch"),
            Self::Cpu => f.write_str("insufficient cpu"),
            Self::Memory => f.write_str("insufficient memory"),
            Self::EphemeralStorage => f.write_str("insufficient ephemeral storage"),
            Self::NoStorageClass(class) => write!(f, "no persistent storage class `{class}`"),
            Self::PersistentStorage(class) => {
                write!(f, "insufficient persistent storage `{class}`")
            }
            Self::WholeGpus => f.write_str("not enough whole free gpus"),
            Self::GpuFraction => f.write_str("no gpu with enough free share"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Unit {
    None,
    Millis,
    Bytes,
    Gpus,
    MilliGpu,
}

impl Unit {
    fn format(self, amount: u64) -> String {
        match self {
            Self::None => String::new(),
            Self::Millis => format!("{amount}m cpu"),
            Self::Bytes => format_bytes(amount),
            Self::Gpus => format!("{amount} gpus"),
            Self::MilliGpu => format!("{amount} milli-gpu"),
        }
    }
}

/// Binary units, exact where possible: `8 GiB`, `1536 MiB`, `100 B`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, size) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {name}", bytes / size);
        }
    }
    for (name, size) in UNITS {
        if bytes >= size {
            return format!("{:.1} {name}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes} B")
}

/// One class of nodes ruled out for the same reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureClass {
    pub nodes: usize,
    pub reason: Shortfall,
    /// What one replica needs of the short resource (0 for constraint mismatches).
    pub need: u64,
    /// The most any node of this class has free.
    pub max_free: u64,
}

/// Why a replica could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct PlacementFailure {
    /// Classes by descending node count.
    pub classes: Vec<FailureClass>,
}

impl fmt::Display for PlacementFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.classes.is_empty() {
            return f.write_str("no nodes");
        }
        for (position, class) in self.classes.iter().enumerate() {
            if position > 0 {
                f.write_str("; ")?;
            }
            let plural = if class.nodes == 1 { "" } else { "s" };
            write!(f, "{} node{plural}: {}", class.nodes, class.reason)?;
            let unit = class.reason.unit();
            if !matches!(unit, Unit::None) {
                write!(
                    f,
                    " (need {}, max free {})",
                    unit.format(class.need),
                    unit.format(class.max_free)
                )?;
            }
        }
        Ok(())
    }
}

/// The reason a node cannot take a replica, with (need, free); `None` if it can.
pub fn node_shortfall(
    view: &NodeView<'_>,
    request: &ReplicaRequest,
) -> Option<(Shortfall, u64, u64)> {
    let state = view.state;
    let want = &request.resources;
    if !request.gpu.is_none() {
        let mut best_miss: Option<GpuIneligibility> = None;
        let mut any_eligible = false;
        let mut any_gpu = false;
        for (spec, _) in view.gpus() {
            any_gpu = true;
            match request.gpu_constraint.check(spec) {
                Ok(()) => any_eligible = true,
                Err(miss) => best_miss = best_miss.max(Some(miss)),
            }
        }
        if !any_gpu {
            return Some((Shortfall::NoGpus, 0, 0));
        }
        if !any_eligible {
            let reason = match best_miss {
                Some(GpuIneligibility::VramTooSmall) => Shortfall::GpuVramTooSmall,
                Some(GpuIneligibility::InterfaceMismatch) => Shortfall::GpuInterfaceMismatch,
                _ => Shortfall::GpuModelNotAllowed,
            };
            return Some((reason, 0, 0));
        }
    }
    if want.cpu_millis > state.cpu_millis {
        return Some((Shortfall::Cpu, want.cpu_millis, state.cpu_millis));
    }
    if want.memory_bytes > state.memory_bytes {
        return Some((Shortfall::Memory, want.memory_bytes, state.memory_bytes));
    }
    if want.ephemeral_storage_bytes > state.ephemeral_storage_bytes {
        return Some((
            Shortfall::EphemeralStorage,
            want.ephemeral_storage_bytes,
            state.ephemeral_storage_bytes,
        ));
    }
    for (class, bytes) in &want.persistent_storage {
        match view.persistent_free(class) {
            None => return Some((Shortfall::NoStorageClass(class.clone()), *bytes, 0)),
            Some(free) if free < *bytes => {
                return Some((Shortfall::PersistentStorage(class.clone()), *bytes, free));
            }
            Some(_) => {}
        }
    }
    let eligible_free = || {
        view.gpus()
            .filter(|(spec, _)| request.gpu_constraint.check(spec).is_ok())
            .map(|(_, free)| free)
    };
    match request.gpu {
        GpuDemand::None => None,
        GpuDemand::Whole(units) => {
            let whole = eligible_free()
                .filter(|&free| free == MILLI_PER_GPU)
                .count() as u64;
            (whole < u64::from(units)).then_some((Shortfall::WholeGpus, u64::from(units), whole))
        }
        GpuDemand::Fraction(milli) => {
            let best = eligible_free().max().unwrap_or(0);
            (best < milli).then_some((Shortfall::GpuFraction, u64::from(milli), u64::from(best)))
        }
    }
}

impl PlacementFailure {
    /// Groups every node's shortfall into classes.
    pub fn explain<'a>(
        request: &ReplicaRequest,
        nodes: impl Iterator<Item = NodeView<'a>>,
    ) -> Self {
        let mut classes: BTreeMap<Shortfall, FailureClass> = BTreeMap::new();
        for view in nodes {
            let Some((reason, need, free)) = node_shortfall(&view, request) else {
                continue;
            };
            let class = classes.entry(reason.clone()).or_insert(FailureClass {
                nodes: 0,
                reason,
                need,
                max_free: 0,
            });
            class.nodes += 1;
            class.max_free = class.max_free.max(free);
        }
        let mut classes: Vec<FailureClass> = classes.into_values().collect();
        classes.sort_by(|a, b| b.nodes.cmp(&a.nodes).then(a.reason.cmp(&b.reason)));
        Self { classes }
    }
}
