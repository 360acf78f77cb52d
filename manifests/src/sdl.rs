//! Reading the SDL tree into a checked document (Akash's schema and parser rules).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::check::{Checker, Entry, Fields, Loc, join};
use crate::gpu::GpuModelKey;
use crate::model::{
    Attribute, Credentials, Gpu, HttpOptions, Price, Protocol, SignedBy, Storage, StorageMount, Tee,
};
use crate::units::{Amount, parse_binary_bytes, parse_bytes, parse_cpu_millis};
use crate::yaml::{Node, Value};

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

fn is_service_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

const SERVICE_FIELDS: &[&str] = &[
    "image",
    "command",
    "args",
    "env",
    "expose",
    "dependencies",
    "params",
    "credentials",
];

fn read_services(
    node: &Node,
    version: Version,
    checker: &mut Checker,
) -> BTreeMap<String, ServiceSpec> {
    let entries = checker.entries(node, "services");
    if entries.is_empty() && checker.errors.is_empty() {
        checker.error(
            &Loc::of(node, "services"),
            "at least one service is required",
        );
    }
    let mut services = BTreeMap::new();
    for entry in entries {
        if !is_service_name(entry.name) {
            checker.error(
                &entry.key_loc,
                format!(
                    "service name `{}` is invalid; use lower-case letters, digits and '-', \
                     starting with a letter (at most 63 characters)",
                    entry.name
                ),
            );
        }
        if let Some(service) = read_service(&entry, version, checker) {
            services.insert(entry.name.to_owned(), service);
        }
    }
    let names: Vec<String> = services.keys().cloned().collect();
    for entry in checker.entries(node, "services") {
        check_dependencies(&entry, &names, checker);
    }
    services
}

fn check_dependencies(entry: &Entry<'_>, services: &[String], checker: &mut Checker) {
    let Value::Map(fields) = &entry.node.value else {
        return;
    };
    let Some((_, dependencies)) = fields.iter().find(|(key, _)| key.name == "dependencies") else {
        return;
    };
    let path = join(&entry.path, "dependencies");
    for (item_path, item) in checker.items(dependencies, &path) {
        let Some(fields) = checker.fields(item, &item_path, &["service"]) else {
            continue;
        };
        let Some(service_node) = checker.required(&fields, "service", "a service name") else {
            continue;
        };
        let service_path = fields.path("service");
        if let Some(name) = checker.string(service_node, &service_path)
            && !services.contains(&name)
        {
            checker.error(
                &Loc::of(service_node, &service_path),
                format!(
                    "depends on unknown service `{name}`; declared services: {}",
                    services.join(", ")
                ),
            );
        }
    }
}

fn read_service(entry: &Entry<'_>, version: Version, checker: &mut Checker) -> Option<ServiceSpec> {
    let fields = checker.fields(entry.node, &entry.path, SERVICE_FIELDS)?;
    let image = checker
        .required(&fields, "image", "a container image such as nginx:1.25")
        .and_then(|node| read_image(node, &fields.path("image"), checker));
    let list = |checker: &mut Checker, name: &str| {
        fields
            .get(name)
            .and_then(|node| checker.string_list(node, &fields.path(name)))
    };
    let command = list(checker, "command");
    let args = list(checker, "args");
    let env = list(checker, "env");
    let expose = fields
        .get("expose")
        .map(|node| {
            checker
                .items(node, &fields.path("expose"))
                .into_iter()
                .filter_map(|(path, item)| read_expose(item, &path, checker))
                .collect()
        })
        .unwrap_or_default();
    let mut storage_params = BTreeMap::new();
    let mut permissions = Vec::new();
    let mut tee = None;
    if let Some(params_node) = fields.get("params") {
        let params_path = fields.path("params");
        if let Some(params) = checker.fields(
            params_node,
            &params_path,
            &["storage", "permissions", "tee"],
        ) {
            if let Some(storage) = params.get("storage") {
                storage_params = read_storage_params(storage, &params.path("storage"), checker);
            }
            if let Some(node) = params.get("permissions") {
                permissions = read_permissions(node, &params.path("permissions"), checker);
            }
            if let Some(node) = params.get("tee") {
                let path = params.path("tee");
                tee = checker
                    .one_of(node, &path, &["cpu", "cpu-gpu"])
                    .map(|kind| {
                        (
                            Tee {
                                kind,
                                attestation: true,
                            },
                            Loc::of(node, &path),
                        )
                    });
            }
        }
    }
    let credentials = fields
        .get("credentials")
        .and_then(|node| read_credentials(node, &fields.path("credentials"), version, checker));
    Some(ServiceSpec {
        image: image?,
        command,
        args,
        env,
        expose,
        has_params: fields.get("params").is_some(),
        storage_params,
        permissions,
        tee,
        credentials,
        loc: fields.loc.clone(),
    })
}

