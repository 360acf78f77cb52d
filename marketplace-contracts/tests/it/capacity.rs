//! Capacity is reserved per lease: a full provider is skipped by `settle`, and `acceptBid` on it
//! reverts with a decoded error.

use alloy::primitives::{B256, U256};
use leasehold_contracts::bindings::Marketplace;
use leasehold_contracts::CloseReason;

use crate::support::*;

#[tokio::test]
async fn full_provider_is_skipped_by_settle_and_rejected_by_accept_bid() {
    within(async {
        let devnet = Devnet::start(None).await;
        let tenant = devnet.client(TENANT);
        let small = devnet.client(PROVIDER_A);
        let large = devnet.client(PROVIDER_B);
        let anyone = devnet.client(STRANGER);
        let amount = resources(1_000, 1_024, 1_024);
        // Room for exactly one such lease.
        small
            .register_provider(&profile("https://small.example", amount))
            .await
            .unwrap();
        large
            .register_provider(&profile("https://large.example", resources(16_000, 65_536, 65_536)))
            .await
            .unwrap();

        let first = tenant
            .create_order(&cpu_order(&devnet, amount, 5 * TOKEN, 50 * TOKEN, 30))
            .await
            .unwrap();
        let second = tenant
            .create_order(&cpu_order(&devnet, amount, 5 * TOKEN, 50 * TOKEN, 30))
            .await
            .unwrap();
        let requirements = first.spec.requirements.clone();
        let small_first = small
            .place_bid(first.order_id, U256::from(TOKEN), B256::ZERO, &requirements)
            .await
            .unwrap();
        let small_second = small
            .place_bid(second.order_id, U256::from(TOKEN), B256::ZERO, &requirements)
            .await
            .unwrap();
        let large_second = large
            .place_bid(second.order_id, U256::from(3 * TOKEN), B256::ZERO, &requirements)
            .await
            .unwrap();

        let lease = tenant.accept_bid(first.order_id, small_first).await.unwrap();
        assert_eq!(lease.provider, small.sender());
        let info = anyone.provider_info(small.sender()).await.unwrap();
        assert_eq!(info.allocated, info.capacity, "the small provider is now full");

        // The tenant tries the cheap bid of the full provider on the second order.
        let err = tenant.accept_bid(second.order_id, small_second).await.unwrap_err();
        assert_eq!(err.revert_name(), Some("ProviderLacksCapacity"), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "acceptBid reverted: ProviderLacksCapacity(provider: {})",
                small.sender().to_checksum(None)
            )
        );
        let typed = err
            .revert()
            .and_then(|r| r.typed::<Marketplace::MarketplaceErrors>());
        assert!(
            matches!(typed, Some(Marketplace::MarketplaceErrors::ProviderLacksCapacity(ref e)) if e.provider == small.sender()),
            "{typed:?}"
        );
        let info = anyone.provider_info(small.sender()).await.unwrap();
        assert_eq!(info.allocated, info.capacity, "a failed accept reserves nothing");

        // settle passes over the cheaper but full provider and awards the dearer one.
        devnet.warp(31).await;
        let lease = anyone.settle(second.order_id).await.unwrap();
        assert_eq!(lease.provider, large.sender());
        assert_eq!(lease.bid_id, large_second);
        assert_eq!(lease.price_per_hour, U256::from(3 * TOKEN));
        assert_eq!(lease.skipped.len(), 1);
        assert_eq!(lease.skipped[0].provider, small.sender());
        assert_eq!(lease.skipped[0].bid_id, small_second);

        // Capacity never exceeds what was registered, and closing frees it.
        let info = anyone.provider_info(small.sender()).await.unwrap();
        assert_eq!((info.allocated, info.active_leases), (amount, 1));
        small.close_lease(first.order_id, CloseReason::ProviderRequest).await.unwrap();
        let info = anyone.provider_info(small.sender()).await.unwrap();
        assert_eq!((info.allocated, info.active_leases), (resources(0, 0, 0), 0));
    })
    .await;
}
