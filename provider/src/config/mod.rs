//! The provider's TOML config: where the chain is, which key signs, how the
//! gateway listens, which runtime runs workloads, prices, attributes, bidding,
//! the database, and hardware overrides.
//!
//! Loading reports every problem at once, each naming its field.

mod ingress;
mod init;
mod validate;

pub use self::ingress::IngressConfig;

pub use validate::{check_address, check_attribute, check_gpu_model_key, check_url};

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use leasehold_contracts::Gwei;
use serde::{Deserialize, Serialize};

pub use crate::runtime::docker::VolumeBackend;

use crate::hardware::{Hardware, HardwareOverrides};

/// The database file inside the data dir when `database_url` is not set.
pub const DEFAULT_DATABASE_FILE: &str = "provider.db";
pub const DEFAULT_GATEWAY_LISTEN: &str = "127.0.0.1:8443";
pub const DEFAULT_DOCKER_SOCKET: &str = "unix:///var/run/docker.sock";
pub const DEFAULT_PASSWORD_ENV: &str = "LEASEHOLD_KEYSTORE_PASSWORD";
/// Where `/metrics` binds when only a port is given: never a public address by default.
pub const DEFAULT_METRICS_HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// One thing wrong with a config: the dotted field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Every problem found, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblems(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (number, problem) in self.0.iter().enumerate() {
            if number > 0 {
                writeln!(f)?;
            }
            write!(f, "  {problem}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax or type errors; toml's message names the key and shows the line.
    #[error("config {path}: {source}")]
    Syntax {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("config {path} has {count} problem(s):\n{problems}", count = problems.0.len())]
    Invalid {
        path: PathBuf,
        problems: ConfigProblems,
    },
    #[error("writing config as TOML: {0}")]
    Serialize(#[from] toml::ser::Error),
}

/// The whole provider config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the daemon keeps its database and state.
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`; default: a SQLite file in the data dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// `key=value` attributes announced on chain, e.g. `region=eu-west`.
    #[serde(default)]
    pub attributes: Vec<String>,
    pub chain: ChainConfig,
    pub key: KeyConfig,
    #[serde(default)]
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    pub pricing: PricingConfig,
    #[serde(default)]
    pub bid: BidConfig,
    #[serde(default, skip_serializing_if = "MetricsConfig::is_default")]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub hardware: HardwareOverrides,
    #[serde(default, skip_serializing_if = "IpPoolConfig::is_empty")]
    pub ip_pool: IpPoolConfig,
    /// The HTTP ingress; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressConfig>,
    /// What detection found when the file was generated; written as comments only.
    #[serde(skip)]
    pub detected: Option<Hardware>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    pub rpc_url: String,
    /// More HTTP endpoints of the same chain, tried in order when `rpc_url` fails at the
    /// transport level (connection refused, timeout, HTTP error); rate limits are retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rpc_urls: Vec<String>,
    /// The node's WebSocket (`ws://`): the follower wakes on each new head (`eth_subscribe`
    /// newHeads) instead of waiting for its poll; `None` polls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws_url: Option<String>,
    /// Checked against the node's chain id at start when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<u64>,
    pub marketplace: String,
    pub registry: String,
    pub token: String,
    /// The most the provider pays per gas (base fee plus tip), in gwei (`0.05` on an L2); a
    /// transaction the network needs more for fails with an error naming this setting.
    /// `None`: whatever the node suggests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fee_per_gas_gwei: Option<Gwei>,
    /// The most it tips per gas, in gwei.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_priority_fee_gwei: Option<Gwei>,
    /// A transaction not mined for this long is replaced on its nonce with fees raised by at
    /// least 12.5 % (default 60; a few block times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_stuck_after_secs: Option<u64>,
}

impl ChainConfig {
    /// `rpc_url` then `rpc_urls`, as the comma-separated list the contracts client takes.
    pub fn rpc_endpoints(&self) -> String {
        std::iter::once(self.rpc_url.as_str())
            .chain(self.rpc_urls.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Which key signs: a keystore file with its password in an environment
/// variable, or a raw private key in an environment variable. The key itself
/// never goes into the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keystore: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_env: Option<String>,
    /// Accepted only to reject it with a clear message.
    #[serde(default, skip_serializing)]
    pub private_key: Option<toml::Value>,
}

/// Where the signing key comes from, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Keystore { path: PathBuf, password_env: String },
    PrivateKeyEnv { variable: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The socket the gateway binds.
    #[serde(default = "default_gateway_listen")]
    pub listen: String,
    /// The URL tenants reach the gateway at (registered on chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_endpoint: Option<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: default_gateway_listen(),
            public_endpoint: None,
        }
    }
}

