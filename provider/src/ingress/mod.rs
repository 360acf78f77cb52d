//! The provider's HTTP ingress: a reverse proxy in the daemon that routes requests by
//! `Host` to lease services, on one plain-HTTP listener and, with a certificate, one
//! HTTPS listener.
//!
//! Every global HTTP exposure (`as: 80`, TCP) gets a generated hostname under the
//! provider's ingress domain plus its `accept` hostnames ([`routes::lease_claims`]); the
//! daemon keeps the [`RouteTable`] current (leases deployed, updated, closed, and the whole
//! table rebuilt from the store at start) and the listeners here only read it. Upstreams
//! are the `host:port` addresses at which the runtime publishes the service's HTTP port
//! (Docker: the published host port; Kubernetes: the NodePort).

mod proxy;
pub mod routes;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use self::proxy::{BoxError, MAX_ATTEMPTS, Proxy, ProxyBody};
pub use self::routes::{
    HostnameError, ProxyOptions, Route, RouteClaim, RouteTable, generated_hostname, lease_claims,
    normalize_host,
};
pub use self::tls::load_tls;

/// How long a client may take to send a request's head (slow-loris bound).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("ingress.{field}: cannot listen on {addr}: {source}")]
    Listen {
        field: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("ingress.{field}: {path}: {reason}")]
    Tls {
        field: &'static str,
        path: String,
        reason: String,
    },
}

/// What the listeners serve with.
#[derive(Clone)]
pub struct IngressListeners {
    pub http: SocketAddr,
    /// The HTTPS address and the certificate it presents.
    pub https: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
}

/// The running listeners; dropping it leaves them running, [`IngressHandle::shutdown`]
/// stops them.
pub struct IngressHandle {
    /// Where plain HTTP is served (the bound address: port 0 in the config is resolved).
    pub http_addr: SocketAddr,
    pub https_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl IngressHandle {
    /// Stops accepting connections; requests in flight finish on their own.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Binds the listeners and serves the table's routes on them.
pub async fn start(
    listeners: IngressListeners,
    table: Arc<RouteTable>,
) -> Result<IngressHandle, IngressError> {
    let proxy = Arc::new(Proxy::new(table));
    let (stop, stopped) = watch::channel(false);
    let http = TcpListener::bind(listeners.http)
        .await
        .map_err(|source| IngressError::Listen {
            field: "http_listen",
            addr: listeners.http,
            source,
        })?;
    let http_addr = local_addr(&http, "http_listen", listeners.http)?;
    let mut tasks = vec![tokio::spawn(accept_loop(
        http,
        proxy.clone(),
        None,
        stopped.clone(),
    ))];
    let mut https_addr = None;
    if let Some((addr, config)) = listeners.https {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| IngressError::Listen {
                field: "https_listen",
                addr,
                source,
            })?;
        https_addr = Some(local_addr(&listener, "https_listen", addr)?);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tasks.push(tokio::spawn(accept_loop(
            listener,
            proxy,
            Some(acceptor),
            stopped,
        )));
    }
    info!(%http_addr, https = ?https_addr, "ingress listening");
    Ok(IngressHandle {
        http_addr,
        https_addr,
        stop,
        tasks,
    })
}

fn local_addr(
    listener: &TcpListener,
    field: &'static str,
    addr: SocketAddr,
) -> Result<SocketAddr, IngressError> {
    listener
        .local_addr()
        .map_err(|source| IngressError::Listen {
            field,
            addr,
            source,
        })
}

async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: pause rather than spin.
                warn!(%error, "ingress accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        match tls.clone() {
            None => {
                tokio::spawn(serve_connection(stream, peer, proxy, "http"));
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => serve_connection(stream, peer, proxy, "https").await,
                        Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

async fn serve_connection<S>(stream: S, peer: SocketAddr, proxy: Arc<Proxy>, scheme: &'static str)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let proxy = proxy.clone();
        async move { proxy.handle(request, peer, scheme).await }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(error) = served {
        debug!(%peer, %error, "ingress connection ended with an error");
    }
}
