//! The `Lease` and `Provider` gRPC services: signature checks, then the backend.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use alloy::primitives::Address;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use leasehold_proto::auth::{self, AuthError, Credentials, methods};
use leasehold_proto::gateway::lease_server::Lease;
use leasehold_proto::gateway::provider_server::Provider;
use leasehold_proto::gateway::{
    LeaseEvent, LeaseStatus, LeaseStatusRequest, LogLine, ProviderStatus, ProviderStatusRequest,
    SendManifestRequest, SendManifestResponse, SendOrderManifestRequest, StreamEventsRequest,
    StreamLogsRequest,
};
use leasehold_proto::gateway::{ShellInput, ShellOutput};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

mod shell;

use super::Clock;
use super::backend::{BackendError, BackendStream, GatewayBackend, LogQuery};
use crate::speculative::PreLeaseBid;

/// A response stream as the generated server wants it.
pub(crate) type GatewayStream<T> = BoxStream<'static, Result<T, Status>>;

/// Fires once the gateway is shutting down, so that open (followed) streams end
/// and graceful shutdown does not wait on them forever.
#[derive(Clone)]
pub(crate) struct ShutdownSignal(watch::Receiver<bool>);

impl ShutdownSignal {
    pub(crate) fn new(receiver: watch::Receiver<bool>) -> Self {
        Self(receiver)
    }

    fn fired(self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let mut receiver = self.0;
        Box::pin(async move {
            // A dropped sender means the server is gone: that is shutdown too.
            let _ = receiver.wait_for(|stopped| *stopped).await;
        })
    }
}

/// What a signed call acts on, and so whose tenant must have signed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    Lease(u64),
    /// An order before its lease exists (the pre-lease manifest).
    Order(u64),
}

impl Subject {
    /// The id in the signed message's lease-id slot.
    fn id(self) -> u64 {
        match self {
            Subject::Lease(id) | Subject::Order(id) => id,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Subject::Lease(_) => "lease",
            Subject::Order(_) => "order",
        }
    }
}

/// Request messages that name the lease (or order) they act on.
trait LeaseScoped: prost::Message {
    fn lease_id(&self) -> u64;

    fn subject(&self) -> Subject {
        Subject::Lease(self.lease_id())
    }
}

impl LeaseScoped for SendOrderManifestRequest {
    fn lease_id(&self) -> u64 {
        self.order_id
    }

    fn subject(&self) -> Subject {
        Subject::Order(self.order_id)
    }
}

impl LeaseScoped for SendManifestRequest {
    fn lease_id(&self) -> u64 {
        self.lease_id
    }
}
impl LeaseScoped for LeaseStatusRequest {
    fn lease_id(&self) -> u64 {
        self.lease_id
    }
}
impl LeaseScoped for StreamLogsRequest {
    fn lease_id(&self) -> u64 {
        self.lease_id
    }
}
impl LeaseScoped for StreamEventsRequest {
    fn lease_id(&self) -> u64 {
        self.lease_id
    }
}

fn auth_status(error: AuthError) -> Status {
    let message = error.to_string();
    match error {
        AuthError::Missing(_)
        | AuthError::ClockSkew { .. }
        | AuthError::WrongSigner { .. }
        | AuthError::HighS => Status::unauthenticated(message),
        AuthError::Malformed { .. } => Status::invalid_argument(message),
        // Only reachable through a bug in the method table: not the caller's fault.
        AuthError::UnknownMethod(_) | AuthError::Signing(_) => Status::internal(message),
    }
}

fn log_outcome<T>(
    method: &'static str,
    lease_id: Option<u64>,
    caller: Option<Address>,
    outcome: &Result<T, Status>,
) {
    let caller = caller.map(|address| address.to_string());
    match outcome {
        Ok(_) => tracing::info!(method, lease_id, caller, outcome = "ok", "gateway call"),
        Err(status) => tracing::warn!(
            method,
            lease_id,
            caller,
            outcome = ?status.code(),
            error = status.message(),
            "gateway call refused"
        ),
    }
}

