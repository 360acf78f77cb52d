//! End-to-end daemon benchmark: memory of the real `provider` binary when idle and with
//! N running leases, the time from an order to the daemon's bid over a burst of N orders
//! (p50/p99), and the time from LeaseCreated plus manifest to running workloads.
//!
//! Run (instant mining, 100 leases, Docker, 20 minute bound):
//!   cargo build --release -p leasehold-provider --bin provider
//!   cargo bench -p leasehold-provider --bench daemon
//! Knobs (environment): LEASEHOLD_BENCH_PROVIDER_BIN (default: the bench build's own
//! `provider`), LEASEHOLD_BENCH_LEASES (default 100), LEASEHOLD_BENCH_BLOCK_TIME (seconds;
//! default instant mining with `--confirmations 0`), LEASEHOLD_BENCH_RUNTIME (`docker`, the
//! default, or `kubernetes`: the daemon's Kubernetes runtime against the tests' in-process
//! fake API server, for lease counts whose containers would not fit the machine).
//!
//! Without `--bench` (e.g. `cargo test --benches`) it does nothing: it needs Docker, anvil
//! and minutes of wall time.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256};
use alloy::providers::ext::AnvilApi;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result, bail, ensure};
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use leasehold_contracts::devnet::{Devnet, DevnetConfig, ONE_TOKEN as TOKEN};
use leasehold_contracts::{CloseReason, Deployment, MarketplaceClient, NewOrder};
use leasehold_proto::client::{ProviderClient, SignedLeaseClient};
use leasehold_provider::config::Config;
use leasehold_provider::deployment::order_spec_for_group;
use leasehold_provider::hardware::{Hardware, HardwareOverrides};
use leasehold_provider::runtime::lease_selector;

const PROVIDER: usize = 2;
const TENANT: usize = 1;
const HELLO: &str = include_str!("../../manifests/examples/hello.yaml");
/// The key comes from the environment, not a keystore: a keystore's scrypt takes minutes
/// in a debug build, which is what this shared machine may build.
const KEY_ENV: &str = "LEASEHOLD_PROVIDER_KEY";
const RUN_LIMIT: Duration = Duration::from_secs(1_200);
const STEP_LIMIT: Duration = Duration::from_secs(480);
/// Storage slots searched for `Marketplace.nextOrderId` (lease ids are order ids); the
/// slot moves whenever a base contract gains state, so it is found, not hard-coded.
const ORDER_ID_SLOTS: u64 = 32;

/// The tests' fake Kubernetes API server (nodes, pods and a minimal kubelet), shared
/// rather than copied.
#[path = "../tests/it/runtime_kubernetes"]
#[allow(dead_code, unreachable_pub)]
mod fake_cluster {
    pub mod fake_api_server;
}

use fake_cluster::fake_api_server::{FakeApiServer, NODE_IP, NODE_NAME};

/// Where the daemon runs its leases.
enum Workloads {
    Docker,
    /// The fake API server; the daemon's own RSS is what is measured, the server lives in
    /// the bench process.
    Kubernetes(FakeApiServer),
}

impl Workloads {
    fn name(&self) -> &'static str {
        match self {
            Workloads::Docker => "docker",
            Workloads::Kubernetes(_) => "kubernetes (fake API server)",
        }
    }

    /// Waits until the daemon has removed every workload of `leases`.
    async fn wait_gone(&self, leases: std::ops::Range<u64>, started: Instant) -> Result<()> {
        match self {
            Workloads::Docker => wait_for_no_containers(leases, started).await,
            Workloads::Kubernetes(cluster) => {
                let deadline = Instant::now() + STEP_LIMIT;
                loop {
                    let left = cluster
                        .namespaces()
                        .iter()
                        .filter(|name| name.starts_with("lh-"))
                        .count();
                    if left == 0 {
                        progress(started, &format!("leases {leases:?} torn down"));
                        return Ok(());
                    }
                    ensure!(
                        Instant::now() < deadline,
                        "{left} lease namespace(s) remain"
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }
}

/// A fake cluster of one ready node big enough for every bench lease, and a kubeconfig
/// for it in `dir`.
async fn fake_cluster(dir: &Path) -> Result<(FakeApiServer, PathBuf)> {
    let cluster = FakeApiServer::start().await;
    cluster.insert(
        &format!("/api/v1/nodes/{NODE_NAME}"),
        serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE_NAME, "labels": {}},
            "spec": {},
            "status": {
                "allocatable": {"cpu": "64", "memory": "64Gi", "ephemeral-storage": "1Ti"},
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": NODE_IP}],
            },
        }),
    );
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
    .context("writing the kubeconfig")?;
    Ok((cluster, kubeconfig))
}

