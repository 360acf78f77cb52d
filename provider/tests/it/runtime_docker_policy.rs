//! What the Docker runtime enforces around the workloads, on the real engine and the
//! real kernel firewall (root): the egress policy, scopes that keep two daemons' lease
//! 1 apart, lease networks sized for their replicas, published ports on the configured
//! address. Each test makes its own scope (a chain id unique to the process), so
//! nothing it creates can meet another daemon's leases; guards remove what it made.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use leasehold_provider::runtime::docker::{DockerRuntime, DockerRuntimeConfig, EgressSettings};
use leasehold_provider::runtime::{
    LeaseDeployment, LeaseRuntimeStatus, PortExposure, Protocol, Runtime, RuntimeError,
    RuntimeScope, ServiceDeployment, ServiceResources,
};

use crate::runtime_docker::{exec, unique_lease_id, wait_for_status};

const IMAGE: &str = "leasehold/busybox:test";
const TENANT: &str = "0x00000000000000000000000000000000000000c3";
const PROVIDER: &str = "0x00000000000000000000000000000000000000e9";
const TEST_TIMEOUT: Duration = Duration::from_secs(240);
/// A hundred containers on a loaded two-core machine.
const LARGE_TEST_TIMEOUT: Duration = Duration::from_secs(480);
const MIB: u64 = 1024 * 1024;

/// A scope no daemon and no other test uses: chain ids from 7e9 up, by process and use.
fn unique_scope(salt: u64) -> RuntimeScope {
    let chain_id = 7_000_000_000 + u64::from(std::process::id()) * 100 + salt;
    RuntimeScope::new(chain_id, PROVIDER)
}

fn config(scope: RuntimeScope, egress: EgressSettings) -> DockerRuntimeConfig {
    DockerRuntimeConfig {
        pull_timeout: Duration::from_secs(60),
        scope,
        egress,
        ..DockerRuntimeConfig::default()
    }
}

/// A runtime and the leases it must remove whatever happens (drop runs the teardown on
/// a runtime of its own, as `LeaseGuard` does).
struct Leases {
    config: DockerRuntimeConfig,
    ids: Vec<u64>,
}

impl Drop for Leases {
    fn drop(&mut self) {
        let config = self.config.clone();
        let ids = self.ids.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(executor) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            executor.block_on(async {
                let Ok(runtime) = DockerRuntime::connect(config).await else {
                    return;
                };
                for id in ids {
                    if let Err(err) = runtime.teardown(id).await {
                        eprintln!("cleanup of lease {id} failed: {err}");
                    }
                }
                // The scope is the test's own: leave no rules behind.
                if let Err(err) = runtime.remove_egress_rules().await {
                    eprintln!("removing the test scope's rules failed: {err}");
                }
            });
        });
        let _ = cleanup.join();
    }
}

fn sleeper(name: &str, replicas: u32) -> ServiceDeployment {
    let resources = ServiceResources {
        cpu_millis: 10,
        memory_bytes: 8 * MIB,
        storage_bytes: 0,
    };
    ServiceDeployment {
        command: vec!["sleep".into(), "600".into()],
        replicas,
        ..ServiceDeployment::new(name, IMAGE, resources)
    }
}

fn web(name: &str) -> ServiceDeployment {
    let resources = ServiceResources {
        cpu_millis: 100,
        memory_bytes: 32 * MIB,
        storage_bytes: 0,
    };
    ServiceDeployment {
        command: vec![
            "sh".into(),
            "-c".into(),
            "mkdir -p /tmp/www && echo lease-web > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www"
                .into(),
        ],
        ..ServiceDeployment::new(name, IMAGE, resources)
    }
}

fn lease(lease_id: u64, services: Vec<ServiceDeployment>) -> LeaseDeployment {
    LeaseDeployment {
        lease_id,
        tenant: TENANT.to_owned(),
        services,
    }
}

