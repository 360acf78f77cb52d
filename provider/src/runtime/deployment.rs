//! The runtime-neutral input: a lease's services, their resources and replicas,
//! validated once for every backend, and the fingerprint that tells a changed
//! replica from an unchanged one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::image;
use super::{
    LABEL_EXPOSE, LABEL_LEASE, LABEL_REPLICA, LABEL_REPLICAS, LABEL_SERVICE, LABEL_SPEC,
    LABEL_STORAGE, LABEL_TENANT, RuntimeError, RuntimeScope, encode_exposures, invalid,
};

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
    /// Shared-memory volumes (Akash class `ram`): a tmpfs of each replica, counted in
    /// `resources.memory_bytes` because its pages are charged to the replica's memory.
    pub ram_volumes: Vec<RamVolume>,
    /// GPU models the service accepts; empty means any. Kubernetes pins GPU replicas to
    /// nodes carrying one of them.
    pub gpu_models: Vec<leasehold_manifests::GpuModelPattern>,
    /// What the image's registry wants for a pull (the SDL's `credentials`); `Debug`
    /// redacts the password. Not part of the replica fingerprint: a new password
    /// restarts nothing.
    pub credentials: Option<leasehold_manifests::Credentials>,
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

/// Where a `ram` volume the SDL mounts nowhere goes: the POSIX shared-memory directory
/// that PyTorch, vLLM and NCCL use, whose engine default (64 MiB) is what they die on.
pub const SHARED_MEMORY_MOUNT: &str = "/dev/shm";

/// A memory-backed volume of each replica of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamVolume {
    /// A DNS label, unique among the service's volumes.
    pub name: String,
    /// Absolute path the tmpfs is mounted at ([`SHARED_MEMORY_MOUNT`] by default).
    pub mount: String,
    pub size_bytes: u64,
}

impl RamVolume {
    /// Whether the volume is the replica's `/dev/shm` (sized by the engine's own setting
    /// on Docker rather than by a mount over it).
    pub fn is_shared_memory(&self) -> bool {
        self.mount == SHARED_MEMORY_MOUNT
    }
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
    /// The lease's leased address (`ip:` endpoint) a global exposure is published on, and
    /// only there; `None`: the runtime's public address.
    pub leased_ip: Option<std::net::IpAddr>,
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
            leased_ip: None,
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
            ram_volumes: Vec::new(),
            gpu_models: Vec::new(),
            credentials: None,
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
            // Only when present, so that replicas without leased IPs keep their fingerprint.
            if let Some(address) = exposure.leased_ip {
                hasher.field(address.to_string().as_bytes());
            }
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
            let models: Vec<String> = service.gpu_models.iter().map(ToString::to_string).collect();
            hasher.list(models.iter().map(String::as_bytes));
        }
        for volume in &service.ram_volumes {
            hasher.field(b"ram");
            hasher.field(volume.name.as_bytes());
            hasher.field(volume.mount.as_bytes());
            hasher.field(&volume.size_bytes.to_be_bytes());
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
            if exposure.leased_ip.is_some() && !exposure.global {
                return Err(invalid(
                    field("expose"),
                    format!(
                        "port {}/{}: a leased IP needs a global exposure",
                        exposure.port, exposure.proto
                    ),
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
        let mut volume_names = BTreeSet::new();
        let mut mounts = BTreeSet::new();
        let volumes = self
            .volumes
            .iter()
            .map(|volume| (&volume.name, &volume.mount, volume.size_bytes))
            .chain(
                self.ram_volumes
                    .iter()
                    .map(|volume| (&volume.name, &volume.mount, volume.size_bytes)),
            );
        for (name, mount, size_bytes) in volumes {
            let volume_field = field(&format!("volumes.{name}"));
            if !is_dns_label(name) {
                return Err(invalid(
                    volume_field,
                    "name must be a DNS label (lower-case letters, digits and '-')",
                ));
            }
            if !volume_names.insert(name.as_str()) {
                return Err(invalid(volume_field, "duplicate volume name"));
            }
            if !mount.starts_with('/') || !mounts.insert(mount.as_str()) {
                return Err(invalid(
                    volume_field,
                    "mount must be an absolute path used by no other volume",
                ));
            }
            if size_bytes == 0 {
                return Err(invalid(volume_field, "size must be greater than zero"));
            }
        }
        for volume in &self.volumes {
            if volume
                .class
                .as_deref()
                .is_some_and(|class| !is_dns_label(class))
            {
                return Err(invalid(
                    field(&format!("volumes.{}", volume.name)),
                    "class must be a DNS label",
                ));
            }
        }
        let ram_bytes = self
            .ram_volumes
            .iter()
            .try_fold(0u64, |sum, volume| sum.checked_add(volume.size_bytes));
        if ram_bytes.is_none_or(|ram| ram > self.resources.memory_bytes) {
            return Err(invalid(
                field("ram_volumes"),
                "ram volumes must fit in the replica's memory, which counts them",
            ));
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
