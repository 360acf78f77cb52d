//! The Kubernetes backend of [`Runtime`], for providers that run a cluster.
//!
//! A lease is a namespace (`<prefix>-<hash of the lease id>`) labelled with the
//! lease, tenant and provider. Its objects ([`objects`]) are applied with
//! server-side apply under one field manager, so deploying twice changes nothing
//! and restarts nothing; objects of services no longer in the deployment are
//! pruned. Listing leases lists namespaces by label, so a restarted daemon finds
//! exactly the leases it runs. Teardown deletes the namespace, which takes every
//! object of the lease with it.
//!
//! Status comes from the Deployments/StatefulSets and their pods ([`status`]);
//! global ports are NodePorts, reported as `node address:nodePort` (the
//! configured public host, else the pod's node address). Logs merge the streams
//! of every pod; events watch the namespace's Events. [`inventory`] reads the
//! nodes for the scheduler.

mod exec;
pub mod inventory;
pub mod objects;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::io::AsyncBufReadExt;
use futures_util::stream::{self, BoxStream};
use futures_util::{AsyncBufRead, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    Event, LimitRange, Namespace, Node, Pod, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{
    Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource};
use leasehold_scheduler::NodeSpec;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::exec::{attach_params, exec_path, exit_code as exec_exit_code};
use self::inventory::{ClusterInventory, InventoryOptions, cluster_inventory};
use self::objects::{DEFAULT_GPU_PRODUCT_LABEL, LeaseObjects, lease_objects, namespace_name};
use self::status::{WorkloadView, indexed_pods, observe, published_ports};
use super::{
    EventStream, LABEL_LEASE, LABEL_SERVICE, LeaseDeployment, LeaseRuntimeStatus, LogLine,
    LogStream, Runtime, RuntimeError, RuntimeEvent, RuntimeEventKind, parse_lease_label,
};

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "leasehold-provider";
/// Default prefix of lease namespaces.
pub const DEFAULT_NAMESPACE_PREFIX: &str = "lh";
/// How long a watch request lasts before it is renewed (the API server's limit is
/// higher; shorter keeps idle connections through proxies alive).
const WATCH_TIMEOUT_SECS: u32 = 290;

/// The provider's settings for the Kubernetes runtime (`runtime = "kubernetes"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesRuntimeConfig {
    /// Kubeconfig file; `None` infers (in-cluster service account, then `KUBECONFIG`,
    /// then `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context; `None` for the current one.
    pub context: Option<String>,
    /// Prefix of lease namespaces (a DNS label).
    pub namespace_prefix: String,
    /// The provider's 0x address; labels its namespaces so that providers sharing a
    /// cluster never see each other's leases.
    pub provider: String,
    /// The chain the leases are on; in namespace names and labels with the provider,
    /// so that one provider address on two chains keeps two lease 1s apart.
    pub chain_id: u64,
    /// Node label holding the GPU product name.
    pub gpu_label: String,
    /// Require images to run as a non-root user. Off by default: most public images
    /// (busybox httpd on port 80, nginx, postgres' entrypoint) start as root and the
    /// kubelet would refuse them. Everything else stays locked down either way (no
    /// privilege escalation, all capabilities dropped but NET_BIND_SERVICE for ports
    /// below 1024, RuntimeDefault seccomp, no service account token, no host access),
    /// and the namespace enforces Pod Security `baseline`, or `restricted` when on.
    pub run_as_non_root: bool,
    /// Host named in service URIs; `None` uses the address of the replica's node.
    pub public_host: Option<String>,
    /// Cluster storage class for each Akash class (`beta2` -> `local-path`); unmapped
    /// classes are used by their own name, `default` means the cluster's default.
    pub storage_classes: BTreeMap<String, String>,
    /// How long teardown waits for the namespace to disappear.
    pub teardown_timeout: Duration,
    /// IPv4 ranges lease pods may not reach (the NetworkPolicy's `ipBlock.except`),
    /// link-local always added. Default: RFC 1918.
    pub egress_blocked_ranges: Vec<String>,
}

