//! The derived, public types: on-chain groups and the off-chain manifest.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha3::{Digest, Keccak256};

use crate::error::TotalsError;
use crate::gpu::GpuModelPattern;
use crate::units::Amount;

/// A key/value attribute (placement requirement, storage or GPU attribute).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Attribute {
    /// Attribute key, e.g. `region` or `vendor/nvidia/model/a100`.
    pub key: String,
    /// Attribute value.
    pub value: String,
}

/// Which auditors must have signed a provider's attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBy {
    /// Every one of these must have signed.
    pub all_of: Vec<String>,
    /// At least one of these must have signed.
    pub any_of: Vec<String>,
}

/// What a provider must offer to bid on a group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirements {
    /// Provider attributes, sorted by key (includes `tee/type` for TEE services).
    pub attributes: Vec<Attribute>,
    /// Auditor signatures.
    pub signed_by: SignedBy,
}

/// Akash's memory-backed storage class: a `ram` volume is shared memory (a tmpfs), so it
/// is paid for and reserved as memory, never as disk.
pub const RAM_STORAGE_CLASS: &str = "ram";

/// The storage class of a persistent volume that names none.
pub const DEFAULT_STORAGE_CLASS: &str = "default";

/// Akash's provider attribute announcing a storage class (`…/class=beta2`), and the one
/// announcing persistent storage at all (`…/persistent=true`). Providers announce one
/// `class` entry per class they have, all under index 1, so that an order's required
/// `key=value` matches exactly (on chain, attributes are compared as hashes).
pub const STORAGE_CLASS_ATTRIBUTE: &str = "capabilities/storage/1/class";
/// See [`STORAGE_CLASS_ATTRIBUTE`].
pub const STORAGE_PERSISTENT_ATTRIBUTE: &str = "capabilities/storage/1/persistent";

/// The `key=value` provider attributes that announce persistent storage of `class`.
pub fn storage_class_attributes(class: &str) -> [String; 2] {
    [
        format!("{STORAGE_CLASS_ATTRIBUTE}={class}"),
        format!("{STORAGE_PERSISTENT_ATTRIBUTE}=true"),
    ]
}

/// One storage volume of a resource unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage {
    /// Volume name (`default` for a single unnamed volume).
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Storage class (`default`, `beta1`, `beta2`, `beta3`, `ram`), if any.
    pub class: Option<String>,
    /// Whether the volume survives restarts.
    pub persistent: bool,
    /// The volume's attributes in Akash form (empty when the SDL gave none).
    pub attributes: Vec<Attribute>,
}

impl Storage {
    /// Whether the volume is shared memory rather than disk ([`RAM_STORAGE_CLASS`]).
    pub fn is_ram(&self) -> bool {
        self.class.as_deref() == Some(RAM_STORAGE_CLASS)
    }

    /// The class a persistent volume is stored in ([`DEFAULT_STORAGE_CLASS`] when it
    /// names none); `None` for a volume that does not persist.
    pub fn persistent_class(&self) -> Option<&str> {
        self.persistent
            .then(|| self.class.as_deref().unwrap_or(DEFAULT_STORAGE_CLASS))
    }
}

/// GPUs of a resource unit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// Number of GPUs per replica.
    pub units: u32,
    /// Acceptable models (any one of them); empty when `units` is 0.
    pub models: Vec<GpuModelPattern>,
    /// Akash attribute form, e.g. `vendor/nvidia/model/a100` = `true`, sorted by key.
    pub attributes: Vec<Attribute>,
}

/// How a service is reachable from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    /// Global HTTP on port 80, through the provider's shared ingress.
    SharedHttp,
    /// Global non-HTTP port, published on a random host port.
    RandomPort,
    /// A leased IP address (named in `endpoints:`).
    LeasedIp,
}

/// An endpoint a resource unit needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Kind of endpoint.
    pub kind: EndpointKind,
    /// For leased IPs, which IP endpoint (see the manifest's `endpoint_sequence_number`); else 0.
    pub sequence_number: u32,
}