/// An image reference: not blank, and without whitespace or control characters, which
/// no registry accepts and which would otherwise travel raw into engine calls and logs.
fn read_image(node: &Node, path: &str, checker: &mut Checker) -> Option<String> {
    let image = checker.non_empty_string(node, path, "image")?;
    if let Some(bad) = image.chars().find(|c| c.is_control() || c.is_whitespace()) {
        checker.error(
            &Loc::of(node, path),
            format!(
                "image {image:?} contains the character {bad:?}; an image reference has no \
                 whitespace or control characters"
            ),
        );
        return None;
    }
    Some(image)
}

fn read_permissions(node: &Node, path: &str, checker: &mut Checker) -> Vec<String> {
    let Some(fields) = checker.fields(node, path, &["read"]) else {
        return Vec::new();
    };
    let Some(read) = fields.get("read") else {
        return Vec::new();
    };
    checker
        .items(read, &fields.path("read"))
        .into_iter()
        .filter_map(|(item_path, item)| {
            checker.one_of(item, &item_path, &["deployment", "logs", "events"])
        })
        .collect()
}

fn read_storage_params(
    node: &Node,
    path: &str,
    checker: &mut Checker,
) -> BTreeMap<String, StorageParam> {
    let mut params = BTreeMap::new();
    let mut mounts: BTreeMap<String, String> = BTreeMap::new();
    for entry in checker.entries(node, path) {
        let Some(fields) = checker.fields(entry.node, &entry.path, &["mount", "readOnly"]) else {
            continue;
        };
        let mount_path = fields.path("mount");
        let mount = fields
            .get("mount")
            .and_then(|node| checker.string(node, &mount_path))
            .unwrap_or_default();
        if let Some(mount_node) = fields.get("mount") {
            if !mount.starts_with('/') {
                checker.error(
                    &Loc::of(mount_node, &mount_path),
                    format!("mount `{mount}` must be an absolute path (starting with /)"),
                );
            } else if let Some(other) = mounts.insert(mount.clone(), entry.name.to_owned()) {
                checker.error(
                    &Loc::of(mount_node, &mount_path),
                    format!("mount `{mount}` is already used by volume `{other}`"),
                );
            }
        }
        let read_only = fields
            .get("readOnly")
            .and_then(|node| checker.boolean(node, &fields.path("readOnly"), false))
            .unwrap_or(false);
        params.insert(
            entry.name.to_owned(),
            StorageParam {
                mount: StorageMount {
                    name: entry.name.to_owned(),
                    mount,
                    read_only,
                },
                loc: fields.loc.clone(),
            },
        );
    }
    params
}

fn read_credentials(
    node: &Node,
    path: &str,
    version: Version,
    checker: &mut Checker,
) -> Option<Credentials> {
    let fields = checker.fields(node, path, &["host", "email", "username", "password"])?;
    let text = |checker: &mut Checker, name: &str, min_chars: usize, required: bool| {
        let field_path = fields.path(name);
        let node = if required {
            checker.required(&fields, name, &format!("at least {min_chars} character(s)"))
        } else {
            fields.get(name)
        }?;
        let value = checker.string(node, &field_path)?;
        let value = value.trim().to_owned();
        if value.chars().count() < min_chars {
            checker.error(
                &Loc::of(node, &field_path),
                format!("credentials {name} must have at least {min_chars} character(s)"),
            );
            return None;
        }
        Some(value)
    };
    let host = text(checker, "host", 1, true);
    let username = text(checker, "username", 1, true);
    let password = text(checker, "password", 6, true);
    let email = text(checker, "email", 5, false).unwrap_or_default();
    Some(Credentials {
        host: host?,
        // Akash's v2.0 builder does not carry the e-mail into the manifest.
        email: if version == Version::V2_0 {
            String::new()
        } else {
            email
        },
        username: username?,
        password: password?,
    })
}

const EXPOSE_FIELDS: &[&str] = &["port", "as", "proto", "to", "accept", "http_options"];
const HTTP_OPTION_FIELDS: &[&str] = &[
    "max_body_size",
    "read_timeout",
    "send_timeout",
    "next_tries",
    "next_timeout",
    "next_cases",
    "proxy_buffer_size",
];