/// `GET /` from inside a container with busybox nc (its wget crashes in this image);
/// `Some(body)` when something answered.
async fn fetch_from(docker: &Docker, container: &str, host: &str, port: u16) -> Option<String> {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port}");
    let (code, output) = exec(docker, container, &["sh", "-c", &script]).await;
    (code == 0 && output.contains("HTTP/1.")).then_some(output)
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("running {program} {args:?}: {err}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The host's own IPv4 addresses on real interfaces (not loopback, not lease bridges).
fn host_addresses() -> Vec<String> {
    run("ip", &["-4", "-o", "addr", "show"])
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let interface = fields.nth(1)?;
            let address = fields.nth(1)?.split('/').next()?.to_owned();
            (interface != "lo"
                && !interface.starts_with("lh")
                && !interface.starts_with("br-")
                && interface != "docker0")
                .then_some(address)
        })
        .collect()
}

/// A network namespace with a veth to the host and an HTTP server on a private
/// address inside: a stand-in for a host of the provider's private network.
struct PrivateHost {
    namespace: String,
    server: Option<Child>,
    address: &'static str,
}

impl PrivateHost {
    const PORT: u16 = 8080;

    fn start() -> Self {
        let pid = std::process::id();
        let namespace = format!("lhtest-{pid}");
        // Not "lh...": that prefix is what the rules treat as another lease's bridge.
        let (outside, inside) = (format!("ptv{pid}h"), format!("ptv{pid}n"));
        let mut host = PrivateHost {
            namespace: namespace.clone(),
            server: None,
            address: "192.168.231.2",
        };
        let _ = Command::new("ip")
            .args(["netns", "del", &namespace])
            .output();
        let _ = Command::new("ip").args(["link", "del", &outside]).output();
        run("ip", &["netns", "add", &namespace]);
        run(
            "ip",
            &[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ],
        );
        run("ip", &["link", "set", &inside, "netns", &namespace]);
        run("ip", &["addr", "add", "192.168.231.1/30", "dev", &outside]);
        run("ip", &["link", "set", &outside, "up"]);
        let in_ns = |args: &[&str]| {
            let mut full = vec!["netns", "exec", namespace.as_str(), "ip"];
            full.extend_from_slice(args);
            run("ip", &full);
        };
        in_ns(&["addr", "add", "192.168.231.2/30", "dev", &inside]);
        in_ns(&["link", "set", &inside, "up"]);
        in_ns(&["link", "set", "lo", "up"]);
        in_ns(&["route", "add", "default", "via", "192.168.231.1"]);
        let root = std::env::temp_dir().join(format!("lhtest-www-{pid}"));
        std::fs::create_dir_all(&root).expect("web root");
        std::fs::write(root.join("index.html"), "private-host\n").expect("index");
        let server = Command::new("ip")
            .args(["netns", "exec", &namespace, "busybox", "httpd", "-f", "-p"])
            .arg(Self::PORT.to_string())
            .arg("-h")
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("httpd in the namespace (busybox on the host)");
        host.server = Some(server);
        host
    }
}

impl Drop for PrivateHost {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .output();
    }
}

/// A service of the provider's host listening on every address, as the attack found.
async fn host_listener() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind the host service");
    let port = listener.local_addr().expect("address").port();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = stream
                    .write_all(b"HTTP/1.0 200 OK\r\n\r\nhost-secret\n")
                    .await;
            });
        }
    });
    (port, task)
}