impl KubernetesRuntimeConfig {
    /// Defaults for a provider address.
    pub fn new(provider: impl Into<String>) -> Self {
        KubernetesRuntimeConfig {
            kubeconfig: None,
            context: None,
            namespace_prefix: DEFAULT_NAMESPACE_PREFIX.to_owned(),
            provider: provider.into(),
            chain_id: 0,
            gpu_label: DEFAULT_GPU_PRODUCT_LABEL.to_owned(),
            run_as_non_root: false,
            public_host: None,
            storage_classes: BTreeMap::new(),
            teardown_timeout: Duration::from_secs(120),
            egress_blocked_ranges: objects::DEFAULT_EGRESS_BLOCKED_RANGES
                .iter()
                .map(|range| (*range).to_owned())
                .collect(),
        }
    }

    /// The scope of this provider's leases on this chain.
    pub fn scope(&self) -> super::RuntimeScope {
        super::RuntimeScope::new(self.chain_id, &self.provider)
    }

    fn validate(&self) -> Result<(), RuntimeError> {
        let bad = |field: &str, reason: &str| RuntimeError::InvalidDeployment {
            field: format!("kubernetes.{field}"),
            reason: reason.to_owned(),
        };
        // The prefix plus '-' and 16 hex digits must stay a DNS label.
        if !super::is_dns_label(&self.namespace_prefix) || self.namespace_prefix.len() > 46 {
            return Err(bad(
                "namespace_prefix",
                "must be a DNS label of at most 46 characters",
            ));
        }
        let valid_label_value = |value: &str| {
            !value.is_empty()
                && value.len() <= 63
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !valid_label_value(&self.provider) {
            return Err(bad(
                "provider",
                "must be a label value (the provider's 0x address)",
            ));
        }
        if self.gpu_label.trim().is_empty() {
            return Err(bad("gpu_label", "must not be empty"));
        }
        Ok(())
    }
}

/// Runs leases on a Kubernetes cluster.
#[derive(Clone)]
pub struct KubernetesRuntime {
    client: Client,
    config: KubernetesRuntimeConfig,
}

fn unavailable(reason: impl ToString) -> RuntimeError {
    RuntimeError::Unavailable {
        reason: reason.to_string(),
    }
}

/// Maps a client error: transport failures mean the API server is unreachable,
/// API statuses are the server refusing `action`.
fn api_error(action: impl Into<String>, error: kube::Error) -> RuntimeError {
    match error {
        kube::Error::Api(status) => RuntimeError::Engine {
            action: action.into(),
            reason: format!("{} ({}): {}", status.reason, status.code, status.message),
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) => unavailable(error),
        other => RuntimeError::Engine {
            action: action.into(),
            reason: other.to_string(),
        },
    }
}

fn kind_of<K>() -> String
where
    K: Resource,
    <K as Resource>::DynamicType: Default,
{
    K::kind(&<K as Resource>::DynamicType::default()).into_owned()
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

impl KubernetesRuntime {
    /// Connects with the configured kubeconfig and context (see [`KubernetesRuntimeConfig`]).
    pub async fn connect(config: KubernetesRuntimeConfig) -> Result<Self, RuntimeError> {
        config.validate()?;
        let options = KubeConfigOptions {
            context: config.context.clone(),
            ..KubeConfigOptions::default()
        };
        let client_config = match (&config.kubeconfig, &config.context) {
            (Some(path), _) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|error| {
                    unavailable(format!("kubeconfig {}: {error}", path.display()))
                })?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(unavailable)?
            }
            (None, Some(_)) => Config::from_kubeconfig(&options)
                .await
                .map_err(unavailable)?,
            (None, None) => Config::infer().await.map_err(unavailable)?,
        };
        let client = Client::try_from(client_config).map_err(unavailable)?;
        Self::new(client, config)
    }

