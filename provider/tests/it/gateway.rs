//! The gateway over real HTTP/2: a tonic server on 127.0.0.1:0, the tenant's
//! signed client, and an in-memory backend standing in for the daemon.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::{Address, B256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use async_trait::async_trait;
use futures_util::StreamExt;
use leasehold_proto::auth::{self, methods};
use leasehold_proto::client::{
    ClientError, ProviderClient, SignedLeaseClient, signed_request, unix_now,
};
use leasehold_proto::gateway::lease_client::LeaseClient;
use leasehold_proto::gateway::{
    GpuCount, LeaseEvent, LeaseStatus, LeaseStatusRequest, LogLine, ProviderStatus, Resources,
    ServiceStatus,
};
use leasehold_proto::gateway::{ShellInput, ShellOutput, ShellRequest, shell_input, shell_output};
use leasehold_proto::tls::GatewayPin;
use leasehold_provider::gateway::{
    BackendError, BackendStream, GatewayBackend, GatewayConfig, GatewayIdentity, LogQuery,
    RunningGateway, serve,
};
use leasehold_provider::runtime::{ExecInput, ExecOutput, ExecRequest, ExecSession};
use tokio::sync::oneshot;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, IntoRequest, Status};

const TEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The tenant of leases 1 and 3 (anvil's first development key, public).
const TENANT_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// The tenant of lease 2.
const OTHER_TENANT_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
/// Tenant of nothing.
const STRANGER_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";

const AWAITING_LEASE: u64 = 1;
const OTHER_TENANTS_LEASE: u64 = 2;
const RUNNING_LEASE: u64 = 3;
const MANIFEST: &[u8] =
    br#"{"services":{"web":{"image":"leasehold/busybox:test"}},"version":"2.0"}"#;

fn key(hex: &str) -> PrivateKeySigner {
    hex.parse().expect("test key")
}

async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test exceeded its time bound")
}

/// Runs `test` against a fresh gateway, bounded in time, then shuts the
/// gateway down (which must succeed).
async fn with_gateway(config: GatewayConfig, test: impl AsyncFnOnce(&Gateway)) {
    bounded(async {
        let gateway = Gateway::start_with(config).await;
        test(&gateway).await;
        gateway.shutdown().await;
    })
    .await;
}

fn log_line(service: &str, replica: u32, text: &str) -> LogLine {
    LogLine {
        service: service.to_owned(),
        replica,
        stderr: false,
        line: text.as_bytes().to_vec(),
        timestamp_unix_nanos: 1_700_000_000_000_000_000,
    }
}

struct FakeLease {
    tenant: Address,
    manifest_hash: B256,
    state: &'static str,
    logs: Vec<LogLine>,
}

/// The daemon as the gateway sees it, recording what reached it.
struct FakeBackend {
    leases: HashMap<u64, FakeLease>,
    replay_keys: Mutex<HashSet<String>>,
    manifests: Mutex<Vec<(u64, Vec<u8>)>>,
    log_queries: Mutex<Vec<(u64, LogQuery)>>,
    tenant_lookups: AtomicUsize,
    /// Calls past authentication: manifest, status, logs, events.
    lease_operations: AtomicUsize,
}

impl FakeBackend {
    fn new() -> Self {
        let lease = |tenant: &str, state| FakeLease {
            tenant: key(tenant).address(),
            manifest_hash: keccak256(MANIFEST),
            state,
            logs: vec![
                log_line("web", 0, "listening on :80"),
                log_line("db", 0, "ready to accept connections"),
                log_line("web", 1, "GET / 200"),
            ],
        };
        Self {
            leases: HashMap::from([
                (AWAITING_LEASE, lease(TENANT_KEY, "AwaitingManifest")),
                (OTHER_TENANTS_LEASE, lease(OTHER_TENANT_KEY, "Running")),
                (RUNNING_LEASE, lease(TENANT_KEY, "Running")),
            ]),
            replay_keys: Mutex::default(),
            manifests: Mutex::default(),
            log_queries: Mutex::default(),
            tenant_lookups: AtomicUsize::new(0),
            lease_operations: AtomicUsize::new(0),
        }
    }

