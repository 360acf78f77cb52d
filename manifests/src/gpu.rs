//! Canonical GPU model keys and wildcard matching.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::units::{format_gibibytes, parse_bytes};

/// The part of a key that matches anything.
pub const WILDCARD: &str = "*";

/// A GPU model as `vendor/model/ram/interface`, e.g. `nvidia/a100/80Gi/sxm`.
///
/// Vendor, model and interface are lower-case; RAM is whole gibibytes with the
/// `Gi` suffix. Any part may be `*` (unspecified), which requests use to accept
/// any value; trailing unspecified parts are still written (`nvidia/a100/*/*`).
/// On chain the key is `keccak256` of [`GpuModelKey::to_string`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GpuModelKey {
    vendor: String,
    model: String,
    ram: String,
    interface: String,
}

/// Why a GPU model key string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuKeyError {
    /// Not one to four `/`-separated non-empty parts.
    #[error("GPU model key `{0}` must be vendor/model/ram/interface with 1 to 4 non-empty parts")]
    Shape(String),
    /// The RAM part is not a size such as `80Gi`.
    #[error("GPU RAM `{0}` is not a size such as 80Gi")]
    Ram(String),
}

fn wildcard_or(part: Option<&str>) -> String {
    match part {
        Some(text) if !text.is_empty() => text.to_ascii_lowercase(),
        _ => WILDCARD.to_owned(),
    }
}

impl GpuModelKey {
    /// A key from its parts; `None` parts become `*`. `ram_bytes` is rounded down to whole Gi.
    pub fn new(
        vendor: &str,
        model: Option<&str>,
        ram_bytes: Option<u64>,
        interface: Option<&str>,
    ) -> GpuModelKey {
        GpuModelKey {
            vendor: wildcard_or(Some(vendor)),
            model: wildcard_or(model),
            ram: ram_bytes.map_or_else(|| WILDCARD.to_owned(), format_gibibytes),
            interface: wildcard_or(interface),
        }
    }

    /// Vendor, e.g. `nvidia`.
    pub fn vendor(&self) -> &str {
        &self.vendor
    }
    /// Model, e.g. `a100`, or `*`.
    pub fn model(&self) -> &str {
        &self.model
    }
    /// RAM, e.g. `80Gi`, or `*`.
    pub fn ram(&self) -> &str {
        &self.ram
    }
    /// Interface, `pcie` or `sxm`, or `*`.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    fn parts(&self) -> [&str; 4] {
        [&self.vendor, &self.model, &self.ram, &self.interface]
    }

    /// Whether a GPU `offered` by a provider satisfies this requested key: every part
    /// of the request is `*` or equal to the offered part. An offered `*` part only
    /// satisfies a requested `*`.
    pub fn matches(&self, offered: &GpuModelKey) -> bool {
        self.parts()
            .iter()
            .zip(offered.parts())
            .all(|(requested, offered)| *requested == WILDCARD || *requested == offered)
    }

    /// Akash's GPU attribute key, e.g. `vendor/nvidia/model/a100/ram/80Gi/interface/sxm`
    /// (unspecified RAM and interface are left out; an unspecified model is `*`).
    pub fn akash_attribute_key(&self) -> String {
        let mut key = format!("vendor/{}/model/{}", self.vendor, self.model);
        if self.ram != WILDCARD {
            key.push_str("/ram/");
            key.push_str(&self.ram);
        }
        if self.interface != WILDCARD {
            key.push_str("/interface/");
            key.push_str(&self.interface);
        }
        key
    }
}

impl fmt::Display for GpuModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.vendor, self.model, self.ram, self.interface
        )
    }
}

impl FromStr for GpuModelKey {
    type Err = GpuKeyError;

    /// Reads `vendor[/model[/ram[/interface]]]`; missing parts are `*`.
    fn from_str(text: &str) -> Result<GpuModelKey, GpuKeyError> {
        let parts: Vec<&str> = text.trim().split('/').collect();
        if parts.len() > 4 || parts.iter().any(|part| part.is_empty()) {
            return Err(GpuKeyError::Shape(text.to_owned()));
        }
        let part = |index: usize| parts.get(index).copied();
        let ram = match part(2) {
            None | Some(WILDCARD) => None,
            Some(ram) => Some(parse_bytes(ram).map_err(|_| GpuKeyError::Ram(ram.to_owned()))?),
        };
        let vendor = part(0).ok_or_else(|| GpuKeyError::Shape(text.to_owned()))?;
        Ok(GpuModelKey::new(vendor, part(1), ram, part(3)))
    }
}

impl Serialize for GpuModelKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GpuModelKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> GpuModelKey {
        text.parse().unwrap()
    }

    #[test]
    fn canonical_form_is_lower_case_with_gi_ram() {
        let key = GpuModelKey::new("NVIDIA", Some("A100"), Some(80 << 30), Some("SXM"));
        assert_eq!(key.to_string(), "nvidia/a100/80Gi/sxm");
        assert_eq!(
            key.akash_attribute_key(),
            "vendor/nvidia/model/a100/ram/80Gi/interface/sxm"
        );
        let any = GpuModelKey::new("nvidia", None, None, None);
        assert_eq!(any.to_string(), "nvidia/*/*/*");
        assert_eq!(any.akash_attribute_key(), "vendor/nvidia/model/*");
        let no_ram = GpuModelKey::new("nvidia", Some("h100"), None, Some("pcie"));
        assert_eq!(
            no_ram.akash_attribute_key(),
            "vendor/nvidia/model/h100/interface/pcie"
        );
    }

    #[test]
    fn parsing_normalises_and_round_trips() {
        assert_eq!(
            key("Nvidia/A100/80Gi/SXM").to_string(),
            "nvidia/a100/80Gi/sxm"
        );
        assert_eq!(key("nvidia/a100").to_string(), "nvidia/a100/*/*");
        assert_eq!(key("nvidia/a100/81920Mi").ram(), "80Gi");
        assert_eq!(
            key(&key("nvidia/h100/*/pcie").to_string()),
            key("nvidia/h100/*/pcie")
        );
        assert!(matches!(
            "".parse::<GpuModelKey>(),
            Err(GpuKeyError::Shape(_))
        ));
        assert!(matches!(
            "a/b/c/d/e".parse::<GpuModelKey>(),
            Err(GpuKeyError::Shape(_))
        ));
        assert!(matches!(
            "nvidia//80Gi".parse::<GpuModelKey>(),
            Err(GpuKeyError::Shape(_))
        ));
        assert!(matches!(
            "nvidia/a100/lots".parse::<GpuModelKey>(),
            Err(GpuKeyError::Ram(_))
        ));
    }

    #[test]
    fn wildcards_match_any_offered_part() {
        let offered = key("nvidia/a100/80Gi/sxm");
        assert!(key("nvidia/a100/80Gi/sxm").matches(&offered));
        assert!(key("nvidia/a100/*/*").matches(&offered));
        assert!(key("nvidia/*/80Gi/*").matches(&offered));
        assert!(key("nvidia/*/*/*").matches(&offered));
        assert!(!key("nvidia/h100/*/*").matches(&offered));
        assert!(!key("nvidia/a100/40Gi/*").matches(&offered));
        assert!(!key("nvidia/a100/80Gi/pcie").matches(&offered));
        assert!(!key("amd/*/*/*").matches(&offered));
        // A vague offer does not satisfy a precise request.
        assert!(!key("nvidia/a100/80Gi/sxm").matches(&key("nvidia/a100/*/*")));
    }
}