/// The resources of one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Resource id inside its group (1-based), shared by the manifest services using it.
    pub id: u32,
    /// CPU in thousandths of a core.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Storage volumes, ordered as Akash orders them (by size).
    pub storage: Vec<Storage>,
    /// GPUs.
    pub gpu: Gpu,
    /// Endpoints.
    pub endpoints: Vec<Endpoint>,
}

impl Resources {
    /// The memory a replica really uses: its `memory` plus its `ram` volumes, which live
    /// in memory. `None` on overflow.
    pub fn memory_with_ram_bytes(&self) -> Option<u64> {
        self.storage
            .iter()
            .filter(|volume| volume.is_ram())
            .try_fold(self.memory_bytes, |sum, volume| {
                sum.checked_add(volume.bytes)
            })
    }

    /// The disk a replica uses: every volume except the `ram` ones. `None` on overflow.
    pub fn disk_storage_bytes(&self) -> Option<u64> {
        self.storage
            .iter()
            .filter(|volume| !volume.is_ram())
            .try_fold(0u64, |sum, volume| sum.checked_add(volume.bytes))
    }
}

/// A price: the most a tenant pays per replica per hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// Payment token denomination, e.g. `usdc` or `uakt`.
    pub denom: String,
    /// Token base units per replica per hour.
    pub amount: Amount,
}

/// `count` replicas with the same resources and price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceUnit {
    /// Resources of one replica.
    #[serde(flatten)]
    pub resources: Resources,
    /// Number of replicas.
    pub count: u32,
    /// Maximum price per replica per hour.
    pub price: Price,
}

/// One placement of the SDL: one on-chain order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Placement name.
    pub name: String,
    /// Provider requirements.
    pub requirements: Requirements,
    /// Resource units, in Akash's order.
    pub units: Vec<ResourceUnit>,
}

/// A group's resources summed over its units (`resource × count`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Replicas in the group.
    pub replicas: u64,
    /// CPU millicores.
    pub cpu_millis: u64,
    /// Memory bytes, `ram` volumes included.
    pub memory_bytes: u64,
    /// Storage bytes over all volumes except the `ram` ones.
    pub storage_bytes: u64,
    /// GPUs.
    pub gpu_units: u64,
    /// Maximum price per hour for the whole group (same denom as every unit).
    pub price: Price,
}

fn checked_total(
    group: &Group,
    resource: &'static str,
    per_unit: impl Fn(&ResourceUnit) -> Option<u64>,
) -> Result<u64, TotalsError> {
    let overflow = || TotalsError {
        group: group.name.clone(),
        resource,
    };
    group.units.iter().try_fold(0u64, |sum, unit| {
        let amount = per_unit(unit).ok_or_else(overflow)?;
        amount
            .checked_mul(u64::from(unit.count))
            .and_then(|scaled| sum.checked_add(scaled))
            .ok_or_else(overflow)
    })
}

impl Group {
    /// Every provider attribute the group needs, as `key=value`: its placement's
    /// attributes, and the storage attributes of each class its persistent volumes use,
    /// so that a provider without that class is not eligible (checked on chain).
    pub fn required_attributes(&self) -> BTreeSet<String> {
        let placement = self
            .requirements
            .attributes
            .iter()
            .map(|attribute| format!("{}={}", attribute.key, attribute.value));
        let storage = self
            .units
            .iter()
            .flat_map(|unit| unit.resources.storage.iter())
            .filter_map(Storage::persistent_class)
            .flat_map(storage_class_attributes);
        placement.chain(storage).collect()
    }

