//! Model names as people and drivers write them, resolved to canonical parts: Akash-style
//! aliases in an SDL (`a100-80gb`) and the table of models providers commonly offer.

use std::collections::BTreeSet;

use super::{GIB, GpuModelKey, GpuModelPattern, WILDCARD};
use crate::units::format_gibibytes;

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
pub(super) const KNOWN_MODELS: &[(&str, &str, &[u64])] = &[
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

pub(super) const KNOWN_INTERFACES: &[&str] = &["pcie", "sxm"];

/// Interfaces a registered model may name beyond [`KNOWN_INTERFACES`] (AMD's OAM modules).
const CANDIDATE_INTERFACES: [&str; 1] = ["oam"];

/// Every concrete key of the known models table with each interface, e.g. `nvidia/a100/80Gi/sxm`.
pub fn known_models() -> Vec<GpuModelKey> {
    KNOWN_MODELS
        .iter()
        .flat_map(|(vendor, model, rams)| {
            rams.iter().flat_map(move |ram| {
                KNOWN_INTERFACES.iter().filter_map(move |interface| {
                    GpuModelKey::from_parts(vendor, model, ram.checked_mul(GIB)?, interface).ok()
                })
            })
        })
        .collect()
}

/// Every key built from known parts: each known or `mentioned` model (with its vendor, or
/// every known vendor when a pattern leaves the vendor `*`), with each known, marketed or
/// mentioned RAM size and each known, `oam` or mentioned interface. The chain stores only keccak256
/// of a provider's models, so a client recovers a registered model's string by hashing these:
/// a model off the known list (`nvidia/rtx5080/16Gi/pcie` for an SDL that asks for `rtx5080`)
/// is still recognised, and then matched by the one rule.
pub fn candidate_models(mentioned: &[GpuModelPattern]) -> Vec<GpuModelKey> {
    let mut models: BTreeSet<(&str, &str)> = KNOWN_MODELS
        .iter()
        .map(|(vendor, model, _)| (*vendor, *model))
        .collect();
    let known_vendors: BTreeSet<&str> = models.iter().map(|(vendor, _)| *vendor).collect();
    let mut rams: BTreeSet<String> = KNOWN_MODELS
        .iter()
        .flat_map(|(_, _, rams)| rams.iter())
        .chain(super::product::marketed_sizes())
        .map(|gib| format!("{gib}Gi"))
        .collect();
    let mut interfaces: BTreeSet<&str> = KNOWN_INTERFACES
        .iter()
        .chain(&CANDIDATE_INTERFACES)
        .copied()
        .collect();
    for pattern in mentioned {
        if pattern.model() != WILDCARD {
            if pattern.vendor() == WILDCARD {
                models.extend(
                    known_vendors
                        .iter()
                        .map(|vendor| (*vendor, pattern.model())),
                );
            } else {
                models.insert((pattern.vendor(), pattern.model()));
            }
        }
        if pattern.ram() != WILDCARD {
            rams.insert(pattern.ram().to_owned());
        }
        if pattern.interface() != WILDCARD {
            interfaces.insert(pattern.interface());
        }
    }
    let mut keys = Vec::with_capacity(models.len() * rams.len() * interfaces.len());
    for (vendor, model) in &models {
        for ram in &rams {
            for interface in &interfaces {
                if let Ok(key) = format!("{vendor}/{model}/{ram}/{interface}").parse() {
                    keys.push(key);
                }
            }
        }
    }
    keys
}