async fn gateway_of(docker: &Docker, network: &str) -> String {
    docker
        .inspect_network(
            network,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .expect("inspect network")
        .ipam
        .and_then(|ipam| ipam.config)
        .and_then(|configs| configs.first().and_then(|config| config.gateway.clone()))
        .expect("lease network has a gateway")
}

fn iptables(args: &[&str]) -> String {
    run("iptables", &[&["-w"], args].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_reaches_its_own_lease_but_not_the_host_or_private_networks() {
    let restricted = config(unique_scope(1), EgressSettings::restricted_private_ranges());
    let open = config(unique_scope(2), EgressSettings::Unrestricted);
    let guarded = Leases {
        config: restricted.clone(),
        ids: vec![unique_lease_id()],
    };
    let control = Leases {
        config: open.clone(),
        ids: vec![unique_lease_id()],
    };
    let private_host = PrivateHost::start();
    let (port, listener) = host_listener().await;
    let body = async {
        let runtime = Arc::new(
            DockerRuntime::connect(restricted.clone())
                .await
                .expect("restricted runtime"),
        );
        let unrestricted = DockerRuntime::connect(open.clone())
            .await
            .expect("unrestricted runtime");
        let docker = runtime.client();
        let (lease_id, control_id) = (guarded.ids[0], control.ids[0]);
        let services = || vec![web("web"), sleeper("client", 1)];
        runtime
            .deploy(&lease(lease_id, services()))
            .await
            .expect("deploy");
        unrestricted
            .deploy(&lease(control_id, services()))
            .await
            .expect("deploy control");
        wait_for_status(&runtime, lease_id, "ready", LeaseRuntimeStatus::is_ready).await;
        wait_for_status(
            &unrestricted,
            control_id,
            "ready",
            LeaseRuntimeStatus::is_ready,
        )
        .await;

        let scope = runtime.scope().clone();
        let client = scope.replica_name(lease_id, "client", 0);
        let control_client = unrestricted.scope().replica_name(control_id, "client", 0);
        let gateway = gateway_of(docker, &scope.lease_network_name(lease_id)).await;
        let control_gateway =
            gateway_of(docker, &unrestricted.scope().lease_network_name(control_id)).await;
        let others = host_addresses();
        assert!(
            !others.is_empty(),
            "the host has an address besides loopback"
        );

        // Without the policy every path is open: what the attacker found, and proof
        // that the checks below can fail.
        let reached = fetch_from(docker, &control_client, &control_gateway, port).await;
        assert!(reached.is_some_and(|body| body.contains("host-secret")));
        for address in &others {
            let reached = fetch_from(docker, &control_client, address, port).await;
            assert!(
                reached.is_some_and(|body| body.contains("host-secret")),
                "{address}"
            );
        }
        let reached = fetch_from(
            docker,
            &control_client,
            private_host.address,
            PrivateHost::PORT,
        )
        .await;
        assert!(reached.is_some_and(|body| body.contains("private-host")));

        // With it: the host (bridge gateway and every other address) and the private
        // host are out of reach, the lease's own service is not.
        assert_eq!(
            fetch_from(docker, &client, &gateway, port).await,
            None,
            "gateway"
        );
        for address in &others {
            assert_eq!(
                fetch_from(docker, &client, address, port).await,
                None,
                "{address}"
            );
        }
        assert_eq!(
            fetch_from(docker, &client, private_host.address, PrivateHost::PORT).await,
            None,
            "private host"
        );
        let own = fetch_from(docker, &client, "web", 80).await;
        assert!(
            own.is_some_and(|body| body.contains("lease-web")),
            "own lease"
        );
        // Another lease: the control's web server.
        let control_web = crate::runtime_docker::container_address(
            docker,
            &unrestricted.scope().replica_name(control_id, "web", 0),
            &unrestricted.scope().lease_network_name(control_id),
        )
        .await;
        assert_eq!(
            fetch_from(docker, &client, &control_web, 80).await,
            None,
            "other lease"
        );

        // Rules deleted by hand are put back by the next reconcile pass.
        let tag = scope.tag();
        let (forward, input) = (format!("LH-{tag}-FWD"), format!("LH-{tag}-IN"));
        let interfaces = format!("lh{tag}+");
        iptables(&["-D", "DOCKER-USER", "-i", &interfaces, "-j", &forward]);
        iptables(&["-D", "INPUT", "-i", &interfaces, "-j", &input]);
        iptables(&["-F", &forward]);
        let reached = fetch_from(docker, &client, &gateway, port).await;
        assert!(
            reached.is_some_and(|body| body.contains("host-secret")),
            "deleting the rules opened the path"
        );
        runtime.enforce_policies().await.expect("re-install");
        assert!(iptables(&["-S", "DOCKER-USER"]).contains(&forward));
        assert!(iptables(&["-S", "INPUT"]).contains(&input));
        assert_eq!(
            fetch_from(docker, &client, &gateway, port).await,
            None,
            "closed again"
        );
        assert_eq!(
            fetch_from(docker, &client, private_host.address, PrivateHost::PORT).await,
            None
        );

        // A closed lease's rule goes with it.
        let bridge_rules = || iptables(&["-S", &format!("LH-{tag}-LEASES")]);
        assert_eq!(
            bridge_rules().matches("-j ACCEPT").count(),
            1,
            "{}",
            bridge_rules()
        );
        runtime.teardown(lease_id).await.expect("teardown");
        assert_eq!(
            bridge_rules().matches("-j ACCEPT").count(),
            0,
            "{}",
            bridge_rules()
        );
    };
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test finished in time");
    listener.abort();
    drop((guarded, control, private_host));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_refuses_to_start_when_it_cannot_install_the_rules() {
    let broken = config(
        unique_scope(3),
        EgressSettings::Restricted {
            blocked: Vec::new(),
            iptables: "/nonexistent/iptables".to_owned(),
        },
    );
    let error = match DockerRuntime::connect(broken).await {
        Ok(_) => panic!("started without its egress rules"),
        Err(error) => error,
    };
    assert!(
        matches!(error, RuntimeError::EgressPolicy { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("/nonexistent/iptables")
            && message.contains("egress_policy = \"unrestricted\""),
        "{message}"
    );
    // The operator's way out, with the warning in the log.
    DockerRuntime::connect(config(unique_scope(3), EgressSettings::Unrestricted))
        .await
        .expect("unrestricted starts");
    // The rules of a scope that is gone can be removed whole.
    let scope = unique_scope(9);
    let tag = scope.tag();
    let runtime =
        DockerRuntime::connect(config(scope, EgressSettings::restricted_private_ranges()))
            .await
            .expect("restricted runtime");
    assert!(iptables(&["-S", "DOCKER-USER"]).contains(&format!("LH-{tag}-FWD")));
    runtime.remove_egress_rules().await.expect("uninstall");
    assert!(!iptables(&["-S"]).contains(&format!("LH-{tag}-")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scopes_on_one_engine_each_keep_their_own_lease_1() {
    let (first, second) = (
        config(unique_scope(4), EgressSettings::restricted_private_ranges()),
        config(unique_scope(5), EgressSettings::restricted_private_ranges()),
    );
    let guards = [
        Leases {
            config: first.clone(),
            ids: vec![1],
        },
        Leases {
            config: second.clone(),
            ids: vec![1],
        },
    ];
    let body = async {
        let a = DockerRuntime::connect(first).await.expect("first runtime");
        let b = DockerRuntime::connect(second)
            .await
            .expect("second runtime");
        a.deploy(&lease(1, vec![sleeper("app", 1)]))
            .await
            .expect("first lease 1");
        b.deploy(&lease(1, vec![sleeper("app", 2)]))
            .await
            .expect("second lease 1");
        wait_for_status(&a, 1, "ready", LeaseRuntimeStatus::is_ready).await;
        wait_for_status(&b, 1, "ready", LeaseRuntimeStatus::is_ready).await;
        assert_eq!(
            a.status(1).await.expect("status").services[0].total_replicas,
            1
        );
        assert_eq!(
            b.status(1).await.expect("status").services[0].total_replicas,
            2
        );
        assert!(a.list_leases().await.expect("list").contains(&1));
        // A third scope (another daemon's reconciler) sees neither.
        let third = DockerRuntime::connect(config(unique_scope(6), EgressSettings::Unrestricted))
            .await
            .expect("third runtime");
        assert!(!third.list_leases().await.expect("list").contains(&1));
        third.teardown(1).await.expect("a teardown of nothing");

        a.teardown(1).await.expect("first teardown");
        assert!(a.status(1).await.expect("status").services.is_empty());
        let survivor = b.status(1).await.expect("status");
        assert!(
            survivor.is_ready(),
            "the other daemon's lease 1 survived: {survivor:?}"
        );
    };
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test finished in time");
    drop(guards);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_of_100_replicas_runs_on_a_network_sized_for_it() {
    let settings = DockerRuntimeConfig {
        bind_ip: "127.0.0.1".to_owned(),
        ..config(unique_scope(7), EgressSettings::restricted_private_ranges())
    };
    let guard = Leases {
        config: settings.clone(),
        ids: vec![unique_lease_id()],
    };
    let body = async {
        let runtime = DockerRuntime::connect(settings).await.expect("runtime");
        let lease_id = guard.ids[0];
        let published = ServiceDeployment {
            expose: vec![PortExposure::global(80, Protocol::Tcp)],
            ..sleeper("one", 1)
        };
        let services = vec![sleeper("app", 99), published];
        runtime
            .deploy(&lease(lease_id, services))
            .await
            .expect("deploy 100 replicas");
        let status =
            wait_for_status(&runtime, lease_id, "ready", LeaseRuntimeStatus::is_ready).await;
        let running: u32 = status.services.iter().map(|s| s.ready_replicas).sum();
        assert_eq!(running, 100);
        let docker = runtime.client();
        let network = runtime.scope().lease_network_name(lease_id);
        let subnet = docker
            .inspect_network(
                &network,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .expect("inspect network")
            .ipam
            .and_then(|ipam| ipam.config)
            .and_then(|configs| configs.first().and_then(|config| config.subnet.clone()))
            .expect("subnet");
        assert!(subnet.ends_with("/25"), "100 replicas get a /25: {subnet}");
        // Published on the configured address only.
        let inspected = docker
            .inspect_container(&runtime.scope().replica_name(lease_id, "one", 0), None)
            .await
            .expect("inspect");
        let ports = inspected
            .network_settings
            .and_then(|settings| settings.ports)
            .unwrap_or_default();
        let bindings: Vec<String> = ports
            .values()
            .flatten()
            .flatten()
            .filter_map(|binding| binding.host_ip.clone())
            .collect();
        assert_eq!(bindings, vec!["127.0.0.1".to_owned()]);
        assert!(status.services.iter().all(|s| {
            s.uris
                .iter()
                .all(|uri| uri.starts_with("http://127.0.0.1:"))
        }));
    };
    tokio::time::timeout(LARGE_TEST_TIMEOUT, body)
        .await
        .expect("test finished in time");
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_writing_600_mb_into_128_mib_of_storage_is_evicted() {
    let settings = config(unique_scope(8), EgressSettings::Unrestricted);
    let guard = Leases {
        config: settings.clone(),
        ids: vec![unique_lease_id()],
    };
    let body = async {
        let runtime = DockerRuntime::connect(settings).await.expect("runtime");
        let lease_id = guard.ids[0];
        let writer = ServiceDeployment {
            command: vec![
                "sh".into(),
                "-c".into(),
                "dd if=/dev/zero of=/filler bs=1M count=600 && touch /done; exec sleep 600".into(),
            ],
            resources: ServiceResources {
                cpu_millis: 500,
                memory_bytes: 32 * MIB,
                storage_bytes: 128 * MIB,
            },
            ..sleeper("writer", 1)
        };
        let deployment = lease(lease_id, vec![writer]);
        runtime.deploy(&deployment).await.expect("deploy");
        let docker = runtime.client();
        let name = runtime.scope().replica_name(lease_id, "writer", 0);
        let first = docker
            .inspect_container(&name, None)
            .await
            .expect("inspect")
            .id
            .expect("id");
        // Wait for the write to finish: nothing stopped it on this engine (overlay2 on
        // ext4 has no quota), which is what the eviction is for.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while exec(docker, &name, &["test", "-e", "/done"]).await.0 != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the write never finished"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut events = runtime.events(lease_id).await.expect("events");
        runtime.enforce_policies().await.expect("enforce");
        let evicted = tokio::time::timeout(Duration::from_secs(10), async {
            use futures_util::StreamExt;
            while let Some(event) = events.next().await {
                if let Ok(event) = event
                    && let leasehold_provider::runtime::RuntimeEventKind::Evicted { reason } =
                        event.kind
                {
                    return reason;
                }
            }
            panic!("event stream ended");
        })
        .await
        .expect("an eviction event");
        assert!(
            evicted.contains(&(128 * MIB).to_string()),
            "the event names the limit: {evicted}"
        );
        assert!(
            docker.inspect_container(&first, None).await.is_err(),
            "the over-quota replica is gone"
        );
        // The reconcile pass deploys the lease again: a fresh replica, empty layer.
        runtime.deploy(&deployment).await.expect("redeploy");
        let second = docker
            .inspect_container(&name, None)
            .await
            .expect("inspect")
            .id
            .expect("id");
        assert_ne!(first, second);
    };
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test finished in time");
    drop(guard);
}
