//! The event follower against a real anvil with 1 s blocks, including an RPC outage: anvil is
//! frozen with SIGSTOP for several seconds while events keep being submitted.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::rpc::types::{Filter, Log};
use leasehold_contracts::bindings::TestToken;
use leasehold_contracts::{
    BackoffPolicy, ChainEvent, CursorStore, Deployment, FileCursorStore, Follower, FollowerConfig,
    FollowerStats, LogHandler, MarketplaceClient, RpcLogSource, fund_with_faucet,
};
use tokio::sync::oneshot;

use crate::support::*;

/// Where a log sits in the chain plus its transaction: enough to detect loss and repetition.
type Seen = (u64, u64, B256);

fn seen(log: &Log) -> Seen {
    (
        log.block_number.expect("block number"),
        log.log_index.expect("log index"),
        log.transaction_hash.expect("tx hash"),
    )
}

#[derive(Clone)]
struct Collector(Arc<Mutex<Vec<Seen>>>, Deployment);

impl Collector {
    fn new(deployment: Deployment) -> Self {
        Self(Arc::default(), deployment)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("undecodable Leasehold log")]
struct Undecodable;

impl LogHandler for Collector {
    type Error = Undecodable;
    async fn handle(&mut self, log: &Log) -> Result<(), Undecodable> {
        // Every followed log comes from our contracts, so anything but token logs must decode.
        if !is_token_event(log) && !matches!(ChainEvent::decode(log, &self.1), Ok(Some(_))) {
            return Err(Undecodable);
        }
        self.0.lock().expect("collector lock").push(seen(log));
        Ok(())
    }
}

/// Token logs (Transfer, Approval, FaucetDrip) are not Leasehold marketplace events.
fn is_token_event(log: &Log) -> bool {
    use alloy::sol_types::SolEvent;
    let token_topics = [
        TestToken::Transfer::SIGNATURE_HASH,
        TestToken::Approval::SIGNATURE_HASH,
        TestToken::FaucetDrip::SIGNATURE_HASH,
    ];
    log.topic0().is_some_and(|t| token_topics.contains(t))
}

/// Freezes a process until dropped (SIGSTOP / SIGCONT through the `kill` utility).
struct Frozen(u32);

fn signal(name: &str, pid: u32) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}

impl Frozen {
    fn new(pid: u32) -> Self {
        assert!(signal("STOP", pid), "kill -STOP {pid} failed");
        Self(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // Always resume, even when the test fails, so anvil can be killed cleanly.
        signal("CONT", self.0);
    }
}

fn follower_config(start_block: u64) -> FollowerConfig {
    FollowerConfig {
        start_block,
        confirmations: 2,
        max_range: 4,
        poll_interval: Duration::from_millis(200),
        request_timeout: Duration::from_secs(1),
        backoff: BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(800),
        },
        max_consecutive_failures: None,
        ..FollowerConfig::default()
    }
}

struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<FollowerStats>,
}

fn spawn_follower(devnet: &Devnet, store: FileCursorStore, collector: Collector) -> Running {
    let d = devnet.deployment;
    let source = RpcLogSource::new(devnet.rpc.clone(), [d.token, d.registry, d.marketplace]);
    let mut follower = Follower::new(source, store, follower_config(d.start_block));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut handler = collector;
        let shutdown = async {
            let _ = stopped.await;
        };
        follower
            .run(&mut handler, shutdown)
            .await
            .expect("follower failed");
        follower.stats()
    });
    Running { stop, task }
}

impl Running {
    async fn stop(self) -> FollowerStats {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("follower did not stop")
            .expect("follower task panicked")
    }
}

/// Mints a little to the sender itself; emits Transfer and FaucetDrip. Returns the block.
async fn emit(client: &MarketplaceClient, token: Address) -> u64 {
    fund_with_faucet(
        client.provider(),
        token,
        client.sender(),
        &[client.sender()],
        U256::from(1),
    )
    .await
    .expect("faucet");
    client
        .provider()
        .get_block_number()
        .await
        .expect("block number")
}

