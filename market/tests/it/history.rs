//! A market history indexed by a binary that is killed (SIGKILL) again and again ends in the
//! same database as one uninterrupted run, and agrees with the contracts' views.

use std::time::{Duration, Instant};

use leasehold_contracts::devnet::Devnet;
use leasehold_market::store::Store;

use crate::support::*;

const MIB: u64 = 1024 * 1024;

async fn killed_and_restarted_equals_uninterrupted(backend: Backend) {
    let devnet = devnet().await;
    register_providers(&devnet).await;
    let mut leases = drive_history(&devnet, 15).await;
    // Then blocks holding ten rounds each, among three tenants and three providers.
    leases.extend(
        crate::crowd::record_crowd_history(&devnet, 150, 10, 3, 3)
            .await
            .leases,
    );
    let head = head(&devnet).await;

    let reference = TestDb::new(backend).await;
    {
        let indexer = Indexer::start(&devnet, &reference, &["--confirmations", "0"]);
        indexer.wait_indexed(head).await;
        spot_check(&devnet, &indexer, &leases).await;
        let logged = Instant::now();
        while !indexer.log().contains("caught up;") && logged.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = indexer.log();
        assert!(
            log.contains("caught up; following new blocks") && log.contains("events_per_sec="),
            "the catch-up rate is logged:\n{log}"
        );
    }

    // Small ranges make many commits; each run is killed once the index passed the next
    // sixth of the history, seen in its database (a fixed delay misses a fast catch-up).
    let interrupted = TestDb::new(backend).await;
    let watcher = Store::connect(&interrupted.url)
        .await
        .expect("open the index");
    let indexed = || async {
        watcher
            .cursor()
            .await
            .expect("cursor")
            .map(|cursor| cursor.next_block.saturating_sub(1))
    };
    let mut kills_mid_way = 0;
    for sixth in 1..=5u64 {
        let target = head * sixth / 6;
        let mut indexer = Indexer::start(
            &devnet,
            &interrupted,
            &["--confirmations", "0", "--max-log-range", "1"],
        );
        let started = Instant::now();
        while indexed().await.is_none_or(|block| block < target)
            && started.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        indexer.kill();
        // How far the killed process got, read from the database it left behind.
        let indexed = indexed().await;
        if indexed.is_some_and(|block| block < head) {
            kills_mid_way += 1;
        }
        eprintln!(
            "killed after {:?}; indexed through {indexed:?} of {head}",
            started.elapsed()
        );
    }
    watcher.close().await;
    let indexer = Indexer::start(
        &devnet,
        &interrupted,
        &["--confirmations", "0", "--max-log-range", "1"],
    );
    indexer.wait_indexed(head).await;
    drop(indexer);
    assert!(
        kills_mid_way >= 3,
        "only {kills_mid_way} kills landed mid-way through the catch-up"
    );
    let (expected, actual) = (reference.dump().await, interrupted.dump().await);
    let events = &expected[0].1;
    assert!(
        events.len() > 100,
        "history too small: {} events",
        events.len()
    );
    assert_eq!(
        actual, expected,
        "killed-and-restarted index differs from an uninterrupted one"
    );
}

/// The API against the contracts' own views.
async fn spot_check(devnet: &Devnet, indexer: &Indexer, leases: &[u64]) {
    let chain = client(devnet, TENANT);
    for lease_id in leases {
        let on_chain = chain.lease(*lease_id).await.expect("lease view");
        let order = chain.order(*lease_id).await.expect("order view");
        let (code, indexed) = indexer.get(&format!("/api/v1/leases/{lease_id}")).await;
        assert_eq!(code, 200, "{indexed}");
        assert_eq!(
            indexed["paid_total"],
            on_chain.paid.to_string(),
            "lease {lease_id}: {indexed}"
        );
        assert_eq!(
            indexed["escrow_left"],
            order.escrow.to_string(),
            "lease {lease_id}: {indexed}"
        );
        let state = if on_chain.active { "active" } else { "closed" };
        assert_eq!(indexed["state"], state, "lease {lease_id}: {indexed}");
        assert_eq!(indexed["provider"], format!("{:#x}", on_chain.provider));
        assert_eq!(
            indexed["price_per_hour"],
            on_chain.price_per_hour.to_string()
        );
    }
    for index in [PROVIDER_A, PROVIDER_B] {
        let address = client(devnet, index).sender();
        let info = chain.provider_info(address).await.expect("provider view");
        let (code, indexed) = indexer
            .get(&format!("/api/v1/providers/{address:#x}"))
            .await;
        assert_eq!(code, 200, "{indexed}");
        assert_eq!(indexed["stake"], info.stake.to_string(), "{indexed}");
        assert_eq!(
            indexed["active_leases"],
            u64::from(info.active_leases),
            "{indexed}"
        );
        assert_eq!(
            indexed["allocated"]["cpu_millis"], info.allocated.cpu_milli,
            "{indexed}"
        );
        assert_eq!(
            indexed["allocated"]["memory_bytes"],
            info.allocated.memory_mib * MIB,
            "{indexed}"
        );
        assert_eq!(
            indexed["deliveries_confirmed"],
            u64::from(info.deliveries_confirmed)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_index_survives_kill_9_and_matches_the_chain() {
    within(killed_and_restarted_equals_uninterrupted(Backend::Sqlite)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_index_survives_kill_9_and_matches_the_chain() {
    within(killed_and_restarted_equals_uninterrupted(Backend::Postgres)).await;
}
