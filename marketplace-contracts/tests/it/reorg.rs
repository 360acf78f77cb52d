//! The follower against real anvil reorgs (`anvil_reorg`): one shallower than the
//! confirmation depth (never seen, nothing to undo) and one deeper (found through the saved
//! block hashes, what it removed retracted, the new chain delivered once).

use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::rpc::types::anvil::{ReorgOptions, TransactionData};
use alloy::rpc::types::{Filter, Log, TransactionRequest};
use alloy::sol_types::SolCall;
use leasehold_contracts::bindings::TestToken;
use leasehold_contracts::{
    BackoffPolicy, Follower, FollowerConfig, LogHandler, MemoryCursorStore, Reorg, RpcLogSource,
    Step,
};

use crate::support::*;

/// A log's identity: block, index in block, transaction.
type Seen = (u64, u64, B256);

fn seen(log: &Log) -> Seen {
    (
        log.block_number.expect("block number"),
        log.log_index.expect("log index"),
        log.transaction_hash.expect("tx hash"),
    )
}

/// What a handler that undoes retracted logs believes the chain holds, plus every delivery.
#[derive(Default)]
struct Live {
    live: Vec<Seen>,
    deliveries: Vec<Seen>,
    reorgs: Vec<(u64, u64, Vec<Seen>)>,
}

impl LogHandler for Live {
    type Error = std::convert::Infallible;
    async fn handle(&mut self, log: &Log) -> Result<(), Self::Error> {
        self.live.push(seen(log));
        self.deliveries.push(seen(log));
        Ok(())
    }
    async fn rewind(&mut self, reorg: &Reorg) -> Result<(), Self::Error> {
        let retracted: Vec<Seen> = reorg.retracted.iter().map(seen).collect();
        self.live.retain(|log| !retracted.contains(log));
        self.reorgs.push((reorg.fork_block, reorg.depth, retracted));
        Ok(())
    }
}

fn config(start_block: u64, confirmations: u64) -> FollowerConfig {
    FollowerConfig {
        start_block,
        confirmations,
        max_range: 2,
        poll_interval: Duration::from_millis(50),
        request_timeout: Duration::from_secs(5),
        backoff: BackoffPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
        },
        max_consecutive_failures: Some(5),
        ..FollowerConfig::default()
    }
}

type RpcFollower<'a> = Follower<RpcLogSource<alloy::providers::DynProvider>, &'a MemoryCursorStore>;

async fn drain(follower: &mut RpcFollower<'_>, handler: &mut Live) {
    loop {
        match follower.step(handler).await.expect("follower step") {
            Step::CaughtUp { .. } => return,
            Step::Advanced { .. } | Step::Rewound { .. } => {}
        }
    }
}

/// A faucet call from `from` as anvil's unsigned JSON transaction (anvil signs for its dev
/// accounts), for the new chain of an `anvil_reorg`.
fn faucet_tx(token: Address, from: Address, amount: u64) -> TransactionData {
    let input = TestToken::faucetCall {
        to: from,
        amount: U256::from(amount),
    }
    .abi_encode();
    TransactionData::JSON(
        TransactionRequest::default()
            .from(from)
            .to(token)
            .input(input.into()),
    )
}

