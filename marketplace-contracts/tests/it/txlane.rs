//! The transaction lane against a real anvil that behaves like a congested network: manual
//! mining, a base fee raised above a transaction's max fee, dropped transactions, a fee cap and
//! an account without funds.

use std::sync::Arc;
use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, U256};
use alloy::providers::ext::AnvilApi as _;
use alloy::providers::{DynProvider, Provider as _, ProviderBuilder};
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent as _;
use leasehold_contracts::bindings::TestToken;
use leasehold_contracts::{
    ClientError, FeePolicy, Gwei, LaneStats, MarketplaceClient, MemoryJournal, TxJournal, TxLane,
};

use crate::support::{Devnet, TENANT, within};

/// A lane that gives up on a transaction after one second.
fn impatient() -> FeePolicy {
    FeePolicy {
        stuck_after: Duration::from_secs(1),
        poll_interval: Duration::from_millis(100),
        give_up_after: Duration::from_secs(60),
        ..FeePolicy::default()
    }
}

fn laned(
    devnet: &Devnet,
    signer: PrivateKeySigner,
    policy: FeePolicy,
    journal: Arc<dyn TxJournal>,
) -> (MarketplaceClient, Arc<TxLane>) {
    let client =
        MarketplaceClient::connect_http(&devnet.endpoint(), signer.clone(), devnet.deployment)
            .expect("client");
    let lane = Arc::new(TxLane::new(
        client.provider().clone(),
        EthereumWallet::from(signer),
        devnet.deployment.chain_id,
        policy,
        journal,
    ));
    (client.with_lane(lane.clone()), lane)
}

fn rpc(devnet: &Devnet) -> DynProvider {
    ProviderBuilder::new()
        .connect_http(devnet.endpoint().parse().expect("url"))
        .erased()
}

async fn nonce(rpc: &DynProvider, account: Address, pending: bool) -> u64 {
    let count = rpc.get_transaction_count(account);
    if pending {
        count.pending().await
    } else {
        count.latest().await
    }
    .expect("nonce")
}

/// `Approval` events `owner` emitted on the token: the effect of `ensure_allowance`.
async fn approvals(rpc: &DynProvider, devnet: &Devnet, owner: Address) -> usize {
    let filter = Filter::new()
        .address(devnet.deployment.token)
        .event_signature(TestToken::Approval::SIGNATURE_HASH)
        .topic1(owner.into_word())
        .from_block(0);
    rpc.get_logs(&filter).await.expect("logs").len()
}

async fn next_base_fee(rpc: &DynProvider) -> u128 {
    rpc.get_fee_history(1, alloy::eips::BlockNumberOrTag::Latest, &[])
        .await
        .expect("fee history")
        .latest_block_base_fee()
        .expect("base fee")
}

