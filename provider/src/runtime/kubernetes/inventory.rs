//! The cluster as the scheduler sees it: one [`NodeSpec`] per schedulable node,
//! holding what is free for leases (allocatable minus the requests of pods the
//! provider does not account for itself), and a drift report between two readings.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::{Node, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use leasehold_scheduler::cluster::{GpuDevice, NodeSpec};
use leasehold_scheduler::resources::{GpuModelKey, GpuSpec, Resources};

use super::objects::{
    DEFAULT_GPU_PRODUCT_LABEL, GPU_MEMORY_LABEL, GPU_RESOURCE, gpu_model_for_product,
};

/// How to read nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryOptions {
    /// The node label naming the GPU product (GPU feature discovery's by default).
    pub gpu_label: String,
    /// Persistent storage per class the provider offers on each node; clusters
    /// provision volumes dynamically, so the API has no per-node figure for it.
    pub persistent_storage: BTreeMap<String, u64>,
}

impl Default for InventoryOptions {
    fn default() -> Self {
        InventoryOptions {
            gpu_label: DEFAULT_GPU_PRODUCT_LABEL.to_owned(),
            persistent_storage: BTreeMap::new(),
        }
    }
}

/// A node left out of the inventory, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedNode {
    pub node: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterInventory {
    pub nodes: Vec<NodeSpec>,
    pub skipped: Vec<SkippedNode>,
}

/// Amounts of the resources the inventory counts, in nano-units (exact for every
/// quantity the API server emits: `100m`, `1.5`, `16Gi`, `1e9`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Amounts {
    cpu: u128,
    memory: u128,
    ephemeral: u128,
    gpus: u128,
}

const NANO: u128 = 1_000_000_000;

/// A Kubernetes quantity in billionths of its unit; `None` when malformed or beyond
/// u128 (no real quantity is). Precision below a nano-unit is dropped.
pub fn parse_quantity_nanos(text: &str) -> Option<u128> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number = number.strip_prefix('+').unwrap_or(number);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let digits = |part: &str| part.chars().all(|c| c.is_ascii_digit());
    if !digits(whole) || !digits(fraction) {
        return None;
    }
    let mut nanos: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    nanos = nanos.checked_mul(NANO)?;
    let fraction_digits: String = fraction.chars().take(9).collect();
    if !fraction_digits.is_empty() {
        let scale = 10u128.checked_pow(9 - u32::try_from(fraction_digits.len()).ok()?)?;
        nanos = nanos.checked_add(fraction_digits.parse::<u128>().ok()?.checked_mul(scale)?)?;
    }
    let binary = |power: u32| nanos.checked_mul(1u128.checked_shl(power)?);
    let decimal = |exponent: i32| -> Option<u128> {
        if exponent >= 0 {
            nanos.checked_mul(10u128.checked_pow(exponent.unsigned_abs())?)
        } else {
            Some(nanos / 10u128.checked_pow(exponent.unsigned_abs())?)
        }
    };
    match suffix {
        "" => Some(nanos),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        exponent => {
            let exponent = exponent
                .strip_prefix('e')
                .or_else(|| exponent.strip_prefix('E'))?;
            decimal(exponent.parse().ok()?)
        }
    }
}

fn amounts_of(resources: Option<&BTreeMap<String, Quantity>>) -> Amounts {
    let get = |name: &str| {
        resources
            .and_then(|map| map.get(name))
            .and_then(|quantity| parse_quantity_nanos(&quantity.0))
            .unwrap_or(0)
    };
    Amounts {
        cpu: get("cpu"),
        memory: get("memory"),
        ephemeral: get("ephemeral-storage"),
        gpus: get(GPU_RESOURCE),
    }
}

impl Amounts {
    fn plus(self, other: Amounts) -> Amounts {
        Amounts {
            cpu: self.cpu.saturating_add(other.cpu),
            memory: self.memory.saturating_add(other.memory),
            ephemeral: self.ephemeral.saturating_add(other.ephemeral),
            gpus: self.gpus.saturating_add(other.gpus),
        }
    }

