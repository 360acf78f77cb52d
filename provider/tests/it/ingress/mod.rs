//! The ingress proxy with real listeners and real upstream servers on 127.0.0.1: routing by
//! `Host`, each `http_options` field, forwarding headers and TLS. (The daemon wiring and
//! Docker upstreams are in `daemon::ingress`.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use leasehold_provider::ingress::{
    self, IngressHandle, IngressListeners, ProxyOptions, RouteClaim, RouteTable,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LOOPBACK: &str = "127.0.0.1:0";
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A tiny HTTP/1.1 upstream: reads one request per connection and answers with what
/// `answer` returns for the n-th request (counted from 0), after its delay.
pub(crate) struct Upstream {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    /// The raw head of the last request.
    pub last_head: Arc<std::sync::Mutex<String>>,
}

pub(crate) struct Answer {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

impl Upstream {
    pub async fn start(answer: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind(LOOPBACK).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let last_head = Arc::new(std::sync::Mutex::new(String::new()));
        let answer = Arc::new(answer);
        let (counter, heads) = (requests.clone(), last_head.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (answer, counter, heads) = (answer.clone(), counter.clone(), heads.clone());
                tokio::spawn(async move {
                    let Some(head) = read_request(&mut stream).await else {
                        return;
                    };
                    let index = counter.fetch_add(1, Ordering::SeqCst);
                    *heads.lock().unwrap() = head;
                    let Answer {
                        status,
                        body,
                        delay,
                    } = answer(index);
                    tokio::time::sleep(delay).await;
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        Upstream {
            addr,
            requests,
            last_head,
        }
    }

    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Reads a request head and its `content-length` body; returns the head.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buffer.len() < end + 4 + length {
                let read = stream.read(&mut chunk).await.ok()?;
                if read == 0 {
                    return None;
                }
                buffer.extend_from_slice(&chunk[..read]);
            }
            return Some(head);
        }
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

pub(crate) fn ok(body: &str) -> Answer {
    Answer {
        status: 200,
        body: body.to_owned(),
        delay: Duration::ZERO,
    }
}

fn claim(host: &str, options: ProxyOptions) -> RouteClaim {
    RouteClaim {
        host: host.to_owned(),
        service: "web".to_owned(),
        field: "services.web.expose[0].accept".to_owned(),
        options,
    }
}

fn route(
    table: &RouteTable,
    lease_id: u64,
    host: &str,
    options: ProxyOptions,
    upstream: SocketAddr,
) {
    table
        .replace_lease(
            lease_id,
            &[claim(host, options)],
            &BTreeMap::from([("web".to_owned(), vec![upstream.to_string()])]),
        )
        .unwrap();
}

async fn plain_ingress(table: Arc<RouteTable>) -> IngressHandle {
    ingress::start(
        IngressListeners {
            http: LOOPBACK.parse().unwrap(),
            https: None,
        },
        table,
    )
    .await
    .unwrap()
}

/// A raw HTTP/1.1 exchange (the proxy must not depend on a client's niceties): returns
/// the status code and the body.
pub(crate) async fn raw_request(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_response(&mut stream).await
}

async fn read_response<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> (u16, String) {
    let mut response = Vec::new();
    // The ingress closes after answering a request with `connection: close`.
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub(crate) async fn get(addr: SocketAddr, host: &str) -> (u16, String) {
    raw_request(
        addr,
        format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

async fn post(addr: SocketAddr, host: &str, body: &[u8]) -> (u16, String) {
    let mut request = format!(
        "POST /upload HTTP/1.1\r\nhost: {host}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    raw_request(addr, &request).await
}

async fn bounded<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, future)
        .await
        .expect("test took too long")
}

#[tokio::test]
async fn requests_go_to_the_service_their_host_names_and_unknown_hosts_get_404() {
    bounded(async {
        let table = Arc::new(RouteTable::new());
        let one = Upstream::start(|_| ok("one")).await;
        let two = Upstream::start(|_| ok("two")).await;
        route(
            &table,
            1,
            "one.example.com",
            ProxyOptions::default(),
            one.addr,
        );
        route(
            &table,
            2,
            "two.example.com",
            ProxyOptions::default(),
            two.addr,
        );
        let ingress = plain_ingress(table).await;
        assert_eq!(
            get(ingress.http_addr, "one.example.com").await,
            (200, "one".into())
        );
        // Port, case and a trailing dot do not change the host.
        assert_eq!(
            get(ingress.http_addr, "TWO.Example.com.:80").await,
            (200, "two".into())
        );
        let (status, body) = get(ingress.http_addr, "three.example.com").await;
        assert_eq!(status, 404);
        assert!(body.contains("three.example.com"), "{body}");
        assert_eq!((one.count(), two.count()), (1, 1));
        ingress.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn the_upstream_gets_the_host_and_forwarding_headers() {
    bounded(async {
        let table = Arc::new(RouteTable::new());
        let upstream = Upstream::start(|_| ok("hi")).await;
        route(&table, 1, "app.example.com", ProxyOptions::default(), upstream.addr);
        let ingress = plain_ingress(table).await;
        let (status, _) = raw_request(
            ingress.http_addr,
            b"GET /path?q=1 HTTP/1.1\r\nHost: App.example.com\r\nX-Forwarded-For: 203.0.113.9\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 200);
        let head = upstream.last_head.lock().unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /path?q=1 http/1.1"), "{head}");
        assert!(head.contains("host: app.example.com"), "{head}");
        assert!(head.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1"), "{head}");
        assert!(head.contains("x-forwarded-proto: http"), "{head}");
        ingress.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_body_over_max_body_size_gets_413_declared_or_streamed() {
    bounded(async {
        let table = Arc::new(RouteTable::new());
        let upstream = Upstream::start(|_| ok("stored")).await;
        let options = ProxyOptions {
            max_body_size: 16,
            ..ProxyOptions::default()
        };
        route(&table, 1, "app.example.com", options, upstream.addr);
        let ingress = plain_ingress(table).await;
        assert_eq!(post(ingress.http_addr, "app.example.com", &[b'x'; 16]).await.0, 200);
        assert_eq!(post(ingress.http_addr, "app.example.com", &[b'x'; 17]).await.0, 413);
        // Chunked: no length up front, the proxy counts what arrives.
        let chunked = b"POST / HTTP/1.1\r\nhost: app.example.com\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\na\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n";
        assert_eq!(raw_request(ingress.http_addr, chunked).await.0, 413);
        assert_eq!(upstream.count(), 1, "oversized bodies never reach the service");
        ingress.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn an_upstream_slower_than_read_timeout_gets_504() {
    bounded(async {
        let table = Arc::new(RouteTable::new());
        let slow = Upstream::start(|_| Answer {
            status: 200,
            body: "late".into(),
            delay: Duration::from_secs(3),
        })
        .await;
        let options = ProxyOptions {
            read_timeout: Duration::from_millis(300),
            next_tries: 1,
            ..ProxyOptions::default()
        };
        route(&table, 1, "slow.example.com", options, slow.addr);
        let ingress = plain_ingress(table).await;
        let started = Instant::now();
        assert_eq!(get(ingress.http_addr, "slow.example.com").await.0, 504);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        ingress.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn next_cases_502_tries_again_and_the_second_answer_is_served() {
    bounded(async {
        let table = Arc::new(RouteTable::new());
        let flaky = Upstream::start(|index| match index {
            0 => Answer {
                status: 502,
                body: "bad".into(),
                delay: Duration::ZERO,
            },
            _ => ok("good"),
        })
        .await;
        let mut options = ProxyOptions::default();
        options.next_cases.statuses = vec![502];
        route(&table, 1, "flaky.example.com", options.clone(), flaky.addr);
        let ingress = plain_ingress(table.clone()).await;
        assert_eq!(
            get(ingress.http_addr, "flaky.example.com").await,
            (200, "good".into())
        );
        assert_eq!(flaky.count(), 2);

        // Without 502 among the cases the first answer is the answer.
        let once = Upstream::start(|_| Answer {
            status: 502,
            body: "bad".into(),
            delay: Duration::ZERO,
        })
        .await;
        options.next_cases.statuses.clear();
        route(&table, 2, "once.example.com", options, once.addr);
        assert_eq!(get(ingress.http_addr, "once.example.com").await.0, 502);
        assert_eq!(once.count(), 1);
        ingress.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn next_tries_bounds_the_attempts_and_an_unreachable_service_gets_502() {
    bounded(async {
        let table = Arc::new(RouteTable::new());
        let always = Upstream::start(|_| Answer {
            status: 503,
            body: "busy".into(),
            delay: Duration::ZERO,
        })
        .await;
        let mut options = ProxyOptions {
            next_tries: 4,
            ..ProxyOptions::default()
        };
        options.next_cases.statuses = vec![503];
        route(&table, 1, "busy.example.com", options, always.addr);
        // A port nothing listens on: bind, note it, close.
        let closed = TcpListener::bind(LOOPBACK)
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        route(
            &table,
            2,
            "gone.example.com",
            ProxyOptions::default(),
            closed,
        );
        // `next_tries: 0` (nginx's "unlimited") and no `next_timeout`: still bounded.
        let mut unlimited = ProxyOptions {
            next_tries: 0,
            next_timeout: None,
            ..ProxyOptions::default()
        };
        unlimited.next_cases.statuses = vec![503];
        let endless = Upstream::start(|_| Answer {
            status: 503,
            body: "busy".into(),
            delay: Duration::ZERO,
        })
        .await;
        route(&table, 3, "endless.example.com", unlimited, endless.addr);
        let ingress = plain_ingress(table).await;
        assert_eq!(get(ingress.http_addr, "busy.example.com").await.0, 503);
        assert_eq!(always.count(), 4);
        assert_eq!(get(ingress.http_addr, "gone.example.com").await.0, 502);
        assert_eq!(get(ingress.http_addr, "endless.example.com").await.0, 503);
        assert_eq!(
            endless.count(),
            usize::try_from(leasehold_provider::ingress::MAX_ATTEMPTS).unwrap()
        );
        ingress.shutdown().await;
    })
    .await;
}

/// A self-signed wildcard certificate for `*.<domain>` made with the `openssl` CLI.
pub(crate) fn wildcard_certificate(
    dir: &Path,
    domain: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("ingress.crt"), dir.join("ingress.key"));
    let output = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
        ])
        .arg(format!("/CN=*.{domain}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:*.{domain},DNS:{domain}"))
        .args([
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (cert, key)
}

/// GET over TLS, trusting exactly `cert` and checking the name `host`.
pub(crate) async fn get_https(addr: SocketAddr, host: &str, cert: &Path) -> (u16, String) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from(host.to_owned()).unwrap(), tcp)
        .await
        .expect("TLS handshake with the ingress certificate");
    tls.write_all(
        format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    read_response(&mut tls).await
}

#[tokio::test]
async fn https_with_the_configured_wildcard_certificate_and_plain_http_both_serve() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = wildcard_certificate(dir.path(), "ingress.test");
        let table = Arc::new(RouteTable::new());
        let upstream = Upstream::start(|_| ok("secure")).await;
        route(
            &table,
            1,
            "app.ingress.test",
            ProxyOptions::default(),
            upstream.addr,
        );
        let ingress = ingress::start(
            IngressListeners {
                http: LOOPBACK.parse().unwrap(),
                https: Some((
                    LOOPBACK.parse().unwrap(),
                    ingress::load_tls(&cert, &key).unwrap(),
                )),
            },
            table,
        )
        .await
        .unwrap();
        let https = ingress.https_addr.unwrap();
        assert_eq!(
            get_https(https, "app.ingress.test", &cert).await,
            (200, "secure".into())
        );
        let head = upstream.last_head.lock().unwrap().to_ascii_lowercase();
        assert!(head.contains("x-forwarded-proto: https"), "{head}");
        assert_eq!(
            get(ingress.http_addr, "app.ingress.test").await,
            (200, "secure".into())
        );
        ingress.shutdown().await;
    })
    .await;
}

#[test]
fn a_key_that_is_not_pem_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = wildcard_certificate(dir.path(), "ingress.test");
    let bogus = dir.path().join("bogus.key");
    std::fs::write(&bogus, "not a key").unwrap();
    let error = ingress::load_tls(&cert, &bogus).expect_err("refused");
    assert!(error.to_string().starts_with("ingress.tls_key:"), "{error}");
}

/// Issue #14, item 1 on Kubernetes: the same proxy in front of NodePorts. The route table
/// is built the daemon's way (`lease_claims` for the hostnames, `http_upstreams` over the
/// runtime's status for the upstreams) from a lease the Kubernetes runtime deployed on the
/// fake API server, whose NodePort allocator hands out the port of a real HTTP server on
/// 127.0.0.1 (standing in for kube-proxy on a node): the generated hostname and the
/// `accept` one reach it, an unknown host gets the proxy's 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_node_ports_are_routed_by_host_from_the_runtime_status() {
    use leasehold_provider::daemon::routing::http_upstreams;
    use leasehold_provider::deployment::lease_deployment;
    use leasehold_provider::ingress::{generated_hostname, lease_claims};
    use leasehold_provider::runtime::Runtime;
    use leasehold_provider::runtime::kubernetes::{KubernetesRuntime, KubernetesRuntimeConfig};

    use crate::runtime_kubernetes::fake_api_server::FakeApiServer;

    const DOMAIN: &str = "ingress.test";
    const LEASE: u64 = 41;
    bounded(async {
        let node = Upstream::start(|_| ok("from the node port")).await;
        let cluster = FakeApiServer::start().await;
        cluster.set_next_node_port(node.addr.port());
        let mut config = KubernetesRuntimeConfig::new("0x00000000000000000000000000000000000000e5");
        config.public_host = Some("127.0.0.1".to_owned());
        let scope = config.scope();
        let client = kube::Client::try_from(kube::Config::new(cluster.url.parse().unwrap()))
            .expect("client");
        let runtime = KubernetesRuntime::new(client, config).expect("runtime");

        let sdl = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples/hello.yaml"),
        )
        .unwrap()
        .replace(
            "        as: 80\n",
            "        as: 80\n        accept:\n          - shop.example.com\n",
        );
        let manifest = leasehold_manifests::parse(&sdl)
            .expect("SDL parses")
            .manifest();
        let group = manifest.groups.first().expect("a group");
        let deployment = lease_deployment(
            LEASE,
            "0x00000000000000000000000000000000000000c2",
            &manifest,
            &group.name,
            &[],
            &[],
        )
        .expect("converts");
        runtime.deploy(&deployment).await.expect("deploy");
        let status = loop {
            let status = runtime.status(LEASE).await.expect("status");
            if status.is_ready() {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let upstreams = http_upstreams(&status);
        assert_eq!(
            upstreams.get("web"),
            Some(&vec![format!("127.0.0.1:{}", node.addr.port())]),
            "the NodePort, as the runtime reports it"
        );

        let table = Arc::new(RouteTable::new());
        let claims = lease_claims(&scope, DOMAIN, LEASE, group).expect("claims");
        table
            .replace_lease(LEASE, &claims, &upstreams)
            .expect("routed");
        let ingress = plain_ingress(table).await;
        let generated = generated_hostname(&scope, LEASE, "web", DOMAIN);
        for host in [generated.as_str(), "shop.example.com"] {
            assert_eq!(
                get(ingress.http_addr, host).await,
                (200, "from the node port".into()),
                "{host}"
            );
        }
        let (status, _) = get(ingress.http_addr, "elsewhere.example.com").await;
        assert_eq!(status, 404);
        assert_eq!(node.count(), 2);
        ingress.shutdown().await;
        runtime.teardown(LEASE).await.expect("teardown");
    })
    .await;
}
