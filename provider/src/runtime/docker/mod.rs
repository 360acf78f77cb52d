//! The Docker backend (bollard): a bridge network per lease, sized for its replicas
//! ([`network`]) and confined by the egress policy ([`egress`]), a container per
//! replica, all labelled with the lease and the runtime's scope so that the engine
//! itself is the record of what runs, and whose.

pub mod egress;
pub mod network;

mod create;
mod engine;
mod exec;
mod observe;
mod pull;
#[cfg(test)]
mod tests;
mod volumes;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerInspectResponse, ContainerSummary, Ipam, IpamConfig, Network, NetworkCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, ListContainersOptionsBuilder,
    ListNetworksOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use futures_util::stream;
use tokio::sync::broadcast;

use self::egress::{Firewall, SyncOutcome};
use self::engine::{
    accept_status, bridge_of, check_gpu_runtime, egress_error, engine_error, error_reason,
    has_nvidia_runtime, is_not_found, supports_storage_opt,
};
use self::network::{Ipv4Cidr, SubnetPool, host_routes, lease_subnet_prefix};
use self::observe::{container_name, event_from_message, label, needs_start, published_uris};
use super::{
    EventStream, LABEL_EXPOSE, LABEL_LEASE, LABEL_REPLICA, LABEL_REPLICAS, LABEL_SERVICE,
    LABEL_SPEC, LABEL_STORAGE, LeaseDeployment, LeaseRuntimeStatus, LogLine, LogStream,
    ObservedReplica, ReplicaSpec, Runtime, RuntimeError, RuntimeEvent, RuntimeEventKind,
    RuntimeScope, decode_exposures, invalid, lease_selector, parse_lease_label, registry,
};

pub use self::create::{NVIDIA_VISIBLE_DEVICES, container_create_body};
pub use self::engine::NVIDIA_RUNTIME;
pub use self::exec::exec_config;
pub use self::network::DEFAULT_LEASE_SUBNET_POOL;
pub use self::observe::{replica_state, split_log_frame};
pub use self::pull::split_image_reference;
pub use self::volumes::VolumeBackend;

/// Most processes a replica may run: stops fork bombs from starving the host.
pub const PIDS_LIMIT: i64 = 512;
/// How often Docker restarts a crashing replica before leaving it exited, so a
/// crash loop ends visibly (with its exit code) instead of flapping forever.
pub const MAX_RESTART_RETRIES: i64 = 5;
/// Log rotation per replica, so a chatty workload cannot fill the host's disk.
const LOG_MAX_SIZE: &str = "10m";
const LOG_MAX_FILES: &str = "3";
/// Seconds bollard waits for an engine answer.
const ENGINE_TIMEOUT_SECS: u64 = 120;
/// Buffered pull progress events per subscriber; slow subscribers skip ahead.
const EVENT_BUFFER: usize = 1024;
/// How long teardown keeps retrying a network whose endpoints are still being released.
const NETWORK_REMOVE_ATTEMPTS: u32 = 20;
const NETWORK_REMOVE_BACKOFF: Duration = Duration::from_millis(250);
/// The bridge driver option naming the Linux interface, which the egress rules match.
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";
/// Replicas of one lease created and started at once.
const REPLICA_CONCURRENCY: usize = 8;
/// Times a lease subnet is chosen again when another engine user took it between
/// listing and creating.
const SUBNET_ATTEMPTS: usize = 8;
static SUBNET_CHOICE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerRuntimeConfig {
    /// Engine socket path; `None` means `DOCKER_HOST` (unix://) or the default socket.
    pub socket: Option<String>,
    /// Host name or IP put into service URIs.
    pub public_host: String,
    /// Host address global ports are published on.
    pub bind_ip: String,
    /// Longest time one image pull may take.
    pub pull_timeout: Duration,
    /// Whose workloads these are: in every name and label.
    pub scope: RuntimeScope,
    /// What lease containers may reach.
    pub egress: EgressSettings,
    /// Where lease subnets come from.
    pub subnet_pool: SubnetPool,
    /// Where each storage class's persistent volumes live; a volume of a class not
    /// listed is refused.
    pub storage_classes: BTreeMap<String, VolumeBackend>,
}

