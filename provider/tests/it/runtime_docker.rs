//! The Docker runtime against the real engine. Each test uses its own lease ids
//! (unique per process and test), tears down what it created even when it fails
//! (a guard), and is bounded in time. Needs `leasehold/busybox:test` (built by
//! scripts/bootstrap); the only pull is from a registry the test serves itself.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bollard::Docker;
use bollard::exec::StartExecResults;
use bollard::models::{ContainerInspectResponse, ExecConfig, RestartPolicyNameEnum};
use bollard::query_parameters::{ListContainersOptionsBuilder, ListNetworksOptionsBuilder};
use futures_util::StreamExt;
use leasehold_provider::runtime::docker::{
    DockerRuntime, DockerRuntimeConfig, MAX_RESTART_RETRIES, PIDS_LIMIT, VolumeBackend,
};
use leasehold_provider::runtime::{
    ExecInput, ExecOutput, ExecRequest, LABEL_LEASE, LABEL_REPLICA, LABEL_SERVICE, LABEL_TENANT,
    LeaseDeployment, LeaseRuntimeStatus, LogLine, PersistentVolume, PortExposure, Protocol,
    RamVolume, ReplicaState, Runtime, RuntimeError, RuntimeEventKind, RuntimeScope,
    SHARED_MEMORY_MOUNT, ServiceDeployment, ServiceResources, TerminalSize, lease_selector,
};
use sha2::{Digest, Sha256};

use crate::private_registry::{self, PrivateRegistry};

const IMAGE: &str = "leasehold/busybox:test";
const TENANT: &str = "0x00000000000000000000000000000000000000c1";
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const MIB: u64 = 1024 * 1024;

static NEXT_LEASE: AtomicU64 = AtomicU64::new(0);

fn config() -> DockerRuntimeConfig {
    DockerRuntimeConfig {
        public_host: "127.0.0.1".to_owned(),
        pull_timeout: Duration::from_secs(60),
        ..DockerRuntimeConfig::default()
    }
}

/// The scope of [`config`]'s runtime.
fn scope() -> RuntimeScope {
    config().scope
}

async fn runtime() -> DockerRuntime {
    DockerRuntime::connect(config())
        .await
        .expect("Docker engine reachable (run scripts/bootstrap docker)")
}

/// Lease ids no other test or concurrent test process uses.
pub(crate) fn unique_lease_id() -> u64 {
    let pid = u64::from(std::process::id());
    9_000_000_000 + pid * 1_000 + NEXT_LEASE.fetch_add(1, Ordering::Relaxed)
}

/// Tears its leases down when dropped, also when the test panicked. Drop
/// cannot await, so it runs the teardown on a runtime of its own.
pub(crate) struct LeaseGuard {
    ids: Vec<u64>,
}

impl LeaseGuard {
    /// Fresh lease ids, cleared of anything a crashed earlier run left behind.
    pub(crate) async fn new(runtime: &DockerRuntime, count: usize) -> Self {
        let ids: Vec<u64> = (0..count).map(|_| unique_lease_id()).collect();
        for id in &ids {
            runtime.teardown(*id).await.expect("clean leftovers");
        }
        LeaseGuard { ids }
    }

