//! The container runtime abstraction: one trait, several backends.
//!
//! [`Runtime`] is what the daemon's lease state machine and reconciler talk to
//! (through an `Arc<dyn Runtime>`). Everything that does not depend on a
//! particular engine lives here, so that the Docker backend ([`docker`]) and a
//! later Kubernetes backend agree on it without duplicating it: the input types,
//! validation, object naming, label keys, resource conversions, URI computation
//! and the assembly of a lease's status from observed replicas.

pub mod docker;
pub mod image;
pub mod kubernetes;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use futures_util::Stream;

/// Label naming the lease an object belongs to (value: the decimal lease id).
pub const LABEL_LEASE: &str = "io.leasehold.lease";
/// Label naming the tenant (0x address) of the lease.
pub const LABEL_TENANT: &str = "io.leasehold.tenant";
/// Label naming the manifest service a replica runs.
pub const LABEL_SERVICE: &str = "io.leasehold.service";
/// Label holding the replica index (0-based) within its service.
pub const LABEL_REPLICA: &str = "io.leasehold.replica";
/// Label holding the number of replicas the service was deployed with, so that
/// status can report missing replicas without access to the manifest.
pub const LABEL_REPLICAS: &str = "io.leasehold.replicas";
/// Label holding the global exposures of a service (see [`encode_exposures`]),
/// so that status can rebuild URIs from what the engine reports.
pub const LABEL_EXPOSE: &str = "io.leasehold.expose";

/// Label holding the ephemeral storage (bytes) a replica may write, where the engine
/// cannot cap its writable layer itself.
pub const LABEL_STORAGE: &str = "io.leasehold.storage";

/// Label holding [`ReplicaSpec::spec_hash`]: a replica whose hash differs from
/// the deployment's is replaced rather than reused.
pub const LABEL_SPEC: &str = "io.leasehold.spec";

/// Label naming the chain (decimal chain id) whose lease an object runs.
pub const LABEL_CHAIN: &str = "io.leasehold.chain";
/// Label naming the provider (lower-case 0x address) that runs an object, so that
/// daemons sharing an engine or a cluster never list or touch each other's workloads.
pub const LABEL_PROVIDER: &str = "io.leasehold.provider";

/// Prefix of every object name the runtimes create.
pub const NAME_PREFIX: &str = "leasehold";

/// Whose workloads a runtime runs: lease ids are only unique per chain and provider, so
/// every name and label carries both. Two daemons on one engine (two chains, or a test
/// and a production daemon) each see and touch only their own lease 1.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuntimeScope {
    pub chain_id: u64,
    /// Lower-case 0x address.
    pub provider: String,
}

impl RuntimeScope {
    pub fn new(chain_id: u64, provider: impl AsRef<str>) -> Self {
        RuntimeScope {
            chain_id,
            provider: provider.as_ref().to_ascii_lowercase(),
        }
    }

    /// Six hex digits of sha256 of chain id and provider: short enough for Linux
    /// interface names, distinct enough that the daemons of one engine never meet
    /// (labels, which carry both in full, are checked before anything is touched).
    pub fn tag(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{}/{}", self.chain_id, self.provider));
        digest
            .iter()
            .take(3)
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// The labels naming the scope.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_CHAIN.to_owned(), self.chain_id.to_string()),
            (LABEL_PROVIDER.to_owned(), self.provider.clone()),
        ])
    }

    /// `key=value` selectors matching exactly this scope's objects.
    pub fn selectors(&self) -> Vec<String> {
        self.labels()
            .into_iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect()
    }

    /// Whether labels read back from the engine name this scope.
    pub fn owns(&self, labels: &dyn Fn(&str) -> Option<String>) -> bool {
        labels(LABEL_CHAIN).as_deref() == Some(self.chain_id.to_string().as_str())
            && labels(LABEL_PROVIDER).as_deref() == Some(self.provider.as_str())
    }

    /// Name of the per-lease network (Docker).
    pub fn lease_network_name(&self, lease_id: u64) -> String {
        format!("{NAME_PREFIX}-{}-lease-{lease_id}", self.tag())
    }

    /// Deterministic name of one replica, so that a repeated deploy finds it.
    /// Unambiguous because service names start with a letter and end without '-'.
    pub fn replica_name(&self, lease_id: u64, service: &str, replica: u32) -> String {
        format!(
            "{NAME_PREFIX}-{}-{lease_id}-{service}-{replica}",
            self.tag()
        )
    }
}

impl Default for RuntimeScope {
    /// Chain 0 and the zero address: no daemon runs there, so tools and tests that need
    /// no particular scope cannot meet a daemon's workloads.
    fn default() -> Self {
        RuntimeScope::new(0, format!("0x{}", "0".repeat(40)))
    }
}

/// Smallest memory limit accepted: the SDL's own floor (Docker refuses anything below
/// 6 MiB), so `tenant validate` and the runtime can never disagree.
pub const MIN_MEMORY_BYTES: u64 = leasehold_manifests::limits::MIN_UNIT_MEMORY_BYTES;

/// Upper bound on replicas per service: keeps names, port usage and the work of
/// one deploy call bounded whatever the caller passes in.
pub const MAX_REPLICAS_PER_SERVICE: u32 = 1024;

/// Most replicas (over all services) one lease may run: what the largest lease network
/// (a /22 on Docker) addresses. The bidder refuses larger orders through
/// [`lease_fits_one_network`], so nothing is bid on that could not run.
pub const MAX_REPLICAS_PER_LEASE: u32 = 1021;