    /// A runtime over an existing client.
    pub fn new(client: Client, config: KubernetesRuntimeConfig) -> Result<Self, RuntimeError> {
        config.validate()?;
        Ok(KubernetesRuntime { client, config })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn config(&self) -> &KubernetesRuntimeConfig {
        &self.config
    }

    /// The namespace of a lease.
    pub fn namespace(&self, lease_id: u64) -> String {
        namespace_name(
            &self.config.namespace_prefix,
            &self.config.scope(),
            lease_id,
        )
    }

    /// The objects a deploy applies, for inspection.
    pub fn objects(&self, deployment: &LeaseDeployment) -> Result<LeaseObjects, RuntimeError> {
        lease_objects(deployment, &self.config)
    }

    fn namespaced<K>(&self, lease_id: u64) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace(lease_id))
    }

    fn namespaces(&self) -> Api<Namespace> {
        Api::all(self.client.clone())
    }

    /// The lease's namespace when it exists; a namespace of that name that is not
    /// this provider's for this lease is a conflict, never adopted.
    async fn owned_namespace(&self, lease_id: u64) -> Result<Option<Namespace>, RuntimeError> {
        let name = self.namespace(lease_id);
        let namespace = self
            .namespaces()
            .get_opt(&name)
            .await
            .map_err(|error| api_error(format!("read namespace {name}"), error))?;
        let Some(namespace) = namespace else {
            return Ok(None);
        };
        let labels = namespace.metadata.labels.as_ref();
        let label = |key: &str| {
            labels
                .and_then(|labels| labels.get(key))
                .map(String::as_str)
        };
        let lease = lease_id.to_string();
        let ours = self
            .config
            .scope()
            .owns(&|key: &str| label(key).map(str::to_owned));
        if !ours || label(LABEL_LEASE) != Some(lease.as_str()) {
            return Err(RuntimeError::Conflict { name, lease_id });
        }
        Ok(Some(namespace))
    }

    async fn apply<K>(&self, api: &Api<K>, object: &K) -> Result<(), RuntimeError>
    where
        K: Resource + Serialize + DeserializeOwned + Clone + Debug,
        <K as Resource>::DynamicType: Default,
    {
        let name = object.meta().name.clone().unwrap_or_default();
        let kind = kind_of::<K>();
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .map_err(|error| api_error(format!("apply {kind} {name}"), error))?;
        Ok(())
    }

    /// Deletes the lease's objects of kind `K` that carry its labels but are not in
    /// `keep` (services dropped from the deployment).
    async fn prune<K>(&self, lease_id: u64, keep: &BTreeSet<String>) -> Result<(), RuntimeError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
        <K as Resource>::DynamicType: Default,
    {
        let api: Api<K> = self.namespaced(lease_id);
        let kind = kind_of::<K>();
        let listed = api
            .list(&ListParams::default().labels(LABEL_SERVICE))
            .await
            .map_err(|error| api_error(format!("list {kind}"), error))?;
        for object in listed.items {
            let Some(name) = object.meta().name.clone() else {
                continue;
            };
            if keep.contains(&name) {
                continue;
            }
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => tracing::info!(lease_id, %kind, %name, "pruned"),
                Err(error) if is_not_found(&error) => {}
                Err(error) => return Err(api_error(format!("delete {kind} {name}"), error)),
            }
        }
        Ok(())
    }

    /// Writes the lease's pull Secret, or deletes it by name when no service has
    /// credentials any more: the runtime never reads or lists Secrets.
    async fn sync_pull_secret(
        &self,
        lease_id: u64,
        secret: Option<&Secret>,
    ) -> Result<(), RuntimeError> {
        let api: Api<Secret> = self.namespaced(lease_id);
        if let Some(secret) = secret {
            return self.apply(&api, secret).await;
        }
        match api
            .delete(objects::PULL_SECRET_NAME, &DeleteParams::background())
            .await
        {
            Ok(_) => {
                tracing::info!(lease_id, "registry credentials removed");
                Ok(())
            }
            Err(error) if is_not_found(&error) => Ok(()),
            Err(error) => Err(api_error(
                format!("delete Secret {}", objects::PULL_SECRET_NAME),
                error,
            )),
        }
    }

    async fn list_in<K>(&self, lease_id: u64, params: &ListParams) -> Result<Vec<K>, RuntimeError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
        <K as Resource>::DynamicType: Default,
    {
        let kind = kind_of::<K>();
        self.namespaced::<K>(lease_id)
            .list(params)
            .await
            .map(|list| list.items)
            .map_err(|error| api_error(format!("list {kind} of lease {lease_id}"), error))
    }

    async fn workloads(&self, lease_id: u64) -> Result<Vec<WorkloadView>, RuntimeError> {
        let params = ListParams::default().labels(LABEL_SERVICE);
        let deployments: Vec<Deployment> = self.list_in(lease_id, &params).await?;
        let stateful_sets: Vec<StatefulSet> = self.list_in(lease_id, &params).await?;
        let mut workloads: Vec<WorkloadView> = deployments
            .iter()
            .map(WorkloadView::of_deployment)
            .chain(stateful_sets.iter().map(WorkloadView::of_stateful_set))
            .collect();
        workloads.sort_by(|a, b| a.service.cmp(&b.service));
        Ok(workloads)
    }

    /// The inventory of the cluster's schedulable nodes for the scheduler.
    pub async fn inventory(
        &self,
        options: &InventoryOptions,
    ) -> Result<ClusterInventory, RuntimeError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let nodes = nodes
            .list(&ListParams::default())
            .await
            .map_err(|error| api_error("list nodes", error))?
            .items;
        let pods: Api<Pod> = Api::all(self.client.clone());
        let pods = pods
            .list(&ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed"))
            .await
            .map_err(|error| api_error("list pods", error))?
            .items;
        let own: BTreeSet<String> = self
            .list_leases()
            .await?
            .into_iter()
            .map(|lease_id| self.namespace(lease_id))
            .collect();
        Ok(cluster_inventory(&nodes, &pods, &own, options))
    }
}

