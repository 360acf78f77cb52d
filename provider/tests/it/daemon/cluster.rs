//! The daemon and the `provider` binary on a Kubernetes cluster: the in-process fake API
//! server (nodes and pods as a real server returns them), the real chain. The inventory
//! and the registration come from the cluster's nodes, and the daemon reports (and, when
//! asked, repairs) a registration the cluster has drifted from.

use leasehold_provider::config::RuntimeKind;
use leasehold_provider::hardware::HardwareOverrides;
use serde_json::{Value, json};

use super::*;
use crate::runtime_kubernetes::fake_api_server::FakeApiServer;

const A100_PRODUCT: &str = "NVIDIA-A100-SXM4-80GB";

/// A ready node with `cpu` cores, `memory`, 100Gi of ephemeral storage and `gpus`
/// A100s (labelled with their product, as GPU feature discovery does).
fn node(name: &str, cpu: &str, memory: &str, gpus: u32, cordoned: bool) -> Value {
    let mut allocatable = json!({"cpu": cpu, "memory": memory, "ephemeral-storage": "100Gi"});
    let mut labels = json!({});
    if gpus > 0 {
        allocatable["nvidia.com/gpu"] = json!(gpus.to_string());
        labels["nvidia.com/gpu.product"] = json!(A100_PRODUCT);
    }
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"unschedulable": cordoned},
        "status": {
            "allocatable": allocatable,
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.9"}],
        },
    })
}

fn add_node(cluster: &FakeApiServer, node: Value) {
    let name = node["metadata"]["name"]
        .as_str()
        .expect("node name")
        .to_owned();
    cluster.insert(&format!("/api/v1/nodes/{name}"), node);
}

/// A provider config whose runtime is the fake cluster (through a kubeconfig in `dir`),
/// with no `[hardware]` limits.
fn cluster_config(devnet: &Devnet, dir: &std::path::Path, cluster: &FakeApiServer) -> Config {
    let kubeconfig = dir.join("kubeconfig.yaml");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: nobody\n  user: {{}}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: nobody\n",
            cluster.url
        ),
    )
    .expect("write kubeconfig");
    let mut config = provider_config(devnet, dir, 0);
    config.runtime.kind = RuntimeKind::Kubernetes;
    config.runtime.kubernetes.kubeconfig = Some(kubeconfig);
    config.hardware = HardwareOverrides::default();
    config
}

async fn registration(devnet: &Devnet) -> leasehold_contracts::ProviderInfo {
    devnet
        .client(0)
        .provider_info(devnet.signer(PROVIDER).address())
        .await
        .expect("provider info")
}

/// `kind = "kubernetes"` in the config is the only difference: the daemon connects
/// through the kubeconfig, builds its inventory from the cluster's schedulable nodes
/// (skipping cordoned ones) and reports later drift in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_runtime_builds_the_inventory_from_the_cluster_nodes() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let cluster = FakeApiServer::start().await;
        add_node(&cluster, node("worker-1", "8", "16Gi", 0, false));
        add_node(&cluster, node("worker-2", "4", "16Gi", 0, false));
        add_node(&cluster, node("drained", "64", "16Gi", 0, true));

        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = cluster_config(&devnet, dir.path(), &cluster);
        register(&devnet, &provider_config(&devnet, dir.path(), 0)).await;
        let handle = start(&devnet, &config).await;
        let metrics = handle.metrics_addr().expect("metrics served").to_string();
        let scrape = || http_get_async(metrics.clone(), "/metrics");

        let text = scrape().await.expect("scrape");
        assert!(
            text.contains("leasehold_cpu_millis{ledger=\"capacity\"} 12000"),
            "capacity must be worker-1 + worker-2 (8 + 4 cores), without the cordoned node:\n{text}"
        );
        assert!(
            text.contains("leasehold_cluster_drifted_nodes_total 0"),
            "{text}"
        );

        // A node joins: the next periodic pass reports it, never silently.
        add_node(&cluster, node("worker-3", "2", "16Gi", 0, false));
        eventually("drift reported in /metrics", || async {
            let text = scrape().await.ok()?;
            text.contains("leasehold_cluster_drifted_nodes_total 1")
                .then_some(())
        })
        .await;
        let requests = cluster.requests();
        assert!(
            requests
                .iter()
                .any(|request| request.path.starts_with("/api/v1/nodes")),
            "the daemon listed the cluster's nodes"
        );
        handle.shutdown().await;
    })
    .await
    .expect("test exceeded its time limit");
}

