//! `POST /api/v1/gateway/{provider}/{Method}`: the signed gateway relay for browsers.
//!
//! A browser can neither pin a provider's self-signed certificate nor speak gRPC, so the
//! console signs a lease call itself (exactly as `leasehold_proto::auth` signs) and posts the
//! protobuf bytes with the four `x-leasehold-*` headers here. The relay forwards those bytes
//! and headers unchanged over the pinned TLS connection every other client uses
//! ([`leasehold_proto::tls::connect`]) and adds no credentials of its own: the provider
//! checks the tenant's signature as if the browser had called it directly.
//!
//! It is not an open proxy: the provider must be in the index, the endpoint and certificate
//! come from its on-chain registration (read as `tenant` reads them, `getProvider`), the
//! method must be one of the relayed lease calls, the body is bounded and every call has a
//! connect and call deadline.
//!
//! Calls to one gateway share one connection ([`GatewayConnections`]): HTTP/2 carries them
//! side by side, so only the first call to a provider pays the TCP and TLS handshakes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt as _};
use leasehold_contracts::MarketplaceClient;
use leasehold_proto::auth::{AuthError, Credentials, metadata, methods};
use leasehold_proto::client::{ClientError, RelayClient};
use leasehold_proto::gateway::{LeaseEvent, LeaseStatus, LogLine, SendManifestResponse};
use leasehold_proto::tls::{self, GatewayPin};
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::api::{ApiError, ApiState};

/// The largest request body relayed: the provider's own default limit
/// (`provider::gateway::DEFAULT_MAX_REQUEST_BYTES`), so that nothing the provider would take
/// is refused here and nothing it would refuse travels there.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Bound on the TCP, TLS and HTTP/2 connection to the provider's gateway.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a unary call, and on a stream's start (its messages may take as long as they
/// take: a followed log stream stays open until the provider or the browser ends it).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Default of `run --relay-max-calls`: gateway calls in flight at once, streams included.
pub const DEFAULT_MAX_CALLS: u32 = 256;
/// Connections to gateways kept open at most; past it the least recently used one closes.
pub const MAX_OPEN_CONNECTIONS: usize = 1024;
/// A connection no call used for this long is closed when the next one is opened.
pub const IDLE_CONNECTION: Duration = Duration::from_secs(300);
/// The media type of the relayed request body.
pub const PROTOBUF: &str = "application/x-protobuf";

/// The signed metadata, in the order a missing one is reported.
const AUTH_HEADERS: [&str; 4] = [
    metadata::ADDRESS,
    metadata::TIMESTAMP,
    metadata::NONCE,
    metadata::SIGNATURE,
];

/// A relayed method: its full gRPC path and what its reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    SendManifest,
    SendOrderManifest,
    GetStatus,
    StreamLogs,
    StreamEvents,
}

impl Relayed {
    /// The method named by the route's last segment (`GetStatus`, ...), or the 404 that says
    /// which ones are relayed.
    pub fn from_name(name: &str) -> Result<Self, ApiError> {
        match name {
            "SendManifest" => Ok(Self::SendManifest),
            "SendOrderManifest" => Ok(Self::SendOrderManifest),
            "GetStatus" => Ok(Self::GetStatus),
            "StreamLogs" => Ok(Self::StreamLogs),
            "StreamEvents" => Ok(Self::StreamEvents),
            // A two-way interactive stream has no request/response or SSE shape.
            "Shell" => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_method",
                "Shell is not relayed (an interactive two-way stream); use `tenant shell`",
                Some("method"),
            )),
            other => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_method",
                format!(
                    "`{other}` is not a relayed gateway method; relayed: SendManifest, \
                     SendOrderManifest, GetStatus, StreamLogs, StreamEvents"
                ),
                Some("method"),
            )),
        }
    }

    /// The full gRPC path, the `method` of the signed message.
    pub fn path(self) -> &'static str {
        match self {
            Self::SendManifest => methods::SEND_MANIFEST,
            Self::SendOrderManifest => methods::SEND_ORDER_MANIFEST,
            Self::GetStatus => methods::GET_STATUS,
            Self::StreamLogs => methods::STREAM_LOGS,
            Self::StreamEvents => methods::STREAM_EVENTS,
        }
    }

    /// Whether the reply is a stream (of any length) rather than one message.
    pub fn is_stream(self) -> bool {
        matches!(self, Self::StreamLogs | Self::StreamEvents)
    }
}

