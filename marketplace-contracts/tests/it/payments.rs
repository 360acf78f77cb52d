//! Per-second accrual over warped time, withdrawals capped at the escrow, and insolvency closes
//! that anyone may perform and that release the provider's capacity.

use alloy::primitives::U256;
use leasehold_contracts::{CloseReason, LeaseStarted, MarketplaceClient, OrderStatus, Resources};

use crate::support::*;

/// 3.6 tokens per hour = 1,000 base units per second.
const PRICE_PER_HOUR: u64 = 3_600_000;
const PER_SECOND: u64 = 1_000;
/// Covers 100 seconds.
const DEPOSIT: u64 = 100 * PER_SECOND;

/// The tenant's order for `amount` at [`PRICE_PER_HOUR`], bid on by `provider`, accepted and
/// confirmed as delivered (payment accrues from the confirmation).
async fn lease_order(
    devnet: &Devnet,
    tenant: &MarketplaceClient,
    provider: &MarketplaceClient,
    amount: Resources,
) -> LeaseStarted {
    let order = tenant
        .create_order(&cpu_order(devnet, amount, PRICE_PER_HOUR, DEPOSIT, 10))
        .await
        .unwrap();
    let bid = provider
        .place_bid(
            order.order_id,
            U256::from(PRICE_PER_HOUR),
            None,
            &order.spec.requirements,
        )
        .await
        .unwrap();
    let lease = tenant.accept_bid(order.order_id, bid).await.unwrap();
    provider.confirm_lease(lease.lease_id).await.unwrap();
    lease
}

/// A provider with room for exactly one lease, leased to the tenant.
async fn lease_with_one_slot(
    devnet: &Devnet,
) -> (MarketplaceClient, MarketplaceClient, LeaseStarted) {
    let tenant = devnet.client(TENANT);
    let provider = devnet.client(PROVIDER_A);
    let amount = resources(2_000, 2_048, 0);
    provider
        .register_provider(&profile("https://p.example", amount))
        .await
        .unwrap();
    let lease = lease_order(devnet, &tenant, &provider, amount).await;
    (tenant, provider, lease)
}

#[tokio::test]
async fn payment_accrues_per_second_and_withdrawals_are_capped_at_the_escrow() {
    within(async {
        let devnet = Devnet::start(None).await;
        let (_tenant, provider, lease) = lease_with_one_slot(&devnet).await;
        let started = devnet
            .client(STRANGER)
            .lease(lease.lease_id)
            .await
            .unwrap()
            .started_at;
        let balance_before = devnet.balance(provider.sender()).await;

        devnet.set_next_timestamp(started + 30).await;
        let payment = provider.withdraw_payment(lease.lease_id).await.unwrap();
        assert_eq!(payment.amount, U256::from(30 * PER_SECOND));
        assert_eq!(payment.total_paid, U256::from(30 * PER_SECOND));

        // Accrual is cumulative: the second withdrawal pays only the seconds since the first.
        devnet.set_next_timestamp(started + 42).await;
        let payment = provider.withdraw_payment(lease.lease_id).await.unwrap();
        assert_eq!(payment.amount, U256::from(12 * PER_SECOND));
        assert_eq!(payment.total_paid, U256::from(42 * PER_SECOND));

        // Far past what the escrow covers: only the rest of the escrow is paid.
        devnet.set_next_timestamp(started + 250).await;
        devnet.rpc_mine().await;
        let anyone = devnet.client(STRANGER);
        assert!(anyone.is_insolvent(lease.lease_id).await.unwrap());
        let owed = anyone.owed(lease.lease_id).await.unwrap();
        assert_eq!(owed.withdrawable, U256::from(DEPOSIT - 42 * PER_SECOND));
        assert!(owed.shortfall >= U256::from(150 * PER_SECOND), "{owed:?}");
        let payment = provider.withdraw_payment(lease.lease_id).await.unwrap();
        assert_eq!(payment.amount, U256::from(DEPOSIT - 42 * PER_SECOND));
        assert_eq!(
            payment.total_paid,
            U256::from(DEPOSIT),
            "never more than deposited"
        );
        let payment = provider.withdraw_payment(lease.lease_id).await.unwrap();
        assert_eq!(payment.amount, U256::ZERO);
        assert_eq!(
            devnet.balance(provider.sender()).await,
            balance_before + U256::from(DEPOSIT)
        );
        assert_eq!(
            devnet.balance(devnet.deployment.marketplace).await,
            U256::ZERO
        );
        let info = anyone.lease(lease.lease_id).await.unwrap();
        assert_eq!((info.paid, info.escrow), (U256::from(DEPOSIT), U256::ZERO));
    })
    .await;
}

