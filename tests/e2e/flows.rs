//! The marketplace end to end: anvil (1-second blocks), `provider run` daemons on the local
//! Docker engine and the `tenant` CLI, all real processes. Flows take turns (`Scenario::start`
//! takes `scenario::serial`); each has its own chain, ports and data dirs, bounded waits,
//! and removes its processes, containers and networks when it ends, passed or failed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::sol_types::SolEvent as _;
use leasehold_contracts::bindings::Marketplace;
use leasehold_e2e::docker::{inspect, lease_containers, lease_networks};
use leasehold_e2e::process::stream_lines;
use leasehold_e2e::scenario::{
    DaemonStart, OTHER_TENANT, PROVIDER_A, PROVIDER_B, ProviderSpec, QUICK_DEPLOY, Scenario,
    TENANT, TOKEN, first_uri, hello, lease_ids,
};
use leasehold_e2e::{HttpResponse, eventually, http_get};

const MINUTE: Duration = Duration::from_secs(60);

/// Writes `yaml` into the scenario's temp dir.
pub(crate) fn manifest(scenario: &Scenario, name: &str, yaml: &str) -> PathBuf {
    let path = scenario.dir.path().join(name);
    std::fs::write(&path, yaml).unwrap_or_else(|error| panic!("writing {name}: {error}"));
    path
}

/// Deploys `manifest` as [`TENANT`], requiring success; returns the JSON document and lease.
pub(crate) fn deploy_ok(
    scenario: &Scenario,
    manifest: &Path,
    extra: &[&str],
) -> (serde_json::Value, u64) {
    let run = scenario.deploy(TENANT, manifest, extra);
    assert_eq!(
        run.code,
        Some(0),
        "tenant deploy failed ({:?}):\n{}\n{}\n{}",
        run.code,
        run.stdout,
        run.stderr,
        scenario.provider_logs()
    );
    let document = run.json();
    let lease = *lease_ids(&document)
        .first()
        .unwrap_or_else(|| panic!("no lease in {document}"));
    (document, lease)
}

fn wait_for_200(uri: &str) -> HttpResponse {
    eventually(&format!("HTTP 200 from {uri}"), MINUTE, || {
        http_get(uri).filter(|response| response.status == 200)
    })
}

pub(crate) fn wait_for_teardown(lease: u64) {
    eventually(
        &format!("lease {lease}'s containers and networks to be removed"),
        MINUTE,
        || (lease_containers(lease).is_empty() && lease_networks(lease).is_empty()).then_some(()),
    );
}

/// Per core-hour: hello.yaml's 0.1 core costs 800 base units an hour with A, 500 with B
/// (it pays at most 1000; memory and storage are free here).
pub(crate) const PRICE_A: u64 = 8_000;
const PRICE_B: u64 = 5_000;

#[test]
fn hello_deploys_and_its_url_answers_with_the_page() {
    let scenario = Scenario::with_provider(PRICE_A);

    let (document, lease) = deploy_ok(&scenario, &hello(), QUICK_DEPLOY);
    let uri = first_uri(&document);
    let response = wait_for_200(&uri);
    assert!(
        response.body.contains("hello from leasehold"),
        "unexpected page: {}",
        response.body
    );
    assert_eq!(
        document["groups"][0]["provider"]
            .as_str()
            .map(str::to_lowercase),
        Some(scenario.address(PROVIDER_A))
    );
    assert!(!lease_containers(lease).is_empty(), "no container labelled");

    // The status command agrees, in JSON. Wait a second first: the gateway rejects a call
    // whose signature it has seen, and the signed message has only second resolution, so a
    // second process repeating the deploy's last GetStatus within the same second is
    // refused as a replay (reported; the CLI dedupes only within one process).
    std::thread::sleep(Duration::from_millis(1100));
    let status = scenario.tenant(
        TENANT,
        &["status", &lease.to_string(), "--output", "json"],
        MINUTE,
    );
    status.expect_code(0, "tenant status");
    let status = status.json();
    assert!(
        status.to_string().contains(&uri),
        "status lacks the URI {uri}: {status}"
    );

    // Every replica runs, so the provider confirmed the delivery on chain; status says so.
    eventually("the delivery confirmation on chain", MINUTE, || {
        scenario.lease_on_chain(lease).confirmed.then_some(())
    });
    std::thread::sleep(Duration::from_millis(1100));
    let status = scenario.tenant(
        TENANT,
        &["status", &lease.to_string(), "--output", "json"],
        MINUTE,
    );
    status.expect_code(0, "tenant status");
    assert_eq!(status.json()["delivery"], "confirmed");
    assert_eq!(
        scenario.provider_on_chain(PROVIDER_A).deliveries_confirmed,
        1
    );
}