/// The four signed headers as gRPC metadata, checked to be present and well-formed; nothing
/// else from the browser's request is forwarded.
pub fn auth_metadata(headers: &HeaderMap) -> Result<MetadataMap, ApiError> {
    let mut forwarded = axum::http::HeaderMap::new();
    for key in AUTH_HEADERS {
        let mut values = headers.get_all(key).iter();
        let Some(value) = values.next() else {
            return Err(auth_error(AuthError::Missing(key)));
        };
        if values.next().is_some() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_header",
                format!("header `{key}` is given more than once"),
                Some(key),
            ));
        }
        forwarded.insert(key, value.clone());
    }
    let metadata = MetadataMap::from_headers(forwarded);
    // The provider checks the signature; parsing here only turns a malformed header into a
    // 400 naming it instead of a provider round trip.
    Credentials::from_metadata(&metadata).map_err(auth_error)?;
    Ok(metadata)
}

fn auth_error(error: AuthError) -> ApiError {
    let field = match &error {
        AuthError::Missing(key) | AuthError::Malformed { key, .. } => Some(*key),
        _ => None,
    };
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_header",
        error.to_string(),
        field,
    )
}

/// The HTTP status and error code for a provider's gRPC status (`gateway_<status>`), after
/// the usual gRPC-to-HTTP mapping; failures of the provider itself are 502s, a deadline is a
/// 504.
pub fn status_mapping(code: Code) -> (StatusCode, &'static str) {
    match code {
        Code::InvalidArgument => (StatusCode::BAD_REQUEST, "gateway_invalid_argument"),
        Code::FailedPrecondition => (StatusCode::BAD_REQUEST, "gateway_failed_precondition"),
        Code::OutOfRange => (StatusCode::BAD_REQUEST, "gateway_out_of_range"),
        Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "gateway_unauthenticated"),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "gateway_permission_denied"),
        Code::NotFound => (StatusCode::NOT_FOUND, "gateway_not_found"),
        Code::AlreadyExists => (StatusCode::CONFLICT, "gateway_already_exists"),
        Code::Aborted => (StatusCode::CONFLICT, "gateway_aborted"),
        Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "gateway_resource_exhausted"),
        Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, "gateway_unimplemented"),
        Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "gateway_timeout"),
        // tonic reports a broken connection as Unavailable.
        Code::Unavailable => (StatusCode::BAD_GATEWAY, "gateway_unreachable"),
        Code::Cancelled => (StatusCode::BAD_GATEWAY, "gateway_cancelled"),
        Code::Internal => (StatusCode::BAD_GATEWAY, "gateway_internal"),
        Code::DataLoss => (StatusCode::BAD_GATEWAY, "gateway_data_loss"),
        Code::Unknown | Code::Ok => (StatusCode::BAD_GATEWAY, "gateway_unknown"),
    }
}

/// The provider's refusal as the API's error, its message passed on.
pub fn status_error(status: &Status) -> ApiError {
    let (http, code) = status_mapping(status.code());
    ApiError::new(http, code, status.message().to_owned(), None)
}

fn timeout(what: &str, endpoint: &str, after: Duration) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "gateway_timeout",
        format!(
            "the provider's gateway at {endpoint} did not {what} within {} s",
            after.as_secs()
        ),
        None,
    )
}

