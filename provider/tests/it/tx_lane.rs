//! The provider's transaction lane across a restart, on a real anvil with manual mining and
//! the real store: what was in flight is found in the journal and settled, nothing is signed
//! twice, no nonce is skipped.

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
use leasehold_contracts::devnet::Devnet;
use leasehold_contracts::{FeePolicy, LaneStats, MarketplaceClient, TxLane};
use leasehold_provider::store::{Store, StoreJournal};

const TEST_LIMIT: Duration = Duration::from_secs(120);
const PROVIDER: usize = 2;

/// The daemon's lane over `store` (what `Chain::connect_journaled` builds), replacing a
/// transaction after `stuck_after`.
fn provider_lane(
    devnet: &Devnet,
    signer: PrivateKeySigner,
    store: &Store,
    stuck_after: Duration,
) -> (MarketplaceClient, Arc<TxLane>) {
    let client =
        MarketplaceClient::connect_http(&devnet.endpoint(), signer.clone(), devnet.deployment)
            .expect("client");
    let policy = FeePolicy {
        stuck_after,
        poll_interval: Duration::from_millis(100),
        give_up_after: Duration::from_secs(60),
        cap_setting: "chain.max_fee_per_gas_gwei",
        ..FeePolicy::default()
    };
    let journal = StoreJournal::new(store.clone(), signer.address());
    let lane = Arc::new(TxLane::new(
        client.provider().clone(),
        EthereumWallet::from(signer),
        devnet.deployment.chain_id,
        policy,
        Arc::new(journal),
    ));
    (client.with_lane(lane.clone()), lane)
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

async fn approvals(rpc: &DynProvider, devnet: &Devnet, owner: Address) -> usize {
    let filter = Filter::new()
        .address(devnet.deployment.token)
        .event_signature(TestToken::Approval::SIGNATURE_HASH)
        .topic1(owner.into_word())
        .from_block(0);
    rpc.get_logs(&filter).await.expect("logs").len()
}

async fn spike_base_fee(rpc: &DynProvider, times: u128) {
    let next = rpc
        .get_fee_history(1, alloy::eips::BlockNumberOrTag::Latest, &[])
        .await
        .expect("fee history")
        .latest_block_base_fee()
        .expect("base fee");
    rpc.anvil_set_next_block_base_fee_per_gas(next * times)
        .await
        .expect("base fee");
    rpc.evm_mine(None).await.expect("mine");
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..1_200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_restarted_while_a_replaced_transaction_is_pending_sends_nothing_twice() {
    tokio::time::timeout(TEST_LIMIT, async {
        let devnet = Devnet::start(None).await.expect("devnet");
        let rpc = ProviderBuilder::new()
            .connect_http(devnet.endpoint().parse().expect("url"))
            .erased();
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("provider.db").display()
        );
        let signer = devnet.signer(PROVIDER).expect("signer");
        let account = signer.address();
        let account_key = account.to_string().to_ascii_lowercase();
        let token = devnet.deployment.token;
        let spender = devnet.deployment.marketplace;
        let first_nonce = nonce(&rpc, account, false).await;
        let approvals_before = approvals(&rpc, &devnet, account).await;

        // First run: the approval is sent while nothing is mined, fees spike, the lane
        // replaces it, and the process dies with the replacement pending.
        let store = Store::connect(&url).await.expect("store");
        let (client, lane) = provider_lane(&devnet, signer.clone(), &store, Duration::from_secs(1));
        rpc.anvil_set_auto_mine(false).await.expect("automine off");
        let sending = tokio::spawn(async move {
            client
                .ensure_allowance(token, spender, U256::from(777u64))
                .await
        });
        until("the approval is pending", async || {
            nonce(&rpc, account, true).await > first_nonce
        })
        .await;
        spike_base_fee(&rpc, 20).await;
        until("the stuck approval is replaced", async || {
            LaneStats::get(&lane.stats().replaced) >= 1
        })
        .await;
        sending.abort();
        let _ = sending.await;
        drop(lane);
        let journaled = store
            .unsettled_transactions(&account_key)
            .await
            .expect("journal");
        store.close().await;
        assert!(
            journaled.len() >= 2,
            "original and replacement journaled: {journaled:?}"
        );
        assert!(
            journaled.iter().all(|sent| sent.nonce == first_nonce),
            "{journaled:?}"
        );
        assert_eq!(
            nonce(&rpc, account, false).await,
            first_nonce,
            "nothing mined yet"
        );

        // Fees climb again while the daemon is down: the pending replacement is underpriced
        // now too, so only a lane that read its journal and replaced it again gets it mined.
        spike_base_fee(&rpc, 10).await;

        // Second run: a new store handle and lane, as a restarted daemon builds them.
        let store = Store::connect(&url).await.expect("store after restart");
        let (client, lane) = provider_lane(&devnet, signer, &store, Duration::from_secs(1));
        let recovering = tokio::spawn({
            let lane = lane.clone();
            async move { lane.recover().await }
        });
        until(
            "the journaled approval is replaced after the restart",
            async || LaneStats::get(&lane.stats().replaced) >= 1,
        )
        .await;
        // Mining resumes.
        rpc.anvil_set_auto_mine(true).await.expect("automine on");
        while !recovering.is_finished() {
            rpc.evm_mine(None).await.expect("mine");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let settled = recovering.await.expect("task").expect("recovered");
        assert_eq!(settled, 1, "one nonce was in flight");

        // The daemon's work is retried after a restart; its handler re-reads the chain and
        // finds the effect done, so nothing is signed.
        let sent_again = client
            .ensure_allowance(token, spender, U256::from(777u64))
            .await
            .expect("allowance");
        assert!(!sent_again, "the approval mined before was sent again");
        assert_eq!(
            nonce(&rpc, account, false).await,
            first_nonce + 1,
            "one nonce used"
        );
        assert_eq!(
            approvals(&rpc, &devnet, account).await,
            approvals_before + 1,
            "the approval happened exactly once"
        );
        let mut mined = 0;
        let all_attempts = journaled_hashes(&store, &account_key).await;
        for hash in &all_attempts {
            if rpc
                .get_transaction_receipt(*hash)
                .await
                .expect("receipt")
                .is_some()
            {
                mined += 1;
            }
        }
        assert_eq!(
            mined,
            1,
            "exactly one of {} attempts mined",
            all_attempts.len()
        );
        assert!(
            all_attempts.len() >= 3,
            "replaced once more after the restart"
        );
        assert!(
            store
                .unsettled_transactions(&account_key)
                .await
                .expect("journal")
                .is_empty(),
            "the journal settled the nonce"
        );

        // The next transaction takes the next nonce: none skipped, none reused.
        let sent = client
            .ensure_allowance(token, spender, U256::from(1_000u64))
            .await
            .expect("next approval");
        assert!(sent);
        assert_eq!(nonce(&rpc, account, false).await, first_nonce + 2);
        assert_eq!(
            approvals(&rpc, &devnet, account).await,
            approvals_before + 2
        );
        store.close().await;
    })
    .await
    .expect("test exceeded its time limit");
}

/// Every hash the journal ever held for `account`, settled or not.
async fn journaled_hashes(store: &Store, account: &str) -> Vec<alloy::primitives::B256> {
    store
        .sent_transactions(account)
        .await
        .expect("journal")
        .into_iter()
        .map(|sent| sent.tx_hash)
        .collect()
}
