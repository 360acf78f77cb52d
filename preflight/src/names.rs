//! Names for the keccak256 keys the chain stores, and the GPU models and patterns behind them.

use std::collections::HashMap;

use alloy::primitives::B256;
use leasehold_contracts::KeyNames;
use leasehold_manifests::Group;
use leasehold_scheduler::{GpuModelKey, GpuModelPattern};

/// A long hex string shortened to its first 6 and last 4 characters, for keys nobody named.
pub fn short_hex(text: &str) -> String {
    if text.len() <= 14 {
        return text.to_owned();
    }
    let head = text.get(..6).unwrap_or(text);
    let tail = text.get(text.len().saturating_sub(4)..).unwrap_or_default();
    format!("{head}…{tail}")
}

/// An on-chain key with the string it is the hash of (`None`: nobody named it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NamedKey {
    pub key: B256,
    pub name: Option<String>,
}

/// Human names for on-chain keys, published on chain (`KeyNamed`) or learned from manifests, and
/// the GPU models and patterns behind GPU keys.
///
/// GPU keys are recovered by hashing candidates: every model built from known parts and the
/// parts the manifest mentions (`leasehold_manifests::candidate_models`: a registered
/// `nvidia/rtx5080/16Gi/pcie` is recognised when the SDL asks for `rtx5080`), with the 16
/// patterns each matches. A model recovered this way is then matched by the one rule
/// (`GpuModelPattern::matches`, the contract's), so any pattern it matches on chain is
/// recovered too. A model no candidate hashes to is a `stand_in`: only the chain can say
/// which wildcard patterns it matches (see [`crate::explain`] and [`crate::order_for_bids`]).
#[derive(Debug, Clone)]
pub struct Names {
    names: HashMap<B256, String>,
    gpu_models: HashMap<B256, GpuModelKey>,
    /// The manifest's patterns and those the known models match.
    gpu_patterns: HashMap<B256, GpuModelPattern>,
    /// Every pattern any candidate model matches, hashed only when an entry is not in
    /// `gpu_patterns` (tens of thousands of hashes).
    every_gpu_pattern: std::sync::OnceLock<HashMap<B256, GpuModelPattern>>,
}

impl Default for Names {
    fn default() -> Self {
        Self::with_gpu_patterns(&[])
    }
}

fn chain_key_of(key: [u8; 32]) -> B256 {
    B256::from(key)
}

impl Names {
    /// Every attribute and GPU model string a set of groups mentions.
    pub fn from_groups(groups: &[Group]) -> Self {
        let mentioned: Vec<GpuModelPattern> = groups
            .iter()
            .flat_map(|group| &group.units)
            .flat_map(|unit| unit.resources.gpu.models.iter().cloned())
            .collect();
        let mut names = Self::with_gpu_patterns(&mentioned);
        for group in groups {
            for attribute in &group.requirements.attributes {
                names.learn(&format!("{}={}", attribute.key, attribute.value));
            }
        }
        names
    }

    fn with_gpu_patterns(mentioned: &[GpuModelPattern]) -> Self {
        let gpu_models: HashMap<B256, GpuModelKey> =
            leasehold_manifests::candidate_models(mentioned)
                .into_iter()
                .map(|model| (chain_key_of(model.chain_key()), model))
                .collect();
        let gpu_patterns = leasehold_manifests::known_models()
            .iter()
            .flat_map(GpuModelKey::patterns_matched)
            .chain(mentioned.iter().cloned())
            .map(|pattern| (chain_key_of(pattern.chain_key()), pattern))
            .collect();
        Names {
            names: HashMap::new(),
            gpu_models,
            gpu_patterns,
            every_gpu_pattern: std::sync::OnceLock::new(),
        }
    }

    pub fn learn(&mut self, text: &str) {
        self.names
            .insert(leasehold_contracts::chain_key(text), text.to_owned());
    }