    fn lease(&self, lease_id: u64) -> Result<&FakeLease, BackendError> {
        self.lease_operations.fetch_add(1, Ordering::SeqCst);
        self.leases
            .get(&lease_id)
            .ok_or(BackendError::UnknownLease { lease_id })
    }

    fn manifests(&self) -> Vec<(u64, Vec<u8>)> {
        self.manifests.lock().unwrap().clone()
    }
}

fn lease_status(lease_id: u64, state: &str) -> LeaseStatus {
    LeaseStatus {
        lease_id,
        state: state.to_owned(),
        services: vec![ServiceStatus {
            name: "web".into(),
            ready_replicas: 2,
            total_replicas: 2,
            uris: vec!["http://127.0.0.1:32768".into()],
            states: vec!["running".into(), "running".into()],
            hostnames: Vec::new(),
        }],
        message: String::new(),
        revision: 1,
    }
}

fn provider_status() -> ProviderStatus {
    let resources = |cpu_milli, gpus| Resources {
        cpu_milli,
        memory_bytes: 64 << 30,
        storage_bytes: 1 << 40,
        gpus: vec![GpuCount {
            model: "nvidia/a100/80Gi/sxm".into(),
            count: gpus,
        }],
        leased_ips: 0,
    };
    ProviderStatus {
        address: key(STRANGER_KEY).address().to_string(),
        version: "0.1.0".into(),
        capacity: Some(resources(32_000, 8)),
        allocated: Some(resources(4_000, 1)),
        reserved: Some(resources(2_000, 0)),
        active_leases: 2,
    }
}

#[async_trait]
impl GatewayBackend for FakeBackend {
    async fn lease_tenant(&self, lease_id: u64) -> Result<Option<Address>, BackendError> {
        self.tenant_lookups.fetch_add(1, Ordering::SeqCst);
        Ok(self.leases.get(&lease_id).map(|lease| lease.tenant))
    }

    async fn remember_signature(
        &self,
        replay_key: String,
        _timestamp: u64,
    ) -> Result<bool, BackendError> {
        Ok(self.replay_keys.lock().unwrap().insert(replay_key))
    }

    async fn accept_manifest(
        &self,
        lease_id: u64,
        manifest_json: Vec<u8>,
    ) -> Result<(), BackendError> {
        let lease = self.lease(lease_id)?;
        if lease.state != "AwaitingManifest" {
            return Err(BackendError::LeaseNotAwaitingManifest {
                lease_id,
                state: lease.state.to_owned(),
            });
        }
        let got = keccak256(&manifest_json);
        if got != lease.manifest_hash {
            return Err(BackendError::HashMismatch {
                expected: lease.manifest_hash,
                got,
            });
        }
        self.manifests
            .lock()
            .unwrap()
            .push((lease_id, manifest_json));
        Ok(())
    }

    async fn lease_status(&self, lease_id: u64) -> Result<LeaseStatus, BackendError> {
        let lease = self.lease(lease_id)?;
        Ok(lease_status(lease_id, lease.state))
    }

    async fn logs(
        &self,
        lease_id: u64,
        query: LogQuery,
    ) -> Result<BackendStream<LogLine>, BackendError> {
        let lease = self.lease(lease_id)?;
        self.log_queries
            .lock()
            .unwrap()
            .push((lease_id, query.clone()));
        let lines: Vec<_> = lease
            .logs
            .iter()
            .filter(|line| query.service.as_ref().is_none_or(|s| *s == line.service))
            .cloned()
            .map(Ok)
            .collect();
        let retained = futures_util::stream::iter(lines);
        Ok(if query.follow {
            // A running container: more lines may come at any time.
            retained.chain(futures_util::stream::pending()).boxed()
        } else {
            retained.boxed()
        })
    }

    async fn events(&self, lease_id: u64) -> Result<BackendStream<LeaseEvent>, BackendError> {
        self.lease(lease_id)?;
        let event = |kind: &str| {
            Ok(LeaseEvent {
                timestamp_unix_nanos: 1,
                kind: kind.to_owned(),
                service: "web".into(),
                message: format!("web {kind}"),
            })
        };
        Ok(futures_util::stream::iter([event("pulled"), event("started")]).boxed())
    }

