//! The Kubernetes objects of a lease, built from a [`LeaseDeployment`] without
//! touching a cluster, so that they can be checked field by field and snapshotted.
//!
//! Per lease: a namespace, a ResourceQuota and a LimitRange capping it at exactly what
//! the lease bought, a NetworkPolicy isolating it from other leases, and per service a
//! Deployment (a StatefulSet when it has persistent volumes), a ClusterIP Service for
//! its ports, a NodePort Service for its global ports and, per leased address its ports
//! use, a ClusterIP Service with that address as its one `externalIPs` entry.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment, StatefulSet,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, LimitRange,
    LimitRangeItem, LimitRangeSpec, LocalObjectReference, Namespace, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceQuota, ResourceQuotaSpec,
    ResourceRequirements, SeccompProfile, Secret, SecurityContext, Service, ServicePort,
    ServiceSpec, Toleration, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use leasehold_manifests::{GpuModelKey, GpuModelPattern};
use sha2::{Digest, Sha256};

use super::KubernetesRuntimeConfig;
use crate::runtime::docker::NVIDIA_VISIBLE_DEVICES;
use crate::runtime::{
    LABEL_LEASE, LABEL_SERVICE, LeaseDeployment, PortExposure, Protocol, RuntimeError,
    RuntimeScope, ServiceDeployment, invalid, registry,
};

pub use crate::runtime::LABEL_PROVIDER;
/// The extended resource the NVIDIA device plugin advertises.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// The node label NVIDIA GPU feature discovery sets to the product name.
pub const DEFAULT_GPU_PRODUCT_LABEL: &str = "nvidia.com/gpu.product";
/// The node label GPU feature discovery sets to the memory of each GPU in MiB.
pub const GPU_MEMORY_LABEL: &str = "nvidia.com/gpu.memory";
/// Names of the per-lease objects that are not per service.
pub const QUOTA_NAME: &str = "lease-quota";
pub const LIMIT_RANGE_NAME: &str = "lease-limits";
pub const NETWORK_POLICY_NAME: &str = "lease-isolation";
/// The lease's one image pull Secret (`kubernetes.io/dockerconfigjson`): one fixed name,
/// so the runtime writes and deletes it by name and never needs to read or list Secrets.
pub const PULL_SECRET_NAME: &str = "registry-credentials";
/// Always outside what lease pods may reach: link-local, where cloud metadata answers.
pub const LINK_LOCAL_RANGE: &str = "169.254.0.0/16";
/// What lease pods may not reach by default besides link-local: RFC 1918.
pub const DEFAULT_EGRESS_BLOCKED_RANGES: [&str; 3] =
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];
/// Suffix of the NodePort Service carrying a service's global ports.
pub const NODE_PORT_SUFFIX: &str = "-np";
/// Between a service's name and the address in the name of its leased-IP Service.
pub const LEASED_IP_INFIX: &str = "-ip-";
/// Pod Security Admission level enforced on lease namespaces whose pods may run as root.
const PSA_BASELINE: &str = "baseline";
const PSA_RESTRICTED: &str = "restricted";

/// Our GPU model keys and the product names GPU feature discovery labels nodes with
/// (`nvidia.com/gpu.product`: the driver's name with spaces as '-'). Pods are pinned with
/// it (a lease names models, and node affinity needs the label values). The inventory reads
/// node labels through the one product rule (`GpuModelKey::from_product`, which a test
/// checks gives every key here) and uses this table only where the rule cannot decide: a
/// product label without GPU feature discovery's memory label.
pub const GPU_PRODUCTS: &[(&str, &str)] = &[
    ("nvidia/a100/40Gi/pcie", "NVIDIA-A100-PCIE-40GB"),
    ("nvidia/a100/40Gi/sxm", "NVIDIA-A100-SXM4-40GB"),
    ("nvidia/a100/80Gi/pcie", "NVIDIA-A100-80GB-PCIe"),
    ("nvidia/a100/80Gi/sxm", "NVIDIA-A100-SXM4-80GB"),
    ("nvidia/a10/24Gi/pcie", "NVIDIA-A10"),
    ("nvidia/a40/48Gi/pcie", "NVIDIA-A40"),
    ("nvidia/h100/80Gi/pcie", "NVIDIA-H100-PCIe"),
    ("nvidia/h100/80Gi/sxm", "NVIDIA-H100-80GB-HBM3"),
    ("nvidia/h100/94Gi/pcie", "NVIDIA-H100-NVL"),
    ("nvidia/h200/141Gi/sxm", "NVIDIA-H200"),
    ("nvidia/l4/24Gi/pcie", "NVIDIA-L4"),
    ("nvidia/l40s/48Gi/pcie", "NVIDIA-L40S"),
    ("nvidia/rtx3090/24Gi/pcie", "NVIDIA-GeForce-RTX-3090"),
    ("nvidia/rtx4090/24Gi/pcie", "NVIDIA-GeForce-RTX-4090"),
    ("nvidia/t4/16Gi/pcie", "Tesla-T4"),
    ("nvidia/v100/16Gi/pcie", "Tesla-V100-PCIE-16GB"),
    ("nvidia/v100/32Gi/sxm", "Tesla-V100-SXM2-32GB"),
];