/// `tenant deploy --auto-accept --provider A`: the order's rule makes A's bid the lease in
/// the bid's own transaction (no `acceptBid`, although B bids cheaper), A takes the manifest
/// before its bid is mined and starts the workload, and the URL answers.
#[test]
fn an_auto_accept_deploy_runs_on_the_named_provider_without_accept_bid() {
    let mut scenario = Scenario::with_provider(PRICE_A);
    scenario.add_provider(ProviderSpec::new(PROVIDER_B, PRICE_B));
    let provider_a = scenario.address(PROVIDER_A);
    let mut flags = QUICK_DEPLOY.to_vec();
    flags.extend(["--auto-accept", "--provider", &provider_a]);

    let run = scenario.deploy(TENANT, &hello(), &flags);
    run.expect_code(0, "tenant deploy --auto-accept");
    let document = run.json();
    let lease = *lease_ids(&document)
        .first()
        .unwrap_or_else(|| panic!("no lease in {document}"));
    assert_eq!(
        document["groups"][0]["provider"]
            .as_str()
            .map(str::to_lowercase),
        Some(provider_a.clone()),
        "the named provider's bid is the lease: {document}"
    );
    let events: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|event| event["event"].as_str())
        .collect();
    assert!(
        kinds.contains(&"manifest_pre_lease"),
        "A took the manifest ahead of its bid: {kinds:?}\n{}",
        scenario.provider_logs()
    );
    let created = events
        .iter()
        .find(|event| event["event"] == "order_created")
        .unwrap_or_else(|| panic!("no order_created in {kinds:?}"));
    assert_eq!(
        created["data"]["auto_accept"]["provider"]
            .as_str()
            .map(str::to_lowercase),
        Some(provider_a)
    );
    // The lease came from the bid's own transaction, not from an `acceptBid` a block later.
    let bid_blocks = scenario.event_blocks(Marketplace::BidPlaced::SIGNATURE_HASH, lease);
    let lease_blocks = scenario.event_blocks(Marketplace::LeaseCreated::SIGNATURE_HASH, lease);
    assert_eq!(lease_blocks.len(), 1, "{lease_blocks:?}");
    assert!(
        bid_blocks.contains(&lease_blocks[0]),
        "the lease (block {lease_blocks:?}) in a bid's block ({bid_blocks:?})"
    );
    let response = wait_for_200(&first_uri(&document));
    assert!(
        response.body.contains("hello from leasehold"),
        "{}",
        response.body
    );
    assert!(!lease_containers(lease).is_empty(), "no container labelled");
}

/// Issue #11, finding 1: a provider whose runtime never starts the workload (an image that
/// cannot be pulled) is paid nothing and loses the slashed part of its stake to the tenant,
/// who gets the whole escrow back; `tenant status` shows the lease pending, then undelivered.
#[test]
fn a_workload_that_never_runs_is_refunded_in_full_and_the_provider_slashed() {
    let scenario = Scenario::with_provider(PRICE_A);
    let hello_text = std::fs::read_to_string(hello()).unwrap_or_else(|e| panic!("{e}"));
    let broken = hello_text.replace("leasehold/busybox:test", "leasehold/never-built:1");
    assert_ne!(broken, hello_text, "hello.yaml's image line moved");
    let broken = manifest(&scenario, "hello-unpullable.yaml", &broken);
    let before = scenario.token_balance(TENANT);
    let run = scenario.deploy(
        TENANT,
        &broken,
        &[
            "--bid-window",
            "5",
            "--deposit",
            "10000000",
            "--delivery-window",
            "60",
            "--timeout",
            "25",
        ],
    );
    assert_ne!(
        run.code,
        Some(0),
        "the workload cannot run:\n{}",
        run.stdout
    );
    // The only order of this fresh chain.
    let lease = 1;
    scenario.track_lease(lease);
    let pending = scenario.lease_on_chain(lease);
    assert!(!pending.confirmed, "an image that never ran was confirmed");
    if pending.active {
        let status = scenario.tenant(
            TENANT,
            &["status", &lease.to_string(), "--output", "json"],
            MINUTE,
        );
        status.expect_code(0, "tenant status");
        assert_eq!(status.json()["delivery"], "pending");
        // Past the delivery deadline the tenant's close takes the undelivered path (unless
        // the provider gave up first, which ends the same way).
        scenario.warp(61);
        if scenario.lease_on_chain(lease).active {
            let close = scenario.tenant(
                TENANT,
                &["close", &lease.to_string(), "--output", "json"],
                MINUTE,
            );
            close.expect_code(0, "tenant close");
            assert_eq!(close.json()["action"], "closed_undelivered");
        }
    }
    let closed = scenario.lease_on_chain(lease);
    assert!(!closed.active && !closed.confirmed);
    assert!(
        closed.paid.is_zero(),
        "the provider was paid {}",
        closed.paid
    );
    let params = scenario.devnet().params;
    let slash = params.minimum_stake * alloy::primitives::U256::from(params.delivery_slash_bps)
        / alloy::primitives::U256::from(10_000u64);
    assert_eq!(
        scenario.token_balance(TENANT),
        before + slash,
        "the whole deposit back plus the slashed stake"
    );
    let provider = scenario.provider_on_chain(PROVIDER_A);
    assert_eq!(
        (provider.deliveries_confirmed, provider.deliveries_failed),
        (0, 1)
    );
    assert_eq!(provider.stake, params.minimum_stake - slash);
    std::thread::sleep(Duration::from_millis(1100));
    let status = scenario.tenant(
        TENANT,
        &["status", &lease.to_string(), "--output", "json"],
        MINUTE,
    );
    status.expect_code(0, "tenant status");
    assert_eq!(status.json()["delivery"], "undelivered");
}

#[test]
fn the_cheaper_of_two_providers_wins() {
    let mut scenario = Scenario::with_provider(PRICE_A);
    scenario.add_provider(ProviderSpec::new(PROVIDER_B, PRICE_B));

    let (document, lease) = deploy_ok(
        &scenario,
        &hello(),
        &[
            "--bid-window",
            "5",
            "--select",
            "cheapest",
            "--deposit",
            "10000000",
        ],
    );
    assert_eq!(
        document["groups"][0]["provider"]
            .as_str()
            .map(str::to_lowercase),
        Some(scenario.address(PROVIDER_B)),
        "the cheaper provider B should win: {document}"
    );
    assert_eq!(
        document["groups"][0]["price_per_hour"].as_str(),
        Some("500")
    );
    let on_chain = scenario.lease_on_chain(lease);
    assert_eq!(
        on_chain.provider.to_string().to_lowercase(),
        scenario.address(PROVIDER_B)
    );

    let order = document["groups"][0]["order_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no order id in {document}"));
    let bids = scenario.tenant(
        TENANT,
        &["bids", &order.to_string(), "--output", "json"],
        MINUTE,
    );
    bids.expect_code(0, "tenant bids");
    let text = bids.json().to_string().to_lowercase();
    for provider in [PROVIDER_A, PROVIDER_B] {
        assert!(
            text.contains(&scenario.address(provider)),
            "bids lack provider {provider}: {text}"
        );
    }
    let uri = first_uri(&document);
    wait_for_200(&uri);
}