fn main() -> Result<()> {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!(
            "daemon bench: skipped (run with `cargo bench -p leasehold-provider --bench daemon`)"
        );
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the bench runtime")?;
    runtime.block_on(bench())
}

struct Settings {
    binary: PathBuf,
    leases: usize,
    block_time: Option<u64>,
    kubernetes: bool,
}

fn settings() -> Result<Settings> {
    let binary = std::env::var_os("LEASEHOLD_BENCH_PROVIDER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_provider")));
    let leases = match std::env::var("LEASEHOLD_BENCH_LEASES") {
        Ok(text) => text
            .parse()
            .context("LEASEHOLD_BENCH_LEASES must be a count")?,
        Err(_) => 100,
    };
    let block_time = match std::env::var("LEASEHOLD_BENCH_BLOCK_TIME") {
        Ok(text) => Some(
            text.parse()
                .context("LEASEHOLD_BENCH_BLOCK_TIME must be seconds")?,
        ),
        Err(_) => None,
    };
    let kubernetes = match std::env::var("LEASEHOLD_BENCH_RUNTIME").as_deref() {
        Ok("kubernetes") => true,
        Ok("docker") | Err(_) => false,
        Ok(other) => bail!("LEASEHOLD_BENCH_RUNTIME must be docker or kubernetes, not {other}"),
    };
    Ok(Settings {
        binary,
        leases,
        block_time,
        kubernetes,
    })
}

/// Lease ids (= order ids) start far above what tests on the shared Docker engine use,
/// so container and network names never collide and cleanup by id touches only ours.
fn lease_id_base() -> u64 {
    1_000_000_000 + u64::from(std::process::id()) * 1_000
}

async fn bench() -> Result<()> {
    let Settings {
        binary,
        leases: lease_count,
        block_time,
        kubernetes,
    } = settings()?;
    ensure!(
        binary.exists(),
        "provider binary {} not found",
        binary.display()
    );
    let base = lease_id_base();
    let started = Instant::now();
    let mut run = tokio::spawn(measure(binary, lease_count, block_time, kubernetes, base));
    let outcome = tokio::time::timeout(RUN_LIMIT, &mut run).await;
    if outcome.is_err() {
        // Dropping the task's future kills the daemon and anvil through their guards.
        run.abort();
        let _ = run.await;
    }
    // Whatever happened, nothing of ours stays on the engine.
    let removed = remove_lease_workloads(base..base + lease_count as u64 + 10).await;
    progress(
        started,
        &format!("cleanup: removed {removed} leftover container(s)"),
    );
    match outcome {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => bail!("bench task failed: {join}"),
        Err(_) => bail!("bench exceeded its {RUN_LIMIT:?} bound"),
    }
}

fn progress(started: Instant, message: &str) {
    eprintln!("[{:>6.1}s] {message}", started.elapsed().as_secs_f64());
}

/// The `provider` child process; killed (and reaped) when dropped, also on panic.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then up to 20 s for a clean shutdown before the Drop kill.
    fn stop(mut self) -> Result<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("provider did not stop within 20 s of SIGTERM")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    rss_kib: u64,
    peak_kib: u64,
    threads: u64,
}

