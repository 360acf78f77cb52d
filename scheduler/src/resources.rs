//! The resource model: what one replica asks for, and checked arithmetic on it.

use std::collections::BTreeMap;
use std::fmt;

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
    #[error("gpu model key `{key}`: {reason}")]
    InvalidModelKey { key: String, reason: &'static str },
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

/// Lower-cases a key or pattern, except the RAM unit, which is written `Gi` as in
/// the manifests crate's canonical keys (`nvidia/a100/80Gi/sxm`): on chain a key is
/// the keccak256 of this exact string.
fn canonical(text: &str) -> String {
    text.trim()
        .split('/')
        .enumerate()
        .map(|(index, part)| {
            let lowered = part.to_ascii_lowercase();
            match lowered.strip_suffix("gi") {
                Some(size) if index == 2 => format!("{size}Gi"),
                _ => lowered,
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A canonical GPU model key: `vendor/model/ram/interface`, lower case but for the
/// RAM unit, e.g. `nvidia/a100/80Gi/sxm`. Requests use [`ModelPattern`] instead.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GpuModelKey(String);

impl GpuModelKey {
    /// Parses and lower-cases a key; it must have exactly four non-empty, non-wildcard parts.
    pub fn parse(key: &str) -> Result<Self, ResourceError> {
        let lowered = canonical(key);
        let parts: Vec<&str> = lowered.split('/').collect();
        let invalid = |reason| ResourceError::InvalidModelKey {
            key: key.to_string(),
            reason,
        };
        if parts.len() != 4 {
            return Err(invalid("expected vendor/model/ram/interface"));
        }
        if parts.iter().any(|part| part.is_empty()) {
            return Err(invalid("empty part"));
        }
        if parts.contains(&"*") {
            return Err(invalid(
                "a model key cannot contain `*` (only requests can)",
            ));
        }
        Ok(Self(lowered))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn part(&self, index: usize) -> &str {
        self.0.split('/').nth(index).unwrap_or("")
    }

    pub fn vendor(&self) -> &str {
        self.part(0)
    }
    pub fn model(&self) -> &str {
        self.part(1)
    }
    pub fn ram(&self) -> &str {
        self.part(2)
    }
    pub fn interface(&self) -> &str {
        self.part(3)
    }
}

impl TryFrom<String> for GpuModelKey {
    type Error = ResourceError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<GpuModelKey> for String {
    fn from(value: GpuModelKey) -> Self {
        value.0
    }
}

impl fmt::Display for GpuModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An allowed-model pattern from a request: up to four `/` parts, each a literal or `*`;
/// missing trailing parts match anything (`nvidia/a100` == `nvidia/a100/*/*`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelPattern(String);

impl ModelPattern {
    pub fn parse(pattern: &str) -> Result<Self, ResourceError> {
        let lowered = canonical(pattern);
        let invalid = |reason| ResourceError::InvalidModelKey {
            key: pattern.to_string(),
            reason,
        };
        let parts: Vec<&str> = lowered.split('/').collect();
        if parts.len() > 4 {
            return Err(invalid("more than four parts"));
        }
        if parts.iter().any(|part| part.is_empty()) {
            return Err(invalid("empty part"));
        }
        Ok(Self(lowered))
    }

    pub fn matches(&self, key: &GpuModelKey) -> bool {
        self.0
            .split('/')
            .zip(key.as_str().split('/'))
            .all(|(want, have)| want == "*" || want == have)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ModelPattern {
    type Error = ResourceError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ModelPattern> for String {
    fn from(value: ModelPattern) -> Self {
        value.0
    }
}

impl fmt::Display for ModelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
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
    pub models: Vec<ModelPattern>,
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

    fn key(text: &str) -> GpuModelKey {
        GpuModelKey::parse(text).unwrap()
    }

    #[test]
    fn patterns_match_with_wildcards_and_short_forms() {
        let a100 = key("nvidia/a100/80Gi/sxm");
        assert_eq!(a100.as_str(), "nvidia/a100/80Gi/sxm");
        assert_eq!(key("NVIDIA/A100/80GI/SXM"), a100);
        for ok in [
            "nvidia/a100/*",
            "nvidia/*",
            "nvidia/a100",
            "*/a100/80gi/sxm",
            "nvidia/a100/80Gi/SXM",
        ] {
            assert!(ModelPattern::parse(ok).unwrap().matches(&a100), "{ok}");
        }
        for no in ["nvidia/h100/*", "amd/*", "nvidia/a100/40gi"] {
            assert!(!ModelPattern::parse(no).unwrap().matches(&a100), "{no}");
        }
        assert!(GpuModelKey::parse("nvidia/a100").is_err());
        assert!(GpuModelKey::parse("nvidia/*/80gi/sxm").is_err());
        assert!(ModelPattern::parse("a/b/c/d/e").is_err());
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