fn read_expose(node: &Node, path: &str, checker: &mut Checker) -> Option<ExposeSpec> {
    let fields = checker.fields(node, path, EXPOSE_FIELDS)?;
    let port = checker
        .required(&fields, "port", "a port number from 1 to 65535")
        .and_then(|node| checker.integer(node, &fields.path("port"), 1, 65_535));
    let external_port = match fields.get("as") {
        Some(node) => checker.integer(node, &fields.path("as"), 1, 65_535),
        None => Some(0),
    };
    let proto = match fields.get("proto") {
        Some(node) => checker
            .one_of(node, &fields.path("proto"), &["TCP", "UDP", "tcp", "udp"])
            .map(|proto| {
                if proto.eq_ignore_ascii_case("udp") {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                }
            }),
        None => Some(Protocol::Tcp),
    };
    let hosts = fields
        .get("accept")
        .and_then(|node| checker.string_list(node, &fields.path("accept")))
        .unwrap_or_default();
    for host in &hosts {
        if host.is_empty() || host.contains(char::is_whitespace) || host.contains('/') {
            checker.error(
                &fields.loc,
                format!("accept host `{host}` is not a valid host name"),
            );
        }
    }
    let http_options = read_http_options(fields.get("http_options"), &fields, checker);
    let to = fields
        .get("to")
        .map(|node| {
            checker
                .items(node, &fields.path("to"))
                .into_iter()
                .filter_map(|(to_path, item)| read_expose_to(item, &to_path, checker))
                .collect()
        })
        .unwrap_or_default();
    Some(ExposeSpec {
        port: u16::try_from(port?).ok()?,
        external_port: u16::try_from(external_port?).ok()?,
        proto: proto?,
        hosts,
        http_options: http_options?,
        to,
    })
}

fn read_expose_to(node: &Node, path: &str, checker: &mut Checker) -> Option<ExposeTo> {
    let fields = checker.fields(node, path, &["service", "global", "ip"])?;
    let service = fields
        .get("service")
        .and_then(|node| checker.string(node, &fields.path("service")))
        .unwrap_or_default();
    let global = fields
        .get("global")
        .and_then(|node| checker.boolean(node, &fields.path("global"), false))
        .unwrap_or(false);
    let ip = fields
        .get("ip")
        .and_then(|node| checker.string(node, &fields.path("ip")))
        .unwrap_or_default();
    if fields.get("ip").is_some() && ip.is_empty() {
        checker.error(&fields.loc, "ip must name an endpoint (non-empty)");
    }
    if !ip.is_empty() && !global {
        checker.error(
            &Loc {
                path: fields.path("global"),
                ..fields.loc.clone()
            },
            format!("ip `{ip}` is set, so the exposure must be `global: true`"),
        );
    }
    Some(ExposeTo {
        service,
        global,
        ip,
        loc: fields.loc.clone(),
    })
}

fn read_http_options(
    node: Option<&Node>,
    expose: &Fields<'_>,
    checker: &mut Checker,
) -> Option<HttpOptions> {
    let mut options = HttpOptions {
        max_body_size: 1_048_576,
        read_timeout: 60_000,
        send_timeout: 60_000,
        next_tries: 3,
        next_timeout: 0,
        next_cases: vec!["error".to_owned(), "timeout".to_owned()],
    };
    let Some(node) = node else {
        return Some(options);
    };
    let fields = checker.fields(node, &expose.path("http_options"), HTTP_OPTION_FIELDS)?;
    let mut valid = true;
    let mut number = |checker: &mut Checker, name: &str, max: u64, target: &mut u32| {
        if let Some(node) = fields.get(name) {
            match checker
                .integer(node, &fields.path(name), 0, max)
                .and_then(|value| u32::try_from(value).ok())
            {
                // Zero means "use the default", as in Akash.
                Some(0) => {}
                Some(value) => *target = value,
                None => valid = false,
            }
        }
    };
    number(
        checker,
        "max_body_size",
        MAX_BODY_SIZE,
        &mut options.max_body_size,
    );
    number(
        checker,
        "read_timeout",
        MAX_TIMEOUT_MS,
        &mut options.read_timeout,
    );
    number(
        checker,
        "send_timeout",
        MAX_TIMEOUT_MS,
        &mut options.send_timeout,
    );
    number(
        checker,
        "next_tries",
        u64::from(u32::MAX),
        &mut options.next_tries,
    );
    let mut proxy_buffer_size = 0;
    number(
        checker,
        "proxy_buffer_size",
        MAX_PROXY_BUFFER_SIZE,
        &mut proxy_buffer_size,
    );
    if let Some(node) = fields.get("next_timeout") {
        match checker
            .integer(node, &fields.path("next_timeout"), 0, u64::from(u32::MAX))
            .and_then(|value| u32::try_from(value).ok())
        {
            Some(value) => options.next_timeout = value,
            None => valid = false,
        }
    }
    if let Some(node) = fields.get("next_cases") {
        let path = fields.path("next_cases");
        let cases: Vec<String> = checker
            .items(node, &path)
            .into_iter()
            .filter_map(|(item_path, item)| checker.one_of(item, &item_path, NEXT_CASES))
            .collect();
        if cases.len() > 1 && cases.iter().any(|case| case == "off") {
            checker.error(
                &Loc::of(node, &path),
                "next_cases: if `off` is given, no other case may be given",
            );
            valid = false;
        }
        if !cases.is_empty() {
            options.next_cases = cases;
        }
    }
    valid.then_some(options)
}

