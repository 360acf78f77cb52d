//! The provider's gRPC gateway: the `Lease` service a tenant uses to deliver its
//! manifest and watch its deployment, and the public `Provider` status.
//!
//! Every `Lease` call is authenticated by signature ([`leasehold_proto::auth`]):
//! the signer must be the lease's on-chain tenant, the timestamp within the
//! clock-skew window, and the signature unused. The daemon supplies chain,
//! store and runtime through [`GatewayBackend`].
//!
//! The gateway serves TLS only, with the provider's own certificate
//! ([`GatewayIdentity`]), whose fingerprint tenants read from the chain and pin.

mod backend;
mod identity;
mod routes;
mod service;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

pub use backend::{BackendError, BackendStream, GatewayBackend, LogQuery};
pub use identity::{CERT_FILE, GatewayIdentity, IdentityError, KEY_FILE};

use routes::GatewayRoutes;
use service::{LeaseService, ProviderService, ShutdownSignal};

/// Unix seconds; the gateway's notion of "now" for the clock-skew check.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The largest request message accepted by default; manifests are far smaller.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The local clock.
pub fn system_clock() -> Clock {
    Arc::new(leasehold_proto::client::unix_now)
}

#[derive(Clone)]
pub struct GatewayConfig {
    /// Larger request messages are refused with `ResourceExhausted`.
    pub max_request_bytes: usize,
    /// HTTP/2 streams one connection may hold open (followed logs count).
    pub max_concurrent_streams: u32,
    /// Calls one connection may have in its handlers at once.
    pub max_concurrent_requests_per_connection: usize,
    /// Pings idle connections so that a vanished follower is noticed.
    pub http2_keepalive_interval: Duration,
    pub clock: Clock,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_concurrent_streams: 64,
            max_concurrent_requests_per_connection: 32,
            http2_keepalive_interval: Duration::from_secs(30),
            clock: system_clock(),
        }
    }
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_concurrent_streams", &self.max_concurrent_streams)
            .field(
                "max_concurrent_requests_per_connection",
                &self.max_concurrent_requests_per_connection,
            )
            .field("http2_keepalive_interval", &self.http2_keepalive_interval)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("gateway cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gateway cannot use its TLS certificate: {0}")]
    Tls(#[source] tonic::transport::Error),
    #[error("gateway server failed: {0}")]
    Serve(#[source] tonic::transport::Error),
    #[error("gateway server task ended abnormally: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// A gateway serving in a background task until its shutdown future completes.
#[derive(Debug)]
pub struct RunningGateway {
    local_addr: SocketAddr,
    task: JoinHandle<Result<(), GatewayError>>,
}

impl RunningGateway {
    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits until the server has shut down and its connections are closed.
    pub async fn wait(self) -> Result<(), GatewayError> {
        self.task.await.map_err(GatewayError::Task)?
    }
}

/// Binds `addr` and serves the gateway over TLS with `identity` until `shutdown`
/// completes; then open streams end with `Unavailable` and the server drains its
/// connections.
pub async fn serve(
    addr: SocketAddr,
    config: GatewayConfig,
    identity: &GatewayIdentity,
    backend: Arc<dyn GatewayBackend>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningGateway, GatewayError> {
    let incoming = TcpIncoming::bind(addr)
        .map_err(|source| GatewayError::Bind { addr, source })?
        .with_nodelay(Some(true));
    let local_addr = incoming
        .local_addr()
        .map_err(|source| GatewayError::Bind { addr, source })?;

    let (stop, stopped) = watch::channel(false);
    let routes = GatewayRoutes::new(
        LeaseService::new(
            Arc::clone(&backend),
            config.clock,
            ShutdownSignal::new(stopped),
        ),
        ProviderService::new(backend),
        config.max_request_bytes,
    );
    let server = Server::builder()
        .tls_config(identity.server_tls())
        .map_err(GatewayError::Tls)?
        .max_concurrent_streams(config.max_concurrent_streams)
        .concurrency_limit_per_connection(config.max_concurrent_requests_per_connection)
        .http2_keepalive_interval(Some(config.http2_keepalive_interval));
    let signal = async move {
        shutdown.await;
        tracing::info!(%local_addr, "gateway shutting down");
        // Ends followed streams, which would otherwise hold the drain open.
        stop.send_replace(true);
    };
    tracing::info!(%local_addr, "gateway listening");
    let task = tokio::spawn(async move {
        server
            .serve_with_incoming_shutdown(routes, incoming, signal)
            .await
            .map_err(GatewayError::Serve)
    });
    Ok(RunningGateway { local_addr, task })
}
