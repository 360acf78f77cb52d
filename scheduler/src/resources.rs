//! The resource model: what one replica asks for, and checked arithmetic on it.

use std::collections::BTreeMap;

pub use leasehold_manifests::{GpuModelKey, GpuModelPattern};
use serde::{Deserialize, Serialize};

/// One milli-GPU: a whole GPU is this many.
pub const MILLI_PER_GPU: u32 = 1000;

/// Arithmetic and validation errors of the resource model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("{what} overflows")]
    Overflow { what: &'static str },
    #[error("{what} would go below zero")]
    Underflow { what: &'static str },
    #[error("gpu fraction must be 1..=1000 milli-GPU, got {0}")]
    InvalidGpuFraction(u32),
    #[error("group `{0}` has no replicas")]
    EmptyGroup(String),
}

/// Adds two amounts, naming the resource on overflow.
pub fn add(a: u64, b: u64, what: &'static str) -> Result<u64, ResourceError> {
    a.checked_add(b).ok_or(ResourceError::Overflow { what })
}

/// Subtracts, naming the resource when it would go below zero.
pub fn sub(a: u64, b: u64, what: &'static str) -> Result<u64, ResourceError> {
    a.checked_sub(b).ok_or(ResourceError::Underflow { what })
}

/// Multiplies, naming the resource on overflow.
pub fn mul(a: u64, b: u64, what: &'static str) -> Result<u64, ResourceError> {
    a.checked_mul(b).ok_or(ResourceError::Overflow { what })
}

/// How much GPU one replica needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GpuDemand {
    #[default]
    None,
    /// This many whole, fully free GPUs on one node.
    Whole(u32),
    /// A share of ONE GPU, in milli-GPU, 1..=999.
    Fraction(u32),
}

impl GpuDemand {
    /// Builds a demand from a milli-GPU share; 1000 is one whole GPU.
    pub fn fraction(milli: u32) -> Result<Self, ResourceError> {
        match milli {
            0 => Err(ResourceError::InvalidGpuFraction(milli)),
            MILLI_PER_GPU => Ok(Self::Whole(1)),
            1..MILLI_PER_GPU => Ok(Self::Fraction(milli)),
            _ => Err(ResourceError::InvalidGpuFraction(milli)),
        }
    }

    /// Builds a demand from whole units (0 = no GPU).
    pub fn whole(units: u32) -> Self {
        if units == 0 {
            Self::None
        } else {
            Self::Whole(units)
        }
    }

    /// Total milli-GPU this demand takes.
    pub fn milli(&self) -> Result<u64, ResourceError> {
        match *self {
            Self::None => Ok(0),
            Self::Whole(units) => mul(u64::from(units), u64::from(MILLI_PER_GPU), "gpu milli"),
            Self::Fraction(milli) => Ok(u64::from(milli)),
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Self::None)
    }
}

/// Which GPUs may serve a replica. Empty `models` means any model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct GpuConstraint {
    #[serde(default)]
    pub models: Vec<GpuModelPattern>,
    #[serde(default)]
    pub min_vram_bytes: u64,
    /// Required interface (`pcie`, `sxm`, ...), lower case.
    #[serde(default)]
    pub interface: Option<String>,
}

/// Why a GPU is not eligible under a constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GpuIneligibility {
    ModelNotAllowed,
    VramTooSmall,
    InterfaceMismatch,
}

impl GpuConstraint {
    /// `Ok(())` when the device satisfies the constraint, else the first reason it does not.
    pub fn check(&self, device: &GpuSpec) -> Result<(), GpuIneligibility> {
        if !self.models.is_empty() && !self.models.iter().any(|p| p.matches(&device.model)) {
            return Err(GpuIneligibility::ModelNotAllowed);
        }
        if device.vram_bytes < self.min_vram_bytes {
            return Err(GpuIneligibility::VramTooSmall);
        }
        if let Some(interface) = &self.interface
            && !interface.eq_ignore_ascii_case(&device.interface)
        {
            return Err(GpuIneligibility::InterfaceMismatch);
        }
        Ok(())
    }
}

/// A GPU device's fixed description (its free share lives in the node state).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GpuSpec {
    pub model: GpuModelKey,
    pub vram_bytes: u64,
    pub interface: String,
}

impl GpuSpec {
    /// A spec whose interface is taken from the model key's fourth part.
    pub fn from_key(model: GpuModelKey, vram_bytes: u64) -> Self {
        let interface = model.interface().to_string();
        Self {
            model,
            vram_bytes,
            interface,
        }
    }
}

/// Non-GPU resources, as requested by one replica or held free on a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    #[serde(default)]
    pub ephemeral_storage_bytes: u64,
    /// Persistent storage bytes by storage class (`beta2`, `ssd`, ...).
    #[serde(default)]
    pub persistent_storage: BTreeMap<String, u64>,
}