/// Splits the RFC 3339 timestamp the API server puts before each line when asked.
fn split_timestamp(line: Vec<u8>) -> (Option<String>, Vec<u8>) {
    let Some(space) = line.iter().position(|byte| *byte == b' ') else {
        return (None, line);
    };
    let stamp = line
        .get(..space)
        .and_then(|stamp| std::str::from_utf8(stamp).ok());
    match stamp {
        Some(stamp) if stamp.len() >= 20 && stamp.as_bytes().get(10) == Some(&b'T') => {
            let stamp = stamp.to_owned();
            let rest = line
                .get(space.saturating_add(1)..)
                .unwrap_or_default()
                .to_vec();
            (Some(stamp), rest)
        }
        _ => (None, line),
    }
}

/// Lines of one pod's log as [`LogLine`]s, bytes kept as written.
fn pod_lines<R>(reader: R, service: String, replica: u32) -> LogStream
where
    R: AsyncBufRead + Send + Unpin + 'static,
{
    Box::pin(stream::unfold(Some(reader), move |reader| {
        let service = service.clone();
        async move {
            let mut reader = reader?;
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) => None,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    let (timestamp, line) = split_timestamp(line);
                    Some((
                        Ok(LogLine {
                            service,
                            replica,
                            stderr: false,
                            line,
                            timestamp,
                        }),
                        Some(reader),
                    ))
                }
                Err(error) => Some((
                    Err(RuntimeError::Engine {
                        action: format!("read logs of {service}/{replica}"),
                        reason: error.to_string(),
                    }),
                    None,
                )),
            }
        }
    }))
}

