//! Whose workloads a runtime runs and how its objects are named and labelled.

use std::collections::BTreeMap;

use super::{PortExposure, Protocol};

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

/// Label holding [`ReplicaSpec::spec_hash`](super::ReplicaSpec::spec_hash): a replica whose hash differs from
/// the deployment's is replaced rather than reused.
pub const LABEL_SPEC: &str = "io.leasehold.spec";

/// Label naming the SDL volume a persistent volume holds.
pub const LABEL_VOLUME: &str = "io.leasehold.volume";

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

impl RuntimeScope {
    /// Name of one replica's persistent volume: the replica's name, a '.' (which no
    /// service or volume name contains) and the volume's.
    pub fn volume_name(&self, lease_id: u64, service: &str, replica: u32, volume: &str) -> String {
        format!("{}.{volume}", self.replica_name(lease_id, service, replica))
    }
}

impl Default for RuntimeScope {
    /// Chain 0 and the zero address: no daemon runs there, so tools and tests that need
    /// no particular scope cannot meet a daemon's workloads.
    fn default() -> Self {
        RuntimeScope::new(0, format!("0x{}", "0".repeat(40)))
    }
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
