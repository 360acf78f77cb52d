//! The Kubernetes runtime: the objects it builds for the example manifests (typed
//! checks and committed snapshots), the pure pieces (pod states, quantities,
//! inventory, drift), and client-flow tests against an in-process fake API server.
//!
//! The fake API server tests ("fake_api_server_*") run the real kube client over
//! real HTTP against [`fake_api_server::FakeApiServer`]. They run unchanged against
//! a real cluster when `LEASEHOLD_TEST_KUBECONFIG` names a kubeconfig; no cluster
//! was available where they were written, so that path is unverified. Steps:
//!
//! ```text
//! kind create cluster --name leasehold            # or: k3s, any cluster >= 1.33
//! kind get kubeconfig --name leasehold > /tmp/leasehold-kind.yaml
//! LEASEHOLD_TEST_KUBECONFIG=/tmp/leasehold-kind.yaml \
//!   [LEASEHOLD_TEST_CONTEXT=kind-leasehold] [LEASEHOLD_TEST_IMAGE=busybox:1.36] \
//!   cargo test -p leasehold-provider --test it runtime_kubernetes::fake_api_server -- --test-threads=1
//! kubectl delete ns -l io.leasehold.provider=0x00000000000000000000000000000000000000e5  # leftovers
//! ```
//!
//! The image (default `busybox:1.36`) must be pullable by the cluster. On a real
//! cluster the same assertions hold; checks that only make sense against the fake
//! (recorded requests, no-op applies) are skipped.

pub(crate) mod fake_api_server;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, Namespace, Node, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use leasehold_manifests::GpuModelKey;
use leasehold_provider::deployment::lease_deployment;
use leasehold_provider::hardware::parse_nvidia_smi_csv;
use leasehold_provider::runtime::docker::NVIDIA_VISIBLE_DEVICES;
use leasehold_provider::runtime::kubernetes::inventory::{
    InventoryOptions, InventoryTracker, cluster_inventory, drift, parse_quantity_nanos,
};
use leasehold_provider::runtime::kubernetes::objects::{
    GPU_PRODUCTS, LABEL_PROVIDER, LeaseObjects, PULL_SECRET_NAME, gpu_products_for, lease_objects,
    namespace_name,
};
use leasehold_provider::runtime::kubernetes::status::{
    PublishedAt, PublishedPort, WorkloadView, observe, pod_state, published_ports,
};
use leasehold_provider::runtime::kubernetes::{
    KubernetesRuntime, KubernetesRuntimeConfig, runtime_event,
};
use leasehold_provider::runtime::{
    ExecInput, ExecRequest, LABEL_CHAIN, LABEL_LEASE, LABEL_TENANT, LeaseDeployment,
    LeaseRuntimeStatus, PersistentVolume, PortExposure, Protocol, RamVolume, ReplicaState, Runtime,
    RuntimeError, RuntimeEventKind, SHARED_MEMORY_MOUNT, ServiceDeployment, ServiceResources,
    TerminalSize, lease_selector,
};
use serde_json::{Value, json};

use self::fake_api_server::{FakeApiServer, NODE_IP};
use crate::runtime_docker::exec_until_exit;

const TENANT: &str = "0x00000000000000000000000000000000000000c2";
const PROVIDER: &str = "0x00000000000000000000000000000000000000e5";
const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/examples")
        .join(format!("{name}.yaml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// An example manifest as the daemon converts it (its first group), GPU replicas
/// handed device ids "0", "1"...
fn example_deployment(name: &str, lease_id: u64) -> LeaseDeployment {
    let sdl = leasehold_manifests::parse(&example(name)).expect("example parses");
    let manifest = sdl.manifest();
    let group = manifest.groups.first().expect("a group");
    let devices: Vec<String> = (0..8).map(|i| i.to_string()).collect();
    lease_deployment(lease_id, TENANT, &manifest, &group.name, &devices, &[]).expect("converts")
}

fn config() -> KubernetesRuntimeConfig {
    KubernetesRuntimeConfig::new(PROVIDER)
}

fn objects_for(name: &str) -> LeaseObjects {
    lease_objects(&example_deployment(name, 7), &config()).expect("objects build")
}

fn quantities(
    map: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> BTreeMap<String, String> {
    map.iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

fn owned(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn container_of(spec: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>) -> Container {
    spec.and_then(|t| t.spec.as_ref())
        .and_then(|s| s.containers.first())
        .cloned()
        .expect("one container")
}

#[test]
fn hello_gets_a_labelled_namespace_an_exact_quota_and_a_locked_down_pod() {
    let objects = objects_for("hello");
    let namespace = namespace_name("lh", &config().scope(), 7);
    assert_eq!(
        objects.namespace.metadata.name.as_deref(),
        Some(namespace.as_str())
    );
    assert!(
        namespace.starts_with("lh-") && namespace.len() == 19,
        "{namespace}"
    );
    let labels = objects.namespace.metadata.labels.clone().expect("labels");
    assert_eq!(labels.get(LABEL_LEASE).map(String::as_str), Some("7"));
    assert_eq!(labels.get(LABEL_TENANT).map(String::as_str), Some(TENANT));
    assert_eq!(
        labels.get(LABEL_PROVIDER).map(String::as_str),
        Some(PROVIDER)
    );
    assert_eq!(labels.get(LABEL_CHAIN).map(String::as_str), Some("0"));
    // The same lease of another chain or provider lives in another namespace.
    let mut other_chain = config();
    other_chain.chain_id = 1;
    assert_ne!(namespace_name("lh", &other_chain.scope(), 7), namespace);
    let mut other_provider = config();
    other_provider.provider = TENANT.to_owned();
    assert_ne!(namespace_name("lh", &other_provider.scope(), 7), namespace);
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("baseline")
    );

    let hard = quantities(&objects.resource_quota.spec.as_ref().expect("spec").hard);
    assert_eq!(
        hard,
        owned(&[
            ("limits.cpu", "100m"),
            ("limits.ephemeral-storage", "134217728"),
            ("limits.memory", "67108864"),
            ("persistentvolumeclaims", "0"),
            ("pods", "1"),
            ("requests.cpu", "100m"),
            ("requests.ephemeral-storage", "134217728"),
            ("requests.memory", "67108864"),
            ("requests.nvidia.com/gpu", "0"),
            ("requests.storage", "0"),
            ("services", "2"),
            ("services.loadbalancers", "0"),
            ("services.nodeports", "1"),
        ])
    );
    let limits = &objects.limit_range.spec.as_ref().expect("spec").limits;
    assert_eq!(limits.len(), 1, "no volumes, no claim limit");
    assert_eq!(limits[0].type_, "Container");
    assert_eq!(
        quantities(&limits[0].max),
        owned(&[
            ("cpu", "100m"),
            ("ephemeral-storage", "134217728"),
            ("memory", "67108864")
        ])
    );

    let policy = objects.network_policy.spec.as_ref().expect("spec");
    assert_eq!(
        policy.policy_types.as_deref(),
        Some(&["Ingress".to_owned(), "Egress".to_owned()][..])
    );
    // Egress means what the Docker runtime's rules mean: the own lease, cluster DNS, and
    // the internet without private ranges (nodes, other leases) and link-local metadata.
    let egress = serde_json::to_value(policy.egress.as_ref().expect("egress")).expect("json");
    assert_eq!(
        egress,
        json!([
            {"to": [{"podSelector": {}}]},
            {
                "to": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}
                }],
                "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
            },
            {"to": [{"ipBlock": {
                "cidr": "0.0.0.0/0",
                "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"]
            }}]}
        ])
    );
    let ingress = policy.ingress.as_ref().expect("ingress");
    assert_eq!(ingress.len(), 2);
    let same_namespace = ingress[0].from.as_ref().expect("from");
    assert!(
        same_namespace[0].pod_selector.is_some() && same_namespace[0].namespace_selector.is_none()
    );
    assert!(ingress[1].from.is_none(), "public port open to all");
    let port = &ingress[1].ports.as_ref().expect("ports")[0];
    assert_eq!(
        serde_json::to_value(port).expect("json"),
        json!({"port": 80, "protocol": "TCP"})
    );

    assert!(objects.stateful_sets.is_empty());
    assert_eq!(objects.deployments.len(), 1);
    let deployment = objects.deployments[0].spec.as_ref().expect("spec");
    assert_eq!(deployment.replicas, Some(1));
    let pod = deployment.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.host_network, Some(false));
    assert_eq!(pod.host_pid, Some(false));
    assert!(pod.volumes.is_none(), "no hostPath or any other volume");
    assert!(pod.affinity.is_none() && pod.tolerations.is_none());
    let pod_security = pod.security_context.as_ref().expect("pod security");
    assert_eq!(
        pod_security
            .seccomp_profile
            .as_ref()
            .map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    let container = container_of(Some(&deployment.template));
    assert_eq!(
        serde_json::to_value(&container.security_context).expect("json"),
        json!({
            "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
            "privileged": false,
            "runAsNonRoot": false,
        })
    );
    let resources = container.resources.expect("resources");
    assert_eq!(
        quantities(&resources.requests),
        quantities(&resources.limits)
    );
    assert_eq!(
        quantities(&resources.limits),
        owned(&[
            ("cpu", "100m"),
            ("ephemeral-storage", "134217728"),
            ("memory", "67108864")
        ])
    );
    assert_eq!(
        container.command.as_ref().map(|c| c[0].as_str()),
        Some("httpd")
    );

    let names: Vec<(Option<String>, Option<String>)> = objects
        .services
        .iter()
        .map(|s| {
            (
                s.metadata.name.clone(),
                s.spec.as_ref().and_then(|s| s.type_.clone()),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            (Some("web".into()), Some("ClusterIP".into())),
            (Some("web-np".into()), Some("NodePort".into())),
        ]
    );
}

#[test]
fn run_as_non_root_is_a_provider_setting_and_tightens_pod_security() {
    let mut strict = config();
    strict.run_as_non_root = true;
    let objects = lease_objects(&example_deployment("hello", 7), &strict).expect("objects");
    let labels = objects.namespace.metadata.labels.expect("labels");
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    let template = &objects.deployments[0].spec.as_ref().expect("spec").template;
    let container = container_of(Some(template));
    assert_eq!(
        container.security_context.and_then(|s| s.run_as_non_root),
        Some(true)
    );
    assert_eq!(
        template
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|s| s.run_as_non_root),
        Some(true)
    );
}