fn memory_of(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    Ok(Memory {
        rss_kib: field("VmRSS:"),
        peak_kib: field("VmHWM:"),
        threads: field("Threads:"),
    })
}

/// Samples for `window` and returns the highest RSS seen (peak is the process's VmHWM).
async fn settle_and_sample(pid: u32, window: Duration) -> Result<Memory> {
    let until = Instant::now() + window;
    let mut highest = memory_of(pid)?;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = memory_of(pid)?;
        if now.rss_kib > highest.rss_kib {
            highest.rss_kib = now.rss_kib;
        }
        highest.peak_kib = now.peak_kib;
        highest.threads = now.threads;
    }
    Ok(highest)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The contracts crate's devnet, with the order id counter moved to `base` so lease ids
/// are the bench's own.
struct Chain {
    devnet: Devnet,
}

impl Chain {
    fn endpoint(&self) -> String {
        self.devnet.endpoint()
    }

    fn deployment(&self) -> Deployment {
        self.devnet.deployment
    }

    fn signer(&self, index: usize) -> Result<PrivateKeySigner> {
        self.devnet.signer(index).context("dev account")
    }

    fn client(&self, index: usize) -> Result<MarketplaceClient> {
        self.devnet.client(index).context("client")
    }
}

async fn start_chain(block_time: Option<u64>, base: u64) -> Result<Chain> {
    let devnet = Devnet::start_with(DevnetConfig {
        block_time,
        funded_accounts: 4,
        ..DevnetConfig::default()
    })
    .await
    .context("starting the devnet")?;
    move_order_ids(&devnet, base).await?;
    Ok(Chain { devnet })
}

