//! What a provider registers on chain and how that registration drifts from what it
//! could register now.
//!
//! One host registers its detected (or configured) hardware; a Kubernetes provider
//! registers the sum of its cluster's schedulable nodes as the daemon reads them
//! ([`crate::runtime::kubernetes::inventory::cluster_inventory`]: allocatable minus the
//! requests of pods that are not the provider's leases), within the operator's
//! [`CapacityLimits`]. The daemon compares that with the on-chain registration
//! ([`registration_drift`]) and, when asked to, sends the update itself, never below
//! what running leases hold ([`shrinks_below_allocated`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::B256;
use leasehold_contracts::{GpuCapacity, ProviderInfo, Resources};
use leasehold_manifests::GpuModelKey;
use leasehold_scheduler::NodeSpec;

use crate::deployment::gpu_model_key;
use crate::hardware::{Hardware, HardwareOverrides};

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapacityError {
    #[error("the cluster's {what} overflows when summed over its nodes")]
    Overflow { what: &'static str },
    #[error("--max-gpus `{0}`: expected MODEL=COUNT, e.g. nvidia/a100/80Gi/sxm=2")]
    GpuLimit(String),
    #[error("--max-gpus `{text}`: {reason}")]
    GpuLimitModel { text: String, reason: String },
}

/// Capacity in the registry's units, GPUs counted per model key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capacity {
    pub resources: Resources,
    pub gpus: BTreeMap<GpuModelKey, u32>,
}

impl Capacity {
    /// One host's hardware, GPUs grouped by model.
    pub fn of_hardware(hardware: &Hardware) -> Self {
        let mut gpus: BTreeMap<GpuModelKey, u32> = BTreeMap::new();
        for gpu in &hardware.gpus {
            let count = gpus.entry(gpu.model_key.clone()).or_insert(0);
            *count = count.saturating_add(1);
        }
        Capacity {
            resources: Resources {
                cpu_milli: hardware.cpu_millis,
                memory_mib: hardware.memory_mib,
                storage_mib: hardware.storage_mib,
            },
            gpus,
        }
    }

    /// The sum of a cluster's nodes (memory and storage rounded down to whole MiB
    /// after summing, so nothing is offered twice).
    pub fn of_cluster(nodes: &[NodeSpec]) -> Result<Self, CapacityError> {
        let mut cpu: u64 = 0;
        let mut memory: u64 = 0;
        let mut storage: u64 = 0;
        let mut gpus: BTreeMap<GpuModelKey, u32> = BTreeMap::new();
        let overflow = |what| CapacityError::Overflow { what };
        for node in nodes {
            cpu = cpu
                .checked_add(node.capacity.cpu_millis)
                .ok_or(overflow("cpu"))?;
            memory = memory
                .checked_add(node.capacity.memory_bytes)
                .ok_or(overflow("memory"))?;
            storage = storage
                .checked_add(node.capacity.ephemeral_storage_bytes)
                .ok_or(overflow("ephemeral storage"))?;
            for device in &node.gpus {
                let count = gpus.entry(device.spec.model.clone()).or_insert(0);
                *count = count.checked_add(1).ok_or(overflow("GPU count"))?;
            }
        }
        Ok(Capacity {
            resources: Resources {
                cpu_milli: cpu,
                memory_mib: memory / MIB,
                storage_mib: storage / MIB,
            },
            gpus,
        })
    }

    /// This capacity, each amount at most its limit.
    pub fn limited(mut self, limits: &CapacityLimits) -> Self {
        let cap = |value: &mut u64, limit: Option<u64>| {
            if let Some(limit) = limit {
                *value = (*value).min(limit);
            }
        };
        cap(&mut self.resources.cpu_milli, limits.cpu_millis);
        cap(&mut self.resources.memory_mib, limits.memory_mib);
        cap(&mut self.resources.storage_mib, limits.storage_mib);
        for (model, count) in &mut self.gpus {
            if let Some(limit) = limits.gpus.get(model) {
                *count = (*count).min(*limit);
            }
        }
        self.gpus.retain(|_, count| *count > 0);
        self
    }

    /// The canonical names of the GPU models, the strings their keys are hashed from.
    pub fn gpu_model_names(&self) -> Vec<String> {
        self.gpus.keys().map(ToString::to_string).collect()
    }