/// Whether a lease of `replicas` replicas can run on one lease network.
pub fn lease_fits_one_network(replicas: u64) -> bool {
    replicas <= u64::from(MAX_REPLICAS_PER_LEASE)
}

/// Longest service name accepted: a DNS label, as Akash requires.
pub const MAX_SERVICE_NAME_LEN: usize = 63;

/// A lease's workload, in runtime-neutral terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseDeployment {
    pub lease_id: u64,
    /// The tenant's 0x-prefixed EVM address.
    pub tenant: String,
    pub services: Vec<ServiceDeployment>,
}

/// One manifest service: `replicas` identical copies of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDeployment {
    /// A DNS label (lower-case letters, digits and '-', starting with a letter).
    /// Other services of the same lease reach this one by that name.
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint when non-empty (Akash `command`).
    pub command: Vec<String>,
    /// Replaces the image's default arguments when non-empty (Akash `args`).
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub expose: Vec<PortExposure>,
    pub resources: ServiceResources,
    pub replicas: u32,
    /// GPU device ids for each replica: empty, or exactly one entry per replica.
    pub gpu_devices: Vec<Vec<String>>,
    /// Volumes that outlive a replica (Akash `persistent: true` storage), one set per
    /// replica. Empty for most services; Kubernetes turns a service with volumes into a
    /// StatefulSet.
    pub volumes: Vec<PersistentVolume>,
    /// GPU models the service accepts (canonical keys, `*` parts allowed); empty means
    /// any. Kubernetes pins GPU replicas to nodes carrying one of them.
    pub gpu_models: Vec<String>,
}

/// A persistent volume of each replica of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistentVolume {
    /// A DNS label, unique within the service.
    pub name: String,
    /// Absolute path the volume is mounted at.
    pub mount: String,
    pub size_bytes: u64,
    /// The storage class the tenant asked for (Akash `class`, e.g. `beta2`); `None`
    /// for the provider's default.
    pub class: Option<String>,
    pub read_only: bool,
}

/// A container port and how it is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortExposure {
    /// The port the container listens on.
    pub port: u16,
    /// The port the service is exposed as (Akash `as`; the caller fills in
    /// `port` when the manifest omits it). 80 and 443 mean HTTP(S).
    pub external_port: u16,
    pub proto: Protocol,
    /// Exposed to the world (published on a host port) rather than only to the
    /// lease's other services.
    pub global: bool,
    /// A fixed host port for a global exposure; `None` lets the engine choose.
    /// Only valid for a single-replica service.
    pub host_port: Option<u16>,
}

impl PortExposure {
    /// Exposed to the world under its own port number, on an engine-chosen host port.
    pub fn global(port: u16, proto: Protocol) -> Self {
        PortExposure {
            port,
            external_port: port,
            proto,
            global: true,
            host_port: None,
        }
    }
}

impl ServiceDeployment {
    /// One replica of `image` as it is: no command override, environment,
    /// ports or GPUs.
    pub fn new(
        name: impl Into<String>,
        image: impl Into<String>,
        resources: ServiceResources,
    ) -> Self {
        ServiceDeployment {
            name: name.into(),
            image: image.into(),
            command: Vec::new(),
            args: Vec::new(),
            env: BTreeMap::new(),
            expose: Vec::new(),
            resources,
            replicas: 1,
            gpu_devices: Vec::new(),
            volumes: Vec::new(),
            gpu_models: Vec::new(),
        }
    }

    /// GPUs each replica gets (the length of its device list).
    pub fn gpus_per_replica(&self) -> u32 {
        self.gpu_devices.first().map_or(0, |devices| {
            u32::try_from(devices.len()).unwrap_or(u32::MAX)
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Resources of one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceResources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
}

impl ServiceResources {
    /// CPU limit in billionths of a core (Docker's `NanoCpus`).
    pub fn nano_cpus(&self) -> Result<i64, RuntimeError> {
        self.cpu_millis
            .checked_mul(1_000_000)
            .and_then(|nanos| i64::try_from(nanos).ok())
            .ok_or_else(|| invalid("resources.cpu_millis", "too large"))
    }

    /// Memory limit in bytes as the engines' signed type.
    pub fn memory_limit_bytes(&self) -> Result<i64, RuntimeError> {
        i64::try_from(self.memory_bytes).map_err(|_| invalid("resources.memory_bytes", "too large"))
    }
}

/// One replica the deployment asks for, with its deterministic name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSpec<'a> {
    pub service: &'a ServiceDeployment,
    pub index: u32,
    pub name: String,
    pub gpu_devices: &'a [String],
}

impl ReplicaSpec<'_> {
    /// A stable fingerprint of everything the replica runs with (FNV-1a over a
    /// length-prefixed encoding: stable across builds and daemon versions, so a
    /// restarted daemon recognises its own replicas). The replica count is part
    /// of it because replicas carry it in their labels.
    pub fn spec_hash(&self) -> String {
        let service = self.service;
        let mut hasher = SpecHasher::default();
        hasher.field(service.image.as_bytes());
        hasher.list(service.command.iter().map(String::as_bytes));
        hasher.list(service.args.iter().map(String::as_bytes));
        hasher.list(
            service
                .env
                .iter()
                .flat_map(|(key, value)| [key.as_bytes(), value.as_bytes()]),
        );
        for exposure in &service.expose {
            hasher.field(&exposure.port.to_be_bytes());
            hasher.field(&exposure.external_port.to_be_bytes());
            hasher.field(exposure.proto.as_str().as_bytes());
            hasher.field(&[u8::from(exposure.global)]);
            hasher.field(&exposure.host_port.map_or(-1, i32::from).to_be_bytes());
        }
        hasher.field(&service.resources.cpu_millis.to_be_bytes());
        hasher.field(&service.resources.memory_bytes.to_be_bytes());
        hasher.field(&service.resources.storage_bytes.to_be_bytes());
        hasher.field(&service.replicas.to_be_bytes());
        hasher.list(self.gpu_devices.iter().map(String::as_bytes));
        // Hashed only when present, so that replicas deployed before these fields
        // existed keep their fingerprint.
        for volume in &service.volumes {
            hasher.field(volume.name.as_bytes());
            hasher.field(volume.mount.as_bytes());
            hasher.field(&volume.size_bytes.to_be_bytes());
            hasher.field(volume.class.as_deref().unwrap_or("").as_bytes());
            hasher.field(&[u8::from(volume.read_only)]);
        }
        if !service.gpu_models.is_empty() {
            hasher.list(service.gpu_models.iter().map(String::as_bytes));
        }
        format!("{:016x}", hasher.state)
    }
}

struct SpecHasher {
    state: u64,
}

impl Default for SpecHasher {
    fn default() -> Self {
        SpecHasher {
            state: 0xcbf2_9ce4_8422_2325,
        }
    }
}

impl SpecHasher {
    fn bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.state ^= u64::from(*byte);
            self.state = self.state.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
    fn field(&mut self, bytes: &[u8]) {
        self.bytes(&(bytes.len() as u64).to_be_bytes());
        self.bytes(bytes);
    }

