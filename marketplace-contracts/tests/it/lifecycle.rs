//! Full order -> bids -> settle -> lease -> close lifecycle with two competing providers, plus
//! cancellation, bid withdrawal and provider unbonding.

use alloy::primitives::U256;
use leasehold_contracts::{CloseReason, OrderStatus, ProviderStatus};

use crate::support::*;

#[tokio::test]
async fn two_providers_compete_and_settle_picks_the_cheaper() {
    within(async {
        let devnet = Devnet::start(None).await;
        let tenant = devnet.client(TENANT);
        let provider_a = devnet.client(PROVIDER_A);
        let provider_b = devnet.client(PROVIDER_B);
        let anyone = devnet.client(STRANGER);
        let capacity = resources(4_000, 8_192, 20_480);
        provider_a
            .register_provider(&profile("https://a.example:8443", capacity))
            .await
            .unwrap();
        provider_b
            .register_provider(&profile("https://b.example:8443", capacity))
            .await
            .unwrap();
        let listed = anyone.providers().await.unwrap();
        assert_eq!(listed, vec![provider_a.sender(), provider_b.sender()]);
        let info = anyone.provider_info(provider_a.sender()).await.unwrap();
        assert_eq!(info.status, ProviderStatus::Active);
        assert_eq!(info.stake, devnet.params.minimum_stake);
        assert_eq!(info.endpoint, "https://a.example:8443");

        let amount = resources(1_000, 1_024, 2_048);
        let deposit = 100 * TOKEN;
        let tenant_before = devnet.balance(tenant.sender()).await;
        let order = tenant
            .create_order(&cpu_order(&devnet, amount, 5 * TOKEN, deposit, 60))
            .await
            .unwrap();
        assert_eq!(order.tenant, tenant.sender());
        assert_eq!(
            devnet.balance(tenant.sender()).await,
            tenant_before - U256::from(deposit)
        );
        let posted = provider_a.order_posted(order.order_id).await.unwrap();
        assert_eq!(posted, order);
        let requirements = posted.spec.requirements.clone();

        let err = provider_a
            .place_bid(order.order_id, U256::from(6 * TOKEN), None, &requirements)
            .await
            .unwrap_err();
        assert_eq!(err.revert_name(), Some("PriceAboveMax"), "{err}");
        assert!(
            err.to_string()
                .starts_with("placeBid reverted: PriceAboveMax(price: 6000000"),
            "{err}"
        );

        let bid_a = provider_a
            .place_bid(order.order_id, U256::from(3 * TOKEN), None, &requirements)
            .await
            .unwrap();
        let bid_b = provider_b
            .place_bid(order.order_id, U256::from(2 * TOKEN), None, &requirements)
            .await
            .unwrap();
        assert_eq!((bid_a, bid_b), (0, 1));
        let err = provider_a
            .place_bid(order.order_id, U256::from(TOKEN), None, &requirements)
            .await
            .unwrap_err();
        assert_eq!(err.revert_name(), Some("AlreadyBid"), "{err}");
        let err = provider_a
            .place_bid(order.order_id, U256::from(TOKEN), None, &Default::default())
            .await
            .unwrap_err();
        assert_eq!(err.revert_name(), Some("RequirementsMismatch"), "{err}");

        let bids = anyone.bids(order.order_id).await.unwrap();
        assert_eq!(bids.len(), 2);
        assert_eq!(bids[1].provider, provider_b.sender());
        assert_eq!(bids[1].price_per_hour, U256::from(2 * TOKEN));

        let err = anyone.settle(order.order_id).await.unwrap_err();
        assert_eq!(err.revert_name(), Some("BidWindowOpen"), "{err}");

        devnet
            .warp(61 + leasehold_contracts::TENANT_GRACE_SECS)
            .await;
        let lease = anyone.settle(order.order_id).await.unwrap();
        // Payment accrues from the winner's delivery confirmation.
        provider_b.confirm_lease(lease.lease_id).await.unwrap();
        assert_eq!(lease.provider, provider_b.sender(), "the cheaper bid wins");
        assert_eq!(lease.bid_id, bid_b);
        assert_eq!(lease.price_per_hour, U256::from(2 * TOKEN));
        assert!(lease.skipped.is_empty());
        assert_eq!(lease.lease_id, order.order_id);

        let info = anyone.order(order.order_id).await.unwrap();
        assert_eq!(info.status, OrderStatus::Leased);
        let b = anyone.provider_info(provider_b.sender()).await.unwrap();
        assert_eq!((b.allocated, b.active_leases), (amount, 1));
        let a = anyone.provider_info(provider_a.sender()).await.unwrap();
        assert_eq!(
            a.allocated,
            resources(0, 0, 0),
            "the loser reserves nothing"
        );

        // A lease with active work cannot be deregistered.
        let err = provider_b.deregister_provider().await.unwrap_err();
        assert_eq!(err.revert_name(), Some("HasActiveLeases"), "{err}");

        // Top up: the tenant already approved exactly the deposit, so this approves again;
        // a second top-up within a larger allowance does not.
        let escrow = tenant
            .top_up(order.order_id, U256::from(10 * TOKEN))
            .await
            .unwrap();
        assert_eq!(escrow, U256::from(110 * TOKEN));
        assert!(
            tenant
                .ensure_allowance(
                    devnet.deployment.token,
                    devnet.deployment.marketplace,
                    U256::from(50 * TOKEN)
                )
                .await
                .unwrap()
        );
        assert!(
            !tenant
                .ensure_allowance(
                    devnet.deployment.token,
                    devnet.deployment.marketplace,
                    U256::from(20 * TOKEN)
                )
                .await
                .unwrap(),
            "allowance suffices, no approval"
        );

        devnet.warp(1_800).await;
        let provider_before = devnet.balance(provider_b.sender()).await;
        let tenant_before_close = devnet.balance(tenant.sender()).await;
        let settlement = tenant
            .close_lease(lease.lease_id, CloseReason::TenantRequest)
            .await
            .unwrap();
        let closed = anyone.lease(lease.lease_id).await.unwrap();
        assert!(!closed.active);
        let elapsed = closed.closed_at - closed.started_at;
        assert!(elapsed >= 1_800, "elapsed {elapsed}");
        let expected_paid = U256::from(elapsed) * U256::from(2 * TOKEN) / U256::from(3_600);
        assert_eq!(settlement.paid_to_provider, expected_paid);
        assert_eq!(
            settlement.paid_to_provider + settlement.refunded_to_tenant,
            U256::from(110 * TOKEN)
        );
        assert_eq!(
            devnet.balance(provider_b.sender()).await,
            provider_before + expected_paid
        );
        assert_eq!(
            devnet.balance(tenant.sender()).await,
            tenant_before_close + settlement.refunded_to_tenant
        );
        assert_eq!(
            devnet.balance(devnet.deployment.marketplace).await,
            U256::ZERO
        );
        let b = anyone.provider_info(provider_b.sender()).await.unwrap();
        assert_eq!((b.allocated, b.active_leases), (resources(0, 0, 0), 0));

        // Unbonding: deregister, too early to withdraw, then withdraw the stake.
        let stake_before = devnet.balance(provider_b.sender()).await;
        provider_b.deregister_provider().await.unwrap();
        let err = provider_b.withdraw_stake().await.unwrap_err();
        assert_eq!(err.revert_name(), Some("StillUnbonding"), "{err}");
        devnet.warp(devnet.params.unbonding_period_secs + 1).await;
        // the winning bid's bond is still locked until anyone releases the ended order's bonds
        let err = provider_b.withdraw_stake().await.unwrap_err();
        assert_eq!(err.revert_name(), Some("BondsLocked"), "{err}");
        let bid_ids: Vec<u64> =
            (0..anyone.bids(lease.lease_id).await.unwrap().len() as u64).collect();
        let resolved = anyone
            .release_bonds(lease.lease_id, &bid_ids)
            .await
            .unwrap();
        assert!(
            resolved.iter().all(|bond| bond.forfeited_to.is_none()),
            "{resolved:?}"
        );
        let stake = provider_b.withdraw_stake().await.unwrap();
        assert_eq!(stake, devnet.params.minimum_stake);
        assert_eq!(
            devnet.balance(provider_b.sender()).await,
            stake_before + stake
        );
        let b = anyone.provider_info(provider_b.sender()).await.unwrap();
        assert_eq!(b.status, ProviderStatus::None);
    })
    .await;
}

