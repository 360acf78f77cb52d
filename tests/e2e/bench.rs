//! Wall time from `tenant deploy` to the first HTTP 200 of hello.yaml on a devnet with
//! 1-second blocks. Ignored by default (it takes a minute or two); run it with
//!
//! ```sh
//! cargo test -p leasehold-e2e --test e2e -- --ignored --nocapture deploy_to_first_http_200
//! ```
//!
//! `LEASEHOLD_BENCH_RUNS` sets the number of runs (default 10). Each run also prints where
//! the time went, from the `elapsed_ms` of the deploy's progress events; the medians of
//! those phases close the output. Figures go to BENCHMARKS.md.

use std::time::{Duration, Instant};

use leasehold_e2e::http_get;
use leasehold_e2e::scenario::{
    PROVIDER_A, QUICK_DEPLOY, Scenario, TENANT, first_uri, hello, lease_ids,
};

/// `LEASEHOLD_BENCH_RUNS`: how many times a benchmark repeats its measurement (default 10,
/// at least 1).
pub(crate) fn bench_runs() -> usize {
    std::env::var("LEASEHOLD_BENCH_RUNS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(10)
        .max(1)
}

/// The progress events that end a phase, in the order a deploy emits them, with the phase's
/// name; the last phase (to the first 200) is measured by the benchmark itself.
const PHASE_ENDS: &[(&str, &str)] = &[
    ("order_created", "start → order created"),
    ("bid", "order → first bid seen"),
    ("lease_created", "bid → lease created"),
    ("manifest_sent", "lease → manifest accepted"),
    ("running", "manifest → reported running"),
];
const LAST_PHASE: &str = "running → first HTTP 200";

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn deploy_to_first_http_200() {
    let runs = bench_runs();
    // 800 base units an hour for hello.yaml's 0.1 core (it pays at most 1000).
    let scenario = Scenario::with_provider(8_000);
    let hello = hello();
    // The order's rule makes the provider's bid the lease in the bid's own transaction, and
    // the provider gets the manifest as soon as the order is mined.
    let provider = scenario.address(PROVIDER_A);
    let mut flags = QUICK_DEPLOY.to_vec();
    flags.extend(["--auto-accept", "--provider", &provider]);

    let mut figures = Vec::new();
    let mut early_taken = 0usize;
    let mut phases: Vec<Vec<f64>> = vec![Vec::new(); PHASE_ENDS.len() + 1];
    for run in 1..=runs {
        let started = Instant::now();
        let deploy = scenario.deploy(TENANT, &hello, &flags);
        deploy.expect_code(0, "tenant deploy");
        let document = deploy.json();
        let uri = first_uri(&document);
        let deadline = started + Duration::from_secs(60);
        while http_get(&uri).is_none_or(|response| response.status != 200) {
            assert!(Instant::now() < deadline, "{uri} never answered 200");
            std::thread::sleep(Duration::from_millis(20));
        }
        let elapsed = started.elapsed();
        let ends = phase_ends(&deploy.stderr);
        let mut line = String::new();
        let mut previous = 0.0;
        for (index, (end, (_, name))) in ends.iter().zip(PHASE_ENDS).enumerate() {
            let seconds = end - previous;
            line.push_str(&format!("{name} {seconds:.2}; "));
            phases[index].push(seconds);
            previous = *end;
        }
        let last = elapsed.as_secs_f64() - previous;
        phases[PHASE_ENDS.len()].push(last);
        let early = early_manifest(&deploy.stderr);
        if early == "taken" {
            early_taken += 1;
        }
        println!(
            "run {run:>2}: {:.2} s to the first 200 (deploy command {:.2} s): {line}{LAST_PHASE} {last:.2}; manifest before the lease: {early}",
            elapsed.as_secs_f64(),
            deploy.elapsed.as_secs_f64()
        );
        figures.push(elapsed.as_secs_f64());
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
    figures.sort_by(f64::total_cmp);
    println!(
        "deploy -> first HTTP 200 over {} runs: median {:.2} s, min {:.2} s, max {:.2} s",
        figures.len(),
        median(&mut figures.clone()),
        figures.first().copied().unwrap_or_default(),
        figures.last().copied().unwrap_or_default()
    );
    println!(
        "  the provider took the manifest before the lease in {early_taken} of {} runs",
        figures.len()
    );
    let names = PHASE_ENDS.iter().map(|(_, name)| *name).chain([LAST_PHASE]);
    for (name, seconds) in names.zip(&mut phases) {
        println!("  median {name}: {:.2} s", median(seconds));
    }
}

/// Seconds from the start of the deploy command to the first event of each of
/// [`PHASE_ENDS`]; fails the benchmark when one is missing.
fn phase_ends(stderr: &str) -> Vec<f64> {
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    PHASE_ENDS
        .iter()
        .map(|(kind, _)| {
            events
                .iter()
                .find(|event| event["event"] == *kind)
                .and_then(|event| event["elapsed_ms"].as_u64())
                .map(|ms| ms as f64 / 1000.0)
                .unwrap_or_else(|| panic!("no `{kind}` event with elapsed_ms in:\n{stderr}"))
        })
        .collect()
}

/// Whether the provider took the manifest sent ahead of the lease (the pre-lease start: with
/// `--auto-accept`, as soon as the order is mined), and why not when it refused.
fn early_manifest(stderr: &str) -> String {
    for event in stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
    {
        match event["event"].as_str() {
            Some("manifest_pre_lease") => return "taken".to_owned(),
            Some("manifest_pre_lease_refused") => {
                return format!(
                    "refused ({})",
                    event["message"].as_str().unwrap_or_default()
                );
            }
            _ => {}
        }
    }
    "not sent".to_owned()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
