//! Delivery-gated leases (issue #11, finding 1) and the time rules (finding 4) through the
//! typed client: a lease pays only from its provider's confirmation, an unconfirmed one is
//! closed by anyone after its deadline with a full refund plus part of the provider's stake,
//! bids stop at the window and strangers wait out the tenant's grace.

use alloy::primitives::U256;
use leasehold_contracts::{
    DEFAULT_DELIVERY_WINDOW_SECS, LeaseStarted, MarketplaceClient, OrderPosted, TENANT_GRACE_SECS,
};

use crate::support::*;

const PRICE_PER_HOUR: u64 = 3_600_000; // 1,000 base units per second
const DEPOSIT: u64 = 10 * TOKEN;
const BID_WINDOW: u64 = 30;

async fn order_with_bid(devnet: &Devnet) -> (MarketplaceClient, MarketplaceClient, OrderPosted) {
    let tenant = devnet.client(TENANT);
    let provider = devnet.client(PROVIDER_A);
    let amount = resources(1_000, 1_024, 0);
    provider
        .register_provider(&profile("https://p.example", amount))
        .await
        .unwrap();
    let order = tenant
        .create_order(&cpu_order(
            devnet,
            amount,
            PRICE_PER_HOUR,
            DEPOSIT,
            BID_WINDOW,
        ))
        .await
        .unwrap();
    provider
        .place_bid(
            order.order_id,
            U256::from(PRICE_PER_HOUR),
            None,
            &order.spec.requirements,
        )
        .await
        .unwrap();
    (tenant, provider, order)
}

async fn pending_lease(devnet: &Devnet) -> (MarketplaceClient, MarketplaceClient, LeaseStarted) {
    let (tenant, provider, order) = order_with_bid(devnet).await;
    let lease = tenant.accept_bid(order.order_id, 0).await.unwrap();
    (tenant, provider, lease)
}

#[tokio::test]
async fn a_lease_pays_only_from_the_providers_confirmation() {
    within(async {
        let devnet = Devnet::start(None).await;
        let (_tenant, provider, lease) = pending_lease(&devnet).await;
        let anyone = devnet.client(STRANGER);
        let pending = anyone.lease(lease.lease_id).await.unwrap();
        assert!(!pending.confirmed);
        assert_eq!(pending.started_at, 0, "nothing accrues while pending");
        assert!(pending.delivery_deadline > 0);

        devnet.warp(DEFAULT_DELIVERY_WINDOW_SECS / 2).await;
        let owed = anyone.owed(lease.lease_id).await.unwrap();
        assert_eq!(
            owed.withdrawable,
            U256::ZERO,
            "no pay for time before delivery"
        );

        provider.confirm_lease(lease.lease_id).await.unwrap();
        let confirmed = anyone.lease(lease.lease_id).await.unwrap();
        assert!(confirmed.confirmed);
        let info = anyone.provider_info(provider.sender()).await.unwrap();
        assert_eq!((info.deliveries_confirmed, info.deliveries_failed), (1, 0));
        let err = provider.confirm_lease(lease.lease_id).await.unwrap_err();
        assert_eq!(err.revert_name(), Some("LeaseNotPending"), "{err}");

        devnet.warp(100).await;
        let owed = anyone.owed(lease.lease_id).await.unwrap();
        assert!(
            owed.withdrawable >= U256::from(100_000u64),
            "100 s accrued after the confirmation: {}",
            owed.withdrawable
        );
    })
    .await;
}

#[tokio::test]
async fn an_undelivered_lease_refunds_the_tenant_and_slashes_the_provider() {
    within(async {
        let devnet = Devnet::start(None).await;
        let (tenant, provider, lease) = pending_lease(&devnet).await;
        let anyone = devnet.client(STRANGER);
        let err = anyone.close_undelivered(lease.lease_id).await.unwrap_err();
        assert_eq!(err.revert_name(), Some("DeliveryWindowOpen"), "{err}");

        devnet.warp(DEFAULT_DELIVERY_WINDOW_SECS).await;
        let err = provider.confirm_lease(lease.lease_id).await.unwrap_err();
        assert_eq!(err.revert_name(), Some("DeliveryDeadlinePassed"), "{err}");

        let tenant_before = devnet.balance(tenant.sender()).await;
        let provider_before = devnet.balance(provider.sender()).await;
        let closed = anyone.close_undelivered(lease.lease_id).await.unwrap();
        let stake = devnet.params.minimum_stake;
        let slash = stake * U256::from(devnet.params.delivery_slash_bps) / U256::from(10_000u64);
        assert_eq!(closed.refunded_to_tenant, U256::from(DEPOSIT));
        assert_eq!(closed.slashed_to_tenant, slash);
        assert_eq!(
            devnet.balance(tenant.sender()).await,
            tenant_before + U256::from(DEPOSIT) + slash
        );
        assert_eq!(devnet.balance(provider.sender()).await, provider_before);
        let info = anyone.provider_info(provider.sender()).await.unwrap();
        assert_eq!((info.deliveries_confirmed, info.deliveries_failed), (0, 1));
        assert_eq!(info.stake, stake - slash);
        assert_eq!(info.active_leases, 0, "capacity released");

        // Below the minimum stake now: no bid until the provider tops the stake up.
        let amount = resources(1_000, 1_024, 0);
        let next = tenant
            .create_order(&cpu_order(
                &devnet,
                amount,
                PRICE_PER_HOUR,
                DEPOSIT,
                BID_WINDOW,
            ))
            .await
            .unwrap();
        let bid = |provider: &MarketplaceClient| {
            let provider = provider.clone();
            let requirements = next.spec.requirements.clone();
            async move {
                provider
                    .place_bid(
                        next.order_id,
                        U256::from(PRICE_PER_HOUR),
                        None,
                        &requirements,
                    )
                    .await
            }
        };
        let err = bid(&provider).await.unwrap_err();
        assert_eq!(
            err.revert_name(),
            Some("ProviderStakeBelowMinimum"),
            "{err}"
        );
        assert_eq!(provider.add_stake(slash).await.unwrap(), stake);
        bid(&provider)
            .await
            .expect("a topped-up provider bids again");
    })
    .await;
}