/// The open connections to providers' gateways, one per endpoint and pinned certificate.
///
/// A connection is only ever made by [`tls::connect`], so every call on it went to a gateway
/// that presented the pinned certificate; a provider that registers another certificate gets
/// a new key, hence a new connection. tonic reconnects a dropped connection on its own (with
/// the same pin check); a connection a call failed on (transport errors, timeouts) is
/// dropped here, so the next call connects afresh and reports what is wrong (a changed
/// certificate as `gateway_certificate_mismatch`).
#[derive(Default)]
pub struct GatewayConnections {
    open: Mutex<HashMap<(String, B256), OpenConnection>>,
}

struct OpenConnection {
    channel: Channel,
    last_used: Instant,
}

/// Which connection a call used (the access log says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectionUse {
    /// None: the call failed before.
    None,
    /// A shared connection the call opened.
    New,
    /// A shared connection already open.
    Reused,
    /// A connection of the stream's own, closed with it.
    Own,
}

impl ConnectionUse {
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::New => "new",
            Self::Reused => "reused",
            Self::Own => "own",
        }
    }
}

impl GatewayConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, B256), OpenConnection>> {
        // The map is consistent between statements: a panic elsewhere cannot leave it torn.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The open connection to `endpoint` pinned to `pin`, else a new one.
    async fn get(
        &self,
        endpoint: &str,
        pin: GatewayPin,
    ) -> Result<(Channel, ConnectionUse), ApiError> {
        let key = (endpoint.to_owned(), pin.cert_sha256);
        if let Some(open) = self.lock().get_mut(&key) {
            open.last_used = Instant::now();
            return Ok((open.channel.clone(), ConnectionUse::Reused));
        }
        let channel = connect(endpoint, pin).await?;
        let mut open = self.lock();
        let now = Instant::now();
        open.retain(|_, connection| now.duration_since(connection.last_used) < IDLE_CONNECTION);
        if open.len() >= MAX_OPEN_CONNECTIONS
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, connection)| connection.last_used)
                .map(|(key, _)| key.clone())
        {
            open.remove(&oldest);
        }
        // Two first calls may both have connected: the later one's connection is kept, the
        // other closes when its call ends.
        open.insert(
            key,
            OpenConnection {
                channel: channel.clone(),
                last_used: now,
            },
        );
        Ok((channel, ConnectionUse::New))
    }

    fn forget(&self, endpoint: &str, pin: GatewayPin) {
        self.lock().remove(&(endpoint.to_owned(), pin.cert_sha256));
    }
}

/// A new pinned connection to the gateway at `endpoint`.
async fn connect(endpoint: &str, pin: GatewayPin) -> Result<Channel, ApiError> {
    // The outer deadline is the one that fires (tonic's own is longer), so a connection
    // that never completes is always reported as a timeout, never as a transport error.
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        tls::connect(endpoint, pin, CONNECT_TIMEOUT * 2),
    )
    .await
    .map_err(|_| timeout("accept a connection", endpoint, CONNECT_TIMEOUT))?
    .map_err(connect_error)
}

/// Whether a failed call says the connection itself is in doubt (rather than the provider
/// answering the call with an error of its own).
fn connection_failed(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
    )
}

fn connect_error(error: ClientError) -> ApiError {
    let code = match &error {
        ClientError::CertificateMismatch { .. } => "gateway_certificate_mismatch",
        ClientError::InvalidEndpoint { .. } => "gateway_endpoint_invalid",
        _ => "gateway_unreachable",
    };
    ApiError::new(StatusCode::BAD_GATEWAY, code, error.to_string(), None)
}

