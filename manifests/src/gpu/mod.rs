//! GPU model keys and patterns: the one type, parse rule, match rule, canonical form and
//! on-chain key that every crate uses (the SDL, the scheduler, the provider's config, hardware
//! discovery and Kubernetes inventory, the tenant's market views).
//!
//! A **key** names one concrete model, `vendor/model/ram/interface`
//! (`nvidia/a100/80Gi/sxm`); a **pattern** is the same with any parts `*`
//! (`nvidia/a100/*/*`), as an order's allowed models are. A key matches a pattern exactly
//! when replacing some of its parts by `*` gives the pattern: the contract's rule
//! (`marketplace-contracts/CONTRACTS.md`, "GPU models and patterns", and its vector file).
//! On chain both are keccak256 of their canonical string ([`GpuModelKey::chain_key`]).

mod names;
mod product;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha3::{Digest, Keccak256};

pub use names::{GpuAliasError, ResolvedModel, candidate_models, known_models, resolve_model};
pub use product::{GpuProductError, marketed_gib};

use crate::units::{format_gibibytes, parse_binary_bytes};

/// The part of a pattern that matches anything.
pub const WILDCARD: &str = "*";

const GIB: u64 = 1 << 30;

/// The longest part accepted (real names are a few characters; this bounds hostile input).
pub const MAX_PART_LEN: usize = 64;

/// Names of the four parts, in order, as errors name them.
const PART_NAMES: [&str; 4] = ["vendor", "model", "ram", "interface"];

/// How many patterns a key matches: each of its four parts kept or replaced by `*`.
pub const PATTERNS_PER_KEY: u8 = 1 << 4;

/// Why a GPU model key or pattern was rejected. Every variant carries the text as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuKeyError {
    /// Not one to four `/`-separated parts.
    #[error(
        "GPU model `{0}` must be vendor/model/ram/interface (e.g. nvidia/a100/80Gi/sxm), \
         with 1 to 4 parts for a pattern and exactly 4 for a key"
    )]
    Shape(String),
    /// A part is empty, too long, or has characters other than letters, digits and `-._+`.
    #[error("GPU model `{text}`: {part} `{value}` {reason}")]
    Part {
        text: String,
        part: &'static str,
        value: String,
        reason: &'static str,
    },
    /// The RAM part is not a whole number of GiB such as `80Gi` (`0Gi`: size unknown).
    #[error("GPU model `{text}`: ram `{ram}` is not a whole number of GiB such as 80Gi")]
    Ram { text: String, ram: String },
    /// A key (one concrete model) with a `*` part.
    #[error(
        "GPU model `{0}` has a `*` part: a GPU model key names one model \
         (vendor/model/ram/interface, e.g. nvidia/a100/80Gi/sxm); `*` is for patterns"
    )]
    Wildcard(String),
}

/// The four canonical parts; each is lower-case (RAM is `<n>Gi`) or `*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Parts([String; 4]);

/// Ordered as the canonical strings are (maps keyed by models list them as they print).
impl Ord for Parts {
    fn cmp(&self, other: &Parts) -> std::cmp::Ordering {
        self.canonical_bytes().cmp(other.canonical_bytes())
    }
}

