//! The daemon end to end, in process: real anvil, real contracts, real Docker, the real
//! gateway. Daemon tests run one at a time (they share lease ids on the one Docker
//! engine), every wait is bounded, and containers are removed by lease label at the end
//! even when a test fails.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;
use bollard::query_parameters::{ListContainersOptionsBuilder, ListNetworksOptionsBuilder};
use leasehold_contracts::bindings::Marketplace;
use leasehold_contracts::devnet::{Devnet as ChainDevnet, DevnetConfig, ONE_TOKEN as TOKEN};
use leasehold_contracts::{
    CloseReason, MarketplaceClient, NewOrder, OrderRequirements, OrderSpec, Resources,
};
use leasehold_proto::tls::GatewayPin;
use leasehold_provider::chain::provider_profile;
use leasehold_provider::config::Config;
use leasehold_provider::daemon::queue::RetryPolicy;
use leasehold_provider::daemon::{Daemon, DaemonHandle, DaemonOptions};
use leasehold_provider::deployment::{gpu_model_key, order_spec_for_group};
use leasehold_provider::gateway::GatewayIdentity;
use leasehold_provider::hardware::{DeclaredGpu, Hardware, HardwareOverrides};
use leasehold_provider::lease::LeaseStateKind;

use crate::private_registry::{self, PrivateRegistry};
use crate::rpc_fault::FaultyRpc;
use leasehold_provider::runtime::lease_selector;

mod auto_accept;
mod cluster;
mod ingress;
mod pre_lease;
mod reorg;

const TEST_TIMEOUT: Duration = Duration::from_secs(240);
const WAIT: Duration = Duration::from_secs(60);
const PROVIDER: usize = 2;
const TENANT: usize = 1;
const HELLO: &str = include_str!("../../../manifests/examples/hello.yaml");
const A100: &str = "nvidia/a100/80Gi/sxm";

/// Daemon tests share the Docker engine and small lease ids: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The contracts crate's devnet, with accessors that fail the test instead of returning errors.
struct Devnet {
    chain: ChainDevnet,
}

impl std::ops::Deref for Devnet {
    type Target = ChainDevnet;

    fn deref(&self) -> &ChainDevnet {
        &self.chain
    }
}

impl Devnet {
    async fn start(block_time: Option<u64>) -> Self {
        let chain = ChainDevnet::start_with(DevnetConfig {
            block_time,
            funded_accounts: 8,
            ..DevnetConfig::default()
        })
        .await
        .expect("devnet");
        Self { chain }
    }

    fn signer(&self, index: usize) -> PrivateKeySigner {
        self.chain.signer(index).expect("dev account")
    }

    fn client(&self, index: usize) -> MarketplaceClient {
        self.chain.client(index).expect("client")
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
    // The tests post one-hour bid windows; a provider bids only on windows its reservation
    // outlasts (with the tenant's grace), so hold reservations longer than that.
    config.bid.reservation_timeout_secs = 2 * 3_600;
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
        max_deploy_attempts: 3,
        metrics_listen: Some("127.0.0.1:0".parse().expect("addr")),
        serve_gateway: true,
        remove_unknown_workloads: false,
        retry: RetryPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(2),
        },
        ..DaemonOptions::default()
    }
}

async fn register(devnet: &Devnet, config: &Config) {
    let hardware = Hardware::detect(&config.data_dir, &config.hardware).expect("hardware");
    devnet
        .client(PROVIDER)
        .register_provider(&provider_profile(
            config,
            &hardware,
            GatewayIdentity::load_or_create(&config.data_dir)
                .expect("gateway certificate")
                .cert_sha256(),
        ))
        .await
        .expect("register");
}

/// The pin a tenant reads from the chain for PROVIDER's gateway.
async fn gateway_pin(devnet: &Devnet) -> GatewayPin {
    let provider = devnet.signer(PROVIDER).address();
    let registration = devnet
        .client(TENANT)
        .provider_info(provider)
        .await
        .expect("registration");
    GatewayPin {
        provider: Some(provider),
        cert_sha256: registration.gateway_cert_sha256,
    }
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
        for id in lease_network_ids(&docker, *lease_id).await {
            let _ = docker.remove_network(&id).await;
        }
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

/// Networks of the lease (any daemon's scope: the tests' lease ids are their own).
async fn lease_network_ids(docker: &bollard::Docker, lease_id: u64) -> Vec<String> {
    let filters = HashMap::from([("label", vec![lease_selector(lease_id)])]);
    let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
    docker
        .list_networks(Some(options))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|network| network.id)
        .collect()
}

async fn networks_of(lease_id: u64) -> usize {
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    lease_network_ids(&docker, lease_id).await.len()
}

/// Runs a daemon test body with the serial lock, a time limit and lease cleanup.
async fn daemon_test<F, Fut>(leases_to_clean: std::ops::Range<u64>, body: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let _serial = SERIAL.lock().await;
    // `LEASEHOLD_TEST_LOG=info` (or any tracing level) shows the daemons' logs, for a flow
    // that failed; run with `--nocapture`.
    if let Some(level) = std::env::var("LEASEHOLD_TEST_LOG")
        .ok()
        .and_then(|level| level.parse::<tracing::Level>().ok())
    {
        let _ = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .try_init();
    }
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
    sdl_order(devnet, HELLO, deposit, bid_window_secs)
}