fn default_gateway_listen() -> String {
    DEFAULT_GATEWAY_LISTEN.to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    #[default]
    Docker,
    Kubernetes,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub kind: RuntimeKind,
    #[serde(default)]
    pub docker: DockerConfig,
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// `unix:///path` or `tcp://host:port`.
    #[serde(default = "default_docker_socket")]
    pub socket: String,
    /// The host name or address tenants reach published ports at.
    #[serde(default = "default_public_host")]
    pub public_host: String,
    /// The host address global ports are published on. Default: `public_host` when it
    /// is an IP address, else every address (`0.0.0.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_address: Option<IpAddr>,
    /// What lease containers may reach: `restricted` (default: the internet and their
    /// own lease only) or `unrestricted` (no rules at all; a loud warning at start).
    #[serde(default, skip_serializing_if = "EgressPolicy::is_restricted")]
    pub egress_policy: EgressPolicy,
    /// Destination ranges (IPv4 CIDRs) lease containers may not reach, besides the
    /// host itself and link-local 169.254.0.0/16, which are always blocked. Default:
    /// the RFC 1918 private ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_ranges: Option<Vec<String>>,
    /// The IPv4 range lease networks are carved from, each sized for its replicas.
    /// Default: [`crate::runtime::docker::DEFAULT_LEASE_SUBNET_POOL`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_subnet_pool: Option<String>,
    /// Where each storage class's persistent volumes live (`[runtime.docker.storage_classes.beta2]`
    /// with `driver` and `driver_opts`, or `host_dir`); the classes listed are announced on
    /// chain. Default: `default` on the engine's `local` driver.
    #[serde(
        default = "default_storage_classes",
        skip_serializing_if = "is_default_storage_classes"
    )]
    pub storage_classes: BTreeMap<String, StorageClassConfig>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            socket: default_docker_socket(),
            public_host: default_public_host(),
            bind_address: None,
            egress_policy: EgressPolicy::default(),
            blocked_ranges: None,
            lease_subnet_pool: None,
            storage_classes: default_storage_classes(),
        }
    }
}

/// Where one storage class's volumes live on Docker: a volume driver (with its options),
/// or a directory of this host under which each volume gets its own directory.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageClassConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_dir: Option<PathBuf>,
}

impl StorageClassConfig {
    /// The runtime's view, or why the entry is not usable.
    pub fn backend(&self) -> Result<VolumeBackend, String> {
        match (&self.driver, &self.host_dir) {
            (Some(driver), None) if !driver.trim().is_empty() => Ok(VolumeBackend::Driver {
                driver: driver.clone(),
                options: self.driver_opts.clone(),
            }),
            (None, Some(dir)) if dir.is_absolute() && self.driver_opts.is_empty() => {
                Ok(VolumeBackend::HostDir(dir.clone()))
            }
            (None, Some(_)) => Err("host_dir must be an absolute path, without driver_opts".into()),
            _ => Err("set either a non-empty driver or host_dir".into()),
        }
    }
}

fn default_storage_classes() -> BTreeMap<String, StorageClassConfig> {
    BTreeMap::from([(
        leasehold_manifests::DEFAULT_STORAGE_CLASS.to_owned(),
        StorageClassConfig {
            driver: Some("local".to_owned()),
            ..StorageClassConfig::default()
        },
    )])
}

fn is_default_storage_classes(classes: &BTreeMap<String, StorageClassConfig>) -> bool {
    *classes == default_storage_classes()
}

impl DockerConfig {
    /// Each storage class with where its volumes live.
    pub fn volume_backends(&self) -> Result<BTreeMap<String, VolumeBackend>, String> {
        self.storage_classes
            .iter()
            .map(|(class, storage)| {
                let backend = storage
                    .backend()
                    .map_err(|reason| format!("{class}: {reason}"))?;
                Ok((class.clone(), backend))
            })
            .collect()
    }

    /// The address global ports are published on (see [`DockerConfig::bind_address`]).
    pub fn publish_address(&self) -> IpAddr {
        self.bind_address
            .or_else(|| self.public_host.parse().ok())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }
}

/// Whether the provider confines what lease containers reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressPolicy {
    #[default]
    Restricted,
    Unrestricted,
}

impl EgressPolicy {
    fn is_restricted(&self) -> bool {
        *self == EgressPolicy::Restricted
    }
}

/// Addresses leased to tenants whose manifests name IP endpoints (`endpoints: { name:
/// { kind: ip } }`): a lease gets one per endpoint, and its ports on that endpoint are
/// published on that address only. The host must already answer on each address (routed
/// to it, configured on an interface); none configured: orders asking for one get no bid.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpPoolConfig {
    /// IPv4 or IPv6 addresses, e.g. `["203.0.113.10", "203.0.113.11"]`.
    #[serde(default)]
    pub addresses: Vec<String>,
}