/// Where a provider's gateway is and which certificate it must present, read from its
/// on-chain registration as the tenant CLI reads it, for a provider the index knows.
async fn gateway_of(state: &ApiState, provider: &str) -> Result<(String, GatewayPin), ApiError> {
    let address = crate::api::parse_address("provider", provider)?;
    let indexed: Option<String> =
        sqlx::query_scalar("SELECT endpoint FROM providers WHERE address = $1")
            .bind(&address)
            .fetch_optional(state.store.pool())
            .await?;
    let Some(indexed) = indexed else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_provider",
            format!("provider {address} is not indexed"),
            Some("provider"),
        ));
    };
    let no_endpoint = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_provider",
            format!("provider {address} has registered no gateway endpoint"),
            Some("provider"),
        )
    };
    if indexed.is_empty() {
        return Err(no_endpoint());
    }
    let address: Address = address
        .parse()
        .map_err(|_| ApiError::bad("provider", "must be a 0x-prefixed 20-byte hex address"))?;
    let chain = MarketplaceClient::new(state.rpc.clone(), Address::ZERO, state.deployment);
    let info = chain.provider_info(address).await.map_err(|error| {
        tracing::warn!(%error, %address, "reading the provider's registration failed");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "chain_error",
            format!("cannot read provider {address}'s registration from the chain: {error}"),
            None,
        )
    })?;
    if info.endpoint.is_empty() {
        return Err(no_endpoint());
    }
    Ok((
        info.endpoint,
        GatewayPin {
            provider: Some(address),
            cert_sha256: info.gateway_cert_sha256,
        },
    ))
}

fn check_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Vec<u8>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if content_type.split(';').next().map(str::trim) != Some(PROTOBUF) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("the body must be the protobuf-encoded request, content-type {PROTOBUF}"),
            Some("content-type"),
        ));
    }
    match body {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is over the relay's limit of {MAX_BODY_BYTES} bytes"),
                Some("body"),
            ))
        }
        Err(rejection) => Err(ApiError::bad(
            "body",
            format!("unreadable request body: {rejection}"),
        )),
    }
}

/// One relayed call in flight: it holds a permit of `run --relay-max-calls` until its answer
/// has ended (for a stream, its last event or the browser leaving), then writes the relay's
/// access log line.
struct CallInFlight {
    _permit: OwnedSemaphorePermit,
    provider: String,
    method: Relayed,
    /// The signer the call claims (`x-leasehold-address`); the provider checks it.
    caller: String,
    started: Instant,
    outcome: String,
    connection: ConnectionUse,
}

impl Drop for CallInFlight {
    fn drop(&mut self) {
        tracing::info!(
            provider = %self.provider,
            method = ?self.method,
            caller = %self.caller,
            outcome = %self.outcome,
            connection = %self.connection.as_str(),
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            "relayed gateway call"
        );
    }
}

/// What the provider answered, before it becomes HTTP.
enum Forwarded {
    Unary(Value),
    Logs(tonic::Streaming<LogLine>),
    Events(tonic::Streaming<LeaseEvent>),
}

/// The route's handler.
pub async fn relay(
    State(state): State<ApiState>,
    Path((provider, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let method = Relayed::from_name(&method)?;
    let permit = state.relay_calls.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "relay_busy",
            "the relay has as many gateway calls in flight as it allows; try again shortly",
            None,
        )
    })?;
    let mut call = CallInFlight {
        _permit: permit,
        // The raw path segment, kept to what an address can hold: nothing a client sends may
        // break the log line.
        provider: provider
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(42)
            .collect::<String>()
            .to_lowercase(),
        method,
        caller: headers
            .get(metadata::ADDRESS)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("-")
            .to_lowercase(),
        started: Instant::now(),
        outcome: "failed".to_owned(),
        connection: ConnectionUse::None,
    };
    match forward(
        &state,
        &provider,
        &mut call.connection,
        method,
        &headers,
        body,
    )
    .await
    {
        Ok(Forwarded::Unary(json)) => {
            call.outcome = "ok".to_owned();
            Ok(axum::Json(json).into_response())
        }
        Ok(Forwarded::Logs(stream)) => Ok(sse(stream, "log", log_line_json, call).into_response()),
        Ok(Forwarded::Events(stream)) => {
            Ok(sse(stream, "event", lease_event_json, call).into_response())
        }
        Err(error) => {
            call.outcome = error.code().to_owned();
            Err(error)
        }
    }
}

