//! The provider daemon: one [`Core`] holding the store, the chain lane, the runtime and
//! the inventory, and the tasks that drive it: the chain follower ([`events`]) feeding the
//! keyed work queue ([`controller`], [`queue`]) and its workers, the housekeeping sweep
//! (reservation expiry, manifest deadlines), the withdrawer (queueing a payment per lease),
//! the reconciler and the metrics endpoint.
//!
//! [`Daemon::start`] returns a [`DaemonHandle`]; [`DaemonHandle::shutdown`] stops every
//! task between steps; work queued but not done is read again from the chain after a
//! restart, because the saved cursor never passes it.

pub mod backend;
pub mod controller;
pub mod events;
pub mod queue;
pub mod routing;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::primitives::B256;
use alloy::signers::local::PrivateKeySigner;
use leasehold_contracts::{
    Backoff, BackoffPolicy, ClientError, Follower, FollowerConfig, HeadWatch, ProviderInfo,
    RpcLogSource,
};
use leasehold_scheduler::pricing::{GpuPriceTable, LinearRates, PricingError};
use leasehold_scheduler::{GpuModelKey, Inventory, InventoryError, NodeSpec};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::chain::{Chain, ChainSetupError};
use crate::config::Config;
use crate::config::EgressPolicy;
use crate::deployment::DeploymentError;
use crate::gateway::GatewayIdentity;
use crate::hardware::{Hardware, HardwareError};
use crate::ip_pool::IpPool;
use crate::metrics::Metrics;
use crate::registration::{
    Capacity, CapacityError, CapacityLimits, RegistrationWatch, compare_registration,
    shrinks_below_allocated,
};
use crate::runtime::docker::network::{Ipv4Cidr, SubnetPool};
use crate::runtime::docker::{DockerRuntime, DockerRuntimeConfig, EgressSettings};
use crate::runtime::kubernetes::inventory::InventoryTracker;
use crate::runtime::kubernetes::{KubernetesRuntime, KubernetesRuntimeConfig};
use crate::runtime::{Runtime, RuntimeError, RuntimeScope};
use crate::sealing::CredentialSeal;
use crate::store::{Store, StoreError};
use controller::{Queue, WatermarkCursor, WorkKey};
use queue::RetryPolicy;