    async fn provider_status(&self) -> Result<ProviderStatus, BackendError> {
        Ok(provider_status())
    }

    /// Prints the command line, echoes stdin (and resizes as `resize COLSxROWS`) until
    /// stdin closes, then exits with the command's argument count.
    async fn exec(
        &self,
        lease_id: u64,
        request: ExecRequest,
    ) -> Result<ExecSession<BackendError>, BackendError> {
        self.lease(lease_id)?;
        let (input, mut inputs) = tokio::sync::mpsc::channel(8);
        let (output, outputs) = tokio::sync::mpsc::channel(8);
        let code = i32::try_from(request.command.len()).unwrap();
        tokio::spawn(async move {
            let banner = format!("ran {}\n", request.command.join(" "));
            let _ = output
                .send(Ok(ExecOutput::Stdout(banner.into_bytes())))
                .await;
            while let Some(message) = inputs.recv().await {
                let echoed = match message {
                    ExecInput::Stdin(bytes) => ExecOutput::Stdout(bytes),
                    ExecInput::Resize(size) => ExecOutput::Stderr(
                        format!("resize {}x{}", size.cols, size.rows).into_bytes(),
                    ),
                    ExecInput::CloseStdin => break,
                };
                let _ = output.send(Ok(echoed)).await;
            }
            let _ = output.send(Ok(ExecOutput::Exit(Some(code)))).await;
        });
        let output = futures_util::stream::unfold(outputs, |mut outputs| async move {
            outputs.recv().await.map(|item| (item, outputs))
        })
        .boxed();
        Ok(ExecSession { input, output })
    }
}

struct Gateway {
    addr: SocketAddr,
    identity: GatewayIdentity,
    backend: Arc<FakeBackend>,
    stop: oneshot::Sender<()>,
    server: RunningGateway,
}

impl Gateway {
    async fn start() -> Self {
        Self::start_with(GatewayConfig::default()).await
    }

    async fn start_with(config: GatewayConfig) -> Self {
        let backend = Arc::new(FakeBackend::new());
        let identity = GatewayIdentity::generate().expect("certificate");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = serve(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            config,
            &identity,
            Arc::clone(&backend) as Arc<dyn GatewayBackend>,
            async move {
                let _ = stopped.await;
            },
        )
        .await
        .expect("gateway binds 127.0.0.1:0");
        Self {
            addr: server.local_addr(),
            identity,
            backend,
            stop,
            server,
        }
    }

    /// What a tenant reads from the chain for this gateway.
    fn pin(&self) -> GatewayPin {
        GatewayPin {
            provider: Some(Address::repeat_byte(0xb1)),
            cert_sha256: self.identity.cert_sha256(),
        }
    }

    async fn client(&self, key_hex: &str) -> SignedLeaseClient {
        SignedLeaseClient::connect(
            &self.addr.to_string(),
            self.pin(),
            key(key_hex),
            CONNECT_TIMEOUT,
        )
        .await
        .expect("client connects")
    }

    async fn public_client(&self) -> ProviderClient {
        ProviderClient::connect(&self.addr.to_string(), self.pin(), CONNECT_TIMEOUT)
            .await
            .expect("public client connects")
    }

    async fn raw_client(&self) -> LeaseClient<Channel> {
        LeaseClient::new(
            leasehold_proto::tls::connect(&self.addr.to_string(), self.pin(), CONNECT_TIMEOUT)
                .await
                .expect("raw client connects"),
        )
    }

    /// Sends a status call for [`RUNNING_LEASE`] with the raw client and
    /// returns the refusal.
    async fn refused_status(&self, request: impl IntoRequest<LeaseStatusRequest>) -> Status {
        self.raw_client()
            .await
            .get_status(request)
            .await
            .expect_err("the gateway must refuse this call")
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        self.server.wait().await.expect("gateway stops cleanly");
    }
}