    fn max(self, other: Amounts) -> Amounts {
        Amounts {
            cpu: self.cpu.max(other.cpu),
            memory: self.memory.max(other.memory),
            ephemeral: self.ephemeral.max(other.ephemeral),
            gpus: self.gpus.max(other.gpus),
        }
    }

    /// What is left; never below zero (an over-committed node has nothing free).
    fn minus(self, other: Amounts) -> Amounts {
        Amounts {
            cpu: self.cpu.saturating_sub(other.cpu),
            memory: self.memory.saturating_sub(other.memory),
            ephemeral: self.ephemeral.saturating_sub(other.ephemeral),
            gpus: self.gpus.saturating_sub(other.gpus),
        }
    }
}

/// What the scheduler counts a pod as: the larger of its containers' sum and its
/// largest init container, plus the runtime class overhead.
fn pod_requests(pod: &Pod) -> Amounts {
    let Some(spec) = pod.spec.as_ref() else {
        return Amounts::default();
    };
    let requests = |resources: Option<&ResourceRequirements>| {
        amounts_of(resources.and_then(|resources| resources.requests.as_ref()))
    };
    let containers = spec
        .containers
        .iter()
        .map(|container| requests(container.resources.as_ref()))
        .fold(Amounts::default(), Amounts::plus);
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|container| requests(container.resources.as_ref()))
        .fold(Amounts::default(), Amounts::max);
    containers
        .max(init)
        .plus(amounts_of(spec.overhead.as_ref()))
}

fn to_u64(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

fn skip_reason(node: &Node) -> Option<String> {
    if node.spec.as_ref().and_then(|spec| spec.unschedulable) == Some(true) {
        return Some("cordoned".to_owned());
    }
    let ready = node
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|condition| condition.status == "True");
    (!ready).then(|| "not ready".to_owned())
}

/// The model of a node's GPUs from GPU feature discovery's labels: the product
/// (`nvidia.com/gpu.product`, the driver's name with `-` for spaces) and memory
/// (`nvidia.com/gpu.memory`, MiB) through the one product rule the Docker side applies to
/// `nvidia-smi` names ([`GpuModelKey::from_product`]). The table
/// [`GPU_PRODUCTS`](super::objects::GPU_PRODUCTS) only fills in what the rule cannot decide
/// (a product without a memory label). A product neither maps is logged and its GPUs are
/// not offered.
fn gpu_spec(labels: &BTreeMap<String, String>, gpu_label: &str) -> Option<GpuSpec> {
    let product = labels.get(gpu_label)?;
    let memory_mib = labels
        .get(GPU_MEMORY_LABEL)
        .and_then(|mib| mib.trim().parse::<u64>().ok());
    let key = match GpuModelKey::from_product(product, memory_mib) {
        Ok(key) => key,
        Err(error) => match gpu_model_for_product(product) {
            Some(known) => known,
            None => {
                tracing::warn!(
                    product = %product,
                    %error,
                    "GPU product label not mapped to a model; the node's GPUs are not offered"
                );
                return None;
            }
        },
    };
    let vram_bytes = key.ram_bytes();
    Some(GpuSpec::from_key(key, vram_bytes))
}

