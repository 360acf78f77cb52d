//! What public endpoints do, through `devnet::RpcProxy`: rate limits (HTTP 429) retried, a
//! dead first URL failed over, and `eth_getLogs` block-range limits honoured by the client's
//! history reads over a long chain.

use std::sync::atomic::Ordering;

use alloy::primitives::U256;
use alloy::providers::ext::AnvilApi as _;
use leasehold_contracts::MarketplaceClient;
use leasehold_contracts::devnet::RpcProxy;

use crate::support::*;

/// A URL where nothing listens: a port bound and released.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

fn client_at(devnet: &Devnet, rpc_url: &str, index: usize) -> MarketplaceClient {
    MarketplaceClient::connect_http(rpc_url, devnet.signer(index).unwrap(), devnet.deployment)
        .unwrap()
}

#[tokio::test]
async fn rate_limited_calls_are_retried_until_they_pass() {
    within(async {
        let devnet = Devnet::start(None).await;
        let proxy = RpcProxy::start(&devnet.endpoint()).await.unwrap();
        let provider = client_at(&devnet, proxy.url(), PROVIDER_A);
        proxy.rate_limit_next(3);
        assert_eq!(
            provider.minimum_stake().await.unwrap(),
            devnet.params.minimum_stake
        );
        assert_eq!(proxy.counters().rate_limited.load(Ordering::SeqCst), 3);
        // A transaction (estimate, nonce, send, receipt) through a limiting endpoint.
        proxy.rate_limit_next(4);
        provider
            .register_provider(&profile(
                "https://a.example:8443",
                resources(1_000, 1_024, 1_024),
            ))
            .await
            .unwrap();
        assert_eq!(proxy.counters().rate_limited.load(Ordering::SeqCst), 7);
        assert!(
            devnet
                .client(STRANGER)
                .provider_info(provider.sender())
                .await
                .is_ok()
        );
    })
    .await;
}

#[tokio::test]
async fn a_dead_first_url_fails_over_to_the_second() {
    within(async {
        let devnet = Devnet::start(None).await;
        let urls = format!("{},{}", dead_url(), devnet.endpoint());
        let tenant = client_at(&devnet, &urls, TENANT);
        let before = tenant
            .token_balance(devnet.deployment.token, tenant.sender())
            .await
            .unwrap();
        let order = tenant
            .create_order(&cpu_order(
                &devnet,
                resources(500, 512, 512),
                TOKEN,
                10 * TOKEN,
                60,
            ))
            .await
            .expect("orders go through the second URL");
        assert_eq!(tenant.order_posted(order.order_id).await.unwrap(), order);
        assert_eq!(
            tenant
                .token_balance(devnet.deployment.token, tenant.sender())
                .await
                .unwrap(),
            before - U256::from(10 * TOKEN)
        );
        let all_dead = format!("{},{}", dead_url(), dead_url());
        let err = client_at(&devnet, &all_dead, TENANT)
            .minimum_stake()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("minimumStake"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn history_reads_honour_an_endpoint_block_range_limit() {
    within(async {
        let devnet = Devnet::start(None).await;
        let tenant = devnet.client(TENANT);
        let early = tenant
            .create_order(&cpu_order(
                &devnet,
                resources(500, 512, 512),
                TOKEN,
                10 * TOKEN,
                60,
            ))
            .await
            .unwrap();
        // Mining is slow on a loaded machine (~15 ms a block): enough blocks for several
        // refused ranges, not a public chain's history.
        devnet.rpc.anvil_mine(Some(1_200), None).await.unwrap();
        let late = tenant
            .create_order(&cpu_order(
                &devnet,
                resources(500, 512, 512),
                TOKEN,
                10 * TOKEN,
                60,
            ))
            .await
            .unwrap();
        let proxy = RpcProxy::start(&devnet.endpoint()).await.unwrap();
        proxy.limit_log_range(200);
        let reader = client_at(&devnet, proxy.url(), STRANGER);
        assert_eq!(reader.order_posted(early.order_id).await.unwrap(), early);
        assert_eq!(reader.order_posted(late.order_id).await.unwrap(), late);
        assert!(reader.attestations(None, None).await.unwrap().is_empty());
        let counters = proxy.counters();
        assert!(
            counters.ranges_refused.load(Ordering::SeqCst) > 0,
            "the limit was hit"
        );
        assert!(counters.widest_range.load(Ordering::SeqCst) <= 200);
    })
    .await;
}