/// The egress policy of lease networks (see [`egress`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressSettings {
    /// The internet and the lease's own services only.
    Restricted {
        /// Refused besides the host and link-local (the lease pool is added).
        blocked: Vec<Ipv4Cidr>,
        /// The `iptables` command (its `-restore` sibling is used too).
        iptables: String,
    },
    /// No rules: lease containers reach whatever the host reaches.
    Unrestricted,
}

impl EgressSettings {
    /// Restricted to RFC 1918 plus `extra`, with the `iptables` on `PATH`.
    pub fn restricted_private_ranges() -> Self {
        EgressSettings::Restricted {
            blocked: egress::RFC1918
                .iter()
                .filter_map(|text| Ipv4Cidr::parse(text).ok())
                .collect(),
            iptables: "iptables".to_owned(),
        }
    }
}

impl Default for DockerRuntimeConfig {
    fn default() -> Self {
        DockerRuntimeConfig {
            socket: None,
            public_host: "127.0.0.1".to_owned(),
            bind_ip: "0.0.0.0".to_owned(),
            pull_timeout: Duration::from_secs(600),
            scope: RuntimeScope::default(),
            egress: EgressSettings::restricted_private_ranges(),
            subnet_pool: SubnetPool::default(),
            storage_classes: BTreeMap::from([(
                leasehold_manifests::DEFAULT_STORAGE_CLASS.to_owned(),
                VolumeBackend::local(),
            )]),
        }
    }
}

pub struct DockerRuntime {
    docker: Docker,
    config: DockerRuntimeConfig,
    /// The engine caps a container's writable layer (`StorageOpt size`): true for
    /// overlay2 on xfs with project quotas, btrfs, zfs. Otherwise storage is enforced
    /// by eviction (see [`DockerRuntime::evict_over_storage`]).
    storage_opt: std::sync::atomic::AtomicBool,
    /// `docker info` lists the NVIDIA runtime, which GPU device requests need.
    nvidia_runtime: bool,
    /// `None` when the operator chose an unrestricted egress policy.
    firewall: Option<Firewall>,
    events: broadcast::Sender<RuntimeEvent>,
    /// Deploy and teardown of one lease run one at a time: Docker 20.10 happily
    /// creates two networks with the same name when asked concurrently.
    lease_locks: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
}