    /// The registry's GPU list: one entry per model, keyed by keccak256 of its name.
    pub fn gpu_capacity(&self) -> Vec<GpuCapacity> {
        self.gpus
            .iter()
            .map(|(model, count)| GpuCapacity {
                model_key: gpu_model_key(model),
                count: *count,
            })
            .collect()
    }
}

/// Upper limits on what a cluster provider registers: the config's `[hardware]`
/// `cpu_millis`, `memory_mib`, `storage_mib`, overridden by `register`/`update` flags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapacityLimits {
    pub cpu_millis: Option<u64>,
    pub memory_mib: Option<u64>,
    pub storage_mib: Option<u64>,
    /// Per model; 0 leaves the model out.
    pub gpus: BTreeMap<GpuModelKey, u32>,
}

impl CapacityLimits {
    /// The config's hardware overrides read as limits.
    pub fn from_config(hardware: &HardwareOverrides) -> Self {
        CapacityLimits {
            cpu_millis: hardware.cpu_millis,
            memory_mib: hardware.memory_mib,
            storage_mib: hardware.storage_mib,
            gpus: BTreeMap::new(),
        }
    }

    /// `self` with every limit `other` sets replacing its own.
    pub fn overridden_by(mut self, other: &CapacityLimits) -> Self {
        self.cpu_millis = other.cpu_millis.or(self.cpu_millis);
        self.memory_mib = other.memory_mib.or(self.memory_mib);
        self.storage_mib = other.storage_mib.or(self.storage_mib);
        for (model, count) in &other.gpus {
            self.gpus.insert(model.clone(), *count);
        }
        self
    }
}

/// Reads one `--max-gpus MODEL=COUNT` flag.
pub fn parse_gpu_limit(text: &str) -> Result<(GpuModelKey, u32), CapacityError> {
    let (model, count) = text
        .split_once('=')
        .ok_or_else(|| CapacityError::GpuLimit(text.to_owned()))?;
    let count = count
        .trim()
        .parse()
        .map_err(|_| CapacityError::GpuLimit(text.to_owned()))?;
    let model = model.trim();
    if model.is_empty() {
        return Err(CapacityError::GpuLimit(text.to_owned()));
    }
    let model = model
        .parse::<GpuModelKey>()
        .map_err(|error| CapacityError::GpuLimitModel {
            text: text.to_owned(),
            reason: error.to_string(),
        })?;
    Ok((model, count))
}

/// One resource whose registration differs from what the provider could register now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceDrift {
    /// `cpu_milli`, `memory_mib`, `storage_mib`, or `gpu/<model>` (`gpu/0x<key>` for a
    /// registered model this provider no longer has).
    pub resource: String,
    pub registered: u64,
    pub available: u64,
    /// What running leases hold of it on chain.
    pub allocated: u64,
}

impl ResourceDrift {
    /// `available - registered`, the value of the drift gauge.
    pub fn difference(&self) -> i128 {
        i128::from(self.available) - i128::from(self.registered)
    }
}

impl std::fmt::Display for ResourceDrift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: registered {}, available {} (leases hold {})",
            self.resource, self.registered, self.available, self.allocated
        )
    }
}

impl ResourceDrift {
    pub fn differs(&self) -> bool {
        self.registered != self.available
    }
}

/// The resources, GPU models included, whose registration differs from what could be
/// registered now.
pub fn registration_drift(available: &Capacity, registration: &ProviderInfo) -> Vec<ResourceDrift> {
    compare_registration(available, registration)
        .into_iter()
        .filter(ResourceDrift::differs)
        .collect()
}

/// The resources an update to `available` would take below what leases hold (the
/// registry refuses those with `CapacityBelowAllocated`).
pub fn shrinks_below_allocated(
    available: &Capacity,
    registration: &ProviderInfo,
) -> Vec<ResourceDrift> {
    compare_registration(available, registration)
        .into_iter()
        .filter(|drift| drift.available < drift.allocated)
        .collect()
}