/// The service (and StatefulSet ordinal) an event's object belongs to: the longest
/// service name the object's name starts with (pods are `<service>-<suffix>`).
fn event_owner(object_name: &str, services: &[String]) -> (Option<String>, Option<u32>) {
    let owner = services
        .iter()
        .filter(|service| {
            object_name == service.as_str()
                || object_name
                    .strip_prefix(service.as_str())
                    .is_some_and(|rest| rest.starts_with('-'))
        })
        .max_by_key(|service| service.len());
    let Some(owner) = owner else {
        return (None, None);
    };
    let ordinal = object_name
        .strip_prefix(owner.as_str())
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.parse().ok());
    (Some(owner.clone()), ordinal)
}

/// `Pulling image "busybox:1"` -> `busybox:1`
fn quoted(message: &str) -> Option<String> {
    let start = message.find('"')?;
    let rest = message.get(start.saturating_add(1)..)?;
    Some(rest.get(..rest.find('"')?)?.to_owned())
}

/// A Kubernetes Event in the runtime's terms.
pub fn runtime_event(lease_id: u64, event: &Event, services: &[String]) -> RuntimeEvent {
    let object_name = event.involved_object.name.as_deref().unwrap_or("");
    let (service, replica) = event_owner(object_name, services);
    let reason = event.reason.clone().unwrap_or_default();
    let message = event.message.clone().unwrap_or_default();
    let image = || quoted(&message).unwrap_or_default();
    let kind = match reason.as_str() {
        "Pulling" => RuntimeEventKind::PullProgress {
            image: image(),
            status: message.clone(),
            current: None,
            total: None,
        },
        "Pulled" => RuntimeEventKind::PullComplete { image: image() },
        "Created" => RuntimeEventKind::Created,
        "Started" => RuntimeEventKind::Started,
        "BackOff" if message.contains("restarting failed container") => {
            RuntimeEventKind::Died { exit_code: None }
        }
        "OOMKilling" => RuntimeEventKind::OutOfMemory,
        "Killing" | "SuccessfulDelete" => RuntimeEventKind::Removed,
        _ => RuntimeEventKind::Other { action: reason },
    };
    RuntimeEvent {
        lease_id,
        service,
        replica,
        kind,
    }
}

/// State of an events stream: renews the watch when the server ends it and
/// relists when its resource version has expired.
struct EventWatch {
    runtime: KubernetesRuntime,
    api: Api<Event>,
    lease_id: u64,
    services: Vec<String>,
    resource_version: String,
    current: Option<BoxStream<'static, kube::Result<WatchEvent<Event>>>>,
    renewals: u32,
    failed: bool,
}

impl EventWatch {
    async fn latest_version(api: &Api<Event>) -> Result<String, RuntimeError> {
        let list = api
            .list(&ListParams::default().limit(1))
            .await
            .map_err(|error| api_error("list events", error))?;
        Ok(list.metadata.resource_version.unwrap_or_default())
    }