/// Sets `Marketplace.nextOrderId` to `base`: the storage slot holding its current value
/// whose change the getter reflects.
async fn move_order_ids(devnet: &Devnet, base: u64) -> Result<()> {
    use alloy::providers::Provider;
    use leasehold_contracts::bindings::Marketplace;

    let marketplace = Marketplace::new(devnet.deployment.marketplace, devnet.rpc.clone());
    let current = marketplace
        .nextOrderId()
        .call()
        .await
        .context("nextOrderId")?;
    for slot in 0..ORDER_ID_SLOTS {
        let slot = U256::from(slot);
        let value = devnet
            .rpc
            .get_storage_at(devnet.deployment.marketplace, slot)
            .await
            .context("reading storage")?;
        if value != current {
            continue;
        }
        let set = |value: U256| {
            devnet
                .rpc
                .anvil_set_storage_at(devnet.deployment.marketplace, slot, B256::from(value))
        };
        set(U256::from(base))
            .await
            .context("moving the order id counter")?;
        if marketplace
            .nextOrderId()
            .call()
            .await
            .context("nextOrderId")?
            == U256::from(base)
        {
            return Ok(());
        }
        set(value).await.context("restoring a storage slot")?;
    }
    bail!("no storage slot of the marketplace holds nextOrderId")
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Resources of one bench lease: small enough that 100 fit a 2-core machine.
fn bench_manifest() -> Result<(leasehold_contracts::OrderSpec, B256, Vec<u8>)> {
    let text = HELLO
        .replace("units: 100m", "units: 10m")
        .replace("size: 64Mi", "size: 16Mi")
        .replace("size: 128Mi", "size: 16Mi");
    let sdl = leasehold_manifests::parse(&text).context("bench manifest")?;
    let manifest = sdl.manifest();
    let group = sdl.groups().first().cloned().context("one group")?;
    let spec = order_spec_for_group(&group).context("order spec")?;
    Ok((
        spec,
        B256::from(manifest.hash()),
        manifest.canonical_json().into_bytes(),
    ))
}

fn write_config(
    chain: &Chain,
    dir: &Path,
    gateway_port: u16,
    kubeconfig: Option<&Path>,
) -> Result<PathBuf> {
    let overrides = HardwareOverrides {
        cpu_millis: Some(64_000),
        memory_mib: Some(65_536),
        storage_mib: Some(1_048_576),
        gpus: Vec::new(),
    };
    let hardware = Hardware::detect(dir, &overrides).context("hardware")?;
    let mut config = Config::default_for(&hardware, dir.to_path_buf());
    config.hardware = overrides;
    config.chain.rpc_url = chain.endpoint();
    config.chain.marketplace = chain.deployment().marketplace.to_string();
    config.chain.registry = chain.deployment().registry.to_string();
    config.chain.token = chain.deployment().token.to_string();
    config.gateway.listen = format!("127.0.0.1:{gateway_port}");
    config.key.private_key_env = Some(KEY_ENV.to_owned());
    config.key.keystore = None;
    config.key.password_env = None;
    config.pricing.cpu_core_per_hour = 36 * TOKEN;
    config.pricing.memory_gib_per_hour = 0;
    config.pricing.storage_gib_per_hour = 0;
    if let Some(kubeconfig) = kubeconfig {
        config.runtime.kind = leasehold_provider::config::RuntimeKind::Kubernetes;
        config.runtime.kubernetes.kubeconfig = Some(kubeconfig.to_path_buf());
    }
    let path = dir.join("provider.toml");
    std::fs::write(&path, config.to_toml_string()?).context("writing the config")?;
    Ok(path)
}

fn provider_command(binary: &Path, config: &Path, key: &str, log: &Path) -> Result<Command> {
    let mut command = Command::new(binary);
    command
        .arg("--config")
        .arg(config)
        .env(KEY_ENV, key)
        .env("LEASEHOLD_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log)?)
        .stderr(std::fs::File::create(log.with_extension("err.log"))?);
    Ok(command)
}

/// One lease from order to ready workload, timed.
struct LeaseTiming {
    lease_id: u64,
    /// acceptBid mined -> every replica ready.
    created_to_ready: Duration,
    /// Manifest accepted by the gateway -> every replica ready.
    manifest_to_ready: Duration,
}

async fn post_order(tenant: &MarketplaceClient, order: &NewOrder) -> Result<u64> {
    Ok(tenant
        .create_order(order)
        .await
        .context("createOrder")?
        .order_id)
}

/// Posts `count` orders one after the other, as fast as one tenant can (each mined before
/// the next is sent), while watching `BidPlaced` logs; returns each order with the
/// daemon's bid and the time from its order being mined to its bid being seen (the
/// watcher polls every 50 ms).
async fn burst_of_orders(
    chain: &Chain,
    tenant: &MarketplaceClient,
    order: &NewOrder,
    count: usize,
    provider: Address,
    started: Instant,
) -> Result<(Vec<(u64, u64)>, Vec<Duration>)> {
    use alloy::providers::Provider;
    use alloy::sol_types::SolEvent;
    use leasehold_contracts::bindings::Marketplace;

    let rpc = chain.devnet.rpc.clone();
    let marketplace = chain.deployment().marketplace;
    let first_block = rpc.get_block_number().await.context("block number")?;
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(async move {
        let mut seen: HashMap<u64, (u64, Instant)> = HashMap::new();
        let mut from = first_block;
        let deadline = Instant::now() + STEP_LIMIT;
        loop {
            let head = rpc.get_block_number().await.context("block number")?;
            if head >= from {
                let filter = alloy::rpc::types::Filter::new()
                    .address(marketplace)
                    .event_signature(Marketplace::BidPlaced::SIGNATURE_HASH)
                    .from_block(from)
                    .to_block(head);
                let now = Instant::now();
                for log in rpc.get_logs(&filter).await.context("BidPlaced logs")? {
                    let bid = log
                        .log_decode::<Marketplace::BidPlaced>()
                        .context("decoding BidPlaced")?
                        .inner
                        .data;
                    if bid.provider == provider {
                        let order_id = u64::try_from(bid.orderId).context("order id")?;
                        let bid_id = u64::try_from(bid.bidId).context("bid id")?;
                        seen.entry(order_id).or_insert((bid_id, now));
                    }
                }
                from = head + 1;
            }
            if *done_rx.borrow() && seen.len() >= count {
                return anyhow::Ok(seen);
            }
            ensure!(
                Instant::now() < deadline,
                "only {} of {count} bids placed",
                seen.len()
            );
            tokio::select! {
                _ = done_rx.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    });
    let mut mined = Vec::with_capacity(count);
    for _ in 0..count {
        let order_id = post_order(tenant, order).await?;
        mined.push((order_id, Instant::now()));
    }
    let posting = started.elapsed();
    progress(started, &format!("{count} orders posted"));
    let _ = done_tx.send(true);
    let seen = watcher.await.context("bid watcher")??;
    let mut pairs = Vec::with_capacity(count);
    let mut waits = Vec::with_capacity(count);
    for (order_id, at) in mined {
        let (bid_id, bid_seen) = *seen
            .get(&order_id)
            .with_context(|| format!("no bid on order {order_id}"))?;
        pairs.push((order_id, bid_id));
        waits.push(bid_seen.saturating_duration_since(at));
    }
    progress(
        started,
        &format!(
            "{count} bids placed by the daemon ({:.1}s after the orders were posted)",
            started.elapsed().saturating_sub(posting).as_secs_f64()
        ),
    );
    Ok((pairs, waits))
}

async fn wait_for_bid(tenant: &MarketplaceClient, order_id: u64, provider: Address) -> Result<u64> {
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        let bids = tenant.bids(order_id).await.context("bids")?;
        if let Some(bid) = bids.iter().find(|bid| bid.provider == provider) {
            return Ok(bid.bid_id);
        }
        ensure!(Instant::now() < deadline, "no bid on order {order_id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends the manifest as soon as the daemon knows the lease, then polls Lease.GetStatus
/// every `poll` until every service reports all replicas ready.
async fn deliver_and_wait(
    channel: tonic::transport::Channel,
    tenant: PrivateKeySigner,
    lease_id: u64,
    manifest: Vec<u8>,
    created: Instant,
    poll: Duration,
) -> Result<LeaseTiming> {
    let deadline = created + STEP_LIMIT;
    loop {
        // A fresh client per attempt: one client moves its signing timestamp a second ahead
        // for every identical call within a second, and the provider refuses timestamps
        // more than 5 minutes off. Refused attempts (lease not known yet) burn no signature.
        let mut attempt = SignedLeaseClient::new(channel.clone(), tenant.clone());
        match attempt.send_manifest(lease_id, manifest.clone()).await {
            Ok(()) => break,
            Err(error) => {
                ensure!(
                    Instant::now() < deadline,
                    "manifest of lease {lease_id} never accepted: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Polls faster than once a second drift this client's timestamps ahead by at most
    // STEP_LIMIT, inside the provider's 5 minute window.
    let mut gateway = SignedLeaseClient::new(channel, tenant);
    let delivered = Instant::now();
    loop {
        if let Ok(status) = gateway.status(lease_id).await
            && status.state == "running"
            && !status.services.is_empty()
            && status.services.iter().all(|service| {
                service.total_replicas > 0 && service.ready_replicas == service.total_replicas
            })
        {
            let ready = Instant::now();
            return Ok(LeaseTiming {
                lease_id,
                created_to_ready: ready - created,
                manifest_to_ready: ready - delivered,
            });
        }
        ensure!(
            Instant::now() < deadline,
            "lease {lease_id} never became ready"
        );
        tokio::time::sleep(poll).await;
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summary(name: &str, mut values: Vec<Duration>) -> String {
    values.sort();
    format!(
        "{name}: n={} median={:.2}s p90={:.2}s p99={:.2}s max={:.2}s min={:.2}s",
        values.len(),
        percentile(&values, 0.5).as_secs_f64(),
        percentile(&values, 0.9).as_secs_f64(),
        percentile(&values, 0.99).as_secs_f64(),
        values.last().copied().unwrap_or_default().as_secs_f64(),
        values.first().copied().unwrap_or_default().as_secs_f64(),
    )
}

async fn measure(
    binary: PathBuf,
    lease_count: usize,
    block_time: Option<u64>,
    kubernetes: bool,
    base: u64,
) -> Result<()> {
    let started = Instant::now();
    let mining = match block_time {
        Some(seconds) => format!("{seconds} s blocks, confirmations 2"),
        None => "instant mining, confirmations 0".to_owned(),
    };
    progress(
        started,
        &format!(
            "provider binary {}; {mining}; {lease_count} leases; {} runtime",
            binary.display(),
            if kubernetes { "kubernetes" } else { "docker" }
        ),
    );
    let chain = start_chain(block_time, base).await?;
    progress(
        started,
        &format!("anvil + contracts up at {}", chain.endpoint()),
    );

    let dir = tempfile::tempdir().context("tempdir")?;
    let key = format!(
        "0x{}",
        alloy::hex::encode(chain.signer(PROVIDER)?.to_bytes())
    );
    let gateway_port = free_port()?;
    let (workloads, kubeconfig) = if kubernetes {
        let (cluster, kubeconfig) = fake_cluster(dir.path()).await?;
        (Workloads::Kubernetes(cluster), Some(kubeconfig))
    } else {
        (Workloads::Docker, None)
    };
    let config = write_config(&chain, dir.path(), gateway_port, kubeconfig.as_deref())?;
    let logs = std::env::temp_dir().join(format!("pbench-provider-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;

    let mut register = provider_command(&binary, &config, &key, &logs.join("register.log"))?;
    register.arg("register");
    // Off the async workers: on Kubernetes the fake API server it talks to runs on them.
    let registered = tokio::task::spawn_blocking(move || register.status())
        .await
        .context("provider register")?
        .context("provider register")?;
    ensure!(
        registered.success(),
        "provider register failed; see {}",
        logs.display()
    );

    let mut run = provider_command(&binary, &config, &key, &logs.join("run.log"))?;
    run.args(["run", "--keep-unknown-workloads"]);
    if block_time.is_none() {
        run.args(["--confirmations", "0"]);
    }
    let daemon = Daemon {
        child: run.spawn().context("starting provider run")?,
    };
    let pid = daemon.pid();
    let gateway_addr = format!("127.0.0.1:{gateway_port}");
    // Pinned to the certificate `provider register` published, as a tenant pins it.
    let provider_address = chain.signer(PROVIDER)?.address();
    let pin = leasehold_proto::tls::GatewayPin {
        provider: Some(provider_address),
        cert_sha256: chain
            .client(PROVIDER)?
            .provider_info(provider_address)
            .await
            .context("reading the registration")?
            .gateway_cert_sha256,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let spawned = Instant::now();
    loop {
        if let Ok(mut client) =
            ProviderClient::connect(&gateway_addr, pin, Duration::from_secs(1)).await
            && client.status().await.is_ok()
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "gateway never answered; logs in {}",
            logs.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress(
        started,
        &format!(
            "daemon pid {pid} serving after {:.2}s; logs in {}",
            spawned.elapsed().as_secs_f64(),
            logs.display()
        ),
    );

    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = settle_and_sample(pid, Duration::from_secs(5)).await?;
    progress(
        started,
        &format!(
            "idle: RSS {:.1} MiB (peak so far {:.1} MiB), {} threads",
            mib(idle.rss_kib),
            mib(idle.peak_kib),
            idle.threads
        ),
    );

    let tenant = Arc::new(chain.client(TENANT)?);
    let provider = chain.signer(PROVIDER)?.address();
    let (spec, manifest_hash, manifest) = bench_manifest()?;
    let deposit = U256::from(10 * TOKEN);
    let order = NewOrder {
        token: chain.deployment().token,
        spec,
        manifest_hash,
        max_price_per_hour: U256::from(10 * TOKEN),
        deposit,
        bid_window_secs: 600,
        delivery_window_secs: leasehold_contracts::DEFAULT_DELIVERY_WINDOW_SECS,
    };
    // One approval for every order, so each order is a single transaction.
    let leases_total = lease_count as u64 + 1;
    tenant
        .ensure_allowance(
            chain.deployment().token,
            chain.deployment().marketplace,
            deposit * U256::from(leases_total),
        )
        .await
        .context("approving the deposits")?;
    let channel = leasehold_proto::tls::connect(&gateway_addr, pin, Duration::from_secs(5))
        .await
        .context("gateway channel")?;

    // A single lease on the idle daemon.
    let single_order = post_order(&tenant, &order).await?;
    ensure!(
        single_order == base,
        "order id {single_order} is not the bench's base {base}; refusing to go on"
    );
    let bid = wait_for_bid(&tenant, single_order, provider).await?;
    let lease = tenant
        .accept_bid(single_order, bid)
        .await
        .context("acceptBid")?;
    let single = deliver_and_wait(
        channel.clone(),
        chain.signer(TENANT)?,
        lease.lease_id,
        manifest.clone(),
        Instant::now(),
        Duration::from_millis(50),
    )
    .await?;
    progress(
        started,
        &format!(
            "single lease {}: created->ready {:.2}s, manifest->ready {:.2}s",
            single.lease_id,
            single.created_to_ready.as_secs_f64(),
            single.manifest_to_ready.as_secs_f64()
        ),
    );
    tenant
        .close_lease(single.lease_id, CloseReason::TenantRequest)
        .await
        .context("closing the single lease")?;
    workloads
        .wait_gone(single.lease_id..single.lease_id + 1, started)
        .await?;

    // The batch: a burst of orders (the daemon bids on each), then accept one after the
    // other, each lease delivered and watched by its own task.
    let (orders_and_bids, order_to_bid) =
        burst_of_orders(&chain, &tenant, &order, lease_count, provider, started).await?;
    let orders: Vec<u64> = orders_and_bids.iter().map(|(order, _)| *order).collect();
    // Hundreds of watchers polling Lease.GetStatus would measure the gateway, not the
    // daemon: poll less often the more leases there are.
    let status_poll =
        Duration::from_millis(250).max(Duration::from_millis(10 * lease_count as u64));
    let mut watchers = tokio::task::JoinSet::new();
    for (order_id, bid_id) in &orders_and_bids {
        let lease = tenant
            .accept_bid(*order_id, *bid_id)
            .await
            .context("acceptBid")?;
        watchers.spawn(deliver_and_wait(
            channel.clone(),
            chain.signer(TENANT)?,
            lease.lease_id,
            manifest.clone(),
            Instant::now(),
            status_poll,
        ));
    }
    progress(started, &format!("{lease_count} bids accepted"));
    let mut timings = Vec::with_capacity(lease_count);
    let mut peak_while_deploying = Memory::default();
    while !watchers.is_empty() {
        tokio::select! {
            joined = watchers.join_next() => {
                if let Some(joined) = joined {
                    timings.push(joined.context("lease watcher")??);
                    if timings.len() % 10 == 0 {
                        progress(started, &format!("{}/{lease_count} leases running", timings.len()));
                    }
                }
            }
            () = tokio::time::sleep(Duration::from_millis(250)) => {
                let now = memory_of(pid)?;
                peak_while_deploying.rss_kib = peak_while_deploying.rss_kib.max(now.rss_kib);
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let loaded = settle_and_sample(pid, Duration::from_secs(5)).await?;
    progress(
        started,
        &format!(
            "{lease_count} running: RSS {:.1} MiB, peak {:.1} MiB, {} threads",
            mib(loaded.rss_kib),
            mib(loaded.peak_kib),
            loaded.threads
        ),
    );

    let closing = Instant::now();
    for order_id in &orders {
        tenant
            .close_lease(*order_id, CloseReason::TenantRequest)
            .await
            .context("closeLease")?;
    }
    let first = orders.first().copied().unwrap_or(base);
    let last = orders.last().copied().unwrap_or(base);
    workloads.wait_gone(first..last + 1, started).await?;
    let teardown = closing.elapsed();
    let after = memory_of(pid)?;
    // The gateway's graceful shutdown waits for open connections.
    drop(channel);
    let status = tokio::task::spawn_blocking(move || daemon.stop())
        .await
        .context("stopping the daemon")??;
    progress(started, &format!("daemon stopped: {status}"));

    let created: Vec<Duration> = timings
        .iter()
        .map(|timing| timing.created_to_ready)
        .collect();
    let delivered: Vec<Duration> = timings
        .iter()
        .map(|timing| timing.manifest_to_ready)
        .collect();
    println!(
        "== leasehold provider daemon bench ({mining}; {} runtime) ==",
        workloads.name()
    );
    println!(
        "idle RSS: {:.1} MiB (VmHWM {:.1} MiB, {} threads)",
        mib(idle.rss_kib),
        mib(idle.peak_kib),
        idle.threads
    );
    println!(
        "{lease_count} running leases RSS: {:.1} MiB; peak while deploying {:.1} MiB; VmHWM {:.1} MiB; {} threads",
        mib(loaded.rss_kib),
        mib(peak_while_deploying.rss_kib),
        mib(loaded.peak_kib),
        loaded.threads
    );
    println!("after closing all: RSS {:.1} MiB", mib(after.rss_kib));
    println!(
        "single lease, idle daemon: created->ready {:.2}s, manifest->ready {:.2}s",
        single.created_to_ready.as_secs_f64(),
        single.manifest_to_ready.as_secs_f64()
    );
    println!(
        "{}",
        summary(
            &format!("burst of {lease_count} orders: order mined->bid seen"),
            order_to_bid
        )
    );
    println!(
        "{}",
        summary(
            &format!("{lease_count} leases created->ready (status polled every {status_poll:?})"),
            created
        )
    );
    println!(
        "{}",
        summary(&format!("{lease_count} leases manifest->ready"), delivered)
    );
    println!(
        "teardown of {lease_count} leases (closeLease txs -> containers gone): {:.2}s",
        teardown.as_secs_f64()
    );
    println!("total wall time {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn docker() -> Option<bollard::Docker> {
    bollard::Docker::connect_with_local_defaults().ok()
}

async fn containers_of(docker: &bollard::Docker, lease_id: u64) -> Vec<String> {
    let filters = HashMap::from([("label", vec![lease_selector(lease_id)])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|container| container.id)
        .collect()
}

/// Waits until the daemon has removed every container of `leases`.
async fn wait_for_no_containers(leases: std::ops::Range<u64>, started: Instant) -> Result<()> {
    let docker = docker().context("connecting to Docker")?;
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        let mut left = 0;
        for lease_id in leases.clone() {
            left += containers_of(&docker, lease_id).await.len();
        }
        if left == 0 {
            progress(started, &format!("leases {leases:?} torn down"));
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{left} container(s) of closed leases remain"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Force-removes containers and networks of `leases`; returns how many containers.
async fn remove_lease_workloads(leases: std::ops::Range<u64>) -> usize {
    let Some(docker) = docker() else {
        return 0;
    };
    let mut removed = 0;
    for lease_id in leases {
        for id in containers_of(&docker, lease_id).await {
            let force = RemoveContainerOptionsBuilder::new().force(true).build();
            if docker.remove_container(&id, Some(force)).await.is_ok() {
                removed += 1;
            }
        }
        let filters = HashMap::from([("label", vec![lease_selector(lease_id)])]);
        let options = bollard::query_parameters::ListNetworksOptionsBuilder::new()
            .filters(&filters)
            .build();
        for network in docker
            .list_networks(Some(options))
            .await
            .unwrap_or_default()
        {
            if let Some(id) = network.id {
                let _ = docker.remove_network(&id).await;
            }
        }
    }
    removed
}