fn read_profiles(
    node: &Node,
    checker: &mut Checker,
) -> (
    BTreeMap<String, ComputeSpec>,
    BTreeMap<String, PlacementSpec>,
) {
    let Some(fields) = checker.fields(node, "profiles", &["compute", "placement"]) else {
        return Default::default();
    };
    let mut compute = BTreeMap::new();
    if let Some(node) = checker.required(&fields, "compute", "a mapping of compute profiles") {
        for entry in checker.entries(node, "profiles.compute") {
            if let Some(profile) = read_compute(&entry, checker) {
                compute.insert(entry.name.to_owned(), profile);
            }
        }
    }
    let mut placements = BTreeMap::new();
    if let Some(node) = checker.required(&fields, "placement", "a mapping of placement profiles") {
        for entry in checker.entries(node, "profiles.placement") {
            if let Some(placement) = read_placement(&entry, checker) {
                placements.insert(entry.name.to_owned(), placement);
            }
        }
    }
    (compute, placements)
}

fn read_compute(entry: &Entry<'_>, checker: &mut Checker) -> Option<ComputeSpec> {
    let profile = checker.fields(entry.node, &entry.path, &["resources"])?;
    let resources_node = checker.required(&profile, "resources", "cpu, memory and storage")?;
    let resources = checker.fields(
        resources_node,
        &profile.path("resources"),
        &["cpu", "memory", "storage", "gpu"],
    )?;
    let cpu = checker
        .required(&resources, "cpu", "a mapping with `units`")
        .and_then(|node| read_cpu(node, &resources.path("cpu"), checker));
    let memory = checker
        .required(&resources, "memory", "a mapping with `size`")
        .and_then(|node| read_memory(node, &resources.path("memory"), checker));
    let storage = checker
        .required(
            &resources,
            "storage",
            "a volume or a list of volumes with `size`",
        )
        .and_then(|node| read_storage(node, &resources.path("storage"), checker));
    let gpu = match resources.get("gpu") {
        Some(node) => read_gpu(node, &resources.path("gpu"), checker),
        None => Some(Gpu::default()),
    };
    Some(ComputeSpec {
        cpu_millis: cpu?,
        memory_bytes: memory?,
        storage: storage?,
        gpu: gpu?,
    })
}

fn check_range(
    checker: &mut Checker,
    loc: &Loc,
    value: u64,
    (min, max): (u64, u64),
    what: &str,
    show: fn(u64) -> String,
) -> Option<u64> {
    if (min..=max).contains(&value) {
        Some(value)
    } else {
        checker.error(
            loc,
            format!(
                "{what} {} is out of range; allowed: {} to {}",
                show(value),
                show(min),
                show(max)
            ),
        );
        None
    }
}

fn show_millis(millis: u64) -> String {
    format!("{millis}m")
}