impl DockerRuntime {
    /// Connects to the engine and agrees on an API version with it.
    pub async fn connect(config: DockerRuntimeConfig) -> Result<Self, RuntimeError> {
        let unavailable = |err: DockerError| RuntimeError::Unavailable {
            reason: err.to_string(),
        };
        let docker = match &config.socket {
            Some(path) => {
                Docker::connect_with_socket(path, ENGINE_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            }
            None => Docker::connect_with_local_defaults(),
        }
        .map_err(unavailable)?;
        let docker = docker.negotiate_version().await.map_err(unavailable)?;
        let firewall = match &config.egress {
            EgressSettings::Restricted { blocked, iptables } => {
                if config.socket.as_deref().is_some_and(|socket| {
                    socket.starts_with("tcp://") || socket.starts_with("http")
                }) {
                    return Err(egress_error(
                        "the engine is reached over TCP, so its lease bridges are not on \
                         this host's firewall",
                    ));
                }
                let mut blocked = blocked.clone();
                blocked.push(config.subnet_pool.cidr());
                let resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
                let upstream = std::fs::read_to_string("/run/systemd/resolve/resolv.conf").ok();
                Some(Firewall::new(
                    iptables.clone(),
                    config.scope.tag(),
                    blocked,
                    egress::resolvers(&resolv_conf, upstream.as_deref()),
                ))
            }
            EgressSettings::Unrestricted => {
                tracing::warn!(
                    "EGRESS POLICY DISABLED (egress_policy = \"unrestricted\"): lease containers \
                     can reach this host's services, link-local metadata (169.254.169.254), \
                     private networks and other leases"
                );
                None
            }
        };
        let storage_opt = std::sync::atomic::AtomicBool::new(supports_storage_opt(&docker).await);
        let nvidia_runtime = has_nvidia_runtime(&docker).await;
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let runtime = DockerRuntime {
            docker,
            config,
            storage_opt,
            nvidia_runtime,
            firewall,
            events,
            lease_locks: Mutex::new(HashMap::new()),
        };
        if runtime.firewall.is_some() {
            runtime.sync_firewall().await?;
            tracing::info!(
                scope = runtime.config.scope.tag(),
                "lease egress policy installed"
            );
        }
        Ok(runtime)
    }

    /// Removes this scope's egress rules altogether: for a scope that will not run
    /// leases again (tests); a daemon never calls it.
    pub async fn remove_egress_rules(&self) -> Result<(), RuntimeError> {
        match &self.firewall {
            Some(firewall) => firewall
                .uninstall()
                .await
                .map_err(|error| egress_error(error.to_string())),
            None => Ok(()),
        }
    }

    /// The scope every name and label of this runtime carries.
    pub fn scope(&self) -> &RuntimeScope {
        &self.config.scope
    }

    /// Writes the egress rules for the lease networks that exist now (nothing when
    /// unrestricted) and reads them back.
    async fn sync_firewall(&self) -> Result<SyncOutcome, RuntimeError> {
        let Some(firewall) = &self.firewall else {
            return Ok(SyncOutcome::Unchanged);
        };
        let bridges: Vec<String> = self
            .scope_networks()
            .await?
            .iter()
            .filter_map(bridge_of)
            .collect();
        for bridge in &bridges {
            // A bridge this host does not have would get rules that guard nothing.
            if !std::path::Path::new("/sys/class/net").join(bridge).exists() {
                return Err(egress_error(format!(
                    "lease bridge {bridge} is not an interface of this host: the engine runs \
                     elsewhere"
                )));
            }
        }
        firewall
            .sync(&bridges)
            .await
            .map_err(|error| egress_error(error.to_string()))
    }

    /// The underlying client, for callers that need engine specifics.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    fn lease_lock(&self, lease_id: u64) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .lease_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        locks.entry(lease_id).or_default().clone()
    }

    /// Drops the lease's lock once nobody holds or waits for it; waiters clone
    /// it under the map's mutex, so the count cannot grow behind our back.
    fn forget_lease_lock(&self, lease_id: u64, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self
            .lease_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        drop(lock);
        if locks
            .get(&lease_id)
            .is_some_and(|held| Arc::strong_count(held) == 1)
        {
            locks.remove(&lease_id);
        }
    }

    fn emit(&self, event: RuntimeEvent) {
        // No subscriber is fine: events are a courtesy, not a record.
        let _ = self.events.send(event);
    }