/// `provider register` on Kubernetes registers the sum of the cluster's schedulable nodes
/// (allocatable minus the requests of pods that are not the provider's), GPUs by model
/// from the product label, not the machine running the CLI; `update` re-reads the
/// cluster, and its `--max-*` flags limit what is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_update_on_kubernetes_publish_the_cluster_capacity() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let cluster = FakeApiServer::start().await;
        add_node(&cluster, node("worker-1", "8", "16Gi", 0, false));
        add_node(&cluster, node("gpu-1", "16", "64Gi", 2, false));
        add_node(&cluster, node("drained", "64", "256Gi", 8, true));
        // Another tenant of the cluster holds 1.5 cores and 1Gi on worker-1.
        cluster.insert(
            "/api/v1/namespaces/monitoring/pods/prometheus-0",
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "prometheus-0", "namespace": "monitoring"},
                "spec": {"nodeName": "worker-1", "containers": [{
                    "name": "prometheus", "image": "prom",
                    "resources": {"requests": {"cpu": "1500m", "memory": "1Gi"}},
                }]},
                "status": {"phase": "Running"},
            }),
        );
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = cluster_config(&devnet, dir.path(), &cluster);
        let config_path = dir.path().join("provider.toml");
        std::fs::write(&config_path, config.to_toml_string().expect("toml")).expect("write");

        let registered = provider_command(&devnet, &config_path, &["register"]);
        assert_eq!(registered["capacity_source"], "cluster", "{registered}");
        let info = registration(&devnet).await;
        assert_eq!(info.status, leasehold_contracts::ProviderStatus::Active);
        assert_eq!(
            info.capacity,
            Resources {
                cpu_milli: 8_000 - 1_500 + 16_000,
                memory_mib: (16 - 1 + 64) * 1024,
                storage_mib: 2 * 100 * 1024,
            },
            "the two schedulable nodes, less the foreign pod, without the cordoned node"
        );
        assert_eq!(info.gpus.len(), 1);
        assert_eq!(
            info.gpus[0].model_key,
            gpu_model_key(&A100.parse().unwrap())
        );
        assert_eq!(info.gpus[0].capacity, 2);

        // The cluster grows; an update publishes it, within the operator's limits.
        add_node(&cluster, node("worker-2", "4", "8Gi", 0, false));
        let updated = provider_command(
            &devnet,
            &config_path,
            &[
                "update",
                "--max-memory-mib",
                "50000",
                "--max-gpus",
                &format!("{A100}=1"),
            ],
        );
        assert_eq!(
            updated["profile"]["capacity"]["cpu_milli"], 26_500,
            "{updated}"
        );
        let info = registration(&devnet).await;
        assert_eq!(info.capacity.cpu_milli, 26_500);
        assert_eq!(
            info.capacity.memory_mib, 50_000,
            "limited by --max-memory-mib"
        );
        assert_eq!(info.capacity.storage_mib, 3 * 100 * 1024);
        assert_eq!(info.gpus[0].capacity, 1, "limited by --max-gpus");

        let refused = provider_refusal(&devnet, &config_path, &["update", "--max-gpus", "a100"]);
        assert!(refused.contains("MODEL=COUNT"), "{refused}");
    })
    .await
    .expect("test exceeded its time limit");
}