    pub(crate) fn id(&self, index: usize) -> u64 {
        self.ids[index]
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let ids = self.ids.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(executor) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            executor.block_on(async {
                let Ok(runtime) = DockerRuntime::connect(config()).await else {
                    return;
                };
                for id in ids {
                    if let Err(err) = runtime.teardown(id).await {
                        eprintln!("cleanup of lease {id} failed: {err}");
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Runs a test body against a fresh runtime and two fresh lease ids, bounded
/// in time; the leases are torn down afterwards whatever happened.
async fn bounded_test<Body, Done>(body: Body)
where
    Body: FnOnce(Arc<DockerRuntime>, [u64; 2]) -> Done,
    Done: Future<Output = ()>,
{
    let runtime = Arc::new(runtime().await);
    let guard = LeaseGuard::new(&runtime, 2).await;
    let leases = [guard.id(0), guard.id(1)];
    tokio::time::timeout(TEST_TIMEOUT, body(runtime, leases))
        .await
        .expect("test finished in time");
    drop(guard);
}

async fn is_listed(runtime: &DockerRuntime, lease_id: u64) -> bool {
    runtime
        .list_leases()
        .await
        .expect("list leases")
        .contains(&lease_id)
}

fn service(name: &str, replicas: u32) -> ServiceDeployment {
    let resources = ServiceResources {
        cpu_millis: 250,
        memory_bytes: 64 * MIB,
        storage_bytes: 0,
    };
    ServiceDeployment {
        env: BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())]),
        expose: vec![PortExposure::global(80, Protocol::Tcp)],
        replicas,
        ..ServiceDeployment::new(name, IMAGE, resources)
    }
}

fn scripted(name: &str, script: &str) -> ServiceDeployment {
    ServiceDeployment {
        command: vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()],
        expose: vec![],
        ..service(name, 1)
    }
}

fn lease(lease_id: u64, services: Vec<ServiceDeployment>) -> LeaseDeployment {
    LeaseDeployment {
        lease_id,
        tenant: TENANT.to_owned(),
        services,
    }
}

/// Polls status until `done` holds, returning that status.
pub(crate) async fn wait_for_status(
    runtime: &DockerRuntime,
    lease_id: u64,
    what: &str,
    done: impl Fn(&LeaseRuntimeStatus) -> bool,
) -> LeaseRuntimeStatus {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let status = runtime.status(lease_id).await.expect("status");
        if done(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lease {lease_id} never became {what}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn inspect(docker: &Docker, container: &str) -> ContainerInspectResponse {
    docker
        .inspect_container(container, None)
        .await
        .expect("inspect container")
}

/// The address of a container on a network.
pub(crate) async fn container_address(docker: &Docker, container: &str, network: &str) -> String {
    container_ip(&inspect(docker, container).await, network)
}

fn container_ip(info: &ContainerInspectResponse, network: &str) -> String {
    info.network_settings
        .as_ref()
        .and_then(|settings| settings.networks.as_ref())
        .and_then(|networks| networks.get(network))
        .and_then(|endpoint| endpoint.ip_address.clone())
        .filter(|ip| !ip.is_empty())
        .expect("container has an address on its lease network")
}

pub(crate) async fn lease_container_ids(docker: &Docker, lease_id: u64) -> Vec<String> {
    let filters = HashMap::from([("label", vec![lease_selector(lease_id)])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let mut ids: Vec<String> = docker
        .list_containers(Some(options))
        .await
        .expect("list containers")
        .into_iter()
        .filter_map(|container| container.id)
        .collect();
    ids.sort();
    ids
}

pub(crate) async fn lease_network_count(docker: &Docker, lease_id: u64) -> usize {
    let filters = HashMap::from([("label", vec![lease_selector(lease_id)])]);
    let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
    docker
        .list_networks(Some(options))
        .await
        .expect("list networks")
        .len()
}

/// Runs a command in a container; returns its exit code and output.
pub(crate) async fn exec(docker: &Docker, container: &str, command: &[&str]) -> (i64, String) {
    let config = ExecConfig {
        cmd: Some(command.iter().map(|part| (*part).to_owned()).collect()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let created = docker
        .create_exec(container, config)
        .await
        .expect("create exec");
    let mut output = String::new();
    if let StartExecResults::Attached {
        output: mut stream, ..
    } = docker
        .start_exec(&created.id, None)
        .await
        .expect("start exec")
    {
        while let Some(chunk) = stream.next().await {
            output.push_str(&chunk.expect("exec output").to_string());
        }
    }
    loop {
        let inspected = docker
            .inspect_exec(&created.id)
            .await
            .expect("inspect exec");
        if inspected.running != Some(true) {
            return (inspected.exit_code.expect("exec exit code"), output);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain HTTP/1.0 GET; enough for busybox httpd and keeps dependencies out.
pub(crate) fn http_get(uri: &str) -> std::io::Result<String> {
    let authority = uri
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other(format!("not an http URI: {uri}")))?;
    let address: SocketAddr = authority.parse().map_err(std::io::Error::other)?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(format!("GET / HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

pub(crate) async fn http_get_eventually(uri: &str) -> String {
    let mut last_error = String::new();
    for _ in 0..25 {
        let target = uri.to_owned();
        match tokio::task::spawn_blocking(move || http_get(&target))
            .await
            .expect("http task")
        {
            Ok(response) if response.starts_with("HTTP/1.") => return response,
            Ok(response) => last_error = format!("unexpected response {response:?}"),
            Err(err) => last_error = err.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{uri} never answered: {last_error}");
}

fn text(line: &LogLine) -> String {
    String::from_utf8_lossy(&line.line).into_owned()
}

fn line_number(line: &LogLine) -> Option<u64> {
    text(line).strip_prefix("line-")?.parse().ok()
}

async fn collect_logs(runtime: &DockerRuntime, lease_id: u64, tail: Option<u32>) -> Vec<LogLine> {
    let stream = runtime
        .logs(lease_id, None, false, tail)
        .await
        .expect("logs");
    stream.map(|line| line.expect("log line")).collect().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_applies_limits_and_hardening_and_the_uri_answers() {
    bounded_test(|runtime, leases| async move {
        let lease_id = leases[0];
        // Through the trait object, as the daemon holds it.
        let shared: Arc<dyn Runtime> = runtime.clone();
        assert_eq!(shared.backend(), "docker");
        shared
            .deploy(&lease(lease_id, vec![service("web", 1)]))
            .await
            .expect("deploy");

        let status =
            wait_for_status(&runtime, lease_id, "ready", LeaseRuntimeStatus::is_ready).await;
        let web = status.service("web").expect("web in status");
        assert_eq!((web.ready_replicas, web.total_replicas), (1, 1));
        assert_eq!(
            web.uris.len(),
            1,
            "one global port, one replica: {:?}",
            web.uris
        );
        assert!(
            web.uris[0].starts_with("http://127.0.0.1:"),
            "{:?}",
            web.uris
        );
        let response = http_get_eventually(&web.uris[0]).await;
        assert!(
            response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
            "{response}"
        );
        assert!(response.contains("hello from leasehold"), "{response}");

        let docker = runtime.client();
        let name = scope().replica_name(lease_id, "web", 0);
        let info = inspect(docker, &name).await;
        let host = info.host_config.clone().expect("host config");
        assert_eq!(host.nano_cpus, Some(250_000_000));
        assert_eq!(host.memory, Some(64 * 1024 * 1024));
        assert_eq!(host.memory_swap, Some(64 * 1024 * 1024));
        assert_eq!(host.pids_limit, Some(PIDS_LIMIT));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert!(host.cap_add.unwrap_or_default().is_empty());
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_owned()])
        );
        assert_eq!(host.privileged, Some(false));
        assert!(host.binds.unwrap_or_default().is_empty(), "no host binds");
        assert!(
            info.mounts.clone().unwrap_or_default().is_empty(),
            "no mounts at all"
        );
        let policy = host.restart_policy.expect("restart policy");
        assert_eq!(policy.name, Some(RestartPolicyNameEnum::ON_FAILURE));
        assert_eq!(policy.maximum_retry_count, Some(MAX_RESTART_RETRIES));
        let labels = info
            .config
            .as_ref()
            .and_then(|config| config.labels.clone())
            .expect("labels");
        assert_eq!(labels.get(LABEL_LEASE), Some(&lease_id.to_string()));
        assert_eq!(labels.get(LABEL_TENANT).map(String::as_str), Some(TENANT));
        assert_eq!(labels.get(LABEL_SERVICE).map(String::as_str), Some("web"));
        assert_eq!(labels.get(LABEL_REPLICA).map(String::as_str), Some("0"));
        let env = info
            .config
            .as_ref()
            .and_then(|config| config.env.clone())
            .unwrap_or_default();
        assert!(env.contains(&"GREETING=hi".to_owned()), "{env:?}");
        let networks: Vec<String> = info
            .network_settings
            .as_ref()
            .and_then(|settings| settings.networks.as_ref())
            .map(|networks| networks.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(
            networks,
            vec![scope().lease_network_name(lease_id)],
            "attached only to its lease network"
        );

        // The hardening holds inside the container, not just in the config.
        let (code, proc_status) = exec(docker, &name, &["cat", "/proc/self/status"]).await;
        assert_eq!(code, 0, "{proc_status}");
        assert!(proc_status.contains("NoNewPrivs:\t1"), "{proc_status}");
        assert!(
            proc_status.contains("CapEff:\t0000000000000000"),
            "{proc_status}"
        );

        assert!(is_listed(&runtime, lease_id).await);
        runtime.teardown(lease_id).await.expect("teardown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_is_idempotent_and_teardown_removes_everything() {
    bounded_test(|runtime, leases| async move {
        let docker = runtime.client();
        let lease_id = leases[0];
        let deployment = lease(lease_id, vec![service("web", 2)]);

        // Concurrent deploys of one lease (daemon and reconciler racing) still
        // create one network and one container per replica.
        let (first, racing) =
            tokio::join!(runtime.deploy(&deployment), runtime.deploy(&deployment));
        first.expect("first deploy");
        racing.expect("racing deploy");
        wait_for_status(&runtime, lease_id, "ready", LeaseRuntimeStatus::is_ready).await;
        let ids = lease_container_ids(docker, lease_id).await;
        assert_eq!(ids.len(), 2);
        let started_at = inspect(docker, &scope().replica_name(lease_id, "web", 0))
            .await
            .state
            .and_then(|s| s.started_at);

        runtime.deploy(&deployment).await.expect("second deploy");
        assert_eq!(
            lease_container_ids(docker, lease_id).await,
            ids,
            "same containers, none added"
        );
        assert_eq!(
            lease_network_count(docker, lease_id).await,
            1,
            "one network"
        );
        let again = inspect(docker, &scope().replica_name(lease_id, "web", 0))
            .await
            .state
            .and_then(|s| s.started_at);
        assert_eq!(started_at, again, "a running replica is not restarted");
        let status = runtime.status(lease_id).await.expect("status");
        assert_eq!(
            status.service("web").map(|web| web.uris.len()),
            Some(2),
            "{status:?}"
        );

        // A changed manifest replaces the replicas; the surplus one goes away.
        let mut changed = service("web", 1);
        changed.env.insert("VERSION".to_owned(), "2".to_owned());
        runtime
            .deploy(&lease(lease_id, vec![changed]))
            .await
            .expect("update");
        let replaced = inspect(docker, &scope().replica_name(lease_id, "web", 0)).await;
        let replaced_id = replaced.id.clone().expect("id");
        assert!(
            !ids.contains(&replaced_id),
            "the changed replica is a new container"
        );
        let env = replaced
            .config
            .and_then(|config| config.env)
            .unwrap_or_default();
        assert!(env.contains(&"VERSION=2".to_owned()), "{env:?}");
        assert_eq!(
            lease_container_ids(docker, lease_id).await,
            vec![replaced_id]
        );
        let status =
            wait_for_status(&runtime, lease_id, "ready", LeaseRuntimeStatus::is_ready).await;
        let web = status.service("web").expect("web");
        assert_eq!(
            (web.ready_replicas, web.total_replicas, web.replicas.len()),
            (1, 1, 1)
        );

        assert!(is_listed(&runtime, lease_id).await);
        runtime.teardown(lease_id).await.expect("teardown");
        assert!(
            lease_container_ids(docker, lease_id).await.is_empty(),
            "containers removed"
        );
        assert_eq!(
            lease_network_count(docker, lease_id).await,
            0,
            "network removed"
        );
        assert!(!is_listed(&runtime, lease_id).await);
        assert!(
            runtime
                .status(lease_id)
                .await
                .expect("status")
                .services
                .is_empty()
        );
        runtime
            .teardown(lease_id)
            .await
            .expect("second teardown is fine");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_cannot_reach_each_other_but_services_within_a_lease_can() {
    bounded_test(|runtime, leases| async move {
        let docker = runtime.client();
        let (lease_a, lease_b) = (leases[0], leases[1]);
        let deploy_a = lease(lease_a, vec![service("web", 1), service("client", 1)]);
        let deploy_b = lease(lease_b, vec![service("web", 1)]);
        let (a, b) = tokio::join!(runtime.deploy(&deploy_a), runtime.deploy(&deploy_b));
        a.expect("deploy lease A");
        b.expect("deploy lease B");
        wait_for_status(&runtime, lease_a, "ready", LeaseRuntimeStatus::is_ready).await;
        wait_for_status(&runtime, lease_b, "ready", LeaseRuntimeStatus::is_ready).await;

        let client_a = scope().replica_name(lease_a, "client", 0);
        let web_a = scope().replica_name(lease_a, "web", 0);
        let web_b = scope().replica_name(lease_b, "web", 0);
        let ip_a = container_ip(
            &inspect(docker, &web_a).await,
            &scope().lease_network_name(lease_a),
        );
        let ip_b = container_ip(
            &inspect(docker, &web_b).await,
            &scope().lease_network_name(lease_b),
        );
        // The test image's busybox wget crashes (static glibc), so HTTP goes
        // through nc, with the same 2 s connect timeout.
        let fetch = |address: String| {
            let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {address} 80");
            vec!["sh".to_owned(), "-c".to_owned(), script]
        };
        let run = |container: String, command: Vec<String>| async move {
            let parts: Vec<&str> = command.iter().map(String::as_str).collect();
            exec(docker, &container, &parts).await
        };

        // Names are checked with nslookup, fetches go to addresses.
        let lookup = |name: String| vec!["nslookup".to_owned(), name];
        let (code, answer) = run(client_a.clone(), lookup("web".into())).await;
        assert_eq!(code, 0, "service name resolves within the lease: {answer}");
        assert!(answer.contains(&ip_a), "web resolves to {ip_a}: {answer}");
        let (code, body) = run(client_a.clone(), fetch(ip_a.clone())).await;
        assert_eq!(code, 0, "same-lease address reachable: {body}");
        assert!(body.contains("hello from leasehold"), "{body}");

        let (code, body) = run(client_a.clone(), fetch(ip_b.clone())).await;
        assert!(
            code != 0 && !body.contains("hello"),
            "lease A reached lease B at {ip_b}: {code} {body}"
        );
        let (code, body) = run(web_b.clone(), fetch(ip_a.clone())).await;
        assert!(
            code != 0 && !body.contains("hello"),
            "lease B reached lease A at {ip_a}: {code} {body}"
        );
        let (_, answer) = run(client_a.clone(), lookup(web_b.clone())).await;
        assert!(
            !answer.contains(&ip_b),
            "lease B's container name resolved from lease A: {answer}"
        );

        runtime.teardown(lease_a).await.expect("teardown A");
        runtime.teardown(lease_b).await.expect("teardown B");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpullable_image_fails_with_the_engines_reason_and_leaves_nothing() {
    bounded_test(|runtime, leases| async move {
        let docker = runtime.client();
        let lease_id = leases[0];
        let image = format!("leasehold/no-such-image-{lease_id}:missing");
        let mut broken = service("web", 1);
        broken.image = image.clone();

        let err = runtime
            .deploy(&lease(lease_id, vec![service("ok", 1), broken]))
            .await
            .expect_err("must fail");
        match &err {
            RuntimeError::ImagePull {
                image: failed,
                reason,
            } => {
                assert_eq!(failed, &image);
                assert!(!reason.is_empty());
                // Failed on the engine's answer, well before the pull timeout.
                assert!(!reason.contains("timed out after"), "{reason}");
            }
            other => panic!("expected an image pull error, got {other:?}"),
        }
        assert!(err.to_string().contains(&image), "{err}");
        assert!(
            lease_container_ids(docker, lease_id).await.is_empty(),
            "no container left"
        );
        assert_eq!(
            lease_network_count(docker, lease_id).await,
            0,
            "no network left"
        );
        assert!(!is_listed(&runtime, lease_id).await);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_is_reported_with_its_exit_code_and_left_alone() {
    bounded_test(|runtime, leases| async move {
        let docker = runtime.client();
        let lease_id = leases[0];
        let mut events = runtime.events(lease_id).await.expect("events");
        let deployment = lease(lease_id, vec![scripted("crash", "exit 3")]);
        runtime
            .deploy(&deployment)
            .await
            .expect("deploy succeeds; the crash comes later");

        let crashed = |status: &LeaseRuntimeStatus| {
            status.service("crash").is_some_and(|crash| {
                crash.ready_replicas == 0
                    && matches!(
                        crash.replicas.first().map(|replica| &replica.state),
                        Some(ReplicaState::Restarting {
                            last_exit_code: Some(3)
                        }) | Some(ReplicaState::Exited { exit_code: 3, .. })
                    )
            })
        };
        let status = wait_for_status(&runtime, lease_id, "crashed", crashed).await;
        assert!(!status.is_ready());

        // The restart policy gives up after its retries and status says why.
        let given_up = |status: &LeaseRuntimeStatus| {
            status
                .service("crash")
                .and_then(|crash| crash.replicas.first())
                .is_some_and(|replica| {
                    matches!(replica.state, ReplicaState::Exited { exit_code: 3, .. })
                        && i64::from(replica.restart_count) == MAX_RESTART_RETRIES
                })
        };
        let status = wait_for_status(&runtime, lease_id, "given up", given_up).await;
        let crash = status.service("crash").expect("crash service");
        assert_eq!((crash.ready_replicas, crash.total_replicas), (0, 1));
        assert_eq!(crash.replicas[0].state.to_string(), "exited with code 3");

        let died = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(event) = events.next().await {
                let event = event.expect("event");
                if event.kind == (RuntimeEventKind::Died { exit_code: Some(3) }) {
                    return event;
                }
            }
            panic!("event stream ended");
        })
        .await
        .expect("a died event with exit code 3");
        assert_eq!(
            (died.lease_id, died.service.as_deref(), died.replica),
            (lease_id, Some("crash"), Some(0))
        );

        // The reconciler's repeated deploy must not revive the crash loop.
        let container = scope().replica_name(lease_id, "crash", 0);
        let before = inspect(docker, &container).await;
        runtime.deploy(&deployment).await.expect("redeploy");
        let after = inspect(docker, &container).await;
        assert_eq!(before.id, after.id);
        assert_eq!(
            after.state.and_then(|s| s.started_at),
            before.state.and_then(|s| s.started_at)
        );
        assert!(is_listed(&runtime, lease_id).await);
        runtime.teardown(lease_id).await.expect("teardown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_deliver_tail_and_follow() {
    bounded_test(|runtime, leases| async move {
        let lease_id = leases[0];
        let script =
            "echo to-stderr >&2; i=0; while true; do i=$((i+1)); echo line-$i; sleep 0.2; done";
        runtime
            .deploy(&lease(lease_id, vec![scripted("talker", script)]))
            .await
            .expect("deploy");

        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let everything = loop {
            let lines = collect_logs(&runtime, lease_id, None).await;
            if lines.iter().any(|line| text(line) == "line-5") {
                break lines;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no line-5 yet: {lines:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let stderr_line = everything
            .iter()
            .find(|line| text(line) == "to-stderr")
            .expect("stderr line");
        assert!(stderr_line.stderr);
        let first = everything
            .iter()
            .find(|line| text(line) == "line-1")
            .expect("line-1");
        assert!(!first.stderr);
        assert_eq!((first.service.as_str(), first.replica), ("talker", 0));
        assert!(
            first
                .timestamp
                .as_deref()
                .is_some_and(|ts| ts.contains('T')),
            "{first:?}"
        );

        let tail = collect_logs(&runtime, lease_id, Some(3)).await;
        let numbers: Vec<u64> = tail.iter().filter_map(line_number).collect();
        assert_eq!(numbers.len(), 3, "{tail:?}");
        assert!(
            numbers.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "{numbers:?}"
        );
        assert!(
            numbers[0] >= 3,
            "the tail is the end of the log: {numbers:?}"
        );

        let mut follow = runtime
            .logs(lease_id, Some("talker"), true, Some(1))
            .await
            .expect("follow");
        let followed = tokio::time::timeout(Duration::from_secs(20), async {
            let mut numbers = Vec::new();
            while numbers.len() < 6 {
                let line = follow.next().await.expect("stream open").expect("log line");
                numbers.extend(line_number(&line));
            }
            numbers
        })
        .await
        .expect("followed lines arrive");
        assert!(
            followed.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "{followed:?}"
        );
        drop(follow);

        match runtime.logs(lease_id, Some("nope"), false, None).await {
            Err(RuntimeError::NotFound { what }) => assert!(what.contains("nope"), "{what}"),
            Err(other) => panic!("expected not found, got {other}"),
            Ok(_) => panic!("expected not found, got a stream"),
        }
        runtime.teardown(lease_id).await.expect("teardown");
    })
    .await;
}

/// Just enough of the registry API (Distribution v2) for the engine to pull one
/// image: the test image as the engine itself exports it, under any name, on
/// 127.0.0.1 (which Docker treats as an insecure registry, so plain HTTP).
struct LocalRegistry {
    port: u16,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";

fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256:{hex}")
}

/// The regular files of a tar archive (as `docker save` writes it).
fn untar(archive: &[u8]) -> HashMap<String, Vec<u8>> {
    let mut files = HashMap::new();
    let mut offset = 0;
    while let Some(header) = archive.get(offset..offset + 512) {
        if header.iter().all(|byte| *byte == 0) {
            break;
        }
        let text = |range: std::ops::Range<usize>| {
            String::from_utf8_lossy(&header[range])
                .trim_end_matches(['\0', ' '])
                .trim_start()
                .to_owned()
        };
        let size = usize::from_str_radix(&text(124..136), 8).expect("tar entry size");
        let data_start = offset + 512;
        if matches!(header[156], b'0' | 0) {
            let data = archive
                .get(data_start..data_start + size)
                .expect("tar entry data");
            files.insert(text(0..100), data.to_vec());
        }
        offset = data_start + size.div_ceil(512) * 512;
    }
    files
}

/// The quoted strings following `key` in a small JSON text.
fn json_strings_after(json: &str, key: &str, until: char) -> Vec<String> {
    let start = json.find(key).expect("key in manifest.json") + key.len();
    let rest = &json[start..];
    let section = &rest[..rest.find(until).unwrap_or(rest.len())];
    section
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

impl LocalRegistry {
    async fn start(docker: &Docker) -> Self {
        let mut export = Vec::new();
        let mut chunks = docker.export_image(IMAGE);
        while let Some(chunk) = chunks.next().await {
            export.extend_from_slice(&chunk.expect("export image"));
        }
        let files = untar(&export);
        let saved = String::from_utf8_lossy(files.get("manifest.json").expect("manifest.json"))
            .into_owned();
        let config_file = json_strings_after(&saved, "\"Config\":", ',').remove(0);
        let layer_files = json_strings_after(&saved, "\"Layers\":", ']');
        let mut blobs: HashMap<String, Vec<u8>> = HashMap::new();
        let config = files.get(&config_file).expect("config file").clone();
        let config_digest = sha256_digest(&config);
        let mut layers = Vec::new();
        for file in layer_files {
            let layer = files.get(&file).expect("layer file").clone();
            let digest = sha256_digest(&layer);
            layers.push(format!(
                r#"{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar","size":{},"digest":"{digest}"}}"#,
                layer.len()
            ));
            blobs.insert(digest, layer);
        }
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_TYPE}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"{config_digest}"}},"layers":[{}]}}"#,
            config.len(),
            layers.join(",")
        )
        .into_bytes();
        blobs.insert(config_digest, config);

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind registry");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("registry address").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (counter, stopped) = (requests.clone(), stop.clone());
        let content = Arc::new((manifest, blobs));
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((connection, _)) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                        let content = content.clone();
                        std::thread::spawn(move || {
                            let _ = answer_registry_request(connection, &content.0, &content.1);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        LocalRegistry {
            port,
            requests,
            stop,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer_registry_request(
    mut connection: TcpStream,
    manifest: &[u8],
    blobs: &HashMap<String, Vec<u8>>,
) -> std::io::Result<()> {
    connection.set_nonblocking(false)?;
    connection.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = connection.read(&mut buffer)?;
        if read == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buffer[..read]);
    }
    let request = String::from_utf8_lossy(&request);
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let manifest_digest = sha256_digest(manifest);
    let (status, content_type, body): (&str, &str, &[u8]) = if path == "/v2/" {
        ("200 OK", "application/json", b"{}")
    } else if path.contains("/manifests/") {
        ("200 OK", MANIFEST_TYPE, manifest)
    } else if let Some(blob) = path
        .split("/blobs/")
        .nth(1)
        .and_then(|digest| blobs.get(digest))
    {
        ("200 OK", "application/octet-stream", blob)
    } else {
        ("404 Not Found", "application/json", b"{}")
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Docker-Distribution-API-Version: registry/2.0\r\nDocker-Content-Digest: {manifest_digest}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    connection.write_all(head.as_bytes())?;
    if method != "HEAD" {
        connection.write_all(body)?;
    }
    connection.flush()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_pulled_once_with_progress_events() {
    bounded_test(|runtime, leases| async move {
        let lease_id = leases[0];
        let docker = runtime.client();
        let registry = LocalRegistry::start(docker).await;
        let image = format!("127.0.0.1:{}/leasehold/pulled-{lease_id}:v1", registry.port);
        let deployment = lease(
            lease_id,
            vec![ServiceDeployment {
                image: image.clone(),
                ..service("web", 1)
            }],
        );
        let mut events = runtime.events(lease_id).await.expect("events");
        runtime
            .deploy(&deployment)
            .await
            .expect("deploy pulls the image");
        let status =
            wait_for_status(&runtime, lease_id, "ready", LeaseRuntimeStatus::is_ready).await;
        let uri = status
            .service("web")
            .and_then(|web| web.uris.first().cloned())
            .expect("uri");
        assert!(
            http_get_eventually(&uri)
                .await
                .contains("hello from leasehold")
        );

        let mut progress = 0;
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(event) = events.next().await {
                match event.expect("event").kind {
                    RuntimeEventKind::PullProgress { image: pulled, .. } if pulled == image => {
                        progress += 1
                    }
                    RuntimeEventKind::PullComplete { image: pulled } if pulled == image => return,
                    _ => {}
                }
            }
        })
        .await
        .expect("a pull-complete event");
        assert!(progress > 0, "pull progress was reported");

        let requests = registry.requests();
        assert!(requests > 0);
        runtime.deploy(&deployment).await.expect("redeploy");
        assert_eq!(
            registry.requests(),
            requests,
            "a present image is not pulled again"
        );

        runtime.teardown(lease_id).await.expect("teardown");
        docker
            .remove_image(
                &image,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await
            .expect("remove pulled image");
    })
    .await;
}

/// The size column (1K blocks) of `df -k` for the filesystem at `path`.
async fn filesystem_kib(docker: &Docker, container: &str, path: &str) -> u64 {
    let (code, output) = exec(docker, container, &["df", "-k", path]).await;
    assert_eq!(code, 0, "df -k {path}: {output}");
    output
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|size| size.parse().ok())
        .unwrap_or_else(|| panic!("no size in df output {output:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ram_volumes_size_dev_shm_and_their_own_tmpfs() {
    bounded_test(|runtime, leases| async move {
        let lease_id = leases[0];
        let mut infer = scripted("infer", "exec sleep 3600");
        infer.resources.memory_bytes = 64 * MIB + 256 * MIB + 32 * MIB;
        infer.ram_volumes = vec![
            RamVolume {
                name: "shm".into(),
                mount: SHARED_MEMORY_MOUNT.into(),
                size_bytes: 256 * MIB,
            },
            RamVolume {
                name: "scratch".into(),
                mount: "/scratch".into(),
                size_bytes: 32 * MIB,
            },
        ];
        runtime
            .deploy(&lease(lease_id, vec![infer]))
            .await
            .expect("deploy");
        wait_for_status(&runtime, lease_id, "running", LeaseRuntimeStatus::is_ready).await;
        let container = scope().replica_name(lease_id, "infer", 0);
        let docker = runtime.client();
        assert_eq!(
            filesystem_kib(docker, &container, "/dev/shm").await,
            256 * 1024
        );
        assert_eq!(
            filesystem_kib(docker, &container, "/scratch").await,
            32 * 1024
        );
        // The tmpfs pages count against the replica's memory, whose limit includes them.
        let host = inspect(docker, &container).await.host_config.expect("host");
        assert_eq!(host.memory, Some(352 * 1024 * 1024));
        // A non-root writer can use the scratch tmpfs too, as it can /dev/shm.
        let (code, output) = exec(
            docker,
            &container,
            &["sh", "-c", "stat -c %a /scratch && echo x > /scratch/f"],
        )
        .await;
        assert_eq!((code, output.trim()), (0, "1777"));
    })
    .await;
}

/// Whether the engine holds a volume of that name.
async fn volume_exists(docker: &Docker, name: &str) -> bool {
    match docker.inspect_volume(name).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => false,
        Err(err) => panic!("inspect volume {name}: {err}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_volumes_keep_their_data_until_the_lease_closes() {
    let host_dir = tempfile::tempdir().expect("tempdir");
    let with_classes = || DockerRuntimeConfig {
        storage_classes: BTreeMap::from([
            ("default".to_owned(), VolumeBackend::local()),
            (
                "beta2".to_owned(),
                VolumeBackend::HostDir(host_dir.path().to_path_buf()),
            ),
        ]),
        ..config()
    };
    let runtime = DockerRuntime::connect(with_classes())
        .await
        .expect("Docker engine reachable");
    let guard = LeaseGuard::new(&runtime, 1).await;
    let lease_id = guard.id(0);
    tokio::time::timeout(TEST_TIMEOUT, async {
        let volume = |name: &str, mount: &str, class: Option<&str>| PersistentVolume {
            name: name.into(),
            mount: mount.into(),
            size_bytes: 64 * MIB,
            class: class.map(str::to_owned),
            read_only: false,
        };
        let mut db = scripted("db", "exec sleep 3600");
        db.volumes = vec![
            volume("data", "/data", None),
            volume("models", "/models", Some("beta2")),
        ];
        let deployment = lease(lease_id, vec![db.clone()]);
        runtime.deploy(&deployment).await.expect("deploy");
        wait_for_status(&runtime, lease_id, "running", LeaseRuntimeStatus::is_ready).await;
        let container = scope().replica_name(lease_id, "db", 0);
        let docker = runtime.client().clone();
        let write = "echo kept > /data/f && echo weights > /models/w";
        assert_eq!(exec(&docker, &container, &["sh", "-c", write]).await.0, 0);
        let read = || async {
            exec(&docker, &container, &["sh", "-c", "cat /data/f /models/w"])
                .await
                .1
        };
        let host_copy = host_dir
            .path()
            .join(scope().volume_name(lease_id, "db", 0, "models"))
            .join("w");
        assert_eq!(
            std::fs::read_to_string(&host_copy).expect("beta2 lives in its host_dir"),
            "weights\n"
        );

        // `docker restart`.
        docker
            .restart_container(&container, None)
            .await
            .expect("restart");
        wait_for_status(&runtime, lease_id, "running", LeaseRuntimeStatus::is_ready).await;
        assert_eq!(read().await, "kept\nweights\n");

        // A daemon that died (kill -9) and came back: a fresh runtime redeploys the lease.
        drop(runtime);
        let runtime = DockerRuntime::connect(with_classes())
            .await
            .expect("reconnect");
        runtime.deploy(&deployment).await.expect("redeploy");
        assert_eq!(read().await, "kept\nweights\n");

        // A manifest update replaces the container; the volumes stay.
        let before = inspect(&docker, &container).await.id;
        let mut updated = db.clone();
        updated.env.insert("REVISION".into(), "2".into());
        runtime
            .deploy(&lease(lease_id, vec![updated]))
            .await
            .expect("update");
        wait_for_status(&runtime, lease_id, "running", LeaseRuntimeStatus::is_ready).await;
        assert_ne!(inspect(&docker, &container).await.id, before, "replaced");
        assert_eq!(read().await, "kept\nweights\n");

        // Close: the volumes go with the lease, the host directory too.
        runtime.teardown(lease_id).await.expect("teardown");
        for name in ["data", "models"] {
            let volume = scope().volume_name(lease_id, "db", 0, name);
            assert!(!volume_exists(&docker, &volume).await, "{volume} left");
        }
        assert!(!host_copy.exists(), "{} left", host_copy.display());
        assert!(
            !runtime
                .list_leases()
                .await
                .expect("list")
                .contains(&lease_id)
        );

        // A class this provider does not have is refused, naming the volume.
        let mut unknown = scripted("db", "exec sleep 3600");
        unknown.volumes = vec![volume("data", "/data", Some("beta3"))];
        let error = runtime
            .deploy(&lease(lease_id, vec![unknown]))
            .await
            .expect_err("no beta3 here")
            .to_string();
        assert!(
            error.contains("services.db.volumes.data") && error.contains("beta3"),
            "{error}"
        );
        runtime.teardown(lease_id).await.expect("teardown");
    })
    .await
    .expect("test finished in time");
    drop(guard);
}

/// Reads a session's output until its exit (bounded): stdout, stderr and the exit code.
pub(crate) async fn exec_until_exit(
    output: &mut futures_util::stream::BoxStream<'static, Result<ExecOutput, RuntimeError>>,
    until_text: Option<&str>,
) -> (String, String, Option<Option<i32>>) {
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if until_text.is_some_and(|text| stdout.contains(text)) {
            return (stdout, stderr, None);
        }
        let item = tokio::time::timeout_at(deadline, output.next())
            .await
            .unwrap_or_else(|_| {
                panic!("no exit within {READY_TIMEOUT:?}; stdout so far: {stdout:?}")
            });
        match item.expect("output ends with Exit").expect("exec output") {
            ExecOutput::Stdout(bytes) => stdout.push_str(&String::from_utf8_lossy(&bytes)),
            ExecOutput::Stderr(bytes) => stderr.push_str(&String::from_utf8_lossy(&bytes)),
            ExecOutput::Exit(code) => return (stdout, stderr, Some(code)),
        }
    }
}

fn exec_request(command: &[&str], tty: bool) -> ExecRequest {
    ExecRequest {
        service: "sleeper".into(),
        replica: 0,
        command: command.iter().map(|arg| (*arg).to_owned()).collect(),
        tty,
        size: tty.then_some(TerminalSize {
            cols: 100,
            rows: 40,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_a_command_with_its_stdin_output_and_exit_code() {
    bounded_test(|runtime, leases| async move {
        let lease_id = leases[0];
        runtime
            .deploy(&lease(
                lease_id,
                vec![scripted("sleeper", "exec sleep 3600")],
            ))
            .await
            .expect("deploy");
        wait_for_status(&runtime, lease_id, "running", LeaseRuntimeStatus::is_ready).await;

        let script = "echo out; echo err >&2; exit 3";
        let mut session = runtime
            .exec(lease_id, &exec_request(&["sh", "-c", script], false))
            .await
            .expect("exec");
        let (stdout, stderr, exit) = exec_until_exit(&mut session.output, None).await;
        assert_eq!(
            (stdout.as_str(), stderr.as_str(), exit),
            ("out\n", "err\n", Some(Some(3)))
        );

        let mut cat = runtime
            .exec(lease_id, &exec_request(&["cat"], false))
            .await
            .expect("exec cat");
        cat.input
            .send(ExecInput::Stdin(b"typed text".to_vec()))
            .await
            .unwrap();
        cat.input.send(ExecInput::CloseStdin).await.unwrap();
        let (stdout, _, exit) = exec_until_exit(&mut cat.output, None).await;
        assert_eq!((stdout.as_str(), exit), ("typed text", Some(Some(0))));

        let missing = runtime
            .exec(
                lease_id,
                &ExecRequest {
                    replica: 5,
                    ..exec_request(&["true"], false)
                },
            )
            .await;
        assert!(
            matches!(&missing, Err(RuntimeError::NotFound { what }) if what.contains("replica 5")),
            "{:?}",
            missing.map(|_| ())
        );
        let other_lease = runtime
            .exec(leases[1], &exec_request(&["true"], false))
            .await;
        assert!(
            matches!(other_lease, Err(RuntimeError::NotFound { .. })),
            "a lease without containers ran a command"
        );

        // A command killed with its replica did not end by itself: no exit code for it.
        let mut sleeping = runtime
            .exec(
                lease_id,
                &exec_request(&["sh", "-c", "echo started; exec sleep 600"], false),
            )
            .await
            .expect("exec sleep");
        exec_until_exit(&mut sleeping.output, Some("started")).await;
        runtime.teardown(lease_id).await.expect("teardown");
        let last = tokio::time::timeout(READY_TIMEOUT, sleeping.output.next())
            .await
            .expect("the session ends with its replica");
        assert!(
            matches!(&last, Some(Err(RuntimeError::Unavailable { reason })) if reason.contains("stopped while the command ran")),
            "{last:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_a_tty_echoes_input_and_follows_resizes() {
    bounded_test(|runtime, leases| async move {
        let lease_id = leases[0];
        runtime
            .deploy(&lease(
                lease_id,
                vec![scripted("sleeper", "exec sleep 3600")],
            ))
            .await
            .expect("deploy");
        wait_for_status(&runtime, lease_id, "running", LeaseRuntimeStatus::is_ready).await;

        let mut shell = runtime
            .exec(lease_id, &exec_request(&["sh"], true))
            .await
            .expect("exec sh");
        // As at a terminal: type once the prompt shows (the line editor drops typed-ahead
        // input when it starts).
        exec_until_exit(&mut shell.output, Some("# ")).await;
        shell
            .input
            .send(ExecInput::Stdin(b"stty size\n".to_vec()))
            .await
            .unwrap();
        let (seen, _, _) = exec_until_exit(&mut shell.output, Some("40 100")).await;
        assert!(
            seen.contains("stty size"),
            "typed input not echoed: {seen:?}"
        );

        shell
            .input
            .send(ExecInput::Resize(TerminalSize {
                cols: 123,
                rows: 45,
            }))
            .await
            .unwrap();
        shell
            .input
            .send(ExecInput::Stdin(b"stty size\n".to_vec()))
            .await
            .unwrap();
        exec_until_exit(&mut shell.output, Some("45 123")).await;

        // Ctrl-D on an empty line ends the shell, as on a local terminal.
        shell
            .input
            .send(ExecInput::Stdin(vec![0x04]))
            .await
            .unwrap();
        let (_, _, exit) = exec_until_exit(&mut shell.output, None).await;
        assert_eq!(exit, Some(Some(0)));
    })
    .await;
}

/// A private image (a real Distribution registry with htpasswd auth): refused without
/// credentials and with a wrong password, naming the image and "unauthorized", and never
/// echoing a password; pulled and run with the lease's credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_image_is_pulled_only_with_its_credentials() {
    bounded_test(|runtime, [refused, served]| async move {
        let docker = runtime.client();
        let registry = PrivateRegistry::start();
        let image = registry
            .push(docker, IMAGE, &format!("leasehold/private-{served}"))
            .await;
        let credentials = |password: &str| leasehold_manifests::Credentials {
            host: registry.host(),
            email: String::new(),
            username: private_registry::USERNAME.to_owned(),
            password: password.to_owned(),
        };
        let private = |credentials| ServiceDeployment {
            image: image.clone(),
            credentials,
            ..service("web", 1)
        };
        for (credentials, wrong) in [
            (None, None),
            (
                Some(credentials("not-the-password")),
                Some("not-the-password"),
            ),
        ] {
            let error = runtime
                .deploy(&lease(refused, vec![private(credentials)]))
                .await
                .expect_err("no pull without the right password");
            let text = error.to_string();
            assert!(
                matches!(&error, RuntimeError::ImagePull { image: named, .. } if *named == image),
                "{text}"
            );
            assert!(text.contains(&image), "names the image: {text}");
            assert!(
                text.to_lowercase().contains("unauthorized"),
                "says unauthorized: {text}"
            );
            if let Some(wrong) = wrong {
                assert!(!text.contains(wrong), "no password in errors: {text}");
            }
            assert!(
                runtime
                    .status(refused)
                    .await
                    .expect("status")
                    .services
                    .is_empty()
            );
        }

        runtime
            .deploy(&lease(
                served,
                vec![private(Some(credentials(&registry.password)))],
            ))
            .await
            .expect("pulled with credentials");
        let status = wait_for_status(&runtime, served, "ready", LeaseRuntimeStatus::is_ready).await;
        let uri = status
            .service("web")
            .and_then(|web| web.uris.first().cloned())
            .expect("uri");
        assert!(
            http_get_eventually(&uri)
                .await
                .contains("hello from leasehold")
        );
        runtime.teardown(served).await.expect("teardown");
        registry.forget_locally(docker, &image).await;
    })
    .await;
}

/// Loopback addresses for leased-IP tests, apart per test process (Linux routes all of
/// 127/8 to `lo`, so each is an address of this host).
fn leased_addresses() -> (std::net::IpAddr, std::net::IpAddr) {
    let base = 100 + u8::try_from(std::process::id() % 60).unwrap_or(0) * 2;
    (
        std::net::IpAddr::from([127, 0, 0, base]),
        std::net::IpAddr::from([127, 0, 0, base + 1]),
    )
}

/// A port nothing listens on at `address` right now.
fn free_port(address: std::net::IpAddr) -> u16 {
    std::net::TcpListener::bind((address, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

fn refused(address: std::net::IpAddr, port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from((address, port)), Duration::from_secs(2)).is_err()
}

/// Issue #14: a port exposed on a leased IP answers on that address, on its own port, and
/// nowhere else: not on the host's other addresses, not on another pool address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_ip_serves_only_on_its_address() {
    bounded_test(|runtime, leases| async move {
        let lease_id = leases[0];
        let (leased, other_pool_address) = leased_addresses();
        let port = free_port(leased);
        let mut web = service("web", 1);
        web.expose = vec![PortExposure {
            external_port: port,
            leased_ip: Some(leased),
            ..PortExposure::global(80, Protocol::Tcp)
        }];
        runtime
            .deploy(&lease(lease_id, vec![web]))
            .await
            .expect("deploy");

        let status =
            wait_for_status(&runtime, lease_id, "ready", LeaseRuntimeStatus::is_ready).await;
        let uris = &status.service("web").expect("web in status").uris;
        assert_eq!(uris, &vec![format!("tcp://{leased}:{port}")]);
        let response = http_get_eventually(&format!("http://{leased}:{port}")).await;
        assert!(response.contains("hello from leasehold"), "{response}");
        let localhost = std::net::IpAddr::from([127, 0, 0, 1]);
        assert!(refused(localhost, port), "answers on 127.0.0.1:{port}");
        assert!(
            refused(other_pool_address, port),
            "answers on {other_pool_address}:{port}"
        );

        runtime.teardown(lease_id).await.expect("teardown");
        assert!(refused(leased, port), "still bound after teardown");
    })
    .await;
}