#[tokio::test]
async fn bids_stop_at_the_window_and_strangers_wait_for_the_tenants_grace() {
    within(async {
        let devnet = Devnet::start(None).await;
        let (tenant, _provider, order) = order_with_bid(&devnet).await;
        let late = devnet.client(PROVIDER_B);
        late.register_provider(&profile("https://late.example", resources(1_000, 1_024, 0)))
            .await
            .unwrap();
        devnet.warp(BID_WINDOW).await;
        let err = late
            .place_bid(
                order.order_id,
                U256::from(1u64),
                None,
                &order.spec.requirements,
            )
            .await
            .unwrap_err();
        assert_eq!(err.revert_name(), Some("BidWindowClosed"), "{err}");

        let anyone = devnet.client(STRANGER);
        let err = anyone.settle(order.order_id).await.unwrap_err();
        assert_eq!(err.revert_name(), Some("TenantGracePeriod"), "{err}");
        devnet.warp(TENANT_GRACE_SECS).await;
        let lease = anyone.settle(order.order_id).await.unwrap();
        assert_eq!(lease.bid_id, 0);
        let info = tenant.order(order.order_id).await.unwrap();
        assert!(info.expires_at > info.bid_window_end);
    })
    .await;
}

/// `updateManifest` (issue #13, item 4): only the tenant, only an active lease (pending or
/// confirmed); each update counts a revision, the lease and the order name the latest hash,
/// and the event decodes to `ChainEvent::ManifestUpdated`.
#[tokio::test]
async fn only_the_tenant_updates_an_active_leases_manifest_and_each_update_counts() {
    use alloy::primitives::B256;
    use alloy::providers::Provider;
    use alloy::rpc::types::Filter;
    use leasehold_contracts::ChainEvent;

    within(async {
        let devnet = Devnet::start(None).await;
        let (tenant, provider, lease) = pending_lease(&devnet).await;
        let anyone = devnet.client(STRANGER);
        let original = anyone.lease(lease.lease_id).await.unwrap();
        assert_eq!(original.revision, 1, "the order's manifest");
        let second = B256::repeat_byte(0x22);
        for outsider in [&provider, &anyone] {
            let err = outsider
                .update_manifest(lease.lease_id, second)
                .await
                .unwrap_err();
            assert_eq!(err.revert_name(), Some("NotTenant"), "{err}");
        }
        let zero = tenant.update_manifest(lease.lease_id, B256::ZERO).await;
        assert_eq!(zero.unwrap_err().revert_name(), Some("ZeroManifestHash"));

        let updated = tenant
            .update_manifest(lease.lease_id, second)
            .await
            .unwrap();
        assert_eq!((updated.revision, updated.manifest_hash), (2, second));
        provider.confirm_lease(lease.lease_id).await.unwrap();
        let third = B256::repeat_byte(0x33);
        let updated = tenant.update_manifest(lease.lease_id, third).await.unwrap();
        assert_eq!(updated.revision, 3, "confirmed leases update too");
        let info = anyone.lease(lease.lease_id).await.unwrap();
        assert_eq!((info.revision, info.manifest_hash), (3, third));
        let order = anyone.order(lease.lease_id).await.unwrap();
        assert_eq!(
            order.manifest_hash, third,
            "the order names the latest manifest"
        );

        let filter = Filter::new()
            .address(devnet.deployment.marketplace)
            .from_block(0);
        let updates: Vec<(u32, B256)> = devnet
            .rpc
            .get_logs(&filter)
            .await
            .expect("eth_getLogs")
            .iter()
            .filter_map(|log| ChainEvent::decode(log, &devnet.deployment).ok().flatten())
            .filter_map(|decoded| match decoded.event {
                ChainEvent::ManifestUpdated {
                    lease_id,
                    revision,
                    manifest_hash,
                } if lease_id == lease.lease_id => Some((revision, manifest_hash)),
                _ => None,
            })
            .collect();
        assert_eq!(updates, vec![(2, second), (3, third)]);

        tenant
            .close_lease(
                lease.lease_id,
                leasehold_contracts::CloseReason::TenantRequest,
            )
            .await
            .unwrap();
        let err = tenant
            .update_manifest(lease.lease_id, second)
            .await
            .unwrap_err();
        assert_eq!(err.revert_name(), Some("LeaseNotActive"), "{err}");
    })
    .await;
}