/// The daemon compares what the cluster could register with its on-chain registration:
/// a node joining shows as `leasehold_registration_drift` with the chain untouched; a
/// daemon started with `resync_registration` sends the update itself, and the gauge
/// returns to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_drift_is_reported_and_resynced_when_asked() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let cluster = FakeApiServer::start().await;
        add_node(&cluster, node("worker-1", "8", "16Gi", 0, false));
        add_node(&cluster, node("worker-2", "4", "16Gi", 0, false));
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = cluster_config(&devnet, dir.path(), &cluster);
        let config_path = dir.path().join("provider.toml");
        std::fs::write(&config_path, config.to_toml_string().expect("toml")).expect("write");
        provider_command(&devnet, &config_path, &["register"]);
        let registered = registration(&devnet).await;
        assert_eq!(registered.capacity.cpu_milli, 12_000);

        let handle = start(&devnet, &config).await;
        let metrics = handle.metrics_addr().expect("metrics served").to_string();
        let text = http_get_async(metrics.clone(), "/metrics")
            .await
            .expect("scrape");
        assert!(
            text.contains("leasehold_registration_drift{resource=\"cpu_milli\"} 0"),
            "in step after register:\n{text}"
        );

        // The new node brings a GPU model the registration never had.
        add_node(&cluster, node("worker-3", "2", "4Gi", 1, false));
        eventually("registration drift in /metrics", || async {
            let text = http_get_async(metrics.clone(), "/metrics").await.ok()?;
            (text.contains("leasehold_registration_drift{resource=\"cpu_milli\"} 2000")
                && text.contains("leasehold_registration_drift{resource=\"memory_mib\"} 4096"))
            .then_some(())
        })
        .await;
        assert_eq!(
            registration(&devnet).await.capacity.cpu_milli,
            12_000,
            "without --resync-registration the daemon only reports"
        );
        handle.shutdown().await;

        let options = DaemonOptions {
            resync_registration: Some(Duration::from_secs(600)),
            ..options()
        };
        let handle = Daemon::start(config.clone(), devnet.signer(PROVIDER), options)
            .await
            .expect("daemon starts");
        let metrics = handle.metrics_addr().expect("metrics served").to_string();
        eventually("the registration follows the cluster", || async {
            (registration(&devnet).await.capacity.cpu_milli == 14_000).then_some(())
        })
        .await;
        let info = registration(&devnet).await;
        assert_eq!(info.capacity.memory_mib, 36 * 1024);
        assert_eq!(
            info.attributes, registered.attributes,
            "the registered attributes are kept"
        );
        assert_eq!(info.endpoint, registered.endpoint);
        let names = devnet.client(0).key_names().await.expect("key names");
        let model = info.gpus.first().expect("the new GPU model registered");
        let name = names.name(&model.model_key).expect("its name published");
        assert!(name.starts_with("nvidia/a100/"), "{name}");
        assert_eq!(alloy::primitives::keccak256(name), model.model_key);
        let text = http_get_async(metrics.clone(), "/metrics")
            .await
            .expect("scrape");
        assert!(
            text.contains("leasehold_registration_drift{resource=\"cpu_milli\"} 0")
                && text.contains("leasehold_registration_resyncs_total 1"),
            "{text}"
        );
        handle.shutdown().await;
    })
    .await
    .expect("test exceeded its time limit");
}