    /// Adds the names published on chain (`KeyNamed`, each verified against its key). A
    /// published GPU model also becomes a model the scheduler can match by the rule, where
    /// it would otherwise be a `stand_in` when no candidate hashes to it.
    pub fn with_published(mut self, published: &KeyNames) -> Self {
        for (key, name) in published.iter() {
            self.names.entry(*key).or_insert_with(|| name.to_owned());
            if let Ok(model) = name.parse::<GpuModelKey>()
                && chain_key_of(model.chain_key()) == *key
            {
                self.gpu_models.entry(*key).or_insert(model);
            }
        }
        // A pattern table built before these models were known would miss theirs.
        self.every_gpu_pattern = std::sync::OnceLock::new();
        self
    }

    /// The string `key` is the hash of, when known (published, in the manifest, or a
    /// recovered GPU model or pattern).
    pub fn known(&self, key: &B256) -> Option<String> {
        self.names
            .get(key)
            .cloned()
            .or_else(|| self.gpu_patterns.get(key).map(ToString::to_string))
            .or_else(|| self.gpu_models.get(key).map(ToString::to_string))
    }

    /// The name, or the short hex of the key.
    pub fn name(&self, key: &B256) -> String {
        self.known(key)
            .unwrap_or_else(|| short_hex(&key.to_string()))
    }

    /// The key with its name, as `--output json` shows keys.
    pub fn named(&self, key: &B256) -> NamedKey {
        NamedKey {
            key: *key,
            name: self.known(key),
        }
    }

    /// The GPU model behind an on-chain model key, or its `stand_in`.
    pub fn gpu_model(&self, key: &B256) -> GpuModelKey {
        self.gpu_models
            .get(key)
            .cloned()
            .unwrap_or_else(|| stand_in(key))
    }

    /// The pattern behind an order's allowed-model key; an unknown one is its model
    /// `stand_in` as a pattern, which (as on chain, mask 0) only that key matches.
    pub fn gpu_pattern(&self, key: &B256) -> GpuModelPattern {
        self.gpu_patterns
            .get(key)
            .or_else(|| self.every_gpu_pattern().get(key))
            .cloned()
            .unwrap_or_else(|| stand_in(key).into())
    }

    fn every_gpu_pattern(&self) -> &HashMap<B256, GpuModelPattern> {
        self.every_gpu_pattern.get_or_init(|| {
            self.gpu_models
                .values()
                .flat_map(GpuModelKey::patterns_matched)
                .map(|pattern| (chain_key_of(pattern.chain_key()), pattern))
                .collect()
        })
    }
}

/// The vendor part of a `stand_in`.
const STAND_IN_VENDOR: &str = "chain";

/// A model key no candidate hashes to stands in for itself inside the scheduler as
/// `chain/<64 hex digits>/0Gi/key`: a valid key (so room and bids stay keyed by it) that the
/// pattern of the same key matches and no recovered pattern does.
pub(crate) fn stand_in(key: &B256) -> GpuModelKey {
    format!("{STAND_IN_VENDOR}/{}/0Gi/key", alloy::hex::encode(key))
        .parse()
        .unwrap_or_else(|_| unreachable!("64 hex digits are a valid model part"))
}

/// The on-chain key a scheduler-side model or pattern stands for.
pub(crate) fn key_of(pattern: &GpuModelPattern) -> B256 {
    match (pattern.vendor() == STAND_IN_VENDOR)
        .then(|| pattern.model().parse::<B256>().ok())
        .flatten()
    {
        Some(key) => key,
        None => chain_key_of(pattern.chain_key()),
    }
}

pub(crate) fn is_stand_in(model: &GpuModelKey) -> bool {
    model.vendor() == STAND_IN_VENDOR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hex_keeps_both_ends() {
        assert_eq!(short_hex("0x1234567890abcdef"), "0x1234…cdef");
        assert_eq!(short_hex("0x12"), "0x12");
    }
}