/// Checks the request and makes the call on the provider's pinned gateway.
async fn forward(
    state: &ApiState,
    provider: &str,
    used: &mut ConnectionUse,
    method: Relayed,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Forwarded, ApiError> {
    let metadata = auth_metadata(headers)?;
    let body = check_body(headers, body)?;
    let (endpoint, pin) = gateway_of(state, provider).await?;
    // A followed stream may stay open for hours, and the gateway bounds the streams and
    // calls of one connection (`GatewayConfig`): streams get a connection each, so that the
    // browsers' streams together never hold up the short calls, nor each other.
    let (channel, connection) = if method.is_stream() {
        (connect(&endpoint, pin).await?, ConnectionUse::Own)
    } else {
        state.gateways.get(&endpoint, pin).await?
    };
    *used = connection;
    let mut client = RelayClient::new(channel);
    let path = method.path();
    let call_timeout = |_| timeout("answer", &endpoint, CALL_TIMEOUT);
    let reply = match method {
        Relayed::SendManifest | Relayed::SendOrderManifest => {
            tokio::time::timeout(CALL_TIMEOUT, async {
                client
                    .unary::<SendManifestResponse>(path, body, metadata)
                    .await
                    .map(|_| Forwarded::Unary(json!({})))
            })
            .await
        }
        Relayed::GetStatus => {
            tokio::time::timeout(CALL_TIMEOUT, async {
                client
                    .unary::<LeaseStatus>(path, body, metadata)
                    .await
                    .map(|status| Forwarded::Unary(lease_status_json(&status)))
            })
            .await
        }
        Relayed::StreamLogs => tokio::time::timeout(
            CALL_TIMEOUT,
            client.server_streaming::<LogLine>(path, body, metadata),
        )
        .await
        .map(|started| started.map(Forwarded::Logs)),
        Relayed::StreamEvents => tokio::time::timeout(
            CALL_TIMEOUT,
            client.server_streaming::<LeaseEvent>(path, body, metadata),
        )
        .await
        .map(|started| started.map(Forwarded::Events)),
    };
    let reply = match reply {
        Ok(Ok(forwarded)) => return Ok(forwarded),
        Ok(Err(status)) if !connection_failed(&status) => return Err(status_error(&status)),
        Ok(Err(status)) => status_error(&status),
        Err(elapsed) => call_timeout(elapsed),
    };
    if connection != ConnectionUse::Own {
        state.gateways.forget(&endpoint, pin);
    }
    Err(reply)
}

/// One SSE event (`kind`, JSON data) per gRPC message; a stream that fails midway sends an
/// `error` event with the API's error body, one that ends cleanly an `end` event, so a
/// reader can tell a finished stream from a dropped connection. The call's permit and log
/// line go with the stream.
fn sse<M: Send + 'static>(
    stream: tonic::Streaming<M>,
    kind: &'static str,
    to_json: fn(&M) -> Value,
    mut call: CallInFlight,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Until the stream ends on its own, the browser left.
    call.outcome = "stream left by the client".to_owned();
    let events = futures_util::stream::unfold(Some((stream, call)), move |state| async move {
        let (mut stream, mut call) = state?;
        match stream.message().await {
            Ok(Some(message)) => {
                let event = Event::default()
                    .event(kind)
                    .data(to_json(&message).to_string());
                Some((Ok(event), Some((stream, call))))
            }
            Ok(None) => {
                call.outcome = "stream ended".to_owned();
                Some((Ok(Event::default().event("end").data("{}")), None))
            }
            Err(status) => {
                let (_, code) = status_mapping(status.code());
                call.outcome = format!("stream failed: {code}");
                let body =
                    json!({"error": {"code": code, "message": status.message(), "field": null}});
                Some((
                    Ok(Event::default().event("error").data(body.to_string())),
                    None,
                ))
            }
        }
    });
    Sse::new(events.boxed()).keep_alive(KeepAlive::new().interval(KEEPALIVE).text("keepalive"))
}