/// The model key of a product label from [`GPU_PRODUCTS`], if listed.
pub fn gpu_model_for_product(product: &str) -> Option<GpuModelKey> {
    GPU_PRODUCTS
        .iter()
        .find(|(_, known)| known.eq_ignore_ascii_case(product))
        .and_then(|(key, _)| key.parse().ok())
}

/// The product labels of every known GPU matching one of `models`, sorted. Fails naming
/// the model when one matches nothing known, since the pods would otherwise never schedule.
pub fn gpu_products_for(
    models: &[GpuModelPattern],
    field: &str,
) -> Result<Vec<String>, RuntimeError> {
    let mut products = BTreeSet::new();
    for model in models {
        let before = products.len();
        for (key, product) in GPU_PRODUCTS {
            let known: GpuModelKey = key
                .parse()
                .map_err(|error| invalid(field, format!("{key}: {error}")))?;
            if model.matches(&known) {
                products.insert((*product).to_owned());
            }
        }
        if products.len() == before {
            return Err(invalid(
                field,
                format!("no Kubernetes GPU product label is known for model {model}"),
            ));
        }
    }
    Ok(products.into_iter().collect())
}

/// The namespace of a lease: `<prefix>-<16 hex digits of
/// sha256("<chain id>/<provider>/lease/<id>")>`. Namespaces are cluster-wide, so the
/// chain and provider are in it: two providers (or one on two chains) sharing a cluster
/// each get their own lease 1. Hashed so that the name says nothing about the lease to
/// other tenants reading DNS names, and stays short whatever the prefix.
pub fn namespace_name(prefix: &str, scope: &RuntimeScope, lease_id: u64) -> String {
    let digest = Sha256::digest(
        format!("{}/{}/lease/{lease_id}", scope.chain_id, scope.provider).as_bytes(),
    );
    let short: String = digest
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("{prefix}-{short}")
}

/// The NodePort Service of a service.
pub fn node_port_service_name(service: &str) -> String {
    format!("{service}{NODE_PORT_SUFFIX}")
}

/// The Service carrying a service's ports on one leased address: `web-ip-203-0-113-10`
/// (an IPv6 address's ':' become '-' too, and a trailing one gets its implied `0`).
pub fn leased_ip_service_name(service: &str, address: IpAddr) -> String {
    let mut label: String = address
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if label.ends_with('-') {
        label.push('0');
    }
    format!("{service}{LEASED_IP_INFIX}{label}")
}

/// The distinct leased addresses a service's global ports are published on, sorted.
fn leased_addresses(service: &ServiceDeployment) -> BTreeSet<IpAddr> {
    service
        .expose
        .iter()
        .filter(|exposure| exposure.global)
        .filter_map(|exposure| exposure.leased_ip)
        .collect()
}

/// Every object of one lease, in the order they are applied.
#[derive(Debug, Clone)]
pub struct LeaseObjects {
    pub namespace: Namespace,
    pub resource_quota: ResourceQuota,
    pub limit_range: LimitRange,
    pub network_policy: NetworkPolicy,
    /// The registry credentials of the services that have them; `None` when none has
    /// (the runtime then deletes any Secret an earlier manifest left).
    pub pull_secret: Option<Secret>,
    /// ClusterIP Services, then NodePort Services, then leased-IP Services.
    pub services: Vec<Service>,
    pub deployments: Vec<Deployment>,
    pub stateful_sets: Vec<StatefulSet>,
}

impl LeaseObjects {
    /// All objects as JSON, in apply order (what a snapshot compares).
    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        let mut objects = vec![
            serde_json::to_value(&self.namespace)?,
            serde_json::to_value(&self.resource_quota)?,
            serde_json::to_value(&self.limit_range)?,
            serde_json::to_value(&self.network_policy)?,
        ];
        if let Some(secret) = &self.pull_secret {
            objects.push(serde_json::to_value(secret)?);
        }
        for service in &self.services {
            objects.push(serde_json::to_value(service)?);
        }
        for deployment in &self.deployments {
            objects.push(serde_json::to_value(deployment)?);
        }
        for stateful_set in &self.stateful_sets {
            objects.push(serde_json::to_value(stateful_set)?);
        }
        Ok(serde_json::Value::Array(objects))
    }
}