impl PartialOrd for Parts {
    fn partial_cmp(&self, other: &Parts) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

fn check_part(text: &str, index: usize, value: &str) -> Result<String, GpuKeyError> {
    let invalid = |reason| GpuKeyError::Part {
        text: text.to_owned(),
        part: PART_NAMES[index],
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("is empty"));
    }
    if value == WILDCARD {
        return Ok(WILDCARD.to_owned());
    }
    if value.len() > MAX_PART_LEN {
        return Err(invalid("is longer than 64 characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
    {
        return Err(invalid(
            "may only hold letters, digits and `-._+` (or be `*` in a pattern)",
        ));
    }
    Ok(value.to_ascii_lowercase())
}

fn ram_part(text: &str, ram: &str) -> Result<String, GpuKeyError> {
    if ram == WILDCARD {
        return Ok(WILDCARD.to_owned());
    }
    let invalid = || GpuKeyError::Ram {
        text: text.to_owned(),
        ram: ram.to_owned(),
    };
    // Binary units only, as in the SDL's `ram`: `80GB` is not a key.
    let bytes = parse_binary_bytes(ram).map_err(|_| invalid())?;
    if !bytes.is_multiple_of(GIB) {
        return Err(invalid());
    }
    Ok(format_gibibytes(bytes))
}

impl Parts {
    /// The bytes of the canonical string, `/` after each part (no allocation).
    fn canonical_bytes(&self) -> impl Iterator<Item = u8> + '_ {
        self.0
            .iter()
            .flat_map(|part| part.bytes().chain(std::iter::once(b'/')))
    }

    /// The one parse rule: `vendor[/model[/ram[/interface]]]`, trimmed, missing trailing parts
    /// `*`, names lower-cased, RAM in whole GiB written `<n>Gi`.
    fn parse(text: &str) -> Result<Parts, GpuKeyError> {
        let trimmed = text.trim();
        if trimmed.len() > 4 * (MAX_PART_LEN + 1) {
            return Err(GpuKeyError::Shape(text.to_owned()));
        }
        let written: Vec<&str> = trimmed.split('/').collect();
        if written.len() > 4 {
            return Err(GpuKeyError::Shape(text.to_owned()));
        }
        let mut parts: [String; 4] = Default::default();
        for (index, part) in parts.iter_mut().enumerate() {
            *part = match written.get(index) {
                None => WILDCARD.to_owned(),
                Some(value) => {
                    let checked = check_part(text, index, value)?;
                    if index == 2 {
                        ram_part(text, value)?
                    } else {
                        checked
                    }
                }
            };
        }
        Ok(Parts(parts))
    }

    fn is_concrete(&self) -> bool {
        self.0.iter().all(|part| part != WILDCARD)
    }

    /// This with the parts in `mask` (bit 0 vendor … bit 3 interface) replaced by `*`.
    fn masked(&self, mask: u8) -> Parts {
        let mut parts = self.0.clone();
        for (index, part) in parts.iter_mut().enumerate() {
            if mask & (1 << index) != 0 {
                *part = WILDCARD.to_owned();
            }
        }
        Parts(parts)
    }

    fn chain_key(&self) -> [u8; 32] {
        Keccak256::digest(self.to_string().as_bytes()).into()
    }
}

impl fmt::Display for Parts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [vendor, model, ram, interface] = &self.0;
        write!(f, "{vendor}/{model}/{ram}/{interface}")
    }
}

/// One concrete GPU model, `vendor/model/ram/interface`, e.g. `nvidia/a100/80Gi/sxm`: what a
/// provider registers and bids, and what the scheduler and pricing key GPUs by.
///
/// Vendor, model and interface are lower-case; RAM is whole GiB written `<n>Gi` (`0Gi` when
/// the size is unknown, as for the openb trace's Alibaba-internal models); no part is
/// `*`. Parsed with [`FromStr`], shown (and serialised) in that canonical form, which is
/// also the string hashed on chain.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GpuModelKey(Parts);

/// An allowed-model pattern: a [`GpuModelKey`] whose parts may be `*` (any), e.g.
/// `nvidia/h100/*/*`. Parsed from 1 to 4 parts (`nvidia/h100` is `nvidia/h100/*/*`) and always
/// shown with four, as on chain.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GpuModelPattern(Parts);

impl GpuModelKey {
    /// A key from its parts, checked and canonicalised as [`FromStr`] does. `ram_bytes` must be
    /// a whole number of GiB.
    pub fn from_parts(
        vendor: &str,
        model: &str,
        ram_bytes: u64,
        interface: &str,
    ) -> Result<GpuModelKey, GpuKeyError> {
        let ram = if ram_bytes.is_multiple_of(GIB) {
            format_gibibytes(ram_bytes)
        } else {
            format!("{ram_bytes}B")
        };
        format!("{vendor}/{model}/{ram}/{interface}").parse()
    }

    /// The vendor, e.g. `nvidia`.
    pub fn vendor(&self) -> &str {
        &self.0.0[0]
    }
    /// The model, e.g. `a100`.
    pub fn model(&self) -> &str {
        &self.0.0[1]
    }
    /// The RAM, e.g. `80Gi`.
    pub fn ram(&self) -> &str {
        &self.0.0[2]
    }
    /// The RAM in bytes.
    pub fn ram_bytes(&self) -> u64 {
        self.ram()
            .strip_suffix("Gi")
            .and_then(|gib| gib.parse::<u64>().ok())
            .and_then(|gib| gib.checked_mul(GIB))
            .unwrap_or(0)
    }
    /// The interface, e.g. `sxm` or `pcie`.
    pub fn interface(&self) -> &str {
        &self.0.0[3]
    }

    /// keccak256 of the canonical string: the key the registry, bids and leases store.
    pub fn chain_key(&self) -> [u8; 32] {
        self.0.chain_key()
    }

    /// The pattern this key becomes with the parts in `mask` (bit 0 vendor, 1 model, 2 RAM,
    /// 3 interface) replaced by `*`; mask 0 is the key itself as a pattern.
    pub fn masked(&self, mask: u8) -> GpuModelPattern {
        GpuModelPattern(self.0.masked(mask))
    }

    /// The [`PATTERNS_PER_KEY`] patterns this key matches, itself first, in mask order.
    pub fn patterns_matched(&self) -> Vec<GpuModelPattern> {
        (0..PATTERNS_PER_KEY)
            .map(|mask| self.masked(mask))
            .collect()
    }

