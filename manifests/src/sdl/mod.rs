//! Reading the SDL tree into a checked document (Akash's schema and parser rules).

mod compute;
mod deployment;
mod placement;
mod services;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::check::{Checker, Entry, Fields, Loc, join};
use crate::gpu::GpuModelPattern;
use crate::model::{
    Attribute, Credentials, Gpu, HttpOptions, Price, Protocol, SignedBy, Storage, StorageMount, Tee,
};
use crate::units::{Amount, parse_binary_bytes, parse_bytes, parse_cpu_millis};
use crate::yaml::{Node, Value};

use compute::*;
use deployment::*;
use placement::*;
use services::*;
/// Least CPU per replica: 10 millicores.
pub const MIN_UNIT_CPU_MILLIS: u64 = 10;
/// Most CPU per replica: 384 cores.
pub const MAX_UNIT_CPU_MILLIS: u64 = 384_000;
/// Least memory per replica: 6 Mi. Akash's network allows 1 Mi, but Docker refuses a
/// container limit below 6 Mi, so a smaller unit could be ordered and paid for yet never
/// run; the provider's runtime checks this same constant.
pub const MIN_UNIT_MEMORY_BYTES: u64 = 6 << 20;
/// Most memory per replica: 2 Ti.
pub const MAX_UNIT_MEMORY_BYTES: u64 = 2 << 40;
/// Least size of a storage volume: 5 Mi.
pub const MIN_UNIT_STORAGE_BYTES: u64 = 5 << 20;
/// Most size of a storage volume: 32 Ti.
pub const MAX_UNIT_STORAGE_BYTES: u64 = 32 << 40;
/// Most GPUs per replica.
pub const MAX_UNIT_GPU: u64 = 24;
/// Most replicas of one service in one placement.
pub const MAX_UNIT_COUNT: u64 = 50;
/// Most groups (placements) per deployment.
pub const MAX_GROUPS: usize = 20;
/// Most resource units per group.
pub const MAX_GROUP_UNITS: usize = 20;

/// Denominations accepted in `pricing`: Akash's `uakt` and `uact`, Leasehold's
/// stablecoin `usdc` (and its micro-unit spelling `uusdc`). `ibc/<HASH>` denoms are also accepted.
pub const ACCEPTED_DENOMS: &[&str] = &["uakt", "uact", "usdc", "uusdc"];

const STORAGE_CLASSES: &[&str] = &["default", "beta1", "beta2", "beta3", "ram"];
const RAM_CLASS: &str = "ram";
const NEXT_CASES: &[&str] = &[
    "error", "timeout", "500", "502", "503", "504", "403", "404", "429", "off",
];
const MAX_BODY_SIZE: u64 = 104_857_600;
const MAX_TIMEOUT_MS: u64 = 60_000;
const MAX_PROXY_BUFFER_SIZE: u64 = 1_048_576;

/// SDL version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Version {
    /// `"2.0"`: one resource unit per service and placement.
    #[serde(rename = "2.0")]
    V2_0,
    /// `"2.1"`: services sharing a compute profile in a placement share one resource unit.
    #[serde(rename = "2.1")]
    V2_1,
}

pub(crate) struct ExposeTo {
    pub service: String,
    pub global: bool,
    pub ip: String,
    pub loc: Loc,
}

pub(crate) struct ExposeSpec {
    pub port: u16,
    pub external_port: u16,
    pub proto: Protocol,
    pub hosts: Vec<String>,
    pub http_options: HttpOptions,
    pub to: Vec<ExposeTo>,
}

pub(crate) struct StorageParam {
    pub mount: StorageMount,
    pub loc: Loc,
}

pub(crate) struct ServiceSpec {
    pub image: String,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub env: Option<Vec<String>>,
    pub expose: Vec<ExposeSpec>,
    pub has_params: bool,
    pub storage_params: BTreeMap<String, StorageParam>,
    pub permissions: Vec<String>,
    pub tee: Option<(Tee, Loc)>,
    pub credentials: Option<Credentials>,
    pub loc: Loc,
}

pub(crate) struct ComputeSpec {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub storage: Vec<Storage>,
    pub gpu: Gpu,
}

pub(crate) struct PlacementSpec {
    pub attributes: Vec<Attribute>,
    pub signed_by: SignedBy,
    pub pricing: BTreeMap<String, Price>,
    /// Profiles with a pricing entry, valid or not.
    pub priced: BTreeSet<String>,
}

pub(crate) struct DeploymentSpec {
    pub profile: String,
    pub count: u32,
    pub loc: Loc,
}

/// The SDL after per-field checks (cross-references are checked in `derive`).
pub(crate) struct Document {
    pub version: Version,
    pub services: BTreeMap<String, ServiceSpec>,
    pub compute: BTreeMap<String, ComputeSpec>,
    pub placements: BTreeMap<String, PlacementSpec>,
    /// service -> placement -> deployment
    pub deployments: BTreeMap<String, BTreeMap<String, DeploymentSpec>>,
    pub endpoints: BTreeMap<String, Loc>,
    pub reclamation_min_window_secs: Option<u64>,
    /// Every name declared under services / compute / placement, even when its
    /// definition had errors (so references to it are not reported twice).
    pub declared: BTreeSet<String>,
}

const TOP_LEVEL: &[&str] = &[
    "version",
    "services",
    "profiles",
    "deployment",
    "endpoints",
    "reclamation",
];