#[test]
fn multi_service_puts_the_database_in_a_stateful_set_with_its_volume_class() {
    let objects = objects_for("multi-service");
    assert_eq!(objects.deployments.len(), 1);
    assert_eq!(objects.stateful_sets.len(), 1);
    let web = objects.deployments[0].spec.as_ref().expect("spec");
    assert_eq!(objects.deployments[0].metadata.name.as_deref(), Some("web"));
    assert_eq!(web.replicas, Some(2));
    let strategy = serde_json::to_value(&web.strategy).expect("json");
    assert_eq!(
        strategy["rollingUpdate"],
        json!({"maxSurge": 0, "maxUnavailable": 1})
    );

    let db = objects.stateful_sets[0].spec.as_ref().expect("spec");
    assert_eq!(
        objects.stateful_sets[0].metadata.name.as_deref(),
        Some("db")
    );
    let claims = db.volume_claim_templates.as_ref().expect("claims");
    assert_eq!(claims.len(), 1);
    let claim = claims[0].spec.as_ref().expect("claim spec");
    assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
    assert_eq!(claim.storage_class_name.as_deref(), Some("beta2"));
    assert_eq!(
        quantities(&claim.resources.as_ref().expect("resources").requests),
        owned(&[("storage", "21474836480")])
    );
    let mount = container_of(Some(&db.template))
        .volume_mounts
        .expect("mounts");
    assert_eq!(mount[0].mount_path, "/var/lib/postgresql/data");
    assert_eq!(mount[0].read_only, Some(false));

    let hard = quantities(&objects.resource_quota.spec.as_ref().expect("spec").hard);
    let expect = |key: &str| hard.get(key).map(String::as_str);
    assert_eq!(expect("pods"), Some("3"));
    assert_eq!(expect("requests.cpu"), Some("2000m"), "2 x 500m + 1000m");
    assert_eq!(
        expect("limits.memory"),
        Some((2 * 512 * MIB + 2 * GIB).to_string().as_str())
    );
    assert_eq!(expect("requests.storage"), Some("21474836480"));
    assert_eq!(
        expect("beta2.storageclass.storage.k8s.io/requests.storage"),
        Some("21474836480")
    );
    assert_eq!(expect("persistentvolumeclaims"), Some("1"));
    assert_eq!(
        expect("services.nodeports"),
        Some("1"),
        "only web is global"
    );
    assert_eq!(expect("services"), Some("3"), "web, web-np, db");

    let limits = &objects.limit_range.spec.as_ref().expect("spec").limits;
    assert_eq!(limits[1].type_, "PersistentVolumeClaim");
    assert_eq!(
        quantities(&limits[1].max),
        owned(&[("storage", "21474836480")])
    );

    // Only web's 8080 is open beyond the lease; db's 5432 answers its own lease only.
    let ingress = serde_json::to_value(&objects.network_policy.spec).expect("json");
    assert_eq!(
        ingress["ingress"][1]["ports"],
        json!([{"port": 8080, "protocol": "TCP"}])
    );
    // A port above 1024 needs no capability back.
    let web_container = container_of(Some(&web.template));
    let caps = web_container
        .security_context
        .and_then(|s| s.capabilities)
        .expect("caps");
    assert_eq!(caps.add, None);
}

#[test]
fn ram_volumes_become_memory_backed_empty_dirs_inside_the_memory_limit() {
    let mut service = web("infer", 1);
    service.resources.memory_bytes = 32 * MIB + GIB + 64 * MIB;
    service.ram_volumes = vec![
        RamVolume {
            name: "shm".into(),
            mount: SHARED_MEMORY_MOUNT.into(),
            size_bytes: GIB,
        },
        RamVolume {
            name: "scratch".into(),
            mount: "/scratch".into(),
            size_bytes: 64 * MIB,
        },
    ];
    let objects = lease_objects(&lease(7, vec![service]), &config()).expect("objects");
    let template = &objects.deployments[0].spec.as_ref().expect("spec").template;
    let pod = template.spec.as_ref().expect("pod");
    assert_eq!(
        serde_json::to_value(&pod.volumes).expect("json"),
        json!([
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": GIB.to_string()}},
            {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": (64 * MIB).to_string()}},
        ])
    );
    let container = container_of(Some(template));
    assert_eq!(
        serde_json::to_value(&container.volume_mounts).expect("json"),
        json!([
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "scratch", "mountPath": "/scratch"},
        ])
    );
    // The tmpfs pages are charged to the container: its limit and the quota count them.
    let limits = quantities(&container.resources.expect("resources").limits);
    let memory = (32 * MIB + GIB + 64 * MIB).to_string();
    assert_eq!(limits.get("memory"), Some(&memory));
    let hard = quantities(&objects.resource_quota.spec.as_ref().expect("spec").hard);
    assert_eq!(hard.get("limits.memory"), Some(&memory));
}

#[test]
fn gpu_inference_requests_the_gpu_and_pins_it_to_the_accepted_products() {
    let objects = objects_for("gpu-inference");
    assert_eq!(
        objects.stateful_sets.len(),
        1,
        "the models volume is persistent"
    );
    let spec = objects.stateful_sets[0].spec.as_ref().expect("spec");
    let container = container_of(Some(&spec.template));
    let resources = container.resources.expect("resources");
    assert_eq!(
        quantities(&resources.limits)
            .get("nvidia.com/gpu")
            .map(String::as_str),
        Some("1")
    );
    let pod = spec.template.spec.as_ref().expect("pod");
    assert_eq!(
        serde_json::to_value(&pod.affinity).expect("json"),
        json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{
                "key": "nvidia.com/gpu.product", "operator": "In",
                "values": ["NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"],
            }]}],
        }}})
    );
    assert_eq!(
        serde_json::to_value(&pod.tolerations).expect("json"),
        json!([{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}])
    );
    let hard = quantities(&objects.resource_quota.spec.as_ref().expect("spec").hard);
    assert_eq!(
        hard.get("requests.nvidia.com/gpu").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        hard.get("beta3.storageclass.storage.k8s.io/requests.storage")
            .map(String::as_str),
        Some((200 * GIB).to_string().as_str())
    );
    let claim = &spec.volume_claim_templates.as_ref().expect("claims")[0];
    assert_eq!(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref()),
        Some("beta3")
    );

    // The provider's storage class mapping applies to claims and quota alike.
    let mut mapped = config();
    mapped
        .storage_classes
        .insert("beta3".into(), "fast-nvme".into());
    let objects = lease_objects(&example_deployment("gpu-inference", 7), &mapped).expect("objects");
    let hard = quantities(&objects.resource_quota.spec.as_ref().expect("spec").hard);
    assert!(hard.contains_key("fast-nvme.storageclass.storage.k8s.io/requests.storage"));
    let claim = &objects.stateful_sets[0]
        .spec
        .as_ref()
        .expect("spec")
        .volume_claim_templates
        .as_ref()
        .expect("claims")[0];
    assert_eq!(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref()),
        Some("fast-nvme")
    );
}

#[test]
fn every_gpu_product_label_reads_back_as_its_model_key() {
    for (key, product) in GPU_PRODUCTS {
        let key: GpuModelKey = key.parse().expect("table key");
        // GPU feature discovery labels the memory too; drivers report a bit less.
        let reported_mib = key.ram_bytes() / MIB - 300;
        assert_eq!(
            GpuModelKey::from_product(product, Some(reported_mib)).as_ref(),
            Ok(&key),
            "{product}"
        );
    }
    assert_eq!(
        gpu_products_for(&["nvidia/a100/*/*".parse().expect("pattern")], "f").expect("known"),
        vec![
            "NVIDIA-A100-80GB-PCIe",
            "NVIDIA-A100-PCIE-40GB",
            "NVIDIA-A100-SXM4-40GB",
            "NVIDIA-A100-SXM4-80GB"
        ]
    );
    let error = gpu_products_for(
        &["nvidia/b300/*/*".parse().expect("pattern")],
        "services.x.gpu_models",
    )
    .expect_err("unknown model");
    assert!(
        error.to_string().contains("services.x.gpu_models") && error.to_string().contains("b300"),
        "{error}"
    );
}

#[test]
fn object_names_that_would_collide_are_refused_with_the_field() {
    let mut deployment = example_deployment("hello", 7);
    let mut clash = deployment.services[0].clone();
    clash.name = "web-np".into();
    clash.expose.clear();
    deployment.services.push(clash);
    let error = lease_objects(&deployment, &config()).expect_err("collision");
    assert!(error.to_string().contains("services.web.name"), "{error}");

    let mut fixed = example_deployment("hello", 7);
    fixed.services[0].expose[0].host_port = Some(8080);
    let error = lease_objects(&fixed, &config()).expect_err("outside the range");
    assert!(
        error.to_string().contains("services.web.expose") && error.to_string().contains("8080"),
        "{error}"
    );
    fixed.services[0].expose[0].host_port = Some(30500);
    let objects = lease_objects(&fixed, &config()).expect("in range");
    let node_port = serde_json::to_value(&objects.services[1].spec).expect("json");
    assert_eq!(node_port["ports"][0]["nodePort"], json!(30500));
}

#[test]
fn gpu_services_need_even_counts_and_accept_any_model_when_none_is_named() {
    let mut deployment = example_deployment("gpu-inference", 7);
    let service = &mut deployment.services[0];
    service.replicas = 2;
    service.gpu_devices = vec![vec!["0".into()], vec!["1".into(), "2".into()]];
    let error = lease_objects(&deployment, &config()).expect_err("uneven");
    assert!(
        error.to_string().contains("services.inference.gpu_devices"),
        "{error}"
    );

    let service = &mut deployment.services[0];
    service.gpu_devices = vec![vec!["0".into()], vec!["1".into()]];
    service.gpu_models.clear();
    let objects = lease_objects(&deployment, &config()).expect("objects");
    let spec = objects.stateful_sets[0].spec.as_ref().expect("spec");
    let affinity =
        serde_json::to_value(&spec.template.spec.as_ref().expect("pod").affinity).expect("json");
    assert_eq!(
        affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"],
        json!([{"key": "nvidia.com/gpu.product", "operator": "Exists"}])
    );
    let hard = quantities(&objects.resource_quota.spec.as_ref().expect("spec").hard);
    assert_eq!(
        hard.get("requests.nvidia.com/gpu").map(String::as_str),
        Some("2")
    );
}

