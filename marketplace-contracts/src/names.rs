//! Readable names of chain keys: the strings attribute and GPU model keys are hashed from
//! (`region=eu-west`, `nvidia/a100/80Gi/sxm`).
//!
//! The chain stores only keccak256 of those strings. `ProviderRegistry.publishNames` lets
//! anyone publish the strings; the contract hashes each one itself and emits
//! `KeyNamed(key, name)` once per key, so a published name can never belong to another key.
//! [`KeyNames`] is the one map from key to name that every reader builds from those events
//! ([`crate::MarketplaceClient::key_names`]) and extends with strings it already knows (a
//! tenant's own manifest); [`KeyNames::label`] falls back to the hash for unnamed keys.

use std::collections::BTreeMap;

use alloy::primitives::B256;

use crate::order::chain_key;

/// Longest name `publishNames` accepts (`ProviderRegistry.MAX_NAME_LENGTH`): the longest
/// concrete GPU model string, four 64-byte parts and three `/`.
pub const MAX_NAME_LENGTH: usize = 4 * 64 + 3;
/// Names per `publishNames` call (`ProviderRegistry.MAX_NAMES`): one registration's
/// attributes (32) and GPU models (16).
pub const MAX_NAMES_PER_CALL: usize = 32 + 16;

/// Why a string cannot be published as a key's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("names[{index}] is empty")]
    Empty { index: usize },
    #[error("names[{index}] is {length} bytes, above the {max}-byte limit")]
    TooLong {
        index: usize,
        length: usize,
        max: usize,
    },
}

/// Checks the registry's bounds on one name before a transaction would revert on them.
pub fn check_name(index: usize, name: &str) -> Result<(), NameError> {
    match name.len() {
        0 => Err(NameError::Empty { index }),
        length if length > MAX_NAME_LENGTH => Err(NameError::TooLong {
            index,
            length,
            max: MAX_NAME_LENGTH,
        }),
        _ => Ok(()),
    }
}

/// Chain keys and the strings they are keccak256 of. Only verified pairs get in: a name is
/// filed under the hash of its own bytes, whoever supplied it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyNames {
    names: BTreeMap<B256, String>,
}

impl KeyNames {
    pub fn new() -> Self {
        Self::default()
    }

    /// Files `name` under its key (keccak256 of its bytes) and returns the key.
    pub fn insert(&mut self, name: &str) -> B256 {
        let key = chain_key(name);
        self.names.entry(key).or_insert_with(|| name.to_owned());
        key
    }

    /// Files a `KeyNamed` event's pair; false (and nothing filed) when `name` does not hash
    /// to `key`, which the registry never emits but a log from elsewhere could claim.
    pub fn insert_announced(&mut self, key: B256, name: &str) -> bool {
        if chain_key(name) != key {
            return false;
        }
        self.insert(name);
        true
    }

    /// The name of `key`, if known.
    pub fn name(&self, key: &B256) -> Option<&str> {
        self.names.get(key).map(String::as_str)
    }

    /// The name of `key`, or the key in hex when nobody published it.
    pub fn label(&self, key: &B256) -> String {
        self.name(key)
            .map_or_else(|| key.to_string(), ToOwned::to_owned)
    }

    /// Every known key with its name, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&B256, &str)> {
        self.names.iter().map(|(key, name)| (key, name.as_str()))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn extend(&mut self, other: &KeyNames) {
        for (key, name) in &other.names {
            self.names.entry(*key).or_insert_with(|| name.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_filed_under_its_own_hash_only() {
        let mut names = KeyNames::new();
        let eu = names.insert("region=eu-west");
        assert_eq!(eu, chain_key("region=eu-west"));
        assert_eq!(names.name(&eu), Some("region=eu-west"));

        let other = chain_key("region=us-east");
        assert!(!names.insert_announced(other, "nvidia/a100/80Gi/sxm"));
        assert_eq!(names.name(&other), None, "a lying pair is refused");
        assert_eq!(names.label(&other), other.to_string(), "unnamed: the hash");

        let a100 = chain_key("nvidia/a100/80Gi/sxm");
        assert!(names.insert_announced(a100, "nvidia/a100/80Gi/sxm"));
        assert_eq!(names.label(&a100), "nvidia/a100/80Gi/sxm");
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn names_are_checked_against_the_registry_bounds_naming_the_index() {
        assert_eq!(check_name(0, "region=eu-west"), Ok(()));
        assert_eq!(check_name(3, ""), Err(NameError::Empty { index: 3 }));
        let longest = "a".repeat(MAX_NAME_LENGTH);
        assert_eq!(check_name(1, &longest), Ok(()));
        let error = check_name(2, &format!("{longest}a")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "names[2] is 260 bytes, above the 259-byte limit"
        );
    }
}