    async fn next(mut self) -> Option<(Result<RuntimeEvent, RuntimeError>, Self)> {
        if self.failed {
            return None;
        }
        loop {
            let Some(current) = self.current.as_mut() else {
                if self.renewals > 0 {
                    // A server that ends watches at once must not make this spin.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                self.renewals = self.renewals.saturating_add(1);
                let params = WatchParams::default().timeout(WATCH_TIMEOUT_SECS);
                match self.api.watch(&params, &self.resource_version).await {
                    Ok(watch) => self.current = Some(watch.boxed()),
                    Err(error) => {
                        self.failed = true;
                        return Some((Err(api_error("watch events", error)), self));
                    }
                }
                continue;
            };
            match current.next().await {
                None => self.current = None,
                Some(Ok(WatchEvent::Added(event) | WatchEvent::Modified(event))) => {
                    if let Some(version) = event.metadata.resource_version.clone() {
                        self.resource_version = version;
                    }
                    let mut mapped = runtime_event(self.lease_id, &event, &self.services);
                    if mapped.service.is_none() {
                        // The stream may predate the deploy: learn the services now.
                        if let Ok(workloads) = self.runtime.workloads(self.lease_id).await {
                            self.services = workloads.into_iter().map(|w| w.service).collect();
                            mapped = runtime_event(self.lease_id, &event, &self.services);
                        }
                    }
                    return Some((Ok(mapped), self));
                }
                Some(Ok(WatchEvent::Deleted(event))) => {
                    if let Some(version) = event.metadata.resource_version {
                        self.resource_version = version;
                    }
                }
                Some(Ok(WatchEvent::Bookmark(bookmark))) => {
                    self.resource_version = bookmark.metadata.resource_version;
                }
                Some(Ok(WatchEvent::Error(status))) if status.code == 410 => {
                    self.current = None;
                    match Self::latest_version(&self.api).await {
                        Ok(version) => self.resource_version = version,
                        Err(error) => {
                            self.failed = true;
                            return Some((Err(error), self));
                        }
                    }
                }
                Some(Ok(WatchEvent::Error(status))) => {
                    self.failed = true;
                    let error = api_error("watch events", kube::Error::Api(status));
                    return Some((Err(error), self));
                }
                Some(Err(error)) => {
                    self.failed = true;
                    return Some((Err(api_error("watch events", error)), self));
                }
            }
        }
    }
}

#[async_trait]
impl Runtime for KubernetesRuntime {
    fn backend(&self) -> &'static str {
        "kubernetes"
    }

    async fn deploy(&self, deployment: &LeaseDeployment) -> Result<(), RuntimeError> {
        let objects = lease_objects(deployment, &self.config)?;
        let lease_id = deployment.lease_id;
        if let Some(existing) = self.owned_namespace(lease_id).await?
            && existing.metadata.deletion_timestamp.is_some()
        {
            return Err(RuntimeError::Engine {
                action: format!("deploy lease {lease_id}"),
                reason: "its namespace is still being deleted".to_owned(),
            });
        }
        self.apply(&self.namespaces(), &objects.namespace).await?;
        self.apply(
            &self.namespaced::<ResourceQuota>(lease_id),
            &objects.resource_quota,
        )
        .await?;
        self.apply(
            &self.namespaced::<LimitRange>(lease_id),
            &objects.limit_range,
        )
        .await?;
        self.apply(
            &self.namespaced::<NetworkPolicy>(lease_id),
            &objects.network_policy,
        )
        .await?;
        self.sync_pull_secret(lease_id, objects.pull_secret.as_ref())
            .await?;
        let names = |metas: Vec<Option<String>>| -> BTreeSet<String> {
            metas.into_iter().flatten().collect()
        };
        let services: Api<Service> = self.namespaced(lease_id);
        for service in &objects.services {
            self.apply(&services, service).await?;
        }
        let deployments: Api<Deployment> = self.namespaced(lease_id);
        for workload in &objects.deployments {
            self.apply(&deployments, workload).await?;
        }
        let stateful_sets: Api<StatefulSet> = self.namespaced(lease_id);
        for workload in &objects.stateful_sets {
            self.apply(&stateful_sets, workload).await?;
        }
        let keep_services = names(
            objects
                .services
                .iter()
                .map(|o| o.metadata.name.clone())
                .collect(),
        );
        let keep_deployments = names(
            objects
                .deployments
                .iter()
                .map(|o| o.metadata.name.clone())
                .collect(),
        );
        let keep_stateful_sets = names(
            objects
                .stateful_sets
                .iter()
                .map(|o| o.metadata.name.clone())
                .collect(),
        );
        self.prune::<Service>(lease_id, &keep_services).await?;
        self.prune::<Deployment>(lease_id, &keep_deployments)
            .await?;
        self.prune::<StatefulSet>(lease_id, &keep_stateful_sets)
            .await?;
        tracing::info!(lease_id, namespace = %self.namespace(lease_id), "lease applied");
        Ok(())
    }