#[test]
fn persistent_volumes_are_validated_naming_the_field() {
    let deployment = example_deployment("multi-service", 7);
    let db = deployment
        .services
        .iter()
        .position(|s| s.name == "db")
        .expect("db");
    assert_eq!(deployment.services[db].volumes.len(), 1);
    let broken = |edit: fn(&mut leasehold_provider::runtime::PersistentVolume)| {
        let mut deployment = deployment.clone();
        edit(&mut deployment.services[db].volumes[0]);
        deployment
            .validate()
            .expect_err("invalid volume")
            .to_string()
    };
    assert!(broken(|v| v.mount = "relative".into()).contains("services.db.volumes.data"));
    assert!(broken(|v| v.size_bytes = 0).contains("size"));
    assert!(broken(|v| v.class = Some("Fast SSD".into())).contains("class"));
    assert!(broken(|v| v.name = "Data".into()).contains("services.db.volumes.Data"));
}

/// Compares the objects of each example with the committed snapshot;
/// `UPDATE_SNAPSHOTS=1` rewrites the files instead.
#[test]
fn objects_match_the_committed_snapshots() {
    for name in ["hello", "multi-service", "gpu-inference"] {
        assert_snapshot(name, &objects_for(name));
    }
    let private = lease_objects(&private_registry_deployment(7), &config()).expect("objects build");
    assert_snapshot("private-registry", &private);
}

/// Update in place (issue #13, item 4): a new image, command and env keep every object's
/// kind and name, so server-side apply updates the same Deployments and StatefulSets
/// (whose volume claim templates, hence the volumes, are unchanged) and leaves the
/// Services, hence their node ports, as they are.
#[test]
fn an_updated_manifest_updates_the_same_objects_in_place() {
    let before = objects_for("multi-service");
    let mut deployment = example_deployment("multi-service", 7);
    for service in &mut deployment.services {
        service.image = format!("{}-v2", service.image);
        service.command = vec!["sh".into(), "-c".into(), "echo two".into()];
        service.env.insert("REVISION".into(), "2".into());
    }
    let after = lease_objects(&deployment, &config()).expect("objects build");
    let names = |objects: &LeaseObjects| {
        let deployments = objects.deployments.iter().map(|d| d.metadata.name.clone());
        let stateful = objects
            .stateful_sets
            .iter()
            .map(|s| s.metadata.name.clone());
        deployments.chain(stateful).collect::<Vec<_>>()
    };
    assert!(!before.stateful_sets.is_empty(), "the example has a volume");
    assert_eq!(names(&before), names(&after));
    assert_eq!(
        before.services, after.services,
        "Services (and node ports) unchanged"
    );
    let claims = |objects: &LeaseObjects| {
        objects
            .stateful_sets
            .iter()
            .map(|set| {
                set.spec
                    .as_ref()
                    .map(|spec| spec.volume_claim_templates.clone())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(claims(&before), claims(&after), "the volumes are kept");
    assert_ne!(before.deployments, after.deployments, "the pods change");
    assert_snapshot("multi-service-updated", &after);
}

fn assert_snapshot(name: &str, objects: &LeaseObjects) {
    let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/kubernetes");
    let update = std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1");
    let actual = objects.to_json().expect("serializes");
    let rendered = format!("{}\n", serde_json::to_string_pretty(&actual).expect("json"));
    let path = directory.join(format!("{name}.json"));
    if update {
        std::fs::create_dir_all(&directory).expect("snapshot dir");
        std::fs::write(&path, &rendered).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_SNAPSHOTS=1 to create it",
            path.display()
        )
    });
    assert!(
        expected == rendered,
        "{name}: objects differ from {}; review and run with UPDATE_SNAPSHOTS=1",
        path.display()
    );
}

/// hello.yaml with a private image of `registry.example.com` and its credentials, plus a
/// public sidecar that must not get the pull secret.
const PRIVATE_REGISTRY_SDL: &str = r#"
version: "2.0"
services:
  web:
    image: registry.example.com/team/web:1.2
    credentials:
      host: registry.example.com
      username: team
      password: s3cret-pull-token
    expose:
      - port: 80
        to:
          - global: true
  sidecar:
    image: busybox:1.36
profiles:
  compute:
    small:
      resources:
        cpu:
          units: 100m
        memory:
          size: 64Mi
        storage:
          size: 128Mi
  placement:
    anywhere:
      pricing:
        small:
          denom: usdc
          amount: 1000
deployment:
  web:
    anywhere:
      profile: small
      count: 1
  sidecar:
    anywhere:
      profile: small
      count: 1
"#;

/// hello.yaml with its HTTP port on the leased IP endpoint `front` and a second global
/// port (raw TCP 9000) that is not on it.
fn leased_ip_sdl() -> String {
    example("hello")
        .replace(
            "        to:\n          - global: true\n",
            "        to:\n          - global: true\n            ip: front\n      - port: 9000\n        to:\n          - global: true\n",
        )
        .replace(
            "deployment:\n",
            "endpoints:\n  front:\n    kind: ip\ndeployment:\n",
        )
}

/// A documentation address (RFC 5737): nothing in these tests sends traffic to it.
const LEASED_ADDRESS: &str = "203.0.113.10";

fn leased_ip_deployment(lease_id: u64) -> LeaseDeployment {
    let sdl = leasehold_manifests::parse(&leased_ip_sdl()).expect("SDL parses");
    let manifest = sdl.manifest();
    let group = manifest.groups.first().expect("a group");
    let address: std::net::IpAddr = LEASED_ADDRESS.parse().expect("address");
    lease_deployment(lease_id, TENANT, &manifest, &group.name, &[], &[address]).expect("converts")
}

fn service_named<'s>(objects: &'s LeaseObjects, name: &str) -> &'s Service {
    objects
        .services
        .iter()
        .find(|service| service.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Service {name}"))
}

fn service_ports(service: &Service) -> Vec<(i32, Option<i32>)> {
    service
        .spec
        .iter()
        .flat_map(|spec| spec.ports.iter().flatten())
        .map(|port| (port.port, port.node_port))
        .collect()
}

/// Issue #14 on Kubernetes: the port on the leased IP gets a ClusterIP Service whose one
/// `externalIPs` entry is the address, on its own port; the lease's other global port stays
/// on the NodePort Service, and the quota counts the extra Service and no extra node port.
#[test]
fn a_leased_ip_gets_its_own_external_ips_service_and_leaves_the_node_port_service() {
    let objects = lease_objects(&leased_ip_deployment(7), &config()).expect("objects build");
    let names: Vec<_> = objects
        .services
        .iter()
        .filter_map(|service| service.metadata.name.clone())
        .collect();
    assert_eq!(names, ["web", "web-np", "web-ip-203-0-113-10"]);

    let leased = service_named(&objects, "web-ip-203-0-113-10");
    let spec = leased.spec.as_ref().expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.external_ips, Some(vec![LEASED_ADDRESS.to_owned()]));
    assert_eq!(spec.external_traffic_policy, None);
    assert_eq!(service_ports(leased), [(80, None)], "only the leased port");
    assert_eq!(
        spec.selector,
        Some(owned(&[
            (LABEL_LEASE, "7"),
            ("io.leasehold.service", "web")
        ]))
    );

    let node_ports = service_named(&objects, "web-np");
    assert_eq!(
        service_ports(node_ports),
        [(9000, None)],
        "the leased port is not on every node"
    );
    let cluster = service_named(&objects, "web");
    assert_eq!(service_ports(cluster), [(80, None), (9000, None)]);

    let hard = quantities(
        &objects
            .resource_quota
            .spec
            .as_ref()
            .and_then(|spec| spec.hard.clone()),
    );
    assert_eq!(hard.get("services").map(String::as_str), Some("3"));
    assert_eq!(
        hard.get("services.nodeports").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        hard.get("services.loadbalancers").map(String::as_str),
        Some("0")
    );
    assert_snapshot("leased-ip", &objects);

    // Status reads the address back: `<address>:<port>` for the leased port, the node's
    // address and node port for the other.
    let mut applied = objects.services.clone();
    for service in &mut applied {
        if let Some(spec) = service.spec.as_mut()
            && spec.type_.as_deref() == Some("NodePort")
        {
            for port in spec.ports.iter_mut().flatten() {
                port.node_port = Some(30090);
            }
        }
    }
    let published = published_ports(&applied);
    assert_eq!(
        published.get("web").map(Vec::as_slice),
        Some(
            &[
                PublishedPort {
                    proto: Protocol::Tcp,
                    external_port: 9000,
                    at: PublishedAt::NodePort(30090),
                },
                PublishedPort {
                    proto: Protocol::Tcp,
                    external_port: 80,
                    at: PublishedAt::LeasedIp(LEASED_ADDRESS.parse().expect("address")),
                },
            ][..]
        )
    );
}

/// Names that cannot be Kubernetes names, and a fixed host port on a leased address (which
/// has no node port to fix), are refused naming the field.
#[test]
fn leased_ip_services_are_named_from_the_address_and_checked() {
    use leasehold_provider::runtime::kubernetes::objects::leased_ip_service_name;
    let v6 = |text: &str| leased_ip_service_name("web", text.parse().expect("address"));
    assert_eq!(v6("2001:db8::1"), "web-ip-2001-db8--1");
    assert_eq!(v6("2001:db8::"), "web-ip-2001-db8--0");

    let mut deployment = leased_ip_deployment(7);
    deployment.services[0].expose[0].host_port = Some(30100);
    let error = lease_objects(&deployment, &config())
        .unwrap_err()
        .to_string();
    assert!(error.contains("services.web.expose"), "{error}");
    assert!(error.contains("fixed host port does not apply"), "{error}");

    let mut deployment = leased_ip_deployment(7);
    deployment.services[0].name = "a-service-name-long-enough-to-overflow-the-label".into();
    let error = lease_objects(&deployment, &config())
        .unwrap_err()
        .to_string();
    assert!(error.contains("-ip-203-0-113-10"), "{error}");
}

fn private_registry_deployment(lease_id: u64) -> LeaseDeployment {
    let sdl = leasehold_manifests::parse(PRIVATE_REGISTRY_SDL).expect("SDL parses");
    let manifest = sdl.manifest();
    let group = manifest.groups.first().expect("a group");
    lease_deployment(lease_id, TENANT, &manifest, &group.name, &[], &[]).expect("converts")
}