/// A status call for [`RUNNING_LEASE`] signed by `key_hex` at `timestamp`.
fn signed_status(key_hex: &str, timestamp: u64) -> tonic::Request<LeaseStatusRequest> {
    signed_request(
        &key(key_hex),
        methods::GET_STATUS,
        RUNNING_LEASE,
        timestamp,
        LeaseStatusRequest {
            lease_id: RUNNING_LEASE,
        },
    )
    .expect("signing a status call")
}

fn rpc_status(error: leasehold_proto::client::ClientError) -> Status {
    error
        .status()
        .cloned()
        .unwrap_or_else(|| panic!("expected a refusal by the provider, got {error}"))
}

fn assert_refused(status: &Status, code: Code, needle: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "`{}` should mention `{needle}`",
        status.message()
    );
}

#[tokio::test]
async fn tenant_manifest_is_accepted_byte_for_byte() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        let mut tenant = gateway.client(TENANT_KEY).await;
        tenant
            .send_manifest(AWAITING_LEASE, MANIFEST.to_vec())
            .await
            .expect("the tenant's manifest is accepted");
        assert_eq!(
            gateway.backend.manifests(),
            vec![(AWAITING_LEASE, MANIFEST.to_vec())]
        );
    })
    .await;
}

#[tokio::test]
async fn unsigned_call_is_unauthenticated_before_any_lookup() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        let status = gateway
            .refused_status(LeaseStatusRequest {
                lease_id: RUNNING_LEASE,
            })
            .await;
        assert_refused(&status, Code::Unauthenticated, auth::metadata::ADDRESS);
        assert_eq!(gateway.backend.tenant_lookups.load(Ordering::SeqCst), 0);
    })
    .await;
}

#[tokio::test]
async fn malformed_metadata_is_invalid_argument_naming_the_key() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        let mut request = signed_status(TENANT_KEY, unix_now());
        request.metadata_mut().insert(
            auth::metadata::TIMESTAMP,
            MetadataValue::from_static("soon"),
        );
        let status = gateway.refused_status(request).await;
        assert_refused(&status, Code::InvalidArgument, auth::metadata::TIMESTAMP);
    })
    .await;
}

#[tokio::test]
async fn another_key_is_permission_denied() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        let mut stranger = gateway.client(STRANGER_KEY).await;
        let status = rpc_status(
            stranger
                .send_manifest(AWAITING_LEASE, MANIFEST.to_vec())
                .await
                .unwrap_err(),
        );
        let expected = format!(
            "caller {} is not the tenant of lease {AWAITING_LEASE}",
            key(STRANGER_KEY).address()
        );
        assert_refused(&status, Code::PermissionDenied, &expected);
        assert!(gateway.backend.manifests().is_empty());
        assert_eq!(gateway.backend.lease_operations.load(Ordering::SeqCst), 0);
    })
    .await;
}

#[tokio::test]
async fn claiming_the_tenants_address_with_another_signature_is_rejected() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        let mut request = signed_status(STRANGER_KEY, unix_now());
        let tenant = key(TENANT_KEY).address().to_checksum(None);
        request.metadata_mut().insert(
            auth::metadata::ADDRESS,
            MetadataValue::try_from(tenant).unwrap(),
        );
        let status = gateway.refused_status(request).await;
        assert_refused(&status, Code::Unauthenticated, "signature was made by");
        // Refused on the signature alone, without consulting the store.
        assert_eq!(gateway.backend.tenant_lookups.load(Ordering::SeqCst), 0);
    })
    .await;
}