#[test]
fn close_refunds_the_tenant_and_removes_the_containers() {
    let scenario = Scenario::with_provider(PRICE_A);
    let (document, lease) = deploy_ok(&scenario, &hello(), QUICK_DEPLOY);
    let uri = first_uri(&document);
    wait_for_200(&uri);
    assert!(!lease_containers(lease).is_empty(), "no container labelled");
    assert!(!lease_networks(lease).is_empty(), "no network labelled");

    let before = scenario.token_balance(TENANT);
    let close = scenario.tenant(
        TENANT,
        &["close", &lease.to_string(), "--output", "json"],
        MINUTE,
    );
    close.expect_code(0, "tenant close");
    close.json();
    assert!(!scenario.lease_on_chain(lease).active, "lease still active");
    let after = scenario.token_balance(TENANT);
    assert!(after > before, "no refund: {before} -> {after}");
    wait_for_teardown(lease);
    assert!(http_get(&uri).is_none_or(|response| response.status != 200));

    // Closing again is an error with a meaningful exit code, not a success.
    let again = scenario.tenant(TENANT, &["close", &lease.to_string()], MINUTE);
    assert_eq!(again.code, Some(1), "second close: {again:?}");
}

/// Regression (issue #10): with two equal-sized placements, both leases used to run the
/// first group's service. Each order now names its group, and each lease answers as its own.
#[test]
fn each_group_of_a_two_group_deployment_runs_its_own_service() {
    let scenario = Scenario::with_provider(PRICE_A);
    let two_groups = leasehold_e2e::repo_root().join("manifests/examples/two-groups.yaml");
    let (document, _) = deploy_ok(&scenario, &two_groups, QUICK_DEPLOY);
    let groups = document["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("no groups in {document}"));
    assert_eq!(groups.len(), 2, "{document}");
    let mut answers = Vec::new();
    for group in groups {
        let name = group["group"].as_str().unwrap_or_default();
        let uri = group
            .pointer("/uris/0")
            .and_then(|uri| uri.as_str())
            .unwrap_or_else(|| panic!("group {name} has no URI: {document}"));
        let response = wait_for_200(uri);
        answers.push((name.to_owned(), response.body.trim().to_owned()));
    }
    answers.sort();
    assert_eq!(
        answers,
        vec![
            ("alpha".to_owned(), "this is web-a".to_owned()),
            ("beta".to_owned(), "this is web-b".to_owned()),
        ],
        "each lease must run its own group's service\n{}",
        scenario.provider_logs()
    );
}

pub(crate) const TICKER: &str = r#"
version: "2.0"
services:
  ticker:
    image: leasehold/busybox:test
    command:
      - sh
      - -c
      - "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"
profiles:
  compute:
    ticker:
      resources:
        cpu:
          units: 100m
        memory:
          size: 64Mi
        storage:
          size: 128Mi
  placement:
    anywhere:
      pricing:
        ticker:
          denom: usdc
          amount: 1000
deployment:
  ticker:
    anywhere:
      profile: ticker
      count: 1
"#;

/// Issue #13: `tenant events -f` shows a crashing replica's exits with their code and
/// its restarts, as NDJSON.
#[test]
fn events_follow_shows_exits_with_their_codes_and_restarts() {
    let scenario = Scenario::with_provider(PRICE_A);
    let crasher = TICKER
        .replace(
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done",
            "sleep 3; exit 3",
        )
        .replace("ticker", "crasher");
    let crasher = manifest(&scenario, "crasher.yaml", &crasher);
    let (_, lease) = deploy_ok(&scenario, &crasher, QUICK_DEPLOY);

    let lease_arg = lease.to_string();
    let command =
        scenario.tenant_command(TENANT, &["events", &lease_arg, "-f", "--output", "json"]);
    let is_exit_3 = |event: &serde_json::Value| {
        event["kind"] == "died"
            && event["message"] == "exit code 3"
            && event["service"] == "crasher"
    };
    let parse = |lines: &[String]| -> Vec<serde_json::Value> {
        lines
            .iter()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|error| panic!("event is not JSON ({error}): {line}"))
            })
            .collect()
    };
    let lines = stream_lines(command, MINUTE, |lines| {
        let events = parse(lines);
        events.iter().any(is_exit_3) && events.iter().any(|event| event["kind"] == "started")
    });
    let events = parse(&lines);
    assert!(
        events.iter().any(is_exit_3),
        "no exit with code 3 in a minute: {lines:?}\n{}",
        scenario.provider_logs()
    );
    assert!(
        events.iter().any(|event| event["kind"] == "started"),
        "no restart: {lines:?}"
    );
}