fn show_bytes(bytes: u64) -> String {
    const UNITS: &[(&str, u64)] = &[
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    UNITS
        .iter()
        .find(|(_, unit)| bytes >= *unit && bytes.is_multiple_of(*unit))
        .map_or_else(
            || format!("{bytes} bytes"),
            |(suffix, unit)| format!("{}{suffix}", bytes / unit),
        )
}

fn read_cpu(node: &Node, path: &str, checker: &mut Checker) -> Option<u64> {
    let fields = checker.fields(node, path, &["units", "attributes"])?;
    if let Some(attributes) = fields.get("attributes") {
        let attributes_path = fields.path("attributes");
        if let Some(arch) = checker.fields(attributes, &attributes_path, &["arch"])
            && let Some(node) = arch.get("arch")
        {
            checker.string(node, &arch.path("arch"));
        }
    }
    let units_node = checker.required(&fields, "units", "cores (0.5) or millicores (\"500m\")")?;
    let units_path = fields.path("units");
    let loc = Loc::of(units_node, &units_path);
    let text = checker.string(units_node, &units_path)?;
    match parse_cpu_millis(&text) {
        Ok(millis) => check_range(
            checker,
            &loc,
            millis,
            (MIN_UNIT_CPU_MILLIS, MAX_UNIT_CPU_MILLIS),
            "cpu units",
            show_millis,
        ),
        Err(error) => {
            checker.error(
                &loc,
                format!(
                    "cpu units `{text}` {error}; expected cores (e.g. 0.5, 2) or millicores \
                     (e.g. 500m) from {MIN_UNIT_CPU_MILLIS}m to {MAX_UNIT_CPU_MILLIS}m"
                ),
            );
            None
        }
    }
}

/// A size field: `size` text parsed to bytes and checked against `range`.
fn read_size(
    node: &Node,
    path: &str,
    what: &str,
    range: (u64, u64),
    checker: &mut Checker,
) -> Option<u64> {
    read_quantity(node, path, what, range, SizeUnits::Any, checker)
}

/// Which byte suffixes a size field takes.
#[derive(Clone, Copy)]
enum SizeUnits {
    /// Memory and storage: binary and decimal, as either Akash parser reads them.
    Any,
    /// GPU RAM: Akash's Go parser reads it as a `memoryQuantity` (binary suffixes only).
    Binary,
}

fn read_quantity(
    node: &Node,
    path: &str,
    what: &str,
    range: (u64, u64),
    units: SizeUnits,
    checker: &mut Checker,
) -> Option<u64> {
    let loc = Loc::of(node, path);
    let text = checker.string(node, path)?;
    let (parsed, expected) = match units {
        SizeUnits::Any => (
            parse_bytes(&text),
            "(Ki, Mi, Gi, Ti, Pi, Ei as powers of 1024; k, M, G, T, P, E or kB, MB, GB... as \
             powers of 1000; any case), e.g. 512Mi",
        ),
        SizeUnits::Binary => (
            parse_binary_bytes(&text),
            "(Ki, Mi, Gi, Ti, Pi, Ei: powers of 1024, as Akash reads GPU RAM), e.g. 80Gi",
        ),
    };
    match parsed {
        Ok(bytes) => check_range(checker, &loc, bytes, range, what, show_bytes),
        Err(error) => {
            checker.error(
                &loc,
                format!(
                    "{what} `{text}` {error}; expected a number with an optional suffix {expected}"
                ),
            );
            None
        }
    }
}

fn read_memory(node: &Node, path: &str, checker: &mut Checker) -> Option<u64> {
    let fields = checker.fields(node, path, &["size"])?;
    let size = checker.required(&fields, "size", "a size such as 512Mi")?;
    read_size(
        size,
        &fields.path("size"),
        "memory size",
        (MIN_UNIT_MEMORY_BYTES, MAX_UNIT_MEMORY_BYTES),
        checker,
    )
}

fn read_storage(node: &Node, path: &str, checker: &mut Checker) -> Option<Vec<Storage>> {
    let volumes: Vec<(String, &Node, bool)> = match &node.value {
        Value::Seq(_) => checker
            .items(node, path)
            .into_iter()
            .map(|(item_path, item)| (item_path, item, true))
            .collect(),
        _ => vec![(path.to_owned(), node, false)],
    };
    let mut storage = Vec::new();
    let mut valid = true;
    for (volume_path, volume, in_list) in volumes {
        match read_volume(volume, &volume_path, in_list, checker) {
            Some(volume) => {
                if storage
                    .iter()
                    .any(|other: &Storage| other.name == volume.name)
                {
                    checker.error(
                        &Loc::of(node, &volume_path),
                        format!("duplicate storage volume name `{}`", volume.name),
                    );
                    valid = false;
                }
                storage.push(volume);
            }
            None => valid = false,
        }
    }
    // Akash's order: smaller first; then volumes without attributes; then by the
    // `persistent` value; then by name.
    storage.sort_by(|left, right| {
        left.bytes
            .cmp(&right.bytes)
            .then_with(|| (!left.attributes.is_empty()).cmp(&!right.attributes.is_empty()))
            .then_with(|| left.persistent.cmp(&right.persistent))
            .then_with(|| left.name.cmp(&right.name))
    });
    valid.then_some(storage)
}

fn read_volume(node: &Node, path: &str, in_list: bool, checker: &mut Checker) -> Option<Storage> {
    let allowed: &[&str] = if in_list {
        &["name", "size", "attributes"]
    } else {
        &["size", "attributes", "name"]
    };
    let fields = checker.fields(node, path, allowed)?;
    let name = match fields.get("name").filter(|_| in_list) {
        Some(node) => checker.non_empty_string(node, &fields.path("name"), "volume name")?,
        None => "default".to_owned(),
    };
    let bytes = checker
        .required(&fields, "size", "a size such as 1Gi")
        .and_then(|size| {
            read_size(
                size,
                &fields.path("size"),
                "storage size",
                (MIN_UNIT_STORAGE_BYTES, MAX_UNIT_STORAGE_BYTES),
                checker,
            )
        });
    let mut volume = Storage {
        name,
        bytes: 0,
        class: None,
        persistent: false,
        attributes: Vec::new(),
    };
    if let Some(attributes) = fields.get("attributes") {
        read_volume_attributes(attributes, &fields.path("attributes"), &mut volume, checker)?;
    }
    volume.bytes = bytes?;
    Some(volume)
}

fn read_volume_attributes(
    node: &Node,
    path: &str,
    volume: &mut Storage,
    checker: &mut Checker,
) -> Option<()> {
    let fields = checker.fields(node, path, &["class", "persistent"])?;
    let persistent = match fields.get("persistent") {
        Some(node) => checker.boolean(node, &fields.path("persistent"), true)?,
        None => false,
    };
    let class = match fields.get("class") {
        Some(node) => Some(checker.one_of(node, &fields.path("class"), STORAGE_CLASSES)?),
        None => None,
    };
    let class = match class {
        Some(class) if class == RAM_CLASS && persistent => {
            checker.error(
                &fields.loc,
                "storage class `ram` cannot be persistent; use persistent: false or another class",
            );
            return None;
        }
        Some(class) if class != RAM_CLASS && !persistent => {
            checker.error(
                &fields.loc,
                format!(
                    "storage class `{class}` needs persistent: true (ephemeral storage takes \
                     no class except ram)"
                ),
            );
            return None;
        }
        None if persistent => Some("default".to_owned()),
        other => other,
    };
    if let Some(class) = &class {
        volume.attributes.push(Attribute {
            key: "class".to_owned(),
            value: class.clone(),
        });
    }
    volume.attributes.push(Attribute {
        key: "persistent".to_owned(),
        value: persistent.to_string(),
    });
    volume.class = class;
    volume.persistent = persistent;
    Some(())
}

fn read_gpu(node: &Node, path: &str, checker: &mut Checker) -> Option<Gpu> {
    let fields = checker.fields(node, path, &["units", "attributes"])?;
    let units = match fields.get("units") {
        Some(node) => checker.integer(node, &fields.path("units"), 0, MAX_UNIT_GPU)?,
        None => 0,
    };
    let models = match fields.get("attributes") {
        Some(node) => read_gpu_attributes(node, &fields.path("attributes"), checker)?,
        None => Vec::new(),
    };
    if units > 0 && fields.get("attributes").is_none() {
        checker.error(
            &fields.loc,
            "gpu units > 0 need attributes naming the vendor (vendor: {nvidia: [...]})",
        );
        return None;
    }
    if units == 0 && fields.get("attributes").is_some() {
        checker.error(
            &fields.loc,
            "gpu attributes are set but gpu units is 0; request at least 1 unit",
        );
        return None;
    }
    let mut attributes: Vec<Attribute> = models
        .iter()
        .map(|(_, akash_key)| Attribute {
            key: akash_key.clone(),
            value: "true".to_owned(),
        })
        .collect();
    attributes.sort();
    attributes.dedup();
    Some(Gpu {
        units: u32::try_from(units).ok()?,
        models: models.into_iter().map(|(key, _)| key).collect(),
        attributes,
    })
}

/// Each model as (canonical key, Akash attribute key). Akash keeps the model as written.
fn read_gpu_attributes(
    node: &Node,
    path: &str,
    checker: &mut Checker,
) -> Option<Vec<(GpuModelKey, String)>> {
    let fields = checker.fields(node, path, &["vendor"])?;
    let vendor_node = checker.required(&fields, "vendor", "a mapping with `nvidia`")?;
    let vendor_path = fields.path("vendor");
    let vendors = checker.entries(vendor_node, &vendor_path);
    if vendors.is_empty() {
        checker.error(
            &Loc::of(vendor_node, &vendor_path),
            "at least one GPU vendor is required; allowed: nvidia",
        );
        return None;
    }
    let mut models = Vec::new();
    let mut valid = true;
    for vendor in vendors {
        if vendor.name != "nvidia" {
            checker.error(
                &vendor.key_loc,
                format!("unsupported GPU vendor `{}`; allowed: nvidia", vendor.name),
            );
            valid = false;
            continue;
        }
        let entries = checker.items(vendor.node, &vendor.path);
        if entries.is_empty() {
            models.push((
                GpuModelKey::new("nvidia", None, None, None),
                "vendor/nvidia/model/*".to_owned(),
            ));
        }
        for (item_path, item) in entries {
            match read_gpu_model(item, &item_path, checker) {
                Some(model) => models.push(model),
                None => valid = false,
            }
        }
    }
    valid.then_some(models)
}

fn read_gpu_model(node: &Node, path: &str, checker: &mut Checker) -> Option<(GpuModelKey, String)> {
    let fields = checker.fields(node, path, &["model", "ram", "interface"])?;
    let model = match fields.get("model") {
        Some(node) => Some(checker.non_empty_string(node, &fields.path("model"), "GPU model")?),
        None => None,
    };
    let ram = match fields.get("ram") {
        Some(node) => Some(read_quantity(
            node,
            &fields.path("ram"),
            "GPU ram",
            (1 << 30, u64::MAX),
            SizeUnits::Binary,
            checker,
        )?),
        None => None,
    };
    let interface = match fields.get("interface") {
        Some(node) => Some(checker.one_of(node, &fields.path("interface"), &["pcie", "sxm"])?),
        None => None,
    };
    // Akash compares models case-insensitively and real files write aliases (`a100-80gb`):
    // both resolve to the canonical parts here, or to an error naming them.
    let written_model = model.clone();
    let (model, ram, interface) = match model.as_deref() {
        Some(written) => match crate::gpu::resolve_model(written, ram, interface.as_deref()) {
            Ok(resolved) => (Some(resolved.model), resolved.ram_bytes, resolved.interface),
            Err(error) => {
                let node = fields.get("model")?;
                checker.error(&Loc::of(node, &fields.path("model")), error.to_string());
                return None;
            }
        },
        None => (None, ram, interface),
    };
    let key = GpuModelKey::new("nvidia", model.as_deref(), ram, interface.as_deref());
    let mut akash_key = format!(
        "vendor/nvidia/model/{}",
        written_model.as_deref().unwrap_or(crate::gpu::WILDCARD)
    );
    if ram.is_some() {
        akash_key.push_str("/ram/");
        akash_key.push_str(key.ram());
    }
    if let Some(interface) = &interface {
        akash_key.push_str("/interface/");
        akash_key.push_str(interface);
    }
    Some((key, akash_key))
}

fn read_placement(entry: &Entry<'_>, checker: &mut Checker) -> Option<PlacementSpec> {
    let fields = checker.fields(
        entry.node,
        &entry.path,
        &["attributes", "signedBy", "pricing"],
    )?;
    let mut attributes = Vec::new();
    if let Some(node) = fields.get("attributes") {
        for attribute in checker.entries(node, &fields.path("attributes")) {
            if let Some(value) = checker.string(attribute.node, &attribute.path) {
                attributes.push(Attribute {
                    key: attribute.name.to_owned(),
                    value,
                });
            }
        }
    }
    attributes.sort();
    let mut signed_by = SignedBy::default();
    if let Some(node) = fields.get("signedBy") {
        let path = fields.path("signedBy");
        if let Some(signers) = checker.fields(node, &path, &["allOf", "anyOf"]) {
            let list = |checker: &mut Checker, name: &str| {
                signers
                    .get(name)
                    .and_then(|node| checker.string_list(node, &signers.path(name)))
                    .unwrap_or_default()
            };
            signed_by.all_of = list(checker, "allOf");
            signed_by.any_of = list(checker, "anyOf");
        }
    }
    let mut pricing = BTreeMap::new();
    let mut priced = BTreeSet::new();
    if let Some(node) = checker.required(&fields, "pricing", "a price per compute profile") {
        for price in checker.entries(node, &fields.path("pricing")) {
            priced.insert(price.name.to_owned());
            if let Some(value) = read_price(price.node, &price.path, checker) {
                pricing.insert(price.name.to_owned(), value);
            }
        }
    }
    Some(PlacementSpec {
        attributes,
        signed_by,
        pricing,
        priced,
    })
}

fn is_accepted_denom(denom: &str) -> bool {
    ACCEPTED_DENOMS.contains(&denom)
        || denom
            .strip_prefix("ibc/")
            .is_some_and(|hash| hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn read_price(node: &Node, path: &str, checker: &mut Checker) -> Option<Price> {
    let fields = checker.fields(node, path, &["denom", "amount"])?;
    let denom = checker
        .required(&fields, "denom", "a token denomination")
        .and_then(|node| {
            let denom_path = fields.path("denom");
            let denom = checker.string(node, &denom_path)?;
            if is_accepted_denom(&denom) {
                Some(denom)
            } else {
                checker.error(
                    &Loc::of(node, &denom_path),
                    format!(
                        "denom `{denom}` is not accepted; allowed: {}, ibc/<64 hex digits>",
                        ACCEPTED_DENOMS.join(", ")
                    ),
                );
                None
            }
        });
    let amount = checker
        .required(&fields, "amount", "a price per replica per hour")
        .and_then(|node| {
            let amount_path = fields.path("amount");
            let text = checker.string(node, &amount_path)?;
            match text.parse::<Amount>() {
                Ok(amount) if amount.atto() > 0 => Some(amount),
                Ok(_) => {
                    checker.error(
                        &Loc::of(node, &amount_path),
                        "amount must be greater than 0",
                    );
                    None
                }
                Err(error) => {
                    checker.error(
                        &Loc::of(node, &amount_path),
                        format!("amount `{text}` {error}"),
                    );
                    None
                }
            }
        });
    Some(Price {
        denom: denom?,
        amount: amount?,
    })
}

fn read_deployments(
    node: &Node,
    checker: &mut Checker,
) -> BTreeMap<String, BTreeMap<String, DeploymentSpec>> {
    let mut deployments = BTreeMap::new();
    let services = checker.entries(node, "deployment");
    if services.is_empty() {
        checker.error(
            &Loc::of(node, "deployment"),
            "at least one service must be deployed",
        );
    }
    for service in services {
        let mut placements = BTreeMap::new();
        for placement in checker.entries(service.node, &service.path) {
            let Some(fields) =
                checker.fields(placement.node, &placement.path, &["profile", "count"])
            else {
                continue;
            };
            let profile = checker
                .required(&fields, "profile", "a compute profile name")
                .and_then(|node| {
                    checker.non_empty_string(node, &fields.path("profile"), "profile")
                });
            let count = checker
                .required(&fields, "count", "a replica count")
                .and_then(|node| checker.integer(node, &fields.path("count"), 1, MAX_UNIT_COUNT))
                .and_then(|count| u32::try_from(count).ok());
            if let (Some(profile), Some(count)) = (profile, count) {
                placements.insert(
                    placement.name.to_owned(),
                    DeploymentSpec {
                        profile,
                        count,
                        loc: fields.loc.clone(),
                    },
                );
            }
        }
        deployments.insert(service.name.to_owned(), placements);
    }
    deployments
}

fn is_endpoint_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let leading = bytes.iter().take_while(|b| b.is_ascii_lowercase()).count();
    leading >= 1
        && bytes.len() >= 2
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

fn read_endpoints(node: &Node, checker: &mut Checker) -> BTreeMap<String, Loc> {
    let mut endpoints = BTreeMap::new();
    for entry in checker.entries(node, "endpoints") {
        if !is_endpoint_name(entry.name) {
            checker.error(
                &entry.key_loc,
                format!(
                    "endpoint name `{}` is invalid; use lower-case letters first, then \
                     lower-case letters, digits, '-' or '_' (at least 2 characters)",
                    entry.name
                ),
            );
        }
        if let Some(fields) = checker.fields(entry.node, &entry.path, &["kind"]) {
            checker
                .required(&fields, "kind", "`ip`")
                .and_then(|kind| checker.one_of(kind, &fields.path("kind"), &["ip"]));
        }
        endpoints.insert(entry.name.to_owned(), entry.key_loc.clone());
    }
    endpoints
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