/// Reads the whole document; `None` only when the top level is not a mapping.
pub(crate) fn read_document(tree: &Node, checker: &mut Checker) -> Option<Document> {
    let top = checker.fields(tree, "", TOP_LEVEL)?;
    let version = checker
        .required(&top, "version", "\"2.0\" or \"2.1\"")
        .and_then(|node| read_version(node, checker))
        .unwrap_or(Version::V2_0);
    let services = checker
        .required(&top, "services", "a mapping of service names to services")
        .map(|node| read_services(node, version, checker))
        .unwrap_or_default();
    let (compute, placements) = checker
        .required(&top, "profiles", "a mapping with `compute` and `placement`")
        .map(|node| read_profiles(node, checker))
        .unwrap_or_default();
    let deployments = checker
        .required(
            &top,
            "deployment",
            "a mapping of service names to placements",
        )
        .map(|node| read_deployments(node, checker))
        .unwrap_or_default();
    let endpoints = top
        .get("endpoints")
        .map(|node| read_endpoints(node, checker))
        .unwrap_or_default();
    let reclamation_min_window_secs = top
        .get("reclamation")
        .and_then(|node| read_reclamation(node, checker));
    let declared = declared_names(&top);
    Some(Document {
        version,
        services,
        compute,
        placements,
        deployments,
        endpoints,
        reclamation_min_window_secs,
        declared,
    })
}

/// The SDL version, read as Akash's Go parser reads it (`semver.ParseTolerant`: `2`, `2.0`,
/// `2.0.0`, `v2.1` and `2.1.3` are versions too): exactly 2.0.0 is v2.0, 2.1.x is v2.1.
fn read_version(node: &Node, checker: &mut Checker) -> Option<Version> {
    let text = checker.string(node, "version")?;
    let trimmed = text.trim();
    let bare = trimmed.strip_prefix(['v', 'V']).unwrap_or(trimmed);
    let parts: Vec<&str> = bare.split('.').collect();
    let numbers: Option<Vec<u64>> = (parts.len() <= 3)
        .then(|| parts.iter().map(|part| part.parse::<u64>().ok()).collect())
        .flatten();
    let version = match numbers.as_deref() {
        Some([2] | [2, 0] | [2, 0, 0]) => Some(Version::V2_0),
        Some([2, 1] | [2, 1, _]) => Some(Version::V2_1),
        _ => None,
    };
    if version.is_none() {
        checker.error(
            &Loc::of(node, "version"),
            format!("version `{text}` is not supported; allowed: 2.0, 2.1"),
        );
    }
    version
}

/// `services.<name>`, `compute.<name>` and `placement.<name>` for every declared name.
fn declared_names(top: &Fields<'_>) -> BTreeSet<String> {
    let keys = |node: Option<&Node>, prefix: &str| -> Vec<String> {
        match node.map(|node| &node.value) {
            Some(Value::Map(entries)) => entries
                .iter()
                .map(|(key, _)| format!("{prefix}.{}", key.name))
                .collect(),
            _ => Vec::new(),
        }
    };
    let profiles = top.get("profiles");
    let profile_part = |name: &str| match profiles.map(|node| &node.value) {
        Some(Value::Map(entries)) => entries
            .iter()
            .find(|(key, _)| key.name == name)
            .map(|(_, node)| node),
        _ => None,
    };
    let mut names: BTreeSet<String> = keys(top.get("services"), "services").into_iter().collect();
    names.extend(keys(profile_part("compute"), "compute"));
    names.extend(keys(profile_part("placement"), "placement"));
    names
}

fn read_reclamation(node: &Node, checker: &mut Checker) -> Option<u64> {
    let fields = checker.fields(node, "reclamation", &["min_window"])?;
    let window_node = checker.required(&fields, "min_window", "a duration such as 24h")?;
    let path = fields.path("min_window");
    let text = checker.string(window_node, &path)?;
    let seconds = text
        .strip_suffix('s')
        .map(|number| (number, 1))
        .or_else(|| text.strip_suffix('m').map(|number| (number, 60)))
        .or_else(|| text.strip_suffix('h').map(|number| (number, 3600)))
        .filter(|(number, _)| {
            number.bytes().all(|b| b.is_ascii_digit()) && !number.starts_with('0')
        })
        .and_then(|(number, scale)| number.parse::<u64>().ok()?.checked_mul(scale));
    if seconds.is_none() {
        checker.error(
            &Loc::of(window_node, &path),
            format!(
                "min_window `{text}` is invalid; expected a whole number greater than 0 \
                 followed by s, m or h (e.g. 90m, 24h)"
            ),
        );
    }
    seconds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_akash_rules() {
        assert!(is_service_name("web"));
        assert!(is_service_name("tee-gpu-app2"));
        assert!(!is_service_name("Web"));
        assert!(!is_service_name("2web"));
        assert!(!is_service_name("web-"));
        assert!(is_endpoint_name("endpoint1"));
        assert!(is_endpoint_name("my_ip-2"));
        assert!(!is_endpoint_name("Invalid-Name"));
        assert!(!is_endpoint_name("x"));
        assert!(!is_endpoint_name("1ip"));
    }

    #[test]
    fn denoms() {
        assert!(is_accepted_denom("uakt"));
        assert!(is_accepted_denom("usdc"));
        assert!(!is_accepted_denom("invalidtoken"));
        assert!(is_accepted_denom(&format!("ibc/{}", "A".repeat(64))));
        assert!(!is_accepted_denom("ibc/xyz"));
    }

    #[test]
    fn sizes_are_shown_in_binary_units() {
        assert_eq!(show_bytes(2 << 40), "2Ti");
        assert_eq!(show_bytes(5 << 20), "5Mi");
        assert_eq!(show_bytes(1000), "1000 bytes");
    }
}
