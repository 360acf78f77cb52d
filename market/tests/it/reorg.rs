//! Reorgs on a real anvil (`anvil_reorg`): one deeper than the confirmations (rewound: the
//! index equals a fresh index of the new chain) and one within them (never indexed).

use alloy::primitives::U256;
use alloy::providers::ext::AnvilApi;
use alloy::rpc::types::TransactionRequest;
use alloy::rpc::types::anvil::{ReorgOptions, TransactionData};
use alloy::sol_types::SolCall;
use leasehold_contracts::bindings::Marketplace;
use leasehold_contracts::devnet::Devnet;

use std::time::Duration;

use crate::stream::Subscription;
use crate::support::*;

/// `cancelOrder(order_id)` from the tenant, as anvil's unsigned JSON transaction (anvil signs
/// for its dev accounts), for the new chain of an `anvil_reorg`.
fn cancel_tx(devnet: &Devnet, order_id: u64) -> TransactionData {
    let input = Marketplace::cancelOrderCall {
        orderId: U256::from(order_id),
    }
    .abi_encode();
    TransactionData::JSON(
        TransactionRequest::default()
            .from(client(devnet, TENANT).sender())
            .to(devnet.deployment.marketplace)
            .input(input.into()),
    )
}

/// Creates a kept order, then a doomed lease (order, bid, acceptance) in the last blocks, and
/// replaces the blocks from the doomed order on with one cancelling the kept order.
async fn reorg_scenario(confirmations: u64, mined_after: u64) {
    let devnet = devnet().await;
    register_providers(&devnet).await;
    let tenant = client(&devnet, TENANT);
    let kept = tenant
        .create_order(&new_order(&devnet, 50 * TOKEN))
        .await
        .expect("createOrder");
    let db = TestDb::new(Backend::Sqlite).await;
    let confirmations_arg = confirmations.to_string();
    let indexer = Indexer::start(&devnet, &db, &["--confirmations", &confirmations_arg]);

    let doomed = tenant
        .create_order(&new_order(&devnet, 50 * TOKEN))
        .await
        .expect("createOrder");
    let doomed_first = head(&devnet).await;
    let provider = client(&devnet, PROVIDER_A);
    let bid = provider
        .place_bid(
            doomed.order_id,
            U256::from(TOKEN),
            None,
            &doomed.spec.requirements,
        )
        .await
        .expect("placeBid");
    tenant
        .accept_bid(doomed.order_id, bid)
        .await
        .expect("acceptBid");
    devnet
        .rpc
        .anvil_mine(Some(mined_after), None)
        .await
        .expect("mine");
    let before = head(&devnet).await;
    indexer.wait_indexed(before - confirmations).await;
    let (_, seen) = indexer
        .get(&format!("/api/v1/leases/{}", doomed.order_id))
        .await;
    let doomed_indexed = seen["state"] == "active";
    let mut subscription = Subscription::open(&indexer, None).await;

    devnet
        .rpc
        .anvil_reorg(ReorgOptions {
            depth: before - doomed_first + 1,
            tx_block_pairs: vec![(cancel_tx(&devnet, kept.order_id), 0)],
        })
        .await
        .expect("anvil_reorg");
    devnet
        .rpc
        .anvil_mine(Some(confirmations + 2), None)
        .await
        .expect("mine");
    let after = head(&devnet).await;
    indexer.wait_indexed(after - confirmations).await;

    if doomed_indexed {
        // Subscribers hear of the rewind before the canonical events.
        let text = subscription
            .read_until("event: reorg", Duration::from_secs(10))
            .await;
        assert!(text.contains("\"fork_block\":"), "{text}");
    }
    drop(subscription);
    let (code, gone) = indexer
        .get(&format!("/api/v1/leases/{}", doomed.order_id))
        .await;
    assert_eq!(code, 404, "the reorged-away lease is still indexed: {gone}");
    let (_, order) = indexer
        .get(&format!("/api/v1/orders/{}", kept.order_id))
        .await;
    assert_eq!(order["state"], "cancelled", "{order}");
    let (_, provider_row) = indexer
        .get(&format!("/api/v1/providers/{:#x}", provider.sender()))
        .await;
    assert_eq!(provider_row["active_leases"], 0, "{provider_row}");
    assert_eq!(provider_row["allocated"]["cpu_millis"], 0, "{provider_row}");
    drop(indexer);

    // The same as a fresh index of the canonical chain, up to the same block.
    let fresh = TestDb::new(Backend::Sqlite).await;
    let reference = Indexer::start(&devnet, &fresh, &["--confirmations", &confirmations_arg]);
    reference.wait_indexed(after - confirmations).await;
    drop(reference);
    assert_eq!(db.dump().await, fresh.dump().await);
    eprintln!(
        "confirmations {confirmations}: doomed lease indexed before the reorg: {doomed_indexed}"
    );
    if confirmations > before - doomed_first {
        assert!(
            !doomed_indexed,
            "a reorg within the confirmations must never be indexed"
        );
    } else {
        assert!(
            doomed_indexed,
            "the deep reorg must have replaced indexed blocks"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_deeper_than_the_confirmations_is_undone() {
    within(reorg_scenario(1, 3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_within_the_confirmations_is_never_indexed() {
    within(reorg_scenario(6, 0)).await;
}