#[test]
fn private_registry_credentials_become_a_pull_secret_only_their_pods_reference() {
    let objects = lease_objects(&private_registry_deployment(7), &config()).expect("objects build");
    let secret = objects.pull_secret.as_ref().expect("a pull secret");
    assert_eq!(secret.metadata.name.as_deref(), Some(PULL_SECRET_NAME));
    assert_eq!(
        secret.metadata.namespace, objects.namespace.metadata.name,
        "in the lease namespace"
    );
    assert_eq!(
        secret.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    let data = secret.data.as_ref().expect("data");
    let config: Value =
        serde_json::from_slice(&data[".dockerconfigjson"].0).expect("dockerconfigjson");
    assert_eq!(
        config,
        json!({"auths": {"registry.example.com": {"username": "team", "password": "s3cret-pull-token"}}})
    );
    let labels = secret.metadata.labels.as_ref().expect("labels");
    assert_eq!(labels.get(LABEL_LEASE).map(String::as_str), Some("7"));

    let pull_secrets = |service: &str| {
        let workload = objects
            .deployments
            .iter()
            .find(|d| d.metadata.name.as_deref() == Some(service))
            .expect("deployment");
        let template = workload.spec.as_ref().map(|spec| &spec.template);
        template
            .and_then(|t| t.spec.as_ref())
            .and_then(|pod| pod.image_pull_secrets.clone())
            .map(|refs| refs.into_iter().map(|r| r.name).collect::<Vec<_>>())
    };
    assert_eq!(pull_secrets("web"), Some(vec![PULL_SECRET_NAME.to_owned()]));
    assert_eq!(
        pull_secrets("sidecar"),
        None,
        "public image: no pull secret"
    );

    // Nothing prints the password: the objects' and the deployment's Debug.
    let printed = format!("{:?}", private_registry_deployment(7));
    assert!(!printed.contains("s3cret-pull-token"), "{printed}");

    // A lease without credentials has no secret at all.
    assert!(objects_for("hello").pull_secret.is_none());
}

fn pod(value: Value) -> Pod {
    serde_json::from_value(value).expect("pod JSON")
}

fn pod_with_container(phase: &str, container: Value) -> Pod {
    pod(json!({
        "metadata": {"name": "web-abc", "labels": {"io.leasehold.service": "web"}},
        "status": {"phase": phase, "hostIP": "10.1.2.3",
            "containerStatuses": [container]},
    }))
}

#[test]
fn pod_states_cover_crash_loops_pull_failures_and_exit_codes() {
    let waiting = |reason: &str| {
        pod_with_container(
            "Pending",
            json!({"name": "web", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": "detail"}}}),
        )
    };
    assert_eq!(
        pod_state(&waiting("ContainerCreating")).0,
        ReplicaState::Pending
    );
    assert_eq!(
        pod_state(&waiting("ImagePullBackOff")).0,
        ReplicaState::Other("ImagePullBackOff: detail".into())
    );
    let crash = pod_with_container(
        "Running",
        json!({"name": "web", "image": "i", "imageID": "",
        "ready": false, "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 3}}}),
    );
    assert_eq!(
        pod_state(&crash),
        (
            ReplicaState::Restarting {
                last_exit_code: Some(3)
            },
            4
        )
    );
    let oom = pod_with_container(
        "Failed",
        json!({"name": "web", "image": "i", "imageID": "",
        "ready": false, "restartCount": 1,
        "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}),
    );
    assert_eq!(
        pod_state(&oom).0,
        ReplicaState::Exited {
            exit_code: 137,
            oom_killed: true
        }
    );
    let running = pod_with_container(
        "Running",
        json!({"name": "web", "image": "i", "imageID": "",
        "ready": true, "restartCount": 0, "state": {"running": {}}}),
    );
    assert_eq!(pod_state(&running).0, ReplicaState::Running);
    let unschedulable = pod(
        json!({"metadata": {"name": "p"}, "status": {"phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes have nvidia.com/gpu"}]}}),
    );
    assert_eq!(
        pod_state(&unschedulable).0,
        ReplicaState::Other("unschedulable: 0/3 nodes have nvidia.com/gpu".into())
    );

    // Two expected replicas, one running pod: the other is reported with the
    // controller's reason, and the running one carries node address:nodePort.
    let workloads = vec![WorkloadView {
        service: "web".into(),
        replicas: 2,
        ordered: false,
        failure: Some("exceeded quota: lease-quota".into()),
    }];
    let published = BTreeMap::from([(
        "web".to_owned(),
        vec![PublishedPort {
            proto: Protocol::Tcp,
            external_port: 80,
            at: PublishedAt::NodePort(30080),
        }],
    )]);
    let status =
        LeaseRuntimeStatus::from_observed(1, observe(&workloads, &[running], &published, None));
    let web = status.service("web").expect("web");
    assert_eq!(web.uris, vec!["http://10.1.2.3:30080"]);
    assert_eq!(web.ready_replicas, 1);
    assert_eq!(
        web.replicas[1].state,
        ReplicaState::Other("cannot be created: exceeded quota: lease-quota".into())
    );
}

#[test]
fn quantities_parse_exactly() {
    let nanos = |text: &str| parse_quantity_nanos(text);
    assert_eq!(nanos("100m"), Some(100_000_000));
    assert_eq!(nanos("1.5"), Some(1_500_000_000));
    assert_eq!(nanos("16Gi"), Some(16 * (1u128 << 30) * 1_000_000_000));
    assert_eq!(nanos("1e3"), Some(1_000 * 1_000_000_000));
    assert_eq!(nanos("129M"), Some(129_000_000 * 1_000_000_000));
    assert_eq!(nanos("250n"), Some(250));
    for bad in ["", "Gi", "1.2.3", "-1", "12Q", "1e"] {
        assert_eq!(nanos(bad), None, "{bad:?}");
    }
}

fn inventory_options(persistent_storage: BTreeMap<String, u64>) -> InventoryOptions {
    InventoryOptions {
        persistent_storage,
        ..InventoryOptions::default()
    }
}

fn node(name: &str, labels: Value, allocatable: Value, ready: &str, cordoned: bool) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"unschedulable": cordoned},
        "status": {"allocatable": allocatable,
            "conditions": [{"type": "Ready", "status": ready}]},
    }))
    .expect("node JSON")
}

fn bound_pod(namespace: &str, node: &str, requests: Value) -> Pod {
    pod(json!({
        "metadata": {"name": "p", "namespace": namespace},
        "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": requests}}]},
        "status": {"phase": "Running"},
    }))
}

#[test]
fn inventory_subtracts_foreign_requests_and_skips_unusable_nodes() {
    let nodes = vec![
        node(
            "gpu-1",
            json!({"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.memory": "81920"}),
            json!({"cpu": "64", "memory": "512Gi", "ephemeral-storage": "1Ti", "nvidia.com/gpu": "8"}),
            "True",
            false,
        ),
        node(
            "cpu-1",
            json!({}),
            json!({"cpu": "3500m", "memory": "8Gi"}),
            "True",
            false,
        ),
        node(
            "cordoned",
            json!({}),
            json!({"cpu": "8", "memory": "8Gi"}),
            "True",
            true,
        ),
        node(
            "sick",
            json!({}),
            json!({"cpu": "8", "memory": "8Gi"}),
            "False",
            false,
        ),
    ];
    let own = namespace_name("lh", &config().scope(), 1);
    let pods = vec![
        bound_pod(
            "kube-system",
            "gpu-1",
            json!({"cpu": "2", "memory": "1Gi", "nvidia.com/gpu": "2"}),
        ),
        bound_pod(
            "kube-system",
            "cpu-1",
            json!({"cpu": "500m", "memory": "512Mi"}),
        ),
        // The provider's own lease pods are in its ledger already.
        bound_pod(&own, "cpu-1", json!({"cpu": "1", "memory": "1Gi"})),
    ];
    let options = inventory_options(BTreeMap::from([("beta2".to_owned(), 100 * GIB)]));
    let inventory = cluster_inventory(&nodes, &pods, &[own].into_iter().collect(), &options);
    let skipped: Vec<(&str, &str)> = inventory
        .skipped
        .iter()
        .map(|s| (s.node.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(
        skipped,
        vec![("cordoned", "cordoned"), ("sick", "not ready")]
    );
    let ids: Vec<&str> = inventory.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, vec!["cpu-1", "gpu-1"]);
    let cpu = &inventory.nodes[0];
    assert_eq!(cpu.capacity.cpu_millis, 3000);
    assert_eq!(cpu.capacity.memory_bytes, 8 * GIB - 512 * MIB);
    assert!(cpu.gpus.is_empty());
    assert_eq!(
        cpu.capacity.persistent_storage.get("beta2"),
        Some(&(100 * GIB))
    );
    let gpu = &inventory.nodes[1];
    assert_eq!(gpu.capacity.cpu_millis, 62_000);
    assert_eq!(gpu.gpus.len(), 6, "8 allocatable, 2 requested");
    assert_eq!(gpu.gpus[0].spec.model.to_string(), "nvidia/a100/80Gi/sxm");
    assert_eq!(gpu.gpus[0].spec.vram_bytes, 80 * GIB);

    // Drift: a second reading where a GPU disappeared and a node left.
    let tracker = InventoryTracker::default();
    assert!(
        tracker.observe(&inventory.nodes).is_empty(),
        "first reading"
    );
    let mut later = inventory.nodes.clone();
    later[1].gpus.pop();
    later.remove(0);
    let report = tracker.observe(&later);
    assert_eq!(report.removed, vec!["cpu-1"]);
    assert_eq!(report.changed.len(), 1);
    assert_eq!(report.changed[0].node, "gpu-1");
    assert_eq!(tracker.drifted_nodes_total(), 2);
    assert!(drift(&later, &later).is_empty());
}

// ---------------------------------------------------------------------------
// Fake API server tests (and a real cluster with LEASEHOLD_TEST_KUBECONFIG).
// ---------------------------------------------------------------------------

static NEXT_LEASE: AtomicU64 = AtomicU64::new(0);

/// Unique per run, so repeated runs against a real cluster do not collide.
fn lease_id() -> u64 {
    let base = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() % 1_000_000)
        .unwrap_or(0);
    base * 1000 + NEXT_LEASE.fetch_add(1, Ordering::Relaxed)
}