pub(crate) struct LeaseService {
    backend: Arc<dyn GatewayBackend>,
    clock: Clock,
    shutdown: ShutdownSignal,
}

impl LeaseService {
    pub(crate) fn new(
        backend: Arc<dyn GatewayBackend>,
        clock: Clock,
        shutdown: ShutdownSignal,
    ) -> Self {
        Self {
            backend,
            clock,
            shutdown,
        }
    }

    /// Returns the caller once it is proven to be the lease's tenant with a
    /// signature never used before. Cheap checks (metadata, clock, signature
    /// recovery) come first; the store is consulted only for a valid signature.
    async fn authorize<M: LeaseScoped>(
        &self,
        method: &'static str,
        request: &Request<M>,
    ) -> Result<Address, Status> {
        let subject = request.get_ref().subject();
        let lease_id = subject.id();
        let credentials = Credentials::from_metadata(request.metadata()).map_err(auth_status)?;
        let body = request.get_ref().encode_to_vec();
        let caller = auth::verify(&credentials, method, lease_id, &body, (self.clock)())
            .map_err(auth_status)?;
        let tenant = match subject {
            Subject::Lease(lease_id) => self.backend.lease_tenant(lease_id).await,
            Subject::Order(order_id) => self.backend.order_tenant(order_id).await,
        }
        .map_err(BackendError::into_status)?;
        match (tenant, subject) {
            (None, Subject::Lease(lease_id)) => {
                return Err(BackendError::UnknownLease { lease_id }.into_status());
            }
            (None, Subject::Order(order_id)) => {
                return Err(BackendError::UnknownOrder { order_id }.into_status());
            }
            (Some(tenant), _) if tenant != caller => {
                return Err(Status::permission_denied(format!(
                    "caller {caller} is not the tenant of {} {lease_id}",
                    subject.noun()
                )));
            }
            (Some(_), _) => {}
        }
        let replay_key = credentials
            .replay_key(method, lease_id, &body)
            .map_err(auth_status)?;
        let first_use = self
            .backend
            .remember_signature(replay_key.to_string(), credentials.timestamp)
            .await
            .map_err(BackendError::into_status)?;
        if !first_use {
            return Err(Status::unauthenticated(
                "replayed request: this signed call (signer, timestamp, nonce and body) was already used; sign every call afresh with a new nonce",
            ));
        }
        Ok(caller)
    }