    async fn ensure_network(&self, deployment: &LeaseDeployment) -> Result<String, RuntimeError> {
        let lease_id = deployment.lease_id;
        let name = self.config.scope.lease_network_name(lease_id);
        if !self.lease_networks(lease_id).await?.is_empty() {
            return Ok(name);
        }
        let replicas: u64 = deployment
            .services
            .iter()
            .map(|service| u64::from(service.replicas))
            .sum();
        let prefix = lease_subnet_prefix(replicas).ok_or_else(|| {
            invalid(
                "services",
                format!("{replicas} replicas do not fit one lease network"),
            )
        })?;
        let bridge = egress::bridge_name(&self.config.scope.tag(), lease_id);
        // One choice at a time in this process; other engine users are caught by the
        // engine's overlap check, after which the free subnets are read again.
        let _choosing = SUBNET_CHOICE.lock().await;
        let mut last_error = None;
        for _ in 0..SUBNET_ATTEMPTS {
            let taken = self.taken_subnets().await?;
            let Some(subnet) = self.config.subnet_pool.free_subnets(prefix, &taken).next() else {
                break;
            };
            let request = NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".to_owned()),
                labels: Some(
                    deployment
                        .lease_labels(&self.config.scope)
                        .into_iter()
                        .collect(),
                ),
                ipam: Some(Ipam {
                    driver: Some("default".to_owned()),
                    config: Some(vec![IpamConfig {
                        subnet: Some(subnet.to_string()),
                        gateway: Some(subnet.gateway().to_string()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                options: Some(HashMap::from([(
                    BRIDGE_NAME_OPTION.to_owned(),
                    bridge.clone(),
                )])),
                ..Default::default()
            };
            match self.docker.create_network(request).await {
                Ok(_) => {
                    tracing::info!(lease_id, network = name, %subnet, bridge, "created network");
                    return Ok(name);
                }
                // Taken by someone else since we listed: look again.
                Err(err) if error_reason(&err).contains("overlap") => {
                    last_error = Some(err);
                }
                Err(err) => return Err(engine_error(format!("create network {name}"), &err)),
            }
        }
        Err(RuntimeError::Engine {
            action: format!("create network {name}"),
            reason: match last_error {
                Some(err) => error_reason(&err),
                None => format!(
                    "no free /{prefix} subnet left in the lease pool {}",
                    self.config.subnet_pool.cidr()
                ),
            },
        })
    }

    async fn ensure_replica(
        &self,
        deployment: &LeaseDeployment,
        replica: &ReplicaSpec<'_>,
        network: &str,
    ) -> Result<(), RuntimeError> {
        let name = &replica.name;
        let wanted_spec = replica.spec_hash();
        let mut found = self.inspect(name).await?;
        // The host ports of a container replaced below, kept by its successor.
        let mut previous_ports = None;
        if let Some(existing) = &found {
            let labels = existing.config.as_ref().and_then(|c| c.labels.as_ref());
            let ours = self
                .config
                .scope
                .owns(&|key: &str| label(labels, key).map(str::to_owned));
            if !ours
                || label(labels, LABEL_LEASE).and_then(parse_lease_label)
                    != Some(deployment.lease_id)
            {
                return Err(RuntimeError::Conflict {
                    name: name.clone(),
                    lease_id: deployment.lease_id,
                });
            }
            if label(labels, LABEL_SPEC) != Some(wanted_spec.as_str()) {
                // The manifest changed: replace the replica.
                tracing::info!(
                    lease_id = deployment.lease_id,
                    container = name,
                    "replacing container with a changed spec"
                );
                previous_ports = existing
                    .network_settings
                    .as_ref()
                    .and_then(|settings| settings.ports.clone());
                self.remove_container(existing.id.as_deref().unwrap_or(name))
                    .await?;
                found = None;
            }
        }
        let existing = match found {
            Some(existing) => existing,
            None => {
                self.ensure_volumes(deployment, replica).await?;
                let mut body = container_create_body(
                    &self.config.scope,
                    deployment,
                    replica,
                    network,
                    &self.config.bind_ip,
                )?;
                if let Some(previous) = &previous_ports {
                    create::pin_host_ports(&mut body, previous);
                }
                let storage = replica.service.resources.storage_bytes;
                let capped = self.storage_opt.load(std::sync::atomic::Ordering::Relaxed);
                if capped
                    && storage > 0
                    && let Some(host) = body.host_config.as_mut()
                {
                    host.storage_opt =
                        Some(HashMap::from([("size".to_owned(), storage.to_string())]));
                }
                let options = CreateContainerOptionsBuilder::new().name(name).build();
                // 409: somebody created it between inspect and create; reuse it below.
                let mut created = self
                    .docker
                    .create_container(Some(options.clone()), body.clone())
                    .await;
                if let Err(err) = &created
                    && capped
                    && error_reason(err).contains("storage-opt")
                {
                    // xfs without project quotas: fall back to eviction for good.
                    tracing::warn!(
                        reason = error_reason(err),
                        "the engine cannot cap writable layers; enforcing storage by eviction"
                    );
                    self.storage_opt
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    if let Some(host) = body.host_config.as_mut() {
                        host.storage_opt = None;
                    }
                    created = self.docker.create_container(Some(options), body).await;
                }
                accept_status(created, &[409])
                    .map_err(|err| engine_error(format!("create container {name}"), &err))?;
                self.inspect(name)
                    .await?
                    .ok_or_else(|| RuntimeError::Engine {
                        action: format!("create container {name}"),
                        reason: "the container vanished right after creation".to_owned(),
                    })?
            }
        };
        let restart_count = existing.restart_count.unwrap_or(0);
        if needs_start(existing.state.as_ref(), restart_count) {
            // 304: already running, which is what we want.
            let started = self.docker.start_container(name, None).await;
            accept_status(started, &[304])
                .map_err(|err| engine_error(format!("start container {name}"), &err))?;
            tracing::info!(
                lease_id = deployment.lease_id,
                container = name,
                "started container"
            );
        }
        Ok(())
    }

    async fn inspect(
        &self,
        container: &str,
    ) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
        match self.docker.inspect_container(container, None).await {
            Ok(found) => Ok(Some(found)),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(engine_error(format!("inspect container {container}"), &err)),
        }
    }

    /// Containers of this runtime's scope carrying every label of `labels` too.
    async fn containers_with_labels(
        &self,
        labels: Vec<String>,
    ) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let mut labels = labels;
        labels.extend(self.config.scope.selectors());
        let filters = HashMap::from([("label", labels)]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|err| engine_error("list containers", &err))
    }

    async fn lease_containers(
        &self,
        lease_id: u64,
        service: Option<&str>,
    ) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let mut labels = vec![lease_selector(lease_id)];
        if let Some(service) = service {
            labels.push(format!("{LABEL_SERVICE}={service}"));
        }
        self.containers_with_labels(labels).await
    }

    async fn networks_with_labels(
        &self,
        labels: Vec<String>,
    ) -> Result<Vec<Network>, RuntimeError> {
        let filters = HashMap::from([("label", labels)]);
        let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
        self.docker
            .list_networks(Some(options))
            .await
            .map_err(|err| engine_error("list networks", &err))
    }

    /// The IPv4 subnets a new lease network must stay clear of: every network of the
    /// engine, whoever made it, and the host's routes.
    async fn taken_subnets(&self) -> Result<Vec<Ipv4Cidr>, RuntimeError> {
        let mut taken =
            host_routes(&std::fs::read_to_string("/proc/net/route").unwrap_or_default());
        for network in self.all_networks().await? {
            let configs = network
                .ipam
                .and_then(|ipam| ipam.config)
                .unwrap_or_default();
            taken.extend(
                configs
                    .iter()
                    .filter_map(|config| config.subnet.as_deref())
                    .filter_map(|subnet| Ipv4Cidr::parse(subnet).ok()),
            );
        }
        Ok(taken)
    }

    /// Every network of the engine, whoever made it (to keep clear of their subnets).
    async fn all_networks(&self) -> Result<Vec<Network>, RuntimeError> {
        self.docker
            .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
            .await
            .map_err(|err| engine_error("list networks", &err))
    }

    /// The lease networks of this runtime's scope.
    async fn scope_networks(&self) -> Result<Vec<Network>, RuntimeError> {
        let mut labels = self.config.scope.selectors();
        labels.push(LABEL_LEASE.to_owned());
        self.networks_with_labels(labels).await
    }

    /// Ids of the networks labelled with the lease (in this scope).
    async fn lease_networks(&self, lease_id: u64) -> Result<Vec<String>, RuntimeError> {
        let mut labels = self.config.scope.selectors();
        labels.push(lease_selector(lease_id));
        let networks = self.networks_with_labels(labels).await?;
        Ok(networks
            .into_iter()
            .filter_map(|network| network.id)
            .collect())
    }

    async fn remove_container(&self, container: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        // 409: a removal is already under way; the network step waits for it.
        let removed = self.docker.remove_container(container, Some(options)).await;
        accept_status(removed, &[404, 409])
            .map_err(|err| engine_error(format!("remove container {container}"), &err))
    }

    async fn remove_network(&self, network: &str) -> Result<(), RuntimeError> {
        let mut attempt = 0;
        loop {
            match self.docker.remove_network(network).await {
                Ok(()) => return Ok(()),
                Err(err) if is_not_found(&err) => return Ok(()),
                // Endpoints of containers being removed are released asynchronously.
                Err(err) if attempt + 1 < NETWORK_REMOVE_ATTEMPTS => {
                    tracing::debug!(
                        network,
                        reason = error_reason(&err),
                        "network busy, retrying"
                    );
                    attempt += 1;
                    tokio::time::sleep(NETWORK_REMOVE_BACKOFF).await;
                }
                Err(err) => return Err(engine_error(format!("remove network {network}"), &err)),
            }
        }
    }

    /// Where the engine cannot cap a writable layer (overlay2 on ext4, as here), a
    /// replica that wrote more than its lease bought is removed, as the kubelet evicts
    /// a pod over its `ephemeral-storage` limit: the next deploy of the lease (the
    /// reconcile pass that called this) creates it afresh with an empty layer. Bounded
    /// by how often this runs; the event names what was written and the limit.
    pub async fn evict_over_storage(&self) -> Result<(), RuntimeError> {
        if self.storage_opt.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let mut labels = self.config.scope.selectors();
        labels.push(LABEL_STORAGE.to_owned());
        let filters = HashMap::from([("label", labels)]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .size(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|err| engine_error("list container sizes", &err))?;
        for container in containers {
            let labels = container.labels.as_ref();
            let limit = label(labels, LABEL_STORAGE).and_then(|n| n.parse::<u64>().ok());
            let written = container.size_rw.and_then(|n| u64::try_from(n).ok());
            let (Some(limit), Some(written), Some(id)) = (limit, written, container.id.as_deref())
            else {
                continue;
            };
            if written <= limit {
                continue;
            }
            let lease_id = label(labels, LABEL_LEASE).and_then(parse_lease_label);
            let reason = format!(
                "wrote {written} bytes to its filesystem; the lease bought {limit} bytes of \
                 ephemeral storage"
            );
            tracing::warn!(
                container = container_name(&container),
                reason,
                "evicting replica"
            );
            self.remove_container(id).await?;
            if let Some(lease_id) = lease_id {
                self.emit(RuntimeEvent {
                    lease_id,
                    service: label(labels, LABEL_SERVICE).map(str::to_owned),
                    replica: label(labels, LABEL_REPLICA).and_then(|n| n.parse().ok()),
                    kind: RuntimeEventKind::Evicted { reason },
                });
            }
        }
        Ok(())
    }

    fn observe(&self, container: &ContainerInspectResponse) -> Option<ObservedReplica> {
        let labels = container
            .config
            .as_ref()
            .and_then(|config| config.labels.as_ref());
        let service = label(labels, LABEL_SERVICE)?.to_owned();
        let replica = label(labels, LABEL_REPLICA)?.parse().ok()?;
        let service_replicas = label(labels, LABEL_REPLICAS)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let exposures = decode_exposures(label(labels, LABEL_EXPOSE).unwrap_or(""));
        let ports = container
            .network_settings
            .as_ref()
            .and_then(|settings| settings.ports.as_ref());
        let uris = published_uris(
            ports,
            &exposures,
            &self.config.public_host,
            &self.config.bind_ip,
        );
        Some(ObservedReplica {
            service,
            replica,
            service_replicas,
            state: replica_state(container.state.as_ref()),
            restart_count: container
                .restart_count
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            uris,
        })
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn backend(&self) -> &'static str {
        "docker"
    }

    async fn deploy(&self, deployment: &LeaseDeployment) -> Result<(), RuntimeError> {
        deployment.validate()?;
        check_gpu_runtime(deployment, self.nvidia_runtime)?;
        let lock = self.lease_lock(deployment.lease_id);
        let _serialized = lock.lock().await;
        // Images first: a lease whose image cannot be had leaves nothing behind.
        for (image, credentials) in registry::pulls(&deployment.services) {
            self.ensure_image(deployment.lease_id, image, credentials)
                .await?;
        }
        let network = self.ensure_network(deployment).await?;
        // The lease's rules exist before any of its containers runs.
        self.sync_firewall().await?;
        let scope = &self.config.scope;
        let wanted: BTreeSet<String> = deployment
            .replicas(scope)
            .map(|replica| replica.name)
            .collect();
        for container in self.lease_containers(deployment.lease_id, None).await? {
            let name = container_name(&container);
            if !name.is_some_and(|name| wanted.contains(name))
                && let Some(id) = container.id.as_deref()
            {
                tracing::info!(
                    lease_id = deployment.lease_id,
                    container = name,
                    "removing surplus container"
                );
                self.remove_container(id).await?;
            }
        }
        // A few at a time: a lease of hundreds of replicas deploys in a bounded time
        // without flooding the engine.
        let mut replicas = deployment.replicas(scope);
        let mut pending = stream::FuturesUnordered::new();
        loop {
            while pending.len() < REPLICA_CONCURRENCY {
                let Some(replica) = replicas.next() else {
                    break;
                };
                let network = network.as_str();
                // Boxed: the Send check of the trait's future cannot see through the
                // borrowed replica otherwise.
                let ensure: std::pin::Pin<
                    Box<dyn Future<Output = Result<(), RuntimeError>> + Send + '_>,
                > = Box::pin(
                    async move { self.ensure_replica(deployment, &replica, network).await },
                );
                pending.push(ensure);
            }
            match pending.next().await {
                Some(result) => result?,
                None => break,
            }
        }
        Ok(())
    }

    async fn status(&self, lease_id: u64) -> Result<LeaseRuntimeStatus, RuntimeError> {
        let mut observed = Vec::new();
        for container in self.lease_containers(lease_id, None).await? {
            let Some(id) = container.id.as_deref() else {
                continue;
            };
            // A container removed since the listing simply is not there any more.
            if let Some(inspected) = self.inspect(id).await? {
                observed.extend(self.observe(&inspected));
            }
        }
        Ok(LeaseRuntimeStatus::from_observed(lease_id, observed))
    }

    async fn logs(
        &self,
        lease_id: u64,
        service: Option<&str>,
        follow: bool,
        tail: Option<u32>,
    ) -> Result<LogStream, RuntimeError> {
        let containers = self.lease_containers(lease_id, service).await?;
        if containers.is_empty() {
            return Err(RuntimeError::NotFound {
                what: match service {
                    Some(service) => format!("service {service} of lease {lease_id}"),
                    None => format!("lease {lease_id}"),
                },
            });
        }
        let tail = tail.map_or_else(|| "all".to_owned(), |n| n.to_string());
        let mut streams = Vec::new();
        for container in containers {
            let labels = container.labels.as_ref();
            let (Some(id), Some(service), Some(replica)) = (
                container.id.clone(),
                label(labels, LABEL_SERVICE).map(str::to_owned),
                label(labels, LABEL_REPLICA).and_then(|n| n.parse::<u32>().ok()),
            ) else {
                continue;
            };
            let options = LogsOptionsBuilder::new()
                .follow(follow)
                .stdout(true)
                .stderr(true)
                .timestamps(true)
                .tail(&tail)
                .build();
            let lines = self.docker.logs(&id, Some(options)).flat_map(move |frame| {
                let lines: Vec<Result<LogLine, RuntimeError>> = match frame {
                    Ok(output) => {
                        let stderr = matches!(output, bollard::container::LogOutput::StdErr { .. });
                        split_log_frame(&output.into_bytes())
                            .into_iter()
                            .map(|(timestamp, line)| {
                                Ok(LogLine {
                                    service: service.clone(),
                                    replica,
                                    stderr,
                                    line,
                                    timestamp,
                                })
                            })
                            .collect()
                    }
                    Err(err) => vec![Err(engine_error(
                        format!("read logs of {service}/{replica}"),
                        &err,
                    ))],
                };
                stream::iter(lines)
            });
            streams.push(lines.boxed());
        }
        Ok(stream::select_all(streams).boxed())
    }

    async fn events(&self, lease_id: u64) -> Result<EventStream, RuntimeError> {
        let internal = stream::unfold(self.events.subscribe(), |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(event) => return Some((event, receiver)),
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        tracing::debug!(skipped, "event subscriber lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .filter(move |event| std::future::ready(event.lease_id == lease_id))
        .map(Ok);
        // `since` makes the engine replay what happened between this call and
        // the moment the stream is first polled.
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|now| now.as_secs())
            .unwrap_or(0)
            .to_string();
        let mut labels = self.config.scope.selectors();
        labels.push(lease_selector(lease_id));
        let filters = HashMap::from([("type", vec!["container".to_owned()]), ("label", labels)]);
        let options = EventsOptionsBuilder::new()
            .since(&since)
            .filters(&filters)
            .build();
        let engine = self
            .docker
            .events(Some(options))
            .map(move |message| match message {
                Ok(message) => Ok(event_from_message(lease_id, message)),
                Err(err) => Err(engine_error("follow engine events", &err)),
            });
        Ok(stream::select(engine, internal).boxed())
    }

    async fn teardown(&self, lease_id: u64) -> Result<(), RuntimeError> {
        let lock = self.lease_lock(lease_id);
        let serialized = lock.lock().await;
        for container in self.lease_containers(lease_id, None).await? {
            if let Some(id) = container.id.as_deref() {
                self.remove_container(id).await?;
            }
        }
        for network in self.lease_networks(lease_id).await? {
            self.remove_network(&network).await?;
        }
        // The closed lease's own rule goes with its bridge.
        self.sync_firewall().await?;
        let leftover = self.lease_containers(lease_id, None).await?;
        if !leftover.is_empty() {
            return Err(RuntimeError::Engine {
                action: format!("tear down lease {lease_id}"),
                reason: format!("{} containers are still being removed", leftover.len()),
            });
        }
        // Only once no container uses them: data outlives everything but the lease.
        self.remove_lease_volumes(lease_id).await?;
        drop(serialized);
        self.forget_lease_lock(lease_id, lock);
        tracing::info!(lease_id, "lease torn down");
        Ok(())
    }

    async fn list_leases(&self) -> Result<Vec<u64>, RuntimeError> {
        let mut leases = BTreeSet::new();
        for container in self
            .containers_with_labels(vec![LABEL_LEASE.to_owned()])
            .await?
        {
            leases
                .extend(label(container.labels.as_ref(), LABEL_LEASE).and_then(parse_lease_label));
        }
        for network in self.scope_networks().await? {
            leases.extend(label(network.labels.as_ref(), LABEL_LEASE).and_then(parse_lease_label));
        }
        // A lease whose teardown stopped after its containers still holds data.
        leases.extend(self.volume_leases().await?);
        Ok(leases.into_iter().collect())
    }

    async fn enforce_policies(&self) -> Result<(), RuntimeError> {
        if self.sync_firewall().await? == SyncOutcome::Installed {
            tracing::warn!(
                scope = self.config.scope.tag(),
                "lease egress rules were missing or changed; re-installed"
            );
        }
        self.evict_over_storage().await
    }

    async fn exec(
        &self,
        lease_id: u64,
        request: &super::ExecRequest,
    ) -> Result<super::ExecSession, RuntimeError> {
        self.exec_in_replica(lease_id, request).await
    }
}