#[test]
fn logs_follow_streams_and_another_tenant_cannot_read_them() {
    let scenario = Scenario::with_provider(PRICE_A);
    let ticker = manifest(&scenario, "ticker.yaml", TICKER);
    let (_, lease) = deploy_ok(&scenario, &ticker, QUICK_DEPLOY);

    let lease_arg = lease.to_string();
    let command = scenario.tenant_command(TENANT, &["logs", &lease_arg, "-f", "--output", "json"]);
    let lines = stream_lines(command, MINUTE, |lines| {
        lines.iter().filter(|line| line.contains("tick")).count() >= 3
    });
    let ticks: Vec<&String> = lines.iter().filter(|line| line.contains("tick")).collect();
    assert!(
        ticks.len() >= 3,
        "logs -f streamed {} tick line(s) in a minute: {lines:?}\n{}",
        ticks.len(),
        scenario.provider_logs()
    );
    for line in &ticks {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|error| panic!("log line is not JSON ({error}): {line}"));
    }

    let stranger = scenario.tenant(OTHER_TENANT, &["logs", &lease_arg], MINUTE);
    assert_eq!(
        stranger.code,
        Some(1),
        "another tenant's logs: {stranger:?}"
    );
    assert!(
        !stranger.stdout.contains("tick"),
        "another tenant saw log lines: {}",
        stranger.stdout
    );
    assert!(
        stranger
            .stderr
            .contains(&format!("is not the tenant of lease {lease}")),
        "unclear refusal: {}",
        stranger.stderr
    );
}

#[test]
fn an_insolvent_lease_is_closed_and_its_containers_removed() {
    let mut scenario = Scenario::start(1);
    // 0.1 core at 36 tokens per core-hour: 1,000 base units a second, which hello.yaml
    // with a raised maximum price accepts; the deposit lasts 20 seconds.
    let mut spec = ProviderSpec::new(PROVIDER_A, 36 * TOKEN);
    spec.withdraw_interval_secs = 2;
    scenario.add_provider(spec);
    let hello_text = std::fs::read_to_string(hello()).unwrap_or_else(|e| panic!("{e}"));
    let pricey = hello_text.replace("amount: 1000\n", "amount: 3600000\n");
    assert_ne!(pricey, hello_text, "hello.yaml's price line moved");
    let pricey = manifest(&scenario, "hello-pricey.yaml", &pricey);
    let (document, lease) = deploy_ok(
        &scenario,
        &pricey,
        &["--bid-window", "5", "--deposit", "20000"],
    );
    let uri = first_uri(&document);
    wait_for_200(&uri);

    eventually(
        &format!("lease {lease} to be closed on chain"),
        Duration::from_secs(90),
        || (!scenario.lease_on_chain(lease).active).then_some(()),
    );
    wait_for_teardown(lease);
    let info = scenario.lease_on_chain(lease);
    assert_eq!(info.escrow, alloy::primitives::U256::ZERO, "{info:?}");
    assert!(info.paid <= alloy::primitives::U256::from(20_000u64));
}

const A100: &str = "nvidia/a100/80Gi/sxm";

/// One replica asking for an 80Gi SXM A100.
fn a100_sdl() -> String {
    gpu_sdl(
        1,
        "            vendor:\n              nvidia:\n                - model: a100\n                  ram: 80Gi\n                  interface: sxm",
    )
}

#[test]
fn a_gpu_order_goes_only_to_the_provider_with_that_model() {
    let mut scenario = Scenario::start(1);
    let mut with_a100 = ProviderSpec::new(PROVIDER_A, PRICE_A);
    with_a100.gpus = vec![(A100.to_owned(), 1)];
    with_a100.gpu_prices = format!("a100={},*={}", 2 * TOKEN, 2 * TOKEN);
    scenario.add_provider(with_a100);
    // Cheaper, but its GPU is an H100.
    let mut with_h100 = ProviderSpec::new(PROVIDER_B, PRICE_B);
    with_h100.gpus = vec![("nvidia/h100/80Gi/sxm".to_owned(), 1)];
    with_h100.gpu_prices = format!("*={TOKEN}");
    scenario.add_provider(with_h100);

    let sdl = manifest(&scenario, "a100.yaml", &a100_sdl());
    // No NVIDIA runtime here, so the container cannot start; give up quickly.
    let run = scenario.deploy(
        TENANT,
        &sdl,
        &[
            "--bid-window",
            "4",
            "--deposit",
            "10000000",
            "--timeout",
            "40",
        ],
    );
    let order = run
        .stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find_map(|event| event.pointer("/data/order_id").and_then(|id| id.as_u64()))
        .unwrap_or_else(|| panic!("no order in the progress events:\n{}", run.stderr));
    let lease = order;
    let info = scenario.lease_on_chain(lease);
    assert!(
        info.active || info.closed_at > 0,
        "no lease for order {order}"
    );
    assert_eq!(
        info.provider.to_string().to_lowercase(),
        scenario.address(PROVIDER_A),
        "the A100 order went to the wrong provider"
    );
    let bids = scenario.tenant(
        TENANT,
        &["bids", &order.to_string(), "--output", "json"],
        MINUTE,
    );
    bids.expect_code(0, "tenant bids");
    let text = bids.json().to_string().to_lowercase();
    assert!(text.contains(&scenario.address(PROVIDER_A)), "{text}");
    assert!(
        !text.contains(&scenario.address(PROVIDER_B)),
        "the H100 provider bid on an A100 order: {text}"
    );

    // Without the NVIDIA container runtime (as here) the provider refuses the GPU lease
    // before creating anything, naming what to install, and the deploy reports the failed
    // lease; with it, the deploy succeeds and the container asks Docker for the GPU by
    // device id (the request itself is unit-tested: `runtime::docker::tests`).
    if run.code != Some(0) {
        assert_eq!(run.code, Some(1), "{}", run.stderr);
        assert!(
            run.stderr.contains("nvidia-ctk"),
            "the failure should name the missing NVIDIA runtime: {}",
            run.stderr
        );
        assert!(
            lease_containers(lease).is_empty(),
            "a GPU replica was created"
        );
        return;
    }
    let container = eventually("the GPU lease's container", MINUTE, || {
        lease_containers(lease).into_iter().next()
    });
    let details = inspect(&container).unwrap_or_else(|| panic!("docker inspect {container}"));
    let request = details["HostConfig"]["DeviceRequests"]
        .get(0)
        .cloned()
        .unwrap_or_else(|| panic!("no device request: {details}"));
    assert_eq!(
        request["Capabilities"],
        serde_json::json!([["gpu"]]),
        "{request}"
    );
    assert_eq!(
        request["DeviceIDs"].as_array().map(Vec::len),
        Some(1),
        "{request}"
    );
}

