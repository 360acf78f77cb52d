//! The ingress through the real daemon (issue #14): real chain, real Docker containers,
//! manifests through the signed gateway. Two leases with their own `accept` hostnames
//! answer on their own host over HTTP and HTTPS, a third lease asking for a taken
//! hostname is refused at `SendManifest` naming the field, and the routes come back after
//! a restart (rebuilt from the store).

use leasehold_provider::config::IngressConfig;

use super::*;
use crate::ingress::{get, get_https, wildcard_certificate};

const DOMAIN: &str = "ingress.test";

/// hello.yaml serving `text`, with `host` in its `accept` list.
fn hello_accepting(host: &str, text: &str) -> String {
    hello_saying(text).replace(
        "        as: 80\n",
        &format!("        as: 80\n        accept:\n          - {host}\n"),
    )
}

fn with_ingress(config: &mut Config, dir: &std::path::Path) -> std::path::PathBuf {
    let (cert, key) = wildcard_certificate(dir, DOMAIN);
    config.ingress = Some(IngressConfig {
        domain: DOMAIN.to_owned(),
        http_listen: format!("127.0.0.1:{}", free_port()),
        https_listen: Some(format!("127.0.0.1:{}", free_port())),
        tls_cert: Some(cert.clone()),
        tls_key: Some(key),
    });
    cert
}