/// The cluster a flow test talks to: the fake, or the real one named by
/// `LEASEHOLD_TEST_KUBECONFIG`.
struct Cluster {
    fake: Option<FakeApiServer>,
    runtime: KubernetesRuntime,
    ready_timeout: Duration,
}

fn test_config() -> KubernetesRuntimeConfig {
    let mut config = config();
    config.namespace_prefix = "lh-test".into();
    config.teardown_timeout = Duration::from_secs(180);
    config
}

async fn runtime_for(fake: Option<&FakeApiServer>) -> KubernetesRuntime {
    let mut config = test_config();
    match fake {
        Some(fake) => {
            let uri = fake.url.parse().expect("fake URL");
            let client = kube::Client::try_from(kube::Config::new(uri)).expect("client");
            KubernetesRuntime::new(client, config).expect("runtime")
        }
        None => {
            config.kubeconfig = std::env::var_os("LEASEHOLD_TEST_KUBECONFIG").map(PathBuf::from);
            config.context = std::env::var("LEASEHOLD_TEST_CONTEXT").ok();
            KubernetesRuntime::connect(config)
                .await
                .expect("connect to the test cluster")
        }
    }
}

async fn cluster() -> Cluster {
    if std::env::var_os("LEASEHOLD_TEST_KUBECONFIG").is_some() {
        return Cluster {
            fake: None,
            runtime: runtime_for(None).await,
            ready_timeout: Duration::from_secs(180),
        };
    }
    let fake = FakeApiServer::start().await;
    let runtime = runtime_for(Some(&fake)).await;
    Cluster {
        fake: Some(fake),
        runtime,
        ready_timeout: Duration::from_secs(10),
    }
}

fn image() -> String {
    std::env::var("LEASEHOLD_TEST_IMAGE").unwrap_or_else(|_| "busybox:1.36".to_owned())
}

/// A web service printing `ready` then serving HTTP on port 80 (as root: busybox).
fn web(name: &str, replicas: u32) -> ServiceDeployment {
    let resources = ServiceResources {
        cpu_millis: 100,
        memory_bytes: 32 * MIB,
        storage_bytes: 16 * MIB,
    };
    ServiceDeployment {
        command: vec!["sh".into(), "-c".into()],
        args: vec!["echo ready; mkdir -p /tmp/www; exec httpd -f -p 80 -h /tmp/www".into()],
        expose: vec![PortExposure::global(80, Protocol::Tcp)],
        replicas,
        ..ServiceDeployment::new(name, image(), resources)
    }
}

fn lease(lease_id: u64, services: Vec<ServiceDeployment>) -> LeaseDeployment {
    LeaseDeployment {
        lease_id,
        tenant: TENANT.into(),
        services,
    }
}

