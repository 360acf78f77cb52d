//! The daemon end to end, in process: real anvil, real contracts, real Docker, the real
//! gateway. Daemon tests run one at a time (they share lease ids on the one Docker
//! engine), every wait is bounded, and containers are removed by lease label at the end
//! even when a test fails.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, B256, U256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;
use bollard::query_parameters::{ListContainersOptionsBuilder, ListNetworksOptionsBuilder};
use leasehold_contracts::bindings::Marketplace;
use leasehold_contracts::{
    CloseReason, DeployParams, Deployment, MarketplaceClient, NewOrder, OrderRequirements,
    OrderSpec, Resources, deploy_all, fund_with_faucet, signing_provider,
};
use leasehold_provider::chain::provider_profile;
use leasehold_provider::config::Config;
use leasehold_provider::daemon::{Daemon, DaemonHandle, DaemonOptions};
use leasehold_provider::deployment::{gpu_model_key, order_spec_for_group};
use leasehold_provider::hardware::{DeclaredGpu, Hardware, HardwareOverrides};
use leasehold_provider::lease::LeaseStateKind;
use leasehold_provider::runtime::{lease_network_name, lease_selector, replica_name};

const TOKEN: u64 = 1_000_000;
const TEST_TIMEOUT: Duration = Duration::from_secs(240);
const WAIT: Duration = Duration::from_secs(60);
const PROVIDER: usize = 2;
const TENANT: usize = 1;
const HELLO: &str = include_str!("../../../manifests/examples/hello.yaml");
const A100: &str = "nvidia/a100/80Gi/sxm";

/// Daemon tests share the Docker engine and small lease ids: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Devnet {
    anvil: AnvilInstance,
    deployment: Deployment,
    rpc: DynProvider,
}

fn anvil_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/anvil")
}

impl Devnet {
    async fn start(block_time: Option<u64>) -> Self {
        let mut anvil = Anvil::at(anvil_bin());
        if let Some(seconds) = block_time {
            anvil = anvil.block_time(seconds);
        }
        let anvil = anvil.try_spawn().expect("anvil did not start");
        let rpc = ProviderBuilder::new()
            .connect_http(anvil.endpoint_url())
            .erased();
        let deployer = PrivateKeySigner::from(anvil.keys()[0].clone());
        let deploying = signing_provider(&anvil.endpoint(), deployer.clone()).expect("provider");
        let deployment = deploy_all(&deploying, deployer.address(), &DeployParams::default())
            .await
            .expect("deploy_all");
        let accounts: Vec<Address> = anvil.addresses().iter().take(8).copied().collect();
        fund_with_faucet(
            &deploying,
            deployment.token,
            deployer.address(),
            &accounts,
            U256::from(100_000 * TOKEN),
        )
        .await
        .expect("faucet");
        Self {
            anvil,
            deployment,
            rpc,
        }
    }

    fn signer(&self, index: usize) -> PrivateKeySigner {
        PrivateKeySigner::from(self.anvil.keys()[index].clone())
    }

    fn client(&self, index: usize) -> MarketplaceClient {
        MarketplaceClient::connect_http(&self.anvil.endpoint(), self.signer(index), self.deployment)
            .expect("client")
    }

    async fn balance(&self, owner: Address) -> U256 {
        self.client(0)
            .token_balance(self.deployment.token, owner)
            .await
            .expect("balanceOf")
    }
}

fn overrides(gpus: u32) -> HardwareOverrides {
    HardwareOverrides {
        cpu_millis: Some(4_000),
        memory_mib: Some(8_192),
        storage_mib: Some(20_480),
        gpus: if gpus == 0 {
            Vec::new()
        } else {
            vec![DeclaredGpu {
                model: A100.to_owned(),
                vram_mib: 81_920,
                interface: None,
                count: gpus,
            }]
        },
    }
}

/// A provider config for the devnet: data in `dir`, the gateway on a free port.
fn provider_config(devnet: &Devnet, dir: &std::path::Path, gpus: u32) -> Config {
    let hardware = Hardware::detect(dir, &overrides(gpus)).expect("hardware");
    let mut config = Config::default_for(&hardware, dir.to_path_buf());
    config.hardware = overrides(gpus);
    config.attributes = vec!["region=eu-west".to_owned()];
    config.chain.rpc_url = devnet.anvil.endpoint();
    config.chain.marketplace = devnet.deployment.marketplace.to_string();
    config.chain.registry = devnet.deployment.registry.to_string();
    config.chain.token = devnet.deployment.token.to_string();
    config.gateway.listen = "127.0.0.1:0".to_owned();
    // 0.1 core of hello.yaml costs 3.6 tokens an hour: 1,000 base units a second.
    config.pricing.cpu_core_per_hour = 36 * TOKEN;
    config.pricing.memory_gib_per_hour = 0;
    config.pricing.storage_gib_per_hour = 0;
    config.pricing.gpu_prices = format!("a100={},*={}", TOKEN, 2 * TOKEN);
    config
}