    async fn status(&self, lease_id: u64) -> Result<LeaseRuntimeStatus, RuntimeError> {
        if self.owned_namespace(lease_id).await?.is_none() {
            return Ok(LeaseRuntimeStatus {
                lease_id,
                services: Vec::new(),
            });
        }
        let workloads = self.workloads(lease_id).await?;
        let by_lease = ListParams::default().labels(&super::lease_selector(lease_id));
        let pods: Vec<Pod> = self.list_in(lease_id, &by_lease).await?;
        let services: Vec<Service> = self.list_in(lease_id, &by_lease).await?;
        let observed = observe(
            &workloads,
            &pods,
            &published_ports(&services),
            self.config.public_host.as_deref(),
        );
        Ok(LeaseRuntimeStatus::from_observed(lease_id, observed))
    }

    async fn logs(
        &self,
        lease_id: u64,
        service: Option<&str>,
        follow: bool,
        tail: Option<u32>,
    ) -> Result<LogStream, RuntimeError> {
        let not_found = || RuntimeError::NotFound {
            what: match service {
                Some(service) => format!("service {service} of lease {lease_id}"),
                None => format!("lease {lease_id}"),
            },
        };
        if self.owned_namespace(lease_id).await?.is_none() {
            return Err(not_found());
        }
        let workloads: Vec<WorkloadView> = self
            .workloads(lease_id)
            .await?
            .into_iter()
            .filter(|workload| service.is_none_or(|name| workload.service == name))
            .collect();
        let pods: Vec<Pod> = self
            .list_in(
                lease_id,
                &ListParams::default().labels(&super::lease_selector(lease_id)),
            )
            .await?;
        let api: Api<Pod> = self.namespaced(lease_id);
        let mut streams = Vec::new();
        for workload in &workloads {
            for (replica, pod) in indexed_pods(workload, &pods) {
                let Some(name) = pod.metadata.name.as_deref() else {
                    continue;
                };
                let params = LogParams {
                    container: Some(workload.service.clone()),
                    follow,
                    tail_lines: tail.map(i64::from),
                    timestamps: true,
                    ..LogParams::default()
                };
                match api.log_stream(name, &params).await {
                    Ok(reader) => streams.push(pod_lines(
                        Box::pin(reader),
                        workload.service.clone(),
                        replica,
                    )),
                    // A pod still pulling its image has no log yet.
                    Err(kube::Error::Api(status)) if status.code == 400 => {
                        tracing::debug!(pod = name, message = %status.message, "no log yet");
                    }
                    Err(error) => {
                        return Err(api_error(format!("read logs of pod {name}"), error));
                    }
                }
            }
        }
        if workloads.is_empty() {
            return Err(not_found());
        }
        Ok(Box::pin(stream::select_all(streams)))
    }

    /// Works before the first deploy too (watching a namespace that does not exist
    /// yet is allowed), so a deploy's pulls can be followed from the start.
    async fn events(&self, lease_id: u64) -> Result<EventStream, RuntimeError> {
        let services = match self.owned_namespace(lease_id).await? {
            Some(_) => self
                .workloads(lease_id)
                .await?
                .into_iter()
                .map(|workload| workload.service)
                .collect(),
            None => Vec::new(),
        };
        let api: Api<Event> = self.namespaced(lease_id);
        let resource_version = EventWatch::latest_version(&api).await?;
        let watch = EventWatch {
            runtime: self.clone(),
            api,
            lease_id,
            services,
            resource_version,
            current: None,
            renewals: 0,
            failed: false,
        };
        Ok(Box::pin(stream::unfold(watch, EventWatch::next)))
    }