/// A cluster that shrinks below what a lease holds is never re-synced down to it: the
/// daemon refuses, says so in `/metrics`, and the registration stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_never_goes_below_what_leases_hold() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let cluster = FakeApiServer::start().await;
        add_node(&cluster, node("worker-1", "8", "16Gi", 0, false));
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = cluster_config(&devnet, dir.path(), &cluster);
        let config_path = dir.path().join("provider.toml");
        std::fs::write(&config_path, config.to_toml_string().expect("toml")).expect("write");
        provider_command(&devnet, &config_path, &["register"]);
        let options = DaemonOptions {
            resync_registration: Some(Duration::from_secs(600)),
            ..options()
        };
        let handle = Daemon::start(config.clone(), devnet.signer(PROVIDER), options)
            .await
            .expect("daemon starts");
        let metrics = handle.metrics_addr().expect("metrics served").to_string();

        // A lease takes 100m of CPU (hello.yaml); no manifest is needed for that.
        let tenant = devnet.client(TENANT);
        let (order, _manifest) = hello_order(&devnet, 1_000 * TOKEN, 3_600);
        let posted = tenant.create_order(&order).await.expect("createOrder");
        let bid_id = eventually("our bid", || our_bid(&devnet, posted.order_id)).await;
        tenant
            .accept_bid(posted.order_id, bid_id)
            .await
            .expect("acceptBid");
        assert_eq!(registration(&devnet).await.allocated.cpu_milli, 100);

        // The node shrinks to 50m: below the lease's 100m.
        add_node(&cluster, node("worker-1", "50m", "16Gi", 0, false));
        eventually("the refusal in /metrics", || async {
            let text = http_get_async(metrics.clone(), "/metrics").await.ok()?;
            (text.contains("leasehold_registration_resyncs_refused_total 1")
                && text.contains("leasehold_registration_drift{resource=\"cpu_milli\"} -7950"))
            .then_some(())
        })
        .await;
        let info = registration(&devnet).await;
        assert_eq!(
            info.capacity.cpu_milli, 8_000,
            "the registration is left alone"
        );
        let text = http_get_async(metrics.clone(), "/metrics")
            .await
            .expect("scrape");
        assert!(
            text.contains("leasehold_registration_resyncs_total 0"),
            "{text}"
        );
        handle.shutdown().await;
    })
    .await
    .expect("test exceeded its time limit");
}

/// Issue #14 on Kubernetes, through the daemon: `[ip_pool]` with `kind = "kubernetes"` is
/// accepted, a lease on the leased IP endpoint gets a Service with the address in
/// `externalIPs`, the tenant's status names `<address>:80`, and closing the lease removes
/// the Service (with the lease's namespace) and returns the address to the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_ip_on_kubernetes_is_an_external_ips_service_until_the_lease_closes() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_TIMEOUT, async {
        const ADDRESS: &str = "203.0.113.10";
        let cluster = FakeApiServer::start().await;
        add_node(&cluster, node("worker-1", "8", "16Gi", 0, false));
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = cluster_config(&devnet, dir.path(), &cluster);
        config.ip_pool.addresses = vec![ADDRESS.to_owned()];
        let config_path = dir.path().join("provider.toml");
        std::fs::write(&config_path, config.to_toml_string().expect("toml")).expect("write");
        provider_command(&devnet, &config_path, &["register"]);
        let handle = start(&devnet, &config).await;
        let ledgers = || handle.core().capacity_report().expect("report").leased_ips;
        assert_eq!(ledgers().capacity, 1);

        let (order, manifest) = sdl_order(&devnet, &leased_ip_hello(), 1_000 * TOKEN, 3_600);
        let lease_id = lease_for(&devnet, &order).await;
        let uri = deliver_and_run(&devnet, &handle, lease_id, manifest).await;
        assert_eq!(uri, format!("http://{ADDRESS}:80"));
        let external_ips = || {
            cluster
                .objects("api/v1/services")
                .into_iter()
                .filter(|service| !service["spec"]["externalIPs"].is_null())
                .map(|service| {
                    (
                        service["metadata"]["name"].clone(),
                        service["spec"]["externalIPs"].clone(),
                        service["spec"]["type"].clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            external_ips(),
            [(
                json!("web-ip-203-0-113-10"),
                json!([ADDRESS]),
                json!("ClusterIP")
            )]
        );
        assert!(
            cluster
                .objects("api/v1/services")
                .iter()
                .all(|service| service["spec"]["type"] != "NodePort"),
            "the leased port is not on every node"
        );
        assert_eq!(ledgers().allocated, 1);

        devnet
            .client(TENANT)
            .close_lease(lease_id, CloseReason::TenantRequest)
            .await
            .expect("closeLease");
        eventually("the lease's namespace and Service to go", || async {
            (cluster.namespaces().is_empty() && external_ips().is_empty()).then_some(())
        })
        .await;
        eventually("the address to return to the pool", || async {
            let ips = ledgers();
            (ips.allocated == 0 && ips.reserved == 0).then_some(())
        })
        .await;
        handle.shutdown().await;
    })
    .await
    .expect("test exceeded its time limit");
}