#[test]
fn cli_json_output_parses_and_exit_codes_mean_something() {
    let mut scenario = Scenario::start(1);
    let node = scenario.add_provider(ProviderSpec::new(PROVIDER_A, PRICE_A));

    let providers = scenario.tenant(TENANT, &["providers", "--output", "json"], MINUTE);
    providers.expect_code(0, "tenant providers");
    let text = providers.json().to_string().to_lowercase();
    assert!(text.contains(&scenario.address(PROVIDER_A)), "{text}");

    let preflight = scenario.tenant(
        TENANT,
        &["preflight", &hello().to_string_lossy(), "--output", "json"],
        MINUTE,
    );
    preflight.expect_code(0, "tenant preflight");
    assert!(
        preflight
            .json()
            .to_string()
            .to_lowercase()
            .contains(&scenario.address(PROVIDER_A))
    );

    let leases = scenario.tenant(TENANT, &["leases", "--output", "json"], MINUTE);
    leases.expect_code(0, "tenant leases");
    leases.json();

    // Invalid manifest: 1, with the errors as JSON.
    let bad = manifest(&scenario, "bad.yaml", "version: \"2.0\"\nservices: {}\n");
    let invalid = scenario.tenant(
        TENANT,
        &["validate", &bad.to_string_lossy(), "--output", "json"],
        MINUTE,
    );
    invalid.expect_code(1, "validate of an invalid manifest");
    invalid.json();

    // Unknown lease: the operation fails (1).
    let missing = scenario.tenant(TENANT, &["status", "4242", "--output", "json"], MINUTE);
    assert_eq!(
        missing.code,
        Some(1),
        "status of a missing lease: {missing:?}"
    );

    // Unreachable chain: 3.
    let offline = scenario.tenant(
        TENANT,
        &[
            "--rpc-url",
            "http://127.0.0.1:1",
            "leases",
            "--output",
            "json",
        ],
        MINUTE,
    );
    offline.expect_code(3, "an unreachable RPC");

    // Usage error: 2.
    let usage = scenario.tenant(TENANT, &["deploy", "--select", "nonsense"], MINUTE);
    usage.expect_code(2, "a bad flag");

    // The provider's own status, through its gateway (over TLS, pinned to the
    // certificate in the config's data dir).
    let gateway = format!("https://{}", scenario.providers[node].gateway);
    let config = scenario.providers[node]
        .config
        .to_string_lossy()
        .into_owned();
    let status = leasehold_e2e::process::run_bounded(
        {
            let mut command = std::process::Command::new(&leasehold_e2e::binaries().provider);
            command.args([
                "status",
                "--config",
                &config,
                "--gateway",
                &gateway,
                "--output",
                "json",
            ]);
            command
        },
        MINUTE,
    );
    status.expect_code(0, "provider status");
    let status = status.json();
    assert_eq!(
        status["address"].as_str().map(str::to_lowercase),
        Some(scenario.address(PROVIDER_A)),
        "{status}"
    );
    assert_eq!(status["active_leases"], 0, "{status}");
}

/// The operator mistakes of issue #10: the daemon started from another working directory
/// (the config's relative `data_dir` must still find the same store), then pointed at an
/// empty store. Neither may tear down or close a running lease.
#[test]
fn a_restart_elsewhere_or_on_an_empty_store_keeps_the_running_lease() {
    let mut scenario = Scenario::with_provider(PRICE_A);
    let (document, lease) = deploy_ok(&scenario, &hello(), QUICK_DEPLOY);
    let uri = first_uri(&document);
    wait_for_200(&uri);
    let containers = lease_containers(lease);
    assert_eq!(containers.len(), 1, "{containers:?}");

    // Another working directory, and nothing kept on the operator's behalf.
    let elsewhere = scenario.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap_or_else(|error| panic!("{error}"));
    let strict = DaemonStart {
        keep_unknown_workloads: false,
        manifest_timeout_secs: 3,
        working_dir: Some(elsewhere.clone()),
    };
    scenario.restart_provider(0, &strict);
    assert!(
        !elsewhere.join("data").exists(),
        "the relative data_dir resolved against the working directory"
    );
    let status = |scenario: &Scenario| {
        let run = scenario.tenant(
            TENANT,
            &["status", &lease.to_string(), "--output", "json"],
            MINUTE,
        );
        assert_eq!(
            run.code,
            Some(0),
            "{}\n{}",
            run.stderr,
            scenario.provider_logs()
        );
        run.json()
    };
    assert_eq!(status(&scenario)["workload"]["state"], "running");

    // The store is gone: an empty data dir. The gateway's certificate lived there too, so
    // the daemon serves a new one and says that the chain pins the old one; tenants refuse
    // the gateway until the operator publishes it with `provider update`.
    scenario.providers[0].set_data_dir("data-lost");
    scenario.restart_provider(0, &strict);
    assert!(
        scenario
            .provider_logs()
            .contains("is not the one registered on chain"),
        "{}",
        scenario.provider_logs()
    );
    scenario
        .provider_cli(0, &["update", "--output", "json"])
        .expect_code(0, "provider update with the new certificate");
    // Past the manifest deadline the restarted daemon would set, and a reconcile pass.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        lease_containers(lease),
        containers,
        "the workload was neither removed nor re-created:\n{}",
        scenario.provider_logs()
    );
    assert!(
        scenario.lease_on_chain(lease).active,
        "the lease was closed"
    );
    let response = wait_for_200(&uri);
    assert!(response.body.contains("hello from leasehold"));
    assert_eq!(status(&scenario)["workload"]["state"], "running");
    assert!(
        scenario.providers[0]
            .home
            .join("data-lost/provider.db")
            .exists(),
        "the new store is next to the config"
    );
}