    /// Leased IP addresses the group needs: one per distinct IP endpoint (`endpoints:` name)
    /// its services expose on, however many ports or services share it.
    pub fn leased_ip_count(&self) -> usize {
        self.units
            .iter()
            .flat_map(|unit| unit.resources.endpoints.iter())
            .filter(|endpoint| endpoint.kind == EndpointKind::LeasedIp)
            .map(|endpoint| endpoint.sequence_number)
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Sums resources × count over the units, with checked arithmetic.
    pub fn totals(&self) -> Result<Totals, TotalsError> {
        let replicas = checked_total(self, "replicas", |_| Some(1))?;
        let cpu_millis = checked_total(self, "cpu", |unit| Some(unit.resources.cpu_millis))?;
        let memory_bytes = checked_total(self, "memory", |unit| {
            unit.resources.memory_with_ram_bytes()
        })?;
        let storage_bytes =
            checked_total(self, "storage", |unit| unit.resources.disk_storage_bytes())?;
        let gpu_units = checked_total(self, "gpu", |unit| {
            Some(u64::from(unit.resources.gpu.units))
        })?;
        let price_overflow = || TotalsError {
            group: self.name.clone(),
            resource: "price",
        };
        let amount = self.units.iter().try_fold(Amount::default(), |sum, unit| {
            unit.price
                .amount
                .checked_mul(u128::from(unit.count))
                .and_then(|scaled| sum.checked_add(scaled))
                .ok_or_else(price_overflow)
        })?;
        let denom = self
            .units
            .first()
            .map(|unit| unit.price.denom.clone())
            .unwrap_or_default();
        Ok(Totals {
            replicas,
            cpu_millis,
            memory_bytes,
            storage_bytes,
            gpu_units,
            price: Price { denom, amount },
        })
    }
}

/// Transport protocol of an exposed port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
}

/// Ingress proxy options of an exposed port (Akash defaults filled in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpOptions {
    /// Largest request body in bytes (default 1 MiB, at most 100 MiB).
    pub max_body_size: u32,
    /// Read timeout in ms (default and maximum 60000).
    pub read_timeout: u32,
    /// Send timeout in ms (default and maximum 60000).
    pub send_timeout: u32,
    /// Upstream attempts (default 3).
    pub next_tries: u32,
    /// Time allowed for retries in ms (default 0: unlimited).
    pub next_timeout: u32,
    /// When to retry (default `error`, `timeout`).
    pub next_cases: Vec<String>,
}

/// One exposure of a service port (one per `to` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expose {
    /// Container port.
    pub port: u16,
    /// Externally visible port (`as`), 0 when not given.
    pub external_port: u16,
    /// Protocol.
    pub proto: Protocol,
    /// Service allowed to connect (empty for global or unrestricted).
    pub service: String,
    /// Reachable from outside the deployment.
    pub global: bool,
    /// Accepted host names for HTTP ingress.
    pub hosts: Vec<String>,
    /// Ingress proxy options.
    pub http_options: HttpOptions,
    /// Leased IP endpoint name, empty if none.
    pub ip: String,
    /// Sequence number of the leased IP endpoint, 0 if none.
    pub endpoint_sequence_number: u32,
}

/// A storage volume mounted into a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageMount {
    /// Volume name from the compute profile.
    pub name: String,
    /// Absolute mount path.
    pub mount: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Trusted-execution settings of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tee {
    /// `cpu` or `cpu-gpu`.
    pub kind: String,
    /// Whether attestation is required (default true).
    pub attestation: bool,
}

/// Service parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceParams {
    /// Volume mounts, sorted by volume name.
    pub storage: Vec<StorageMount>,
    /// Read permissions granted to the service (`deployment`, `logs`, `events`).
    pub permissions: Vec<String>,
    /// TEE settings.
    pub tee: Option<Tee>,
}

/// Private registry credentials. `Debug` and `Display` never show the password, so a
/// manifest can be logged or put in an error message without leaking it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// Registry host.
    pub host: String,
    /// Account e-mail (v2.1; empty for v2.0 files, as Akash drops it).
    pub email: String,
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("host", &self.host)
            .field("email", &self.email)
            .field("username", &self.username)
            .field("password", &REDACTED)
            .finish()
    }
}

impl std::fmt::Display for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{} (password {REDACTED})", self.username, self.host)
    }
}

/// What `Debug` and `Display` print in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// One service as a provider runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Service name.
    pub name: String,
    /// Container image.
    pub image: String,
    /// Entrypoint override.
    pub command: Option<Vec<String>>,
    /// Arguments override.
    pub args: Option<Vec<String>>,
    /// Environment, `NAME=value`.
    pub env: Option<Vec<String>>,
    /// Resources of each replica (its `id` names the group's resource unit).
    pub resources: Resources,
    /// Replicas of this service.
    pub count: u32,
    /// Exposed ports, in Akash's order.
    pub expose: Vec<Expose>,
    /// Parameters, if the SDL gave any.
    pub params: Option<ServiceParams>,
    /// Registry credentials, if any.
    pub credentials: Option<Credentials>,
}