/// Waits until the persisted cursor has passed `block`.
async fn wait_for_cursor(store: &FileCursorStore, block: u64) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while store
            .load()
            .await
            .expect("cursor")
            .is_none_or(|cursor| cursor.next_block <= block)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("cursor never passed block {block}"));
}

async fn chain_logs(devnet: &Devnet, from: u64, to: u64) -> Vec<Seen> {
    let d = devnet.deployment;
    let filter = Filter::new()
        .address(vec![d.token, d.registry, d.marketplace])
        .from_block(from)
        .to_block(to);
    let mut logs: Vec<Seen> = devnet
        .rpc
        .get_logs(&filter)
        .await
        .expect("eth_getLogs")
        .iter()
        .map(seen)
        .collect();
    logs.sort();
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_misses_and_repeats_nothing_across_an_rpc_outage_and_a_restart() {
    within(async {
        let devnet = Devnet::start(None).await;
        devnet
            .rpc
            .anvil_set_interval_mining(1)
            .await
            .expect("interval mining");
        let token = devnet.deployment.token;
        let dir = tempfile::tempdir().expect("tempdir");
        let cursor_path = dir.path().join("follower-cursor.json");
        let collector = Collector::new(devnet.deployment);
        let running = spawn_follower(
            &devnet,
            FileCursorStore::new(&cursor_path),
            collector.clone(),
        );

        let before = devnet.client(DEPLOYER);
        let during = devnet.client(TENANT);
        let after = devnet.client(PROVIDER_A);
        for _ in 0..3 {
            emit(&before, token).await;
        }
        // Registering adds registry events (and an approval) to the mix.
        after
            .register_provider(&profile("https://p.example", resources(1_000, 1_024, 0)))
            .await
            .expect("register");

        let pid = devnet.anvil.child().id();
        let frozen = Frozen::new(pid);
        // Submitted while anvil is frozen: these complete only after it resumes.
        let during_task = tokio::spawn(async move {
            let first = emit(&during, token).await;
            let second = emit(&during, token).await;
            first.max(second)
        });
        tokio::time::sleep(Duration::from_secs(4)).await;
        drop(frozen);

        let mut last_block = 0;
        for _ in 0..3 {
            last_block = emit(&after, token).await;
        }
        let during_block = tokio::time::timeout(Duration::from_secs(30), during_task)
            .await
            .expect("transactions sent during the outage never completed")
            .expect("sender task panicked");
        let last_block = last_block.max(during_block);

        let store = FileCursorStore::new(&cursor_path);
        wait_for_cursor(&store, last_block).await;
        let stats = running.stop().await;
        let committed = store
            .load()
            .await
            .expect("cursor")
            .expect("cursor saved")
            .next_block;

        let expected = chain_logs(&devnet, devnet.deployment.start_block, committed - 1).await;
        let delivered = collector.0.lock().expect("collector").clone();
        assert!(
            expected.len() >= 16 + 3,
            "too few logs on chain: {}",
            expected.len()
        );
        assert_eq!(
            delivered, expected,
            "every log exactly once, in chain order"
        );
        assert!(
            stats.rpc_failures > 0,
            "the outage should have caused RPC failures: {stats:?}"
        );
        assert_eq!(stats.delivered, expected.len() as u64);

        // A restarted follower resumes from the persisted cursor: only new logs arrive.
        let resumed = Collector::new(devnet.deployment);
        let running = spawn_follower(&devnet, FileCursorStore::new(&cursor_path), resumed.clone());
        let new_block = emit(&before, token).await;
        wait_for_cursor(&store, new_block).await;
        running.stop().await;
        let committed_after = store
            .load()
            .await
            .expect("cursor")
            .expect("cursor saved")
            .next_block;
        let expected_new = chain_logs(&devnet, committed, committed_after - 1).await;
        let delivered_new = resumed.0.lock().expect("collector").clone();
        assert_eq!(delivered_new, expected_new);
        assert_eq!(
            delivered_new.len(),
            2,
            "one faucet call: Transfer and FaucetDrip"
        );
        assert!(delivered_new.iter().all(|log| log.0 >= committed));
    })
    .await;
}

/// Bench (opt-in, BENCHMARKS.md): a follower catching up over 100k blocks of history through
/// an endpoint that refuses `eth_getLogs` over more than 10k blocks, with events spread over
/// the range. Run (BENCHMARKS.md has the figures and the scaled-down variant):
/// `cargo test -p leasehold-contracts --test it -- --ignored --nocapture follower_catch_up_bench`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "bench: builds 100k blocks of history (minutes of anvil_mine)"]
async fn follower_catch_up_bench() {
    use leasehold_contracts::MemoryCursorStore;
    use leasehold_contracts::devnet::RpcProxy;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    // LEASEHOLD_BENCH_BLOCKS and LEASEHOLD_BENCH_LOG_LIMIT scale the run down where anvil
    // mines slowly (a loaded machine mines 1,300 to 3,600 blocks a minute).
    let setting = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(default)
    };
    let blocks = setting("LEASEHOLD_BENCH_BLOCKS", 100_000);
    let limit = setting("LEASEHOLD_BENCH_LOG_LIMIT", 10_000).max(1);
    const SEGMENTS: u64 = 20;

    let devnet = Devnet::start_with(leasehold_contracts::devnet::DevnetConfig {
        prune_history: true,
        ..Default::default()
    })
    .await;
    let d = devnet.deployment;
    let client = devnet.client(TENANT);
    let building = Instant::now();
    for _ in 0..SEGMENTS {
        emit(&client, d.token).await;
        devnet
            .rpc
            .anvil_mine(Some(blocks / SEGMENTS), None)
            .await
            .expect("anvil_mine");
    }
    let head = devnet.rpc.get_block_number().await.expect("head");
    eprintln!(
        "history: {head} blocks, {SEGMENTS} event batches, built in {:.1?}",
        building.elapsed()
    );
    let mut expected = Vec::new();
    let mut from = d.start_block;
    while from <= head {
        let to = head.min(from + limit - 1);
        expected.extend(chain_logs(&devnet, from, to).await);
        from = to + 1;
    }

    for (label, max_range) in [
        ("max_range = limit", limit),
        ("max_range = 5 x limit", 5 * limit),
    ] {
        let proxy = RpcProxy::start(&devnet.endpoint()).await.expect("proxy");
        proxy.limit_log_range(limit);
        let source = RpcLogSource::new(
            alloy::providers::ProviderBuilder::new()
                .connect_http(proxy.url().parse().expect("url"))
                .erased(),
            [d.token, d.registry, d.marketplace],
        );
        let config = FollowerConfig {
            confirmations: 0,
            max_range,
            request_timeout: Duration::from_secs(60),
            ..follower_config(d.start_block)
        };
        let mut follower = Follower::new(source, MemoryCursorStore::default(), config);
        let collector = Collector::new(d);
        let mut handler = collector.clone();
        let started = Instant::now();
        loop {
            match follower.step(&mut handler).await {
                Ok(leasehold_contracts::Step::CaughtUp { .. }) => break,
                Ok(_) | Err(leasehold_contracts::FollowerError::Source { .. }) => {}
                Err(other) => panic!("follower: {other}"),
            }
        }
        let elapsed = started.elapsed();
        let mut delivered = collector.0.lock().expect("collector").clone();
        delivered.sort();
        assert_eq!(delivered, expected, "every log once");
        let counters = proxy.counters();
        eprintln!(
            "{label}: caught up over {head} blocks in {elapsed:.1?}: {} logs, {} calls forwarded, {} ranges refused, widest {} blocks",
            delivered.len(),
            counters.forwarded.load(Ordering::SeqCst),
            counters.ranges_refused.load(Ordering::SeqCst),
            counters.widest_range.load(Ordering::SeqCst),
        );
    }
}