/// Every resource compared: cpu, memory, storage, then each GPU model either side has.
pub fn compare_registration(
    available: &Capacity,
    registration: &ProviderInfo,
) -> Vec<ResourceDrift> {
    let (wanted, registered, allocated) = (
        &available.resources,
        &registration.capacity,
        &registration.allocated,
    );
    let mut rows = vec![
        ResourceDrift {
            resource: "cpu_milli".into(),
            registered: registered.cpu_milli,
            available: wanted.cpu_milli,
            allocated: allocated.cpu_milli,
        },
        ResourceDrift {
            resource: "memory_mib".into(),
            registered: registered.memory_mib,
            available: wanted.memory_mib,
            allocated: allocated.memory_mib,
        },
        ResourceDrift {
            resource: "storage_mib".into(),
            registered: registered.storage_mib,
            available: wanted.storage_mib,
            allocated: allocated.storage_mib,
        },
    ];
    let mut on_chain: BTreeMap<B256, (u32, u32)> = registration
        .gpus
        .iter()
        .map(|gpu| (gpu.model_key, (gpu.capacity, gpu.allocated)))
        .collect();
    for (model, count) in &available.gpus {
        let (registered, allocated) = on_chain.remove(&gpu_model_key(model)).unwrap_or((0, 0));
        rows.push(ResourceDrift {
            resource: format!("gpu/{model}"),
            registered: registered.into(),
            available: (*count).into(),
            allocated: allocated.into(),
        });
    }
    for (key, (registered, allocated)) in on_chain {
        rows.push(ResourceDrift {
            resource: format!("gpu/{key}"),
            registered: registered.into(),
            available: 0,
            allocated: allocated.into(),
        });
    }
    rows
}

/// The daemon's view of its registration: the last comparison (for `/metrics`) and
/// when it last tried to re-sync.
#[derive(Debug, Default)]
pub struct RegistrationWatch {
    /// Resource -> available minus registered, from the last comparison.
    drift: Mutex<BTreeMap<String, i128>>,
    last_resync: Mutex<Option<Instant>>,
    resyncs: AtomicU64,
    refusals: AtomicU64,
}

impl RegistrationWatch {
    /// Records a comparison ([`compare_registration`]).
    pub fn record(&self, rows: &[ResourceDrift]) {
        *lock(&self.drift) = rows
            .iter()
            .map(|row| (row.resource.clone(), row.difference()))
            .collect();
    }

    /// Resource -> available minus registered; empty before the first comparison.
    pub fn drift(&self) -> BTreeMap<String, i128> {
        lock(&self.drift).clone()
    }

    /// Whether a re-sync may be sent at `now`; if so, `now` counts as the last attempt,
    /// so a failing update is not retried before `interval` either.
    pub fn try_start_resync(&self, interval: Duration, now: Instant) -> bool {
        let mut last = lock(&self.last_resync);
        let due = last.is_none_or(|last| now.saturating_duration_since(last) >= interval);
        if due {
            *last = Some(now);
        }
        due
    }

    pub fn resynced(&self) {
        self.resyncs.fetch_add(1, Ordering::Relaxed);
    }

    pub fn refused(&self) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Registration updates the daemon sent itself.
    pub fn resyncs_total(&self) -> u64 {
        self.resyncs.load(Ordering::Relaxed)
    }

