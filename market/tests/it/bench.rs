//! Opt-in measurements (`--ignored`): catch-up speed over a recorded history and API latency
//! with its leases indexed. Sizes: `LEASEHOLD_BENCH_ROUNDS` market rounds (default 12,500:
//! about 120,000 indexed events and 10,000 leases), recorded by a [`crowd`](crate::crowd) with
//! `LEASEHOLD_BENCH_ROUNDS_PER_TX` rounds per transaction (default 25); SQLite unless
//! `LEASEHOLD_BENCH_POSTGRES=1`. Figures go to BENCHMARKS.md by hand.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use leasehold_contracts::devnet::{Devnet, DevnetConfig};

use crate::crowd::record_crowd_history;
use crate::support::*;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_catch_up_and_api_latency() {
    let rounds = env_u64("LEASEHOLD_BENCH_ROUNDS", 12_500);
    let rounds_per_tx = env_u64("LEASEHOLD_BENCH_ROUNDS_PER_TX", 25);
    let backend = if std::env::var("LEASEHOLD_BENCH_POSTGRES").is_ok_and(|v| v == "1") {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    // No per-block state on disk: a history this long otherwise leaves about 14 GB under
    // ~/.foundry/anvil/tmp. Logs and headers stay queryable, which is all the index reads.
    let devnet = Devnet::start_with(DevnetConfig {
        funded_accounts: 5,
        prune_history: true,
        ..DevnetConfig::default()
    })
    .await
    .expect("devnet");
    let recording = Instant::now();
    let history = record_crowd_history(&devnet, rounds, rounds_per_tx, 8, 8).await;
    let head = head(&devnet).await;
    eprintln!(
        "recorded {rounds} rounds ({} leases, {} transactions using at most {} gas, {head} \
         blocks) in {:.1?}",
        history.leases.len(),
        history.transactions,
        history.max_gas,
        recording.elapsed()
    );

    let db = TestDb::new(backend).await;
    let started = Instant::now();
    let indexer = Indexer::start(&devnet, &db, &["--confirmations", "0"]);
    indexer
        .wait_indexed_within(head, Duration::from_secs(1800))
        .await;
    let catch_up = started.elapsed();
    let events = db.count("events").await;
    eprintln!(
        "{backend:?}: caught up on {events} events / {head} blocks in {catch_up:.2?} (process start \
         included): {:.0} events/s",
        events as f64 / catch_up.as_secs_f64(),
    );

    // A mix of what the console asks: single leases and orders (with their payments and bids),
    // the first and a deep page of lease lists filtered by state, tenant and provider, the
    // provider list, prices and an events page from a random position.
    let leases = &history.leases;
    let pick = |i: usize, salt: usize| leases[(i * 7919 + salt * 104_729) % leases.len()];
    let mut routes: Vec<(&str, String)> = Vec::new();
    for i in 0..200 {
        let tenant = history.tenants[i % history.tenants.len()];
        let provider = history.providers[i % history.providers.len()];
        routes.extend([
            ("lease", format!("/api/v1/leases/{}", pick(i, 0))),
            ("order with bids", format!("/api/v1/orders/{}", pick(i, 1))),
            (
                "active leases, first page",
                "/api/v1/leases?state=active&limit=50".to_owned(),
            ),
            (
                "tenant's leases, deep page",
                format!(
                    "/api/v1/leases?tenant={tenant:#x}&limit=50&before={}",
                    pick(i, 2)
                ),
            ),
            (
                "provider's closed leases",
                format!("/api/v1/leases?provider={provider:#x}&state=closed&limit=50"),
            ),
            ("providers", "/api/v1/providers".to_owned()),
            ("prices", "/api/v1/prices?limit=500".to_owned()),
            (
                "events page",
                format!(
                    "/api/v1/events?after={}:0&limit=100",
                    1 + (i * 7919) as u64 % head
                ),
            ),
        ]);
    }
    let http = reqwest::Client::new();
    let mut by_route: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let mut all = Vec::with_capacity(routes.len());
    for (name, route) in &routes {
        let sent = Instant::now();
        let response = http
            .get(format!("{}{route}", indexer.base))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 200, "{route}");
        response.bytes().await.expect("body");
        let took = sent.elapsed();
        by_route.entry(name).or_default().push(took);
        all.push(took);
    }
    all.sort();
    eprintln!(
        "API over {} requests with {} leases indexed: p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        all.len(),
        leases.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all[all.len() - 1]
    );
    for (name, mut latencies) in by_route {
        latencies.sort();
        eprintln!(
            "  {name}: p50 {:.1?}, p99 {:.1?}",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        );
    }
}
