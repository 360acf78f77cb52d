//! Canonical GPU model keys and wildcard matching.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::units::{format_gibibytes, parse_binary_bytes};

/// The part of a key that matches anything.
pub const WILDCARD: &str = "*";

/// A GPU model as `vendor/model/ram/interface`, e.g. `nvidia/a100/80Gi/sxm`.
///
/// Vendor, model and interface are lower-case; RAM is whole gibibytes with the
/// `Gi` suffix. Any part may be `*` (unspecified), which requests use to accept
/// any value; trailing unspecified parts are still written (`nvidia/a100/*/*`).
/// On chain the key is `keccak256` of its [`Display`](fmt::Display) form.
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

/// A model name in Akash's alias style (`a100-80gb`, `h100-sxm`) that names a RAM size or an
/// interface which the SDL's own `ram`/`interface` contradicts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "GPU model `{written}` names {what} `{named}` but the SDL says `{given}`; \
     write `model: {canonical}` with `{field}: {named}`"
)]
pub struct GpuAliasError {
    pub written: String,
    pub canonical: String,
    pub what: &'static str,
    pub field: &'static str,
    pub named: String,
    pub given: String,
}

/// A model as written in an SDL, resolved to its canonical parts: the name lower-cased (Akash
/// compares models case-insensitively) and Akash-style suffixes moved to their own parts:
/// `a100-80gb` → model `a100`, RAM 80 GiB; `h100-sxm` / `h100-pcie` → interface; both in any
/// order (`a100-sxm4-80gb`; `sxm4`/`sxm5` are `sxm`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    pub model: String,
    pub ram_bytes: Option<u64>,
    pub interface: Option<String>,
}

const GIB: u64 = 1 << 30;

fn ram_suffix(part: &str) -> Option<u64> {
    let digits = part
        .strip_suffix("gb")
        .or_else(|| part.strip_suffix("gi"))
        .or_else(|| part.strip_suffix('g'))?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(GIB)
}

fn interface_suffix(part: &str) -> Option<&'static str> {
    match part {
        "pcie" => Some("pcie"),
        "sxm" | "sxm2" | "sxm3" | "sxm4" | "sxm5" => Some("sxm"),
        _ => None,
    }
}

/// Resolves `model` (as written) against the SDL's `ram` and `interface` (see [`ResolvedModel`]).
pub fn resolve_model(
    model: &str,
    ram_bytes: Option<u64>,
    interface: Option<&str>,
) -> Result<ResolvedModel, Box<GpuAliasError>> {
    let lowered = model.trim().to_ascii_lowercase();
    let mut parts: Vec<&str> = lowered.split('-').collect();
    let mut named_ram = None;
    let mut named_interface = None;
    while parts.len() > 1 {
        let last = parts[parts.len() - 1];
        if named_ram.is_none()
            && let Some(bytes) = ram_suffix(last)
        {
            named_ram = Some(bytes);
        } else if named_interface.is_none()
            && let Some(found) = interface_suffix(last)
        {
            named_interface = Some(found);
        } else {
            break;
        }
        parts.pop();
    }
    let canonical = parts.join("-");
    let conflict = |what, field, named: String, given: String| {
        Box::new(GpuAliasError {
            written: model.to_owned(),
            canonical: canonical.clone(),
            what,
            field,
            named,
            given,
        })
    };
    if let (Some(named), Some(given)) = (named_ram, ram_bytes)
        && named != given
    {
        return Err(conflict(
            "RAM",
            "ram",
            format_gibibytes(named),
            format_gibibytes(given),
        ));
    }
    let interface = interface.map(str::to_ascii_lowercase);
    if let (Some(named), Some(given)) = (named_interface, interface.as_deref())
        && named != given
    {
        return Err(conflict(
            "interface",
            "interface",
            named.to_owned(),
            given.to_owned(),
        ));
    }
    Ok(ResolvedModel {
        model: canonical.clone(),
        ram_bytes: ram_bytes.or(named_ram),
        interface: interface.or(named_interface.map(str::to_owned)),
    })
}