/// Issue #14, item 4: the manifest goes over the TLS gateway pinned on chain; the
/// certificate survives a restart; a rotated one is refused by the tenant, naming both
/// fingerprints, until `provider update` publishes it.
#[test]
fn a_rotated_gateway_certificate_is_refused_until_provider_update_publishes_it() {
    let mut scenario = Scenario::with_provider(PRICE_A);
    let (document, lease) = deploy_ok(&scenario, &hello(), QUICK_DEPLOY);
    wait_for_200(&first_uri(&document));
    let registered = scenario
        .provider_on_chain(PROVIDER_A)
        .gateway_cert_sha256
        .to_string();
    let serving = |scenario: &Scenario, args: &[&str]| {
        let run = scenario.provider_cli(0, args);
        run.expect_code(0, "provider gateway-cert");
        run.json()["sha256"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(
        serving(&scenario, &["gateway-cert", "--output", "json"]),
        registered
    );
    let status = |scenario: &Scenario| {
        // A new second: the gateway refuses a signature it has seen.
        std::thread::sleep(Duration::from_millis(1100));
        scenario.tenant(
            TENANT,
            &["status", &lease.to_string(), "--output", "json"],
            MINUTE,
        )
    };

    scenario.restart_provider(0, &DaemonStart::default());
    assert_eq!(
        serving(&scenario, &["gateway-cert", "--output", "json"]),
        registered,
        "a restart keeps the certificate"
    );
    let kept = status(&scenario);
    kept.expect_code(0, "status after a restart");
    assert_eq!(kept.json()["workload"]["state"], "running");

    let rotated = serving(&scenario, &["gateway-cert", "--rotate", "--output", "json"]);
    assert_ne!(rotated, registered);
    scenario.restart_provider(0, &DaemonStart::default());
    let refused = status(&scenario);
    assert_ne!(refused.code, Some(0), "a rotated, unpublished certificate");
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(
        said.contains(&registered) && said.contains(&rotated),
        "the refusal names both fingerprints: {said}"
    );

    scenario
        .provider_cli(0, &["update", "--output", "json"])
        .expect_code(0, "provider update");
    assert_eq!(
        scenario
            .provider_on_chain(PROVIDER_A)
            .gateway_cert_sha256
            .to_string(),
        rotated
    );
    let accepted = status(&scenario);
    accepted.expect_code(0, "status after provider update");
    assert_eq!(accepted.json()["workload"]["state"], "running");
}

/// A one-replica GPU SDL whose `gpu` block is `attributes` (indented under `gpu:`).
fn gpu_sdl(units: u32, attributes: &str) -> String {
    format!(
        r#"
version: "2.0"
services:
  infer:
    image: leasehold/busybox:test
    command: ["sleep", "3600"]
profiles:
  compute:
    gpu:
      resources:
        cpu:
          units: 100m
        memory:
          size: 64Mi
        storage:
          size: 128Mi
        gpu:
          units: {units}
          attributes:
{attributes}
  placement:
    anywhere:
      pricing:
        gpu:
          denom: usdc
          amount: 10000000
deployment:
  infer:
    anywhere:
      profile: gpu
      count: 1
"#
    )
}

/// Issue #18: real GPU SDLs name models partly (`model: h100`, `ram: 80Gi`, `vendor: nvidia`
/// alone); their orders carry patterns and providers prove on chain that their concrete model
/// matches one. Three daemons declare GPUs in their config (no GPU hardware here); orders are
/// posted on chain straight from the SDLs' encoding and the bids each gets are compared.
#[test]
fn gpu_patterns_get_bids_from_exactly_the_matching_providers() {
    let mut scenario = Scenario::start(1);
    let h100 = "nvidia/h100/80Gi/sxm";
    let a100_40 = "nvidia/a100/40Gi/pcie";
    let mut h100s = ProviderSpec::new(PROVIDER_A, PRICE_A);
    h100s.gpus = vec![(h100.to_owned(), 4)];
    scenario.add_provider(h100s);
    let mut a100s = ProviderSpec::new(PROVIDER_B, PRICE_A);
    a100s.gpus = vec![(A100.to_owned(), 4)];
    scenario.add_provider(a100s);
    // One H100 (its cheaper GPU) and three 40Gi A100s.
    let mixed_account = 5;
    let mut mixed = ProviderSpec::new(mixed_account, PRICE_A);
    mixed.gpus = vec![(h100.to_owned(), 1), (a100_40.to_owned(), 3)];
    mixed.gpu_prices = format!("h100={TOKEN},*={}", 2 * TOKEN);
    scenario.add_provider(mixed);

    let devnet = scenario.devnet();
    let tenant = devnet
        .client(OTHER_TENANT)
        .unwrap_or_else(|error| panic!("{error}"));
    let post = |units: u32, attributes: &str| {
        let sdl = leasehold_manifests::parse(&gpu_sdl(units, attributes))
            .unwrap_or_else(|error| panic!("SDL: {error}"));
        let spec = leasehold_contracts::order_spec_for_group(&sdl.groups()[0])
            .unwrap_or_else(|error| panic!("{error}"));
        let order = leasehold_contracts::NewOrder {
            token: devnet.deployment.token,
            spec,
            manifest_hash: alloy::primitives::B256::from(sdl.manifest().hash()),
            max_price_per_hour: alloy::primitives::U256::from(10 * TOKEN),
            deposit: alloy::primitives::U256::from(10 * TOKEN),
            bid_window_secs: 600,
            delivery_window_secs: leasehold_contracts::DEFAULT_DELIVERY_WINDOW_SECS,
        };
        scenario
            .runtime
            .block_on(tenant.create_order(&order))
            .unwrap_or_else(|error| panic!("createOrder: {error}"))
            .order_id
    };
    let addresses = |accounts: &[usize]| {
        let mut list: Vec<String> = accounts.iter().map(|a| scenario.address(*a)).collect();
        list.sort();
        list
    };
    let bidders = |order: u64| {
        let bids = scenario
            .runtime
            .block_on(tenant.bids(order))
            .unwrap_or_else(|error| panic!("bids: {error}"));
        let mut list: Vec<(String, alloy::primitives::B256)> = bids
            .iter()
            .map(|bid| (bid.provider.to_string().to_lowercase(), bid.gpu_model))
            .collect();
        list.sort();
        list
    };
    // Bids reserve GPUs, so orders are posted one at a time, each once its bids are in.
    let any_nvidia = "            vendor:\n              nvidia:\n";
    let orders = [
        // First, while the mixed provider has 1 free H100 and 3 free A100s.
        (2, any_nvidia.to_owned(), vec![PROVIDER_A, PROVIDER_B, mixed_account]),
        (
            1,
            "            vendor:\n              nvidia:\n                - model: H100\n".to_owned(),
            vec![PROVIDER_A, mixed_account],
        ),
        (1, any_nvidia.to_owned(), vec![PROVIDER_A, PROVIDER_B, mixed_account]),
        (
            1,
            "            vendor:\n              nvidia:\n                - model: a100\n                  ram: 80Gi\n".to_owned(),
            vec![PROVIDER_B],
        ),
    ];
    let mut posted = Vec::new();
    for (units, attributes, accounts) in &orders {
        let order = post(*units, attributes);
        let want = addresses(accounts);
        eventually(
            &format!("bids on order {order} from {want:?}"),
            MINUTE,
            || (bidders(order).len() >= want.len()).then_some(()),
        );
        // Late bids would come within a couple of blocks.
        std::thread::sleep(Duration::from_secs(4));
        let have: Vec<String> = bidders(order).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            have,
            want,
            "bidders on order {order} ({attributes})\n{}",
            scenario.provider_logs()
        );
        posted.push(order);
    }
    let two_gpus = posted[0];
    // The mixed provider bids the concrete model it can serve two of: its A100s.
    let mixed_address = scenario.address(mixed_account);
    let two = bidders(two_gpus);
    let (_, mixed_model) = two
        .iter()
        .find(|(provider, _)| *provider == mixed_address)
        .unwrap_or_else(|| panic!("no bid from the mixed provider: {two:?}"));
    assert_eq!(
        *mixed_model,
        leasehold_contracts::chain_key(a100_40),
        "two-GPU bid should name the A100"
    );
}

/// Issue #18: the GPU examples, modelled on what Akash users deploy (a partial model, a RAM
/// size, a vendor only, a consumer card), each find a provider that registered matching
/// GPUs and room for them.
#[test]
fn every_gpu_example_finds_a_provider() {
    let mut scenario = Scenario::start(1);
    let mut big = ProviderSpec::new(PROVIDER_A, PRICE_A);
    big.capacity = (256_000, 2 * 1024 * 1024, 16 * 1024 * 1024);
    // gpu-inference keeps its model on a persistent beta3 volume.
    big.attributes = [
        "region=eu-west",
        "region=local",
        "capabilities/storage/1/class=beta3",
        "capabilities/storage/1/persistent=true",
    ]
    .map(str::to_owned)
    .to_vec();
    big.gpus = vec![
        ("nvidia/h100/80Gi/sxm".to_owned(), 8),
        ("nvidia/a100/80Gi/sxm".to_owned(), 8),
        ("nvidia/rtx4090/24Gi/pcie".to_owned(), 8),
    ];
    scenario.add_provider(big);
    let examples = crate_examples();
    for example in ["gpu-inference", "vllm", "ollama", "stable-diffusion"] {
        let path = examples.join(format!("{example}.yaml"));
        let run = scenario.tenant(
            TENANT,
            &["preflight", &path.to_string_lossy(), "--output", "json"],
            MINUTE,
        );
        assert_eq!(run.code, Some(0), "{example}: {}", run.stderr);
        let report = run.json();
        let groups = report["groups"].as_array().expect("groups");
        assert!(!groups.is_empty(), "{example}: {report}");
        for group in groups {
            let eligible = group["eligible"].as_array().expect("eligible");
            assert_eq!(
                eligible.len(),
                1,
                "{example}: group {} finds no provider: {group}",
                group["group"]
            );
        }
    }
}

fn crate_examples() -> PathBuf {
    hello()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("hello.yaml has a folder"))
}