/// Builds the objects of a lease. Validates the deployment first.
pub fn lease_objects(
    deployment: &LeaseDeployment,
    config: &KubernetesRuntimeConfig,
) -> Result<LeaseObjects, RuntimeError> {
    deployment.validate()?;
    let scope = config.scope();
    let namespace = namespace_name(&config.namespace_prefix, &scope, deployment.lease_id);
    check_object_names(deployment)?;
    let lease_labels = deployment.lease_labels(&scope);
    let meta = |name: &str| ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.clone()),
        labels: Some(lease_labels.clone()),
        ..ObjectMeta::default()
    };

    let mut services = Vec::new();
    let mut node_port_services = Vec::new();
    let mut leased_ip_services = Vec::new();
    let mut deployments = Vec::new();
    let mut stateful_sets = Vec::new();
    for service in &deployment.services {
        let service_meta = |name: &str| {
            let mut object_meta = meta(name);
            object_meta
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(LABEL_SERVICE.to_owned(), service.name.clone());
            object_meta
        };
        if !service.expose.is_empty() {
            services.push(cluster_ip_service(
                service,
                deployment.lease_id,
                service_meta(&service.name),
            ));
        }
        if service.expose.iter().any(is_node_port) {
            node_port_services.push(node_port_service(
                service,
                deployment.lease_id,
                service_meta(&node_port_service_name(&service.name)),
            ));
        }
        for address in leased_addresses(service) {
            leased_ip_services.push(leased_ip_service(
                service,
                address,
                deployment.lease_id,
                service_meta(&leased_ip_service_name(&service.name, address)),
            ));
        }
        // Replicas share one pod template, so they share one GPU count.
        let gpus = service.gpus_per_replica();
        if service
            .gpu_devices
            .iter()
            .any(|devices| u32::try_from(devices.len()).ok() != Some(gpus))
        {
            return Err(invalid(
                format!("services.{}.gpu_devices", service.name),
                "every replica needs the same number of GPUs on Kubernetes",
            ));
        }
        let template = pod_template(deployment, service, config)?;
        let selector = LabelSelector {
            match_labels: Some(selector_labels(deployment.lease_id, &service.name)),
            ..LabelSelector::default()
        };
        let replicas = i32::try_from(service.replicas)
            .map_err(|_| invalid(format!("services.{}.replicas", service.name), "too large"))?;
        if service.volumes.is_empty() {
            deployments.push(Deployment {
                metadata: service_meta(&service.name),
                spec: Some(DeploymentSpec {
                    replicas: Some(replicas),
                    selector,
                    template,
                    // The quota admits exactly the lease's pods, so an update must
                    // take a pod down before starting its replacement.
                    strategy: Some(DeploymentStrategy {
                        type_: Some("RollingUpdate".to_owned()),
                        rolling_update: Some(RollingUpdateDeployment {
                            max_surge: Some(IntOrString::Int(0)),
                            max_unavailable: Some(IntOrString::Int(1)),
                        }),
                    }),
                    revision_history_limit: Some(2),
                    ..DeploymentSpec::default()
                }),
                ..Deployment::default()
            });
        } else {
            stateful_sets.push(StatefulSet {
                metadata: service_meta(&service.name),
                spec: Some(StatefulSetSpec {
                    replicas: Some(replicas),
                    selector,
                    service_name: Some(service.name.clone()),
                    template,
                    volume_claim_templates: Some(volume_claims(service, config)?),
                    persistent_volume_claim_retention_policy: Some(
                        StatefulSetPersistentVolumeClaimRetentionPolicy {
                            when_deleted: Some("Delete".to_owned()),
                            when_scaled: Some("Delete".to_owned()),
                        },
                    ),
                    pod_management_policy: Some("Parallel".to_owned()),
                    revision_history_limit: Some(2),
                    ..StatefulSetSpec::default()
                }),
                ..StatefulSet::default()
            });
        }
    }
    services.extend(node_port_services);
    services.extend(leased_ip_services);
    let namespace_object = namespace_object(deployment, config, &namespace);
    let (resource_quota, limit_range) = limits(deployment, config, &meta)?;
    Ok(LeaseObjects {
        namespace: namespace_object,
        resource_quota,
        limit_range,
        network_policy: network_policy(deployment, meta(NETWORK_POLICY_NAME), config),
        pull_secret: pull_secret(deployment, meta(PULL_SECRET_NAME)),
        services,
        deployments,
        stateful_sets,
    })
}

