//! `create_order_auto_accept` on anvil: the covered bid is the lease, in the bid's transaction.

use alloy::primitives::U256;
use leasehold_contracts::{AutoAcceptRule, ClientError, OrderStatus};

use crate::support::*;

#[tokio::test]
async fn the_first_covered_bid_becomes_the_lease_without_accept_bid() {
    within(async {
        let devnet = Devnet::start(None).await;
        let tenant = devnet.client(TENANT);
        let signer = devnet.signer(TENANT).expect("tenant key");
        let provider_a = devnet.client(PROVIDER_A);
        let provider_b = devnet.client(PROVIDER_B);
        let capacity = resources(4_000, 8_192, 20_480);
        for provider in [&provider_a, &provider_b] {
            provider
                .register_provider(&profile("https://p.example:8443", capacity))
                .await
                .unwrap();
        }
        let order = cpu_order(
            &devnet,
            resources(1_000, 1_024, 0),
            5 * TOKEN,
            100 * TOKEN,
            60,
        );
        let rule = AutoAcceptRule {
            provider: Some(provider_b.sender()),
            max_price_per_hour: U256::from(3 * TOKEN),
        };
        let (posted, _) = tenant
            .create_order_auto_accept(&order, &signer, &rule)
            .await
            .expect("createOrderWithPermit with a rule");
        let requirements = posted.spec.requirements.clone();
        // Off chain the rule is read back from its `AutoAcceptSet` event (no getter).
        assert_eq!(
            provider_a.auto_accept_rule(posted.order_id).await.unwrap(),
            Some(rule)
        );
        let plain = tenant.create_order(&order).await.expect("createOrder");
        assert_eq!(
            provider_a.auto_accept_rule(plain.order_id).await.unwrap(),
            None,
            "an order without a rule"
        );

        // A cheaper bid from another provider than the rule names stays a plain bid.
        provider_a
            .place_bid(posted.order_id, U256::from(TOKEN), None, &requirements)
            .await
            .unwrap();
        let open = tenant.order(posted.order_id).await.unwrap();
        assert_eq!(
            open.status,
            OrderStatus::Open,
            "no lease from uncovered bids"
        );

        let bid = provider_b
            .place_bid(posted.order_id, U256::from(3 * TOKEN), None, &requirements)
            .await
            .unwrap();
        let lease = tenant
            .lease(posted.order_id)
            .await
            .expect("the bid made the lease");
        assert_eq!(lease.provider, provider_b.sender());
        assert_eq!(u64::from(lease.bid_id), bid);
        assert_eq!(lease.price_per_hour, U256::from(3 * TOKEN));
        assert!(lease.active);
        let err = provider_a
            .place_bid(posted.order_id, U256::from(TOKEN), None, &requirements)
            .await
            .unwrap_err();
        assert_eq!(err.revert_name(), Some("OrderNotOpen"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn a_rule_above_the_orders_price_is_refused_naming_the_field() {
    within(async {
        let devnet = Devnet::start(None).await;
        let tenant = devnet.client(TENANT);
        let signer = devnet.signer(TENANT).expect("tenant key");
        let order = cpu_order(
            &devnet,
            resources(1_000, 1_024, 0),
            5 * TOKEN,
            100 * TOKEN,
            60,
        );
        for price in [0, 6 * TOKEN] {
            let rule = AutoAcceptRule {
                provider: None,
                max_price_per_hour: U256::from(price),
            };
            let err = tenant
                .create_order_auto_accept(&order, &signer, &rule)
                .await
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    ClientError::InvalidInput {
                        field: "auto_accept.max_price_per_hour",
                        ..
                    }
                ),
                "{err}"
            );
        }
    })
    .await;
}