    /// Re-syncs refused because the cluster shrank below what leases hold.
    pub fn refusals_total(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{Address, U256};
    use leasehold_contracts::{GpuState, ProviderStatus};
    use leasehold_scheduler::{GpuDevice, GpuSpec};

    const A100: &str = "nvidia/a100/80Gi/sxm";

    fn a100() -> GpuModelKey {
        A100.parse().unwrap()
    }

    fn node(id: &str, cpu_millis: u64, memory_mib: u64, gpus: u32) -> NodeSpec {
        let key = a100();
        NodeSpec {
            id: id.into(),
            capacity: leasehold_scheduler::Resources {
                cpu_millis,
                memory_bytes: memory_mib * MIB,
                ephemeral_storage_bytes: 512 * MIB + 1,
                persistent_storage: BTreeMap::new(),
            },
            gpus: (0..gpus)
                .map(|index| GpuDevice {
                    index,
                    spec: GpuSpec::from_key(key.clone(), 80 * 1024 * MIB),
                })
                .collect(),
        }
    }

    fn registration(
        capacity: Resources,
        allocated: Resources,
        gpus: Vec<GpuState>,
    ) -> ProviderInfo {
        ProviderInfo {
            address: Address::ZERO,
            status: ProviderStatus::Active,
            stake: U256::ZERO,
            unbonding_ends: 0,
            active_leases: 0,
            endpoint: String::new(),
            gateway_cert_sha256: alloy::primitives::B256::repeat_byte(0xce),
            attributes: Vec::new(),
            capacity,
            allocated,
            gpus,
            deliveries_confirmed: 0,
            deliveries_failed: 0,
            locked_bonds: U256::ZERO,
        }
    }

    #[test]
    fn a_cluster_registers_the_sum_of_its_nodes_within_the_limits() {
        let nodes = [node("a", 8_000, 16_384, 2), node("b", 4_000, 8_192, 1)];
        let capacity = Capacity::of_cluster(&nodes).unwrap();
        assert_eq!(
            capacity.resources,
            Resources {
                cpu_milli: 12_000,
                memory_mib: 24_576,
                // 2 × (512 MiB + 1 byte) rounds down once, after the sum.
                storage_mib: 1_024,
            }
        );
        assert_eq!(capacity.gpus, BTreeMap::from([(a100(), 3)]));

        let limits = CapacityLimits::from_config(&HardwareOverrides {
            cpu_millis: Some(10_000),
            memory_mib: Some(1_000_000),
            ..HardwareOverrides::default()
        })
        .overridden_by(&CapacityLimits {
            cpu_millis: Some(6_000),
            gpus: BTreeMap::from([parse_gpu_limit("NVIDIA/A100/80Gi/SXM=0").unwrap()]),
            ..CapacityLimits::default()
        });
        let limited = capacity.limited(&limits);
        assert_eq!(
            limited.resources.cpu_milli, 6_000,
            "the flag wins over the config"
        );
        assert_eq!(limited.resources.memory_mib, 24_576, "a limit never adds");
        assert!(limited.gpus.is_empty(), "a model limited to 0 is left out");
    }

    #[test]
    fn a_resync_is_sent_at_most_once_per_interval() {
        let watch = RegistrationWatch::default();
        let start = Instant::now();
        let interval = Duration::from_secs(600);
        assert!(watch.try_start_resync(interval, start));
        assert!(!watch.try_start_resync(interval, start + Duration::from_secs(599)));
        assert!(watch.try_start_resync(interval, start + interval));
    }

    #[test]
    fn bad_gpu_limits_name_the_expected_form() {
        for bad in ["a100", "=2", "nvidia/a100=lots"] {
            let error = parse_gpu_limit(bad).unwrap_err().to_string();
            assert!(error.contains("MODEL=COUNT"), "{error}");
        }
        let error = parse_gpu_limit("nvidia/a100=2").unwrap_err().to_string();
        assert!(error.contains("vendor/model/ram/interface"), "{error}");
    }

    #[test]
    fn drift_names_each_differing_resource_and_refuses_shrinking_under_leases() {
        let available = Capacity {
            resources: Resources {
                cpu_milli: 2_000,
                memory_mib: 4_096,
                storage_mib: 100,
            },
            gpus: BTreeMap::from([(a100(), 1)]),
        };
        let gone = gpu_model_key(&"nvidia/h100/80Gi/sxm".parse().unwrap());
        let info = registration(
            Resources {
                cpu_milli: 4_000,
                memory_mib: 4_096,
                storage_mib: 100,
            },
            Resources {
                cpu_milli: 3_000,
                memory_mib: 0,
                storage_mib: 0,
            },
            vec![
                GpuState {
                    model_key: gpu_model_key(&a100()),
                    capacity: 1,
                    allocated: 0,
                },
                GpuState {
                    model_key: gone,
                    capacity: 2,
                    allocated: 0,
                },
            ],
        );
        let drift = registration_drift(&available, &info);
        let names: Vec<&str> = drift.iter().map(|d| d.resource.as_str()).collect();
        assert_eq!(names, ["cpu_milli".to_owned(), format!("gpu/{gone}")]);
        assert_eq!(drift[0].difference(), -2_000);
        assert_eq!(
            drift[0].to_string(),
            "cpu_milli: registered 4000, available 2000 (leases hold 3000)"
        );
        let below = shrinks_below_allocated(&available, &info);
        assert_eq!(below.len(), 1);
        assert_eq!(below[0].resource, "cpu_milli");

        let same = registration(
            available.resources,
            Resources::default(),
            vec![GpuState {
                model_key: gpu_model_key(&a100()),
                capacity: 1,
                allocated: 1,
            }],
        );
        assert!(registration_drift(&available, &same).is_empty());
        assert!(shrinks_below_allocated(&available, &same).is_empty());
    }
}