/// The services of one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestGroup {
    /// Group (placement) name.
    pub name: String,
    /// Services sorted by name.
    pub services: Vec<Service>,
}

impl ManifestGroup {
    /// The IP endpoint names the group's global exposes use, sorted and distinct: the
    /// provider hands the lease's leased addresses out in this order, so the count matches
    /// [`Group::leased_ip_count`] of the order's group.
    pub fn leased_ip_names(&self) -> Vec<&str> {
        self.services
            .iter()
            .flat_map(|service| service.expose.iter())
            .filter(|expose| expose.global && !expose.ip.is_empty())
            .map(|expose| expose.ip.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

/// The off-chain manifest: what providers need to run the deployment.
///
/// # Canonical JSON and hash
///
/// [`Manifest::canonical_json`] is the input of [`Manifest::hash`] and therefore of the
/// on-chain `manifestHash`. Its exact rules:
///
/// 1. The value is this manifest serialised with serde: a JSON object
///    `{"groups": [...]}`; groups sorted by name, services by name, exposes and
///    storage volumes in Akash's order; field names are the Rust field names
///    (snake_case); enums are strings (`"TCP"`, `"shared_http"`).
/// 2. Every field is present: absent options are `null`, empty lists `[]`.
/// 3. Object keys are sorted by their UTF-8 bytes, at every level.
/// 4. No insignificant whitespace: no spaces or newlines outside strings.
/// 5. Numbers are integers in plain decimal; prices (amounts) are decimal strings
///    with no trailing fractional zeros (`"1000"`, `"0.5"`). There are no floats.
/// 6. Strings are UTF-8, escaped as serde_json does: `\"`, `\\`, `\n`, `\r`, `\t`,
///    `\b`, `\f`, other control characters as `\u00XX` (lower-case hex); everything
///    else, including non-ASCII, is written as is.
///
/// The hash is `keccak256` of those bytes. It does not depend on key order,
/// comments, quoting or layout of the YAML, since the manifest is derived from
/// the parsed SDL (mappings are ordered by name); sequence order (env, args,
/// command, expose, accept) is significant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Groups sorted by name.
    pub groups: Vec<ManifestGroup>,
}

impl Manifest {
    /// The canonical JSON text (see the type's documentation for the rules).
    pub fn canonical_json(&self) -> String {
        let mut out = String::new();
        // Serialising these plain data types cannot fail (no maps with non-string keys).
        if let Ok(value) = serde_json::to_value(self) {
            write_canonical(&value, &mut out);
        }
        out
    }

    /// `keccak256` of [`Manifest::canonical_json`].
    pub fn hash(&self) -> [u8; 32] {
        Keccak256::digest(self.canonical_json().as_bytes()).into()
    }

    /// [`Manifest::hash`] as `0x`-prefixed lower-case hex.
    pub fn hash_hex(&self) -> String {
        format!("0x{}", hex::encode(self.hash()))
    }
}

/// Writes `value` with object keys sorted explicitly, so the result does not depend on
/// whether some other crate in the build enables serde_json's `preserve_order`.
fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|(left, _), (right, _)| left.as_bytes().cmp(right.as_bytes()));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod credentials_tests {
    use super::Credentials;

    #[test]
    fn debug_and_display_redact_the_password() {
        let credentials = Credentials {
            host: "registry.example.com".into(),
            email: "ops@example.com".into(),
            username: "ops".into(),
            password: "hunter2-very-secret".into(),
        };
        let debug = format!("{credentials:?} {credentials:#?}");
        let display = credentials.to_string();
        for text in [&debug, &display] {
            assert!(!text.contains("hunter2"), "password leaked: {text}");
            assert!(text.contains("registry.example.com"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
        // The canonical JSON (the manifest hash's input) still carries it.
        let json = serde_json::to_string(&credentials).unwrap();
        assert!(json.contains("hunter2-very-secret"));
    }
}
