//! Capacity is reserved per lease: a full provider is skipped by `settle`, and `acceptBid` on it
//! reverts with a decoded error.

use alloy::primitives::U256;
use leasehold_contracts::bindings::Marketplace;
use leasehold_contracts::{CloseReason, GpuCapacity};

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
            .place_bid(first.order_id, U256::from(TOKEN), None, &requirements)
            .await
            .unwrap();
        let small_second = small
            .place_bid(second.order_id, U256::from(TOKEN), None, &requirements)
            .await
            .unwrap();
        let large_second = large
            .place_bid(second.order_id, U256::from(3 * TOKEN), None, &requirements)
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
                "acceptBid reverted: ProviderLacksCapacity(provider: {}); the provider has no \
                 room left for this order; pick another bid",
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
        devnet
            .warp(31 + leasehold_contracts::TENANT_GRACE_SECS)
            .await;
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

#[tokio::test]
async fn gpu_models_are_matched_and_gpu_capacity_is_reserved() {
    within(async {
        let devnet = Devnet::start(None).await;
        let tenant = devnet.client(TENANT);
        let gpu_host = devnet.client(PROVIDER_A);
        let cpu_host = devnet.client(PROVIDER_B);
        let anyone = devnet.client(STRANGER);
        let a100 = attribute("nvidia/a100/80Gi/sxm");
        let h100 = attribute("nvidia/h100/80Gi/sxm");
        let mut gpu_profile = profile("https://gpu.example", resources(32_000, 131_072, 0));
        gpu_profile.gpus = vec![GpuCapacity {
            model_key: a100,
            count: 2,
        }];
        gpu_host.register_provider(&gpu_profile).await.unwrap();
        cpu_host
            .register_provider(&profile(
                "https://cpu.example",
                resources(32_000, 131_072, 0),
            ))
            .await
            .unwrap();

        let mut request = cpu_order(
            &devnet,
            resources(1_000, 1_024, 0),
            5 * TOKEN,
            10 * TOKEN,
            30,
        );
        request.spec.gpu_count = 2;
        request.spec.requirements.allowed_gpu_models = vec![a100, h100];
        let first = tenant.create_order(&request).await.unwrap();
        let second = tenant.create_order(&request).await.unwrap();
        let requirements = first.spec.requirements.clone();

        let err = cpu_host
            .place_bid(
                first.order_id,
                U256::from(TOKEN),
                Some("nvidia/a100/80Gi/sxm"),
                &requirements,
            )
            .await
            .unwrap_err();
        assert_eq!(err.revert_name(), Some("ProviderLacksGpuModel"), "{err}");
        let err = gpu_host
            .place_bid(first.order_id, U256::from(TOKEN), None, &requirements)
            .await
            .unwrap_err();
        assert_eq!(err.revert_name(), Some("InvalidGpuModelPart"), "{err}");
        let err = gpu_host
            .place_bid(
                first.order_id,
                U256::from(TOKEN),
                Some("nvidia/h100/80Gi/sxm"),
                &requirements,
            )
            .await
            .unwrap_err();
        assert_eq!(err.revert_name(), Some("ProviderLacksGpuModel"), "{err}");

        let bid_first = gpu_host
            .place_bid(
                first.order_id,
                U256::from(TOKEN),
                Some("nvidia/a100/80Gi/sxm"),
                &requirements,
            )
            .await
            .unwrap();
        let bid_second = gpu_host
            .place_bid(
                second.order_id,
                U256::from(TOKEN),
                Some("nvidia/a100/80Gi/sxm"),
                &requirements,
            )
            .await
            .unwrap();
        let lease = tenant.accept_bid(first.order_id, bid_first).await.unwrap();
        assert_eq!(lease.gpu_model, a100);
        let info = anyone.provider_info(gpu_host.sender()).await.unwrap();
        assert_eq!((info.gpus[0].model_key, info.gpus[0].allocated), (a100, 2));

        // CPU and memory have room, the GPUs do not.
        let err = tenant
            .accept_bid(second.order_id, bid_second)
            .await
            .unwrap_err();
        assert_eq!(err.revert_name(), Some("ProviderLacksCapacity"), "{err}");
        tenant
            .close_lease(lease.lease_id, CloseReason::TenantRequest)
            .await
            .unwrap();
        let lease = tenant
            .accept_bid(second.order_id, bid_second)
            .await
            .unwrap();
        assert_eq!(lease.provider, gpu_host.sender());
    })
    .await;
}
