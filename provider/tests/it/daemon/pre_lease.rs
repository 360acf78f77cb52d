//! The pre-lease start (`Lease.SendOrderManifest`): the workload starts under the bid's
//! reservation before the lease exists, the lease adopts it without a restart, and every
//! other end of the order removes it, also across kill -9.

use super::*;
use leasehold_proto::client::SignedLeaseClient;

/// The lease's one container: its id, when it started and how often it restarted; `None`
/// until exactly one container runs.
pub(super) async fn running_container(lease_id: u64) -> Option<(String, String, i64)> {
    let ids = containers_of(lease_id).await;
    let [id] = ids.as_slice() else {
        return None;
    };
    let docker = bollard::Docker::connect_with_local_defaults().ok()?;
    let inspected = docker.inspect_container(id, None).await.ok()?;
    let state = inspected.state?;
    state.running.filter(|running| *running)?;
    Some((
        id.clone(),
        state.started_at.unwrap_or_default(),
        inspected.restart_count.unwrap_or_default(),
    ))
}

/// Sends the pre-lease manifest as soon as the bid is on chain (the daemon may not have its
/// `placeBid` receipt yet: it asks the chain whose bid it is).
async fn send_before_lease(
    tenant: &SignedLeaseClient,
    order_id: u64,
    bid_id: u64,
    manifest: &[u8],
) {
    tenant
        .clone()
        .send_order_manifest(order_id, bid_id, manifest.to_vec())
        .await
        .expect("pre-lease manifest accepted");
}