    /// Akash's GPU attribute key, e.g. `vendor/nvidia/model/a100/ram/80Gi/interface/sxm`.
    pub fn akash_attribute_key(&self) -> String {
        self.masked(0).akash_attribute_key()
    }
}

impl GpuModelPattern {
    /// A pattern from its parts; `None` parts are `*`. `ram_bytes` is rounded down to whole
    /// GiB, as Akash names GPU RAM. Fails naming the part that is not a valid name.
    pub fn from_parts(
        vendor: &str,
        model: Option<&str>,
        ram_bytes: Option<u64>,
        interface: Option<&str>,
    ) -> Result<GpuModelPattern, GpuKeyError> {
        let ram = match ram_bytes {
            Some(bytes) if bytes >= GIB => format_gibibytes(bytes),
            Some(bytes) => format!("{bytes}B"),
            None => WILDCARD.to_owned(),
        };
        format!(
            "{vendor}/{}/{ram}/{}",
            model.unwrap_or(WILDCARD),
            interface.unwrap_or(WILDCARD)
        )
        .parse()
    }

    /// The pattern any model of `vendor` matches (`nvidia/*/*/*`).
    pub fn any_of_vendor(vendor: &str) -> Result<GpuModelPattern, GpuKeyError> {
        GpuModelPattern::from_parts(vendor, None, None, None)
    }

    /// The vendor, or `*`.
    pub fn vendor(&self) -> &str {
        &self.0.0[0]
    }
    /// The model, or `*`.
    pub fn model(&self) -> &str {
        &self.0.0[1]
    }
    /// The RAM (`80Gi`), or `*`.
    pub fn ram(&self) -> &str {
        &self.0.0[2]
    }
    /// The interface, or `*`.
    pub fn interface(&self) -> &str {
        &self.0.0[3]
    }

    /// The one match rule: `model` matches when every part of this pattern is `*` or equal to
    /// the model's (equivalently, some mask of the model gives this pattern).
    pub fn matches(&self, model: &GpuModelKey) -> bool {
        self.0
            .0
            .iter()
            .zip(&model.0.0)
            .all(|(wanted, offered)| wanted == WILDCARD || wanted == offered)
    }

    /// The wildcard mask that turns `model` into this pattern, if it matches.
    pub fn mask_for(&self, model: &GpuModelKey) -> Option<u8> {
        (0..PATTERNS_PER_KEY).find(|mask| model.0.masked(*mask) == self.0)
    }

    /// The key this pattern names when no part is `*`.
    pub fn as_key(&self) -> Option<GpuModelKey> {
        self.0.is_concrete().then(|| GpuModelKey(self.0.clone()))
    }

    /// keccak256 of the canonical string: an order's `allowedGpuModels` entry.
    pub fn chain_key(&self) -> [u8; 32] {
        self.0.chain_key()
    }

    /// Akash's GPU attribute key, e.g. `vendor/nvidia/model/a100/ram/80Gi/interface/sxm`
    /// (unspecified RAM and interface are left out; an unspecified model is `*`).
    pub fn akash_attribute_key(&self) -> String {
        let mut key = format!("vendor/{}/model/{}", self.vendor(), self.model());
        if self.ram() != WILDCARD {
            key.push_str("/ram/");
            key.push_str(self.ram());
        }
        if self.interface() != WILDCARD {
            key.push_str("/interface/");
            key.push_str(self.interface());
        }
        key
    }
}

impl From<GpuModelKey> for GpuModelPattern {
    fn from(key: GpuModelKey) -> GpuModelPattern {
        GpuModelPattern(key.0)
    }
}

impl fmt::Display for GpuModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for GpuModelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for GpuModelKey {
    type Err = GpuKeyError;

    /// Reads exactly `vendor/model/ram/interface`, none of them `*`.
    fn from_str(text: &str) -> Result<GpuModelKey, GpuKeyError> {
        if text.trim().split('/').count() != 4 {
            return Err(GpuKeyError::Shape(text.to_owned()));
        }
        let parts = Parts::parse(text)?;
        if !parts.is_concrete() {
            return Err(GpuKeyError::Wildcard(text.to_owned()));
        }
        Ok(GpuModelKey(parts))
    }
}

impl FromStr for GpuModelPattern {
    type Err = GpuKeyError;

    /// Reads `vendor[/model[/ram[/interface]]]`; missing parts are `*`.
    fn from_str(text: &str) -> Result<GpuModelPattern, GpuKeyError> {
        Parts::parse(text).map(GpuModelPattern)
    }
}

macro_rules! serde_as_canonical_string {
    ($type:ty) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_as_canonical_string!(GpuModelKey);
serde_as_canonical_string!(GpuModelPattern);

#[cfg(test)]
mod tests;