/// The inventory of `nodes` given every pod bound to them. Pods in `own_namespaces`
/// (the provider's leases) are not subtracted: the daemon's ledger holds those.
pub fn cluster_inventory(
    nodes: &[Node],
    pods: &[Pod],
    own_namespaces: &BTreeSet<String>,
    options: &InventoryOptions,
) -> ClusterInventory {
    let mut used: BTreeMap<&str, Amounts> = BTreeMap::new();
    for pod in pods {
        let phase = pod
            .status
            .as_ref()
            .and_then(|status| status.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        if pod
            .metadata
            .namespace
            .as_ref()
            .is_some_and(|namespace| own_namespaces.contains(namespace))
        {
            continue;
        }
        let Some(node) = pod.spec.as_ref().and_then(|spec| spec.node_name.as_deref()) else {
            continue;
        };
        let entry = used.entry(node).or_default();
        *entry = entry.plus(pod_requests(pod));
    }

    let mut inventory = ClusterInventory::default();
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        if let Some(reason) = skip_reason(node) {
            inventory.skipped.push(SkippedNode { node: name, reason });
            continue;
        }
        let allocatable = amounts_of(
            node.status
                .as_ref()
                .and_then(|status| status.allocatable.as_ref()),
        );
        let free = allocatable.minus(used.get(name.as_str()).copied().unwrap_or_default());
        let free_gpus = u32::try_from(free.gpus / NANO).unwrap_or(u32::MAX);
        let spec = node
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| gpu_spec(labels, &options.gpu_label));
        let gpus = match spec {
            // Device indices are placeholders: on Kubernetes the device plugin picks
            // the physical devices, so only their number and model matter.
            Some(spec) => (0..free_gpus)
                .map(|index| GpuDevice {
                    index,
                    spec: spec.clone(),
                })
                .collect(),
            None => Vec::new(),
        };
        if free_gpus > 0 && gpus.is_empty() {
            tracing::warn!(
                node = %name,
                label = %options.gpu_label,
                "node has GPUs but no product label; its GPUs are not offered"
            );
        }
        inventory.nodes.push(NodeSpec {
            id: name,
            capacity: Resources {
                cpu_millis: to_u64(free.cpu / 1_000_000),
                memory_bytes: to_u64(free.memory / NANO),
                ephemeral_storage_bytes: to_u64(free.ephemeral / NANO),
                persistent_storage: options.persistent_storage.clone(),
            },
            gpus,
        });
    }
    inventory.nodes.sort_by(|a, b| a.id.cmp(&b.id));
    inventory
}

/// How one node changed between two readings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDrift {
    pub node: String,
    pub before: NodeSpec,
    pub after: NodeSpec,
}

/// Differences between two inventories.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DriftReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<NodeDrift>,
}

impl DriftReport {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// Number of nodes that differ.
    pub fn len(&self) -> usize {
        self.added.len() + self.removed.len() + self.changed.len()
    }
}

/// Compares two inventories node by node.
pub fn drift(previous: &[NodeSpec], current: &[NodeSpec]) -> DriftReport {
    let before: BTreeMap<&str, &NodeSpec> = previous
        .iter()
        .map(|node| (node.id.as_str(), node))
        .collect();
    let after: BTreeMap<&str, &NodeSpec> = current
        .iter()
        .map(|node| (node.id.as_str(), node))
        .collect();
    let mut report = DriftReport::default();
    for (id, node) in &after {
        match before.get(id) {
            None => report.added.push((*id).to_owned()),
            Some(old) if old != node => report.changed.push(NodeDrift {
                node: (*id).to_owned(),
                before: (*old).clone(),
                after: (*node).clone(),
            }),
            Some(_) => {}
        }
    }
    report.removed = before
        .keys()
        .filter(|id| !after.contains_key(*id))
        .map(|id| (*id).to_owned())
        .collect();
    report
}

/// Remembers the last inventory, logs drift and counts drifted nodes for `/metrics`.
#[derive(Debug, Default)]
pub struct InventoryTracker {
    previous: Mutex<Option<Vec<NodeSpec>>>,
    drifted_nodes: AtomicU64,
}

impl InventoryTracker {
    /// Records `current`; the report compares it with the previous reading (empty on
    /// the first).
    pub fn observe(&self, current: &[NodeSpec]) -> DriftReport {
        let mut previous = self
            .previous
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let report = previous
            .as_deref()
            .map(|previous| drift(previous, current))
            .unwrap_or_default();
        *previous = Some(current.to_vec());
        if !report.is_empty() {
            self.drifted_nodes
                .fetch_add(report.len() as u64, Ordering::Relaxed);
            tracing::warn!(
                added = ?report.added,
                removed = ?report.removed,
                changed = ?report.changed.iter().map(|d| d.node.as_str()).collect::<Vec<_>>(),
                "cluster inventory drifted"
            );
        }
        report
    }

    /// Nodes found added, removed or changed since the tracker started (a counter).
    pub fn drifted_nodes_total(&self) -> u64 {
        self.drifted_nodes.load(Ordering::Relaxed)
    }
}
