//! A stand-in for the provider daemon's gateway, enough to drive `tenant deploy` to the end:
//! it checks every call's signature with the real `leasehold_proto::auth` rules against the
//! lease's on-chain tenant, checks the manifest against the order's on-chain hash, and then
//! reports the workload running. The real daemon is exercised end to end in `tests/`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use alloy::primitives::{B256, keccak256};
use futures_util::stream::{self, BoxStream};
use leasehold_contracts::MarketplaceClient;
use leasehold_proto::auth::{self, Credentials, methods};
use leasehold_proto::client::unix_now;
use leasehold_proto::gateway::lease_server::{Lease, LeaseServer};
use leasehold_proto::gateway::{
    LeaseEvent, LeaseStatus, LeaseStatusRequest, LogLine, SendManifestRequest,
    SendManifestResponse, ServiceStatus, ShellInput, ShellOutput, StreamEventsRequest,
    StreamLogsRequest,
};
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

pub const URI: &str = "http://127.0.0.1:30080";

/// Manifests accepted: (lease id, bytes).
pub type Received = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

#[derive(Clone)]
struct Gateway {
    chain: MarketplaceClient,
    /// Manifests accepted, by lease.
    received: Received,
}

impl Gateway {
    /// The real signature check, then "is the signer the lease's tenant on chain".
    async fn authenticate<M: prost::Message>(
        &self,
        request: &Request<M>,
        method: &str,
        lease_id: u64,
    ) -> Result<(), Status> {
        let credentials = Credentials::from_metadata(request.metadata())
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let body = request.get_ref().encode_to_vec();
        let signer = auth::verify(&credentials, method, lease_id, &body, unix_now())
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let lease = self
            .chain
            .lease(lease_id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if lease.tenant != signer {
            return Err(Status::permission_denied("not the lease's tenant"));
        }
        Ok(())
    }

    fn has_manifest(&self, lease_id: u64) -> bool {
        self.received
            .lock()
            .map(|received| received.iter().any(|(id, _)| *id == lease_id))
            .unwrap_or(false)
    }
}

#[tonic::async_trait]
impl Lease for Gateway {
    async fn send_manifest(
        &self,
        request: Request<SendManifestRequest>,
    ) -> Result<Response<SendManifestResponse>, Status> {
        let lease_id = request.get_ref().lease_id;
        self.authenticate(&request, methods::SEND_MANIFEST, lease_id)
            .await?;
        let manifest = request.into_inner().manifest_json;
        let order = self
            .chain
            .order(lease_id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if keccak256(&manifest) != order.manifest_hash {
            return Err(Status::invalid_argument("manifest hash mismatch"));
        }
        if let Ok(mut received) = self.received.lock() {
            received.push((lease_id, manifest));
        }
        Ok(Response::new(SendManifestResponse {}))
    }

    async fn get_status(
        &self,
        request: Request<LeaseStatusRequest>,
    ) -> Result<Response<LeaseStatus>, Status> {
        let lease_id = request.get_ref().lease_id;
        self.authenticate(&request, methods::GET_STATUS, lease_id)
            .await?;
        let running = self.has_manifest(lease_id);
        Ok(Response::new(LeaseStatus {
            lease_id,
            state: if running {
                "Running"
            } else {
                "AwaitingManifest"
            }
            .to_owned(),
            services: vec![ServiceStatus {
                name: "web".to_owned(),
                ready_replicas: u32::from(running),
                total_replicas: 1,
                uris: if running {
                    vec![URI.to_owned()]
                } else {
                    Vec::new()
                },
                states: vec![if running { "running" } else { "pending" }.to_owned()],
            }],
            message: String::new(),
            revision: 1,
        }))
    }

    type StreamLogsStream = BoxStream<'static, Result<LogLine, Status>>;

    async fn stream_logs(
        &self,
        request: Request<StreamLogsRequest>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        let lease_id = request.get_ref().lease_id;
        self.authenticate(&request, methods::STREAM_LOGS, lease_id)
            .await?;
        let lines = ["listening on :80", "GET / 200"].map(|text| {
            Ok(LogLine {
                service: "web".to_owned(),
                replica: 0,
                stderr: false,
                line: format!("{text}\n").into_bytes(),
                timestamp_unix_nanos: 1,
            })
        });
        Ok(Response::new(Box::pin(stream::iter(lines))))
    }

    type StreamEventsStream = BoxStream<'static, Result<LeaseEvent, Status>>;

    async fn stream_events(
        &self,
        request: Request<StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let lease_id = request.get_ref().lease_id;
        self.authenticate(&request, methods::STREAM_EVENTS, lease_id)
            .await?;
        Ok(Response::new(Box::pin(stream::empty())))
    }

    type ShellStream = BoxStream<'static, Result<ShellOutput, Status>>;

    /// `tenant shell` runs against the real daemon and Docker in `tests/e2e`.
    async fn shell(
        &self,
        _request: Request<tonic::Streaming<ShellInput>>,
    ) -> Result<Response<Self::ShellStream>, Status> {
        Err(Status::unimplemented("this stand-in gateway has no shell"))
    }
}

/// A running stand-in gateway on 127.0.0.1; stops when dropped.
pub struct RunningGateway {
    pub addr: SocketAddr,
    /// SHA-256 of the certificate it serves: what its provider registers.
    pub cert_sha256: B256,
    pub received: Received,
    task: JoinHandle<()>,
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn start(chain: MarketplaceClient) -> RunningGateway {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = incoming.local_addr().expect("local addr");
    let gateway = Gateway {
        chain,
        received: Arc::default(),
    };
    let received = Arc::clone(&gateway.received);
    let certified =
        rcgen::generate_simple_self_signed(vec!["stand-in".to_owned()]).expect("certificate");
    let cert_sha256 = leasehold_proto::tls::cert_sha256(certified.cert.der());
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(
        certified.cert.pem(),
        certified.signing_key.serialize_pem(),
    ));
    let server = Server::builder().tls_config(tls).expect("tls config");
    let task = tokio::spawn(async move {
        // One service, so no router: LeaseServer answers every path itself.
        let _ = server
            .serve_with_incoming(LeaseServer::new(gateway), incoming)
            .await;
    });
    RunningGateway {
        addr,
        cert_sha256,
        received,
        task,
    }
}