#[tokio::test]
async fn anyone_closes_an_insolvent_lease_which_releases_capacity() {
    within(async {
        let devnet = Devnet::start(None).await;
        let (tenant, provider, lease) = lease_with_one_slot(&devnet).await;
        let anyone = devnet.client(STRANGER);

        let err = anyone
            .close_lease(lease.lease_id, CloseReason::Insolvent)
            .await
            .unwrap_err();
        assert_eq!(err.revert_name(), Some("LeaseSolvent"), "{err}");

        devnet.warp(200).await;
        let provider_before = devnet.balance(provider.sender()).await;
        let tenant_before = devnet.balance(tenant.sender()).await;
        let settlement = anyone
            .close_lease(lease.lease_id, CloseReason::Insolvent)
            .await
            .unwrap();
        assert_eq!(settlement.paid_to_provider, U256::from(DEPOSIT));
        assert_eq!(settlement.refunded_to_tenant, U256::ZERO);
        assert_eq!(
            devnet.balance(provider.sender()).await,
            provider_before + U256::from(DEPOSIT)
        );
        assert_eq!(devnet.balance(tenant.sender()).await, tenant_before);
        assert_eq!(
            anyone.order(lease.lease_id).await.unwrap().status,
            OrderStatus::Closed
        );
        let err = provider.withdraw_payment(lease.lease_id).await.unwrap_err();
        assert_eq!(err.revert_name(), Some("LeaseNotActive"), "{err}");

        let info = anyone.provider_info(provider.sender()).await.unwrap();
        assert_eq!(
            (info.allocated, info.active_leases),
            (resources(0, 0, 0), 0)
        );
        // The freed slot takes a new lease.
        let next = lease_order(&devnet, &tenant, &provider, info.capacity).await;
        assert_eq!(next.provider, provider.sender());
    })
    .await;
}

/// Regression (issue #10): `closeLease` pays the provider only once something has accrued, so
/// a close estimated in the lease's first block (nothing accrued) and mined in the next (one
/// second accrued) needs more gas than the estimate; sent with no margin it ran out of gas.
#[tokio::test]
async fn closing_a_lease_in_the_block_after_it_starts_succeeds() {
    within(async {
        let devnet = Devnet::start(Some(1)).await;
        let tenant = devnet.client(TENANT);
        let provider = devnet.client(PROVIDER_A);
        let amount = resources(2_000, 2_048, 0);
        provider
            .register_provider(&profile("https://p.example", amount))
            .await
            .unwrap();
        // A provider holding no tokens yet makes the first payment the costliest one.
        let holdings = devnet.balance(provider.sender()).await;
        if !holdings.is_zero() {
            let erc20 = leasehold_contracts::bindings::TestToken::new(
                devnet.deployment.token,
                provider.provider().clone(),
            );
            erc20
                .transfer(devnet.address(STRANGER).unwrap(), holdings)
                .send()
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap();
        }
        for _ in 0..3 {
            let lease = lease_order(&devnet, &tenant, &provider, amount).await;
            let settlement = tenant
                .close_lease(lease.lease_id, CloseReason::TenantRequest)
                .await
                .unwrap_or_else(|error| panic!("closing lease {}: {error}", lease.lease_id));
            assert_eq!(
                settlement.paid_to_provider + settlement.refunded_to_tenant,
                U256::from(DEPOSIT)
            );
        }
    })
    .await;
}
