//! One request through the ingress: find the route by `Host`, enforce the route's
//! `http_options`, forward to an upstream (trying again as `next_cases` allow) and stream
//! the answer back.
//!
//! The request body is read whole, up to `max_body_size`, before the first attempt: that
//! is what makes the 413 exact for bodies without a length and what lets an attempt be
//! repeated (nginx buffers request bodies the same way). Each attempt opens its own
//! upstream connection, as nginx does without `keepalive` in the upstream block.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tracing::debug;

use super::routes::{Route, RouteTable, normalize_host};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// What the ingress answers with.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// The most upstream attempts one request gets, whatever `next_tries` says.
pub const MAX_ATTEMPTS: u32 = 16;

/// Longest wait for a client's request body (nginx `client_body_timeout`).
const CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Headers that concern one connection only, never forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The request handler every listener shares.
pub struct Proxy {
    table: Arc<RouteTable>,
    /// Spreads requests over a service's replicas.
    next_upstream: AtomicUsize,
}

/// How one attempt ended when it brought no answer to pass on.
enum AttemptError {
    /// Connecting, sending or reading the answer's head failed.
    Error(String),
    /// No answer within `read_timeout` (or a write blocked past `send_timeout`).
    Timeout,
}

impl Proxy {
    pub fn new(table: Arc<RouteTable>) -> Self {
        Proxy {
            table,
            next_upstream: AtomicUsize::new(0),
        }
    }

    /// Answers one client request; `scheme` is the listener's (`http` or `https`).
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        scheme: &'static str,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .or_else(|| {
                request
                    .uri()
                    .authority()
                    .map(|authority| authority.as_str())
            })
            .and_then(normalize_host);
        let Some(host) = host else {
            return Ok(text(StatusCode::BAD_REQUEST, "the request names no host\n"));
        };
        let Some(route) = self.table.lookup(&host) else {
            return Ok(text(
                StatusCode::NOT_FOUND,
                &format!("no lease serves host `{host}` on this provider\n"),
            ));
        };
        Ok(self.forward(request, &route, &host, peer, scheme).await)
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        route: &Route,
        host: &str,
        peer: SocketAddr,
        scheme: &'static str,
    ) -> Response<ProxyBody> {
        let options = &route.options;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > options.max_body_size) {
            return too_large(options.max_body_size);
        }
        let (parts, body) = request.into_parts();
        let limit = usize::try_from(options.max_body_size).unwrap_or(usize::MAX);
        let body =
            match tokio::time::timeout(CLIENT_BODY_TIMEOUT, Limited::new(body, limit).collect())
                .await
            {
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
                    return too_large(options.max_body_size);
                }
                Ok(Err(error)) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        &format!("reading the request body failed: {error}\n"),
                    );
                }
                Err(_) => {
                    return text(
                        StatusCode::REQUEST_TIMEOUT,
                        "the request body did not arrive in time\n",
                    );
                }
            };
        if route.upstreams.is_empty() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("service `{}` of this lease is not running\n", route.service),
            );
        }
        let headers = upstream_headers(&parts.headers, host, peer, scheme);
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .to_owned();
        // `0` is nginx's "unlimited", and the SDL allows up to u32::MAX: either would let
        // one request hammer a dead service for as long as `next_timeout` allows (forever
        // when it is 0). The cap bounds what a request can cost the provider.
        let tries = match options.next_tries {
            0 => MAX_ATTEMPTS,
            tries => tries.min(MAX_ATTEMPTS),
        };
        let deadline = options.next_timeout.map(|limit| Instant::now() + limit);
        let first = self.next_upstream.fetch_add(1, Ordering::Relaxed);
        let mut attempt: u32 = 0;
        loop {
            let index = first.wrapping_add(attempt as usize) % route.upstreams.len();
            let upstream = &route.upstreams[index];
            let mut upstream_request = Request::new(Full::new(body.clone()));
            *upstream_request.method_mut() = parts.method.clone();
            *upstream_request.uri_mut() = path.parse().unwrap_or_default();
            *upstream_request.headers_mut() = headers.clone();
            let outcome = attempt_once(upstream, upstream_request, options).await;
            attempt = attempt.saturating_add(1);
            let may_retry = attempt < tries && deadline.is_none_or(|end| Instant::now() < end);
            let retry = may_retry
                && match &outcome {
                    Ok(response) => options
                        .next_cases
                        .statuses
                        .contains(&response.status().as_u16()),
                    Err(AttemptError::Error(_)) => options.next_cases.error,
                    Err(AttemptError::Timeout) => options.next_cases.timeout,
                };
            if retry {
                debug!(host, upstream, attempt, "trying the request again");
                continue;
            }
            return match outcome {
                Ok(response) => response,
                Err(AttemptError::Error(reason)) => {
                    debug!(host, upstream, %reason, "upstream failed");
                    text(StatusCode::BAD_GATEWAY, "the service did not answer\n")
                }
                Err(AttemptError::Timeout) => text(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the service did not answer in time\n",
                ),
            };
        }
    }
}

