//! Gateway clients: [`SignedLeaseClient`] for a lease's tenant (every call
//! signed as described in [`crate::auth`]), [`ProviderClient`] for the
//! public provider status, and [`RelayClient`], which forwards calls that someone
//! else encoded and signed (the market server's relay for browsers).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

use crate::auth::{self, AuthError, methods};
use crate::gateway::lease_client::LeaseClient;
use crate::gateway::provider_client::ProviderClient as RawProviderClient;
use crate::tls::{self, GatewayPin};
mod relay;
mod shell;

pub use self::relay::{PassThroughCodec, RawEncoder, RelayClient};
pub use self::shell::{MAX_SHELL_CHUNK_BYTES, MAX_SHELL_COMMAND_BYTES};

use crate::gateway::{
    LeaseEvent, LeaseStatus, LeaseStatusRequest, LogLine, ProviderStatus, ProviderStatusRequest,
    SendManifestRequest, SendOrderManifestRequest, StreamEventsRequest, StreamLogsRequest,
};

/// How long [`SignedLeaseClient::connect`] and [`ProviderClient::connect`] wait
/// for the TCP/TLS/HTTP2 connection when the caller has no opinion.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("gateway endpoint `{endpoint}` is not a valid URI: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error(
        "refusing the gateway of provider {provider} at {endpoint}: it presented a certificate \
         with SHA-256 {presented}, but the provider's on-chain registration pins {expected} \
         (a provider that rotated its certificate must run `provider update`; otherwise this \
         is not the provider's gateway)"
    )]
    CertificateMismatch {
        provider: String,
        endpoint: String,
        expected: B256,
        presented: B256,
    },
    #[error("cannot connect to the gateway at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot sign the {method} call: {source}")]
    Signing {
        method: &'static str,
        #[source]
        source: AuthError,
    },
    #[error("{method} refused by the provider: {code:?}: {message}", code = status.code(), message = status.message())]
    Rpc {
        method: &'static str,
        status: Box<Status>,
    },
}

impl ClientError {
    /// The provider's gRPC status, when the call reached the provider.
    pub fn status(&self) -> Option<&Status> {
        match self {
            ClientError::Rpc { status, .. } => Some(status),
            _ => None,
        }
    }

    fn rpc(method: &'static str) -> impl FnOnce(Status) -> Self {
        move |status| ClientError::Rpc {
            method,
            status: Box::new(status),
        }
    }
}

/// Seconds since the unix epoch by the local clock (0 if the clock is before
/// 1970, which the provider will then refuse as skewed).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Wraps `message` in a request carrying the credentials of `signer` for
/// `method` on `lease_id` at `timestamp` with a fresh nonce, signed over the
/// message's protobuf encoding: exactly the bytes the provider re-encodes and
/// checks.
pub fn signed_request<M: prost::Message>(
    signer: &PrivateKeySigner,
    method: &'static str,
    lease_id: u64,
    timestamp: u64,
    message: M,
) -> Result<Request<M>, AuthError> {
    let credentials = auth::sign(
        signer,
        method,
        lease_id,
        timestamp,
        auth::new_nonce(),
        &message.encode_to_vec(),
    )?;
    let mut request = Request::new(message);
    credentials.insert_into(request.metadata_mut());
    Ok(request)
}

/// A tenant's client for the `Lease` service: every call is signed with the
/// tenant's key.
#[derive(Debug, Clone)]
pub struct SignedLeaseClient {
    inner: LeaseClient<Channel>,
    signer: PrivateKeySigner,
}

impl SignedLeaseClient {
    /// Connects to `address` (`https://host:port` or `host:port`) over TLS, accepting
    /// only the certificate `pin` names ([`tls::connect`]).
    pub async fn connect(
        address: &str,
        pin: GatewayPin,
        signer: PrivateKeySigner,
        connect_timeout: Duration,
    ) -> Result<Self, ClientError> {
        Ok(Self::new(
            tls::connect(address, pin, connect_timeout).await?,
            signer,
        ))
    }

    pub fn new(channel: Channel, signer: PrivateKeySigner) -> Self {
        Self {
            // Manifests may be large; the provider enforces its own limit.
            inner: LeaseClient::new(channel).max_encoding_message_size(usize::MAX),
            signer,
        }
    }