/// Timings and switches that are not part of the operator's config file.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// First block to follow when no cursor has been saved.
    pub start_block: u64,
    /// Blocks below the head the follower stays.
    pub confirmations: u64,
    pub poll_interval: Duration,
    /// Reservation expiry and manifest-deadline sweep.
    pub housekeeping_interval: Duration,
    pub reconcile_interval: Duration,
    pub withdraw_interval: Duration,
    /// Seconds a tenant has to send the manifest once the lease exists.
    pub manifest_timeout_secs: u64,
    /// Failed deployments in a row after which the lease is closed (deploy failed).
    pub max_deploy_attempts: u64,
    /// Where `/metrics` is served; `None` serves nothing.
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the tenant gateway on `config.gateway.listen`.
    pub serve_gateway: bool,
    /// Remove runtime workloads of leases this daemon does not know. Off when several
    /// daemons share one container engine (tests).
    pub remove_unknown_workloads: bool,
    /// Work items reconciled at once (chain calls, deployments).
    pub workers: usize,
    /// Longest one reconcile may take before it counts as failed and is retried.
    pub work_time_limit: Duration,
    /// Backoff of a key whose work failed.
    pub retry: RetryPolicy,
    /// Failed attempts after which a bid (or a payment collection) is given up; a bid is
    /// also given up once its order's bid window has passed.
    pub max_bid_attempts: u32,
    /// On a cluster runtime, update the on-chain registration when the cluster's
    /// capacity drifts from it, at most once per this interval; `None` only reports.
    pub resync_registration: Option<Duration>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            start_block: 0,
            confirmations: 2,
            poll_interval: Duration::from_secs(1),
            housekeeping_interval: Duration::from_secs(2),
            reconcile_interval: Duration::from_secs(30),
            withdraw_interval: Duration::from_secs(300),
            manifest_timeout_secs: 300,
            max_deploy_attempts: 5,
            metrics_listen: None,
            serve_gateway: true,
            remove_unknown_workloads: true,
            workers: 8,
            work_time_limit: Duration::from_secs(120),
            retry: RetryPolicy::default(),
            max_bid_attempts: 8,
            resync_registration: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    ChainSetup(#[from] ChainSetupError),
    #[error("chain: {0}")]
    Chain(#[from] ClientError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("hardware: {0}")]
    Hardware(#[from] HardwareError),
    #[error("inventory: {0}")]
    Inventory(#[from] InventoryError),
    #[error("pricing: {0}")]
    Pricing(#[from] PricingError),
    #[error("{0}")]
    Deployment(#[from] DeploymentError),
    #[error("GPU model `{model}`: {reason}")]
    GpuModel { model: String, reason: String },
    #[error("reservation of order {order_id}: {reason}")]
    Holding { order_id: u64, reason: String },
    #[error("lease {lease_id}: {reason}")]
    Lease { lease_id: u64, reason: String },
    #[error("metrics listener {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gateway: {0}")]
    Gateway(#[from] crate::gateway::GatewayError),
    #[error("gateway certificate: {0}")]
    GatewayIdentity(#[from] crate::gateway::IdentityError),
    #[error("gateway.listen `{0}` is not host:port")]
    GatewayListen(String),
    #[error(
        "provider {provider} is not registered on the marketplace at {registry}; run `provider register --config <file>` first"
    )]
    NotRegistered {
        provider: alloy::primitives::Address,
        registry: alloy::primitives::Address,
    },
    #[error("registry credentials: {0}")]
    Credentials(#[from] crate::sealing::SealError),
    #[error("registration: {0}")]
    Capacity(#[from] CapacityError),
    #[error("leased IPs: {0}")]
    IpPool(#[from] crate::ip_pool::IpPoolError),
    #[error("ip_pool:\n{0}")]
    IpPoolConfig(crate::config::ConfigProblems),
    #[error("inventory lock poisoned")]
    Poisoned,
    #[error("follower cursor: {0}")]
    Cursor(String),
    #[error(transparent)]
    Ingress(#[from] crate::ingress::IngressError),
}

/// Everything the daemon's tasks share.
pub struct Core {
    pub(crate) config: Config,
    pub(crate) options: DaemonOptions,
    pub(crate) store: Store,
    pub(crate) chain: Chain,
    pub(crate) runtime: Arc<dyn Runtime>,
    inventory: Mutex<Inventory>,
    /// Leased IP addresses; locked after the inventory when both are needed.
    ip_pool: Mutex<IpPool>,
    /// The last cluster reading, to report drift (a cluster runtime only).
    cluster_drift: InventoryTracker,
    /// The cluster's capacity against the on-chain registration (a cluster runtime only).
    pub(crate) registration: RegistrationWatch,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) rates: LinearRates,
    pub(crate) attributes: BTreeSet<B256>,
    /// The GPU models this provider offers, one entry per model.
    pub(crate) gpus: Vec<GpuModelKey>,
    /// Keyed work for the controller's workers.
    pub(crate) queue: Arc<Queue>,
    /// Seals registry passwords before a manifest is stored (see [`crate::sealing`]).
    pub(crate) credential_seal: CredentialSeal,
    /// The certificate the gateway serves (kept in the data dir).
    pub(crate) gateway_identity: GatewayIdentity,
    /// Whether the chain pins that certificate; tenants refuse the gateway otherwise.
    pub(crate) gateway_cert_registered: bool,
    /// The ingress's routes, when `[ingress]` is configured.
    pub(crate) ingress: Option<routing::IngressRoutes>,
    /// Serialises the pre-lease start's transitions per order (see [`crate::speculative`]).
    pub(crate) order_locks: crate::speculative::OrderLocks,
}

/// The node id of the single Docker host in the inventory.
pub const LOCAL_NODE: &str = "local";
const MIB: u64 = 1024 * 1024;

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// The inventory node of a one-host runtime: detected (or overridden) hardware, with its
/// GPUs (declared ones included).
pub fn local_node(hardware: &Hardware) -> Result<(NodeSpec, Vec<GpuModelKey>), DaemonError> {
    let mut devices = Vec::new();
    let mut offered: Vec<GpuModelKey> = Vec::new();
    for gpu in &hardware.gpus {
        let key = gpu.model_key.clone();
        let vram = gpu
            .vram_mib
            .checked_mul(MIB)
            .ok_or_else(|| DaemonError::GpuModel {
                model: key.to_string(),
                reason: "vram overflows".into(),
            })?;
        if !offered.contains(&key) {
            offered.push(key.clone());
        }
        devices.push(leasehold_scheduler::GpuDevice {
            index: gpu.index,
            spec: leasehold_scheduler::GpuSpec::from_key(key, vram),
        });
    }
    let bytes = |mib: u64, what: &'static str| {
        mib.checked_mul(MIB).ok_or_else(|| DaemonError::GpuModel {
            model: what.into(),
            reason: "capacity overflows".into(),
        })
    };
    let node = NodeSpec {
        id: LOCAL_NODE.to_owned(),
        capacity: leasehold_scheduler::Resources {
            cpu_millis: hardware.cpu_millis,
            memory_bytes: bytes(hardware.memory_mib, "memory")?,
            ephemeral_storage_bytes: bytes(hardware.storage_mib, "storage")?,
            persistent_storage: Default::default(),
        },
        gpus: devices,
    };
    Ok((node, offered))
}

/// The attributes to bid with: the registration's, since `placeBid` checks those. A
/// config that says otherwise is reported (the operator runs `provider update`), and an
/// unregistered key stops the daemon instead of having every bid revert.
fn registered_attributes(
    config: &Config,
    chain: &Chain,
    registration: &ProviderInfo,
) -> Result<BTreeSet<B256>, DaemonError> {
    use leasehold_contracts::ProviderStatus;
    let me = chain.address();
    match registration.status {
        ProviderStatus::None => {
            return Err(DaemonError::NotRegistered {
                provider: me,
                registry: chain.deployment().registry,
            });
        }
        ProviderStatus::Unbonding => warn!(
            provider = %me,
            "this provider is unbonding: the marketplace refuses its new bids; existing leases are served"
        ),
        ProviderStatus::Active => {}
    }
    let registered: BTreeSet<B256> = registration.attributes.iter().copied().collect();
    let announced = config.announced_attributes();
    let configured: BTreeSet<(B256, &str)> = announced
        .iter()
        .map(|text| (crate::deployment::attribute_key(text), text.as_str()))
        .collect();
    let unregistered: Vec<&str> = configured
        .iter()
        .filter(|(key, _)| !registered.contains(key))
        .map(|(_, text)| *text)
        .collect();
    let configured_keys: BTreeSet<B256> = configured.iter().map(|(key, _)| *key).collect();
    let unconfigured = registered.difference(&configured_keys).count();
    if !unregistered.is_empty() || unconfigured != 0 {
        warn!(
            ?unregistered,
            registered_but_not_in_config = unconfigured,
            "the config's attributes differ from the on-chain registration; bidding with the registered ones. Run `provider update --config <file>` to publish the config's"
        );
    }
    Ok(registered)
}

/// Whether the chain pins the certificate the gateway serves. A mismatch (a rotated or
/// lost certificate not yet published with `provider update`) makes every tenant refuse
/// the gateway, so it is logged loudly and exported as `leasehold_gateway_cert_mismatch`.
fn gateway_cert_registered(identity: &GatewayIdentity, registration: &ProviderInfo) -> bool {
    let serving = identity.cert_sha256();
    let registered = registration.gateway_cert_sha256;
    if serving == registered {
        return true;
    }
    error!(
        %serving,
        %registered,
        "the gateway's certificate is not the one registered on chain: tenants will refuse \
         this gateway until `provider update --config <file>` publishes its fingerprint"
    );
    false
}

/// The GPU models a cluster's nodes offer, one entry per model.
fn offered_gpus(nodes: &[NodeSpec]) -> Vec<GpuModelKey> {
    let mut offered: Vec<GpuModelKey> = Vec::new();
    for device in nodes.iter().flat_map(|node| &node.gpus) {
        if !offered.contains(&device.spec.model) {
            offered.push(device.spec.model.clone());
        }
    }
    offered
}

/// Settles the transactions a previous run left in flight (journaled in the store) as soon
/// as the daemon starts, instead of at its next send: a stuck one is replaced, a dropped one
/// re-broadcast, while the lane's turn keeps every new transaction waiting behind them.
async fn recover_transactions(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    tokio::select! {
        _ = stop.changed() => {}
        settled = core.chain.recover_transactions() => match settled {
            Ok(0) => {}
            Ok(count) => info!(count, "settled transactions left in flight by the previous run"),
            Err(error) => warn!(%error, "settling the previous run's transactions failed; the next send retries"),
        },
    }
}

/// The scope of a daemon's workloads: the chain its node serves and its address.
pub async fn runtime_scope(
    config: &Config,
    signer: &PrivateKeySigner,
) -> Result<RuntimeScope, DaemonError> {
    let chain = Chain::connect(config, signer.clone(), 0).await?;
    Ok(RuntimeScope::new(
        chain.deployment().chain_id,
        signer.address().to_string(),
    ))
}

/// Connects the runtime the config names, for this daemon's scope.
pub async fn connect_runtime(
    config: &Config,
    scope: RuntimeScope,
) -> Result<Arc<dyn Runtime>, DaemonError> {
    Ok(match config.runtime.kind {
        crate::config::RuntimeKind::Docker => Arc::new(docker_runtime(config, scope).await?),
        crate::config::RuntimeKind::Kubernetes => {
            Arc::new(kubernetes_runtime(config, scope).await?)
        }
    })
}

/// Connects the Kubernetes runtime the config describes, for this daemon's scope.
pub async fn kubernetes_runtime(
    config: &Config,
    scope: RuntimeScope,
) -> Result<KubernetesRuntime, DaemonError> {
    let settings = &config.runtime.kubernetes;
    let mut runtime_config = KubernetesRuntimeConfig::new(scope.provider);
    runtime_config.chain_id = scope.chain_id;
    runtime_config.kubeconfig = settings.kubeconfig.clone();
    runtime_config.context = settings.context.clone();
    if let Some(prefix) = &settings.namespace_prefix {
        runtime_config.namespace_prefix = prefix.clone();
    }
    if let Some(label) = &settings.gpu_label {
        runtime_config.gpu_label = label.clone();
    }
    runtime_config.run_as_non_root = settings.run_as_non_root;
    runtime_config.public_host = settings.public_host.clone();
    Ok(KubernetesRuntime::connect(runtime_config).await?)
}

/// The linear rates of the config.
pub fn rates_from_config(config: &Config) -> Result<LinearRates, DaemonError> {
    Ok(LinearRates {
        cpu_per_core: config.pricing.cpu_core_per_hour.into(),
        memory_per_gib: config.pricing.memory_gib_per_hour.into(),
        ephemeral_storage_per_gib: config.pricing.storage_gib_per_hour.into(),
        persistent_storage_per_gib: Default::default(),
        persistent_storage_default_per_gib: config.pricing.storage_gib_per_hour.into(),
        gpu: GpuPriceTable::parse(&config.pricing.gpu_prices)?,
    })
}

/// Connects the Docker runtime the config describes, for this daemon's scope. Fails
/// when the egress policy is on and cannot be installed.
pub async fn docker_runtime(
    config: &Config,
    scope: RuntimeScope,
) -> Result<DockerRuntime, DaemonError> {
    Ok(DockerRuntime::connect(docker_runtime_config(config, scope)?).await?)
}

/// The Docker runtime settings of a (validated) config.
pub fn docker_runtime_config(
    config: &Config,
    scope: RuntimeScope,
) -> Result<DockerRuntimeConfig, DaemonError> {
    let docker = &config.runtime.docker;
    let socket = docker
        .socket
        .strip_prefix("unix://")
        .map(str::to_owned)
        .or_else(|| (!docker.socket.is_empty()).then(|| docker.socket.clone()));
    let invalid = |field: &str, reason: String| {
        DaemonError::Runtime(RuntimeError::InvalidDeployment {
            field: format!("runtime.docker.{field}"),
            reason,
        })
    };
    let subnet_pool = match &docker.lease_subnet_pool {
        Some(pool) => {
            SubnetPool::parse(pool).map_err(|reason| invalid("lease_subnet_pool", reason))?
        }
        None => SubnetPool::default(),
    };
    let egress = match docker.egress_policy {
        EgressPolicy::Unrestricted => EgressSettings::Unrestricted,
        EgressPolicy::Restricted => match &docker.blocked_ranges {
            None => EgressSettings::restricted_private_ranges(),
            Some(ranges) => EgressSettings::Restricted {
                blocked: ranges
                    .iter()
                    .map(|range| Ipv4Cidr::parse(range))
                    .collect::<Result<_, _>>()
                    .map_err(|reason| invalid("blocked_ranges", reason))?,
                iptables: "iptables".to_owned(),
            },
        },
    };
    Ok(DockerRuntimeConfig {
        socket,
        public_host: docker.public_host.clone(),
        bind_ip: docker.publish_address().to_string(),
        scope,
        egress,
        subnet_pool,
        storage_classes: docker
            .volume_backends()
            .map_err(|reason| invalid("storage_classes", reason))?,
        ..DockerRuntimeConfig::default()
    })
}

impl Core {
    /// Builds the core: store (with migrations), chain, hardware, inventory restored from
    /// the persisted reservations and allocations.
    pub async fn new(
        config: Config,
        signer: PrivateKeySigner,
        runtime: Arc<dyn Runtime>,
        options: DaemonOptions,
    ) -> Result<Self, DaemonError> {
        let credential_seal = CredentialSeal::from_signing_key(&signer.credential().to_bytes());
        let store = Store::connect(&config.database_url()).await?;
        controller::import_legacy_cursor(&store, &config.data_dir).await?;
        let journal = crate::store::StoreJournal::new(store.clone(), signer.address());
        let chain =
            Chain::connect_journaled(&config, signer, options.start_block, Arc::new(journal))
                .await?;
        let cluster_drift = InventoryTracker::default();
        let (nodes, gpus) = match runtime.cluster_nodes().await? {
            Some(nodes) => {
                cluster_drift.observe(&nodes);
                let gpus = offered_gpus(&nodes);
                (nodes, gpus)
            }
            None => {
                let hardware = Hardware::detect(&config.data_dir, &config.hardware)?;
                let (node, gpus) = local_node(&hardware)?;
                (vec![node], gpus)
            }
        };
        info!(
            nodes = nodes.len(),
            runtime = runtime.backend(),
            "inventory built"
        );
        let leased_ips = config.ip_pool.parsed().map_err(|problems| {
            DaemonError::IpPoolConfig(crate::config::ConfigProblems(problems))
        })?;
        let (inventory, ip_pool) =
            crate::bidder::restore_holdings(&store, nodes, leased_ips).await?;
        let rates = rates_from_config(&config)?;
        let registration = chain.client().provider_info(chain.address()).await?;
        let attributes = registered_attributes(&config, &chain, &registration)?;
        let gateway_identity = GatewayIdentity::load_or_create(&config.data_dir)?;
        let gateway_cert_registered = gateway_cert_registered(&gateway_identity, &registration);
        let ingress = config
            .ingress
            .as_ref()
            .map(|ingress| routing::IngressRoutes {
                domain: ingress.domain.clone(),
                scope: RuntimeScope::new(chain.deployment().chain_id, chain.address().to_string()),
                table: Arc::new(crate::ingress::RouteTable::new()),
            });
        Ok(Self {
            config,
            store,
            chain,
            runtime,
            inventory: Mutex::new(inventory),
            ip_pool: Mutex::new(ip_pool),
            cluster_drift,
            registration: RegistrationWatch::default(),
            metrics: Arc::new(Metrics::default()),
            rates,
            attributes,
            gpus,
            queue: Arc::new(Queue::new(options.retry)),
            options,
            credential_seal,
            gateway_identity,
            gateway_cert_registered,
            ingress,
            order_locks: crate::speculative::OrderLocks::default(),
        })
    }

    /// The inventory; never held across an await.
    pub(crate) fn inventory(&self) -> Result<MutexGuard<'_, Inventory>, DaemonError> {
        self.inventory.lock().map_err(|_| DaemonError::Poisoned)
    }

    /// The leased IP pool; never held across an await.
    pub(crate) fn ip_pool(&self) -> Result<MutexGuard<'_, IpPool>, DaemonError> {
        self.ip_pool.lock().map_err(|_| DaemonError::Poisoned)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Nodes of the cluster found added, removed or changed since start (0 for a
    /// one-host runtime).
    pub fn cluster_drifted_nodes(&self) -> u64 {
        self.cluster_drift.drifted_nodes_total()
    }

    /// Re-reads a cluster runtime's nodes and reports any difference from the last
    /// reading (logs and `/metrics`). The inventory keeps what it was built with until a
    /// restart, so drift is visible, never silently absorbed.
    async fn check_cluster_drift(&self) -> Result<(), DaemonError> {
        if let Some(nodes) = self.runtime.cluster_nodes().await? {
            self.cluster_drift.observe(&nodes);
            self.check_registration(&nodes).await?;
        }
        Ok(())
    }

    /// Compares what the cluster could register now (within the config's limits) with
    /// the on-chain registration: differences are logged and exported, and with
    /// [`DaemonOptions::resync_registration`] sent as an update (keeping the registered
    /// endpoint and attributes), unless that would go below what leases hold.
    async fn check_registration(&self, nodes: &[NodeSpec]) -> Result<(), DaemonError> {
        let available = Capacity::of_cluster(nodes)?
            .limited(&CapacityLimits::from_config(&self.config.hardware));
        let me = self.chain.address();
        let registration = self.chain.client().provider_info(me).await?;
        let rows = compare_registration(&available, &registration);
        self.registration.record(&rows);
        let drifted: Vec<String> = rows
            .iter()
            .filter(|row| row.differs())
            .map(ToString::to_string)
            .collect();
        if drifted.is_empty() {
            return Ok(());
        }
        warn!(
            drift = %drifted.join("; "),
            "the cluster's capacity differs from the on-chain registration; run `provider update` or `provider run --resync-registration`"
        );
        let Some(interval) = self.options.resync_registration else {
            return Ok(());
        };
        if registration.status != leasehold_contracts::ProviderStatus::Active
            || !self
                .registration
                .try_start_resync(interval, std::time::Instant::now())
        {
            return Ok(());
        }
        let below = shrinks_below_allocated(&available, &registration);
        if !below.is_empty() {
            self.registration.refused();
            warn!(
                below = %below.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
                "not re-syncing the registration: the cluster shrank below what running leases hold"
            );
            return Ok(());
        }
        let profile = leasehold_contracts::ProviderProfile {
            endpoint: registration.endpoint,
            gateway_cert_sha256: registration.gateway_cert_sha256,
            attributes: registration.attributes,
            capacity: available.resources,
            gpus: available.gpu_capacity(),
        };
        // A model the cluster gained is named before it appears in the registration.
        self.chain
            .update_provider(&profile, &available.gpu_model_names())
            .await?;
        self.registration.resynced();
        let updated = self.chain.client().provider_info(me).await?;
        self.registration
            .record(&compare_registration(&available, &updated));
        info!(drift = %drifted.join("; "), "registration re-synced with the cluster");
        Ok(())
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Work items waiting or running.
    pub fn queued_work(&self) -> usize {
        self.queue.len()
    }

    /// Queues a payment collection for every open lease; each lease is its own key, so
    /// one failing withdrawal backs off alone.
    async fn queue_withdrawals(&self) -> Result<(), DaemonError> {
        for lease in self.open_leases().await? {
            if lease.state.kind() != crate::lease::LeaseStateKind::Closing {
                self.queue.push(
                    WorkKey::Payment(lease.lease_id),
                    None,
                    controller::Work::Collect,
                );
            }
        }
        Ok(())
    }
}

/// Entry point of the daemon.
pub struct Daemon;

/// A running daemon. Dropping it without [`DaemonHandle::shutdown`] aborts its tasks.
pub struct DaemonHandle {
    core: Arc<Core>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    metrics_addr: Option<SocketAddr>,
    gateway: Option<crate::gateway::RunningGateway>,
    ingress: Option<crate::ingress::IngressHandle>,
}

impl Daemon {
    /// Starts every task with the Docker runtime the config names.
    pub async fn start(
        config: Config,
        signer: PrivateKeySigner,
        options: DaemonOptions,
    ) -> Result<DaemonHandle, DaemonError> {
        let scope = runtime_scope(&config, &signer).await?;
        let runtime = connect_runtime(&config, scope).await?;
        Self::start_with_runtime(config, signer, runtime, options).await
    }

    /// Starts every task over a given runtime.
    pub async fn start_with_runtime(
        config: Config,
        signer: PrivateKeySigner,
        runtime: Arc<dyn Runtime>,
        options: DaemonOptions,
    ) -> Result<DaemonHandle, DaemonError> {
        // Read before anything starts: a bad certificate stops the daemon at once.
        let ingress_listeners = config
            .ingress
            .as_ref()
            .map(crate::config::IngressConfig::listeners)
            .transpose()?;
        let core = Arc::new(Core::new(config, signer, runtime, options).await?);
        // Chain, store and runtime agree before anything new is taken on (this pass also
        // routes the ingress hostnames of every lease that runs).
        if let Err(error) = core.reconcile().await {
            warn!(%error, "initial reconcile failed; the periodic one retries");
        }
        if let Err(error) = core.check_cluster_drift().await {
            warn!(%error, "initial registration check failed; the periodic one retries");
        }
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(recover_transactions(
            core.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(follow(core.clone(), stop_rx.clone())));
        tasks.push(tokio::spawn({
            let core = core.clone();
            queue::run(
                core.queue.clone(),
                core.options.workers,
                core.options.work_time_limit,
                stop_rx.clone(),
                move |task| controller::reconcile(core.clone(), task),
            )
        }));
        let every = |period: Duration, name: &'static str, core: Arc<Core>, job: Job| {
            tokio::spawn(periodic(core, stop_rx.clone(), period, name, job))
        };
        tasks.push(every(
            core.options.housekeeping_interval,
            "housekeeping",
            core.clone(),
            Job::Housekeeping,
        ));
        tasks.push(every(
            core.options.reconcile_interval,
            "reconcile",
            core.clone(),
            Job::Reconcile,
        ));
        tasks.push(every(
            core.options.withdraw_interval,
            "withdraw",
            core.clone(),
            Job::Withdraw,
        ));
        let mut metrics_addr = None;
        if let Some(addr) = core.options.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Metrics { addr, source })?;
            metrics_addr = listener.local_addr().ok();
            tasks.push(tokio::spawn(crate::metrics::serve(
                core.clone(),
                listener,
                stop_rx.clone(),
            )));
        }
        let gateway = if core.options.serve_gateway {
            let listen = &core.config.gateway.listen;
            let addr: SocketAddr = listen
                .parse()
                .map_err(|_| DaemonError::GatewayListen(listen.clone()))?;
            Some(
                crate::gateway::serve(
                    addr,
                    crate::gateway::GatewayConfig::default(),
                    &core.gateway_identity,
                    Arc::new(backend::DaemonBackend::new(core.clone())),
                    stopped(stop.subscribe()),
                )
                .await?,
            )
        } else {
            None
        };
        let ingress = match (ingress_listeners, core.route_table()) {
            (Some(listeners), Some(table)) => {
                Some(crate::ingress::start(listeners, table.clone()).await?)
            }
            _ => None,
        };
        info!(provider = %core.chain.address(), "daemon started");
        Ok(DaemonHandle {
            core,
            stop,
            tasks,
            metrics_addr,
            gateway,
            ingress,
        })
    }
}

impl DaemonHandle {
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Where `/metrics` answers, when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Where the gateway answers, when served.
    pub fn gateway_addr(&self) -> Option<SocketAddr> {
        self.gateway.as_ref().map(|gateway| gateway.local_addr())
    }

    /// Where the ingress serves plain HTTP and HTTPS, when configured.
    pub fn ingress_addrs(&self) -> Option<(SocketAddr, Option<SocketAddr>)> {
        self.ingress
            .as_ref()
            .map(|ingress| (ingress.http_addr, ingress.https_addr))
    }

    /// Stops every task at its next pause and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(ingress) = self.ingress.take() {
            ingress.shutdown().await;
        }
        if let Some(gateway) = self.gateway.take()
            && let Err(error) = gateway.wait().await
        {
            warn!(%error, "gateway ended abnormally");
        }
        for task in self.tasks.drain(..) {
            if let Err(error) = task.await {
                warn!(%error, "daemon task ended abnormally");
            }
        }
        self.core.store.close().await;
    }
}

impl Drop for DaemonHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Job {
    Housekeeping,
    Reconcile,
    Withdraw,
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

async fn periodic(
    core: Arc<Core>,
    stop: watch::Receiver<bool>,
    period: Duration,
    name: &'static str,
    job: Job,
) {
    loop {
        tokio::select! {
            biased;
            () = stopped(stop.clone()) => return,
            () = tokio::time::sleep(period) => {}
        }
        let result = match job {
            Job::Housekeeping => core.housekeeping().await,
            Job::Reconcile => match core.reconcile().await {
                Ok(()) => core.check_cluster_drift().await,
                Err(error) => Err(error),
            },
            Job::Withdraw => core.queue_withdrawals().await,
        };
        if let Err(error) = result {
            warn!(task = name, %error, "periodic task failed; retrying next period");
        }
    }
}

/// Runs the follower until shutdown. The handler only queues work, so it never fails; a
/// failing cursor store (the database) restarts the follower from the saved cursor after
/// a backoff.
async fn follow(core: Arc<Core>, stop: watch::Receiver<bool>) {
    let deployment = *core.chain.deployment();
    let config = FollowerConfig {
        start_block: core.options.start_block,
        confirmations: core.options.confirmations,
        poll_interval: core.options.poll_interval,
        ..FollowerConfig::default()
    };
    let mut backoff = Backoff::new(BackoffPolicy::default());
    // Created once: it reconnects by itself, across follower restarts too.
    let heads = core.config.chain.ws_url.as_deref().and_then(|url| {
        HeadWatch::websocket(url)
            .inspect_err(|error| warn!(%error, "not subscribing to new heads; polling"))
            .ok()
    });
    loop {
        let source = RpcLogSource::new(
            core.chain.client().provider().clone(),
            [deployment.marketplace, deployment.registry],
        );
        let cursor = WatermarkCursor::new(core.store.clone(), core.queue.clone());
        let mut follower = Follower::new(source, cursor, config.clone());
        if let Some(heads) = &heads {
            follower = follower.wake_on(heads.clone());
        }
        let mut handler = events::EventHandler::new(
            deployment,
            core.chain.address(),
            core.queue.clone(),
            core.metrics.clone(),
        );
        match follower.run(&mut handler, stopped(stop.clone())).await {
            Ok(()) => return,
            Err(error) => {
                error!(%error, "chain follower stopped; restarting from the saved cursor");
                core.metrics.follower_restarts.inc();
            }
        }
        tokio::select! {
            () = stopped(stop.clone()) => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
