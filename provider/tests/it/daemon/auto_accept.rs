//! Pre-lease starts of auto-accept orders (`SendOrderManifest` with `auto_accept`): the
//! manifest comes before the provider's bid, the workload starts under the reservation while
//! `placeBid` is mined, and the bid's own transaction creates the lease (`BidPlaced` and
//! `LeaseCreated` in one block), which adopts the running workload. Every refusal names its
//! reason; a start whose bid does not become the lease is removed with its reservation.

use super::*;
use leasehold_contracts::AutoAcceptRule;
use leasehold_proto::client::SignedLeaseClient;

use super::pre_lease::{process_setup_on, running_container};

/// The daemon's bid on hello.yaml with the test pricing (0.1 core at 36 tokens a core-hour).
const OUR_PRICE: u64 = 3_600_000;

/// Posts `order` with `rule` as the tenant; its order id.
async fn post_auto_accept(devnet: &Devnet, order: &NewOrder, rule: AutoAcceptRule) -> u64 {
    devnet
        .client(TENANT)
        .create_order_auto_accept(order, &devnet.signer(TENANT), &rule)
        .await
        .expect("createOrderWithPermit with a rule")
        .0
        .order_id
}

/// Sends the manifest ahead of the bid as `tenant deploy --auto-accept` does: again every
/// 50 ms while the provider has not reserved yet; the refusals seen before it took it.
async fn send_until_taken(tenant: &SignedLeaseClient, order_id: u64, manifest: &[u8]) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut refusals = 0;
    loop {
        match tenant
            .clone()
            .send_auto_accept_manifest(order_id, manifest.to_vec())
            .await
        {
            Ok(()) => return refusals,
            Err(error) => {
                assert!(
                    error.to_string().contains("no reservation for it yet"),
                    "only the missing reservation is worth retrying: {error}"
                );
                refusals += 1;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the auto-accept manifest was never taken"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rule(provider: Option<Address>, max_price_per_hour: u64) -> AutoAcceptRule {
    AutoAcceptRule {
        provider,
        max_price_per_hour: U256::from(max_price_per_hour),
    }
}

async fn reserved_cpu(handle: &DaemonHandle) -> u64 {
    handle
        .core()
        .capacity_report()
        .expect("report")
        .reserved
        .cpu_millis
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_auto_accept_manifest_starts_before_the_bid_and_the_bid_s_lease_adopts_it() {
    daemon_test(0..4, || async {
        // 1-second blocks: the bid is mined a block after the order, so the manifest sent
        // once the order is mined arrives while `placeBid` is in flight.
        let Started {
            devnet,
            handle,
            data_dir: _data_dir,
            ..
        } = started_with_blocks(
            Some(1),
            DaemonOptions {
                remove_unknown_workloads: true,
                reconcile_interval: Duration::from_secs(1),
                ..options()
            },
        )
        .await;
        let gateway = format!("https://{}", handle.gateway_addr().expect("gateway served"));
        let tenant = tenant_client(&devnet, &gateway).await;
        let store = handle.core().store().clone();
        let me = devnet.signer(PROVIDER).address();
        let (order, manifest) = hello_order(&devnet, 1_000 * TOKEN, 3_600);
        let order_id = post_auto_accept(&devnet, &order, rule(Some(me), 10 * TOKEN)).await;

        send_until_taken(&tenant, order_id, &manifest).await;
        let record = store
            .speculative(order_id)
            .await
            .expect("store")
            .expect("recorded before anything starts");
        let container = eventually("the workload to run", || running_container(order_id)).await;

        // `BidPlaced` and `LeaseCreated` come in one block: the lease adopts the workload.
        eventually("the lease to run", || async {
            (lease_state(&handle, order_id).await == Some(LeaseStateKind::Running)).then_some(())
        })
        .await;
        let lease = devnet.client(0).lease(order_id).await.expect("lease");
        assert_eq!(lease.provider, me);
        let bid_id = our_bid(&devnet, order_id).await.expect("our bid");
        assert_eq!(u64::from(lease.bid_id), bid_id, "our bid became the lease");
        assert!(
            record.bid_id.is_none_or(|recorded| recorded == bid_id),
            "recorded under our bid or the one in flight: {record:?}"
        );
        assert_eq!(
            running_container(order_id).await,
            Some(container),
            "adopted: the same container, never restarted"
        );
        let status = tenant.clone().status(order_id).await.expect("status");
        assert_eq!(status.state, "running");
        let response = http_get_async(status.services[0].uris[0].clone(), "/")
            .await
            .expect("GET");
        assert!(response.contains(" 200"), "{response}");
        assert!(store.speculative(order_id).await.expect("store").is_none());
        // The bidder's bookkeeping of its mined bid, which may come after the lease adopted
        // the start, keeps the lease's allocation and group: without them the lease could not
        // be redeployed, nor counted as allocated after a restart.
        eventually("the bidder's bookkeeping of its bid", || async {
            (handle.core().metrics().bids_placed.get() == 1).then_some(())
        })
        .await;
        let row = store
            .reservation(order_id)
            .await
            .expect("store")
            .expect("the lease's allocation");
        let holding: leasehold_provider::bidder::Holding =
            serde_json::from_value(row.resources.clone()).expect("a holding");
        assert!(holding.allocated, "still the lease's allocation: {row:?}");
        assert!(
            holding.group.is_some(),
            "still the manifest's group: {row:?}"
        );
        let history = store.history(order_id).await.expect("history");
        let kinds: Vec<&str> = history.iter().map(|entry| entry.kind.as_str()).collect();
        assert!(kinds.contains(&"adopted_pre_lease"), "{kinds:?}");
        assert_eq!(handle.core().metrics().speculative_adopted.get(), 1);
        assert_eq!(handle.core().metrics().speculative_removed.get(), 0);
        handle.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_accept_manifests_are_refused_for_orders_the_rule_does_not_give_us() {
    daemon_test(0..4, || async {
        let Started {
            devnet,
            handle,
            data_dir: _data_dir,
            ..
        } = started(options()).await;
        let gateway = format!("https://{}", handle.gateway_addr().expect("gateway served"));
        let tenant = tenant_client(&devnet, &gateway).await;
        let store = handle.core().store().clone();
        let (order, manifest) = hello_order(&devnet, 1_000 * TOKEN, 3_600);
        let refused = |order_id: u64, manifest: Vec<u8>| {
            let mut tenant = tenant.clone();
            async move {
                tenant
                    .send_auto_accept_manifest(order_id, manifest)
                    .await
                    .expect_err("refused")
                    .to_string()
            }
        };

        // No rule: as before, a manifest before the lease needs the bid being accepted.
        let plain = devnet
            .client(TENANT)
            .create_order(&order)
            .await
            .expect("createOrder")
            .order_id;
        eventually("our bid", || our_bid(&devnet, plain)).await;
        let error = refused(plain, manifest.clone()).await;
        assert!(error.contains("it has no auto-accept rule"), "{error}");

        // A rule naming another provider.
        let other = devnet.signer(4).address();
        let elsewhere = post_auto_accept(&devnet, &order, rule(Some(other), 10 * TOKEN)).await;
        eventually("our bid", || our_bid(&devnet, elsewhere)).await;
        let error = refused(elsewhere, manifest.clone()).await;
        assert!(
            error.contains(&format!("its auto-accept rule names provider {other}")),
            "{error}"
        );

        // A rule for any provider, below our price (our bid stays a plain bid), and a
        // manifest the order does not commit to.
        let any = post_auto_accept(&devnet, &order, rule(None, 1)).await;
        eventually("our bid", || our_bid(&devnet, any)).await;
        let mut tampered = manifest.clone();
        tampered.extend_from_slice(b" ");
        let error = refused(any, tampered).await;
        assert!(error.contains("manifest hash mismatch"), "{error}");

        for order_id in [plain, elsewhere, any] {
            assert!(containers_of(order_id).await.is_empty(), "nothing started");
            assert!(store.speculative(order_id).await.expect("store").is_none());
        }
        handle.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_auto_accept_start_whose_bid_is_not_taken_goes_when_the_order_is_cancelled() {
    daemon_test(0..4, || async {
        let Started {
            devnet,
            handle,
            data_dir: _data_dir,
            ..
        } = started(options()).await;
        let gateway = format!("https://{}", handle.gateway_addr().expect("gateway served"));
        let tenant = tenant_client(&devnet, &gateway).await;
        let store = handle.core().store().clone();
        let (order, manifest) = hello_order(&devnet, 1_000 * TOKEN, 3_600);
        // The rule covers any provider but not our price: our bid stays a plain bid.
        let order_id = post_auto_accept(&devnet, &order, rule(None, OUR_PRICE - 1)).await;
        send_until_taken(&tenant, order_id, &manifest).await;
        eventually("the workload to run", || running_container(order_id)).await;
        assert_eq!(reserved_cpu(&handle).await, 100, "on the bid's reservation");
        let bid_id = our_bid(&devnet, order_id).await.expect("our bid");
        eventually("the start to learn its bid", || async {
            (store.speculative(order_id).await.ok()??.bid_id == Some(bid_id)).then_some(())
        })
        .await;

        devnet
            .client(TENANT)
            .cancel_order(order_id)
            .await
            .expect("cancel");
        eventually("the start to be removed", || async {
            (containers_of(order_id).await.is_empty() && networks_of(order_id).await == 0)
                .then_some(())
        })
        .await;
        eventually("the reservation to be freed", || async {
            (reserved_cpu(&handle).await == 0).then_some(())
        })
        .await;
        assert!(store.speculative(order_id).await.expect("store").is_none());
        assert!(store.reservation(order_id).await.expect("store").is_none());
        assert_eq!(lease_state(&handle, order_id).await, None);
        assert_eq!(handle.core().metrics().speculative_removed.get(), 1);
        handle.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_dash_nine_right_after_an_auto_accept_manifest_then_the_lease_adopts_the_start() {
    daemon_test(0..4, || async {
        let setup = process_setup_on(Some(1)).await;
        let mut daemon = DaemonProcess::spawn(&setup.devnet, &setup.config_path);
        let tenant = tenant_client(&setup.devnet, &setup.gateway).await;
        let me = setup.devnet.signer(PROVIDER).address();
        let (order, manifest) = hello_order(&setup.devnet, 1_000 * TOKEN, 3_600);
        let order_id = post_auto_accept(&setup.devnet, &order, rule(Some(me), 10 * TOKEN)).await;
        // Killed as soon as the record is written: the start may be half done and the bid
        // in flight; the bid's lease comes while the daemon is down or as it restarts.
        send_until_taken(&tenant, order_id, &manifest).await;
        daemon.kill();
        let store = leasehold_provider::store::Store::connect(&setup.config.database_url())
            .await
            .expect("store");
        assert!(
            store.speculative(order_id).await.expect("store").is_some(),
            "recorded before the kill"
        );
        drop(store);

        let _daemon = DaemonProcess::spawn(&setup.devnet, &setup.config_path);
        let uris = eventually("the adopted lease to run", || {
            let mut signed = tenant.clone();
            async move {
                let (state, uris) = lease_state_on(&mut signed, order_id).await?;
                (state == "running" && !uris.is_empty()).then_some(uris)
            }
        })
        .await;
        let lease = setup.devnet.client(0).lease(order_id).await.expect("lease");
        assert_eq!(lease.provider, me, "our bid became the lease");
        assert_eq!(containers_of(order_id).await.len(), 1, "one container");
        let response = http_get_async(uris[0].clone(), "/").await.expect("GET");
        assert!(response.contains(" 200"), "{response}");
    })
    .await;
}

/// The daemon is killed with its `placeBid` in the mempool (mining paused), so the bid is
/// mined (and, by the rule, becomes the lease) with nobody to record its receipt. The
/// restarted daemon replays the order, finds it leased to itself (or its new `placeBid`
/// refused), and must keep the reservation and the running workload for the lease to
/// adopt: the tenant already sent its manifest and will not send it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bid_mined_while_the_daemon_was_down_keeps_its_pre_lease_start() {
    daemon_test(0..4, || async {
        let setup = process_setup_on(Some(1)).await;
        let mut daemon = DaemonProcess::spawn(&setup.devnet, &setup.config_path);
        let tenant = tenant_client(&setup.devnet, &setup.gateway).await;
        let me = setup.devnet.signer(PROVIDER).address();
        let (order, manifest) = hello_order(&setup.devnet, 1_000 * TOKEN, 3_600);
        let order_id = post_auto_accept(&setup.devnet, &order, rule(Some(me), 10 * TOKEN)).await;
        let rpc = &setup.devnet.rpc;
        rpc.anvil_set_interval_mining(0)
            .await
            .expect("pause mining");
        rpc.anvil_set_auto_mine(false).await.expect("automine off");
        send_until_taken(&tenant, order_id, &manifest).await;
        eventually("our placeBid in the mempool", || async {
            let mined = rpc.get_transaction_count(me).latest().await.ok()?;
            let pending = rpc.get_transaction_count(me).pending().await.ok()?;
            (pending > mined).then_some(())
        })
        .await;
        daemon.kill();
        // Mined only once the restarted daemon has passed its startup reconcile (which
        // would adopt a lease it already finds): the replayed order meets the lease.
        let _daemon = DaemonProcess::spawn(&setup.devnet, &setup.config_path);
        let gateway = setup.config.gateway.listen.clone();
        eventually("the restarted gateway", || {
            let gateway = gateway.clone();
            async move { tokio::net::TcpStream::connect(gateway).await.ok().map(drop) }
        })
        .await;
        rpc.anvil_set_interval_mining(1)
            .await
            .expect("resume mining");
        let uris = eventually("the adopted lease to run", || {
            let mut signed = tenant.clone();
            async move {
                let (state, uris) = lease_state_on(&mut signed, order_id).await?;
                (state == "running" && !uris.is_empty()).then_some(uris)
            }
        })
        .await;
        assert_eq!(containers_of(order_id).await.len(), 1, "one container");
        let response = http_get_async(uris[0].clone(), "/").await.expect("GET");
        assert!(response.contains(" 200"), "{response}");
    })
    .await;
}