impl IpPoolConfig {
    fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    /// The pool's addresses; each problem names its `ip_pool.addresses[i]` entry.
    pub fn parsed(&self) -> Result<Vec<std::net::IpAddr>, Vec<ConfigProblem>> {
        let mut addresses: Vec<std::net::IpAddr> = Vec::with_capacity(self.addresses.len());
        let mut problems = Vec::new();
        for (index, text) in self.addresses.iter().enumerate() {
            let field = format!("ip_pool.addresses[{index}]");
            match text.trim().parse::<std::net::IpAddr>() {
                Ok(address) if address.is_unspecified() || address.is_multicast() => {
                    problems.push(ConfigProblem {
                        field,
                        reason: format!("`{text}` cannot be leased: it is not a unicast address"),
                    })
                }
                Ok(address) => match addresses.iter().position(|seen| *seen == address) {
                    Some(first) => problems.push(ConfigProblem {
                        field,
                        reason: format!(
                            "`{text}` is listed twice (also ip_pool.addresses[{first}])"
                        ),
                    }),
                    None => addresses.push(address),
                },
                Err(error) => problems.push(ConfigProblem {
                    field,
                    reason: format!("`{text}` is not an IP address ({error})"),
                }),
            }
        }
        if problems.is_empty() {
            Ok(addresses)
        } else {
            Err(problems)
        }
    }
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port`, or a port alone for 127.0.0.1; unset serves no metrics unless
    /// `provider run --metrics` asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

impl MetricsConfig {
    fn is_default(&self) -> bool {
        self == &MetricsConfig::default()
    }

    /// The socket to serve metrics on, if any.
    pub fn socket(&self) -> Result<Option<SocketAddr>, String> {
        self.listen.as_deref().map(parse_metrics_listen).transpose()
    }
}

/// `host:port`, or a bare port meaning [`DEFAULT_METRICS_HOST`].
pub fn parse_metrics_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from((DEFAULT_METRICS_HOST, port)));
    }
    text.parse()
        .map_err(|error| format!("`{text}` is neither host:port nor a port ({error})"))
}

fn default_docker_socket() -> String {
    DEFAULT_DOCKER_SOCKET.to_string()
}

fn default_public_host() -> String {
    "127.0.0.1".to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Default: in-cluster config, else `$KUBECONFIG`, else `~/.kube/config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context; default: the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Prefix of lease namespaces; default `lh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_prefix: Option<String>,
    /// Node label naming the GPU product; default `nvidia.com/gpu.product`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_label: Option<String>,
    /// Refuse images that run as root (Pod Security `restricted`); default off.
    #[serde(default)]
    pub run_as_non_root: bool,
    /// Host named in service URIs; default: the address of the replica's node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_host: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PricingStrategy {
    #[default]
    Linear,
}

/// Prices in the payment token's base units per hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingConfig {
    #[serde(default)]
    pub strategy: PricingStrategy,
    pub cpu_core_per_hour: u64,
    pub memory_gib_per_hour: u64,
    pub storage_gib_per_hour: u64,
    /// Per-GPU prices in Akash's syntax, e.g. `a100=120,h100.80Gi=300,*=130`;
    /// parsed by the scheduler.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gpu_prices: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BidConfig {
    /// How long reserved resources are held for an open bid.
    #[serde(default = "default_reservation_timeout")]
    pub reservation_timeout_secs: u64,
    /// How long to wait for a placed bid to confirm.
    #[serde(default = "default_bid_timeout")]
    pub bid_timeout_secs: u64,
}

impl Default for BidConfig {
    fn default() -> Self {
        Self {
            reservation_timeout_secs: default_reservation_timeout(),
            bid_timeout_secs: default_bid_timeout(),
        }
    }
}

fn default_reservation_timeout() -> u64 {
    900
}

fn default_bid_timeout() -> u64 {
    60
}

impl Config {
    /// The `key=value` attributes announced on chain: the configured ones, plus the
    /// storage attributes of each persistent storage class the Docker runtime has
    /// (`capabilities/storage/1/class=<class>`, `…/persistent=true`, as Akash providers
    /// announce them), which orders with persistent volumes of that class require.
    /// A Kubernetes provider announces its classes through `attributes` itself.
    pub fn announced_attributes(&self) -> Vec<String> {
        let mut announced: Vec<String> = self.attributes.clone();
        if self.runtime.kind == RuntimeKind::Docker {
            for class in self.runtime.docker.storage_classes.keys() {
                announced.extend(leasehold_manifests::storage_class_attributes(class));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        announced.retain(|attribute| seen.insert(attribute.clone()));
        announced
    }

    /// Reads and validates a config file.
    /// Relative paths in it (`data_dir`, `key.keystore`, the kubeconfig and a SQLite
    /// `database_url`) are resolved against the file's own directory, never against the
    /// working directory: a daemon started from elsewhere must find the same store.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::from_toml_str(&text, path)?;
        let read_error = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::path::absolute(path).map_err(read_error)?;
        let base = file.parent().unwrap_or(Path::new("/"));
        config.resolve_relative_paths(base);
        Ok(config)
    }

    /// Makes every relative path in the config relative to `base` instead.
    pub fn resolve_relative_paths(&mut self, base: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() && !path.as_os_str().is_empty() {
                *path = base.join(&*path);
            }
        };
        resolve(&mut self.data_dir);
        if let Some(keystore) = &mut self.key.keystore {
            resolve(keystore);
        }
        if let Some(kubeconfig) = &mut self.runtime.kubernetes.kubeconfig {
            resolve(kubeconfig);
        }
        if let Some(ingress) = &mut self.ingress {
            ingress.resolve_relative_paths(resolve);
        }
        if let Some(url) = &self.database_url {
            self.database_url = Some(resolve_sqlite_url(url, base));
        }
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Syntax {
            path: origin.to_path_buf(),
            source: Box::new(source),
        })?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: origin.to_path_buf(),
                problems: ConfigProblems(problems),
            })
        }
    }

    /// The database URL, defaulting to `sqlite://<data_dir>/provider.db?mode=rwc`.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join(DEFAULT_DATABASE_FILE).display()
            ),
        }
    }

    /// The validated key source.
    pub fn key_source(&self) -> Result<KeySource, ConfigProblems> {
        let mut problems = Vec::new();
        let source = self.key.source(&mut problems);
        match source {
            Some(source) if problems.is_empty() => Ok(source),
            _ => Err(ConfigProblems(problems)),
        }
    }
}