    async fn teardown(&self, lease_id: u64) -> Result<(), RuntimeError> {
        if self.owned_namespace(lease_id).await?.is_none() {
            return Ok(());
        }
        let name = self.namespace(lease_id);
        match self
            .namespaces()
            .delete(&name, &DeleteParams::foreground())
            .await
        {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => return Ok(()),
            Err(error) => return Err(api_error(format!("delete namespace {name}"), error)),
        }
        let started = Instant::now();
        loop {
            let remaining = self
                .namespaces()
                .get_opt(&name)
                .await
                .map_err(|error| api_error(format!("read namespace {name}"), error))?;
            if remaining.is_none() {
                tracing::info!(lease_id, namespace = %name, "lease torn down");
                return Ok(());
            }
            if started.elapsed() >= self.config.teardown_timeout {
                return Err(RuntimeError::Engine {
                    action: format!("tear down lease {lease_id}"),
                    reason: format!(
                        "namespace {name} is still terminating after {}s",
                        self.config.teardown_timeout.as_secs()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn list_leases(&self) -> Result<Vec<u64>, RuntimeError> {
        let mut selectors = self.config.scope().selectors();
        selectors.push(LABEL_LEASE.to_owned());
        let selector = selectors.join(",");
        let namespaces = self
            .namespaces()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|error| api_error("list lease namespaces", error))?;
        let mut leases: Vec<u64> = namespaces
            .items
            .iter()
            .filter_map(|namespace| {
                let lease_id =
                    parse_lease_label(namespace.metadata.labels.as_ref()?.get(LABEL_LEASE)?)?;
                // A namespace whose name does not match its label was not made here.
                (namespace.metadata.name.as_deref() == Some(self.namespace(lease_id).as_str()))
                    .then_some(lease_id)
            })
            .collect();
        leases.sort_unstable();
        leases.dedup();
        Ok(leases)
    }

    async fn cluster_nodes(&self) -> Result<Option<Vec<NodeSpec>>, RuntimeError> {
        let options = InventoryOptions {
            gpu_label: self.config.gpu_label.clone(),
            ..InventoryOptions::default()
        };
        let inventory = self.inventory(&options).await?;
        for skipped in &inventory.skipped {
            tracing::info!(node = %skipped.node, reason = %skipped.reason, "node left out of the inventory");
        }
        Ok(Some(inventory.nodes))
    }

    async fn exec(
        &self,
        lease_id: u64,
        request: &super::ExecRequest,
    ) -> Result<super::ExecSession, RuntimeError> {
        self.exec_in_pod(lease_id, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_belong_to_the_longest_matching_service() {
        let services = vec!["web".to_owned(), "web-api".to_owned()];
        assert_eq!(
            event_owner("web-api-5d8f7c9b4-abcde", &services),
            (Some("web-api".to_owned()), None)
        );
        assert_eq!(
            event_owner("web-0", &services),
            (Some("web".to_owned()), Some(0))
        );
        assert_eq!(event_owner("webby-1", &services), (None, None));
        assert_eq!(
            quoted("Pulling image \"busybox:1.36\""),
            Some("busybox:1.36".into())
        );
    }

    #[test]
    fn log_timestamps_are_split_only_when_present() {
        let (stamp, line) = split_timestamp(b"2026-01-01T00:00:01.5Z hello world".to_vec());
        assert_eq!(stamp.as_deref(), Some("2026-01-01T00:00:01.5Z"));
        assert_eq!(line, b"hello world");
        let (stamp, line) = split_timestamp(b"plain line".to_vec());
        assert_eq!((stamp, line), (None, b"plain line".to_vec()));
    }

    #[test]
    fn config_is_checked_before_use() {
        assert!(KubernetesRuntimeConfig::new("0xabc").validate().is_ok());
        let mut bad = KubernetesRuntimeConfig::new("0xabc");
        bad.namespace_prefix = "Lease_".into();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("kubernetes.namespace_prefix")
        );
        let bad = KubernetesRuntimeConfig::new("not a label value");
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("kubernetes.provider")
        );
    }
}