/// The `kubernetes.io/dockerconfigjson` Secret the lease's pods pull private images with:
/// one entry per registry host (the first service, by name, wins a host two services
/// give different credentials for).
fn pull_secret(deployment: &LeaseDeployment, metadata: ObjectMeta) -> Option<Secret> {
    let mut hosts = BTreeSet::new();
    let credentials: Vec<_> = deployment
        .services
        .iter()
        .filter_map(|service| service.credentials.as_ref())
        .filter(|credentials| hosts.insert(credentials.host.as_str()))
        .collect();
    if credentials.is_empty() {
        return None;
    }
    Some(Secret {
        metadata,
        type_: Some("kubernetes.io/dockerconfigjson".to_owned()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_owned(),
            ByteString(registry::docker_config_json(&credentials)),
        )])),
        immutable: Some(false),
        ..Secret::default()
    })
}

/// Labels selecting a service's pods.
pub fn selector_labels(lease_id: u64, service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_LEASE.to_owned(), lease_id.to_string()),
        (LABEL_SERVICE.to_owned(), service.to_owned()),
    ])
}

/// The API server's default NodePort range; a fixed host port outside it would be
/// refused at apply time, so it is refused here with the field named.
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Service objects share one namespace, so `web-np` (NodePort of `web`) must not be a
/// service of its own; and the suffixed name must still be a DNS label.
fn check_object_names(deployment: &LeaseDeployment) -> Result<(), RuntimeError> {
    let names: BTreeSet<&str> = deployment
        .services
        .iter()
        .map(|service| service.name.as_str())
        .collect();
    for service in &deployment.services {
        if let Some(port) = service
            .expose
            .iter()
            .filter_map(|exposure| exposure.host_port)
            .find(|port| !NODE_PORT_RANGE.contains(port))
        {
            return Err(invalid(
                format!("services.{}.expose", service.name),
                format!(
                    "fixed host port {port} is outside the NodePort range {}-{}",
                    NODE_PORT_RANGE.start(),
                    NODE_PORT_RANGE.end()
                ),
            ));
        }
        if let Some(exposure) = service
            .expose
            .iter()
            .find(|exposure| exposure.leased_ip.is_some() && exposure.host_port.is_some())
        {
            return Err(invalid(
                format!("services.{}.expose", service.name),
                format!(
                    "port {}/{}: a port on a leased IP answers on its own port ({}) on \
                     Kubernetes, so a fixed host port does not apply",
                    exposure.port, exposure.proto, exposure.external_port
                ),
            ));
        }
        let mut public_services: Vec<String> = leased_addresses(service)
            .into_iter()
            .map(|address| leased_ip_service_name(&service.name, address))
            .collect();
        if service.expose.iter().any(is_node_port) {
            public_services.push(node_port_service_name(&service.name));
        }
        for public in public_services {
            if names.contains(public.as_str()) || !crate::runtime::is_dns_label(&public) {
                return Err(invalid(
                    format!("services.{}.name", service.name),
                    format!(
                        "the Kubernetes runtime names a public Service {public}, which must be \
                         a DNS label of at most 63 characters and not another service's name"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A global port that is not on a leased address: published on every node.
fn is_node_port(exposure: &PortExposure) -> bool {
    exposure.global && exposure.leased_ip.is_none()
}

fn namespace_object(
    deployment: &LeaseDeployment,
    config: &KubernetesRuntimeConfig,
    name: &str,
) -> Namespace {
    let mut labels = deployment.lease_labels(&config.scope());
    let enforce = if config.run_as_non_root {
        PSA_RESTRICTED
    } else {
        PSA_BASELINE
    };
    labels.insert(
        "pod-security.kubernetes.io/enforce".to_owned(),
        enforce.to_owned(),
    );
    labels.insert(
        "pod-security.kubernetes.io/warn".to_owned(),
        PSA_RESTRICTED.to_owned(),
    );
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

fn port_name(proto: Protocol, port: u16) -> String {
    format!("{proto}-{port}")
}

fn k8s_protocol(proto: Protocol) -> String {
    match proto {
        Protocol::Tcp => "TCP".to_owned(),
        Protocol::Udp => "UDP".to_owned(),
    }
}

/// Other services of the lease reach this one by name on the container port, as
/// on Docker's lease network.
fn cluster_ip_service(service: &ServiceDeployment, lease_id: u64, metadata: ObjectMeta) -> Service {
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_labels(lease_id, &service.name)),
            ports: Some(
                service
                    .expose
                    .iter()
                    .map(|exposure| ServicePort {
                        name: Some(port_name(exposure.proto, exposure.port)),
                        port: i32::from(exposure.port),
                        target_port: Some(IntOrString::Int(i32::from(exposure.port))),
                        protocol: Some(k8s_protocol(exposure.proto)),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// A published port: the Service's port is the exposed (`as`) port, so status can tell
/// HTTP from raw TCP, and it forwards to the container port.
fn public_port(exposure: &PortExposure) -> ServicePort {
    ServicePort {
        name: Some(port_name(exposure.proto, exposure.port)),
        port: i32::from(exposure.external_port),
        target_port: Some(IntOrString::Int(i32::from(exposure.port))),
        protocol: Some(k8s_protocol(exposure.proto)),
        ..ServicePort::default()
    }
}

/// Global ports not on a leased address, on every node: the node port is the fixed host
/// port when one was asked for, else the cluster's choice.
fn node_port_service(service: &ServiceDeployment, lease_id: u64, metadata: ObjectMeta) -> Service {
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some("NodePort".to_owned()),
            external_traffic_policy: Some("Cluster".to_owned()),
            selector: Some(selector_labels(lease_id, &service.name)),
            ports: Some(
                service
                    .expose
                    .iter()
                    .filter(|exposure| is_node_port(exposure))
                    .map(|exposure| ServicePort {
                        node_port: exposure.host_port.map(i32::from),
                        ..public_port(exposure)
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The service's ports on one leased address, on their own (`as`) port and on that address
/// only: kube-proxy on every node forwards traffic for `externalIPs` to the pods, and the
/// provider routes the address to its nodes. ClusterIP rather than LoadBalancer: a
/// LoadBalancer needs a controller (MetalLB, a cloud's) that not every cluster has, the
/// lease quota allows none, and it would open NodePorts on every node besides.
fn leased_ip_service(
    service: &ServiceDeployment,
    address: IpAddr,
    lease_id: u64,
    metadata: ObjectMeta,
) -> Service {
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            external_ips: Some(vec![address.to_string()]),
            selector: Some(selector_labels(lease_id, &service.name)),
            ports: Some(
                service
                    .expose
                    .iter()
                    .filter(|exposure| exposure.global && exposure.leased_ip == Some(address))
                    .map(public_port)
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn quantity(value: impl ToString) -> Quantity {
    Quantity(value.to_string())
}

fn cpu_quantity(millis: u64) -> Quantity {
    Quantity(format!("{millis}m"))
}

/// Requests equal limits: the lease bought fixed resources (Guaranteed QoS).
fn container_resources(service: &ServiceDeployment) -> ResourceRequirements {
    let mut amounts = BTreeMap::from([
        ("cpu".to_owned(), cpu_quantity(service.resources.cpu_millis)),
        (
            "memory".to_owned(),
            quantity(service.resources.memory_bytes),
        ),
    ]);
    if service.resources.storage_bytes > 0 {
        amounts.insert(
            "ephemeral-storage".to_owned(),
            quantity(service.resources.storage_bytes),
        );
    }
    let gpus = service.gpus_per_replica();
    if gpus > 0 {
        amounts.insert(GPU_RESOURCE.to_owned(), quantity(gpus));
    }
    ResourceRequirements {
        requests: Some(amounts.clone()),
        limits: Some(amounts),
        ..ResourceRequirements::default()
    }
}

fn pod_template(
    deployment: &LeaseDeployment,
    service: &ServiceDeployment,
    config: &KubernetesRuntimeConfig,
) -> Result<PodTemplateSpec, RuntimeError> {
    let mut labels = deployment.lease_labels(&config.scope());
    labels.insert(LABEL_SERVICE.to_owned(), service.name.clone());
    let binds_low_port = service.expose.iter().any(|exposure| exposure.port < 1024);
    // Dropping every capability would stop a root process from binding port 80;
    // NET_BIND_SERVICE is the one capability the restricted profile allows back.
    let added = binds_low_port.then(|| vec!["NET_BIND_SERVICE".to_owned()]);
    let container = Container {
        name: service.name.clone(),
        image: Some(service.image.clone()),
        command: (!service.command.is_empty()).then(|| service.command.clone()),
        args: (!service.args.is_empty()).then(|| service.args.clone()),
        env: (!service.env.is_empty()).then(|| {
            // The device plugin alone picks a pod's GPUs; the NVIDIA runtime honours this
            // variable by default and would expose every GPU of the node to a tenant who
            // sets it to `all`.
            service
                .env
                .iter()
                .filter(|(name, _)| name.as_str() != NVIDIA_VISIBLE_DEVICES)
                .map(|(name, value)| EnvVar {
                    name: name.clone(),
                    value: Some(value.clone()),
                    ..EnvVar::default()
                })
                .collect()
        }),
        ports: (!service.expose.is_empty()).then(|| {
            service
                .expose
                .iter()
                .map(|exposure| ContainerPort {
                    name: Some(port_name(exposure.proto, exposure.port)),
                    container_port: i32::from(exposure.port),
                    protocol: Some(k8s_protocol(exposure.proto)),
                    ..ContainerPort::default()
                })
                .collect()
        }),
        resources: Some(container_resources(service)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            run_as_non_root: Some(config.run_as_non_root),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: added,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: volume_mounts(service),
        ..Container::default()
    };
    let gpu_scheduling = if service.gpus_per_replica() > 0 {
        Some(gpu_affinity(service, config)?)
    } else {
        None
    };
    Ok(PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            host_network: Some(false),
            host_pid: Some(false),
            host_ipc: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(config.run_as_non_root),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            volumes: ram_volumes(service),
            image_pull_secrets: service.credentials.is_some().then(|| {
                vec![LocalObjectReference {
                    name: PULL_SECRET_NAME.to_owned(),
                }]
            }),
            affinity: gpu_scheduling.clone().map(|(affinity, _)| affinity),
            tolerations: gpu_scheduling.map(|(_, tolerations)| tolerations),
            ..PodSpec::default()
        }),
    })
}

/// The container's mounts: its persistent volumes (claims of the StatefulSet) and its
/// `ram` volumes.
fn volume_mounts(service: &ServiceDeployment) -> Option<Vec<VolumeMount>> {
    let persistent = service.volumes.iter().map(|volume| VolumeMount {
        name: volume.name.clone(),
        mount_path: volume.mount.clone(),
        read_only: Some(volume.read_only),
        ..VolumeMount::default()
    });
    let ram = service.ram_volumes.iter().map(|volume| VolumeMount {
        name: volume.name.clone(),
        mount_path: volume.mount.clone(),
        ..VolumeMount::default()
    });
    let mounts: Vec<VolumeMount> = persistent.chain(ram).collect();
    (!mounts.is_empty()).then_some(mounts)
}

/// The `ram` volumes as memory-backed emptyDirs: the kubelet charges their pages to the
/// container's memory limit, which counts them, and `sizeLimit` caps each one.
fn ram_volumes(service: &ServiceDeployment) -> Option<Vec<Volume>> {
    (!service.ram_volumes.is_empty()).then(|| {
        service
            .ram_volumes
            .iter()
            .map(|volume| Volume {
                name: volume.name.clone(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".to_owned()),
                    size_limit: Some(quantity(volume.size_bytes)),
                }),
                ..Volume::default()
            })
            .collect()
    })
}

/// Pins GPU replicas to nodes whose product label names an accepted model (any GPU
/// node when the service accepts any), and tolerates the taint GPU nodes usually carry.
fn gpu_affinity(
    service: &ServiceDeployment,
    config: &KubernetesRuntimeConfig,
) -> Result<(Affinity, Vec<Toleration>), RuntimeError> {
    let requirement = if service.gpu_models.is_empty() {
        NodeSelectorRequirement {
            key: config.gpu_label.clone(),
            operator: "Exists".to_owned(),
            values: None,
        }
    } else {
        NodeSelectorRequirement {
            key: config.gpu_label.clone(),
            operator: "In".to_owned(),
            values: Some(gpu_products_for(
                &service.gpu_models,
                &format!("services.{}.gpu_models", service.name),
            )?),
        }
    };
    let affinity = Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![requirement]),
                    ..NodeSelectorTerm::default()
                }],
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    };
    let toleration = Toleration {
        key: Some(GPU_RESOURCE.to_owned()),
        operator: Some("Exists".to_owned()),
        effect: Some("NoSchedule".to_owned()),
        ..Toleration::default()
    };
    Ok((affinity, vec![toleration]))
}

/// The cluster storage class for a tenant's class: the provider's mapping, else the
/// same name; Akash's `default` (or none) means the cluster's default class.
fn storage_class(class: Option<&str>, config: &KubernetesRuntimeConfig) -> Option<String> {
    let class = class.filter(|class| *class != "default")?;
    Some(
        config
            .storage_classes
            .get(class)
            .cloned()
            .unwrap_or_else(|| class.to_owned()),
    )
}

fn volume_claims(
    service: &ServiceDeployment,
    config: &KubernetesRuntimeConfig,
) -> Result<Vec<PersistentVolumeClaim>, RuntimeError> {
    Ok(service
        .volumes
        .iter()
        .map(|volume| PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(volume.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                storage_class_name: storage_class(volume.class.as_deref(), config),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_owned(),
                        quantity(volume.size_bytes),
                    )])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        })
        .collect())
}

/// Totals of a lease, with checked arithmetic.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct LeaseTotals {
    pods: u64,
    cpu_millis: u64,
    memory_bytes: u64,
    ephemeral_bytes: u64,
    gpus: u64,
    claims: u64,
    persistent_bytes: u64,
    persistent_by_class: BTreeMap<String, u64>,
    node_ports: u64,
    services: u64,
}

fn lease_totals(
    deployment: &LeaseDeployment,
    config: &KubernetesRuntimeConfig,
) -> Result<LeaseTotals, RuntimeError> {
    let overflow = |what: &str| invalid(format!("services ({what} total)"), "too large");
    let add =
        |sum: u64, value: u64, what: &str| sum.checked_add(value).ok_or_else(|| overflow(what));
    let mut totals = LeaseTotals::default();
    for service in &deployment.services {
        let replicas = u64::from(service.replicas);
        let scaled =
            |value: u64, what: &str| value.checked_mul(replicas).ok_or_else(|| overflow(what));
        totals.pods = add(totals.pods, replicas, "pods")?;
        totals.cpu_millis = add(
            totals.cpu_millis,
            scaled(service.resources.cpu_millis, "cpu")?,
            "cpu",
        )?;
        totals.memory_bytes = add(
            totals.memory_bytes,
            scaled(service.resources.memory_bytes, "memory")?,
            "memory",
        )?;
        totals.ephemeral_bytes = add(
            totals.ephemeral_bytes,
            scaled(service.resources.storage_bytes, "storage")?,
            "storage",
        )?;
        totals.gpus = add(
            totals.gpus,
            scaled(u64::from(service.gpus_per_replica()), "gpu")?,
            "gpu",
        )?;
        for volume in &service.volumes {
            let bytes = scaled(volume.size_bytes, "persistent storage")?;
            totals.claims = add(totals.claims, replicas, "volumes")?;
            totals.persistent_bytes = add(totals.persistent_bytes, bytes, "persistent storage")?;
            if let Some(class) = storage_class(volume.class.as_deref(), config) {
                let entry = totals.persistent_by_class.entry(class).or_insert(0);
                *entry = add(*entry, bytes, "persistent storage")?;
            }
        }
        let node_ports = service.expose.iter().filter(|e| is_node_port(e)).count() as u64;
        totals.node_ports = add(totals.node_ports, node_ports, "ports")?;
        let service_objects = u64::from(!service.expose.is_empty())
            + u64::from(node_ports > 0)
            + leased_addresses(service).len() as u64;
        totals.services = add(totals.services, service_objects, "services")?;
    }
    Ok(totals)
}

/// The quota caps the namespace at the lease's totals; the limit range caps each
/// container at the largest replica the lease has, so nothing outside the manifest
/// (a tenant with API access, say) can grow a pod past what was bought.
fn limits(
    deployment: &LeaseDeployment,
    config: &KubernetesRuntimeConfig,
    meta: &dyn Fn(&str) -> ObjectMeta,
) -> Result<(ResourceQuota, LimitRange), RuntimeError> {
    let totals = lease_totals(deployment, config)?;
    let mut hard = BTreeMap::from([
        ("pods".to_owned(), quantity(totals.pods)),
        ("requests.cpu".to_owned(), cpu_quantity(totals.cpu_millis)),
        ("limits.cpu".to_owned(), cpu_quantity(totals.cpu_millis)),
        ("requests.memory".to_owned(), quantity(totals.memory_bytes)),
        ("limits.memory".to_owned(), quantity(totals.memory_bytes)),
        (format!("requests.{GPU_RESOURCE}"), quantity(totals.gpus)),
        ("persistentvolumeclaims".to_owned(), quantity(totals.claims)),
        (
            "requests.storage".to_owned(),
            quantity(totals.persistent_bytes),
        ),
        ("services".to_owned(), quantity(totals.services)),
        ("services.nodeports".to_owned(), quantity(totals.node_ports)),
        ("services.loadbalancers".to_owned(), quantity(0)),
    ]);
    // A quota on ephemeral storage rejects pods that request none, so it applies only
    // when every service has some.
    if deployment
        .services
        .iter()
        .all(|service| service.resources.storage_bytes > 0)
    {
        hard.insert(
            "requests.ephemeral-storage".to_owned(),
            quantity(totals.ephemeral_bytes),
        );
        hard.insert(
            "limits.ephemeral-storage".to_owned(),
            quantity(totals.ephemeral_bytes),
        );
    }
    for (class, bytes) in &totals.persistent_by_class {
        hard.insert(
            format!("{class}.storageclass.storage.k8s.io/requests.storage"),
            quantity(*bytes),
        );
    }
    let quota = ResourceQuota {
        metadata: meta(QUOTA_NAME),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    };

    let largest = |value: fn(&ServiceDeployment) -> u64| {
        deployment.services.iter().map(value).max().unwrap_or(0)
    };
    let mut container_max = BTreeMap::from([
        (
            "cpu".to_owned(),
            cpu_quantity(largest(|s| s.resources.cpu_millis)),
        ),
        (
            "memory".to_owned(),
            quantity(largest(|s| s.resources.memory_bytes)),
        ),
    ]);
    let largest_storage = largest(|s| s.resources.storage_bytes);
    if largest_storage > 0 {
        container_max.insert("ephemeral-storage".to_owned(), quantity(largest_storage));
    }
    let mut items = vec![LimitRangeItem {
        type_: "Container".to_owned(),
        max: Some(container_max.clone()),
        // Applied only to a container that states nothing, so that the quota does not
        // reject it outright.
        default: Some(container_max.clone()),
        default_request: Some(container_max),
        ..LimitRangeItem::default()
    }];
    let largest_volume = deployment
        .services
        .iter()
        .flat_map(|service| service.volumes.iter().map(|volume| volume.size_bytes))
        .max();
    if let Some(bytes) = largest_volume {
        items.push(LimitRangeItem {
            type_: "PersistentVolumeClaim".to_owned(),
            max: Some(BTreeMap::from([("storage".to_owned(), quantity(bytes))])),
            ..LimitRangeItem::default()
        });
    }
    let limit_range = LimitRange {
        metadata: meta(LIMIT_RANGE_NAME),
        spec: Some(LimitRangeSpec { limits: items }),
    };
    Ok((quota, limit_range))
}

/// Pods of the lease talk to each other freely; from anywhere else (other leases
/// included) only the global ports answer, which the world reaches through NodePorts
/// and leased addresses anyway. Egress has the meaning the Docker runtime's rules have: the lease's own pods,
/// the cluster DNS (kube-dns pods in kube-system, port 53), and every address outside
/// the blocked ranges (RFC 1918 and link-local by default, where nodes, other leases'
/// pods and cloud metadata services answer). Enforcement depends on the CNI.
fn network_policy(
    deployment: &LeaseDeployment,
    metadata: ObjectMeta,
    config: &KubernetesRuntimeConfig,
) -> NetworkPolicy {
    let same_lease = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector::default()),
        ..NetworkPolicyPeer::default()
    };
    let public_ports: BTreeSet<(u16, Protocol)> = deployment
        .services
        .iter()
        .flat_map(|service| service.expose.iter())
        .filter(|exposure| exposure.global)
        .map(|exposure| (exposure.port, exposure.proto))
        .collect();
    let mut ingress = vec![NetworkPolicyIngressRule {
        from: Some(vec![same_lease.clone()]),
        ..NetworkPolicyIngressRule::default()
    }];
    if !public_ports.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            from: None,
            ports: Some(
                public_ports
                    .into_iter()
                    .map(|(port, proto)| NetworkPolicyPort {
                        port: Some(IntOrString::Int(i32::from(port))),
                        protocol: Some(k8s_protocol(proto)),
                        ..NetworkPolicyPort::default()
                    })
                    .collect(),
            ),
        });
    }
    let cluster_dns = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                "kube-system".to_owned(),
            )])),
            ..LabelSelector::default()
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "k8s-app".to_owned(),
                "kube-dns".to_owned(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let dns_ports = [Protocol::Udp, Protocol::Tcp]
        .into_iter()
        .map(|proto| NetworkPolicyPort {
            port: Some(IntOrString::Int(53)),
            protocol: Some(k8s_protocol(proto)),
            ..NetworkPolicyPort::default()
        })
        .collect();
    let mut except: Vec<String> = config.egress_blocked_ranges.clone();
    if !except.iter().any(|range| range == LINK_LOCAL_RANGE) {
        except.push(LINK_LOCAL_RANGE.to_owned());
    }
    let internet = NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: "0.0.0.0/0".to_owned(),
            except: Some(except),
        }),
        ..NetworkPolicyPeer::default()
    };
    let egress = vec![
        NetworkPolicyEgressRule {
            to: Some(vec![same_lease]),
            ..NetworkPolicyEgressRule::default()
        },
        NetworkPolicyEgressRule {
            to: Some(vec![cluster_dns]),
            ports: Some(dns_ports),
        },
        NetworkPolicyEgressRule {
            to: Some(vec![internet]),
            ..NetworkPolicyEgressRule::default()
        },
    ];
    NetworkPolicy {
        metadata,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    }
}