/// One request to one upstream over a fresh connection.
async fn attempt_once(
    upstream: &str,
    request: Request<Full<Bytes>>,
    options: &super::routes::ProxyOptions,
) -> Result<Response<ProxyBody>, AttemptError> {
    let exchange = async {
        let stream = TcpStream::connect(upstream)
            .await
            .map_err(|error| AttemptError::Error(format!("connect: {error}")))?;
        // Small requests and answers should not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let stream = WriteTimeout::new(stream, options.send_timeout);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| AttemptError::Error(format!("handshake: {error}")))?;
        let driver = tokio::spawn(connection);
        match sender.send_request(request).await {
            Ok(response) => Ok(response),
            Err(error) => {
                driver.abort();
                Err(if is_timeout(&error) {
                    AttemptError::Timeout
                } else {
                    AttemptError::Error(format!("request: {error}"))
                })
            }
        }
    };
    let response = tokio::time::timeout(options.read_timeout, exchange)
        .await
        .map_err(|_| AttemptError::Timeout)??;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = ReadTimeoutBody::new(body, options.read_timeout);
    Ok(Response::from_parts(parts, body.boxed()))
}

fn is_timeout(error: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        source = current.source();
    }
    false
}

/// The client's headers as an upstream gets them: hop-by-hop ones dropped, `Host` kept,
/// and the forwarding headers nginx's ingress sets.
fn upstream_headers(
    client: &HeaderMap,
    host: &str,
    peer: SocketAddr,
    scheme: &'static str,
) -> HeaderMap {
    let mut headers = client.clone();
    strip_hop_by_hop(&mut headers);
    let peer_ip = peer.ip().to_string();
    let forwarded_for = match client
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok())
    {
        Some(earlier) if !earlier.trim().is_empty() => format!("{earlier}, {peer_ip}"),
        _ => peer_ip.clone(),
    };
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("x-forwarded-for", &forwarded_for);
    set("x-real-ip", &peer_ip);
    set("x-forwarded-proto", scheme);
    set("x-forwarded-host", host);
    if !client.contains_key(header::HOST) {
        set("host", host);
    }
    headers
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the `Connection` header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn text(status: StatusCode, body: &str) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_owned()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn too_large(limit: u64) -> Response<ProxyBody> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the request body is larger than this service's max_body_size ({limit} bytes)\n"),
    )
}

/// An upstream's answer body whose reads may not pause longer than `read_timeout`
/// (nginx `proxy_read_timeout` between two reads).
struct ReadTimeoutBody {
    inner: Incoming,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl ReadTimeoutBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        ReadTimeoutBody {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl Body for ReadTimeoutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = Instant::now() + this.timeout;
                this.sleep.as_mut().reset(deadline);
                Poll::Ready(frame.map(|frame| frame.map_err(BoxError::from)))
            }
            Poll::Pending => {
                ready!(this.sleep.as_mut().poll(cx));
                Poll::Ready(Some(Err(BoxError::from(
                    "the service paused its answer longer than read_timeout",
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// An upstream connection whose writes may not block longer than `send_timeout`
/// (nginx `proxy_send_timeout` between two writes).
struct WriteTimeout {
    inner: TcpStream,
    timeout: Duration,
    blocked: Option<Pin<Box<Sleep>>>,
}

impl WriteTimeout {
    fn new(inner: TcpStream, timeout: Duration) -> Self {
        WriteTimeout {
            inner,
            timeout,
            blocked: None,
        }
    }

    fn poll_timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match result {
            Poll::Ready(result) => {
                self.blocked = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self
                    .blocked
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(sleep.as_mut().poll(cx));
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "writing to the service blocked longer than send_timeout",
                )))
            }
        }
    }
}

impl AsyncRead for WriteTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.poll_timed(cx, result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.poll_timed(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