/// GPU models providers commonly offer: (vendor, model, RAM sizes in GiB). The chain stores
/// only keccak256 of model keys, so a client that must name a registered key (or decide
/// whether it matches a pattern, as the tenant's preflight does) looks it up here.
const KNOWN_MODELS: &[(&str, &str, &[u64])] = &[
    ("nvidia", "a100", &[40, 80]),
    ("nvidia", "h100", &[80, 94]),
    ("nvidia", "h200", &[141]),
    ("nvidia", "gh200", &[96, 144]),
    ("nvidia", "b200", &[192]),
    ("nvidia", "a10", &[24]),
    ("nvidia", "a10g", &[24]),
    ("nvidia", "a30", &[24]),
    ("nvidia", "a40", &[48]),
    ("nvidia", "a4000", &[16]),
    ("nvidia", "a5000", &[24]),
    ("nvidia", "a6000", &[48]),
    ("nvidia", "l4", &[24]),
    ("nvidia", "l40", &[48]),
    ("nvidia", "l40s", &[48]),
    ("nvidia", "t4", &[16]),
    ("nvidia", "v100", &[16, 32]),
    ("nvidia", "p100", &[16]),
    ("nvidia", "rtx3060", &[12]),
    ("nvidia", "rtx3070", &[8]),
    ("nvidia", "rtx3080", &[10, 12]),
    ("nvidia", "rtx3090", &[24]),
    ("nvidia", "rtx3090ti", &[24]),
    ("nvidia", "rtx4070", &[12]),
    ("nvidia", "rtx4080", &[16]),
    ("nvidia", "rtx4090", &[24]),
    ("nvidia", "rtx5090", &[32]),
    ("nvidia", "rtxa6000", &[48]),
    ("amd", "mi250", &[128]),
    ("amd", "mi300x", &[192]),
];

const KNOWN_INTERFACES: &[&str] = &["pcie", "sxm"];

/// Every concrete key of the known models table with each interface, e.g. `nvidia/a100/80Gi/sxm`.
pub fn known_models() -> Vec<GpuModelKey> {
    KNOWN_MODELS
        .iter()
        .flat_map(|(vendor, model, rams)| {
            rams.iter().flat_map(move |ram| {
                KNOWN_INTERFACES.iter().map(move |interface| {
                    GpuModelKey::new(vendor, Some(model), Some(ram << 30), Some(interface))
                })
            })
        })
        .collect()
}

impl GpuModelKey {
    /// Whether no part is `*`.
    pub fn is_concrete(&self) -> bool {
        self.parts().iter().all(|part| *part != WILDCARD)
    }

    /// The 16 keys this concrete key becomes with any of its parts replaced by `*` (itself
    /// first): exactly the patterns it matches.
    pub fn patterns_matched(&self) -> Vec<GpuModelKey> {
        (0u8..16)
            .map(|mask| {
                let part = |index: u8, text: &str| {
                    if mask & (1 << index) != 0 {
                        WILDCARD.to_owned()
                    } else {
                        text.to_owned()
                    }
                };
                GpuModelKey {
                    vendor: part(0, &self.vendor),
                    model: part(1, &self.model),
                    ram: part(2, &self.ram),
                    interface: part(3, &self.interface),
                }
            })
            .collect()
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
            // Binary units only, as in the SDL's `ram`: `80GB` is not a key.
            Some(ram) => {
                Some(parse_binary_bytes(ram).map_err(|_| GpuKeyError::Ram(ram.to_owned()))?)
            }
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
    fn akash_style_aliases_resolve_to_canonical_parts() {
        let resolved = |model, ram, interface| {
            let r = resolve_model(model, ram, interface).unwrap();
            GpuModelKey::new(
                "nvidia",
                Some(&r.model),
                r.ram_bytes,
                r.interface.as_deref(),
            )
            .to_string()
        };
        assert_eq!(resolved("A100", None, None), "nvidia/a100/*/*");
        assert_eq!(resolved("a100-80gb", None, None), "nvidia/a100/80Gi/*");
        assert_eq!(
            resolved("A100-SXM4-80GB", None, None),
            "nvidia/a100/80Gi/sxm"
        );
        assert_eq!(resolved("h100-pcie", None, None), "nvidia/h100/*/pcie");
        assert_eq!(
            resolved("a100-80gb", Some(80 << 30), None),
            "nvidia/a100/80Gi/*"
        );
        assert_eq!(resolved("rtx4090", None, None), "nvidia/rtx4090/*/*");
        assert_eq!(resolved("rtx-4090", None, None), "nvidia/rtx-4090/*/*");
        let err = resolve_model("a100-80gb", Some(40 << 30), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "GPU model `a100-80gb` names RAM `80Gi` but the SDL says `40Gi`; \
             write `model: a100` with `ram: 80Gi`"
        );
        assert!(resolve_model("h100-sxm", None, Some("pcie")).is_err());
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