#[tokio::test]
async fn unmatched_orders_cancel_for_a_full_refund_and_withdrawn_bids_never_win() {
    within(async {
        let devnet = Devnet::start(None).await;
        let tenant = devnet.client(TENANT);
        let provider = devnet.client(PROVIDER_A);
        let anyone = devnet.client(STRANGER);
        provider
            .register_provider(&profile("https://a.example", resources(4_000, 8_192, 0)))
            .await
            .unwrap();
        let amount = resources(500, 512, 0);
        let before = devnet.balance(tenant.sender()).await;
        let order = tenant
            .create_order(&cpu_order(&devnet, amount, TOKEN, 7 * TOKEN, 30))
            .await
            .unwrap();
        let bid = provider
            .place_bid(
                order.order_id,
                U256::from(TOKEN / 2),
                None,
                &order.spec.requirements,
            )
            .await
            .unwrap();
        let err = anyone.withdraw_bid(order.order_id, bid).await.unwrap_err();
        assert_eq!(err.revert_name(), Some("NotProvider"), "{err}");
        provider.withdraw_bid(order.order_id, bid).await.unwrap();
        assert!(anyone.bids(order.order_id).await.unwrap()[0].withdrawn);
        devnet
            .warp(31 + leasehold_contracts::TENANT_GRACE_SECS)
            .await;
        let err = anyone.settle(order.order_id).await.unwrap_err();
        assert_eq!(err.revert_name(), Some("NoEligibleBid"), "{err}");

        let err = anyone.cancel_order(order.order_id).await.unwrap_err();
        assert_eq!(err.revert_name(), Some("NotTenant"), "{err}");
        let refund = tenant.cancel_order(order.order_id).await.unwrap();
        assert_eq!(refund, U256::from(7 * TOKEN));
        assert_eq!(devnet.balance(tenant.sender()).await, before);
        assert_eq!(
            anyone.order(order.order_id).await.unwrap().status,
            OrderStatus::Cancelled
        );
        let err = tenant.cancel_order(order.order_id).await.unwrap_err();
        assert_eq!(err.revert_name(), Some("OrderNotOpen"), "{err}");
        let err = anyone.order(order.order_id + 1).await.unwrap_err();
        assert!(err.to_string().contains("order_id"), "{err}");
    })
    .await;
}