fn options() -> DaemonOptions {
    DaemonOptions {
        start_block: 0,
        confirmations: 0,
        poll_interval: Duration::from_millis(200),
        housekeeping_interval: Duration::from_secs(1),
        reconcile_interval: Duration::from_secs(3),
        withdraw_interval: Duration::from_secs(2),
        manifest_timeout_secs: 120,
        metrics_listen: Some("127.0.0.1:0".parse().expect("addr")),
        serve_gateway: true,
        remove_unknown_workloads: false,
    }
}

async fn register(devnet: &Devnet, config: &Config) {
    let hardware = Hardware::detect(&config.data_dir, &config.hardware).expect("hardware");
    devnet
        .client(PROVIDER)
        .register_provider(&provider_profile(config, &hardware))
        .await
        .expect("register");
}

async fn start(devnet: &Devnet, config: &Config) -> DaemonHandle {
    Daemon::start(config.clone(), devnet.signer(PROVIDER), options())
        .await
        .expect("daemon starts")
}

/// Polls `probe` until it returns `Some`, at most [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Removes every container and network of `leases` from the engine.
async fn remove_leases(leases: &[u64]) {
    let Ok(docker) = bollard::Docker::connect_with_local_defaults() else {
        return;
    };
    for lease_id in leases {
        let filters = HashMap::from([("label", vec![lease_selector(*lease_id)])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        for container in docker
            .list_containers(Some(options))
            .await
            .unwrap_or_default()
        {
            if let Some(id) = container.id {
                let remove = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .build();
                let _ = docker.remove_container(&id, Some(remove)).await;
            }
        }
        let _ = docker.remove_network(&lease_network_name(*lease_id)).await;
    }
}

async fn containers_of(lease_id: u64) -> Vec<String> {
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    let filters = HashMap::from([("label", vec![lease_selector(lease_id)])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let mut ids: Vec<String> = docker
        .list_containers(Some(options))
        .await
        .expect("list containers")
        .into_iter()
        .filter_map(|container| container.id)
        .collect();
    ids.sort();
    ids
}

async fn networks_of(lease_id: u64) -> usize {
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    let filters = HashMap::from([("name", vec![lease_network_name(lease_id)])]);
    let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
    docker
        .list_networks(Some(options))
        .await
        .expect("list networks")
        .into_iter()
        .filter(|network| network.name.as_deref() == Some(&lease_network_name(lease_id)))
        .count()
}

/// Runs a daemon test body with the serial lock, a time limit and lease cleanup.
async fn daemon_test<F, Fut>(leases_to_clean: std::ops::Range<u64>, body: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let _serial = SERIAL.lock().await;
    let leases: Vec<u64> = leases_to_clean.collect();
    remove_leases(&leases).await;
    let outcome = tokio::time::timeout(TEST_TIMEOUT, body()).await;
    remove_leases(&leases).await;
    outcome.expect("daemon test exceeded its time limit");
}

fn http_get(uri: &str, path: &str) -> std::io::Result<String> {
    let authority = uri.trim_start_matches("http://");
    let address: SocketAddr = authority.parse().map_err(std::io::Error::other)?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

async fn http_get_async(uri: String, path: &'static str) -> std::io::Result<String> {
    tokio::task::spawn_blocking(move || http_get(&uri, path))
        .await
        .map_err(std::io::Error::other)?
}

fn hello_order(devnet: &Devnet, deposit: u64, bid_window_secs: u64) -> (NewOrder, Vec<u8>) {
    let sdl = leasehold_manifests::parse(HELLO).expect("hello.yaml parses");
    let manifest = sdl.manifest();
    let spec = order_spec_for_group(&sdl.groups()[0]).expect("order spec");
    let order = NewOrder {
        token: devnet.deployment.token,
        spec,
        manifest_hash: B256::from(manifest.hash()),
        max_price_per_hour: U256::from(10 * TOKEN),
        deposit: U256::from(deposit),
        bid_window_secs,
    };
    (order, manifest.canonical_json().into_bytes())
}

async fn our_bid(devnet: &Devnet, order_id: u64) -> Option<u64> {
    let provider = devnet.signer(PROVIDER).address();
    devnet
        .client(0)
        .bids(order_id)
        .await
        .ok()?
        .into_iter()
        .find(|bid| bid.provider == provider)
        .map(|bid| bid.bid_id)
}

async fn lease_state(handle: &DaemonHandle, lease_id: u64) -> Option<LeaseStateKind> {
    handle
        .core()
        .store()
        .find_lease(lease_id)
        .await
        .ok()
        .flatten()
        .map(|lease| lease.state.kind())
}

/// Sends the manifest through the signed gateway client and waits for a ready workload.
async fn deliver_and_run(
    devnet: &Devnet,
    handle: &DaemonHandle,
    lease_id: u64,
    manifest: Vec<u8>,
) -> String {
    let gateway = format!("http://{}", handle.gateway_addr().expect("gateway served"));
    let mut tenant = leasehold_proto::client::SignedLeaseClient::connect(
        &gateway,
        devnet.signer(TENANT),
        Duration::from_secs(5),
    )
    .await
    .expect("gateway reachable");
    eventually("the manifest window", || async {
        (lease_state(handle, lease_id).await == Some(LeaseStateKind::AwaitingManifest))
            .then_some(())
    })
    .await;
    let mut tampered = manifest.clone();
    tampered.extend_from_slice(b" ");
    let refused = tenant.send_manifest(lease_id, tampered).await;
    assert!(
        refused.is_err_and(|error| error.to_string().contains("hash")),
        "a manifest whose hash differs is refused"
    );
    tenant
        .send_manifest(lease_id, manifest.clone())
        .await
        .expect("manifest accepted");
    // Redelivery is idempotent.
    tenant
        .send_manifest(lease_id, manifest)
        .await
        .expect("same manifest again");
    eventually("the lease to run", || async {
        (lease_state(handle, lease_id).await == Some(LeaseStateKind::Running)).then_some(())
    })
    .await;
    let status = tenant.status(lease_id).await.expect("Lease.GetStatus");
    assert_eq!(status.state, "running");
    let web = status
        .services
        .iter()
        .find(|service| service.name == "web")
        .expect("web service");
    assert_eq!((web.ready_replicas, web.total_replicas), (1, 1));
    web.uris.first().cloned().expect("a published URI")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn order_to_bid_to_running_lease_to_close_and_payment() {
    daemon_test(0..4, || async {
        let devnet = Devnet::start(Some(1)).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = provider_config(&devnet, dir.path(), 0);
        register(&devnet, &config).await;
        let handle = start(&devnet, &config).await;
        let tenant = devnet.client(TENANT);

        // (a) a bid within two blocks of the order.
        let (order, manifest) = hello_order(&devnet, 1_000 * TOKEN, 3_600);
        let posted = tenant.create_order(&order).await.expect("createOrder");
        let bid_id = eventually("our bid", || our_bid(&devnet, posted.order_id)).await;
        let logs = devnet
            .rpc
            .get_logs(
                &Filter::new()
                    .address(devnet.deployment.marketplace)
                    .from_block(0),
            )
            .await
            .expect("logs");
        let block_of = |signature: B256| {
            logs.iter()
                .find(|log| log.topic0() == Some(&signature))
                .and_then(|log| log.block_number)
                .expect("event block")
        };
        let order_block = block_of(Marketplace::OrderCreated::SIGNATURE_HASH);
        let bid_block = block_of(Marketplace::BidPlaced::SIGNATURE_HASH);
        assert!(
            bid_block <= order_block + 2,
            "bid in block {bid_block}, order in block {order_block}"
        );
        let bids = tenant.bids(posted.order_id).await.expect("bids");
        assert_eq!(bids[0].price_per_hour, U256::from(3_600_000u64));
        assert!(
            handle
                .core()
                .capacity_report()
                .expect("report")
                .reserved
                .cpu_millis
                >= 100
        );

        // (b) the lease runs with the requested limits and answers HTTP.
        let lease = tenant
            .accept_bid(posted.order_id, bid_id)
            .await
            .expect("acceptBid");
        let lease_id = lease.lease_id;
        let uri = deliver_and_run(&devnet, &handle, lease_id, manifest).await;
        let response = eventually("the URI to answer", || {
            let uri = uri.clone();
            async move {
                http_get_async(uri, "/")
                    .await
                    .ok()
                    .filter(|r| r.contains(" 200"))
            }
        })
        .await;
        assert!(response.contains("hello from leasehold"), "{response}");
        let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
        let info = docker
            .inspect_container(&replica_name(lease_id, "web", 0), None)
            .await
            .expect("inspect");
        let host = info.host_config.expect("host config");
        assert_eq!(host.nano_cpus, Some(100_000_000));
        assert_eq!(host.memory, Some(64 * 1024 * 1024));
        assert!(host.pids_limit.is_some_and(|limit| limit > 0));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_owned()])
        );
        let report = handle.core().capacity_report().expect("report");
        assert_eq!(report.allocated.cpu_millis, 100);
        assert_eq!(report.reserved.cpu_millis, 0);

        let metrics_addr = handle.metrics_addr().expect("metrics served").to_string();
        let metrics = http_get_async(format!("http://{metrics_addr}"), "/metrics")
            .await
            .expect("metrics");
        assert!(
            metrics.contains("leasehold_leases{state=\"running\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("leasehold_bids_placed_total 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("leasehold_cpu_millis{ledger=\"allocated\"} 100"),
            "{metrics}"
        );

        // (e, in process) a restarted daemon keeps the running containers as they are.
        let before = containers_of(lease_id).await;
        assert_eq!(before.len(), 1);
        handle.shutdown().await;
        let handle = start(&devnet, &config).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(
            containers_of(lease_id).await,
            before,
            "no container replaced"
        );
        assert_eq!(
            lease_state(&handle, lease_id).await,
            Some(LeaseStateKind::Running)
        );
        assert_eq!(
            handle
                .core()
                .capacity_report()
                .expect("report")
                .allocated
                .cpu_millis,
            100,
            "the allocation survives the restart"
        );

        // Withdrawals arrive while it runs.
        let provider = devnet.signer(PROVIDER).address();
        let staked_balance = devnet.balance(provider).await;
        eventually("a withdrawal", || async {
            (devnet.balance(provider).await > staked_balance).then_some(())
        })
        .await;

        // (c) the tenant closes: containers and network go, the allocation is freed.
        // A provider withdrawal mined in the same block can outdate the gas estimate
        // (TxFailed); the close is then simply sent again.
        let mut attempts = 0;
        while let Err(error) = tenant
            .close_lease(lease_id, CloseReason::TenantRequest)
            .await
        {
            attempts += 1;
            assert!(attempts < 3, "closeLease: {error}");
            assert!(
                devnet
                    .client(0)
                    .lease(lease_id)
                    .await
                    .expect("lease")
                    .active
            );
        }
        eventually("the lease to close", || async {
            (lease_state(&handle, lease_id).await == Some(LeaseStateKind::Closed)).then_some(())
        })
        .await;
        assert!(containers_of(lease_id).await.is_empty());
        assert_eq!(networks_of(lease_id).await, 0);
        let report = handle.core().capacity_report().expect("report");
        assert_eq!(report.allocated.cpu_millis, 0);
        assert_eq!(report.reserved.cpu_millis, 0);

        // A workload of a closed lease that reappears is removed by the reconciler.
        let manifest = leasehold_manifests::parse(HELLO).expect("hello").manifest();
        let tenant_address = devnet.signer(TENANT).address().to_string().to_lowercase();
        let stray = leasehold_provider::deployment::lease_deployment(
            lease_id,
            &tenant_address,
            &manifest,
            &manifest.groups[0].name,
            &[],
        )
        .expect("deployment");
        handle
            .core()
            .runtime()
            .deploy(&stray)
            .await
            .expect("stray deploy");
        assert_eq!(containers_of(lease_id).await.len(), 1);
        handle.core().reconcile().await.expect("reconcile");
        assert!(
            containers_of(lease_id).await.is_empty(),
            "stray workload removed"
        );
        handle.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_insolvent_lease_is_closed_and_torn_down() {
    daemon_test(0..4, || async {
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = provider_config(&devnet, dir.path(), 0);
        register(&devnet, &config).await;
        let handle = start(&devnet, &config).await;
        let tenant = devnet.client(TENANT);
        // One hour of escrow at 3.6 tokens an hour.
        let (order, manifest) = hello_order(&devnet, 3_600_000, 3_600);
        let posted = tenant.create_order(&order).await.expect("createOrder");
        let bid_id = eventually("our bid", || our_bid(&devnet, posted.order_id)).await;
        let lease_id = tenant
            .accept_bid(posted.order_id, bid_id)
            .await
            .expect("acceptBid")
            .lease_id;
        deliver_and_run(&devnet, &handle, lease_id, manifest).await;
        assert_eq!(containers_of(lease_id).await.len(), 1);

        devnet
            .rpc
            .anvil_increase_time(2 * 3_600)
            .await
            .expect("increase time");
        devnet.rpc.evm_mine(None).await.expect("mine");
        eventually("the insolvent lease to close", || async {
            (lease_state(&handle, lease_id).await == Some(LeaseStateKind::Closed)).then_some(())
        })
        .await;
        let record = handle.core().store().lease(lease_id).await.expect("lease");
        assert_eq!(record.state.reason().as_deref(), Some("insolvent"));
        assert!(containers_of(lease_id).await.is_empty());
        assert!(
            !devnet
                .client(0)
                .lease(lease_id)
                .await
                .expect("lease")
                .active
        );
        assert_eq!(
            handle
                .core()
                .capacity_report()
                .expect("report")
                .allocated
                .cpu_millis,
            0
        );
        assert_eq!(handle.core().metrics().insolvent_closes.get(), 1);
        handle.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_gpu_orders_never_exceed_four_gpus() {
    daemon_test(0..0, || async {
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = provider_config(&devnet, dir.path(), 4);
        register(&devnet, &config).await;
        let handle = start(&devnet, &config).await;
        let spec = OrderSpec {
            group_name: leasehold_contracts::group_name_key("gpu"),
            resources: Resources {
                cpu_milli: 100,
                memory_mib: 64,
                storage_mib: 64,
            },
            gpu_count: 1,
            replicas: 1,
            requirements: OrderRequirements {
                allowed_gpu_models: vec![gpu_model_key(A100)],
                required_attributes: Vec::new(),
            },
        };
        let order = NewOrder {
            token: devnet.deployment.token,
            spec,
            manifest_hash: B256::repeat_byte(7),
            max_price_per_hour: U256::from(100 * TOKEN),
            deposit: U256::from(10 * TOKEN),
            bid_window_secs: 3_600,
        };
        // Four tenants post five orders each at the same time.
        let posting = (0..4).map(|tenant| {
            let client = devnet.client(3 + tenant);
            let order = order.clone();
            async move {
                let mut ids = Vec::new();
                for _ in 0..5 {
                    ids.push(
                        client
                            .create_order(&order)
                            .await
                            .expect("createOrder")
                            .order_id,
                    );
                }
                ids
            }
        });
        let order_ids: Vec<u64> = futures_util::future::join_all(posting)
            .await
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(order_ids.len(), 20);
        let metrics = handle.core().metrics();
        eventually("every order to be considered", || async {
            (metrics.bids_placed.get() + metrics.bids_skipped.get() >= 20).then_some(())
        })
        .await;
        let provider = devnet.signer(PROVIDER).address();
        let mut gpus_bid = 0u32;
        for order_id in &order_ids {
            for bid in devnet.client(0).bids(*order_id).await.expect("bids") {
                if bid.provider == provider {
                    assert_eq!(
                        bid.gpu_model,
                        gpu_model_key(A100),
                        "the bid names the model"
                    );
                    gpus_bid += 1;
                }
            }
        }
        assert_eq!(gpus_bid, 4, "exactly the four GPUs were bid, never more");
        let report = handle.core().capacity_report().expect("report");
        assert_eq!((report.gpus_capacity, report.gpus_reserved), (4, 4));
        assert_eq!(metrics.bids_skipped.get(), 16);

        // A cancelled order gives its GPU back, and a restarted daemon restores the rest.
        let bid_order = {
            let mut found = None;
            for order_id in &order_ids {
                if our_bid(&devnet, *order_id).await.is_some() {
                    found = Some(*order_id);
                    break;
                }
            }
            found.expect("an order we bid on")
        };
        let owner = devnet
            .client(0)
            .order(bid_order)
            .await
            .expect("order")
            .tenant;
        let index = (3..7)
            .find(|index| devnet.signer(*index).address() == owner)
            .expect("a tenant index");
        devnet
            .client(index)
            .cancel_order(bid_order)
            .await
            .expect("cancelOrder");
        eventually("the reservation to be released", || async {
            (handle.core().capacity_report().ok()?.gpus_reserved == 3).then_some(())
        })
        .await;
        handle.shutdown().await;
        let handle = start(&devnet, &config).await;
        assert_eq!(
            handle
                .core()
                .capacity_report()
                .expect("report")
                .gpus_reserved,
            3,
            "reservations survive a restart"
        );
        handle.shutdown().await;
    })
    .await;
}

/// The `provider` binary, killed with SIGKILL when dropped.
struct DaemonProcess(std::process::Child);

impl DaemonProcess {
    fn spawn(devnet: &Devnet, config_path: &std::path::Path) -> Self {
        let key = format!(
            "0x{}",
            alloy::hex::encode(devnet.signer(PROVIDER).to_bytes())
        );
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_provider"))
            .args(["--config"])
            .arg(config_path)
            .args(["run", "--confirmations", "0", "--keep-unknown-workloads"])
            .env("LEASEHOLD_PROVIDER_KEY", key)
            .env("LEASEHOLD_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("provider binary starts");
        Self(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

async fn tenant_client(
    devnet: &Devnet,
    gateway: &str,
) -> leasehold_proto::client::SignedLeaseClient {
    eventually("the gateway to answer", || async {
        leasehold_proto::client::SignedLeaseClient::connect(
            gateway,
            devnet.signer(TENANT),
            Duration::from_secs(2),
        )
        .await
        .ok()
    })
    .await
}

async fn lease_state_on(
    tenant: &mut leasehold_proto::client::SignedLeaseClient,
    lease_id: u64,
) -> Option<(String, Vec<String>)> {
    let status = tenant.status(lease_id).await.ok()?;
    let uris = status
        .services
        .iter()
        .filter(|service| service.ready_replicas == service.total_replicas)
        .flat_map(|service| service.uris.clone())
        .collect();
    Some((status.state, uris))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_dash_nine_and_restart_keeps_running_leases_and_misses_nothing() {
    daemon_test(0..4, || async {
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = provider_config(&devnet, dir.path(), 0);
        config.gateway.listen = format!("127.0.0.1:{}", free_port());
        register(&devnet, &config).await;
        let config_path = dir.path().join("provider.toml");
        std::fs::write(&config_path, config.to_toml_string().expect("toml")).expect("write");
        let gateway = format!("http://{}", config.gateway.listen);
        let tenant = devnet.client(TENANT);

        let mut daemon = DaemonProcess::spawn(&devnet, &config_path);
        let mut signed = tenant_client(&devnet, &gateway).await;
        let (order, manifest) = hello_order(&devnet, 1_000 * TOKEN, 3_600);
        let mut leases = Vec::new();
        for _ in 0..2 {
            let posted = tenant.create_order(&order).await.expect("createOrder");
            let bid_id = eventually("our bid", || our_bid(&devnet, posted.order_id)).await;
            let lease = tenant
                .accept_bid(posted.order_id, bid_id)
                .await
                .expect("acceptBid");
            leases.push(lease.lease_id);
        }
        let (running, deploying) = (leases[0], leases[1]);
        for lease_id in &leases {
            eventually("the manifest window", || {
                let mut signed = signed.clone();
                async move {
                    let (state, _) = lease_state_on(&mut signed, *lease_id).await?;
                    (state == "awaiting_manifest").then_some(())
                }
            })
            .await;
        }
        signed
            .send_manifest(running, manifest.clone())
            .await
            .expect("manifest");
        eventually("the first lease to run", || {
            let mut signed = signed.clone();
            async move {
                let (state, uris) = lease_state_on(&mut signed, running).await?;
                (state == "running" && !uris.is_empty()).then_some(())
            }
        })
        .await;
        let running_containers = containers_of(running).await;
        assert_eq!(running_containers.len(), 1);

        // The second manifest lands and the daemon dies while it deploys.
        signed
            .send_manifest(deploying, manifest.clone())
            .await
            .expect("manifest");
        daemon.kill();
        let store = leasehold_provider::store::Store::connect(&config.database_url())
            .await
            .expect("store");
        let at_kill = store.lease(deploying).await.expect("lease").state.kind();
        store.close().await;
        eprintln!("second lease was {at_kill} when the daemon was killed");
        assert!(
            matches!(at_kill, LeaseStateKind::Deploying | LeaseStateKind::Running),
            "{at_kill}"
        );

        // A chain event while the daemon is down.
        let missed = tenant.create_order(&order).await.expect("createOrder");

        let _daemon = DaemonProcess::spawn(&devnet, &config_path);
        // The same client again: a fresh one could sign a call identical to one already
        // made in the same second, which the provider rightly refuses as a replay.
        eventually("the restarted gateway", || async {
            leasehold_proto::client::ProviderClient::connect(&gateway, Duration::from_secs(2))
                .await
                .ok()
        })
        .await;
        eventually("the interrupted deploy to finish", || {
            let mut signed = signed.clone();
            async move {
                let (state, uris) = lease_state_on(&mut signed, deploying).await?;
                (state == "running" && !uris.is_empty()).then_some(())
            }
        })
        .await;
        eventually("a bid on the order posted while down", || {
            our_bid(&devnet, missed.order_id)
        })
        .await;
        assert_eq!(
            containers_of(running).await,
            running_containers,
            "the running lease keeps its containers"
        );
        assert_eq!(
            containers_of(deploying).await.len(),
            1,
            "nothing duplicated"
        );
        let (state, uris) = lease_state_on(&mut signed, running).await.expect("status");
        assert_eq!(state, "running");
        let response = http_get_async(uris[0].clone(), "/").await.expect("GET");
        assert!(response.contains(" 200"), "{response}");

        // `provider status` asks the gateway.
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_provider"))
            .args(["status", "--output", "json", "--gateway", &gateway])
            .output()
            .expect("provider status runs");
        assert!(status.status.success(), "{status:?}");
        let status: serde_json::Value =
            serde_json::from_slice(&status.stdout).expect("status is JSON");
        assert_eq!(status["active_leases"], 2);
        assert_eq!(status["allocated"]["cpu_milli"], 200);
        assert_eq!(
            status["address"].as_str().map(str::to_lowercase),
            Some(devnet.signer(PROVIDER).address().to_string().to_lowercase())
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_manifest_that_never_comes_closes_the_lease() {
    daemon_test(0..4, || async {
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = provider_config(&devnet, dir.path(), 0);
        register(&devnet, &config).await;
        let handle = Daemon::start(
            config.clone(),
            devnet.signer(PROVIDER),
            DaemonOptions {
                manifest_timeout_secs: 2,
                ..options()
            },
        )
        .await
        .expect("daemon starts");
        let tenant = devnet.client(TENANT);
        let (order, _) = hello_order(&devnet, 1_000 * TOKEN, 3_600);
        let posted = tenant.create_order(&order).await.expect("createOrder");
        let bid_id = eventually("our bid", || our_bid(&devnet, posted.order_id)).await;
        let lease_id = tenant
            .accept_bid(posted.order_id, bid_id)
            .await
            .expect("acceptBid")
            .lease_id;
        eventually("the overdue lease to close", || async {
            (lease_state(&handle, lease_id).await == Some(LeaseStateKind::Closed)).then_some(())
        })
        .await;
        let record = handle.core().store().lease(lease_id).await.expect("lease");
        assert_eq!(record.state.reason().as_deref(), Some("manifest_timeout"));
        assert!(!tenant.lease(lease_id).await.expect("lease").active);
        assert_eq!(
            handle
                .core()
                .capacity_report()
                .expect("report")
                .allocated
                .cpu_millis,
            0
        );
        handle.shutdown().await;
    })
    .await;
}

#[test]
fn init_writes_a_config_and_every_command_has_an_example() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("provider.toml");
    let init = std::process::Command::new(env!("CARGO_BIN_EXE_provider"))
        .arg("--config")
        .arg(&config)
        .args(["--output", "json", "init", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .expect("provider init runs");
    assert!(init.status.success(), "{init:?}");
    let printed: serde_json::Value = serde_json::from_slice(&init.stdout).expect("JSON");
    assert!(
        printed["hardware"]["cpu_millis"]
            .as_u64()
            .is_some_and(|c| c > 0)
    );
    let text = std::fs::read_to_string(&config).expect("config written");
    assert!(text.contains("[pricing]"), "{text}");
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_provider"))
        .arg("--config")
        .arg(&config)
        .arg("init")
        .output()
        .expect("provider init runs");
    assert!(
        !again.status.success(),
        "an existing config is not overwritten"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    for command in [
        "init",
        "register",
        "run",
        "status",
        "withdraw",
        "deregister",
    ] {
        let help = std::process::Command::new(env!("CARGO_BIN_EXE_provider"))
            .args([command, "--help"])
            .output()
            .expect("help runs");
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(text.contains("Example:"), "{command}: {text}");
        assert!(text.contains("--output"), "{command}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_and_expired_bids_give_their_reservations_back() {
    daemon_test(0..0, || async {
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = provider_config(&devnet, dir.path(), 0);
        register(&devnet, &config).await;
        let rival = devnet.client(4);
        let hardware = Hardware::detect(dir.path(), &overrides(0)).expect("hardware");
        let mut rival_profile = provider_profile(&config, &hardware);
        rival_profile.endpoint = "http://rival.example:8443".to_owned();
        rival
            .register_provider(&rival_profile)
            .await
            .expect("rival registers");
        let handle = start(&devnet, &config).await;
        let tenant = devnet.client(TENANT);
        let reserved = || async {
            handle
                .core()
                .capacity_report()
                .expect("report")
                .reserved
                .cpu_millis
        };

        // Lost: the tenant takes the rival's bid.
        let (order, _) = hello_order(&devnet, 100 * TOKEN, 3_600);
        let lost = tenant.create_order(&order).await.expect("createOrder");
        eventually("our bid", || our_bid(&devnet, lost.order_id)).await;
        assert_eq!(reserved().await, 100);
        let requirements = devnet
            .client(0)
            .order_posted(lost.order_id)
            .await
            .expect("order")
            .spec
            .requirements;
        let rival_bid = rival
            .place_bid(lost.order_id, U256::from(TOKEN), None, &requirements)
            .await
            .expect("rival bids");
        tenant
            .accept_bid(lost.order_id, rival_bid)
            .await
            .expect("acceptBid");
        eventually("the lost reservation to go", || async {
            (reserved().await == 0).then_some(())
        })
        .await;
        assert!(
            handle
                .core()
                .store()
                .reservation(lost.order_id)
                .await
                .expect("store")
                .is_none()
        );

        // Expired: nobody accepts within the reservation timeout; the bid is withdrawn.
        handle.shutdown().await;
        config.bid.reservation_timeout_secs = 3;
        config.bid.bid_timeout_secs = 1;
        let handle = start(&devnet, &config).await;
        let reserved = || async {
            handle
                .core()
                .capacity_report()
                .expect("report")
                .reserved
                .cpu_millis
        };
        let expired = tenant.create_order(&order).await.expect("createOrder");
        let bid_id = eventually("our bid", || our_bid(&devnet, expired.order_id)).await;
        assert_eq!(reserved().await, 100);
        eventually("the bid to be withdrawn", || async {
            let bids = devnet.client(0).bids(expired.order_id).await.ok()?;
            bids.get(usize::try_from(bid_id).ok()?)?
                .withdrawn
                .then_some(())
        })
        .await;
        assert_eq!(reserved().await, 0);
        handle.shutdown().await;
    })
    .await;
}

fn provider_command(
    devnet: &Devnet,
    config_path: &std::path::Path,
    args: &[&str],
) -> serde_json::Value {
    let key = format!(
        "0x{}",
        alloy::hex::encode(devnet.signer(PROVIDER).to_bytes())
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_provider"))
        .arg("--config")
        .arg(config_path)
        .args(["--output", "json"])
        .args(args)
        .env("LEASEHOLD_PROVIDER_KEY", key)
        .env("LEASEHOLD_LOG", "error")
        .output()
        .expect("provider runs");
    assert!(output.status.success(), "{args:?}: {output:?}");
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_withdraw_and_deregister_through_the_binary() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = provider_config(&devnet, dir.path(), 2);
        let config_path = dir.path().join("provider.toml");
        std::fs::write(&config_path, config.to_toml_string().expect("toml")).expect("write");
        let registered = provider_command(&devnet, &config_path, &["register"]);
        assert_eq!(registered["profile"]["capacity"]["cpu_milli"], 4_000);
        let info = devnet
            .client(0)
            .provider_info(devnet.signer(PROVIDER).address())
            .await
            .expect("provider info");
        assert_eq!(info.status, leasehold_contracts::ProviderStatus::Active);
        assert_eq!(info.capacity.memory_mib, 8_192);
        assert_eq!(info.gpus.len(), 1);
        assert_eq!(info.gpus[0].model_key, gpu_model_key(A100));
        assert_eq!(info.gpus[0].capacity, 2);
        assert_eq!(
            info.attributes,
            vec![alloy::primitives::keccak256("region=eu-west")]
        );
        let collected = provider_command(&devnet, &config_path, &["withdraw"]);
        assert_eq!(collected["withdrawals"], serde_json::json!([]));
        let deregistered = provider_command(&devnet, &config_path, &["deregister"]);
        assert!(
            deregistered["unbonding_ends"]
                .as_u64()
                .is_some_and(|t| t > 0)
        );
        let info = devnet
            .client(0)
            .provider_info(devnet.signer(PROVIDER).address())
            .await
            .expect("provider info");
        assert_eq!(info.status, leasehold_contracts::ProviderStatus::Unbonding);
    })
    .await
    .expect("test exceeded its time limit");
}

/// `kind = "kubernetes"` in the config is the only difference: the daemon connects
/// through the kubeconfig, builds its inventory from the cluster's schedulable nodes
/// (skipping cordoned ones) and reports later drift in `/metrics`. The cluster is the
/// in-process fake API server, not a real one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_runtime_builds_the_inventory_from_the_cluster_nodes() {
    use crate::runtime_kubernetes::fake_api_server::FakeApiServer;
    use leasehold_provider::config::RuntimeKind;
    use serde_json::json;

    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let cluster = FakeApiServer::start().await;
        let node = |name: &str, cpu: &str, cordoned: bool| {
            json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {}},
                "spec": {"unschedulable": cordoned},
                "status": {
                    "allocatable": {"cpu": cpu, "memory": "16Gi", "ephemeral-storage": "100Gi"},
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "addresses": [{"type": "InternalIP", "address": "10.0.0.9"}],
                },
            })
        };
        cluster.insert("/api/v1/nodes/worker-1", node("worker-1", "8", false));
        cluster.insert("/api/v1/nodes/worker-2", node("worker-2", "4", false));
        cluster.insert("/api/v1/nodes/drained", node("drained", "64", true));

        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig.yaml");
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
        let mut config = provider_config(&devnet, dir.path(), 0);
        config.runtime.kind = RuntimeKind::Kubernetes;
        config.runtime.kubernetes.kubeconfig = Some(kubeconfig);
        register(&devnet, &config).await;
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
        cluster.insert("/api/v1/nodes/worker-3", node("worker-3", "2", false));
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