fn history_kinds(history: &[leasehold_provider::store::HistoryEntry]) -> Vec<&str> {
    history.iter().map(|entry| entry.kind.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_manifest_sent_before_the_lease_starts_the_workload_and_the_lease_adopts_it() {
    daemon_test(0..4, || async {
        // Reconcile passes every second that remove unknown workloads: a pre-lease start is
        // not unknown, and must survive them.
        let Started {
            devnet,
            handle,
            data_dir: _data_dir,
            ..
        } = started(DaemonOptions {
            remove_unknown_workloads: true,
            reconcile_interval: Duration::from_secs(1),
            ..options()
        })
        .await;
        let gateway = format!("https://{}", handle.gateway_addr().expect("gateway served"));
        let tenant = tenant_client(&devnet, &gateway).await;
        let store = handle.core().store().clone();
        let (order, manifest) = hello_order(&devnet, 1_000 * TOKEN, 3_600);
        let order_id = devnet
            .client(TENANT)
            .create_order(&order)
            .await
            .expect("createOrder")
            .order_id;
        let bid_id = eventually("our bid", || our_bid(&devnet, order_id)).await;
        eventually("the daemon to know its bid", || async {
            store
                .reservation(order_id)
                .await
                .ok()??
                .bid_id
                .filter(|id| *id == bid_id)
        })
        .await;

        // Refused, and nothing started: a signer who is not the order's tenant, a manifest
        // the order does not commit to, a bid that is not this provider's.
        let mut stranger = SignedLeaseClient::connect(
            &gateway,
            gateway_pin(&devnet).await,
            devnet.signer(3),
            Duration::from_secs(5),
        )
        .await
        .expect("gateway reachable");
        let refused = stranger
            .send_order_manifest(order_id, bid_id, manifest.clone())
            .await
            .expect_err("a stranger is refused");
        assert!(
            refused
                .to_string()
                .contains(&format!("is not the tenant of order {order_id}")),
            "{refused}"
        );
        let mut tampered = manifest.clone();
        tampered.extend_from_slice(b" ");
        let refused = tenant
            .clone()
            .send_order_manifest(order_id, bid_id, tampered)
            .await
            .expect_err("a manifest of another hash is refused");
        assert!(
            refused.to_string().contains("manifest hash mismatch"),
            "{refused}"
        );
        let refused = tenant
            .clone()
            .send_order_manifest(order_id, bid_id + 1, manifest.clone())
            .await
            .expect_err("another bid is refused");
        assert!(
            refused.to_string().contains("is not this provider's bid"),
            "{refused}"
        );
        assert!(containers_of(order_id).await.is_empty(), "nothing started");
        assert_eq!(networks_of(order_id).await, 0, "no network either");
        assert!(store.speculative(order_id).await.expect("store").is_none());

        // Accepted: the workload runs before the lease exists.
        tenant
            .clone()
            .send_order_manifest(order_id, bid_id, manifest.clone())
            .await
            .expect("pre-lease manifest accepted");
        tenant
            .clone()
            .send_order_manifest(order_id, bid_id, manifest.clone())
            .await
            .expect("the same again changes nothing");
        let before = eventually("the workload to run before the lease", || {
            running_container(order_id)
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            running_container(order_id).await.as_ref(),
            Some(&before),
            "reconcile passes keep a pre-lease start"
        );
        assert_eq!(lease_state(&handle, order_id).await, None, "no lease yet");

        let lease = devnet
            .client(TENANT)
            .accept_bid(order_id, bid_id)
            .await
            .expect("acceptBid");
        assert_eq!(lease.lease_id, order_id);
        eventually("the lease to run", || async {
            (lease_state(&handle, order_id).await == Some(LeaseStateKind::Running)).then_some(())
        })
        .await;
        eventually("delivery confirmed on chain", || async {
            devnet
                .client(0)
                .lease(order_id)
                .await
                .ok()?
                .confirmed
                .then_some(())
        })
        .await;
        assert_eq!(
            running_container(order_id).await,
            Some(before),
            "adopted: the same container, never restarted"
        );
        // The tenant's ordinary post-lease send is harmless.
        tenant
            .clone()
            .send_manifest(order_id, manifest)
            .await
            .expect("post-lease manifest");
        let status = tenant.clone().status(order_id).await.expect("status");
        assert_eq!(status.state, "running");
        let uri = status.services[0].uris[0].clone();
        let response = http_get_async(uri, "/").await.expect("GET");
        assert!(response.contains(" 200"), "{response}");
        assert!(store.speculative(order_id).await.expect("store").is_none());
        let history = store.history(order_id).await.expect("history");
        let kinds = history_kinds(&history);
        assert!(kinds.contains(&"manifest_accepted"), "{kinds:?}");
        assert!(kinds.contains(&"adopted_pre_lease"), "{kinds:?}");
        assert_eq!(handle.core().metrics().speculative_adopted.get(), 1);
        assert_eq!(handle.core().metrics().speculative_removed.get(), 0);
        handle.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pre_lease_start_is_removed_when_another_provider_gets_the_lease() {
    daemon_test(0..4, || async {
        let Started {
            devnet,
            handle,
            data_dir,
            config,
        } = started(options()).await;
        let rival = devnet.client(4);
        let hardware = Hardware::detect(data_dir.path(), &overrides(0)).expect("hardware");
        let mut rival_profile = provider_profile(&config, &hardware, B256::repeat_byte(0xce));
        rival_profile.endpoint = "https://rival.example:8443".to_owned();
        rival
            .register_provider(&rival_profile)
            .await
            .expect("rival registers");
        let gateway = format!("https://{}", handle.gateway_addr().expect("gateway served"));
        let tenant = tenant_client(&devnet, &gateway).await;
        let store = handle.core().store().clone();
        let reserved = || async {
            handle
                .core()
                .capacity_report()
                .expect("report")
                .reserved
                .cpu_millis
        };
        let (order, manifest) = hello_order(&devnet, 1_000 * TOKEN, 3_600);
        let posted = devnet
            .client(TENANT)
            .create_order(&order)
            .await
            .expect("createOrder");
        let order_id = posted.order_id;
        let bid_id = eventually("our bid", || our_bid(&devnet, order_id)).await;
        send_before_lease(&tenant, order_id, bid_id, &manifest).await;
        eventually("the workload to run before the lease", || {
            running_container(order_id)
        })
        .await;
        assert_eq!(reserved().await, 100, "it runs on the bid's reservation");

        let rival_bid = rival
            .place_bid(order_id, U256::from(TOKEN), None, &posted.spec.requirements)
            .await
            .expect("rival bids");
        devnet
            .client(TENANT)
            .accept_bid(order_id, rival_bid)
            .await
            .expect("the tenant takes the rival's bid");
        eventually("the pre-lease start to be removed", || async {
            (containers_of(order_id).await.is_empty() && networks_of(order_id).await == 0)
                .then_some(())
        })
        .await;
        eventually("the reservation to be freed", || async {
            (reserved().await == 0).then_some(())
        })
        .await;
        assert!(store.reservation(order_id).await.expect("store").is_none());
        assert!(store.speculative(order_id).await.expect("store").is_none());
        assert_eq!(lease_state(&handle, order_id).await, None);
        let history = store.history(order_id).await.expect("history");
        assert!(
            history_kinds(&history).contains(&"pre_lease_removed"),
            "{history:?}"
        );
        assert_eq!(handle.core().metrics().speculative_removed.get(), 1);
        handle.shutdown().await;
    })
    .await;
}

/// A provider process with its config written to its data dir; the gateway on a fixed port
/// so that a restarted daemon answers at the same address.
pub(super) struct ProcessSetup {
    pub(super) devnet: Devnet,
    _dir: tempfile::TempDir,
    pub(super) config: Config,
    pub(super) config_path: std::path::PathBuf,
    pub(super) gateway: String,
}

async fn process_setup() -> ProcessSetup {
    process_setup_on(None).await
}

/// [`process_setup`] on a devnet mining a block every `block_time` seconds (`None`: one per
/// transaction).
pub(super) async fn process_setup_on(block_time: Option<u64>) -> ProcessSetup {
    let devnet = Devnet::start(block_time).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = provider_config(&devnet, dir.path(), 0);
    config.gateway.listen = format!("127.0.0.1:{}", free_port());
    register(&devnet, &config).await;
    let config_path = dir.path().join("provider.toml");
    std::fs::write(&config_path, config.to_toml_string().expect("toml")).expect("write");
    let gateway = format!("https://{}", config.gateway.listen);
    ProcessSetup {
        devnet,
        _dir: dir,
        config,
        config_path,
        gateway,
    }
}

/// Posts hello.yaml's order, waits for the daemon's bid, sends the manifest before the lease
/// and waits for its container; the order id, bid id and the container.
async fn pre_lease_start(
    setup: &ProcessSetup,
    tenant: &SignedLeaseClient,
) -> (u64, u64, (String, String, i64)) {
    let devnet = &setup.devnet;
    let (order, manifest) = hello_order(devnet, 1_000 * TOKEN, 3_600);
    let order_id = devnet
        .client(TENANT)
        .create_order(&order)
        .await
        .expect("createOrder")
        .order_id;
    let bid_id = eventually("our bid", || our_bid(devnet, order_id)).await;
    send_before_lease(tenant, order_id, bid_id, &manifest).await;
    let container = eventually("the workload to run before the lease", || {
        running_container(order_id)
    })
    .await;
    (order_id, bid_id, container)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_dash_nine_then_the_lease_created_while_down_adopts_the_pre_lease_start() {
    daemon_test(0..4, || async {
        let setup = process_setup().await;
        let mut daemon = DaemonProcess::spawn(&setup.devnet, &setup.config_path);
        let tenant = tenant_client(&setup.devnet, &setup.gateway).await;
        let (order_id, bid_id, before) = pre_lease_start(&setup, &tenant).await;

        daemon.kill();
        setup
            .devnet
            .client(TENANT)
            .accept_bid(order_id, bid_id)
            .await
            .expect("acceptBid while the daemon is down");
        let _daemon = DaemonProcess::spawn(&setup.devnet, &setup.config_path);
        let uris = eventually("the adopted lease to run", || {
            let mut signed = tenant.clone();
            async move {
                let (state, uris) = lease_state_on(&mut signed, order_id).await?;
                (state == "running" && !uris.is_empty()).then_some(uris)
            }
        })
        .await;
        assert_eq!(
            running_container(order_id).await,
            Some(before),
            "adopted across the kill: one container, the same, never restarted"
        );
        let response = http_get_async(uris[0].clone(), "/").await.expect("GET");
        assert!(response.contains(" 200"), "{response}");
        eventually("delivery confirmed on chain", || async {
            setup
                .devnet
                .client(0)
                .lease(order_id)
                .await
                .ok()?
                .confirmed
                .then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_dash_nine_then_the_order_expires_removes_the_pre_lease_start() {
    daemon_test(0..4, || async {
        let setup = process_setup().await;
        let mut daemon = DaemonProcess::spawn(&setup.devnet, &setup.config_path);
        let tenant = tenant_client(&setup.devnet, &setup.gateway).await;
        let (order_id, _, _) = pre_lease_start(&setup, &tenant).await;

        daemon.kill();
        // Past the bid window and the matching period: nobody can accept the order any more.
        let order = setup.devnet.client(0).order(order_id).await.expect("order");
        let chain_now = order.bid_window_end.saturating_sub(3_600);
        setup
            .devnet
            .rpc
            .anvil_increase_time(order.expires_at - chain_now + 60)
            .await
            .expect("increase time");
        setup.devnet.rpc.evm_mine(None).await.expect("mine");

        // `--keep-unknown-workloads`: only the pre-lease start's own rule may remove it.
        // Opened (migrations checked) while no daemon runs, so the two never race for them.
        let store = leasehold_provider::store::Store::connect(&setup.config.database_url())
            .await
            .expect("store");
        let mut daemon = DaemonProcess::spawn(&setup.devnet, &setup.config_path);
        eventually("the pre-lease start of the expired order to go", || async {
            let gone = containers_of(order_id).await.is_empty()
                && networks_of(order_id).await == 0
                && store.speculative(order_id).await.ok()?.is_none()
                && store.reservation(order_id).await.ok()?.is_none();
            gone.then_some(())
        })
        .await;
        daemon.kill();
        assert!(store.find_lease(order_id).await.expect("store").is_none());
        let history = store.history(order_id).await.expect("history");
        assert!(
            history.iter().any(|entry| entry.kind == "pre_lease_removed"
                && entry.message.contains("the order expired")),
            "{history:?}"
        );
        store.close().await;
    })
    .await;
}