#[tokio::test]
async fn replayed_request_is_rejected_the_second_time() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        let message = LeaseStatusRequest {
            lease_id: RUNNING_LEASE,
        };
        let credentials = auth::sign(
            &key(TENANT_KEY),
            methods::GET_STATUS,
            RUNNING_LEASE,
            unix_now(),
            auth::new_nonce(),
            &prost::Message::encode_to_vec(&message),
        )
        .unwrap();
        let mut client = gateway.raw_client().await;
        let mut send = async |message, credentials: &auth::Credentials| {
            let mut request = tonic::Request::new(message);
            credentials.insert_into(request.metadata_mut());
            client.get_status(request).await
        };
        let first = send(message, &credentials)
            .await
            .expect("first use is accepted");
        assert_eq!(first.into_inner(), lease_status(RUNNING_LEASE, "Running"));
        let status = send(message, &credentials).await.unwrap_err();
        assert_refused(&status, Code::Unauthenticated, "replayed request");
        // The malleated twin (s -> n - s, parity flipped) recovers the same signer: it is
        // refused for its high s, and its replay key is the original's anyway.
        let twin = auth::Credentials {
            signature: alloy::primitives::Signature::new(
                credentials.signature.r(),
                SECP256K1_ORDER - credentials.signature.s(),
                !credentials.signature.v(),
            ),
            ..credentials.clone()
        };
        let status = send(message, &twin).await.unwrap_err();
        assert_refused(&status, Code::Unauthenticated, "high s value");
        assert_eq!(gateway.backend.lease_operations.load(Ordering::SeqCst), 1);
    })
    .await;
}

/// secp256k1's group order n.
const SECP256K1_ORDER: alloy::primitives::U256 = alloy::primitives::uint!(
    0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141_U256
);

#[tokio::test]
async fn identical_calls_in_quick_succession_are_not_replays() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        let mut tenant = gateway.client(TENANT_KEY).await;
        for _ in 0..3 {
            tenant
                .status(RUNNING_LEASE)
                .await
                .expect("each call is signed afresh");
        }
    })
    .await;
}

#[tokio::test]
async fn six_minute_old_timestamp_is_rejected_for_skew() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        let request = signed_status(TENANT_KEY, unix_now() - 6 * 60);
        let status = gateway.refused_status(request).await;
        assert_refused(
            &status,
            Code::Unauthenticated,
            "away from the provider clock",
        );
        assert_eq!(gateway.backend.tenant_lookups.load(Ordering::SeqCst), 0);
    })
    .await;
}

#[tokio::test]
async fn skew_window_follows_the_gateway_clock() {
    for (ahead, accepted) in [(6 * 60, false), (4 * 60, true)] {
        let config = GatewayConfig {
            clock: Arc::new(move || unix_now() + ahead),
            ..GatewayConfig::default()
        };
        with_gateway(config, async |gateway| {
            let outcome = gateway.client(TENANT_KEY).await.status(RUNNING_LEASE).await;
            match outcome {
                Ok(_) => assert!(accepted, "{ahead} s of skew must be refused"),
                Err(error) => {
                    assert!(!accepted, "{ahead} s of skew must pass: {error}");
                    assert_refused(
                        &rpc_status(error),
                        Code::Unauthenticated,
                        "away from the provider clock",
                    );
                }
            }
        })
        .await;
    }
}

#[tokio::test]
async fn unknown_lease_is_not_found() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        let mut tenant = gateway.client(TENANT_KEY).await;
        let status = rpc_status(tenant.status(99).await.unwrap_err());
        assert_refused(&status, Code::NotFound, "lease 99");
    })
    .await;
}

#[tokio::test]
async fn manifest_hash_mismatch_names_both_hashes() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        let mut tenant = gateway.client(TENANT_KEY).await;
        let tampered = br#"{"services":{},"version":"2.0"}"#.to_vec();
        let status = rpc_status(
            tenant
                .send_manifest(AWAITING_LEASE, tampered.clone())
                .await
                .unwrap_err(),
        );
        assert_refused(
            &status,
            Code::FailedPrecondition,
            &keccak256(MANIFEST).to_string(),
        );
        assert_refused(
            &status,
            Code::FailedPrecondition,
            &keccak256(&tampered).to_string(),
        );
        assert!(gateway.backend.manifests().is_empty());
    })
    .await;
}

#[tokio::test]
async fn manifest_for_a_running_lease_is_a_failed_precondition() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        let mut tenant = gateway.client(TENANT_KEY).await;
        let status = rpc_status(
            tenant
                .send_manifest(RUNNING_LEASE, MANIFEST.to_vec())
                .await
                .unwrap_err(),
        );
        assert_refused(&status, Code::FailedPrecondition, "is Running");
    })
    .await;
}