    fn list<'b>(&mut self, items: impl Iterator<Item = &'b [u8]>) {
        let mut count = 0u64;
        for item in items {
            self.field(item);
            count = count.wrapping_add(1);
        }
        self.field(&count.to_be_bytes());
    }
}

impl LeaseDeployment {
    /// Checks everything a runtime relies on, naming the offending field.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        validate_tenant(&self.tenant)?;
        if self.services.is_empty() {
            return Err(invalid("services", "at least one service is required"));
        }
        let replicas = self
            .services
            .iter()
            .map(|service| u64::from(service.replicas))
            .sum::<u64>();
        if !lease_fits_one_network(replicas) {
            return Err(invalid(
                "services",
                format!(
                    "{replicas} replicas in all; one lease runs at most {MAX_REPLICAS_PER_LEASE}"
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for service in &self.services {
            if !seen.insert(service.name.as_str()) {
                return Err(invalid(
                    format!("services.{}", service.name),
                    "duplicate service name",
                ));
            }
            service.validate()?;
        }
        Ok(())
    }

    /// Every replica of every service, in a stable order, named for `scope`.
    pub fn replicas<'a>(
        &'a self,
        scope: &'a RuntimeScope,
    ) -> impl Iterator<Item = ReplicaSpec<'a>> + 'a {
        self.services.iter().flat_map(move |service| {
            (0..service.replicas).map(move |index| ReplicaSpec {
                service,
                index,
                name: scope.replica_name(self.lease_id, &service.name, index),
                gpu_devices: usize::try_from(index)
                    .ok()
                    .and_then(|i| service.gpu_devices.get(i))
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
            })
        })
    }

    /// Labels every object of this lease carries: the lease, its tenant and the scope.
    pub fn lease_labels(&self, scope: &RuntimeScope) -> BTreeMap<String, String> {
        let mut labels = scope.labels();
        labels.insert(LABEL_LEASE.to_owned(), self.lease_id.to_string());
        labels.insert(LABEL_TENANT.to_owned(), self.tenant.clone());
        labels
    }

    /// Labels of one replica: the lease's plus what status needs to rebuild the
    /// service's view without the manifest.
    pub fn replica_labels(
        &self,
        scope: &RuntimeScope,
        replica: &ReplicaSpec<'_>,
    ) -> BTreeMap<String, String> {
        let mut labels = self.lease_labels(scope);
        labels.insert(LABEL_SERVICE.to_owned(), replica.service.name.clone());
        labels.insert(LABEL_REPLICA.to_owned(), replica.index.to_string());
        labels.insert(
            LABEL_REPLICAS.to_owned(),
            replica.service.replicas.to_string(),
        );
        labels.insert(
            LABEL_EXPOSE.to_owned(),
            encode_exposures(&replica.service.expose),
        );
        labels.insert(LABEL_SPEC.to_owned(), replica.spec_hash());
        if replica.service.resources.storage_bytes > 0 {
            labels.insert(
                LABEL_STORAGE.to_owned(),
                replica.service.resources.storage_bytes.to_string(),
            );
        }
        labels
    }
}

impl ServiceDeployment {
    fn validate(&self) -> Result<(), RuntimeError> {
        let field = |name: &str| format!("services.{}.{name}", self.name);
        validate_service_name(&self.name)?;
        if let Err(reason) = image::check_reference(&self.image) {
            return Err(invalid(
                field("image"),
                format!(
                    "`{}` is not an image reference: {reason}",
                    self.image.escape_debug()
                ),
            ));
        }
        if self.replicas == 0 || self.replicas > MAX_REPLICAS_PER_SERVICE {
            return Err(invalid(
                field("replicas"),
                format!("must be between 1 and {MAX_REPLICAS_PER_SERVICE}"),
            ));
        }
        if self.resources.cpu_millis == 0 {
            return Err(invalid(
                field("resources.cpu_millis"),
                "must be greater than zero (zero would mean unlimited)",
            ));
        }
        if self.resources.memory_bytes < MIN_MEMORY_BYTES {
            return Err(invalid(
                field("resources.memory_bytes"),
                format!("must be at least {MIN_MEMORY_BYTES} bytes"),
            ));
        }
        self.resources
            .nano_cpus()
            .map_err(|_| invalid(field("resources.cpu_millis"), "too large"))?;
        self.resources
            .memory_limit_bytes()
            .map_err(|_| invalid(field("resources.memory_bytes"), "too large"))?;
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(invalid(
                    field("env"),
                    format!("variable name {key:?} must be non-empty without '=' or NUL"),
                ));
            }
        }
        let mut ports = BTreeSet::new();
        for exposure in &self.expose {
            if exposure.port == 0 || exposure.external_port == 0 {
                return Err(invalid(
                    field("expose"),
                    format!(
                        "port {} as {}: ports must be non-zero",
                        exposure.port, exposure.external_port
                    ),
                ));
            }
            if !ports.insert((exposure.port, exposure.proto)) {
                return Err(invalid(
                    field("expose"),
                    format!("port {}/{} is exposed twice", exposure.port, exposure.proto),
                ));
            }
            if exposure.host_port.is_some() && (!exposure.global || self.replicas > 1) {
                return Err(invalid(
                    field("expose"),
                    format!(
                        "port {}/{}: a fixed host port needs a global exposure and a single replica",
                        exposure.port, exposure.proto
                    ),
                ));
            }
        }
        if !self.gpu_devices.is_empty() {
            let per_replica = u32::try_from(self.gpu_devices.len()).unwrap_or(u32::MAX);
            if per_replica != self.replicas {
                return Err(invalid(
                    field("gpu_devices"),
                    format!(
                        "lists devices for {per_replica} replicas but the service has {}",
                        self.replicas
                    ),
                ));
            }
            for devices in &self.gpu_devices {
                if devices.is_empty() || devices.iter().any(|id| id.trim().is_empty()) {
                    return Err(invalid(
                        field("gpu_devices"),
                        "each replica needs at least one non-empty device id",
                    ));
                }
            }
        }
        if self.gpu_models.iter().any(|model| model.trim().is_empty()) {
            return Err(invalid(field("gpu_models"), "model keys must be non-empty"));
        }
        let mut volume_names = BTreeSet::new();
        let mut mounts = BTreeSet::new();
        for volume in &self.volumes {
            let volume_field = field(&format!("volumes.{}", volume.name));
            if !is_dns_label(&volume.name) {
                return Err(invalid(
                    volume_field,
                    "name must be a DNS label (lower-case letters, digits and '-')",
                ));
            }
            if !volume_names.insert(volume.name.as_str()) {
                return Err(invalid(volume_field, "duplicate volume name"));
            }
            if !volume.mount.starts_with('/') || !mounts.insert(volume.mount.as_str()) {
                return Err(invalid(
                    volume_field,
                    "mount must be an absolute path used by no other volume",
                ));
            }
            if volume.size_bytes == 0 {
                return Err(invalid(volume_field, "size must be greater than zero"));
            }
            if volume
                .class
                .as_deref()
                .is_some_and(|class| !is_dns_label(class))
            {
                return Err(invalid(volume_field, "class must be a DNS label"));
            }
        }
        Ok(())
    }
}

