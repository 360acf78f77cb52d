//! Wall time from `tenant deploy` to the first HTTP 200 of hello.yaml on a devnet with
//! 1-second blocks. Ignored by default (it takes a minute or two); run it with
//!
//! ```sh
//! cargo test -p leasehold-e2e --test e2e -- --ignored --nocapture deploy_to_first_http_200
//! ```
//!
//! `LEASEHOLD_BENCH_RUNS` sets the number of runs (default 10). Figures go to BENCHMARKS.md.

use std::time::{Duration, Instant};

use leasehold_e2e::http_get;
use leasehold_e2e::scenario::{QUICK_DEPLOY, Scenario, TENANT, first_uri, hello, lease_ids};

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn deploy_to_first_http_200() {
    let runs: usize = std::env::var("LEASEHOLD_BENCH_RUNS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(10);
    // 800 base units an hour for hello.yaml's 0.1 core (it pays at most 1000).
    let scenario = Scenario::with_provider(8_000);
    let hello = hello();

    let mut figures = Vec::new();
    for run in 1..=runs {
        let started = Instant::now();
        let deploy = scenario.deploy(TENANT, &hello, QUICK_DEPLOY);
        deploy.expect_code(0, "tenant deploy");
        let document = deploy.json();
        let uri = first_uri(&document);
        let deadline = started + Duration::from_secs(60);
        while http_get(&uri).is_none_or(|response| response.status != 200) {
            assert!(Instant::now() < deadline, "{uri} never answered 200");
            std::thread::sleep(Duration::from_millis(20));
        }
        let elapsed = started.elapsed();
        println!(
            "run {run:>2}: {:.2} s to the first 200 (deploy command {:.2} s)",
            elapsed.as_secs_f64(),
            deploy.elapsed.as_secs_f64()
        );
        figures.push(elapsed);
        // Free the provider for the next run; closing is not part of the figure.
        for lease in lease_ids(&document) {
            scenario
                .tenant(
                    TENANT,
                    &["close", &lease.to_string()],
                    Duration::from_secs(60),
                )
                .expect_code(0, "tenant close");
        }
    }
    figures.sort();
    let seconds: Vec<f64> = figures.iter().map(Duration::as_secs_f64).collect();
    let median = match seconds.len() {
        0 => 0.0,
        n if n % 2 == 1 => seconds[n / 2],
        n => (seconds[n / 2 - 1] + seconds[n / 2]) / 2.0,
    };
    println!(
        "deploy -> first HTTP 200 over {} runs: median {median:.2} s, min {:.2} s, max {:.2} s",
        seconds.len(),
        seconds.first().copied().unwrap_or_default(),
        seconds.last().copied().unwrap_or_default()
    );
}