    /// The tenant address this client signs as.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    fn sign<M: prost::Message>(
        &self,
        method: &'static str,
        lease_id: u64,
        message: M,
    ) -> Result<Request<M>, ClientError> {
        signed_request(&self.signer, method, lease_id, unix_now(), message)
            .map_err(|source| ClientError::Signing { method, source })
    }

    /// Delivers the canonical manifest JSON of the lease's deployment.
    pub async fn send_manifest(
        &mut self,
        lease_id: u64,
        manifest_json: Vec<u8>,
    ) -> Result<(), ClientError> {
        let method = methods::SEND_MANIFEST;
        let request = self.sign(
            method,
            lease_id,
            SendManifestRequest {
                lease_id,
                manifest_json,
            },
        )?;
        self.inner
            .send_manifest(request)
            .await
            .map_err(ClientError::rpc(method))?;
        Ok(())
    }

    /// Delivers the manifest for `order_id` to the provider whose bid `bid_id` the tenant is
    /// accepting, before the lease exists, so that the provider can start the workload while
    /// the acceptance is mined. A refusal is no failure of the deployment: the manifest then
    /// goes with [`Self::send_manifest`] once the lease exists.
    pub async fn send_order_manifest(
        &mut self,
        order_id: u64,
        bid_id: u64,
        manifest_json: Vec<u8>,
    ) -> Result<(), ClientError> {
        self.order_manifest(SendOrderManifestRequest {
            order_id,
            bid_id,
            manifest_json,
            auto_accept: false,
        })
        .await
    }

    /// Delivers the manifest of an order whose auto-accept rule covers this provider, before
    /// its bid (`SendOrderManifestRequest.auto_accept`): the provider starts the workload under
    /// its reservation while its `placeBid` (which the rule makes the lease) is mined. A
    /// refusal before the provider has reserved is expected: send it again.
    pub async fn send_auto_accept_manifest(
        &mut self,
        order_id: u64,
        manifest_json: Vec<u8>,
    ) -> Result<(), ClientError> {
        self.order_manifest(SendOrderManifestRequest {
            order_id,
            bid_id: 0,
            manifest_json,
            auto_accept: true,
        })
        .await
    }

    async fn order_manifest(
        &mut self,
        message: SendOrderManifestRequest,
    ) -> Result<(), ClientError> {
        let method = methods::SEND_ORDER_MANIFEST;
        let request = self.sign(method, message.order_id, message)?;
        self.inner
            .send_order_manifest(request)
            .await
            .map_err(ClientError::rpc(method))?;
        Ok(())
    }

    pub async fn status(&mut self, lease_id: u64) -> Result<LeaseStatus, ClientError> {
        let method = methods::GET_STATUS;
        let request = self.sign(method, lease_id, LeaseStatusRequest { lease_id })?;
        let response = self
            .inner
            .get_status(request)
            .await
            .map_err(ClientError::rpc(method))?;
        Ok(response.into_inner())
    }

    /// Log lines of `service` (`None`: every service); `tail` 0 means all
    /// retained lines; with `follow` the stream stays open for new lines.
    pub async fn logs(
        &mut self,
        lease_id: u64,
        service: Option<&str>,
        follow: bool,
        tail: u32,
    ) -> Result<Streaming<LogLine>, ClientError> {
        let method = methods::STREAM_LOGS;
        let message = StreamLogsRequest {
            lease_id,
            service: service.unwrap_or_default().to_owned(),
            follow,
            tail,
        };
        let request = self.sign(method, lease_id, message)?;
        let response = self
            .inner
            .stream_logs(request)
            .await
            .map_err(ClientError::rpc(method))?;
        Ok(response.into_inner())
    }

    pub async fn events(&mut self, lease_id: u64) -> Result<Streaming<LeaseEvent>, ClientError> {
        let method = methods::STREAM_EVENTS;
        let request = self.sign(method, lease_id, StreamEventsRequest { lease_id })?;
        let response = self
            .inner
            .stream_events(request)
            .await
            .map_err(ClientError::rpc(method))?;
        Ok(response.into_inner())
    }
}

/// A client for the public `Provider` service.
#[derive(Debug, Clone)]
pub struct ProviderClient {
    inner: RawProviderClient<Channel>,
}

impl ProviderClient {
    /// Connects as [`SignedLeaseClient::connect`] does.
    pub async fn connect(
        address: &str,
        pin: GatewayPin,
        connect_timeout: Duration,
    ) -> Result<Self, ClientError> {
        Ok(Self::new(
            tls::connect(address, pin, connect_timeout).await?,
        ))
    }

    pub fn new(channel: Channel) -> Self {
        Self {
            inner: RawProviderClient::new(channel),
        }
    }

    pub async fn status(&mut self) -> Result<ProviderStatus, ClientError> {
        let response = self
            .inner
            .get_status(ProviderStatusRequest {})
            .await
            .map_err(ClientError::rpc(crate::PROVIDER_GET_STATUS))?;
        Ok(response.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn identical_calls_in_one_second_get_distinct_replay_keys() {
        let signer = PrivateKeySigner::random();
        let keys: std::collections::HashSet<_> = (0..3)
            .map(|_| {
                let request = signed_request(
                    &signer,
                    methods::GET_STATUS,
                    1,
                    NOW,
                    LeaseStatusRequest { lease_id: 1 },
                )
                .unwrap();
                let credentials = auth::Credentials::from_metadata(request.metadata()).unwrap();
                assert_eq!(credentials.timestamp, NOW);
                let body = prost::Message::encode_to_vec(request.get_ref());
                credentials
                    .replay_key(methods::GET_STATUS, 1, &body)
                    .unwrap()
            })
            .collect();
        assert_eq!(keys.len(), 3);
    }

    #[test]
    fn signed_request_verifies_over_the_encoded_message() {
        // anvil's second development key: public, for tests only.
        let signer: PrivateKeySigner =
            "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
                .parse()
                .unwrap();
        let message = LeaseStatusRequest { lease_id: 9 };
        let body = prost::Message::encode_to_vec(&message);
        let request = signed_request(&signer, methods::GET_STATUS, 9, NOW, message).unwrap();
        let credentials = auth::Credentials::from_metadata(request.metadata()).unwrap();
        let who = auth::verify(&credentials, methods::GET_STATUS, 9, &body, NOW).unwrap();
        assert_eq!(who, signer.address());
    }
}