impl Resources {
    pub fn checked_add(&self, other: &Self) -> Result<Self, ResourceError> {
        let mut persistent_storage = self.persistent_storage.clone();
        for (class, bytes) in &other.persistent_storage {
            let entry = persistent_storage.entry(class.clone()).or_insert(0);
            *entry = add(*entry, *bytes, "persistent storage")?;
        }
        Ok(Self {
            cpu_millis: add(self.cpu_millis, other.cpu_millis, "cpu")?,
            memory_bytes: add(self.memory_bytes, other.memory_bytes, "memory")?,
            ephemeral_storage_bytes: add(
                self.ephemeral_storage_bytes,
                other.ephemeral_storage_bytes,
                "ephemeral storage",
            )?,
            persistent_storage,
        })
    }

    pub fn checked_mul(&self, factor: u64) -> Result<Self, ResourceError> {
        let mut persistent_storage = BTreeMap::new();
        for (class, bytes) in &self.persistent_storage {
            persistent_storage.insert(class.clone(), mul(*bytes, factor, "persistent storage")?);
        }
        Ok(Self {
            cpu_millis: mul(self.cpu_millis, factor, "cpu")?,
            memory_bytes: mul(self.memory_bytes, factor, "memory")?,
            ephemeral_storage_bytes: mul(
                self.ephemeral_storage_bytes,
                factor,
                "ephemeral storage",
            )?,
            persistent_storage,
        })
    }
}

/// What one replica needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct ReplicaRequest {
    pub resources: Resources,
    #[serde(default)]
    pub gpu: GpuDemand,
    #[serde(default)]
    pub gpu_constraint: GpuConstraint,
}

/// `count` identical replicas.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupUnit {
    pub replica: ReplicaRequest,
    pub count: u32,
}

/// A deployment group: every replica of every unit is placed, or none is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupRequest {
    pub name: String,
    pub units: Vec<GroupUnit>,
}

/// Summed demand of a group.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroupTotals {
    pub resources: Resources,
    pub gpu_milli: u64,
    pub replicas: u64,
}

impl GroupRequest {
    pub fn replica_count(&self) -> Result<u64, ResourceError> {
        self.units.iter().try_fold(0u64, |acc, unit| {
            add(acc, u64::from(unit.count), "replica count")
        })
    }

    /// The group's total resources, checked.
    pub fn totals(&self) -> Result<GroupTotals, ResourceError> {
        let mut totals = GroupTotals::default();
        for unit in &self.units {
            let count = u64::from(unit.count);
            totals.resources = totals
                .resources
                .checked_add(&unit.replica.resources.checked_mul(count)?)?;
            let gpu = mul(unit.replica.gpu.milli()?, count, "gpu milli")?;
            totals.gpu_milli = add(totals.gpu_milli, gpu, "gpu milli")?;
            totals.replicas = add(totals.replicas, count, "replica count")?;
        }
        Ok(totals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The constraint applies the one pattern rule (`leasehold_manifests::GpuModelPattern`),
    /// short forms included.
    #[test]
    fn constraints_match_models_with_wildcards_and_short_forms() {
        let a100 = GpuSpec::from_key("NVIDIA/A100/80GI/SXM".parse().unwrap(), 80 << 30);
        assert_eq!(a100.model.to_string(), "nvidia/a100/80Gi/sxm");
        let allowing = |patterns: &[&str]| GpuConstraint {
            models: patterns.iter().map(|p| p.parse().unwrap()).collect(),
            ..GpuConstraint::default()
        };
        for ok in [
            "nvidia/a100/*",
            "nvidia/*",
            "nvidia/a100",
            "*/a100/80gi/sxm",
            "nvidia/a100/80Gi/SXM",
        ] {
            assert_eq!(allowing(&[ok]).check(&a100), Ok(()), "{ok}");
        }
        for no in ["nvidia/h100/*", "amd/*", "nvidia/a100/40gi"] {
            assert_eq!(
                allowing(&[no]).check(&a100),
                Err(GpuIneligibility::ModelNotAllowed),
                "{no}"
            );
        }
        assert_eq!(allowing(&[]).check(&a100), Ok(()));
    }

    #[test]
    fn gpu_fraction_bounds() {
        assert_eq!(GpuDemand::fraction(1000).unwrap(), GpuDemand::Whole(1));
        assert_eq!(GpuDemand::fraction(250).unwrap(), GpuDemand::Fraction(250));
        assert!(GpuDemand::fraction(0).is_err());
        assert!(GpuDemand::fraction(1001).is_err());
    }

    #[test]
    fn totals_overflow_is_an_error_not_a_wrap() {
        let unit = GroupUnit {
            replica: ReplicaRequest {
                resources: Resources {
                    cpu_millis: u64::MAX / 2 + 1,
                    ..Resources::default()
                },
                ..ReplicaRequest::default()
            },
            count: 2,
        };
        let group = GroupRequest {
            name: "web".into(),
            units: vec![unit],
        };
        assert_eq!(group.totals(), Err(ResourceError::Overflow { what: "cpu" }));
        assert_eq!(
            sub(1, 2, "memory"),
            Err(ResourceError::Underflow { what: "memory" })
        );
    }
}