#[tokio::test]
async fn oversized_body_is_resource_exhausted_and_the_server_stays_up() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        let mut tenant = gateway.client(TENANT_KEY).await;
        let oversized = vec![b' '; 5 * 1024 * 1024];
        let status = rpc_status(
            tenant
                .send_manifest(AWAITING_LEASE, oversized)
                .await
                .unwrap_err(),
        );
        assert_refused(&status, Code::ResourceExhausted, "limit of 4194304 bytes");
        assert!(gateway.backend.manifests().is_empty());
        // The same connection and a fresh one are both still served.
        tenant
            .send_manifest(AWAITING_LEASE, MANIFEST.to_vec())
            .await
            .expect("a normal manifest after the oversized one");
        let mut public = gateway.public_client().await;
        public.status().await.expect("provider status still served");
    })
    .await;
}

#[tokio::test]
async fn a_tenant_pinned_to_another_certificate_is_refused_before_any_call() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        let registered = B256::repeat_byte(0x5a);
        let pin = GatewayPin {
            cert_sha256: registered,
            ..gateway.pin()
        };
        let refused = SignedLeaseClient::connect(
            &gateway.addr.to_string(),
            pin,
            key(TENANT_KEY),
            CONNECT_TIMEOUT,
        )
        .await
        .expect_err("another certificate is refused");
        match &refused {
            ClientError::CertificateMismatch {
                provider,
                expected,
                presented,
                ..
            } => {
                assert_eq!(provider, &Address::repeat_byte(0xb1).to_string());
                assert_eq!(*expected, registered);
                assert_eq!(*presented, gateway.identity.cert_sha256());
            }
            other => panic!("expected a certificate mismatch, got {other}"),
        }
        let message = refused.to_string();
        assert!(message.contains(&registered.to_string()), "{message}");
        assert!(
            message.contains(&gateway.identity.cert_sha256().to_string()),
            "{message}"
        );
        // The handshake failed, so no call reached the gateway.
        assert_eq!(gateway.backend.tenant_lookups.load(Ordering::SeqCst), 0);
        assert_eq!(gateway.backend.lease_operations.load(Ordering::SeqCst), 0);
        // The pinned certificate is accepted by the same gateway.
        gateway.client(TENANT_KEY).await;
    })
    .await;
}

#[tokio::test]
async fn the_gateway_does_not_serve_plain_http2() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        let plain = async {
            LeaseClient::connect(format!("http://{}", gateway.addr))
                .await?
                .get_status(LeaseStatusRequest {
                    lease_id: RUNNING_LEASE,
                })
                .await
                .map_err(Into::into)
        };
        let answer: Result<_, Box<dyn std::error::Error>> =
            tokio::time::timeout(Duration::from_secs(5), plain)
                .await
                .expect("bounded");
        assert!(answer.is_err(), "a plain HTTP/2 call was answered");
    })
    .await;
}

#[tokio::test]
async fn lease_and_provider_status_round_trip() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        let mut tenant = gateway.client(TENANT_KEY).await;
        assert_eq!(
            tenant.status(RUNNING_LEASE).await.unwrap(),
            lease_status(RUNNING_LEASE, "Running")
        );
        // Provider status is public: no key involved.
        let mut public = gateway.public_client().await;
        assert_eq!(public.status().await.unwrap(), provider_status());
    })
    .await;
}

async fn collect_logs(
    tenant: &mut SignedLeaseClient,
    lease_id: u64,
    service: Option<&str>,
) -> Result<Vec<LogLine>, Status> {
    let mut stream = tenant
        .logs(lease_id, service, false, 0)
        .await
        .map_err(rpc_status)?;
    let mut lines = Vec::new();
    while let Some(line) = stream.message().await? {
        lines.push(line);
    }
    Ok(lines)
}

