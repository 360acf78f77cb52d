//! The follower woken by a `newHeads` WebSocket subscription on anvil, and its poll fallback
//! when the socket cannot be reached.

use std::time::Duration;

use alloy::primitives::U256;
use alloy::providers::Provider as _;
use alloy::rpc::types::Log;
use leasehold_contracts::{
    Follower, FollowerConfig, HeadWatch, LogHandler, MemoryCursorStore, RpcLogSource,
    fund_with_faucet,
};
use tokio::sync::{mpsc, oneshot};

use crate::support::*;

/// Hands every followed log's block number to the test.
struct Forward(mpsc::UnboundedSender<u64>);

impl LogHandler for Forward {
    type Error = std::convert::Infallible;
    async fn handle(&mut self, log: &Log) -> Result<(), Self::Error> {
        let _ = self.0.send(log.block_number.unwrap_or_default());
        Ok(())
    }
}

/// Follows the token's logs from the next block on, woken by `heads`, polling every
/// `poll_interval` otherwise. Returns the receiver of log blocks and the stop switch.
async fn follow(
    devnet: &Devnet,
    heads: HeadWatch,
    poll_interval: Duration,
) -> (mpsc::UnboundedReceiver<u64>, oneshot::Sender<()>) {
    let next = devnet.rpc.get_block_number().await.expect("head") + 1;
    let config = FollowerConfig {
        start_block: next,
        confirmations: 0,
        poll_interval,
        ..FollowerConfig::default()
    };
    let source = RpcLogSource::new(devnet.rpc.clone(), [devnet.deployment.token]);
    let mut follower = Follower::new(source, MemoryCursorStore::default(), config).wake_on(heads);
    let (logs, received) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut handler = Forward(logs);
        let shutdown = async {
            let _ = stopped.await;
        };
        follower.run(&mut handler, shutdown).await
    });
    (received, stop)
}

/// Mints to the tenant: one block with token logs. Returns its number.
async fn emit(devnet: &Devnet) -> u64 {
    let tenant = devnet.client(TENANT);
    fund_with_faucet(
        tenant.provider(),
        devnet.deployment.token,
        tenant.sender(),
        &[tenant.sender()],
        U256::from(1),
    )
    .await
    .expect("faucet");
    devnet.rpc.get_block_number().await.expect("head")
}

async fn next_log_block(logs: &mut mpsc::UnboundedReceiver<u64>, limit: Duration) -> Option<u64> {
    tokio::time::timeout(limit, logs.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_follower_gets_logs_without_waiting_for_its_poll() {
    within(async {
        let devnet = Devnet::start(None).await;
        let heads = HeadWatch::websocket(&devnet.ws_endpoint()).expect("ws url");
        tokio::time::timeout(Duration::from_secs(10), async {
            while !heads.is_subscribed() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("never subscribed to anvil's new heads");
        // A poll interval no test waits for: only the subscription can deliver in time.
        let (mut logs, stop) = follow(&devnet, heads, Duration::from_secs(3_600)).await;
        for _ in 0..3 {
            let block = emit(&devnet).await;
            let seen = next_log_block(&mut logs, Duration::from_secs(10)).await;
            assert_eq!(
                seen,
                Some(block),
                "the log of block {block} was not delivered"
            );
            // The faucet emits two logs (Transfer, FaucetDrip) in that block.
            assert_eq!(
                next_log_block(&mut logs, Duration::from_secs(10)).await,
                Some(block)
            );
        }
        let _ = stop.send(());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_socket_falls_back_to_polling() {
    within(async {
        let devnet = Devnet::start(None).await;
        // Nothing listens on port 1: the subscription keeps failing and reconnecting.
        let heads = HeadWatch::websocket("ws://127.0.0.1:1").expect("ws url");
        let (mut logs, stop) = follow(&devnet, heads.clone(), Duration::from_millis(200)).await;
        let block = emit(&devnet).await;
        assert_eq!(
            next_log_block(&mut logs, Duration::from_secs(10)).await,
            Some(block),
            "the poll did not deliver the log"
        );
        assert!(!heads.is_subscribed());
        let _ = stop.send(());
    })
    .await;
}