/// A `sqlite:` URL whose file path is relative, rewritten to be relative to `base`;
/// any other URL unchanged.
fn resolve_sqlite_url(url: &str, base: &Path) -> String {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return url.to_owned();
    };
    let (file, query) = rest
        .split_once('?')
        .map_or((rest, None), |(f, q)| (f, Some(q)));
    if file.is_empty() || file == ":memory:" || Path::new(file).is_absolute() {
        return url.to_owned();
    }
    let absolute = base.join(file);
    match query {
        Some(query) => format!("sqlite://{}?{query}", absolute.display()),
        None => format!("sqlite://{}", absolute.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::{DiskSpace, GpuDevice, GpuSource};

    const ADDRESS: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

    fn valid_toml() -> String {
        format!(
            r#"
data_dir = "/var/lib/leasehold"
attributes = ["region=eu-west", "tier=community"]

[chain]
rpc_url = "http://127.0.0.1:8545"
chain_id = 31337
marketplace = "{ADDRESS}"
registry = "{ADDRESS}"
token = "{ADDRESS}"

[key]
keystore = "/etc/leasehold/key.json"

[gateway]
public_endpoint = "https://provider.example.com:8443"

[runtime]
kind = "kubernetes"
kubernetes.kubeconfig = "/etc/rancher/k3s/k3s.yaml"

[pricing]
cpu_core_per_hour = 10000
memory_gib_per_hour = 5000
storage_gib_per_hour = 100
gpu_prices = "a100=120,h100.80Gi=300,*=130"

[[hardware.gpus]]
model = "nvidia/a100/80Gi/sxm"
vram_mib = 81920
count = 8
"#
        )
    }

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new("provider.toml"))
    }

    #[test]
    fn relative_paths_resolve_against_the_config_file_not_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let config_dir = dir.path().join("etc");
        std::fs::create_dir(&config_dir).unwrap();
        let text = valid_toml()
            .replace("/var/lib/leasehold", "state")
            .replace("/etc/leasehold/key.json", "keys/provider.json")
            .replace("/etc/rancher/k3s/k3s.yaml", "../kube.yaml")
            .replace(
                "attributes =",
                "database_url = \"sqlite://db/provider.db?mode=rwc\"\nattributes =",
            );
        let file = config_dir.join("provider.toml");
        std::fs::write(&file, text).unwrap();
        // The working directory stays where the test runner put it: not `etc/`.
        let config = Config::load(&file).unwrap();
        assert_eq!(config.data_dir, config_dir.join("state"));
        assert_eq!(
            config.key.keystore.as_deref(),
            Some(config_dir.join("keys/provider.json").as_path())
        );
        assert_eq!(
            config.runtime.kubernetes.kubeconfig.as_deref(),
            Some(config_dir.join("../kube.yaml").as_path())
        );
        assert_eq!(
            config.database_url(),
            format!(
                "sqlite://{}?mode=rwc",
                config_dir.join("db/provider.db").display()
            )
        );
        // Absolute paths and non-file URLs are left alone.
        assert_eq!(
            resolve_sqlite_url("postgres://u@127.0.0.1/db", &config_dir),
            "postgres://u@127.0.0.1/db"
        );
        assert_eq!(
            resolve_sqlite_url("sqlite:///abs/p.db", &config_dir),
            "sqlite:///abs/p.db"
        );
    }

    fn problem_fields(error: ConfigError) -> Vec<String> {
        match error {
            ConfigError::Invalid { problems, .. } => problems
                .0
                .into_iter()
                .map(|problem| problem.field)
                .collect(),
            other => panic!("expected problems, got {other}"),
        }
    }

    #[test]
    fn the_ip_pool_names_each_bad_address() {
        let docker = valid_toml().replace("kind = \"kubernetes\"", "kind = \"docker\"");
        let text = format!(
            "{docker}\n[ip_pool]\naddresses = [\"127.0.0.2\", \"127.0.0.300\", \"::1\", \"127.0.0.2\", \"0.0.0.0\"]\n"
        );
        let problems = match load(&text) {
            Err(ConfigError::Invalid { problems, .. }) => problems.0,
            other => panic!("expected problems, got {other:?}"),
        };
        let reason = |field: &str| {
            problems
                .iter()
                .find(|problem| problem.field == field)
                .map(|problem| problem.reason.clone())
                .unwrap_or_else(|| panic!("{field}: {problems:?}"))
        };
        assert!(reason("ip_pool.addresses[1]").contains("not an IP address"));
        assert!(
            reason("ip_pool.addresses[3]").contains("listed twice (also ip_pool.addresses[0])")
        );
        assert!(reason("ip_pool.addresses[4]").contains("not a unicast address"));
        assert_eq!(problems.len(), 3, "{problems:?}");

        let pool = "\n[ip_pool]\naddresses = [\"127.0.0.2\", \"127.0.0.3\"]\n";
        // Both runtimes bind leased IPs (Kubernetes: a Service with `externalIPs`).
        for runtime in [valid_toml(), docker] {
            let config =
                load(&format!("{runtime}{pool}")).unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(
                config.ip_pool.parsed().unwrap(),
                vec![
                    "127.0.0.2".parse::<std::net::IpAddr>().unwrap(),
                    "127.0.0.3".parse().unwrap()
                ]
            );
            let text = config
                .to_toml_string()
                .unwrap_or_else(|error| panic!("{error}"));
            assert!(text.contains("[ip_pool]"), "{text}");
        }
    }

    #[test]
    fn a_valid_file_loads_with_defaults_filled_in() {
        let config = load(&valid_toml()).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.gateway.listen, DEFAULT_GATEWAY_LISTEN);
        assert_eq!(config.runtime.kind, RuntimeKind::Kubernetes);
        assert_eq!(config.bid, BidConfig::default());
        assert_eq!(
            config.database_url(),
            "sqlite:///var/lib/leasehold/provider.db?mode=rwc"
        );
        assert_eq!(
            config.key_source(),
            Ok(KeySource::Keystore {
                path: "/etc/leasehold/key.json".into(),
                password_env: DEFAULT_PASSWORD_ENV.into()
            })
        );
        assert_eq!(config.hardware.gpus.first().map(|gpu| gpu.count), Some(8));
    }

    #[test]
    fn every_semantic_problem_is_reported_with_its_field() {
        let text = valid_toml()
            .replace(
                &format!("registry = \"{ADDRESS}\""),
                "registry = \"0x1234\"",
            )
            .replace("http://127.0.0.1:8545", "127.0.0.1:8545")
            .replace("tier=community", "Tier community")
            .replace("nvidia/a100/80Gi/sxm", "A100")
            .replace(
                "keystore = \"/etc/leasehold/key.json\"",
                "keystore = \"k.json\"\nprivate_key_env = \"KEY\"",
            );
        let fields = problem_fields(load(&text).err().unwrap_or_else(|| panic!("loaded")));
        assert_eq!(
            fields,
            [
                "attributes[1]",
                "chain.rpc_url",
                "chain.registry",
                "key",
                "hardware.gpus[0].model"
            ]
        );
    }

    /// A declared GPU goes through the one GPU model rule; what it refuses is reported at
    /// the field with the part and the reason.
    #[test]
    fn declared_gpu_models_are_refused_naming_the_part_and_reason() {
        for (model, reason) in [
            ("nvidia/a 100", "model `a 100` may only hold"),
            (
                "nvidia/a100/80GB/sxm",
                "ram `80GB` is not a whole number of GiB",
            ),
            (
                "nvidia/a100/80Gi/nvlink",
                "interface `nvlink` must be pcie or sxm",
            ),
            ("nvidia/*", "must name a vendor and a model"),
        ] {
            let text = valid_toml().replace("nvidia/a100/80Gi/sxm", model);
            let problems = match load(&text) {
                Err(ConfigError::Invalid { problems, .. }) => problems.0,
                other => panic!("{model}: expected problems, got {other:?}"),
            };
            let problem = problems
                .iter()
                .find(|problem| problem.field == "hardware.gpus[0].model")
                .unwrap_or_else(|| panic!("{model}: {problems:?}"));
            assert!(
                problem.reason.contains(reason),
                "{model}: {}",
                problem.reason
            );
        }
        let canonical = load(&valid_toml().replace("nvidia/a100/80Gi/sxm", "NVIDIA/A100/80Gi/SXM"))
            .unwrap_or_else(|error| panic!("{error}"));
        let key = crate::hardware::declared_key(&canonical.hardware.gpus[0]);
        assert_eq!(
            key.map(|key| key.to_string()),
            Ok("nvidia/a100/80Gi/sxm".to_owned())
        );
    }

    #[test]
    fn ws_url_is_optional_and_must_be_a_ws_url() {
        let with_ws = |url: &str| {
            valid_toml().replace(
                "rpc_url = \"http://127.0.0.1:8545\"",
                &format!("rpc_url = \"http://127.0.0.1:8545\"\nws_url = \"{url}\""),
            )
        };
        assert_eq!(load(&valid_toml()).expect("no ws_url").chain.ws_url, None);
        let config = load(&with_ws("ws://127.0.0.1:8545")).expect("ws url");
        assert_eq!(config.chain.ws_url.as_deref(), Some("ws://127.0.0.1:8545"));
        for bad in ["http://127.0.0.1:8545", "wss://node.example:443"] {
            let fields =
                problem_fields(load(&with_ws(bad)).err().unwrap_or_else(|| panic!("{bad}")));
            assert_eq!(fields, ["chain.ws_url"], "{bad}");
        }
    }

    #[test]
    fn failover_rpc_urls_follow_rpc_url_and_are_validated() {
        let config = load(&valid_toml().replace(
            "rpc_url = \"http://127.0.0.1:8545\"",
            "rpc_url = \"http://127.0.0.1:8545\"\nrpc_urls = [\"https://rpc.example.org\"]",
        ))
        .unwrap();
        assert_eq!(
            config.chain.rpc_endpoints(),
            "http://127.0.0.1:8545,https://rpc.example.org"
        );
        let Err(error) = load(&valid_toml().replace(
            "rpc_url = \"http://127.0.0.1:8545\"",
            "rpc_url = \"http://127.0.0.1:8545\"\nrpc_urls = [\"https://ok.example\", \"ws://b:8546\"]",
        )) else {
            panic!("a ws failover URL must not load");
        };
        assert_eq!(problem_fields(error), ["chain.rpc_urls[1]"]);
    }

    #[test]
    fn fee_caps_are_decimal_gwei_and_checked_against_each_other() {
        let with_chain = |lines: &str| {
            valid_toml().replace(
                "rpc_url = \"http://127.0.0.1:8545\"",
                &format!("rpc_url = \"http://127.0.0.1:8545\"\n{lines}"),
            )
        };
        let config = load(&with_chain(
            "max_fee_per_gas_gwei = 0.05\nmax_priority_fee_gwei = \"0.001\"\ntx_stuck_after_secs = 12",
        ))
        .expect("fee settings");
        assert_eq!(
            config.chain.max_fee_per_gas_gwei.map(Gwei::wei),
            Some(50_000_000)
        );
        assert_eq!(
            config.chain.max_priority_fee_gwei.map(Gwei::wei),
            Some(1_000_000)
        );
        let policy = crate::chain::fee_policy(&config.chain);
        assert_eq!(policy.stuck_after, std::time::Duration::from_secs(12));
        assert_eq!(policy.cap_setting, "chain.max_fee_per_gas_gwei");

        let fields = problem_fields(
            load(&with_chain(
                "max_fee_per_gas_gwei = 1\nmax_priority_fee_gwei = 2\ntx_stuck_after_secs = 0",
            ))
            .expect_err("tip above the cap, no patience"),
        );
        assert_eq!(
            fields,
            ["chain.tx_stuck_after_secs", "chain.max_priority_fee_gwei"]
        );
        let error = load(&with_chain("max_fee_per_gas_gwei = -1"))
            .expect_err("negative")
            .to_string();
        assert!(error.contains("max_fee_per_gas_gwei"), "{error}");
    }

    #[test]
    fn a_websocket_rpc_url_is_refused_and_pointed_at_ws_url() {
        let text = valid_toml().replace(
            "rpc_url = \"http://127.0.0.1:8545\"",
            "rpc_url = \"ws://127.0.0.1:8545\"",
        );
        let Err(error) = load(&text) else {
            panic!("a ws rpc_url must not load");
        };
        let message = error.to_string();
        assert!(message.contains("chain.ws_url"), "{message}");
        assert_eq!(problem_fields(error), ["chain.rpc_url"]);
    }

    #[test]
    fn docker_storage_classes_are_checked_and_announced_as_akash_does() {
        let as_docker = |sections: &str| {
            valid_toml().replace(
                "kind = \"kubernetes\"\nkubernetes.kubeconfig = \"/etc/rancher/k3s/k3s.yaml\"",
                &format!("kind = \"docker\"\n\n{sections}"),
            )
        };
        let docker = as_docker(
            "[runtime.docker.storage_classes.beta2]\nhost_dir = \"/srv/beta2\"\n\n\
             [runtime.docker.storage_classes.default]\ndriver = \"local\"",
        );
        let config = load(&docker).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            config.announced_attributes(),
            [
                "region=eu-west",
                "tier=community",
                "capabilities/storage/1/class=beta2",
                "capabilities/storage/1/persistent=true",
                "capabilities/storage/1/class=default",
            ]
        );
        assert_eq!(
            config.runtime.docker.volume_backends(),
            Ok(BTreeMap::from([
                (
                    "beta2".to_owned(),
                    VolumeBackend::HostDir("/srv/beta2".into())
                ),
                ("default".to_owned(), VolumeBackend::local()),
            ]))
        );
        // Without a section, Docker has the engine's local driver as `default`.
        let plain = load(&as_docker("")).unwrap_or_else(|error| panic!("{error}"));
        assert!(
            plain
                .announced_attributes()
                .contains(&"capabilities/storage/1/class=default".to_owned())
        );
        // Kubernetes announces only what `attributes` says.
        let kubernetes = load(&valid_toml()).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(kubernetes.announced_attributes(), kubernetes.attributes);

        for (section, field) in [
            ("host_dir = \"srv\"", "beta2"),
            ("driver = \"\"", "beta2"),
            ("driver = \"local\"\nhost_dir = \"/srv\"", "beta2"),
            ("driver = \"local\"", "ram"),
        ] {
            let text = as_docker(&format!(
                "[runtime.docker.storage_classes.{field}]\n{section}"
            ));
            let fields = problem_fields(
                load(&text)
                    .err()
                    .unwrap_or_else(|| panic!("loaded {section}")),
            );
            assert_eq!(
                fields,
                [format!("runtime.docker.storage_classes.{field}")],
                "{section}"
            );
        }
    }

    #[test]
    fn a_literal_private_key_is_refused() {
        let text = valid_toml().replace(
            "keystore = \"/etc/leasehold/key.json\"",
            "private_key = \"0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80\"\nprivate_key_env = \"KEY\"",
        );
        let error = load(&text).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            error.contains("key.private_key: never put the key itself"),
            "{error}"
        );
    }

    #[test]
    fn syntax_errors_name_the_key_and_line() {
        let text = valid_toml().replace("chain_id = 31337", "chain_id = \"mainnet\"");
        let error = load(&text).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("chain_id"), "{error}");
        assert!(error.contains("line"), "{error}");
        let unknown = valid_toml().replace("[gateway]", "[gateway]\nlisten_addr = \"x\"");
        let error = load(&unknown)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("listen_addr"), "{error}");
    }

    #[test]
    fn url_checks() {
        let http = ["http", "https"];
        assert!(check_url("https://provider.example.com:8443/x", &http).is_ok());
        assert!(check_url("http://[::1]:8545", &http).is_ok());
        assert!(check_url("https://host:99999", &http).is_err());
        assert!(check_url("ftp://host", &http).is_err());
        assert!(check_url("https://", &http).is_err());
        assert!(check_url("https://bad host", &http).is_err());
        assert!(check_url("unix:///var/run/docker.sock", &["unix"]).is_ok());
        assert!(check_url("postgres://u:p@127.0.0.1:5432/db", &["postgres"]).is_ok());
    }

    #[test]
    fn gpu_model_keys() {
        for good in [
            "nvidia/a100",
            "nvidia/A100",
            "nvidia/a100/80Gi",
            "nvidia/h100/80Gi/sxm",
            "nvidia/rtx4090/24Gi/pcie",
        ] {
            assert!(check_gpu_model_key(good).is_ok(), "{good}");
        }
        for bad in [
            "a100",
            "nvidia/",
            "nvidia/*/80Gi",
            "nvidia/a 100",
            "nvidia/a100/80GB",
            "nvidia/a100/80Gi/nvlink",
            "a/b/1Gi/pcie/x",
        ] {
            assert!(check_gpu_model_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn init_file_is_commented_and_loads_back() {
        let hardware = Hardware {
            cpu_millis: 64_000,
            memory_mib: 515_000,
            storage_mib: 1_800_000,
            disk: DiskSpace {
                total_bytes: 2_000_000_000_000,
                available_bytes: 1_900_000_000_000,
            },
            gpus: vec![GpuDevice {
                index: 0,
                name: "NVIDIA H100 80GB HBM3".into(),
                model_key: "nvidia/h100/80Gi/sxm".parse().unwrap(),
                vram_mib: 81559,
                interface: "sxm".into(),
                pci_bus_id: None,
                uuid: None,
            }],
            gpu_source: GpuSource::NvidiaSmi,
            notes: Vec::new(),
        };
        let mut config = Config::default_for(&hardware, "/srv/leasehold".into());
        assert_eq!(config.pricing.gpu_prices, "h100=1000000,*=1000000");
        // Zero addresses must be replaced before the file is usable.
        let text = config
            .to_toml_string()
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            problem_fields(load(&text).err().unwrap_or_else(|| panic!("loaded"))),
            ["chain.marketplace", "chain.registry", "chain.token"]
        );
        for address in [
            &mut config.chain.marketplace,
            &mut config.chain.registry,
            &mut config.chain.token,
        ] {
            *address = ADDRESS.to_string();
        }
        let text = config
            .to_toml_string()
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(text.contains("# The signing key"), "{text}");
        assert!(
            text.contains("# Detected GPU 0: NVIDIA H100 80GB HBM3 -> nvidia/h100/80Gi/sxm"),
            "{text}"
        );
        let loaded = load(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
        assert_eq!(
            Config {
                detected: None,
                ..config
            },
            loaded
        );
    }

    #[test]
    fn published_ports_bind_the_configured_host() {
        let config = load(&valid_toml()).unwrap_or_else(|error| panic!("{error}"));
        let docker = &config.runtime.docker;
        assert_eq!(docker.publish_address().to_string(), "127.0.0.1");
        let named = DockerConfig {
            public_host: "203.0.113.7".into(),
            ..DockerConfig::default()
        };
        assert_eq!(named.publish_address().to_string(), "203.0.113.7");
        let dns = DockerConfig {
            public_host: "provider.example.com".into(),
            ..DockerConfig::default()
        };
        assert_eq!(dns.publish_address().to_string(), "0.0.0.0");
        let explicit = DockerConfig {
            bind_address: Some("10.0.0.5".parse().expect("ip")),
            ..dns
        };
        assert_eq!(explicit.publish_address().to_string(), "10.0.0.5");
    }

    #[test]
    fn egress_and_metrics_settings_are_checked() {
        let config = load(&valid_toml()).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            config.runtime.docker.egress_policy,
            EgressPolicy::Restricted
        );
        assert_eq!(config.metrics.socket(), Ok(None));
        let text = valid_toml().replace(
            "[pricing]",
            "docker.egress_policy = \"unrestricted\"\ndocker.blocked_ranges = [\"100.64.0.0/10\"]\n\n[metrics]\nlisten = \"9102\"\n\n[pricing]",
        );
        let config = load(&text).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            config.runtime.docker.egress_policy,
            EgressPolicy::Unrestricted
        );
        assert_eq!(
            config.metrics.socket(),
            Ok(Some("127.0.0.1:9102".parse().expect("addr")))
        );
        let bad = valid_toml().replace(
            "[pricing]",
            "docker.blocked_ranges = [\"10.0.0.1/8\"]\ndocker.lease_subnet_pool = \"10.0.0.0/30\"\n\n[metrics]\nlisten = \"nowhere\"\n\n[pricing]",
        );
        assert_eq!(
            problem_fields(load(&bad).unwrap_err()),
            vec![
                "runtime.docker.blocked_ranges[0]",
                "runtime.docker.lease_subnet_pool",
                "metrics.listen"
            ]
        );
        assert_eq!(
            parse_metrics_listen("0.0.0.0:9102").map(|addr| addr.to_string()),
            Ok("0.0.0.0:9102".to_owned())
        );
    }
}