/// A site on a persistent volume: `setup` runs before busybox's httpd serves /data/www.
fn site_sdl(setup: &str, memory: &str) -> String {
    format!(
        r#"version: "2.0"
services:
  web:
    image: leasehold/busybox:test
    command:
      - sh
      - -c
      - "mkdir -p /data/www && {setup} && exec httpd -f -p 80 -h /data/www"
    expose:
      - port: 80
        as: 80
        to:
          - global: true
    params:
      storage:
        data:
          mount: /data
profiles:
  compute:
    web:
      resources:
        cpu:
          units: 100m
        memory:
          size: {memory}
        storage:
          - size: 128Mi
          - name: data
            size: 64Mi
            attributes:
              persistent: true
  placement:
    anywhere:
      pricing:
        web:
          denom: usdc
          amount: 1000
deployment:
  web:
    anywhere:
      profile: web
      count: 1
"#
    )
}

/// Issue #13, item 4: `tenant update` runs a new manifest on the same lease: the URL serves
/// the new page, the revision goes from 1 to 2, a file written by the first revision on the
/// persistent volume survives; another account's update and a manifest bigger than the
/// lease are refused before any transaction.
#[test]
fn tenant_update_serves_the_new_page_at_the_same_url_and_keeps_the_volume() {
    let scenario = Scenario::with_provider(PRICE_A);
    let first = manifest(
        &scenario,
        "site-v1.yaml",
        &site_sdl(
            "echo survived > /data/www/kept.txt && echo 'revision one' > /data/www/index.html",
            "64Mi",
        ),
    );
    let (document, lease) = deploy_ok(&scenario, &first, QUICK_DEPLOY);
    let uri = first_uri(&document);
    assert!(wait_for_200(&uri).body.contains("revision one"));
    assert_eq!(scenario.lease_on_chain(lease).revision, 1);

    let second = manifest(
        &scenario,
        "site-v2.yaml",
        &site_sdl("echo 'revision two' > /data/www/index.html", "64Mi"),
    );
    let second_arg = second.to_string_lossy().into_owned();
    let lease_arg = lease.to_string();
    let stranger = scenario.tenant(OTHER_TENANT, &["update", &lease_arg, &second_arg], MINUTE);
    assert_eq!(
        stranger.code,
        Some(1),
        "another account's update: {stranger:?}"
    );
    assert!(
        stranger
            .stderr
            .contains(&format!("is not the tenant of lease {lease}")),
        "unclear refusal: {}",
        stranger.stderr
    );
    let bigger = manifest(&scenario, "site-big.yaml", &site_sdl("true", "1Gi"));
    let bigger_arg = bigger.to_string_lossy().into_owned();
    let misfit = scenario.tenant(TENANT, &["update", &lease_arg, &bigger_arg], MINUTE);
    assert_eq!(
        misfit.code,
        Some(1),
        "a manifest bigger than the lease: {misfit:?}"
    );
    assert!(
        misfit
            .stderr
            .contains("memory (MiB) 1024 exceeds the 64 the lease bought"),
        "the field is not named: {}",
        misfit.stderr
    );
    assert_eq!(
        scenario.lease_on_chain(lease).revision,
        1,
        "refused before any transaction"
    );

    let update = scenario.tenant(
        TENANT,
        &["update", &lease_arg, &second_arg, "--output", "json"],
        4 * MINUTE,
    );
    update.expect_code(0, "tenant update");
    let updated = update.json();
    assert_eq!(updated["lease_id"], lease);
    assert_eq!(updated["revision"], 2);
    assert!(
        updated["uris"].to_string().contains(&uri),
        "the URL moved: {updated}\n{}",
        scenario.provider_logs()
    );
    let page = eventually("the new page at the same URL", MINUTE, || {
        http_get(&uri).filter(|response| response.body.contains("revision two"))
    });
    assert_eq!(page.status, 200);
    let kept = http_get(&format!("{uri}/kept.txt")).expect("kept.txt answers");
    assert!(
        kept.status == 200 && kept.body.contains("survived"),
        "the persistent volume lost the first revision's file: {kept:?}"
    );
    assert_eq!(scenario.lease_on_chain(lease).revision, 2);

    std::thread::sleep(Duration::from_millis(1100));
    let status = scenario.tenant(TENANT, &["status", &lease_arg, "--output", "json"], MINUTE);
    status.expect_code(0, "tenant status");
    let status = status.json();
    assert_eq!(status["workload"]["revision"], 2, "{status}");
    assert_eq!(status["lease"]["revision"], 2, "{status}");
}