/// Waits (bounded by the test's limit) until `check` holds.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_transaction_is_replaced_on_its_nonce_and_mined_once() {
    within(async {
        let devnet = Devnet::start(None).await;
        let rpc = rpc(&devnet);
        let signer = devnet.signer(TENANT).expect("signer");
        let owner = signer.address();
        let (client, lane) = laned(
            &devnet,
            signer,
            impatient(),
            Arc::new(MemoryJournal::default()),
        );
        let before = nonce(&rpc, owner, false).await;
        let approvals_before = approvals(&rpc, &devnet, owner).await;

        rpc.anvil_set_auto_mine(false).await.expect("automine off");
        let spender = devnet.deployment.marketplace;
        let token = devnet.deployment.token;
        let sending = tokio::spawn(async move {
            client
                .ensure_allowance(token, spender, U256::from(777u64))
                .await
        });
        until("the approval is pending", async || {
            nonce(&rpc, owner, true).await > before
        })
        .await;
        // The next block costs twenty times what the transaction offers at most (twice the
        // base fee plus a tip): it stays in the pool, as on a network whose fees spiked.
        let spiked = next_base_fee(&rpc).await * 20;
        rpc.anvil_set_next_block_base_fee_per_gas(spiked)
            .await
            .expect("base fee");
        while !sending.is_finished() {
            rpc.evm_mine(None).await.expect("mine");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let sent = sending
            .await
            .expect("task")
            .expect("the approval was mined");
        assert!(sent, "an approval was needed");

        assert!(
            LaneStats::get(&lane.stats().replaced) >= 1,
            "the stuck transaction was not replaced"
        );
        assert_eq!(
            nonce(&rpc, owner, false).await,
            before + 1,
            "exactly one nonce used"
        );
        assert_eq!(
            approvals(&rpc, &devnet, owner).await,
            approvals_before + 1,
            "the approval happened exactly once"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_transaction_is_sent_again() {
    within(async {
        let devnet = Devnet::start(None).await;
        let rpc = rpc(&devnet);
        let signer = devnet.signer(TENANT).expect("signer");
        let owner = signer.address();
        let journal = Arc::new(MemoryJournal::default());
        let policy = FeePolicy {
            // Only dropping, never replacing, in this test.
            stuck_after: Duration::from_secs(600),
            ..impatient()
        };
        let (client, lane) = laned(&devnet, signer, policy, journal.clone());
        let before = nonce(&rpc, owner, false).await;
        let approvals_before = approvals(&rpc, &devnet, owner).await;

        rpc.anvil_set_auto_mine(false).await.expect("automine off");
        let spender = devnet.deployment.marketplace;
        let token = devnet.deployment.token;
        let sending = tokio::spawn(async move {
            client
                .ensure_allowance(token, spender, U256::from(555u64))
                .await
        });
        until("the approval is pending", async || {
            nonce(&rpc, owner, true).await > before
        })
        .await;
        let in_flight = journal.unsettled().await.expect("journal");
        assert_eq!(in_flight.len(), 1, "{in_flight:?}");
        let hash = in_flight[0].tx_hash;
        rpc.anvil_drop_transaction(hash).await.expect("drop");
        until("the lane sent it again", async || {
            LaneStats::get(&lane.stats().resent) >= 1
        })
        .await;
        rpc.evm_mine(None).await.expect("mine");
        let sent = sending
            .await
            .expect("task")
            .expect("the approval was mined");
        assert!(sent);
        assert_eq!(nonce(&rpc, owner, false).await, before + 1);
        assert_eq!(approvals(&rpc, &devnet, owner).await, approvals_before + 1);
        let receipt = rpc
            .get_transaction_receipt(hash)
            .await
            .expect("receipt")
            .expect("the very same transaction was mined");
        assert!(receipt.status());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fee_cap_below_what_the_network_needs_fails_clearly_and_sends_nothing() {
    within(async {
        let devnet = Devnet::start(None).await;
        let rpc = rpc(&devnet);
        let signer = devnet.signer(TENANT).expect("signer");
        let owner = signer.address();
        let policy = FeePolicy {
            max_fee_per_gas: Some("10".parse::<Gwei>().expect("gwei")),
            cap_setting: "chain.max_fee_per_gas_gwei",
            ..impatient()
        };
        let (client, lane) = laned(&devnet, signer, policy, Arc::new(MemoryJournal::default()));
        rpc.anvil_set_next_block_base_fee_per_gas(50_000_000_000)
            .await
            .expect("base fee");
        rpc.evm_mine(None).await.expect("mine");
        let before = nonce(&rpc, owner, true).await;

        let error = client
            .ensure_allowance(
                devnet.deployment.token,
                devnet.deployment.marketplace,
                U256::from(1u64),
            )
            .await
            .expect_err("the cap is below the base fee");
        let ClientError::FeeCapExceeded { fee, .. } = &error else {
            panic!("not a fee cap error: {error:?}");
        };
        let needed = fee.needed;
        // The raised base fee (or what is left of it a block later) plus a tip.
        assert!(needed.wei() > 40_000_000_000, "{error}");
        let message = error.to_string();
        assert!(
            message.contains("chain.max_fee_per_gas_gwei = 10 gwei"),
            "{message}"
        );
        assert!(
            message.contains(&format!("needs a max fee of {needed} gwei")),
            "{message}"
        );
        assert_eq!(LaneStats::get(&lane.stats().fee_cap_exceeded), 1);
        assert_eq!(nonce(&rpc, owner, true).await, before, "nothing was sent");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_without_funds_is_reported_with_its_balance() {
    within(async {
        let devnet = Devnet::start(None).await;
        let pauper = PrivateKeySigner::random();
        let address = pauper.address();
        let (client, lane) = laned(
            &devnet,
            pauper,
            impatient(),
            Arc::new(MemoryJournal::default()),
        );
        let error = client
            .ensure_allowance(
                devnet.deployment.token,
                devnet.deployment.marketplace,
                U256::from(1u64),
            )
            .await
            .expect_err("no funds for gas");
        assert!(
            matches!(error, ClientError::InsufficientFunds { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("insufficient funds"), "{message}");
        assert!(message.contains(&address.to_string()), "{message}");
        assert!(message.contains("holds 0 wei"), "{message}");
        assert_eq!(LaneStats::get(&lane.stats().insufficient_funds), 1);
    })
    .await;
}