/// The order and canonical manifest of a one-group SDL.
fn sdl_order(
    devnet: &Devnet,
    sdl_text: &str,
    deposit: u64,
    bid_window_secs: u64,
) -> (NewOrder, Vec<u8>) {
    let sdl = leasehold_manifests::parse(sdl_text).expect("the SDL parses");
    let manifest = sdl.manifest();
    let spec = order_spec_for_group(&sdl.groups()[0]).expect("order spec");
    let order = NewOrder {
        token: devnet.deployment.token,
        spec,
        manifest_hash: B256::from(manifest.hash()),
        max_price_per_hour: U256::from(10 * TOKEN),
        deposit: U256::from(deposit),
        bid_window_secs,
        delivery_window_secs: leasehold_contracts::DEFAULT_DELIVERY_WINDOW_SECS,
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
    let gateway = handle.gateway_addr().expect("gateway served").to_string();
    let mut tenant = leasehold_proto::client::SignedLeaseClient::connect(
        &gateway,
        gateway_pin(devnet).await,
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
    // `Running` means deployed: Docker's container runs by then, a Kubernetes pod may still
    // be starting (the lease is confirmed on chain only once it is ready).
    let started = std::time::Instant::now();
    loop {
        let status = tenant.status(lease_id).await.expect("Lease.GetStatus");
        assert_eq!(status.state, "running");
        let web = status
            .services
            .iter()
            .find(|service| service.name == "web")
            .expect("web service");
        if (web.ready_replicas, web.total_replicas) == (1, 1) {
            return web.uris.first().cloned().expect("a published URI");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "web not ready: {web:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
        // (b') every replica runs, so the daemon confirmed the delivery on chain: payment
        // accrues from the confirmation, which the history records.
        let confirmed = eventually("the delivery confirmation on chain", || async {
            tenant
                .lease(lease_id)
                .await
                .ok()
                .filter(|lease| lease.confirmed)
        })
        .await;
        assert!(confirmed.started_at > 0);
        let record = tenant
            .provider_info(devnet.signer(PROVIDER).address())
            .await
            .expect("provider");
        assert_eq!(
            (record.deliveries_confirmed, record.deliveries_failed),
            (1, 0)
        );
        // The daemon writes its history once the confirmation's receipt is in, which can be
        // a moment after the chain shows it.
        eventually("the confirmation in the lease's history", || async {
            handle
                .core()
                .store()
                .history(lease_id)
                .await
                .ok()?
                .iter()
                .any(|entry| entry.kind == "confirmed")
                .then_some(())
        })
        .await;
        let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
        let web = containers_of(lease_id).await;
        assert_eq!(web.len(), 1, "one replica");
        let info = docker
            .inspect_container(&web[0], None)
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
        // Every transaction went through the journaled lane, and each was mined as sent.
        assert!(
            metrics.contains("leasehold_tx_replaced_total 0"),
            "{metrics}"
        );
        assert!(
            metrics.contains("leasehold_tx_fee_cap_exceeded_total 0"),
            "{metrics}"
        );
        assert!(
            metrics.contains("leasehold_account_balance_wei ")
                && !metrics.contains("leasehold_account_balance_wei 0\n"),
            "{metrics}"
        );
        let account = handle
            .core()
            .chain()
            .address()
            .to_string()
            .to_ascii_lowercase();
        let journal = handle.core().store();
        let sent = journal.sent_transactions(&account).await.expect("journal");
        let purposes: Vec<&str> = sent.iter().map(|tx| tx.purpose.as_str()).collect();
        assert!(purposes.contains(&"placeBid"), "{purposes:?}");
        assert!(purposes.contains(&"confirmLease"), "{purposes:?}");
        assert!(
            journal
                .unsettled_transactions(&account)
                .await
                .expect("journal")
                .is_empty(),
            "{sent:?}"
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

        // The restarted gateway serves the certificate the chain pins.
        let metrics_of = |handle: &DaemonHandle| {
            let addr = handle.metrics_addr().expect("metrics served").to_string();
            async move {
                http_get_async(format!("http://{addr}"), "/metrics")
                    .await
                    .expect("metrics")
            }
        };
        assert!(
            metrics_of(&handle)
                .await
                .contains("leasehold_gateway_cert_mismatch 0")
        );
        let connect = |handle: &DaemonHandle| {
            let gateway = handle.gateway_addr().expect("gateway").to_string();
            let devnet = &devnet;
            async move {
                leasehold_proto::client::SignedLeaseClient::connect(
                    &gateway,
                    gateway_pin(devnet).await,
                    devnet.signer(TENANT),
                    Duration::from_secs(5),
                )
                .await
            }
        };
        connect(&handle)
            .await
            .expect("the same certificate after a restart");

        // A rotated certificate the chain does not pin yet: the daemon says so and a
        // tenant refuses the gateway; once `update` publishes it, it is accepted.
        handle.shutdown().await;
        let rotated = GatewayIdentity::rotate(&config.data_dir).expect("rotate");
        let handle = start(&devnet, &config).await;
        assert!(
            metrics_of(&handle)
                .await
                .contains("leasehold_gateway_cert_mismatch 1")
        );
        match connect(&handle).await {
            Err(leasehold_proto::client::ClientError::CertificateMismatch {
                presented, ..
            }) => {
                assert_eq!(presented, rotated.cert_sha256());
            }
            other => panic!("expected a certificate mismatch, got {:?}", other.err()),
        }
        let hardware = Hardware::detect(&config.data_dir, &config.hardware).expect("hardware");
        devnet
            .client(PROVIDER)
            .update_provider(&provider_profile(&config, &hardware, rotated.cert_sha256()))
            .await
            .expect("update");
        connect(&handle)
            .await
            .expect("the rotated certificate once the chain pins it");

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

/// The controller's promise on a real chain: one order whose `placeBid` keeps failing (the
/// node answers its calls with an error) is retried with backoff on its own key, while a
/// later order is bid on, leased, run and closed on time; once the node recovers, the
/// failing order gets its bid too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bid_that_keeps_failing_delays_only_its_own_order() {
    daemon_test(0..4, || async {
        let devnet = Devnet::start(Some(1)).await;
        let node = FaultyRpc::start(&devnet.endpoint()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = provider_config(&devnet, dir.path(), 0);
        config.chain.rpc_url = node.url();
        register(&devnet, &config).await;
        let tenant = devnet.client(TENANT);
        let (order, manifest) = hello_order(&devnet, 1_000 * TOKEN, 3_600);
        let failing = tenant.create_order(&order).await.expect("createOrder");
        node.fail_bids_on(failing.order_id);
        let handle = Daemon::start(
            config.clone(),
            devnet.signer(PROVIDER),
            DaemonOptions {
                max_bid_attempts: 1_000,
                ..options()
            },
        )
        .await
        .expect("daemon starts");

        let started = tokio::time::Instant::now();
        let healthy = tenant.create_order(&order).await.expect("createOrder");
        let bid_id = eventually("a bid on the healthy order", || {
            our_bid(&devnet, healthy.order_id)
        })
        .await;
        let lease_id = tenant
            .accept_bid(healthy.order_id, bid_id)
            .await
            .expect("acceptBid")
            .lease_id;
        let uri = deliver_and_run(&devnet, &handle, lease_id, manifest).await;
        eventually("the URI to answer", || {
            let uri = uri.clone();
            async move {
                http_get_async(uri, "/")
                    .await
                    .ok()
                    .filter(|r| r.contains(" 200"))
            }
        })
        .await;
        tenant
            .close_lease(lease_id, CloseReason::TenantRequest)
            .await
            .expect("closeLease");
        eventually("the closed lease to be torn down", || async {
            (lease_state(&handle, lease_id).await == Some(LeaseStateKind::Closed)
                && containers_of(lease_id).await.is_empty())
            .then_some(())
        })
        .await;
        let healthy_took = started.elapsed();
        assert!(
            healthy_took < Duration::from_secs(45),
            "the healthy lease took {healthy_took:?}"
        );

        // All the while the failing order was retried, with backoff, and never bid on.
        let refused = node.refused();
        assert!(refused >= 3, "placeBid attempts refused: {refused}");
        assert!(
            refused < 100,
            "retries back off instead of spinning: {refused}"
        );
        assert_eq!(our_bid(&devnet, failing.order_id).await, None);
        assert!(handle.core().metrics().work_failures.get() >= 3);

        node.heal();
        eventually("a bid on the order once the node recovers", || {
            our_bid(&devnet, failing.order_id)
        })
        .await;
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
            leased_ips: 0,
            requirements: OrderRequirements {
                allowed_gpu_models: vec![gpu_model_key(&A100.parse().unwrap())],
                ..OrderRequirements::default()
            },
        };
        let order = NewOrder {
            token: devnet.deployment.token,
            spec,
            manifest_hash: B256::repeat_byte(7),
            max_price_per_hour: U256::from(100 * TOKEN),
            deposit: U256::from(10 * TOKEN),
            bid_window_secs: 3_600,
            delivery_window_secs: leasehold_contracts::DEFAULT_DELIVERY_WINDOW_SECS,
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
                        gpu_model_key(&A100.parse().unwrap()),
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
        Self::spawn_with_key(&devnet.signer(PROVIDER), config_path)
    }

    fn spawn_with_key(signer: &PrivateKeySigner, config_path: &std::path::Path) -> Self {
        Self::spawn_with(signer, config_path, "warn", std::process::Stdio::null())
    }

    /// The daemon logging at debug level, appended to `log`.
    fn spawn_logging(
        devnet: &Devnet,
        config_path: &std::path::Path,
        log: &std::path::Path,
    ) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("daemon log file");
        Self::spawn_with(&devnet.signer(PROVIDER), config_path, "debug", file.into())
    }

    fn spawn_with(
        signer: &PrivateKeySigner,
        config_path: &std::path::Path,
        level: &str,
        stderr: std::process::Stdio,
    ) -> Self {
        let key = format!("0x{}", alloy::hex::encode(signer.to_bytes()));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_provider"))
            .args(["--config"])
            .arg(config_path)
            .args(["run", "--confirmations", "0", "--keep-unknown-workloads"])
            .env("LEASEHOLD_PROVIDER_KEY", key)
            .env("LEASEHOLD_LOG", level)
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
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
            gateway_pin(devnet).await,
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
        let gateway = config.gateway.listen.clone();
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
            leasehold_proto::client::ProviderClient::connect(
                &gateway,
                gateway_pin(&devnet).await,
                Duration::from_secs(2),
            )
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
        // (pinned to the certificate in the config's data dir)
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_provider"))
            .arg("--config")
            .arg(&config_path)
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

/// 50 leases (a third of them closed by the tenant) while the daemon is killed with -9 at
/// random moments and restarted: afterwards every order was bid on, every lease is in the
/// store once, in the state the chain says, and exactly the open leases hold capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_leases_through_random_kill_dash_nine_miss_nothing_and_double_nothing() {
    use rand08::{Rng, SeedableRng};
    const LEASES: u64 = 50;
    const KILLS: u32 = 6;
    daemon_test(0..LEASES + 2, || async {
        let seed: u64 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or_default();
        eprintln!("kill points seeded with {seed}");
        let mut rng = rand08::rngs::StdRng::seed_from_u64(seed);
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = provider_config(&devnet, dir.path(), 0);
        config.gateway.listen = format!("127.0.0.1:{}", free_port());
        register(&devnet, &config).await;
        let config_path = dir.path().join("provider.toml");
        std::fs::write(&config_path, config.to_toml_string().expect("toml")).expect("write");
        let gateway = config.gateway.listen.clone();
        let tenant = devnet.client(TENANT);
        let small = HELLO
            .replace("units: 100m", "units: 10m")
            .replace("size: 64Mi", "size: 16Mi")
            .replace("size: 128Mi", "size: 16Mi");
        let (order, _) = sdl_order(&devnet, &small, 100 * TOKEN, 3_600);

        let daemon = std::sync::Arc::new(std::sync::Mutex::new(DaemonProcess::spawn(
            &devnet,
            &config_path,
        )));
        // Kills at random moments until every lease exists, and at least KILLS of them.
        let leasing_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let killer = tokio::spawn({
            let daemon = daemon.clone();
            let leasing_done = leasing_done.clone();
            let devnet_key = devnet.signer(PROVIDER);
            let config_path = config_path.clone();
            async move {
                let mut kills = 0u32;
                while kills < KILLS || !leasing_done.load(std::sync::atomic::Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(300..2_500))).await;
                    let mut daemon = daemon.lock().expect("daemon lock");
                    daemon.kill();
                    *daemon = DaemonProcess::spawn_with_key(&devnet_key, &config_path);
                    kills += 1;
                }
                kills
            }
        });

        let mut orders = Vec::new();
        for _ in 0..LEASES {
            orders.push(
                tenant
                    .create_order(&order)
                    .await
                    .expect("createOrder")
                    .order_id,
            );
        }
        let mut open = Vec::new();
        let mut closed = Vec::new();
        for (index, order_id) in orders.iter().enumerate() {
            let bid_id = eventually("our bid", || our_bid(&devnet, *order_id)).await;
            let lease_id = tenant
                .accept_bid(*order_id, bid_id)
                .await
                .expect("acceptBid")
                .lease_id;
            if index % 3 == 0 {
                tenant
                    .close_lease(lease_id, CloseReason::TenantRequest)
                    .await
                    .expect("closeLease");
                closed.push(lease_id);
            } else {
                open.push(lease_id);
            }
        }
        leasing_done.store(true, std::sync::atomic::Ordering::SeqCst);
        let kills = killer.await.expect("the killer ran");
        eprintln!("the daemon was killed {kills} times");

        // The last daemon settles: exactly the open leases hold capacity, nothing reserved.
        let open_count = open.len();
        let expected_cpu = 10 * open_count;
        eventually("the daemon to account for every lease", || {
            let gateway = gateway.clone();
            let config_path = config_path.clone();
            async move {
                let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_provider"))
                    .arg("--config")
                    .arg(&config_path)
                    .args(["status", "--output", "json", "--gateway", &gateway])
                    .output()
                    .await
                    .ok()?;
                let status: serde_json::Value = serde_json::from_slice(&status.stdout).ok()?;
                (status["active_leases"] == open_count
                    && status["allocated"]["cpu_milli"] == expected_cpu
                    && status["reserved"]["cpu_milli"] == 0)
                    .then_some(())
            }
        })
        .await;
        daemon.lock().expect("daemon lock").kill();

        let store = leasehold_provider::store::Store::connect(&config.database_url())
            .await
            .expect("store");
        for lease_id in &open {
            let lease = store
                .lease(*lease_id)
                .await
                .expect("an open lease is stored");
            assert_eq!(
                lease.state.kind(),
                LeaseStateKind::AwaitingManifest,
                "lease {lease_id}"
            );
            assert!(
                store.reservation(*lease_id).await.expect("row").is_some(),
                "lease {lease_id} holds its allocation"
            );
        }
        for lease_id in &closed {
            let lease = store
                .lease(*lease_id)
                .await
                .expect("a closed lease is stored");
            assert_eq!(
                lease.state.kind(),
                LeaseStateKind::Closed,
                "lease {lease_id}"
            );
            assert!(
                store.reservation(*lease_id).await.expect("row").is_none(),
                "closed lease {lease_id} holds nothing"
            );
        }
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_manifest_that_never_comes_closes_the_lease() {
    daemon_test(0..4, || async {
        let Started {
            devnet,
            handle,
            data_dir: _data_dir,
            ..
        } = started(DaemonOptions {
            manifest_timeout_secs: 2,
            ..options()
        })
        .await;
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

/// A devnet with a registered provider whose daemon runs with `options`.
/// Bind `data_dir` by name when destructuring: `..` would drop (delete) it at once.
struct Started {
    devnet: Devnet,
    data_dir: tempfile::TempDir,
    config: Config,
    handle: DaemonHandle,
}

async fn started(options: DaemonOptions) -> Started {
    started_with_blocks(None, options).await
}

/// [`started`] on a devnet that mines a block every `block_time` seconds (`None`: one per
/// transaction).
async fn started_with_blocks(block_time: Option<u64>, options: DaemonOptions) -> Started {
    let devnet = Devnet::start(block_time).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = provider_config(&devnet, dir.path(), 0);
    register(&devnet, &config).await;
    let handle = Daemon::start(config.clone(), devnet.signer(PROVIDER), options)
        .await
        .expect("daemon starts");
    Started {
        devnet,
        data_dir: dir,
        config,
        handle,
    }
}

/// Waits until the lease takes a manifest.
async fn manifest_window(handle: &DaemonHandle, lease_id: u64) {
    eventually("the manifest window", || async {
        (lease_state(handle, lease_id).await == Some(LeaseStateKind::AwaitingManifest))
            .then_some(())
    })
    .await;
}

/// Creates an order, waits for our bid and accepts it; the lease id.
async fn lease_for(devnet: &Devnet, order: &NewOrder) -> u64 {
    let tenant = devnet.client(TENANT);
    let posted = tenant.create_order(order).await.expect("createOrder");
    let bid_id = eventually("our bid", || our_bid(devnet, posted.order_id)).await;
    tenant
        .accept_bid(posted.order_id, bid_id)
        .await
        .expect("acceptBid")
        .lease_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_store_adopts_running_workloads_and_closes_nothing() {
    daemon_test(0..4, || async {
        let removing = DaemonOptions {
            remove_unknown_workloads: true,
            ..options()
        };
        let Started {
            devnet,
            config,
            handle,
            data_dir: _data_dir,
        } = started(removing.clone()).await;
        let (order, manifest) = hello_order(&devnet, 1_000 * TOKEN, 3_600);
        let lease_id = lease_for(&devnet, &order).await;
        let uri = deliver_and_run(&devnet, &handle, lease_id, manifest.clone()).await;
        let containers = containers_of(lease_id).await;
        assert_eq!(containers.len(), 1);
        handle.shutdown().await;

        // The same provider key, pointed at an empty data dir (a lost or misplaced store),
        // with a manifest deadline far shorter than the wait below.
        let empty_dir = tempfile::tempdir().expect("tempdir");
        let mut lost = config.clone();
        lost.data_dir = empty_dir.path().to_path_buf();
        let handle = Daemon::start(
            lost,
            devnet.signer(PROVIDER),
            DaemonOptions {
                manifest_timeout_secs: 2,
                ..removing
            },
        )
        .await
        .expect("daemon starts on an empty store");
        // The gateway's certificate was lost with the store: the operator publishes the
        // new one (`provider update`), else tenants refuse the gateway.
        let hardware = Hardware::detect(&config.data_dir, &config.hardware).expect("hardware");
        devnet
            .client(PROVIDER)
            .update_provider(&provider_profile(
                &config,
                &hardware,
                GatewayIdentity::load(empty_dir.path())
                    .expect("the new certificate")
                    .cert_sha256(),
            ))
            .await
            .expect("update");
        assert_eq!(
            lease_state(&handle, lease_id).await,
            Some(LeaseStateKind::Running),
            "the start-up reconcile adopts the running workload"
        );
        // Past the manifest deadline and several reconcile passes.
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert_eq!(
            lease_state(&handle, lease_id).await,
            Some(LeaseStateKind::Running)
        );
        assert_eq!(
            containers_of(lease_id).await,
            containers,
            "the workload was neither removed nor re-created"
        );
        assert!(
            devnet
                .client(TENANT)
                .lease(lease_id)
                .await
                .expect("lease")
                .active,
            "nothing was closed on chain"
        );
        let response = http_get_async(uri, "/").await.expect("GET");
        assert!(response.contains(" 200"), "{response}");
        let history = handle
            .core()
            .store()
            .history(lease_id)
            .await
            .expect("history");
        assert_eq!(
            history
                .iter()
                .map(|entry| entry.kind.as_str())
                .collect::<Vec<_>>(),
            vec!["adopted"]
        );

        // The tenant's client keeps working, and the manifest can be delivered again so
        // that the provider can re-create the workload from then on.
        let gateway = handle.gateway_addr().expect("gateway").to_string();
        let mut tenant = tenant_client(&devnet, &gateway).await;
        let status = tenant.status(lease_id).await.expect("status");
        assert_eq!(status.state, "running");
        let mut tampered = manifest.clone();
        tampered.push(b' ');
        assert!(tenant.send_manifest(lease_id, tampered).await.is_err());
        tenant
            .send_manifest(lease_id, manifest)
            .await
            .expect("the same manifest is taken again");
        let record = handle.core().store().lease(lease_id).await.expect("lease");
        assert!(record.manifest_json.is_some());
        assert_eq!(record.state.kind(), LeaseStateKind::Running);
        handle.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deployment_that_keeps_failing_is_closed_and_its_history_says_why() {
    daemon_test(0..4, || async {
        let Started {
            devnet,
            handle,
            data_dir: _data_dir,
            ..
        } = started(DaemonOptions {
            reconcile_interval: Duration::from_secs(1),
            ..options()
        })
        .await;
        let gateway = handle.gateway_addr().expect("gateway").to_string();
        let mut tenant = tenant_client(&devnet, &gateway).await;

        // An image name no engine accepts is refused when the manifest arrives.
        let bad_name = HELLO.replace("leasehold/busybox:test", "Leasehold/BusyBox:test");
        let (order, manifest) = sdl_order(&devnet, &bad_name, 1_000 * TOKEN, 3_600);
        let refused_lease = lease_for(&devnet, &order).await;
        manifest_window(&handle, refused_lease).await;
        let refusal = tenant
            .send_manifest(refused_lease, manifest)
            .await
            .expect_err("an invalid image name is refused")
            .to_string();
        assert!(refusal.contains("services.web.image"), "{refusal}");
        assert!(refusal.contains("lower-case"), "{refusal}");

        // A valid name that cannot be pulled here: accepted, then every deploy fails.
        let unpullable = HELLO.replace("leasehold/busybox:test", "leasehold/never-built:1");
        let (order, manifest) = sdl_order(&devnet, &unpullable, 1_000 * TOKEN, 3_600);
        let lease_id = lease_for(&devnet, &order).await;
        manifest_window(&handle, lease_id).await;
        let tenant_address = devnet.signer(TENANT).address();
        let before = devnet.balance(tenant_address).await;
        tenant
            .send_manifest(lease_id, manifest)
            .await
            .expect("a pullable-looking image is accepted");
        eventually("the failing lease to be closed", || async {
            (lease_state(&handle, lease_id).await == Some(LeaseStateKind::Closed)).then_some(())
        })
        .await;
        let record = handle.core().store().lease(lease_id).await.expect("lease");
        assert_eq!(record.state.reason().as_deref(), Some("deploy_failed"));
        assert!(
            !devnet
                .client(TENANT)
                .lease(lease_id)
                .await
                .expect("lease")
                .active
        );
        // Never delivered: the provider is paid nothing, the tenant gets the whole escrow back
        // plus the slashed part of the provider's stake, and the failure is on its record.
        let params = devnet.params;
        let slash =
            params.minimum_stake * U256::from(params.delivery_slash_bps) / U256::from(10_000u64);
        assert_eq!(
            devnet.balance(tenant_address).await,
            before + U256::from(1_000 * TOKEN) + slash,
            "a full refund plus the slashed stake"
        );
        let record = devnet
            .client(TENANT)
            .provider_info(devnet.signer(PROVIDER).address())
            .await
            .expect("provider");
        assert_eq!(
            (record.deliveries_confirmed, record.deliveries_failed),
            (0, 1)
        );
        assert_eq!(record.stake, params.minimum_stake - slash);
        let history = handle
            .core()
            .store()
            .history(lease_id)
            .await
            .expect("history");
        let kinds: Vec<&str> = history.iter().map(|entry| entry.kind.as_str()).collect();
        assert_eq!(
            kinds,
            vec![
                "won",
                "manifest_accepted",
                "deploy_failed",
                "deploy_failed",
                "deploy_failed",
                "closing",
                "closed"
            ]
        );
        assert!(history[2].message.contains("attempt 1 of 3"), "{history:?}");
        assert!(history[2].message.contains("never-built"), "{history:?}");
        assert!(containers_of(lease_id).await.is_empty());
        // The tenant reads the same account as the first events of the lease's stream.
        let mut events = tenant.events(lease_id).await.expect("Lease.StreamEvents");
        let mut streamed = Vec::new();
        while streamed.len() < kinds.len() {
            let event = tokio::time::timeout(Duration::from_secs(10), events.message())
                .await
                .expect("history is streamed at once")
                .expect("stream")
                .expect("an event");
            streamed.push(event.kind);
        }
        assert_eq!(streamed, kinds);
        handle.shutdown().await;
    })
    .await;
}

/// The real Docker runtime, with deploys that fail as an unreachable engine does while
/// `down` is set (fault injection for an engine outage).
struct FlakyEngine {
    inner: leasehold_provider::runtime::docker::DockerRuntime,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl leasehold_provider::runtime::Runtime for FlakyEngine {
    fn backend(&self) -> &'static str {
        "docker"
    }
    async fn deploy(
        &self,
        deployment: &leasehold_provider::runtime::LeaseDeployment,
    ) -> Result<(), leasehold_provider::runtime::RuntimeError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(leasehold_provider::runtime::RuntimeError::Unavailable {
                reason: "injected outage".into(),
            });
        }
        self.inner.deploy(deployment).await
    }
    async fn status(
        &self,
        lease_id: u64,
    ) -> Result<
        leasehold_provider::runtime::LeaseRuntimeStatus,
        leasehold_provider::runtime::RuntimeError,
    > {
        self.inner.status(lease_id).await
    }
    async fn logs(
        &self,
        lease_id: u64,
        service: Option<&str>,
        follow: bool,
        tail: Option<u32>,
    ) -> Result<leasehold_provider::runtime::LogStream, leasehold_provider::runtime::RuntimeError>
    {
        self.inner.logs(lease_id, service, follow, tail).await
    }
    async fn events(
        &self,
        lease_id: u64,
    ) -> Result<leasehold_provider::runtime::EventStream, leasehold_provider::runtime::RuntimeError>
    {
        self.inner.events(lease_id).await
    }
    async fn teardown(
        &self,
        lease_id: u64,
    ) -> Result<(), leasehold_provider::runtime::RuntimeError> {
        self.inner.teardown(lease_id).await
    }
    async fn list_leases(&self) -> Result<Vec<u64>, leasehold_provider::runtime::RuntimeError> {
        self.inner.list_leases().await
    }
    async fn enforce_policies(&self) -> Result<(), leasehold_provider::runtime::RuntimeError> {
        self.inner.enforce_policies().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_out_of_range_lease_is_not_found_and_housekeeping_prunes_the_replay_cache() {
    daemon_test(0..0, || async {
        let Started {
            devnet,
            handle,
            data_dir: _data_dir,
            ..
        } = started(options()).await;
        let gateway = handle.gateway_addr().expect("gateway").to_string();
        let mut tenant = tenant_client(&devnet, &gateway).await;
        let refusal = tenant.status(u64::MAX).await.expect_err("no such lease");
        let status = refusal.status().expect("the provider answered");
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");

        let store = handle.core().store();
        let an_hour_ago = leasehold_provider::daemon::unix_now() - 3_600;
        assert!(
            store
                .remember_signature("gateway", "0x01d", an_hour_ago)
                .await
                .expect("remember")
        );
        eventually("housekeeping to forget the stale replay key", || async {
            // `true` means it was new again, i.e. pruned in between.
            store
                .remember_signature("gateway", "0x01d", an_hour_ago)
                .await
                .ok()?
                .then_some(())
        })
        .await;
        handle.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_engine_outage_never_closes_a_lease() {
    daemon_test(0..4, || async {
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = provider_config(&devnet, dir.path(), 0);
        register(&devnet, &config).await;
        let engine = std::sync::Arc::new(FlakyEngine {
            inner: leasehold_provider::daemon::docker_runtime(
                &config,
                leasehold_provider::daemon::runtime_scope(&config, &devnet.signer(PROVIDER))
                    .await
                    .expect("scope"),
            )
            .await
            .expect("docker"),
            down: std::sync::atomic::AtomicBool::new(true),
        });
        let handle = Daemon::start_with_runtime(
            config.clone(),
            devnet.signer(PROVIDER),
            engine.clone(),
            DaemonOptions {
                reconcile_interval: Duration::from_secs(1),
                max_deploy_attempts: 2,
                ..options()
            },
        )
        .await
        .expect("daemon starts");
        let (order, manifest) = hello_order(&devnet, 1_000 * TOKEN, 3_600);
        let lease_id = lease_for(&devnet, &order).await;
        let gateway = handle.gateway_addr().expect("gateway").to_string();
        let mut tenant = tenant_client(&devnet, &gateway).await;
        manifest_window(&handle, lease_id).await;
        tenant
            .send_manifest(lease_id, manifest)
            .await
            .expect("manifest");
        // Many reconcile passes, each failing on the engine: more than the attempts allowed.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(
            lease_state(&handle, lease_id).await,
            Some(LeaseStateKind::Failed)
        );
        assert!(
            devnet
                .client(TENANT)
                .lease(lease_id)
                .await
                .expect("lease")
                .active
        );
        // The engine comes back: the next pass deploys.
        engine
            .down
            .store(false, std::sync::atomic::Ordering::SeqCst);
        eventually("the lease to run once the engine is back", || async {
            (lease_state(&handle, lease_id).await == Some(LeaseStateKind::Running)).then_some(())
        })
        .await;
        let kinds: Vec<String> = handle
            .core()
            .store()
            .history(lease_id)
            .await
            .expect("history")
            .into_iter()
            .map(|entry| entry.kind)
            // Whether the delivery confirmation is already in depends on timing.
            .filter(|kind| kind != "confirmed")
            .collect();
        assert_eq!(kinds, vec!["won", "manifest_accepted", "running"]);
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
        let mut rival_profile = provider_profile(&config, &hardware, B256::repeat_byte(0xce));
        rival_profile.endpoint = "https://rival.example:8443".to_owned();
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
        eventually("the lost reservation's row to go", || async {
            let store = handle.core().store();
            store
                .reservation(lost.order_id)
                .await
                .expect("store")
                .is_none()
                .then_some(())
        })
        .await;
        // The lost order ended: the daemon releases its bid's bond back to the free stake.
        let me = handle.core().chain().address();
        let minimum = devnet.params.minimum_stake;
        eventually("the lost bid's bond to be released", || async {
            let info = devnet.client(0).provider_info(me).await.ok()?;
            (info.locked_bonds.is_zero() && info.stake == minimum).then_some(())
        })
        .await;
        // The chain shows the release before the daemon has read its receipt.
        eventually("the release to be counted", || async {
            (handle.core().metrics().bonds_resolved.get() >= 1).then_some(())
        })
        .await;

        // A reservation that would lapse before the tenant's grace ends: no bid, for a lapsed
        // bid withdrawn then would forfeit its bond (a tenant could post long windows it never
        // matches and collect honest providers' bonds).
        handle.shutdown().await;
        config.bid.reservation_timeout_secs = 3;
        config.bid.bid_timeout_secs = 1;
        let handle = start(&devnet, &config).await;
        let long_window = tenant.create_order(&order).await.expect("createOrder");
        eventually("the long window to be skipped", || async {
            (handle.core().metrics().bids_window_too_long.get() >= 1).then_some(())
        })
        .await;
        assert_eq!(our_bid(&devnet, long_window.order_id).await, None);
        tenant
            .cancel_order(long_window.order_id)
            .await
            .expect("cancel");

        // Expired: nobody accepts within the reservation timeout; the bid is withdrawn once
        // the grace is over, and keeps its bond.
        handle.shutdown().await;
        config.bid.reservation_timeout_secs = 900;
        let handle = start(&devnet, &config).await;
        let reserved = || async {
            handle
                .core()
                .capacity_report()
                .expect("report")
                .reserved
                .cpu_millis
        };
        let (short, _) = hello_order(&devnet, 100 * TOKEN, 5);
        let expired = tenant.create_order(&short).await.expect("createOrder");
        let bid_id = eventually("our bid", || our_bid(&devnet, expired.order_id)).await;
        assert_eq!(reserved().await, 100);
        let store = handle.core().store();
        // The chain shows the bid before the daemon has stored its id.
        let row = eventually("the bid's reservation", || async {
            let row = store.reservation(expired.order_id).await.expect("store")?;
            row.bid_id.is_some().then_some(row)
        })
        .await;
        assert!(
            row.expires_at >= leasehold_provider::daemon::unix_now() + 5 + 120,
            "the reservation is held past the tenant's grace"
        );
        // Fast-forward: the chain past the grace, the reservation to its lapse.
        devnet.warp(200).await.expect("warp");
        store
            .put_reservation(&leasehold_provider::store::Reservation {
                expires_at: 0,
                ..row
            })
            .await
            .expect("lapse the reservation");
        eventually("the bid to be withdrawn", || async {
            let bids = devnet.client(0).bids(expired.order_id).await.ok()?;
            bids.get(usize::try_from(bid_id).ok()?)?
                .withdrawn
                .then_some(())
        })
        .await;
        eventually("the reservation to go", || async {
            (reserved().await == 0).then_some(())
        })
        .await;
        let info = devnet.client(0).provider_info(me).await.expect("provider");
        assert!(info.locked_bonds.is_zero(), "the bond is released at once");
        assert_eq!(info.stake, minimum, "no bond was forfeited");
        let token = devnet.client(0).stake_token().await.expect("stake token");
        let (_, credited) = tenant
            .claimable(token, tenant.sender())
            .await
            .expect("claimable");
        assert_eq!(credited, U256::ZERO);
        handle.shutdown().await;
    })
    .await;
}

/// Runs the `provider` binary as the provider account, bounded in time.
fn provider_run(
    devnet: &Devnet,
    config_path: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    let key = format!(
        "0x{}",
        alloy::hex::encode(devnet.signer(PROVIDER).to_bytes())
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_provider"))
        .arg("--config")
        .arg(config_path)
        .args(args)
        .env("LEASEHOLD_PROVIDER_KEY", key)
        .env("LEASEHOLD_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("provider runs");
    let deadline = std::time::Instant::now() + WAIT;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("provider {args:?} did not finish within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// `provider --output json <args>`, which must succeed; its JSON.
fn provider_command(
    devnet: &Devnet,
    config_path: &std::path::Path,
    args: &[&str],
) -> serde_json::Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let output = provider_run(devnet, config_path, &all);
    assert!(output.status.success(), "{args:?}: {output:?}");
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

/// `provider <args>`, which must fail; its standard error.
fn provider_refusal(devnet: &Devnet, config_path: &std::path::Path, args: &[&str]) -> String {
    let output = provider_run(devnet, config_path, args);
    assert!(!output.status.success(), "{args:?} should fail: {output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_is_told_what_to_run_and_can_change_the_registration() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = provider_config(&devnet, dir.path(), 0);
        config.gateway.listen = format!("127.0.0.1:{}", free_port());
        let config_path = dir.path().join("provider.toml");
        let write = |config: &Config| {
            std::fs::write(&config_path, config.to_toml_string().expect("toml")).expect("write")
        };
        write(&config);

        // An unregistered key does not start a daemon whose every bid would revert.
        let refusal = provider_refusal(&devnet, &config_path, &["run", "--confirmations", "0"]);
        assert!(refusal.contains("is not registered"), "{refusal}");
        assert!(refusal.contains("provider register"), "{refusal}");

        let registered = provider_command(&devnet, &config_path, &["register"]);
        assert_eq!(
            registered["names_published"],
            registered["names"].as_array().map(Vec::len).unwrap_or(0),
            "a fresh chain names every key: {registered}"
        );
        let refusal = provider_refusal(&devnet, &config_path, &["register"]);
        assert!(refusal.contains("AlreadyRegistered"), "{refusal}");
        assert!(refusal.contains("provider update"), "{refusal}");

        // A changed config reaches the chain with `provider update`.
        config.attributes = vec!["region=eu-west".into(), "tier=gold".into()];
        config.hardware.cpu_millis = Some(6_000);
        write(&config);
        let updated = provider_command(&devnet, &config_path, &["update"]);
        assert_eq!(updated["profile"]["capacity"]["cpu_milli"], 6_000);
        assert_eq!(updated["names_published"], 1, "only tier=gold is new");
        let info = devnet
            .client(0)
            .provider_info(devnet.signer(PROVIDER).address())
            .await
            .expect("provider info");
        assert_eq!(info.capacity.cpu_milli, 6_000);
        assert_eq!(
            info.attributes,
            [
                "region=eu-west",
                "tier=gold",
                "capabilities/storage/1/class=default",
                "capabilities/storage/1/persistent=true"
            ]
            .map(alloy::primitives::keccak256)
            .to_vec()
        );
        // Every registered key resolves to the string it was hashed from.
        let names = devnet.client(0).key_names().await.expect("key names");
        let labels: Vec<String> = info.attributes.iter().map(|key| names.label(key)).collect();
        assert_eq!(
            labels,
            [
                "region=eu-west",
                "tier=gold",
                "capabilities/storage/1/class=default",
                "capabilities/storage/1/persistent=true"
            ]
        );

        // Plain text, not a debug dump.
        let withdraw = provider_run(&devnet, &config_path, &["withdraw"]);
        assert!(withdraw.status.success(), "{withdraw:?}");
        assert_eq!(
            String::from_utf8_lossy(&withdraw.stdout).trim(),
            "no open leases: nothing to collect"
        );
    })
    .await
    .expect("test exceeded its time limit");
}

/// The provider CLI keeps the tenant CLI's exit-code contract, and with `--output json`
/// an error is a JSON document on stdout too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_cli_keeps_the_tenant_exit_code_contract() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = provider_config(&devnet, dir.path(), 0);
        let config_path = dir.path().join("provider.toml");
        std::fs::write(&config_path, config.to_toml_string().expect("toml")).expect("write");
        let failure = |config_path: &std::path::Path, args: &[&str]| {
            let mut all = vec!["--output", "json"];
            all.extend_from_slice(args);
            let output = provider_run(&devnet, config_path, &all);
            let document: serde_json::Value =
                serde_json::from_slice(&output.stdout).unwrap_or_default();
            (output.status.code(), document)
        };

        provider_command(&devnet, &config_path, &["register"]);
        let (code, document) = failure(&config_path, &["register"]);
        assert_eq!(code, Some(1), "a revert: {document}");
        assert_eq!(document["error"]["kind"], "failed");
        assert_eq!(document["error"]["exit_code"], 1);
        assert!(
            document["error"]["message"]
                .as_str()
                .is_some_and(|message| message.contains("AlreadyRegistered")),
            "{document}"
        );

        let (code, document) = failure(&dir.path().join("missing.toml"), &["update"]);
        assert_eq!(code, Some(2), "a config that cannot be read: {document}");
        assert_eq!(document["error"]["kind"], "usage");
        let (code, _) = failure(&config_path, &["init"]);
        assert_eq!(code, Some(2), "init over an existing file without --force");
        let (code, _) = failure(&config_path, &["run", "--no-such-flag"]);
        assert_eq!(code, Some(2), "clap's own usage errors");

        let mut unreachable = config.clone();
        unreachable.chain.rpc_url = format!("http://127.0.0.1:{}", free_port());
        let unreachable_path = dir.path().join("unreachable.toml");
        std::fs::write(
            &unreachable_path,
            unreachable.to_toml_string().expect("toml"),
        )
        .expect("write");
        let (code, document) = failure(&unreachable_path, &["update"]);
        assert_eq!(code, Some(3), "an unreachable node: {document}");
        assert_eq!(document["error"]["kind"], "network");
        let gateway = format!("127.0.0.1:{}", free_port());
        let (code, _) = failure(&config_path, &["status", "--gateway", &gateway]);
        assert_eq!(code, Some(3), "an unreachable gateway");

        let help = provider_run(&devnet, &config_path, &["--help"]);
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(
            help.contains("Exit codes") && help.contains("Example"),
            "{help}"
        );
    })
    .await
    .expect("test exceeded its time limit");
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
        assert_eq!(
            info.gpus[0].model_key,
            gpu_model_key(&A100.parse().unwrap())
        );
        assert_eq!(info.gpus[0].capacity, 2);
        assert_eq!(
            info.attributes,
            [
                "region=eu-west",
                "capabilities/storage/1/class=default",
                "capabilities/storage/1/persistent=true"
            ]
            .map(alloy::primitives::keccak256)
            .to_vec()
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

/// Every file under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir") {
                pending.push(entry.expect("dir entry").path());
            }
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|window| window == needle)
        {
            found.push(path);
        }
    }
    found
}

/// A private image end to end through the `provider` binary: the lease runs from a real
/// registry with htpasswd auth, the daemon is killed with -9 and the image's local tag
/// removed, and the restarted daemon pulls it again from the credentials it stored
/// sealed. The password is then found nowhere in the data dir (the SQLite store and its
/// journal included) or in the daemon's debug log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_private_image_runs_from_sealed_credentials_across_kill_dash_nine() {
    daemon_test(0..2, || async {
        let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
        let registry = PrivateRegistry::start();
        let repository = format!("leasehold/daemon-private-{}", std::process::id());
        let image = registry
            .push(&docker, "leasehold/busybox:test", &repository)
            .await;
        let sdl = |password: &str| {
            HELLO.replace(
                "image: leasehold/busybox:test",
                &format!(
                    "image: {image}\n    credentials:\n      host: \"{}\"\n      username: {}\n      \
                     password: \"{password}\"",
                    registry.host(),
                    private_registry::USERNAME,
                ),
            )
        };
        let wrong_password = format!("wrong-{}", registry.password);
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = provider_config(&devnet, dir.path(), 0);
        config.gateway.listen = format!("127.0.0.1:{}", free_port());
        register(&devnet, &config).await;
        let config_path = dir.path().join("provider.toml");
        std::fs::write(&config_path, config.to_toml_string().expect("toml")).expect("write");
        let log_path = dir.path().join("daemon.log");
        let gateway = config.gateway.listen.clone();
        let tenant = devnet.client(TENANT);

        let mut daemon = DaemonProcess::spawn_logging(&devnet, &config_path, &log_path);
        let signed = tenant_client(&devnet, &gateway).await;
        let deliver = |sdl: String| {
            let (tenant, signed, devnet) = (&tenant, signed.clone(), &devnet);
            async move {
                let (order, manifest) = sdl_order(devnet, &sdl, 1_000 * TOKEN, 3_600);
                let posted = tenant.create_order(&order).await.expect("createOrder");
                let bid_id = eventually("our bid", || our_bid(devnet, posted.order_id)).await;
                let lease_id = tenant
                    .accept_bid(posted.order_id, bid_id)
                    .await
                    .expect("acceptBid")
                    .lease_id;
                eventually("the manifest window", || {
                    let mut signed = signed.clone();
                    async move {
                        let (state, _) = lease_state_on(&mut signed, lease_id).await?;
                        (state == "awaiting_manifest").then_some(())
                    }
                })
                .await;
                signed
                    .clone()
                    .send_manifest(lease_id, manifest)
                    .await
                    .expect("manifest");
                lease_id
            }
        };

        // A wrong password: the lease's history (what `tenant events` streams) names the
        // image and says unauthorized.
        let refused = deliver(sdl(&wrong_password)).await;
        let refusal = eventually("the refused pull in the history", || async {
            let store = leasehold_provider::store::Store::connect(&config.database_url())
                .await
                .ok()?;
            let history = store.history(refused).await.ok();
            store.close().await;
            history?
                .into_iter()
                .find(|entry| entry.kind == "deploy_failed")
                .map(|entry| entry.message)
        })
        .await;
        assert!(refusal.contains(&image), "{refusal}");
        assert!(refusal.contains("unauthorized"), "{refusal}");
        assert!(!refusal.contains(&wrong_password), "{refusal}");

        let lease_id = deliver(sdl(&registry.password)).await;
        let serving = |signed: &leasehold_proto::client::SignedLeaseClient| {
            let signed = signed.clone();
            async move {
                eventually("the private image to serve", || {
                    let mut signed = signed.clone();
                    async move {
                        let (state, uris) = lease_state_on(&mut signed, lease_id).await?;
                        let uri = uris.first().filter(|_| state == "running")?.clone();
                        let page = http_get_async(uri, "/").await.ok()?;
                        page.contains("hello from leasehold").then_some(())
                    }
                })
                .await;
            }
        };
        serving(&signed).await;
        let containers = containers_of(lease_id).await;
        assert_eq!(containers.len(), 1);

        daemon.kill();
        registry.forget_locally(&docker, &image).await;
        let _daemon = DaemonProcess::spawn_logging(&devnet, &config_path, &log_path);
        eventually(
            "the image pulled again with the unsealed credentials",
            || async { docker.inspect_image(&image).await.ok().map(|_| ()) },
        )
        .await;
        serving(&signed).await;
        assert_eq!(containers_of(lease_id).await, containers, "kept running");

        for password in [&registry.password, &wrong_password] {
            let leaks = files_containing(dir.path(), password.as_bytes());
            assert!(leaks.is_empty(), "a password is in {leaks:?}");
        }
        let log = std::fs::read_to_string(&log_path).expect("daemon log");
        assert!(log.contains("pulling image"), "the log was captured: {log}");
        let store = leasehold_provider::store::Store::connect(&config.database_url())
            .await
            .expect("store");
        let stored = store.lease(lease_id).await.expect("lease");
        store.close().await;
        let stored = stored.manifest_json.expect("manifest stored");
        assert!(
            stored.contains(leasehold_provider::sealing::SEALED_PREFIX),
            "{stored}"
        );
        assert!(!stored.contains(&registry.password));

        remove_leases(&[refused, lease_id]).await;
        registry.forget_locally(&docker, &image).await;
    })
    .await;
}

/// hello.yaml whose page says `text` (written at start into a directory of the container).
fn hello_saying(text: &str) -> String {
    HELLO.replace(
        "      - httpd\n      - -f\n      - -p\n      - \"80\"\n      - -h\n      - /www\n",
        &format!(
            "      - sh\n      - -c\n      - \"mkdir -p /tmp/www && echo '{text}' > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www\"\n"
        ),
    )
}

/// Update in place across a kill -9 (issue #13, item 4): the chain's `ManifestUpdated` is
/// stored as a pending revision, the daemon dies before the manifest comes, and after the
/// restart the manifest is accepted and the lease runs revision 2 at the same URL with the
/// pending revision cleared. A manifest the chain does not name, and the right one sent by
/// another account, are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_manifest_update_survives_kill_dash_nine_between_the_event_and_the_manifest() {
    daemon_test(0..2, || async {
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = provider_config(&devnet, dir.path(), 0);
        config.gateway.listen = format!("127.0.0.1:{}", free_port());
        register(&devnet, &config).await;
        let config_path = dir.path().join("provider.toml");
        std::fs::write(&config_path, config.to_toml_string().expect("toml")).expect("write");
        let gateway = config.gateway.listen.clone();
        let tenant = devnet.client(TENANT);

        let mut daemon = DaemonProcess::spawn(&devnet, &config_path);
        let mut signed = tenant_client(&devnet, &gateway).await;
        let (order, manifest) = hello_order(&devnet, 1_000 * TOKEN, 3_600);
        let posted = tenant.create_order(&order).await.expect("createOrder");
        let bid_id = eventually("our bid", || our_bid(&devnet, posted.order_id)).await;
        let lease_id = tenant
            .accept_bid(posted.order_id, bid_id)
            .await
            .expect("acceptBid")
            .lease_id;
        eventually("the manifest window", || {
            let mut signed = signed.clone();
            async move {
                let (state, _) = lease_state_on(&mut signed, lease_id).await?;
                (state == "awaiting_manifest").then_some(())
            }
        })
        .await;
        signed
            .send_manifest(lease_id, manifest)
            .await
            .expect("manifest");
        let uri = eventually("the lease to run", || {
            let mut signed = signed.clone();
            async move {
                let (state, uris) = lease_state_on(&mut signed, lease_id).await?;
                (state == "running")
                    .then(|| uris.first().cloned())
                    .flatten()
            }
        })
        .await;
        assert_eq!(signed.status(lease_id).await.expect("status").revision, 1);

        let (_, second) = sdl_order(&devnet, &hello_saying("revision two"), 0, 0);
        let update = tenant
            .update_manifest(lease_id, alloy::primitives::keccak256(&second))
            .await
            .expect("updateManifest");
        assert_eq!(update.revision, 2);
        let store = leasehold_provider::store::Store::connect(&config.database_url())
            .await
            .expect("store");
        eventually("the pending revision in the store", || async {
            let revisions = store.manifest_revisions(lease_id).await.ok()?;
            (revisions.pending.map(|(revision, _)| revision) == Some(2)).then_some(())
        })
        .await;
        daemon.kill();
        let revisions = store.manifest_revisions(lease_id).await.expect("revisions");
        assert_eq!(revisions.applied, 1);
        store.close().await;

        let _daemon = DaemonProcess::spawn(&devnet, &config_path);
        eventually("the restarted gateway", || async {
            leasehold_proto::client::ProviderClient::connect(
                &gateway,
                gateway_pin(&devnet).await,
                Duration::from_secs(2),
            )
            .await
            .ok()
        })
        .await;
        let mut stranger = leasehold_proto::client::SignedLeaseClient::connect(
            &gateway,
            gateway_pin(&devnet).await,
            devnet.signer(3),
            Duration::from_secs(5),
        )
        .await
        .expect("gateway reachable");
        let refused = stranger.send_manifest(lease_id, second.clone()).await;
        assert!(
            refused.as_ref().is_err_and(|error| error
                .to_string()
                .contains(&format!("is not the tenant of lease {lease_id}"))),
            "{refused:?}"
        );
        let (_, unrecorded) = sdl_order(&devnet, &hello_saying("never recorded"), 0, 0);
        let refused = signed.send_manifest(lease_id, unrecorded).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|error| error.to_string().contains("hash")),
            "a manifest the chain does not name: {refused:?}"
        );

        signed
            .send_manifest(lease_id, second)
            .await
            .expect("the recorded manifest");
        eventually("revision 2 to run", || {
            let mut signed = signed.clone();
            async move {
                let status = signed.status(lease_id).await.ok()?;
                (status.revision == 2 && status.state == "running").then_some(())
            }
        })
        .await;
        let page = eventually("the new page at the same URL", || {
            let uri = uri.clone();
            async move {
                http_get_async(uri, "/")
                    .await
                    .ok()
                    .filter(|page| page.contains("revision two"))
            }
        })
        .await;
        assert!(page.contains(" 200"), "{page}");
        let store = leasehold_provider::store::Store::connect(&config.database_url())
            .await
            .expect("store");
        let revisions = store.manifest_revisions(lease_id).await.expect("revisions");
        assert_eq!((revisions.applied, revisions.pending), (2, None));
        store.close().await;
    })
    .await;
}

/// A lease updated on chain before its first manifest arrives runs the latest revision,
/// and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_first_manifest_sent_after_an_update_runs_as_the_latest_revision() {
    daemon_test(0..2, || async {
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = provider_config(&devnet, dir.path(), 0);
        config.gateway.listen = format!("127.0.0.1:{}", free_port());
        register(&devnet, &config).await;
        let config_path = dir.path().join("provider.toml");
        std::fs::write(&config_path, config.to_toml_string().expect("toml")).expect("write");
        let gateway = config.gateway.listen.clone();
        let tenant = devnet.client(TENANT);
        let _daemon = DaemonProcess::spawn(&devnet, &config_path);
        let mut signed = tenant_client(&devnet, &gateway).await;
        let (order, _) = hello_order(&devnet, 1_000 * TOKEN, 3_600);
        let posted = tenant.create_order(&order).await.expect("createOrder");
        let bid_id = eventually("our bid", || our_bid(&devnet, posted.order_id)).await;
        let lease_id = tenant
            .accept_bid(posted.order_id, bid_id)
            .await
            .expect("acceptBid")
            .lease_id;
        let (_, second) = sdl_order(&devnet, &hello_saying("updated before delivery"), 0, 0);
        tenant
            .update_manifest(lease_id, alloy::primitives::keccak256(&second))
            .await
            .expect("updateManifest");
        eventually("the manifest window", || {
            let mut signed = signed.clone();
            async move {
                let (state, _) = lease_state_on(&mut signed, lease_id).await?;
                (state == "awaiting_manifest").then_some(())
            }
        })
        .await;
        signed
            .send_manifest(lease_id, second)
            .await
            .expect("the latest manifest");
        eventually("revision 2 to run", || {
            let mut signed = signed.clone();
            async move {
                let status = signed.status(lease_id).await.ok()?;
                (status.state == "running" && status.revision == 2).then_some(())
            }
        })
        .await;
    })
    .await;
}

/// Akash's `signedBy` on chain: an order naming an auditor gets no bid from a provider the
/// auditor does not attest, is served once it does, and a bid whose attestation is revoked
/// after bidding is passed over by `settle` in favour of an attested rival.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_signed_by_an_auditor_take_bids_only_from_attested_providers() {
    daemon_test(0..0, || async {
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = provider_config(&devnet, dir.path(), 0);
        register(&devnet, &config).await;
        let handle = start(&devnet, &config).await;
        let tenant = devnet.client(TENANT);
        let auditor = devnet.client(5);
        let me = devnet.signer(PROVIDER).address();
        let region = vec![leasehold_contracts::chain_key("region=eu-west")];
        let audited = |bid_window_secs| {
            let (mut order, _) = hello_order(&devnet, 100 * TOKEN, bid_window_secs);
            order.spec.requirements.required_attributes = region.clone();
            order.spec.requirements.signed_by.all_of = vec![auditor.sender()];
            order
        };

        // Not attested: no bid on the audited order, while a plain order posted after it gets one.
        let unattested = tenant
            .create_order(&audited(3_600))
            .await
            .expect("createOrder");
        let (plain, _) = hello_order(&devnet, 100 * TOKEN, 3_600);
        let plain = tenant.create_order(&plain).await.expect("createOrder");
        eventually("a bid on the plain order", || {
            our_bid(&devnet, plain.order_id)
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(our_bid(&devnet, unattested.order_id).await, None);
        let metrics = handle.core().metrics();
        assert_eq!(
            (metrics.bids_skipped.get(), metrics.bids_failed.get()),
            (1, 0),
            "the bidder skips the order instead of sending a bid the contract refuses"
        );
        assert_eq!(
            tenant
                .missing_audit(me, &unattested.spec.requirements)
                .await
                .expect("checkAudit"),
            Some(auditor.sender())
        );

        // Attested: the provider bids and the tenant's acceptance makes the lease.
        auditor.attest(me, &region).await.expect("attest");
        let served = tenant
            .create_order(&audited(3_600))
            .await
            .expect("createOrder");
        let bid_id = eventually("a bid on the audited order", || {
            our_bid(&devnet, served.order_id)
        })
        .await;
        let lease = tenant
            .accept_bid(served.order_id, bid_id)
            .await
            .expect("acceptBid");
        assert_eq!(lease.provider, me);

        // Revoked after the bid: settle passes over it and matches the attested rival.
        let rival = devnet.client(4);
        let hardware = Hardware::detect(dir.path(), &overrides(0)).expect("hardware");
        let mut rival_profile = provider_profile(&config, &hardware, B256::repeat_byte(0xce));
        rival_profile.endpoint = "https://rival.example:8443".to_owned();
        rival
            .register_provider(&rival_profile)
            .await
            .expect("rival registers");
        auditor
            .attest(rival.sender(), &region)
            .await
            .expect("attest rival");
        let contested = tenant
            .create_order(&audited(30))
            .await
            .expect("createOrder");
        let our_bid_id = eventually("a bid on the contested order", || {
            our_bid(&devnet, contested.order_id)
        })
        .await;
        rival
            .place_bid(
                contested.order_id,
                U256::from(9 * TOKEN),
                None,
                &contested.spec.requirements,
            )
            .await
            .expect("the rival bids, dearer");
        auditor.revoke(me, &region).await.expect("revoke");
        devnet.warp(31).await.expect("warp past the bid window");
        let started = tenant.settle(contested.order_id).await.expect("settle");
        assert_eq!(started.provider, rival.sender(), "the attested rival wins");
        assert!(
            started
                .skipped
                .iter()
                .any(|skip| skip.bid_id == our_bid_id && skip.provider == me),
            "{:?}",
            started.skipped
        );
        handle.shutdown().await;
    })
    .await;
}

/// hello.yaml with its web port on the leased IP endpoint `front`.
fn leased_ip_hello() -> String {
    HELLO
        .replace(
            "        to:\n          - global: true\n",
            "        to:\n          - global: true\n            ip: front\n",
        )
        .replace(
            "deployment:\n",
            "endpoints:\n  front:\n    kind: ip\ndeployment:\n",
        )
}

/// Issue #14: with a pool of one address, the first order needing an IP gets a bid and its
/// lease serves on that address; a second one gets no bid (a skip, not a failed lease);
/// once the first lease closes the address is free and a new order gets a bid.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_of_one_leased_ip_serves_one_lease_at_a_time() {
    daemon_test(0..6, || async {
        let devnet = Devnet::start(Some(1)).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = provider_config(&devnet, dir.path(), 0);
        // Apart per test process; Linux routes all of 127/8 to `lo`.
        let leased = std::net::IpAddr::from([
            127,
            0,
            1,
            1 + u8::try_from(std::process::id() % 250).unwrap_or(0),
        ]);
        config.ip_pool.addresses = vec![leased.to_string()];
        register(&devnet, &config).await;
        let handle = start(&devnet, &config).await;
        let tenant = devnet.client(TENANT);
        let ledgers = || handle.core().capacity_report().expect("report").leased_ips;
        assert_eq!(ledgers().capacity, 1);

        let (order, manifest) = sdl_order(&devnet, &leased_ip_hello(), 1_000 * TOKEN, 3_600);
        assert_eq!(order.spec.leased_ips, 1);
        let first = tenant.create_order(&order).await.expect("createOrder");
        let bid_id = eventually("our bid", || our_bid(&devnet, first.order_id)).await;
        assert_eq!(ledgers().reserved, 1);

        let second = tenant.create_order(&order).await.expect("createOrder");
        eventually(
            "the second order to be skipped for want of an IP",
            || async { (handle.core().metrics().bids_no_leased_ip.get() >= 1).then_some(()) },
        )
        .await;
        assert_eq!(our_bid(&devnet, second.order_id).await, None);
        assert_eq!(handle.core().metrics().bids_failed.get(), 0);

        let lease_id = tenant
            .accept_bid(first.order_id, bid_id)
            .await
            .expect("acceptBid")
            .lease_id;
        let uri = deliver_and_run(&devnet, &handle, lease_id, manifest).await;
        assert!(uri.starts_with(&format!("http://{leased}:")), "{uri}");
        let response = eventually("the leased address to answer", || {
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
        let port = uri.rsplit(':').next().expect("port");
        let on_localhost = format!("127.0.0.1:{port}");
        assert!(
            http_get_async(on_localhost.clone(), "/").await.is_err(),
            "{on_localhost} answers"
        );
        assert_eq!((ledgers().allocated, ledgers().reserved), (1, 0));
        let gateway = handle.gateway_addr().expect("gateway served").to_string();
        let status = leasehold_proto::client::ProviderClient::connect(
            &gateway,
            gateway_pin(&devnet).await,
            Duration::from_secs(5),
        )
        .await
        .expect("gateway reachable")
        .status()
        .await
        .expect("Provider.GetStatus");
        let ips = |ledger: &Option<leasehold_proto::gateway::Resources>| {
            ledger.as_ref().map(|resources| resources.leased_ips)
        };
        assert_eq!(
            (ips(&status.capacity), ips(&status.allocated)),
            (Some(1), Some(1))
        );
        let metrics = handle.core().render_metrics().await.expect("metrics");
        assert!(
            metrics.contains("leasehold_leased_ips{ledger=\"allocated\"} 1")
                && metrics.contains("leasehold_orders_skipped_no_leased_ip_total 1"),
            "{metrics}"
        );

        // A restarted daemon rebuilds the pool from its store: the address stays the lease's.
        handle.shutdown().await;
        let handle = start(&devnet, &config).await;
        let ledgers = || handle.core().capacity_report().expect("report").leased_ips;
        assert_eq!((ledgers().capacity, ledgers().allocated), (1, 1));
        let fourth = tenant.create_order(&order).await.expect("createOrder");
        eventually(
            "the fourth order to be skipped for want of an IP",
            || async { (handle.core().metrics().bids_no_leased_ip.get() >= 1).then_some(()) },
        )
        .await;
        assert_eq!(our_bid(&devnet, fourth.order_id).await, None);

        tenant
            .close_lease(lease_id, CloseReason::TenantRequest)
            .await
            .expect("closeLease");
        eventually("the address to return to the pool", || async {
            let ips = ledgers();
            (ips.allocated == 0 && ips.reserved == 0).then_some(())
        })
        .await;
        let (order, _) = sdl_order(&devnet, &leased_ip_hello(), 100 * TOKEN, 3_600);
        let third = tenant.create_order(&order).await.expect("createOrder");
        eventually("a bid once the address is free", || {
            our_bid(&devnet, third.order_id)
        })
        .await;
        assert_eq!(ledgers().reserved, 1);
        handle.shutdown().await;
    })
    .await;
}
