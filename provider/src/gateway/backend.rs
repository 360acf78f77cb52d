//! The boundary between the gateway (transport, authentication) and the daemon
//! (chain, store, runtime): the daemon implements [`GatewayBackend`].

use alloy::primitives::{Address, B256};
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use leasehold_proto::gateway::{LeaseEvent, LeaseStatus, LogLine, ProviderStatus};
use tonic::Status;

use crate::runtime::{ExecRequest, ExecSession};
use crate::speculative::PreLeaseBid;

/// A stream the backend hands to the gateway; it ends when the source ends.
pub type BackendStream<T> = BoxStream<'static, Result<T, BackendError>>;

/// Which log lines a tenant asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// `None`: every service of the lease.
    pub service: Option<String>,
    /// Keep the stream open for new lines.
    pub follow: bool,
    /// `None`: every retained line; otherwise the last `n` per replica.
    pub tail: Option<u32>,
}

/// What the gateway needs from the daemon. Every lease method is called only
/// after the caller has been authenticated as the lease's tenant.
#[async_trait]
pub trait GatewayBackend: Send + Sync + 'static {
    /// The lease's tenant as recorded on chain; `None` when this provider does
    /// not know the lease.
    async fn lease_tenant(&self, lease_id: u64) -> Result<Option<Address>, BackendError>;

    /// Records a signature (by [`leasehold_proto::auth::Credentials::replay_key`])
    /// signed at `timestamp`; `true` when it had not been seen before. Entries
    /// older than the clock-skew window may be forgotten, since the gateway
    /// refuses such timestamps anyway.
    async fn remember_signature(
        &self,
        replay_key: String,
        timestamp: u64,
    ) -> Result<bool, BackendError>;

    /// Checks the manifest against the order's hash and starts the deployment.
    async fn accept_manifest(
        &self,
        lease_id: u64,
        manifest_json: Vec<u8>,
    ) -> Result<(), BackendError>;

    /// The order's tenant as recorded on chain; `None` when the order does not exist. A
    /// daemon that takes no pre-lease manifests keeps this default.
    async fn order_tenant(&self, order_id: u64) -> Result<Option<Address>, BackendError> {
        let _ = order_id;
        Ok(None)
    }

    /// The pre-lease manifest (`SendOrderManifest`), called once the caller is proven to be
    /// the order's tenant: checked as [`Self::accept_manifest`] checks a lease's, accepted
    /// only while the order is open and `bid` is this provider's live bid (or, for an order
    /// whose auto-accept rule covers this provider, while it holds a reservation for its
    /// bid), and started under that bid's reservation. A daemon that offers no pre-lease start keeps this
    /// default, and the tenant sends the manifest again once the lease exists.
    async fn accept_order_manifest(
        &self,
        order_id: u64,
        bid: PreLeaseBid,
        manifest_json: Vec<u8>,
    ) -> Result<(), BackendError> {
        let _ = (order_id, bid, manifest_json);
        Err(BackendError::Unavailable {
            reason: "this provider starts deployments only once the lease exists".into(),
        })
    }

    async fn lease_status(&self, lease_id: u64) -> Result<LeaseStatus, BackendError>;

    async fn logs(
        &self,
        lease_id: u64,
        query: LogQuery,
    ) -> Result<BackendStream<LogLine>, BackendError>;

    async fn events(&self, lease_id: u64) -> Result<BackendStream<LeaseEvent>, BackendError>;

    async fn provider_status(&self) -> Result<ProviderStatus, BackendError>;

    /// Starts a command in one of the lease's running replicas (`tenant shell`); the
    /// session must end when the lease closes. A daemon that offers no shell keeps this
    /// default.
    async fn exec(
        &self,
        lease_id: u64,
        request: ExecRequest,
    ) -> Result<ExecSession<BackendError>, BackendError> {
        let _ = (lease_id, request);
        Err(BackendError::Unavailable {
            reason: "this provider does not offer shells".into(),
        })
    }
}

/// Why the backend refused or failed a call; every variant but `Internal` is
/// shown to the caller as is.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("lease {lease_id} is not known to this provider")]
    UnknownLease { lease_id: u64 },
    #[error("order {order_id} does not exist")]
    UnknownOrder { order_id: u64 },
    /// A pre-lease manifest this provider cannot start now (no live bid of its own, the order
    /// no longer open, another manifest already started): the post-lease path still works.
    #[error("order {order_id}: {reason}")]
    OrderNotStartable { order_id: u64, reason: String },
    #[error(
        "manifest hash mismatch: the order commits to {expected}, the manifest sent hashes to {got}"
    )]
    HashMismatch { expected: B256, got: B256 },
    #[error(
        "lease {lease_id} is {state}; a manifest is accepted only while it is AwaitingManifest"
    )]
    LeaseNotAwaitingManifest { lease_id: u64, state: String },
    #[error("invalid manifest: {reason}")]
    InvalidManifest { reason: String },
    #[error("lease {lease_id} has no service named `{service}`")]
    UnknownService { lease_id: u64, service: String },
    #[error("temporarily unavailable: {reason}")]
    Unavailable { reason: String },
    /// Something inside a known lease (a replica to run a command in) is not there.
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl BackendError {
    /// Wraps any daemon-side failure the caller cannot act on.
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        BackendError::Internal(error.into())
    }

    pub(crate) fn into_status(self) -> Status {
        let message = self.to_string();
        match self {
            BackendError::UnknownLease { .. }
            | BackendError::UnknownOrder { .. }
            | BackendError::UnknownService { .. }
            | BackendError::NotFound { .. } => Status::not_found(message),
            BackendError::HashMismatch { .. }
            | BackendError::LeaseNotAwaitingManifest { .. }
            | BackendError::OrderNotStartable { .. } => Status::failed_precondition(message),
            BackendError::InvalidManifest { .. } => Status::invalid_argument(message),
            BackendError::Unavailable { .. } => Status::unavailable(message),
            BackendError::Internal(_) => {
                // The detail may name paths or database state: logged, not sent.
                tracing::error!(error = %message, "gateway backend failed");
                Status::internal("internal provider error; the provider's logs have the details")
            }
        }
    }
}