fn validate_tenant(tenant: &str) -> Result<(), RuntimeError> {
    let hex = tenant
        .strip_prefix("0x")
        .ok_or_else(|| invalid("tenant", "must start with 0x"))?;
    if hex.len() != 40 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(invalid("tenant", "must be 0x followed by 40 hex digits"));
    }
    Ok(())
}

/// Lower-case letters, digits and '-', starting with a letter, not ending with '-',
/// at most [`MAX_SERVICE_NAME_LEN`] characters.
pub fn is_dns_label(name: &str) -> bool {
    let starts_with_letter = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    starts_with_letter && valid_chars && !name.ends_with('-') && name.len() <= MAX_SERVICE_NAME_LEN
}

fn validate_service_name(name: &str) -> Result<(), RuntimeError> {
    let field = || format!("services.{name}.name");
    if !is_dns_label(name) {
        return Err(invalid(
            field(),
            format!(
                "must be a DNS label: lower-case letters, digits and '-', starting with a letter, \
                 not ending with '-', at most {MAX_SERVICE_NAME_LEN} characters"
            ),
        ));
    }
    Ok(())
}

/// Reads a lease id back from a label value.
pub fn parse_lease_label(value: &str) -> Option<u64> {
    value.parse().ok()
}

/// Label selector matching every object of one lease (`key=value`).
pub fn lease_selector(lease_id: u64) -> String {
    format!("{LABEL_LEASE}={lease_id}")
}