async fn canonical_logs(devnet: &Devnet, from: u64, to: u64) -> Vec<Seen> {
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

struct Setup {
    devnet: Devnet,
    token: Address,
    tenant: Address,
}

async fn setup() -> Setup {
    let devnet = Devnet::start(None).await;
    let token = devnet.deployment.token;
    let tenant = devnet.client(TENANT).sender();
    Setup {
        devnet,
        token,
        tenant,
    }
}

async fn emit(setup: &Setup, amount: u64) -> u64 {
    leasehold_contracts::fund_with_faucet(
        &setup.devnet.rpc,
        setup.token,
        setup.tenant,
        &[setup.tenant],
        U256::from(amount),
    )
    .await
    .expect("faucet");
    setup.devnet.rpc.get_block_number().await.expect("head")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_deeper_than_the_confirmations_is_rewound_and_the_new_chain_delivered_once() {
    within(async {
        let setup = setup().await;
        let devnet = &setup.devnet;
        let start = devnet.deployment.start_block;
        let source = RpcLogSource::new(
            devnet.rpc.clone(),
            [
                devnet.deployment.token,
                devnet.deployment.registry,
                devnet.deployment.marketplace,
            ],
        );
        let store = MemoryCursorStore::default();
        let mut follower = Follower::new(source, &store, config(start, 2));
        let mut handler = Live::default();

        let kept = emit(&setup, 1).await;
        let doomed_first = emit(&setup, 2).await;
        let doomed_second = emit(&setup, 3).await;
        devnet.rpc.anvil_mine(Some(3), None).await.expect("mine");
        drain(&mut follower, &mut handler).await;
        let head = devnet.rpc.get_block_number().await.expect("head");
        assert_eq!(handler.live, canonical_logs(devnet, start, head - 2).await);
        let doomed: Vec<Seen> = handler
            .live
            .iter()
            .filter(|log| log.0 >= doomed_first)
            .copied()
            .collect();
        assert_eq!(
            doomed.len(),
            4,
            "two faucet calls, two logs each: {doomed:?}"
        );

        // Replace everything from the first doomed block on (5 blocks, deeper than the two
        // confirmations) with a chain holding one different faucet call.
        let depth = head - doomed_first + 1;
        devnet
            .rpc
            .anvil_reorg(ReorgOptions {
                depth,
                tx_block_pairs: vec![(faucet_tx(setup.token, setup.tenant, 7), 1)],
            })
            .await
            .expect("anvil_reorg");
        devnet.rpc.anvil_mine(Some(3), None).await.expect("mine");
        drain(&mut follower, &mut handler).await;

        let head = devnet.rpc.get_block_number().await.expect("head");
        let canonical = canonical_logs(devnet, start, head - 2).await;
        assert!(
            canonical.iter().all(|log| !doomed.contains(log)),
            "the reorg must have removed the doomed logs: {canonical:?}"
        );
        assert_eq!(
            handler.live, canonical,
            "the handler's view is the canonical chain"
        );
        assert_eq!(handler.reorgs.len(), 1, "{:?}", handler.reorgs);
        let (fork_block, found_depth, retracted) = &handler.reorgs[0];
        assert!(
            *fork_block > kept && *fork_block <= doomed_first,
            "{fork_block}"
        );
        assert!(
            *found_depth > 2,
            "deeper than the confirmations: {found_depth}"
        );
        assert_eq!(retracted, &doomed);
        // Every canonical log after the fork reached the handler exactly once.
        for log in canonical.iter().filter(|log| log.0 >= *fork_block) {
            let times = handler.deliveries.iter().filter(|d| *d == log).count();
            assert_eq!(times, 1, "{log:?} delivered {times} times");
        }
        assert!(doomed_second > doomed_first);
        assert_eq!(follower.stats().reorgs, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_within_the_confirmations_is_never_seen() {
    within(async {
        let setup = setup().await;
        let devnet = &setup.devnet;
        let start = devnet.deployment.start_block;
        let source = RpcLogSource::new(
            devnet.rpc.clone(),
            [
                devnet.deployment.token,
                devnet.deployment.registry,
                devnet.deployment.marketplace,
            ],
        );
        let store = MemoryCursorStore::default();
        let mut follower = Follower::new(source, &store, config(start, 3));
        let mut handler = Live::default();

        emit(&setup, 1).await;
        devnet.rpc.anvil_mine(Some(3), None).await.expect("mine");
        drain(&mut follower, &mut handler).await;
        let before = handler.live.clone();
        // A fresh event at the head, then a 2-block reorg replacing it with another.
        let unconfirmed = emit(&setup, 2).await;
        devnet.rpc.anvil_mine(Some(1), None).await.expect("mine");
        drain(&mut follower, &mut handler).await;
        assert_eq!(
            handler.live, before,
            "block {unconfirmed} is not confirmed yet"
        );
        devnet
            .rpc
            .anvil_reorg(ReorgOptions {
                depth: 2,
                tx_block_pairs: vec![(faucet_tx(setup.token, setup.tenant, 9), 0)],
            })
            .await
            .expect("anvil_reorg");
        devnet.rpc.anvil_mine(Some(4), None).await.expect("mine");
        drain(&mut follower, &mut handler).await;

        let head = devnet.rpc.get_block_number().await.expect("head");
        let canonical = canonical_logs(devnet, start, head - 3).await;
        assert_eq!(handler.live, canonical);
        assert_eq!(
            handler.deliveries, canonical,
            "nothing delivered twice or retracted"
        );
        assert!(handler.reorgs.is_empty(), "{:?}", handler.reorgs);
        assert_eq!(follower.stats().reorgs, 0);
    })
    .await;
}