#[tokio::test]
async fn logs_stream_every_line_then_end() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        let mut tenant = gateway.client(TENANT_KEY).await;
        let all = collect_logs(&mut tenant, RUNNING_LEASE, None)
            .await
            .unwrap();
        assert_eq!(all, gateway.backend.leases[&RUNNING_LEASE].logs);
        let web = collect_logs(&mut tenant, RUNNING_LEASE, Some("web"))
            .await
            .unwrap();
        let texts: Vec<_> = web.iter().map(|line| line.line.as_slice()).collect();
        assert_eq!(texts, [&b"listening on :80"[..], b"GET / 200"]);
        let queries = gateway.backend.log_queries.lock().unwrap().clone();
        let query = |service: Option<&str>| LogQuery {
            service: service.map(str::to_owned),
            follow: false,
            tail: None,
        };
        assert_eq!(
            queries,
            [
                (RUNNING_LEASE, query(None)),
                (RUNNING_LEASE, query(Some("web")))
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn events_stream_round_trips() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        let mut tenant = gateway.client(TENANT_KEY).await;
        let mut stream = tenant.events(RUNNING_LEASE).await.unwrap();
        let mut kinds = Vec::new();
        while let Some(event) = stream.message().await.unwrap() {
            kinds.push(event.kind);
        }
        assert_eq!(kinds, ["pulled", "started"]);
    })
    .await;
}

#[tokio::test]
async fn a_tenant_cannot_read_another_tenants_logs() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        let mut tenant = gateway.client(TENANT_KEY).await;
        let status = collect_logs(&mut tenant, OTHER_TENANTS_LEASE, None)
            .await
            .unwrap_err();
        assert_refused(
            &status,
            Code::PermissionDenied,
            "is not the tenant of lease 2",
        );
        assert!(gateway.backend.log_queries.lock().unwrap().is_empty());
        // The rightful tenant still can.
        let mut owner = gateway.client(OTHER_TENANT_KEY).await;
        let lines = collect_logs(&mut owner, OTHER_TENANTS_LEASE, None)
            .await
            .unwrap();
        assert_eq!(lines.len(), 3);
    })
    .await;
}

#[tokio::test]
async fn shutdown_ends_followed_streams_and_drains() {
    bounded(async {
        let gateway = Gateway::start().await;
        let mut tenant = gateway.client(TENANT_KEY).await;
        let mut stream = tenant
            .logs(RUNNING_LEASE, Some("db"), true, 0)
            .await
            .unwrap();
        let first = stream.message().await.unwrap().expect("a retained line");
        assert_eq!(first.line, b"ready to accept connections");
        let (addr, pin) = (gateway.addr, gateway.pin());
        gateway.shutdown().await;
        let status = stream.message().await.unwrap_err();
        assert_refused(&status, Code::Unavailable, "shutting down");
        assert!(
            SignedLeaseClient::connect(&addr.to_string(), pin, key(TENANT_KEY), CONNECT_TIMEOUT)
                .await
                .is_err(),
            "the listener is closed after shutdown"
        );
    })
    .await;
}

fn shell_request(lease_id: u64, command: &[&str]) -> ShellRequest {
    ShellRequest {
        lease_id,
        service: "web".into(),
        replica: 0,
        command: command.iter().map(|arg| (*arg).to_owned()).collect(),
        tty: false,
        size: None,
    }
}

/// Reads a shell's output to its end: (stdout, stderr, exit code, the error that ended it).
async fn shell_transcript(
    mut output: tonic::Streaming<ShellOutput>,
) -> (String, String, Option<i32>, Option<Status>) {
    let (mut stdout, mut stderr, mut exit) = (String::new(), String::new(), None);
    loop {
        match output.message().await {
            Ok(Some(ShellOutput { output: Some(item) })) => match item {
                shell_output::Output::Stdout(bytes) => {
                    stdout.push_str(&String::from_utf8_lossy(&bytes));
                }
                shell_output::Output::Stderr(bytes) => {
                    stderr.push_str(&String::from_utf8_lossy(&bytes));
                }
                shell_output::Output::Exit(code) => exit = Some(code.code),
            },
            Ok(Some(ShellOutput { output: None })) => {}
            Ok(None) => return (stdout, stderr, exit, None),
            Err(status) => return (stdout, stderr, exit, Some(status)),
        }
    }
}

