//! Opt-in measurements (`--ignored`): catch-up speed over a recorded history and API latency
//! with its leases indexed. Sizes: `LEASEHOLD_BENCH_ROUNDS` market rounds (default 200; each
//! is an order with two bids and, four times in five, a lease), SQLite unless
//! `LEASEHOLD_BENCH_POSTGRES=1`. Figures go to BENCHMARKS.md by hand.

use std::time::{Duration, Instant};

use crate::support::*;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_catch_up_and_api_latency() {
    let rounds: u64 = std::env::var("LEASEHOLD_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let backend = if std::env::var("LEASEHOLD_BENCH_POSTGRES").is_ok_and(|v| v == "1") {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    let devnet = devnet().await;
    register_providers(&devnet).await;
    let recording = Instant::now();
    let leases = drive_history(&devnet, rounds).await;
    let head = head(&devnet).await;
    eprintln!(
        "recorded {rounds} rounds ({} leases, {head} blocks) in {:?}",
        leases.len(),
        recording.elapsed()
    );

    let db = TestDb::new(backend).await;
    let started = Instant::now();
    let indexer = Indexer::start(&devnet, &db, &["--confirmations", "0"]);
    indexer.wait_indexed(head).await;
    let catch_up = started.elapsed();
    let events: usize = db
        .dump()
        .await
        .iter()
        .find(|(table, _)| table == "events")
        .map(|(_, rows)| rows.len())
        .unwrap_or_default();
    eprintln!(
        "{backend:?}: caught up on {events} events / {head} blocks in {catch_up:?} (process start \
         included): {:.0} events/s, {:.0} blocks/s",
        events as f64 / catch_up.as_secs_f64(),
        head as f64 / catch_up.as_secs_f64()
    );

    let http = reqwest::Client::new();
    let routes: Vec<String> = (0..300)
        .flat_map(|i| {
            let lease = leases[i % leases.len()];
            [
                format!("/api/v1/leases/{lease}"),
                "/api/v1/leases?state=active&limit=50".to_owned(),
                format!("/api/v1/orders/{lease}"),
                "/api/v1/providers".to_owned(),
            ]
        })
        .collect();
    let mut latencies = Vec::with_capacity(routes.len());
    for route in &routes {
        let sent = Instant::now();
        let response = http
            .get(format!("{}{route}", indexer.base))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 200, "{route}");
        response.bytes().await.expect("body");
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    eprintln!(
        "API over {} requests with {} leases indexed: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        leases.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
}