async fn wait_for(
    runtime: &KubernetesRuntime,
    lease_id: u64,
    timeout: Duration,
    what: &str,
    done: impl Fn(&LeaseRuntimeStatus) -> bool,
) -> LeaseRuntimeStatus {
    let started = Instant::now();
    loop {
        let status = runtime.status(lease_id).await.expect("status");
        if done(&status) {
            return status;
        }
        assert!(
            started.elapsed() < timeout,
            "not {what} in time: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Pod names of a lease, to prove a redeploy restarted nothing.
async fn pod_names(runtime: &KubernetesRuntime, lease_id: u64) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(runtime.client().clone(), &runtime.namespace(lease_id));
    let mut names: Vec<String> = pods
        .list(&ListParams::default().labels(&lease_selector(lease_id)))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter_map(|pod| pod.metadata.name)
        .collect();
    names.sort();
    names
}

/// Bounds a flow test in time and tears its leases down whatever happens.
async fn bounded<F: std::future::Future<Output = ()>>(
    runtime: &KubernetesRuntime,
    leases: &[u64],
    test: F,
) {
    let outcome = tokio::time::timeout(Duration::from_secs(300), test).await;
    for lease_id in leases {
        let _ = runtime.teardown(*lease_id).await;
    }
    outcome.expect("flow test finished in time");
}

/// The pull Secret is written with the workloads and deleted by name when an update drops
/// the credentials; Secrets are never read or listed (the provider's role cannot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_api_server_writes_the_pull_secret_and_deletes_it_when_credentials_go() {
    let cluster = cluster().await;
    let Some(fake) = cluster.fake.as_ref() else {
        return; // a real cluster would need a real private registry
    };
    let runtime = &cluster.runtime;
    let lease_id = lease_id();
    bounded(runtime, &[lease_id], async {
        let mut deployment = private_registry_deployment(lease_id);
        runtime.deploy(&deployment).await.expect("deploy");
        let secrets: Api<Secret> =
            Api::namespaced(runtime.client().clone(), &runtime.namespace(lease_id));
        let secret = secrets.get(PULL_SECRET_NAME).await.expect("secret applied");
        assert_eq!(
            secret.type_.as_deref(),
            Some("kubernetes.io/dockerconfigjson")
        );
        let web: Api<Deployment> =
            Api::namespaced(runtime.client().clone(), &runtime.namespace(lease_id));
        let applied = web.get("web").await.expect("web applied");
        let refs = applied
            .spec
            .and_then(|spec| spec.template.spec)
            .and_then(|pod| pod.image_pull_secrets)
            .expect("web references the secret");
        assert_eq!(refs[0].name, PULL_SECRET_NAME);

        for service in &mut deployment.services {
            service.credentials = None;
        }
        runtime.deploy(&deployment).await.expect("redeploy");
        let gone = secrets
            .get(PULL_SECRET_NAME)
            .await
            .expect_err("secret deleted");
        assert!(matches!(gone, kube::Error::Api(status) if status.code == 404));
        // And a redeploy with nothing to delete succeeds too.
        runtime.deploy(&deployment).await.expect("idempotent");

        let requests = fake.requests();
        let secret_calls: Vec<_> = requests
            .iter()
            .filter(|r| r.path.contains("/secrets"))
            .filter(|r| r.method != "GET" || !r.path.ends_with(PULL_SECRET_NAME))
            .map(|r| (r.method.as_str(), r.path.as_str()))
            .collect();
        // (the test's own GETs above excepted) only PATCH and DELETE by name
        assert!(
            secret_calls
                .iter()
                .all(|(method, path)| matches!(*method, "PATCH" | "DELETE")
                    && path.ends_with(PULL_SECRET_NAME)),
            "{secret_calls:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_api_server_deploy_becomes_ready_then_logs_events_and_teardown() {
    let cluster = cluster().await;
    let runtime = &cluster.runtime;
    let lease_id = lease_id();
    bounded(runtime, &[lease_id], async {
        let mut events = runtime
            .events(lease_id)
            .await
            .expect("events before deploy");
        let deployment = lease(lease_id, vec![web("web", 2)]);
        runtime.deploy(&deployment).await.expect("deploy");
        assert!(
            runtime
                .list_leases()
                .await
                .expect("list")
                .contains(&lease_id)
        );

        let status = wait_for(
            runtime,
            lease_id,
            cluster.ready_timeout,
            "ready",
            LeaseRuntimeStatus::is_ready,
        )
        .await;
        let service = status.service("web").expect("web");
        assert_eq!((service.ready_replicas, service.total_replicas), (2, 2));
        assert!(!service.uris.is_empty());
        if cluster.fake.is_some() {
            assert_eq!(service.uris, vec![format!("http://{NODE_IP}:30080")]);
        }
        for uri in &service.uris {
            assert!(uri.starts_with("http://"), "{uri}");
            let port: u16 = uri
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port");
            assert!((30000..=32767).contains(&port), "{uri} is a node port");
        }

        // Every replica said "ready"; lines carry the server's timestamps.
        let lines: Vec<_> = runtime
            .logs(lease_id, Some("web"), false, Some(10))
            .await
            .expect("logs")
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .expect("log lines");
        let mut replicas: Vec<u32> = lines
            .iter()
            .filter(|line| line.line == b"ready")
            .map(|line| line.replica)
            .collect();
        replicas.sort_unstable();
        assert_eq!(replicas, vec![0, 1], "{lines:?}");
        assert!(lines.iter().all(|line| line.timestamp.is_some()));

        // Following merges the replicas' streams and stays open.
        let mut follow = runtime
            .logs(lease_id, None, true, None)
            .await
            .expect("follow");
        for _ in 0..2 {
            let line = tokio::time::timeout(Duration::from_secs(10), follow.next())
                .await
                .expect("a followed line")
                .expect("stream open")
                .expect("line");
            assert_eq!(line.line, b"ready");
        }
        drop(follow);

        let mut started = 0;
        let deadline = Instant::now() + cluster.ready_timeout;
        while started < 2 && Instant::now() < deadline {
            let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(5), events.next()).await
            else {
                continue;
            };
            let event = event.expect("event");
            assert_eq!(event.lease_id, lease_id);
            if event.kind == RuntimeEventKind::Started {
                assert_eq!(event.service.as_deref(), Some("web"));
                started += 1;
            }
        }
        assert_eq!(started, 2, "a Started event per replica");
        drop(events);

        runtime.teardown(lease_id).await.expect("teardown");
        assert!(
            !runtime
                .list_leases()
                .await
                .expect("list")
                .contains(&lease_id)
        );
        assert!(
            runtime
                .status(lease_id)
                .await
                .expect("status")
                .services
                .is_empty()
        );
        runtime.teardown(lease_id).await.expect("teardown twice");

        if let Some(fake) = &cluster.fake {
            assert!(
                fake.namespaces().is_empty(),
                "teardown waits until the namespace is gone: {:?}",
                fake.namespaces()
            );
            let requests = fake.requests();
            let applies: Vec<_> = requests.iter().filter(|r| r.method == "PATCH").collect();
            assert_eq!(
                applies.len(),
                7,
                "namespace, quota, limits, policy, 2 services, deployment"
            );
            for apply in applies {
                assert_eq!(
                    apply.content_type.as_deref(),
                    Some("application/apply-patch+yaml")
                );
                assert!(
                    apply.query.contains("fieldManager=leasehold-provider"),
                    "{}",
                    apply.query
                );
                assert!(apply.query.contains("force=true"), "{}", apply.query);
            }
            assert!(requests.iter().any(|r| r.method == "GET"
                && r.path.ends_with("/log")
                && r.query.contains("follow=true")));
            assert!(
                requests
                    .iter()
                    .any(|r| r.method == "DELETE"
                        && r.path.starts_with("/api/v1/namespaces/lh-test-"))
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_api_server_restart_reconciles_without_duplicating_or_restarting() {
    let cluster = cluster().await;
    let runtime = &cluster.runtime;
    let lease_id = lease_id();
    bounded(runtime, &[lease_id], async {
        let deployment = lease(lease_id, vec![web("web", 1), web("api", 1)]);
        runtime.deploy(&deployment).await.expect("deploy");
        wait_for(
            runtime,
            lease_id,
            cluster.ready_timeout,
            "ready",
            LeaseRuntimeStatus::is_ready,
        )
        .await;
        let pods_before = pod_names(runtime, lease_id).await;
        assert_eq!(pods_before.len(), 2);

        // A new daemon process: new client, nothing remembered.
        let restarted = runtime_for(cluster.fake.as_ref()).await;
        assert!(
            restarted
                .list_leases()
                .await
                .expect("list")
                .contains(&lease_id)
        );
        let unchanged_before = cluster.fake.as_ref().map(FakeApiServer::unchanged_applies);
        restarted.deploy(&deployment).await.expect("redeploy");
        if let (Some(fake), Some(before)) = (&cluster.fake, unchanged_before) {
            assert_eq!(
                fake.unchanged_applies() - before,
                10,
                "every apply was a no-op"
            );
        }
        let status = wait_for(
            &restarted,
            lease_id,
            cluster.ready_timeout,
            "ready",
            LeaseRuntimeStatus::is_ready,
        )
        .await;
        assert_eq!(status.services.len(), 2);
        assert_eq!(
            pod_names(&restarted, lease_id).await,
            pods_before,
            "same pods"
        );

        // Dropping a service prunes its objects; the other keeps its pod.
        restarted
            .deploy(&lease(lease_id, vec![web("web", 1)]))
            .await
            .expect("deploy without api");
        let namespace = restarted.namespace(lease_id);
        let deployments: Api<Deployment> = Api::namespaced(restarted.client().clone(), &namespace);
        let services: Api<Service> = Api::namespaced(restarted.client().clone(), &namespace);
        assert!(deployments.get_opt("api").await.expect("get").is_none());
        assert!(services.get_opt("api").await.expect("get").is_none());
        assert!(services.get_opt("api-np").await.expect("get").is_none());
        assert!(deployments.get_opt("web").await.expect("get").is_some());
        let statefuls: Api<StatefulSet> = Api::namespaced(restarted.client().clone(), &namespace);
        assert!(
            statefuls
                .list(&ListParams::default())
                .await
                .expect("list")
                .items
                .is_empty()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_api_server_reports_crash_loops_and_image_pull_failures() {
    let cluster = cluster().await;
    let runtime = &cluster.runtime;
    let lease_id = lease_id();
    bounded(runtime, &[lease_id], async {
        let crashing = ServiceDeployment {
            args: vec!["exit 3".into()],
            expose: vec![],
            ..web("crash", 1)
        };
        let unpullable = ServiceDeployment {
            image: "registry.leasehold.invalid/nope:1".into(),
            ..web("nopull", 1)
        };
        runtime.deploy(&lease(lease_id, vec![crashing, unpullable])).await.expect("deploy");
        let status = wait_for(runtime, lease_id, cluster.ready_timeout.max(Duration::from_secs(60)), "failing", |status| {
            let state = |name: &str| status.service(name).map(|s| s.replicas[0].state.clone());
            matches!(state("crash"), Some(ReplicaState::Restarting { last_exit_code: Some(3) }))
                && matches!(state("nopull"), Some(ReplicaState::Other(text)) if text.contains("ImagePull") || text.contains("ErrImagePull"))
        })
        .await;
        assert!(!status.is_ready());
        assert!(status.service("nopull").expect("nopull").uris.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_api_server_refuses_a_namespace_it_does_not_own() {
    let cluster = cluster().await;
    let runtime = &cluster.runtime;
    let lease_id = lease_id();
    let namespace = runtime.namespace(lease_id);
    let namespaces: Api<Namespace> = Api::all(runtime.client().clone());
    let foreign: Namespace =
        serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &foreign)
        .await
        .expect("create foreign namespace");
    let deploy = runtime.deploy(&lease(lease_id, vec![web("web", 1)])).await;
    let teardown = runtime.teardown(lease_id).await;
    let listed = runtime.list_leases().await.expect("list");
    let _ = namespaces
        .delete(&namespace, &DeleteParams::default())
        .await;
    assert!(
        matches!(deploy, Err(RuntimeError::Conflict { .. })),
        "{deploy:?}"
    );
    assert!(
        matches!(teardown, Err(RuntimeError::Conflict { .. })),
        "{teardown:?}"
    );
    assert!(!listed.contains(&lease_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_api_server_inventory_reads_nodes_and_pods() {
    let Some(fake) = cluster().await.fake else {
        // On a real cluster: at least one node, every figure non-zero.
        let runtime = runtime_for(None).await;
        let options = inventory_options(BTreeMap::new());
        let inventory = runtime.inventory(&options).await.expect("inventory");
        assert!(!inventory.nodes.is_empty());
        assert!(
            inventory
                .nodes
                .iter()
                .all(|n| n.capacity.cpu_millis > 0 && n.capacity.memory_bytes > 0)
        );
        return;
    };
    fake.insert(
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "labels": {"nvidia.com/gpu.product": "NVIDIA-L4"}},
            "status": {"allocatable": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"},
                "conditions": [{"type": "Ready", "status": "True"}]}}),
    );
    fake.insert(
        "/api/v1/namespaces/kube-system/pods",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dns"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c",
                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}]},
            "status": {"phase": "Running"}}),
    );
    let runtime = runtime_for(Some(&fake)).await;
    let options = inventory_options(BTreeMap::new());
    let inventory = runtime.inventory(&options).await.expect("inventory");
    assert_eq!(inventory.nodes.len(), 1);
    let node = &inventory.nodes[0];
    assert_eq!(node.capacity.cpu_millis, 3750);
    assert_eq!(node.capacity.memory_bytes, 16 * GIB - 256 * MIB);
    assert_eq!(node.gpus.len(), 2);
    assert_eq!(node.gpus[0].spec.model.to_string(), "nvidia/l4/24Gi/pcie");
    let pods_query = fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/v1/pods")
        .expect("cluster-wide pod list");
    assert!(
        pods_query.query.contains("fieldSelector="),
        "{}",
        pods_query.query
    );
}

/// Issue #18: the Kubernetes node-label mapping accepts exactly the concrete models the
/// contract, the scheduler and the tenant accept for a pattern (the shared vector file).
#[test]
fn gpu_product_labels_follow_the_shared_pattern_vectors() {
    use leasehold_provider::runtime::kubernetes::objects::{
        GPU_PRODUCTS, gpu_model_for_product, gpu_products_for,
    };
    let vectors: serde_json::Value = serde_json::from_str(include_str!(
        "../../../marketplace-contracts/test/vectors/gpu_patterns.json"
    ))
    .expect("vector file is JSON");
    let mut checked = 0;
    for case in vectors["cases"].as_array().expect("cases") {
        let pattern = case["pattern"].as_str().expect("pattern");
        let model = case["model"]
            .as_array()
            .expect("model parts")
            .iter()
            .map(|part| part.as_str().expect("part"))
            .collect::<Vec<_>>()
            .join("/");
        let expected = case["matches"].as_bool().expect("matches");
        // Only models with a known product label can be scheduled on Kubernetes.
        let Some((_, product)) = GPU_PRODUCTS.iter().find(|(key, _)| *key == model) else {
            continue;
        };
        assert_eq!(
            gpu_model_for_product(product).map(|key| key.to_string()),
            Some(model.clone())
        );
        let products =
            gpu_products_for(&[pattern.parse().expect("pattern")], "gpu").unwrap_or_default();
        assert_eq!(
            products.iter().any(|known| known == product),
            expected,
            "{pattern} vs {model} ({product})"
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} vectors name a known product");
}

fn env_names(container: &Container) -> Vec<String> {
    container
        .env
        .iter()
        .flatten()
        .map(|var| var.name.clone())
        .collect()
}

/// Issue #13: on Kubernetes the device plugin alone says which GPUs a container sees.
/// A tenant's `NVIDIA_VISIBLE_DEVICES=all` would otherwise reach the NVIDIA runtime,
/// which by default honours it and exposes every GPU of the node, also to a pod that
/// asked for none.
#[test]
fn nvidia_visible_devices_is_left_to_the_device_plugin() {
    let objects = objects_for("gpu-inference");
    let spec = objects.stateful_sets[0].spec.as_ref().expect("spec");
    let container = container_of(Some(&spec.template));
    assert!(
        !env_names(&container).contains(&NVIDIA_VISIBLE_DEVICES.to_owned()),
        "{:?}",
        container.env
    );

    let mut sneaky = web("sneaky", 1);
    sneaky.env = BTreeMap::from([
        (NVIDIA_VISIBLE_DEVICES.to_owned(), "all".to_owned()),
        ("GREETING".to_owned(), "hi".to_owned()),
    ]);
    let objects = lease_objects(&lease(9, vec![sneaky]), &config()).expect("objects");
    let container = container_of(
        objects.deployments[0]
            .spec
            .as_ref()
            .map(|spec| &spec.template),
    );
    assert_eq!(env_names(&container), vec!["GREETING".to_owned()]);
}

fn event(object: &str, reason: &str, message: &str) -> k8s_openapi::api::core::v1::Event {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{object}.1"), "namespace": "lh-x"},
        "involvedObject": {"kind": "Pod", "name": object},
        "reason": reason,
        "message": message,
    }))
    .expect("event")
}

/// Issue #13: the Kubernetes events `tenant events` shows, in the runtime's terms.
#[test]
fn kubernetes_events_map_to_pulls_starts_exits_oom_kills_and_removals() {
    let services = vec!["web".to_owned(), "db".to_owned()];
    let cases = [
        (
            "web-5d8f7c9b4-abcde",
            "Pulling",
            "Pulling image \"busybox:1.36\"",
            RuntimeEventKind::PullProgress {
                image: "busybox:1.36".into(),
                status: "Pulling image \"busybox:1.36\"".into(),
                current: None,
                total: None,
            },
        ),
        (
            "web-5d8f7c9b4-abcde",
            "Pulled",
            "Successfully pulled image \"busybox:1.36\" in 1s",
            RuntimeEventKind::PullComplete {
                image: "busybox:1.36".into(),
            },
        ),
        (
            "db-0",
            "Created",
            "Created container db",
            RuntimeEventKind::Created,
        ),
        (
            "db-0",
            "Started",
            "Started container db",
            RuntimeEventKind::Started,
        ),
        (
            "db-0",
            "BackOff",
            "Back-off restarting failed container db in pod db-0",
            RuntimeEventKind::Died { exit_code: None },
        ),
        (
            "db-0",
            "OOMKilling",
            "Memory cgroup out of memory",
            RuntimeEventKind::OutOfMemory,
        ),
        (
            "db-0",
            "Killing",
            "Stopping container db",
            RuntimeEventKind::Removed,
        ),
        (
            "db-0",
            "FailedMount",
            "MountVolume.SetUp failed",
            RuntimeEventKind::Other {
                action: "FailedMount".into(),
            },
        ),
    ];
    for (object, reason, message, kind) in cases {
        let mapped = runtime_event(42, &event(object, reason, message), &services);
        assert_eq!(mapped.lease_id, 42);
        assert_eq!(mapped.kind, kind, "{reason}");
        let service = object.split('-').next().map(str::to_owned);
        assert_eq!(mapped.service, service, "{reason}");
    }
    let stateful = runtime_event(42, &event("db-0", "Started", ""), &services);
    assert_eq!(stateful.replica, Some(0));
}

/// Issue #13 through the client flow: a replica with a persistent volume and a larger
/// `/dev/shm` becomes ready as a StatefulSet whose claim and memory-backed `emptyDir`
/// the server holds as applied, and the quota counts the claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_api_server_runs_persistent_and_shared_memory_volumes() {
    let cluster = cluster().await;
    let runtime = &cluster.runtime;
    let lease_id = lease_id();
    bounded(runtime, &[lease_id], async {
        let mut infer = web("infer", 1);
        infer.resources.memory_bytes = 32 * MIB + 64 * MIB;
        infer.ram_volumes = vec![RamVolume {
            name: "shm".into(),
            mount: SHARED_MEMORY_MOUNT.into(),
            size_bytes: 64 * MIB,
        }];
        infer.volumes = vec![PersistentVolume {
            name: "models".into(),
            mount: "/models".into(),
            size_bytes: 128 * MIB,
            class: None,
            read_only: false,
        }];
        runtime
            .deploy(&lease(lease_id, vec![infer]))
            .await
            .expect("deploy");
        wait_for(
            runtime,
            lease_id,
            cluster.ready_timeout,
            "ready",
            LeaseRuntimeStatus::is_ready,
        )
        .await;

        let namespace = runtime.namespace(lease_id);
        let sets: Api<StatefulSet> = Api::namespaced(runtime.client().clone(), &namespace);
        let set = sets.get("infer").await.expect("the StatefulSet as applied");
        let spec = set.spec.expect("spec");
        let claims = spec.volume_claim_templates.expect("claims");
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].metadata.name.as_deref(), Some("models"));
        let requested = claims[0]
            .spec
            .as_ref()
            .and_then(|spec| spec.resources.as_ref())
            .map(|resources| quantities(&resources.requests));
        assert_eq!(
            requested.as_ref().and_then(|q| q.get("storage")).map(String::as_str),
            Some((128 * MIB).to_string().as_str())
        );
        let pod = spec.template.spec.expect("pod");
        assert_eq!(
            serde_json::to_value(&pod.volumes).expect("json"),
            json!([{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": (64 * MIB).to_string()}}])
        );
        let mounts = serde_json::to_value(&pod.containers[0].volume_mounts).expect("json");
        for (name, path) in [("shm", SHARED_MEMORY_MOUNT), ("models", "/models")] {
            assert!(
                mounts.as_array().is_some_and(|mounts| mounts
                    .iter()
                    .any(|m| m["name"] == name && m["mountPath"] == path)),
                "{name} not mounted at {path}: {mounts}"
            );
        }
        let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> =
            Api::namespaced(runtime.client().clone(), &namespace);
        let quota = quotas.list(&ListParams::default()).await.expect("quota");
        let hard = quantities(&quota.items[0].spec.as_ref().expect("spec").hard);
        assert_eq!(hard.get("persistentvolumeclaims").map(String::as_str), Some("1"));

        runtime.teardown(lease_id).await.expect("teardown");
        assert!(runtime.status(lease_id).await.expect("status").services.is_empty());
    })
    .await;
}

fn exec_request(service: &str, command: &[&str], tty: bool) -> ExecRequest {
    ExecRequest {
        service: service.into(),
        replica: 0,
        command: command.iter().map(|arg| (*arg).to_owned()).collect(),
        tty,
        size: tty.then_some(TerminalSize {
            cols: 100,
            rows: 40,
        }),
    }
}

/// Deploys one `web` replica for an exec test and waits until it runs.
async fn deploy_for_exec(cluster: &Cluster, lease_id: u64) {
    let runtime = &cluster.runtime;
    runtime
        .deploy(&lease(lease_id, vec![web("web", 1)]))
        .await
        .expect("deploy");
    wait_for(
        runtime,
        lease_id,
        cluster.ready_timeout,
        "ready",
        LeaseRuntimeStatus::is_ready,
    )
    .await;
}

/// `tenant shell -- sh -c '...'` on Kubernetes: a websocket exec into the replica's
/// container, stdout and stderr apart, and the exit code from the status channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_api_server_exec_returns_stdout_stderr_and_the_exit_code() {
    let cluster = cluster().await;
    let runtime = &cluster.runtime;
    let lease_id = lease_id();
    bounded(runtime, &[lease_id], async {
        deploy_for_exec(&cluster, lease_id).await;
        let script = "echo out; echo err >&2; exit 3";
        let mut failing = runtime
            .exec(lease_id, &exec_request("web", &["sh", "-c", script], false))
            .await
            .expect("exec");
        let (stdout, stderr, exit) = exec_until_exit(&mut failing.output, None).await;
        assert_eq!(
            (stdout.as_str(), stderr.as_str(), exit),
            ("out\n", "err\n", Some(Some(3)))
        );
        let mut succeeding = runtime
            .exec(lease_id, &exec_request("web", &["echo", "a", "b"], false))
            .await
            .expect("exec");
        let (stdout, stderr, exit) = exec_until_exit(&mut succeeding.output, None).await;
        assert_eq!(
            (stdout.as_str(), stderr.as_str(), exit),
            ("a b\n", "", Some(Some(0)))
        );

        if let Some(fake) = cluster.fake.as_ref() {
            let execs = fake.execs();
            let first = execs.first().expect("the exec reached the kubelet");
            assert_eq!(first.container, "web");
            assert_eq!(first.command, ["sh", "-c", script]);
            assert_eq!(
                (first.stdin, first.stdout, first.stderr, first.tty),
                (true, true, true, false)
            );
            assert_eq!(first.protocol, "v5.channel.k8s.io", "kube-rs prefers v5");
            assert!(
                pod_names(runtime, lease_id).await.contains(&first.pod),
                "{first:?}"
            );
        }
    })
    .await;
}

/// Stdin reaches the command, and closing it (a v5 stream close) ends a `cat`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_api_server_exec_forwards_stdin_until_it_is_closed() {
    let cluster = cluster().await;
    let runtime = &cluster.runtime;
    let lease_id = lease_id();
    bounded(runtime, &[lease_id], async {
        deploy_for_exec(&cluster, lease_id).await;
        let mut cat = runtime
            .exec(lease_id, &exec_request("web", &["cat"], false))
            .await
            .expect("exec cat");
        cat.input
            .send(ExecInput::Stdin(b"typed ".to_vec()))
            .await
            .unwrap();
        // Echoed before stdin closes: the session is live, not replayed at the end.
        let (stdout, _, exit) = exec_until_exit(&mut cat.output, Some("typed ")).await;
        assert_eq!((stdout.as_str(), exit), ("typed ", None));
        cat.input
            .send(ExecInput::Stdin(b"text".to_vec()))
            .await
            .unwrap();
        cat.input.send(ExecInput::CloseStdin).await.unwrap();
        let (stdout, stderr, exit) = exec_until_exit(&mut cat.output, None).await;
        assert_eq!(
            (stdout.as_str(), stderr.as_str(), exit),
            ("text", "", Some(Some(0)))
        );

        if let Some(fake) = cluster.fake.as_ref() {
            let execs = fake.execs();
            let cat = execs.last().expect("recorded");
            assert_eq!(cat.received_stdin, b"typed text");
            assert!(cat.stdin_closed, "{cat:?}");
        }
    })
    .await;
}

/// A terminal session: stderr merged into stdout, the first size and every resize
/// reach the exec's resize channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_api_server_exec_with_a_tty_follows_resizes() {
    let cluster = cluster().await;
    let runtime = &cluster.runtime;
    let lease_id = lease_id();
    bounded(runtime, &[lease_id], async {
        deploy_for_exec(&cluster, lease_id).await;
        let mut shell = runtime
            .exec(lease_id, &exec_request("web", &["cat"], true))
            .await
            .expect("exec with a tty");
        shell
            .input
            .send(ExecInput::Resize(TerminalSize {
                cols: 132,
                rows: 50,
            }))
            .await
            .unwrap();
        shell
            .input
            .send(ExecInput::Stdin(b"hello\n".to_vec()))
            .await
            .unwrap();
        exec_until_exit(&mut shell.output, Some("hello")).await;

        if let Some(fake) = cluster.fake.as_ref() {
            let started = Instant::now();
            let resizes = loop {
                let exec = fake.execs().pop().expect("recorded");
                if exec.resizes.len() >= 2 || started.elapsed() > Duration::from_secs(10) {
                    assert_eq!(
                        (exec.tty, exec.stderr),
                        (true, false),
                        "a terminal merges stderr"
                    );
                    break exec.resizes;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert_eq!(resizes, [(100, 40), (132, 50)]);
        }
        shell.input.send(ExecInput::CloseStdin).await.unwrap();
        let (_, stderr, exit) = exec_until_exit(&mut shell.output, None).await;
        assert_eq!((stderr.as_str(), exit), ("", Some(Some(0))));
    })
    .await;
}

/// A replica, service or lease that does not exist is NotFound from the runtime's own
/// lookups: no exec request reaches the API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_api_server_exec_into_a_missing_replica_is_not_found() {
    let cluster = cluster().await;
    let runtime = &cluster.runtime;
    let never_deployed = lease_id();
    let lease_id = lease_id();
    bounded(runtime, &[lease_id], async {
        deploy_for_exec(&cluster, lease_id).await;
        let missing = [
            (
                lease_id,
                ExecRequest {
                    replica: 5,
                    ..exec_request("web", &["true"], false)
                },
                "replica 5",
            ),
            (lease_id, exec_request("db", &["true"], false), "service db"),
            (
                never_deployed,
                exec_request("web", &["true"], false),
                "lease",
            ),
        ];
        for (lease, request, named) in missing {
            let refused = runtime.exec(lease, &request).await;
            assert!(
                matches!(&refused, Err(RuntimeError::NotFound { what }) if what.contains(named)),
                "{named}: {:?}",
                refused.map(|_| ())
            );
        }
        if let Some(fake) = cluster.fake.as_ref() {
            let execs: Vec<_> = fake
                .requests()
                .into_iter()
                .filter(|request| request.path.ends_with("/exec"))
                .collect();
            assert!(execs.is_empty(), "{execs:?}");
            assert!(fake.execs().is_empty());
        }
    })
    .await;
}

/// Dropping a session closes the command's stdin (a `cat` then ends on its own), as the
/// `ExecSession` contract says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_api_server_exec_dropped_by_the_caller_closes_stdin() {
    let cluster = cluster().await;
    let Some(fake) = cluster.fake.as_ref() else {
        return; // what the container saw is only observable on the fake
    };
    let runtime = &cluster.runtime;
    let lease_id = lease_id();
    bounded(runtime, &[lease_id], async {
        deploy_for_exec(&cluster, lease_id).await;
        let mut cat = runtime
            .exec(lease_id, &exec_request("web", &["cat"], false))
            .await
            .expect("exec cat");
        cat.input
            .send(ExecInput::Stdin(b"x".to_vec()))
            .await
            .unwrap();
        exec_until_exit(&mut cat.output, Some("x")).await;
        drop(cat);
        let started = Instant::now();
        while !fake.execs().last().expect("recorded").stdin_closed {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "stdin still open after the session was dropped: {:?}",
                fake.execs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A connection that breaks mid-command (no status, no close frame) ends the session
/// with an error instead of leaving the tenant's shell hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_api_server_exec_ends_with_an_error_when_the_connection_breaks() {
    let cluster = cluster().await;
    let Some(fake) = cluster.fake.as_ref() else {
        return; // a real connection cannot be cut on purpose here
    };
    let runtime = &cluster.runtime;
    let lease_id = lease_id();
    bounded(runtime, &[lease_id], async {
        deploy_for_exec(&cluster, lease_id).await;
        let mut cat = runtime
            .exec(lease_id, &exec_request("web", &["cat"], false))
            .await
            .expect("exec cat");
        cat.input
            .send(ExecInput::Stdin(b"before".to_vec()))
            .await
            .unwrap();
        exec_until_exit(&mut cat.output, Some("before")).await;
        fake.break_exec_connections();
        let last = tokio::time::timeout(Duration::from_secs(10), cat.output.next())
            .await
            .expect("the session ends when its connection breaks");
        assert!(
            matches!(&last, Some(Err(RuntimeError::Unavailable { reason })) if reason.contains("connection")),
            "{last:?}"
        );
        let after = tokio::time::timeout(Duration::from_secs(10), cat.output.next())
            .await
            .expect("nothing after the error");
        assert!(after.is_none(), "{after:?}");
    })
    .await;
}

/// Real product names reach the key through one rule on both sides: `nvidia-smi`'s name (Docker
/// hosts) and GPU feature discovery's node labels (Kubernetes: the name with `-` for spaces,
/// plus the memory label) give identical keys, for products in `GPU_PRODUCTS` and not. A
/// product the rule cannot map leaves that node's GPUs unoffered, without a panic.
#[test]
fn driver_names_and_node_labels_map_to_the_same_keys() {
    let cases: &[(&str, u64, &str)] = &[
        ("NVIDIA A100-SXM4-80GB", 81920, "nvidia/a100/80Gi/sxm"),
        ("NVIDIA A100-PCIE-40GB", 40960, "nvidia/a100/40Gi/pcie"),
        ("Tesla T4", 15360, "nvidia/t4/16Gi/pcie"),
        ("NVIDIA H100 80GB HBM3", 81559, "nvidia/h100/80Gi/sxm"),
        ("NVIDIA H100 PCIe", 81559, "nvidia/h100/80Gi/pcie"),
        ("NVIDIA GeForce RTX 4090", 24564, "nvidia/rtx4090/24Gi/pcie"),
        ("NVIDIA L4", 23034, "nvidia/l4/24Gi/pcie"),
        ("NVIDIA L40S", 46068, "nvidia/l40s/48Gi/pcie"),
        // Not in GPU_PRODUCTS: found by the rule alone.
        ("NVIDIA A10G", 23028, "nvidia/a10g/24Gi/pcie"),
        ("NVIDIA RTX A6000", 49140, "nvidia/rtxa6000/48Gi/pcie"),
        ("NVIDIA GeForce RTX 5090", 32607, "nvidia/rtx5090/32Gi/pcie"),
    ];
    let csv: String = cases
        .iter()
        .enumerate()
        .map(|(index, (name, mib, _))| format!("{index}, {name}, {mib} MiB, [N/A], [N/A]\n"))
        .collect();
    let from_driver: Vec<String> = parse_nvidia_smi_csv(&csv)
        .expect("nvidia-smi output")
        .iter()
        .map(|gpu| gpu.model_key.to_string())
        .collect();
    let mut nodes: Vec<Node> = cases
        .iter()
        .enumerate()
        .map(|(index, (name, mib, _))| {
            node(
                &format!("gpu-{index:02}"),
                json!({
                    "nvidia.com/gpu.product": name.replace(' ', "-"),
                    "nvidia.com/gpu.memory": mib.to_string(),
                    "nvidia.com/gpu.family": "ampere",
                }),
                json!({"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}),
                "True",
                false,
            )
        })
        .collect();
    let unmappable = [
        json!({"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"}),
        json!({"nvidia.com/gpu.product": "NVIDIA", "nvidia.com/gpu.memory": "16384"}),
        // Not in GPU_PRODUCTS and no memory label: the RAM cannot be known.
        json!({"nvidia.com/gpu.product": "NVIDIA-A10G"}),
    ];
    for (index, labels) in unmappable.into_iter().enumerate() {
        nodes.push(node(
            &format!("odd-{index}"),
            labels,
            json!({"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}),
            "True",
            false,
        ));
    }
    // Listed in GPU_PRODUCTS: the table fills in the RAM a missing memory label leaves open.
    nodes.push(node(
        "table-0",
        json!({"nvidia.com/gpu.product": "NVIDIA-H100-PCIe"}),
        json!({"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}),
        "True",
        false,
    ));
    let inventory = cluster_inventory(&nodes, &[], &BTreeSet::new(), &InventoryOptions::default());
    let model_of = |id: &str| {
        let node = inventory
            .nodes
            .iter()
            .find(|node| node.id == id)
            .unwrap_or_else(|| panic!("node {id} missing"));
        node.gpus.first().map(|gpu| gpu.spec.model.to_string())
    };
    for (index, (name, _, expected)) in cases.iter().enumerate() {
        let from_labels = model_of(&format!("gpu-{index:02}"));
        assert_eq!(from_driver[index], *expected, "{name} from nvidia-smi");
        assert_eq!(
            from_labels.as_deref(),
            Some(*expected),
            "{name} from node labels"
        );
    }
    for index in 0..3 {
        assert_eq!(model_of(&format!("odd-{index}")), None, "odd-{index}");
    }
    assert_eq!(
        model_of("table-0").as_deref(),
        Some("nvidia/h100/80Gi/pcie")
    );
    let spec = &inventory
        .nodes
        .iter()
        .find(|n| n.id == "gpu-00")
        .expect("gpu-00")
        .gpus[0]
        .spec;
    assert_eq!(spec.vram_bytes, 80 * GIB);
}

/// Issue #14 on Kubernetes: a lease with a leased IP gets its `externalIPs` Service, its
/// status names `<address>:<port>` for the leased port (and the node port for the other),
/// and closing the lease (teardown) removes the Service with the namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_api_server_leased_ip_service_is_created_reported_and_removed_at_close() {
    let cluster = cluster().await;
    let runtime = &cluster.runtime;
    let lease_id = lease_id();
    bounded(runtime, &[lease_id], async {
        let mut deployment = leased_ip_deployment(lease_id);
        let web = web("web", 1);
        deployment.services[0].image = web.image;
        deployment.services[0].command = web.command;
        deployment.services[0].args = web.args;
        runtime.deploy(&deployment).await.expect("deploy");
        let name = "web-ip-203-0-113-10";
        let services: Api<Service> =
            Api::namespaced(runtime.client().clone(), &runtime.namespace(lease_id));
        let leased = services.get(name).await.expect("the leased-IP Service");
        let spec = leased.spec.expect("spec");
        assert_eq!(spec.external_ips, Some(vec![LEASED_ADDRESS.to_owned()]));
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));

        let status = wait_for(
            runtime,
            lease_id,
            cluster.ready_timeout,
            "ready",
            LeaseRuntimeStatus::is_ready,
        )
        .await;
        let uris = &status.service("web").expect("web").uris;
        assert!(
            uris.contains(&format!("http://{LEASED_ADDRESS}:80")),
            "{uris:?}"
        );
        assert_eq!(uris.len(), 2, "{uris:?}");
        if cluster.fake.is_some() {
            assert!(uris.contains(&format!("tcp://{NODE_IP}:30080")), "{uris:?}");
        }

        runtime.teardown(lease_id).await.expect("teardown");
        let gone = services
            .get(name)
            .await
            .expect_err("removed with the lease");
        assert!(matches!(gone, kube::Error::Api(status) if status.code == 404));
        assert!(
            runtime
                .status(lease_id)
                .await
                .expect("status")
                .services
                .is_empty()
        );
    })
    .await;
}