    /// Authorizes, runs `op` on the backend, and traces the outcome.
    async fn signed_call<M, T, F, Fut>(
        &self,
        method: &'static str,
        request: Request<M>,
        op: F,
    ) -> Result<Response<T>, Status>
    where
        M: LeaseScoped,
        F: FnOnce(Arc<dyn GatewayBackend>, M) -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let lease_id = request.get_ref().lease_id();
        let (caller, outcome) = match self.authorize(method, &request).await {
            Ok(caller) => {
                let outcome = op(Arc::clone(&self.backend), request.into_inner())
                    .await
                    .map_err(BackendError::into_status);
                (Some(caller), outcome)
            }
            Err(status) => (None, Err(status)),
        };
        log_outcome(method, Some(lease_id), caller, &outcome);
        outcome.map(Response::new)
    }

    /// Converts a backend stream, ending it with `Unavailable` when the gateway
    /// shuts down.
    fn gateway_stream<T: Send + 'static>(&self, stream: BackendStream<T>) -> GatewayStream<T> {
        type State<T> = (BackendStream<T>, Pin<Box<dyn Future<Output = ()> + Send>>);
        let state: Option<State<T>> = Some((stream, self.shutdown.clone().fired()));
        futures_util::stream::unfold(state, |state| async move {
            let (mut stream, mut shutdown) = state?;
            tokio::select! {
                biased;
                () = &mut shutdown => Some((
                    Err(Status::unavailable("the provider gateway is shutting down")),
                    None,
                )),
                item = stream.next() => item.map(|item| {
                    (item.map_err(BackendError::into_status), Some((stream, shutdown)))
                }),
            }
        })
        .boxed()
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn send_manifest(
        &self,
        request: Request<SendManifestRequest>,
    ) -> Result<Response<SendManifestResponse>, Status> {
        self.signed_call(
            methods::SEND_MANIFEST,
            request,
            |backend, message| async move {
                backend
                    .accept_manifest(message.lease_id, message.manifest_json)
                    .await
                    .map(|()| SendManifestResponse {})
            },
        )
        .await
    }

    async fn send_order_manifest(
        &self,
        request: Request<SendOrderManifestRequest>,
    ) -> Result<Response<SendManifestResponse>, Status> {
        self.signed_call(
            methods::SEND_ORDER_MANIFEST,
            request,
            |backend, message| async move {
                let bid = if message.auto_accept {
                    PreLeaseBid::AutoAccept
                } else {
                    PreLeaseBid::Bid(message.bid_id)
                };
                backend
                    .accept_order_manifest(message.order_id, bid, message.manifest_json)
                    .await
                    .map(|()| SendManifestResponse {})
            },
        )
        .await
    }

    async fn get_status(
        &self,
        request: Request<LeaseStatusRequest>,
    ) -> Result<Response<LeaseStatus>, Status> {
        self.signed_call(
            methods::GET_STATUS,
            request,
            |backend, message| async move { backend.lease_status(message.lease_id).await },
        )
        .await
    }

    type StreamLogsStream = GatewayStream<LogLine>;

    async fn stream_logs(
        &self,
        request: Request<StreamLogsRequest>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        self.signed_call(
            methods::STREAM_LOGS,
            request,
            |backend, message| async move {
                let query = LogQuery {
                    service: Some(message.service).filter(|service| !service.is_empty()),
                    follow: message.follow,
                    tail: Some(message.tail).filter(|tail| *tail > 0),
                };
                let stream = backend.logs(message.lease_id, query).await?;
                Ok(self.gateway_stream(stream))
            },
        )
        .await
    }

    type StreamEventsStream = GatewayStream<LeaseEvent>;

    async fn stream_events(
        &self,
        request: Request<StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        self.signed_call(
            methods::STREAM_EVENTS,
            request,
            |backend, message| async move {
                let stream = backend.events(message.lease_id).await?;
                Ok(self.gateway_stream(stream))
            },
        )
        .await
    }

    type ShellStream = GatewayStream<ShellOutput>;

    async fn shell(
        &self,
        request: Request<Streaming<ShellInput>>,
    ) -> Result<Response<Self::ShellStream>, Status> {
        self.open_shell(request).await
    }
}

/// The public `Provider` service: no signature, nothing lease-specific.
pub(crate) struct ProviderService {
    backend: Arc<dyn GatewayBackend>,
}

impl ProviderService {
    pub(crate) fn new(backend: Arc<dyn GatewayBackend>) -> Self {
        Self { backend }
    }
}

#[tonic::async_trait]
impl Provider for ProviderService {
    async fn get_status(
        &self,
        _request: Request<ProviderStatusRequest>,
    ) -> Result<Response<ProviderStatus>, Status> {
        let outcome = self
            .backend
            .provider_status()
            .await
            .map_err(BackendError::into_status);
        log_outcome(leasehold_proto::PROVIDER_GET_STATUS, None, None, &outcome);
        outcome.map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_errors_map_to_caller_facing_codes() {
        let code = |error| auth_status(error).code();
        assert_eq!(
            code(AuthError::Missing(auth::metadata::SIGNATURE)),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(AuthError::Malformed {
                key: auth::metadata::TIMESTAMP,
                reason: "x".into()
            }),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(AuthError::ClockSkew {
                timestamp: 0,
                now: 1000,
                skew: 1000
            }),
            tonic::Code::Unauthenticated
        );
        let status = auth_status(AuthError::Missing(auth::metadata::ADDRESS));
        assert!(status.message().contains(auth::metadata::ADDRESS));
    }
}