/// Encodes the global exposures as `port/proto=external,...` for [`LABEL_EXPOSE`].
pub fn encode_exposures(expose: &[PortExposure]) -> String {
    expose
        .iter()
        .filter(|exposure| exposure.global)
        .map(|exposure| {
            format!(
                "{}/{}={}",
                exposure.port, exposure.proto, exposure.external_port
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Decodes [`encode_exposures`]; malformed entries are skipped because labels
/// could have been edited outside the provider.
pub fn decode_exposures(text: &str) -> BTreeMap<(u16, Protocol), u16> {
    text.split(',')
        .filter_map(|entry| {
            let (port_proto, external) = entry.split_once('=')?;
            let (port, proto) = port_proto.split_once('/')?;
            Some((
                (port.parse().ok()?, Protocol::parse(proto)?),
                external.parse().ok()?,
            ))
        })
        .collect()
}

/// The URI under which a published port answers. The scheme says what the provider
/// serves there, not what the port number suggests: a TCP port exposed as 80 is
/// HTTP (Akash routes those through its HTTP ingress, so the workload serves plain
/// HTTP); every other TCP port, 443 included, is forwarded as raw TCP with no TLS
/// terminated by the provider, so it is `tcp://` (Akash lists such ports the same way).
pub fn service_uri(
    public_host: &str,
    proto: Protocol,
    external_port: u16,
    host_port: u16,
) -> String {
    let scheme = match (proto, external_port) {
        (Protocol::Tcp, 80) => "http",
        (Protocol::Tcp, _) => "tcp",
        (Protocol::Udp, _) => "udp",
    };
    if public_host.contains(':') && !public_host.starts_with('[') {
        format!("{scheme}://[{public_host}]:{host_port}")
    } else {
        format!("{scheme}://{public_host}:{host_port}")
    }
}

/// What a runtime observed about one replica; [`LeaseRuntimeStatus::from_observed`]
/// turns a list of them into the status of a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedReplica {
    pub service: String,
    pub replica: u32,
    /// How many replicas the service was deployed with.
    pub service_replicas: u32,
    pub state: ReplicaState,
    pub restart_count: u32,
    pub uris: Vec<String>,
}

/// The state of a lease's workloads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseRuntimeStatus {
    pub lease_id: u64,
    /// Empty when the runtime holds nothing for the lease.
    pub services: Vec<ServiceRuntimeStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRuntimeStatus {
    pub name: String,
    pub ready_replicas: u32,
    pub total_replicas: u32,
    /// Where the service's global ports answer, one per replica and port.
    pub uris: Vec<String>,
    /// One entry per expected replica, in index order.
    pub replicas: Vec<ReplicaStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub replica: u32,
    pub state: ReplicaState,
    pub restart_count: u32,
}

/// What a replica is doing, in terms both Docker and Kubernetes can report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaState {
    /// Expected but not present in the runtime.
    Missing,
    /// Created, not started yet (or image still being prepared).
    Pending,
    Running,
    /// Crashed and waiting to be restarted by the restart policy.
    Restarting {
        last_exit_code: Option<i64>,
    },
    /// Stopped and not going to be restarted (the restart policy gave up, or it
    /// exited successfully).
    Exited {
        exit_code: i64,
        oom_killed: bool,
    },
    /// Anything else the runtime reports (paused, being removed, dead...).
    Other(String),
}

impl ReplicaState {
    pub fn is_ready(&self) -> bool {
        matches!(self, ReplicaState::Running)
    }
}

impl fmt::Display for ReplicaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaState::Missing => f.write_str("missing"),
            ReplicaState::Pending => f.write_str("pending"),
            ReplicaState::Running => f.write_str("running"),
            ReplicaState::Restarting {
                last_exit_code: Some(code),
            } => write!(f, "restarting (last exit code {code})"),
            ReplicaState::Restarting {
                last_exit_code: None,
            } => f.write_str("restarting"),
            ReplicaState::Exited {
                exit_code,
                oom_killed: true,
            } => write!(f, "exited with code {exit_code} (out of memory)"),
            ReplicaState::Exited { exit_code, .. } => write!(f, "exited with code {exit_code}"),
            ReplicaState::Other(state) => f.write_str(state),
        }
    }
}

impl LeaseRuntimeStatus {
    /// Groups observed replicas by service (sorted by name), fills in the
    /// replicas the runtime does not hold as [`ReplicaState::Missing`] and
    /// counts the ready ones.
    pub fn from_observed(lease_id: u64, observed: Vec<ObservedReplica>) -> Self {
        let mut by_service: BTreeMap<String, Vec<ObservedReplica>> = BTreeMap::new();
        for replica in observed {
            by_service
                .entry(replica.service.clone())
                .or_default()
                .push(replica);
        }
        let services = by_service
            .into_iter()
            .map(|(name, mut replicas)| {
                replicas.sort_by_key(|replica| replica.replica);
                let expected = replicas
                    .iter()
                    .map(|replica| replica.service_replicas)
                    .max()
                    .unwrap_or(0);
                let mut uris = BTreeSet::new();
                let mut statuses: BTreeMap<u32, ReplicaStatus> = BTreeMap::new();
                for replica in replicas {
                    uris.extend(replica.uris);
                    statuses.insert(
                        replica.replica,
                        ReplicaStatus {
                            replica: replica.replica,
                            state: replica.state,
                            restart_count: replica.restart_count,
                        },
                    );
                }
                for index in 0..expected {
                    statuses.entry(index).or_insert(ReplicaStatus {
                        replica: index,
                        state: ReplicaState::Missing,
                        restart_count: 0,
                    });
                }
                let replicas: Vec<ReplicaStatus> = statuses.into_values().collect();
                let ready = replicas
                    .iter()
                    .filter(|replica| replica.state.is_ready())
                    .count();
                ServiceRuntimeStatus {
                    name,
                    ready_replicas: u32::try_from(ready).unwrap_or(u32::MAX),
                    total_replicas: expected,
                    uris: uris.into_iter().collect(),
                    replicas,
                }
            })
            .collect();
        LeaseRuntimeStatus { lease_id, services }
    }

    pub fn service(&self, name: &str) -> Option<&ServiceRuntimeStatus> {
        self.services.iter().find(|service| service.name == name)
    }

    /// Every service has all its replicas running.
    pub fn is_ready(&self) -> bool {
        !self.services.is_empty()
            && self
                .services
                .iter()
                .all(|service| service.ready_replicas == service.total_replicas)
    }
}