/// `LeaseStatus` as JSON: the proto's field names; ids as decimal strings like the rest of
/// the API.
pub fn lease_status_json(status: &LeaseStatus) -> Value {
    json!({
        "lease_id": status.lease_id.to_string(),
        "state": status.state,
        "message": status.message,
        "revision": status.revision,
        "services": status.services.iter().map(|service| json!({
            "name": service.name,
            "ready_replicas": service.ready_replicas,
            "total_replicas": service.total_replicas,
            "uris": service.uris,
            "hostnames": service.hostnames,
            "states": service.states,
        })).collect::<Vec<_>>(),
    })
}

/// `LogLine` as JSON: the line as text (invalid UTF-8 replaced), nanoseconds as a decimal
/// string since they exceed a JavaScript number's exact range.
pub fn log_line_json(line: &LogLine) -> Value {
    json!({
        "service": line.service,
        "replica": line.replica,
        "stderr": line.stderr,
        "line": String::from_utf8_lossy(&line.line),
        "timestamp_unix_nanos": line.timestamp_unix_nanos.to_string(),
    })
}

pub fn lease_event_json(event: &LeaseEvent) -> Value {
    json!({
        "timestamp_unix_nanos": event.timestamp_unix_nanos.to_string(),
        "kind": event.kind,
        "service": event.service,
        "message": event.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::local::PrivateKeySigner;
    use axum::http::HeaderValue;
    use leasehold_proto::auth;

    fn signed_headers() -> HeaderMap {
        let signer = PrivateKeySigner::random();
        let credentials = auth::sign(
            &signer,
            methods::GET_STATUS,
            1,
            1_700_000_000,
            auth::new_nonce(),
            b"",
        )
        .unwrap();
        let mut metadata = MetadataMap::new();
        credentials.insert_into(&mut metadata);
        metadata.into_headers()
    }

    #[test]
    fn the_four_signed_headers_are_forwarded_and_nothing_else() {
        let mut headers = signed_headers();
        headers.insert("cookie", HeaderValue::from_static("session=secret"));
        headers.insert("authorization", HeaderValue::from_static("Bearer x"));
        let forwarded = auth_metadata(&headers).unwrap().into_headers();
        assert_eq!(forwarded.len(), 4, "{forwarded:?}");
        for key in AUTH_HEADERS {
            assert_eq!(forwarded.get(key), headers.get(key), "{key}");
        }
    }

    fn refusal(headers: &HeaderMap) -> Value {
        let response = auth_metadata(headers).unwrap_err().into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let error = auth_metadata(headers).unwrap_err();
        error.to_json()
    }

    #[test]
    fn a_missing_header_is_a_400_naming_it() {
        for key in AUTH_HEADERS {
            let mut headers = signed_headers();
            headers.remove(key);
            let body = refusal(&headers);
            assert_eq!(body["error"]["field"], key, "{body}");
            assert_eq!(body["error"]["code"], "invalid_header", "{body}");
            assert!(
                body["error"]["message"].as_str().unwrap().contains(key),
                "{body}"
            );
        }
    }

    #[test]
    fn a_malformed_or_repeated_header_is_a_400_naming_it() {
        for (key, bad) in [
            (metadata::ADDRESS, "0x1234"),
            (metadata::TIMESTAMP, "yesterday"),
            (metadata::NONCE, "0xzz"),
            (metadata::SIGNATURE, "0x00"),
        ] {
            let mut headers = signed_headers();
            headers.insert(key, HeaderValue::from_static(bad));
            let body = refusal(&headers);
            assert_eq!(body["error"]["field"], key, "{body}");
        }
        let mut headers = signed_headers();
        headers.append(metadata::NONCE, HeaderValue::from_static("0x00"));
        let body = refusal(&headers);
        assert_eq!(body["error"]["field"], metadata::NONCE, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("more than once"),
            "{body}"
        );
    }

    #[test]
    fn refusals_map_to_4xx_and_provider_failures_to_5xx() {
        for (code, http, name) in [
            (Code::Unauthenticated, 401, "gateway_unauthenticated"),
            (Code::PermissionDenied, 403, "gateway_permission_denied"),
            (Code::NotFound, 404, "gateway_not_found"),
            (Code::FailedPrecondition, 400, "gateway_failed_precondition"),
            (Code::InvalidArgument, 400, "gateway_invalid_argument"),
            (Code::AlreadyExists, 409, "gateway_already_exists"),
            (Code::ResourceExhausted, 429, "gateway_resource_exhausted"),
            (Code::DeadlineExceeded, 504, "gateway_timeout"),
            (Code::Unavailable, 502, "gateway_unreachable"),
            (Code::Internal, 502, "gateway_internal"),
        ] {
            let (status, got) = status_mapping(code);
            assert_eq!((status.as_u16(), got), (http, name), "{code:?}");
        }
        let body = status_error(&Status::permission_denied("not the lease's tenant")).to_json();
        assert_eq!(
            body,
            json!({"error": {"code": "gateway_permission_denied", "message": "not the lease's tenant", "field": null}})
        );
    }

    #[test]
    fn every_relayed_method_is_signed_and_shell_is_not_relayed() {
        for name in [
            "SendManifest",
            "SendOrderManifest",
            "GetStatus",
            "StreamLogs",
            "StreamEvents",
        ] {
            let method = Relayed::from_name(name).unwrap();
            assert!(methods::SIGNED.contains(&method.path()));
            assert!(method.path().ends_with(&format!("/{name}")));
        }
        for name in ["Shell", "getStatus", "", "Provider"] {
            let body = Relayed::from_name(name).unwrap_err().to_json();
            assert_eq!(body["error"]["code"], "unknown_method", "{name}: {body}");
        }
    }

    #[test]
    fn the_body_must_be_protobuf_and_bounded() {
        let mut headers = HeaderMap::new();
        let body = check_body(&headers, Ok(Bytes::from_static(b"\x08\x01")))
            .unwrap_err()
            .to_json();
        assert_eq!(body["error"]["field"], "content-type", "{body}");
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(check_body(&headers, Ok(Bytes::new())).is_err());
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROTOBUF));
        assert_eq!(
            check_body(&headers, Ok(Bytes::from_static(b"\x08\x01"))).unwrap(),
            b"\x08\x01"
        );
    }

    #[test]
    fn replies_keep_the_protos_field_names_and_ids_as_strings() {
        let line = LogLine {
            service: "web".into(),
            replica: 0,
            stderr: true,
            line: b"hello \xff".to_vec(),
            timestamp_unix_nanos: 1_700_000_000_123_456_789,
        };
        assert_eq!(
            log_line_json(&line),
            json!({"service": "web", "replica": 0, "stderr": true, "line": "hello \u{fffd}",
                   "timestamp_unix_nanos": "1700000000123456789"})
        );
        let status = LeaseStatus {
            lease_id: u64::MAX,
            state: "running".into(),
            ..LeaseStatus::default()
        };
        let json = lease_status_json(&status);
        assert_eq!(json["lease_id"], u64::MAX.to_string());
        assert_eq!(json["services"], json!([]));
        let event = LeaseEvent {
            timestamp_unix_nanos: -1,
            kind: "started".into(),
            service: "web".into(),
            message: "replica 0 up".into(),
        };
        assert_eq!(
            lease_event_json(&event),
            json!({"timestamp_unix_nanos": "-1", "kind": "started", "service": "web",
                   "message": "replica 0 up"})
        );
    }
}
