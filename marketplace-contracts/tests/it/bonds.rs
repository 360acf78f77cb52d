//! Per-bid bonds on a real chain: a withdrawn bid's bond reaches the tenant through
//! `releaseBonds` and `claim`; an honest losing bid's bond returns to the provider's free stake.

use alloy::primitives::U256;

use crate::support::*;

#[tokio::test]
async fn a_withdrawn_bids_bond_reaches_the_tenant_and_a_losing_bids_bond_comes_back() {
    within(async {
        let devnet = Devnet::start(None).await;
        let tenant = devnet.client(TENANT);
        let quitter = devnet.client(PROVIDER_A);
        let loser = devnet.client(PROVIDER_B);
        let anyone = devnet.client(STRANGER);
        let bond = anyone.bid_bond().await.unwrap();
        assert_eq!(bond, devnet.params.bid_bond);
        assert!(!bond.is_zero(), "the devnet deploys with a bond");
        let capacity = resources(4_000, 8_192, 0);
        for provider in [&quitter, &loser] {
            provider
                .register_provider(&profile("https://p.example", capacity))
                .await
                .unwrap();
        }
        let order = tenant
            .create_order(&cpu_order(
                &devnet,
                resources(500, 512, 0),
                TOKEN,
                7 * TOKEN,
                30,
            ))
            .await
            .unwrap();
        let requirements = &order.spec.requirements;
        let quit_bid = quitter
            .place_bid(order.order_id, U256::from(TOKEN / 4), None, requirements)
            .await
            .unwrap();
        let losing_bid = loser
            .place_bid(order.order_id, U256::from(TOKEN / 2), None, requirements)
            .await
            .unwrap();
        let info = anyone.provider_info(quitter.sender()).await.unwrap();
        assert_eq!(info.locked_bonds, bond, "a bid locks one bond");
        assert_eq!(info.free_stake(), devnet.params.minimum_stake - bond);

        quitter
            .withdraw_bid(order.order_id, quit_bid)
            .await
            .unwrap();
        let err = anyone
            .release_bonds(order.order_id, &[quit_bid])
            .await
            .unwrap_err();
        assert_eq!(err.revert_name(), Some("OrderNotEnded"), "{err}");
        let locked = anyone.locked_bonds(order.order_id).await.unwrap();
        assert_eq!(locked.len(), 2, "{locked:?}");
        assert!(locked[0].forfeits && !locked[1].forfeits, "{locked:?}");

        // the loser is the only bid left, but the tenant accepts nobody and cancels
        tenant.cancel_order(order.order_id).await.unwrap();
        let resolved = anyone
            .release_bonds(order.order_id, &[quit_bid, losing_bid])
            .await
            .unwrap();
        assert_eq!(resolved.len(), 2, "{resolved:?}");
        assert_eq!(resolved[0].forfeited_to, Some(tenant.sender()));
        assert_eq!(resolved[0].amount, bond);
        assert_eq!(
            resolved[1].forfeited_to, None,
            "the losing bid gets its bond back"
        );

        let quitter_info = anyone.provider_info(quitter.sender()).await.unwrap();
        assert_eq!(quitter_info.stake, devnet.params.minimum_stake - bond);
        assert_eq!(quitter_info.locked_bonds, U256::ZERO);
        let loser_info = anyone.provider_info(loser.sender()).await.unwrap();
        assert_eq!(loser_info.stake, devnet.params.minimum_stake);
        assert_eq!(loser_info.free_stake(), devnet.params.minimum_stake);
        assert!(
            anyone
                .locked_bonds(order.order_id)
                .await
                .unwrap()
                .is_empty()
        );

        let token = anyone.stake_token().await.unwrap();
        let (_, credited) = anyone.claimable(token, tenant.sender()).await.unwrap();
        assert_eq!(credited, bond);
        let before = devnet.balance(tenant.sender()).await;
        let claimed = tenant.claim(token, tenant.sender(), true).await.unwrap();
        assert_eq!(claimed, bond);
        assert_eq!(devnet.balance(tenant.sender()).await, before + bond);
        let err = tenant
            .claim(token, tenant.sender(), true)
            .await
            .unwrap_err();
        assert_eq!(err.revert_name(), Some("NothingToClaim"), "{err}");
    })
    .await;
}