/// One line a replica wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub service: String,
    pub replica: u32,
    pub stderr: bool,
    /// The line without its trailing newline; bytes, as workloads need not write UTF-8.
    pub line: Vec<u8>,
    /// RFC 3339 time the runtime recorded the line at, when it reports one.
    pub timestamp: Option<String>,
}

/// Something that happened to a lease's workloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEvent {
    pub lease_id: u64,
    pub service: Option<String>,
    pub replica: Option<u32>,
    pub kind: RuntimeEventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeEventKind {
    /// Progress of an image download (`status` as the engine words it).
    PullProgress {
        image: String,
        status: String,
        current: Option<u64>,
        total: Option<u64>,
    },
    PullComplete {
        image: String,
    },
    Created,
    Started,
    Died {
        exit_code: Option<i64>,
    },
    OutOfMemory,
    /// Removed by the provider for exceeding what the lease bought (to be replaced
    /// fresh), with the reason.
    Evicted {
        reason: String,
    },
    Removed,
    /// Any other engine action, by its engine name.
    Other {
        action: String,
    },
}

pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogLine, RuntimeError>> + Send>>;
pub type EventStream = Pin<Box<dyn Stream<Item = Result<RuntimeEvent, RuntimeError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid deployment: {field}: {reason}")]
    InvalidDeployment { field: String, reason: String },
    /// The image is shown escaped: it comes from a tenant.
    #[error("image {} cannot be pulled: {reason}", image.escape_debug())]
    ImagePull { image: String, reason: String },
    #[error("cannot reach the container engine: {reason}")]
    Unavailable { reason: String },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{name} exists but is not part of lease {lease_id}; refusing to touch it")]
    Conflict { name: String, lease_id: u64 },
    #[error("container engine failed to {action}: {reason}")]
    Engine { action: String, reason: String },
    #[error(
        "cannot enforce the lease egress policy: {reason}. Fix that, or set \
         [runtime.docker] egress_policy = \"unrestricted\" to run leases without it"
    )]
    EgressPolicy { reason: String },
}