/// Waits until the ingress answers `host` with 200 and returns the body.
async fn served(addr: SocketAddr, host: &str) -> String {
    eventually(&format!("the ingress to serve {host}"), || async {
        let (status, body) = get(addr, host).await;
        (status == 200).then_some(body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_answer_on_their_own_hostnames_a_taken_one_is_refused_and_routes_survive_a_restart()
{
    daemon_test(0..5, || async {
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = provider_config(&devnet, dir.path(), 0);
        let cert = with_ingress(&mut config, dir.path());
        register(&devnet, &config).await;
        let handle = start(&devnet, &config).await;
        let (http, https) = handle.ingress_addrs().expect("ingress served");
        let https = https.expect("HTTPS served");

        let mut leases = Vec::new();
        for name in ["alpha", "beta"] {
            let sdl = hello_accepting(&format!("{name}.example.com"), name);
            let (order, manifest) = sdl_order(&devnet, &sdl, 1_000 * TOKEN, 3_600);
            let lease_id = lease_for(&devnet, &order).await;
            deliver_and_run(&devnet, &handle, lease_id, manifest).await;
            leases.push(lease_id);
        }
        assert_eq!(served(http, "alpha.example.com").await, "alpha\n");
        assert_eq!(served(http, "Beta.Example.com:80").await, "beta\n");
        let (status, _) = get(http, "gamma.example.com").await;
        assert_eq!(status, 404);

        // The gateway's status names both hostnames; the generated one serves over TLS
        // with the provider's wildcard certificate.
        let gateway = format!("https://{}", handle.gateway_addr().expect("gateway"));
        let mut tenant = tenant_client(&devnet, &gateway).await;
        let status = tenant.status(leases[0]).await.expect("status");
        let hostnames = &status.services[0].hostnames;
        let generated = hostnames
            .iter()
            .find(|host| host.ends_with(&format!(".{DOMAIN}")))
            .unwrap_or_else(|| panic!("a generated hostname in {hostnames:?}"))
            .clone();
        assert!(
            hostnames.contains(&"alpha.example.com".to_owned()),
            "{hostnames:?}"
        );
        assert_eq!(
            get_https(https, &generated, &cert).await,
            (200, "alpha\n".into())
        );
        assert_eq!(get(http, &generated).await, (200, "alpha\n".into()));

        // A third lease asking for alpha's hostname is refused, naming the field and host.
        let sdl = hello_accepting("alpha.example.com", "thief");
        let (order, manifest) = sdl_order(&devnet, &sdl, 1_000 * TOKEN, 3_600);
        let thief = lease_for(&devnet, &order).await;
        manifest_window(&handle, thief).await;
        let refused = tenant
            .send_manifest(thief, manifest)
            .await
            .expect_err("a taken hostname is refused");
        let message = refused.to_string();
        assert!(
            message.contains("services.web.expose[port 80].accept")
                && message.contains("`alpha.example.com` is already routed to another lease"),
            "{message}"
        );
        assert_eq!(
            get(http, "alpha.example.com").await,
            (200, "alpha\n".into())
        );

        // A restart rebuilds the routes from the store: same hostnames, same answers.
        handle.shutdown().await;
        let handle = start(&devnet, &config).await;
        let (http, https) = handle.ingress_addrs().expect("ingress served");
        assert_eq!(served(http, "alpha.example.com").await, "alpha\n");
        assert_eq!(served(http, "beta.example.com").await, "beta\n");
        assert_eq!(
            get_https(https.expect("HTTPS"), &generated, &cert).await,
            (200, "alpha\n".into())
        );

        // A closed lease's hostnames stop answering.
        devnet
            .client(TENANT)
            .close_lease(leases[1], CloseReason::TenantRequest)
            .await
            .expect("closeLease");
        eventually("beta's route to go", || async {
            (get(http, "beta.example.com").await.0 == 404).then_some(())
        })
        .await;
        handle.shutdown().await;
    })
    .await;
}

/// One side of the benchmark: requests/s with `CONCURRENCY` clients for `BENCH_TIME`, and
/// the latency percentiles of those requests.
struct BenchSide {
    requests: usize,
    failures: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

const BENCH_TIME: Duration = Duration::from_secs(5);
const CONCURRENCY: usize = 8;

/// `GET /` with `host` to `addr`, one connection per request (busybox httpd closes each).
async fn bench_side(addr: SocketAddr, host: String) -> BenchSide {
    let started = std::time::Instant::now();
    let clients = (0..CONCURRENCY).map(|_| {
        let host = host.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0;
            while started.elapsed() < BENCH_TIME {
                let sent = std::time::Instant::now();
                match tokio::time::timeout(Duration::from_secs(5), get(addr, &host)).await {
                    Ok((200, _)) => latencies.push(sent.elapsed()),
                    _ => failures += 1,
                }
            }
            (latencies, failures)
        })
    });
    let mut latencies = Vec::new();
    let mut failures = 0;
    for client in clients {
        let (mine, failed) = client.await.expect("bench client");
        latencies.extend(mine);
        failures += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let percentile = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    BenchSide {
        requests: latencies.len(),
        failures,
        per_second: latencies.len() as f64 / elapsed,
        p50: percentile(50),
        p99: percentile(99),
    }
}

/// BENCHMARKS.md, "Ingress": the same container straight on its published port and
/// through the ingress, one run side by side. Ignored by default (it takes ~15 s and
/// wants a quiet machine); run it with
/// `flock /tmp/leasehold-docker.lock cargo test -p leasehold-provider --test it ingress_bench -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark; run with --ignored --nocapture"]
async fn ingress_bench_requests_per_second_and_added_latency() {
    daemon_test(0..3, || async {
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = provider_config(&devnet, dir.path(), 0);
        with_ingress(&mut config, dir.path());
        register(&devnet, &config).await;
        let handle = start(&devnet, &config).await;
        let (http, _) = handle.ingress_addrs().expect("ingress served");
        let sdl = hello_accepting("bench.example.com", "bench");
        let (order, manifest) = sdl_order(&devnet, &sdl, 1_000 * TOKEN, 3_600);
        let lease_id = lease_for(&devnet, &order).await;
        let uri = deliver_and_run(&devnet, &handle, lease_id, manifest).await;
        let direct: SocketAddr = uri
            .trim_start_matches("http://")
            .parse()
            .expect("published host:port");
        served(http, "bench.example.com").await;
        let straight = bench_side(direct, direct.to_string()).await;
        let proxied = bench_side(http, "bench.example.com".to_owned()).await;
        let row = |name: &str, side: &BenchSide| {
            println!(
                "| {name} | {} | {} | {:.0} | {:.2} | {:.2} |",
                side.requests,
                side.failures,
                side.per_second,
                side.p50.as_secs_f64() * 1000.0,
                side.p99.as_secs_f64() * 1000.0
            );
        };
        println!(
            "\n{CONCURRENCY} clients, {} s per side, GET / of busybox httpd (leasehold/busybox:test), one connection per request\n",
            BENCH_TIME.as_secs()
        );
        println!("| path | requests | failures | requests/s | p50 ms | p99 ms |");
        println!("|---|---|---|---|---|---|");
        row("straight to the container's published port", &straight);
        row("through the ingress (Host: bench.example.com)", &proxied);
        println!(
            "\nadded latency: p50 {:+.2} ms, p99 {:+.2} ms; throughput {:.0}% of direct",
            (proxied.p50.as_secs_f64() - straight.p50.as_secs_f64()) * 1000.0,
            (proxied.p99.as_secs_f64() - straight.p99.as_secs_f64()) * 1000.0,
            proxied.per_second / straight.per_second * 100.0
        );
        assert_eq!(proxied.failures, 0, "the ingress failed requests");
        handle.shutdown().await;
    })
    .await;
}