#[tokio::test]
async fn shell_forwards_stdin_and_resizes_and_ends_with_the_exit_code() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        let input = futures_util::stream::iter([
            ShellInput::stdin(b"typed".to_vec()),
            ShellInput::resize(120, 40),
            ShellInput::close_stdin(),
        ]);
        let output = gateway
            .client(TENANT_KEY)
            .await
            .shell(shell_request(RUNNING_LEASE, &["sh", "-c", "x"]), input)
            .await
            .expect("the tenant's shell opens");
        let (stdout, stderr, exit, error) = shell_transcript(output).await;
        assert_eq!(stdout, "ran sh -c x\ntyped");
        assert_eq!(stderr, "resize 120x40");
        assert_eq!((exit, error.map(|s| s.code())), (Some(3), None));
    })
    .await;
}

#[tokio::test]
async fn another_accounts_shell_is_permission_denied_before_anything_runs() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        for (key_hex, lease) in [
            (OTHER_TENANT_KEY, RUNNING_LEASE),
            (TENANT_KEY, OTHER_TENANTS_LEASE),
        ] {
            let error = gateway
                .client(key_hex)
                .await
                .shell(
                    shell_request(lease, &["sh"]),
                    futures_util::stream::pending(),
                )
                .await
                .expect_err("someone else's lease");
            assert_refused(
                &rpc_status(error),
                Code::PermissionDenied,
                &format!("is not the tenant of lease {lease}"),
            );
        }
        assert_eq!(gateway.backend.lease_operations.load(Ordering::SeqCst), 0);
    })
    .await;
}

#[tokio::test]
async fn a_replayed_shell_request_is_refused() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        let signed = signed_request(
            &key(TENANT_KEY),
            methods::SHELL,
            RUNNING_LEASE,
            unix_now(),
            shell_request(RUNNING_LEASE, &["true"]),
        )
        .unwrap();
        let (metadata, _, message) = signed.into_parts();
        let open = async |metadata: &tonic::metadata::MetadataMap| {
            let first = ShellInput {
                input: Some(shell_input::Input::Start(message.clone())),
            };
            let messages = futures_util::stream::iter([first, ShellInput::close_stdin()]);
            let request =
                tonic::Request::from_parts(metadata.clone(), Default::default(), messages);
            gateway.raw_client().await.shell(request).await
        };
        let first = open(&metadata).await.expect("first use is accepted");
        let (_, _, exit, _) = shell_transcript(first.into_inner()).await;
        assert_eq!(exit, Some(1));
        let replayed = open(&metadata).await.expect_err("second use");
        assert_refused(&replayed, Code::Unauthenticated, "replayed request");
        assert_eq!(gateway.backend.lease_operations.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test]
async fn a_shell_must_start_with_its_signed_request_and_keep_stdin_chunks_bounded() {
    with_gateway(GatewayConfig::default(), async |gateway| {
        // Signed over a request that never comes: the first message is stdin.
        let signed = signed_request(
            &key(TENANT_KEY),
            methods::SHELL,
            RUNNING_LEASE,
            unix_now(),
            shell_request(RUNNING_LEASE, &["sh"]),
        )
        .unwrap();
        let (metadata, _, _) = signed.into_parts();
        let request = tonic::Request::from_parts(
            metadata,
            Default::default(),
            futures_util::stream::iter([ShellInput::stdin(b"ls".to_vec())]),
        );
        let status = gateway.raw_client().await.shell(request).await.unwrap_err();
        assert_refused(&status, Code::InvalidArgument, "must be `start`");

        let oversized = vec![b'x'; leasehold_proto::client::MAX_SHELL_CHUNK_BYTES + 1];
        let output = gateway
            .client(TENANT_KEY)
            .await
            .shell(
                shell_request(RUNNING_LEASE, &["cat"]),
                futures_util::stream::iter([ShellInput::stdin(oversized)])
                    .chain(futures_util::stream::pending()),
            )
            .await
            .expect("the shell opens");
        let (stdout, _, exit, error) = shell_transcript(output).await;
        assert!(
            !stdout.contains("xxx"),
            "an oversized chunk reached the command"
        );
        assert_eq!(exit, None);
        assert_refused(
            &error.expect("ended by the gateway"),
            Code::ResourceExhausted,
            "stdin message",
        );
    })
    .await;
}