/// Issue #11: one lease seen by `tenant status` as `pending` (won, nothing running, nothing
/// paid) and then `confirmed` once the manifest arrives and every replica runs. The
/// manifest is sent later with `tenant update` and the order's own manifest, which
/// delivers a first manifest without a transaction.
#[test]
fn tenant_status_shows_one_lease_pending_then_confirmed() {
    let scenario = Scenario::with_provider(PRICE_A);
    let hello_path = hello();
    let mut extra = QUICK_DEPLOY.to_vec();
    extra.push("--no-manifest");
    let (_, lease) = deploy_ok(&scenario, &hello_path, &extra);
    let lease_arg = lease.to_string();
    let status = |scenario: &Scenario| {
        // The gateway refuses a repeated signature within one second (see the hello flow).
        std::thread::sleep(Duration::from_millis(1100));
        let run = scenario.tenant(TENANT, &["status", &lease_arg, "--output", "json"], MINUTE);
        run.expect_code(0, "tenant status");
        run.json()
    };

    let pending = status(&scenario);
    assert_eq!(pending["delivery"], "pending", "{pending}");
    assert!(!scenario.lease_on_chain(lease).confirmed);

    let hello_arg = hello_path.display().to_string();
    let delivered = scenario.tenant(TENANT, &["update", &lease_arg, &hello_arg], 4 * MINUTE);
    delivered.expect_code(0, "tenant update with the order's manifest");
    assert_eq!(
        scenario.lease_on_chain(lease).revision,
        1,
        "the order's own manifest needs no transaction"
    );
    eventually("the delivery confirmation on chain", MINUTE, || {
        scenario.lease_on_chain(lease).confirmed.then_some(())
    });
    let confirmed = status(&scenario);
    assert_eq!(confirmed["delivery"], "confirmed", "{confirmed}");
    assert_eq!(confirmed["lease"]["revision"], 1, "{confirmed}");
}
