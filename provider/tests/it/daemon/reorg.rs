//! Chain reorgs under a running daemon (anvil's `anvil_reorg`, 1 s blocks, two
//! confirmations): a lease whose creation is reorged away is torn down, its allocation
//! freed and nothing is withdrawn for it; a `LeaseCreated` that moves to another block runs
//! one deployment, untouched.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::rpc::types::Filter;
use alloy::rpc::types::anvil::{ReorgOptions, TransactionData};
use alloy::sol_types::SolEvent;
use leasehold_contracts::bindings::Marketplace;
use leasehold_provider::daemon::{Daemon, DaemonHandle, DaemonOptions};

use super::*;

fn reorg_options() -> DaemonOptions {
    DaemonOptions {
        confirmations: 2,
        withdraw_interval: Duration::from_secs(1),
        ..options()
    }
}

/// The block and transaction of the lease's `LeaseCreated` on the canonical chain.
async fn lease_created(devnet: &Devnet, lease_id: u64) -> Option<(u64, B256)> {
    let filter = Filter::new()
        .address(devnet.deployment.marketplace)
        .event_signature(Marketplace::LeaseCreated::SIGNATURE_HASH)
        .topic1(U256::from(lease_id))
        .from_block(0);
    let logs = devnet.rpc.get_logs(&filter).await.expect("eth_getLogs");
    assert!(logs.len() <= 1, "{logs:?}");
    logs.first().map(|log| {
        (
            log.block_number.expect("block"),
            log.transaction_hash.expect("tx"),
        )
    })
}

async fn payments_withdrawn(devnet: &Devnet, lease_id: u64) -> usize {
    let filter = Filter::new()
        .address(devnet.deployment.marketplace)
        .event_signature(Marketplace::PaymentWithdrawn::SIGNATURE_HASH)
        .topic1(U256::from(lease_id))
        .from_block(0);
    devnet
        .rpc
        .get_logs(&filter)
        .await
        .expect("eth_getLogs")
        .len()
}

async fn token_balance(devnet: &Devnet, owner: Address) -> U256 {
    devnet
        .client(0)
        .token_balance(devnet.deployment.token, owner)
        .await
        .expect("balanceOf")
}

async fn metric(handle: &DaemonHandle, name: &str) -> u64 {
    let addr = handle.metrics_addr().expect("metrics served").to_string();
    let text = http_get_async(format!("http://{addr}"), "/metrics")
        .await
        .expect("GET /metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// A daemon on a 1 s block devnet with one running hello lease.
async fn running_lease() -> (Devnet, tempfile::TempDir, DaemonHandle, u64, Vec<String>) {
    let devnet = Devnet::start(Some(1)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = provider_config(&devnet, dir.path(), 0);
    register(&devnet, &config).await;
    let handle = Daemon::start(config, devnet.signer(PROVIDER), reorg_options())
        .await
        .expect("daemon starts");
    let (order, manifest) = hello_order(&devnet, 1_000 * TOKEN, 3_600);
    let lease_id = lease_for(&devnet, &order).await;
    deliver_and_run(&devnet, &handle, lease_id, manifest).await;
    let containers = containers_of(lease_id).await;
    assert_eq!(containers.len(), 1, "{containers:?}");
    (devnet, dir, handle, lease_id, containers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_reorged_away_is_torn_down_freed_and_never_paid() {
    daemon_test(0..4, || async {
        let (devnet, _dir, handle, lease_id, _) = running_lease().await;
        let provider = devnet.signer(PROVIDER).address();
        let (created_at, _) = lease_created(&devnet, lease_id)
            .await
            .expect("LeaseCreated");
        let balance_before = token_balance(&devnet, provider).await;
        // Let it be confirmed and accrue, so that a withdrawal would have something to take.
        tokio::time::sleep(Duration::from_secs(3)).await;

        let head = devnet.rpc.get_block_number().await.expect("head");
        let depth = head - created_at + 1;
        assert!(depth > 2, "deeper than the confirmations: {depth}");
        devnet
            .rpc
            .anvil_reorg(ReorgOptions {
                depth,
                tx_block_pairs: Vec::new(),
            })
            .await
            .expect("anvil_reorg");
        assert_eq!(
            lease_created(&devnet, lease_id).await,
            None,
            "the lease is gone"
        );

        eventually(
            "the reorged lease to be forgotten and torn down",
            || async {
                (lease_state(&handle, lease_id).await.is_none()
                    && containers_of(lease_id).await.is_empty())
                .then_some(())
            },
        )
        .await;
        let report = handle.core().capacity_report().expect("report");
        assert_eq!(report.allocated.cpu_millis, 0, "the allocation is freed");
        assert_eq!(
            report.reserved.cpu_millis, 0,
            "and not turned back into a reservation"
        );
        assert!(metric(&handle, "leasehold_chain_reorgs_total").await >= 1);
        assert!(metric(&handle, "leasehold_chain_reorg_max_depth").await >= 3);
        assert_eq!(
            metric(&handle, "leasehold_leases_reorged_away_total").await,
            1
        );
        let history = handle
            .core()
            .store()
            .history(lease_id)
            .await
            .expect("history");
        assert!(
            history.iter().any(|entry| entry.kind == "reorged"),
            "{history:?}"
        );

        // Several withdraw intervals later nothing was paid for it on the canonical chain.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(payments_withdrawn(&devnet, lease_id).await, 0);
        assert_eq!(token_balance(&devnet, provider).await, balance_before);
        handle.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_created_that_moves_to_another_block_runs_once() {
    daemon_test(0..4, || async {
        let (devnet, _dir, handle, lease_id, containers) = running_lease().await;
        let (created_at, accept_tx) = lease_created(&devnet, lease_id)
            .await
            .expect("LeaseCreated");
        let raw = devnet
            .rpc
            .get_raw_transaction_by_hash(accept_tx)
            .await
            .expect("eth_getRawTransactionByHash")
            .expect("the acceptBid transaction");
        let head = devnet.rpc.get_block_number().await.expect("head");
        let depth = head - created_at + 1;
        assert!(depth > 2, "deeper than the confirmations: {depth}");
        // The same acceptBid, two blocks later than before.
        devnet
            .rpc
            .anvil_reorg(ReorgOptions {
                depth,
                tx_block_pairs: vec![(TransactionData::Raw(raw), 2)],
            })
            .await
            .expect("anvil_reorg");
        let (moved_to, _) = lease_created(&devnet, lease_id)
            .await
            .expect("still leased");
        assert_eq!(moved_to, created_at + 2);

        eventually("the follower to rewind past the move", || async {
            (metric(&handle, "leasehold_chain_reorgs_total").await >= 1).then_some(())
        })
        .await;
        // Past the moved block with its confirmations, the re-delivered event was handled.
        eventually("the cursor past the moved LeaseCreated", || async {
            let cursor = handle.core().store().cursor_state("chain").await.ok()??;
            cursor
                .checkpoints
                .iter()
                .any(|c| c.number >= moved_to)
                .then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            containers_of(lease_id).await,
            containers,
            "the same one deployment: nothing torn down, nothing doubled"
        );
        assert_eq!(
            lease_state(&handle, lease_id).await,
            Some(LeaseStateKind::Running)
        );
        assert_eq!(
            metric(&handle, "leasehold_leases_reorged_away_total").await,
            0
        );
        let report = handle.core().capacity_report().expect("report");
        assert_eq!(report.allocated.cpu_millis, 100, "allocated once");
        handle.shutdown().await;
    })
    .await;
}