impl RuntimeError {
    /// Whether the workload itself is at fault (its definition, its image, what the engine
    /// refuses to create), as opposed to the provider's engine being unreachable or in a
    /// state of its own. Only the former counts toward closing a lease whose deployment
    /// keeps failing: an engine outage must never close leases.
    pub fn is_workload_fault(&self) -> bool {
        matches!(
            self,
            RuntimeError::InvalidDeployment { .. }
                | RuntimeError::ImagePull { .. }
                | RuntimeError::Engine { .. }
        )
    }
}

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::InvalidDeployment {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A container runtime that runs leases. Every method is safe to repeat.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Short name of the backend ("docker", "kubernetes").
    fn backend(&self) -> &'static str;

    /// Brings the lease to the deployment: creates what is missing, never
    /// duplicates, and restarts nothing that runs. Safe to call after a crash.
    async fn deploy(&self, deployment: &LeaseDeployment) -> Result<(), RuntimeError>;

    /// What the runtime holds for the lease (no services when nothing).
    async fn status(&self, lease_id: u64) -> Result<LeaseRuntimeStatus, RuntimeError>;

    /// Log lines of the lease's replicas (of one service when given): the last
    /// `tail` lines of each replica (all when `None`), then new ones while
    /// `follow` holds.
    async fn logs(
        &self,
        lease_id: u64,
        service: Option<&str>,
        follow: bool,
        tail: Option<u32>,
    ) -> Result<LogStream, RuntimeError>;

    /// Events of the lease's workloads from now on, including image pull
    /// progress of deploys that run while the stream is open.
    async fn events(&self, lease_id: u64) -> Result<EventStream, RuntimeError>;

    /// Removes everything the lease owns. Succeeds when nothing is left.
    async fn teardown(&self, lease_id: u64) -> Result<(), RuntimeError>;

    /// Ids of the leases the runtime holds anything for, sorted.
    async fn list_leases(&self) -> Result<Vec<u64>, RuntimeError>;

    /// Re-applies what the runtime enforces outside the workloads themselves (Docker:
    /// the lease egress rules, in case someone deleted them). Called every reconcile pass.
    async fn enforce_policies(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// The nodes this runtime places workloads on, when it learns them itself (a
    /// cluster). `None`, the default, means the daemon's own host, which the daemon
    /// describes from its detected hardware.
    async fn cluster_nodes(
        &self,
    ) -> Result<Option<Vec<leasehold_scheduler::NodeSpec>>, RuntimeError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "0x00000000000000000000000000000000000000aa";

    fn web_service() -> ServiceDeployment {
        let resources = ServiceResources {
            cpu_millis: 250,
            memory_bytes: 64 * 1024 * 1024,
            storage_bytes: 0,
        };
        ServiceDeployment {
            expose: vec![PortExposure {
                external_port: 80,
                ..PortExposure::global(8080, Protocol::Tcp)
            }],
            replicas: 2,
            ..ServiceDeployment::new("web", "leasehold/busybox:test", resources)
        }
    }

    fn deployment() -> LeaseDeployment {
        LeaseDeployment {
            lease_id: 42,
            tenant: TENANT.into(),
            services: vec![web_service()],
        }
    }

    fn field_of(err: RuntimeError) -> String {
        match err {
            RuntimeError::InvalidDeployment { field, .. } => field,
            other => panic!("expected an invalid deployment, got {other}"),
        }
    }

    #[test]
    fn names_are_deterministic_and_distinct_per_lease_and_scope() {
        let scope = RuntimeScope::new(31337, "0x00000000000000000000000000000000000000AA");
        let tag = scope.tag();
        assert_eq!(tag.len(), 6);
        assert_eq!(scope.provider, "0x00000000000000000000000000000000000000aa");
        assert_eq!(
            scope.replica_name(42, "web", 1),
            format!("leasehold-{tag}-42-web-1")
        );
        assert_ne!(
            scope.replica_name(4, "2-web", 1),
            scope.replica_name(42, "web", 1)
        );
        assert_eq!(
            scope.lease_network_name(42),
            format!("leasehold-{tag}-lease-42")
        );
        let names: Vec<String> = deployment()
            .replicas(&scope)
            .map(|replica| replica.name)
            .collect();
        assert_eq!(
            names,
            vec![
                format!("leasehold-{tag}-42-web-0"),
                format!("leasehold-{tag}-42-web-1")
            ]
        );
        // Another chain or another provider: other names, same lease id.
        let other_chain = RuntimeScope::new(1, &scope.provider);
        let other_provider = RuntimeScope::new(31337, TENANT.replace("aa", "ab"));
        for other in [other_chain, other_provider] {
            assert_ne!(other.tag(), tag);
            assert_ne!(
                other.replica_name(42, "web", 1),
                scope.replica_name(42, "web", 1)
            );
            assert_ne!(other.labels(), scope.labels());
        }
    }

    #[test]
    fn replica_labels_name_scope_lease_service_and_replica() {
        let deployment = deployment();
        let scope = RuntimeScope::new(5, TENANT);
        let replica = deployment.replicas(&scope).nth(1).expect("two replicas");
        let labels = deployment.replica_labels(&scope, &replica);
        assert_eq!(labels.get(LABEL_CHAIN).map(String::as_str), Some("5"));
        assert_eq!(labels.get(LABEL_PROVIDER).map(String::as_str), Some(TENANT));
        let read = |key: &str| labels.get(key).cloned();
        assert!(scope.owns(&read));
        assert!(!RuntimeScope::new(6, TENANT).owns(&read));
        assert_eq!(labels.get(LABEL_LEASE).map(String::as_str), Some("42"));
        assert_eq!(labels.get(LABEL_TENANT).map(String::as_str), Some(TENANT));
        assert_eq!(labels.get(LABEL_SERVICE).map(String::as_str), Some("web"));
        assert_eq!(labels.get(LABEL_REPLICA).map(String::as_str), Some("1"));
        assert_eq!(labels.get(LABEL_REPLICAS).map(String::as_str), Some("2"));
        assert_eq!(
            labels.get(LABEL_EXPOSE).map(String::as_str),
            Some("8080/tcp=80")
        );
        assert_eq!(lease_selector(42), "io.leasehold.lease=42");
        assert_eq!(parse_lease_label("42"), Some(42));
        assert_eq!(parse_lease_label("x"), None);
    }

    #[test]
    fn exposures_round_trip_through_the_label_and_skip_local_ports() {
        let expose = vec![
            PortExposure {
                external_port: 80,
                ..PortExposure::global(8080, Protocol::Tcp)
            },
            PortExposure {
                external_port: 5353,
                ..PortExposure::global(53, Protocol::Udp)
            },
            PortExposure {
                global: false,
                ..PortExposure::global(9000, Protocol::Tcp)
            },
        ];
        let encoded = encode_exposures(&expose);
        assert_eq!(encoded, "8080/tcp=80,53/udp=5353");
        let decoded = decode_exposures(&encoded);
        assert_eq!(decoded.get(&(8080, Protocol::Tcp)), Some(&80));
        assert_eq!(decoded.get(&(53, Protocol::Udp)), Some(&5353));
        assert_eq!(decoded.len(), 2);
        assert!(decode_exposures("garbage,1/sctp=2,x/tcp=1").is_empty());
    }

    #[test]
    fn uris_follow_the_exposed_port() {
        assert_eq!(
            service_uri("127.0.0.1", Protocol::Tcp, 80, 32768),
            "http://127.0.0.1:32768"
        );
        // Nothing terminates TLS in front of a published port: `as: 443` is raw TCP.
        assert_eq!(
            service_uri("example.org", Protocol::Tcp, 443, 1),
            "tcp://example.org:1"
        );
        assert_eq!(
            service_uri("example.org", Protocol::Tcp, 5432, 2),
            "tcp://example.org:2"
        );
        assert_eq!(
            service_uri("example.org", Protocol::Udp, 80, 3),
            "udp://example.org:3"
        );
        assert_eq!(service_uri("::1", Protocol::Tcp, 80, 4), "http://[::1]:4");
    }

    #[test]
    fn resources_convert_with_overflow_checks() {
        let resources = ServiceResources {
            cpu_millis: 1500,
            memory_bytes: 128 * 1024 * 1024,
            storage_bytes: 0,
        };
        assert_eq!(resources.nano_cpus().ok(), Some(1_500_000_000));
        assert_eq!(resources.memory_limit_bytes().ok(), Some(134_217_728));
        let huge = ServiceResources {
            cpu_millis: u64::MAX / 10,
            memory_bytes: u64::MAX,
            storage_bytes: 0,
        };
        assert!(huge.nano_cpus().is_err());
        assert!(huge.memory_limit_bytes().is_err());
    }

    #[test]
    fn validation_names_the_field() {
        assert!(deployment().validate().is_ok());

        let mut bad = deployment();
        bad.tenant = "0x12".into();
        assert_eq!(field_of(bad.validate().unwrap_err()), "tenant");

        let mut bad = deployment();
        bad.services[0].name = "Web_1".into();
        assert_eq!(field_of(bad.validate().unwrap_err()), "services.Web_1.name");

        let mut bad = deployment();
        bad.services.push(web_service());
        assert_eq!(field_of(bad.validate().unwrap_err()), "services.web");

        let mut bad = deployment();
        bad.services[0].resources.cpu_millis = 0;
        assert_eq!(
            field_of(bad.validate().unwrap_err()),
            "services.web.resources.cpu_millis"
        );

        let mut bad = deployment();
        bad.services[0].resources.memory_bytes = 1024;
        assert_eq!(
            field_of(bad.validate().unwrap_err()),
            "services.web.resources.memory_bytes"
        );

        let mut bad = deployment();
        bad.services[0].replicas = 0;
        assert_eq!(
            field_of(bad.validate().unwrap_err()),
            "services.web.replicas"
        );

        let mut bad = deployment();
        bad.services[0].expose[0].host_port = Some(8080);
        assert_eq!(field_of(bad.validate().unwrap_err()), "services.web.expose");

        let mut bad = deployment();
        bad.services[0].gpu_devices = vec![vec!["0".into()]];
        assert_eq!(
            field_of(bad.validate().unwrap_err()),
            "services.web.gpu_devices"
        );

        let mut bad = deployment();
        bad.services[0].env.insert("A=B".into(), "x".into());
        assert_eq!(field_of(bad.validate().unwrap_err()), "services.web.env");

        let mut bad = deployment();
        bad.services.clear();
        assert_eq!(field_of(bad.validate().unwrap_err()), "services");

        for image in ["busybox\0:test", "busybox\u{1b}[2J", "busy box"] {
            let mut bad = deployment();
            bad.services[0].image = image.into();
            let error = bad.validate().unwrap_err().to_string();
            assert!(error.contains("services.web.image"), "{error}");
            assert!(!error.chars().any(char::is_control), "raw in {error:?}");
        }

        let mut bad = deployment();
        bad.services[0].resources.memory_bytes = MIN_MEMORY_BYTES - 1;
        assert_eq!(
            field_of(bad.validate().unwrap_err()),
            "services.web.resources.memory_bytes"
        );
    }

    #[test]
    fn spec_hash_changes_with_what_the_replica_runs() {
        let base = deployment();
        let hash = |deployment: &LeaseDeployment, index: usize| {
            deployment
                .replicas(&RuntimeScope::default())
                .nth(index)
                .expect("replica")
                .spec_hash()
        };
        assert_eq!(hash(&base, 0), hash(&deployment(), 0), "deterministic");
        assert_eq!(
            hash(&base, 0),
            hash(&base, 1),
            "replicas of a service share a spec"
        );
        assert_eq!(hash(&base, 0).len(), 16);
        let mut changed = deployment();
        changed.services[0].env.insert("A".into(), "1".into());
        assert_ne!(hash(&changed, 0), hash(&base, 0));
        let mut changed = deployment();
        changed.services[0].command = vec!["ab".into(), "c".into()];
        let mut shifted = deployment();
        shifted.services[0].command = vec!["a".into(), "bc".into()];
        assert_ne!(hash(&changed, 0), hash(&shifted, 0));
        let mut changed = deployment();
        changed.services[0].resources.memory_bytes += 1;
        assert_ne!(hash(&changed, 0), hash(&base, 0));
        let mut changed = deployment();
        changed.services[0].gpu_devices = vec![vec!["0".into()], vec!["1".into()]];
        assert_ne!(
            hash(&changed, 0),
            hash(&changed, 1),
            "different devices, different spec"
        );
    }

    #[test]
    fn gpu_devices_are_assigned_per_replica() {
        let mut deployment = deployment();
        deployment.services[0].gpu_devices = vec![vec!["0".into()], vec!["1".into(), "2".into()]];
        assert!(deployment.validate().is_ok());
        let devices: Vec<Vec<String>> = deployment
            .replicas(&RuntimeScope::default())
            .map(|replica| replica.gpu_devices.to_vec())
            .collect();
        assert_eq!(
            devices,
            vec![
                vec!["0".to_string()],
                vec!["1".to_string(), "2".to_string()]
            ]
        );
    }

    #[test]
    fn status_fills_missing_replicas_and_counts_ready_ones() {
        let observed = vec![
            ObservedReplica {
                service: "web".into(),
                replica: 2,
                service_replicas: 3,
                state: ReplicaState::Exited {
                    exit_code: 3,
                    oom_killed: false,
                },
                restart_count: 5,
                uris: vec![],
            },
            ObservedReplica {
                service: "web".into(),
                replica: 0,
                service_replicas: 3,
                state: ReplicaState::Running,
                restart_count: 0,
                uris: vec!["http://h:2".into(), "http://h:1".into()],
            },
        ];
        let status = LeaseRuntimeStatus::from_observed(7, observed);
        let web = status.service("web").expect("web service");
        assert_eq!(web.total_replicas, 3);
        assert_eq!(web.ready_replicas, 1);
        assert_eq!(web.uris, vec!["http://h:1", "http://h:2"]);
        let states: Vec<String> = web.replicas.iter().map(|r| r.state.to_string()).collect();
        assert_eq!(states, vec!["running", "missing", "exited with code 3"]);
        assert!(!status.is_ready());
        assert!(!LeaseRuntimeStatus::default().is_ready());
    }
}
