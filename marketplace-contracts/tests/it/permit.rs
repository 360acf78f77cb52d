//! `create_order_with_permit` on anvil: approval and order in one transaction.

use alloy::primitives::U256;
use alloy::providers::Provider as _;
use leasehold_contracts::DepositFunding;
use leasehold_contracts::bindings::TestToken;

use crate::support::*;

async fn nonce(devnet: &Devnet, index: usize) -> u64 {
    let sender = devnet.client(index).sender();
    devnet
        .rpc
        .get_transaction_count(sender)
        .await
        .expect("eth_getTransactionCount")
}

#[tokio::test]
async fn a_permit_posts_the_order_in_one_transaction_and_then_the_allowance_suffices() {
    within(async {
        let devnet = Devnet::start(None).await;
        let tenant = devnet.client(TENANT);
        let signer = devnet.signer(TENANT).expect("tenant key");
        let order = cpu_order(&devnet, resources(1_000, 1_024, 0), 3_600, 1_000_000, 60);

        let before = nonce(&devnet, TENANT).await;
        let balance = devnet.balance(tenant.sender()).await;
        let (posted, funding) = tenant
            .create_order_with_permit(&order, &signer)
            .await
            .expect("createOrderWithPermit");
        assert_eq!(funding, DepositFunding::Permit);
        assert_eq!(
            nonce(&devnet, TENANT).await - before,
            1,
            "approval and order in one transaction"
        );
        assert_eq!(posted.tenant, tenant.sender());
        assert_eq!(posted.deposit, order.deposit);
        assert_eq!(
            devnet.balance(tenant.sender()).await,
            balance - order.deposit,
            "deposit in escrow"
        );
        let token = TestToken::new(devnet.deployment.token, devnet.rpc.clone());
        assert_eq!(
            token.nonces(tenant.sender()).call().await.expect("nonces"),
            U256::from(1),
            "the permit's nonce was used"
        );

        // An allowance that covers the deposit needs neither permit nor approval.
        tenant
            .ensure_allowance(
                devnet.deployment.token,
                devnet.deployment.marketplace,
                order.deposit,
            )
            .await
            .expect("approve");
        let before = nonce(&devnet, TENANT).await;
        let (_, funding) = tenant
            .create_order_with_permit(&order, &signer)
            .await
            .expect("createOrder");
        assert_eq!(funding, DepositFunding::Allowance);
        assert_eq!(nonce(&devnet, TENANT).await - before, 1);
    })
    .await;
}

#[tokio::test]
async fn a_signer_other_than_the_sender_is_refused_before_any_transaction() {
    within(async {
        let devnet = Devnet::start(None).await;
        let tenant = devnet.client(TENANT);
        let stranger = devnet.signer(STRANGER).expect("key");
        let order = cpu_order(&devnet, resources(1_000, 1_024, 0), 3_600, 1_000_000, 60);
        let before = nonce(&devnet, TENANT).await;
        let error = tenant
            .create_order_with_permit(&order, &stranger)
            .await
            .expect_err("another key's permit");
        assert!(error.to_string().contains("signer"), "{error}");
        assert_eq!(nonce(&devnet, TENANT).await, before, "nothing sent");
    })
    .await;
}
