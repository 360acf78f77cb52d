//! Talking to a provider's gateway as the lease's tenant: over TLS pinned to the
//! certificate fingerprint in the provider's on-chain registration, every call signed.

use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use leasehold_contracts::ProviderInfo;
use leasehold_proto::client::SignedLeaseClient;
use leasehold_proto::gateway::LeaseStatus;
use leasehold_proto::tls::GatewayPin;

use crate::chain::Chain;
use crate::error::{CliError, CliResult, ExitKind};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one unary gateway call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// A provider's gateway as its on-chain registration describes it: where it is, and
/// the certificate it must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    pub endpoint: String,
    pub pin: GatewayPin,
}

impl Gateway {
    pub fn of(provider: &ProviderInfo) -> Self {
        Self {
            endpoint: provider.endpoint.clone(),
            pin: GatewayPin {
                provider: Some(provider.address),
                cert_sha256: provider.gateway_cert_sha256,
            },
        }
    }
}

/// The gateway of the lease's provider, read from the chain.
pub async fn gateway_of(chain: &Chain, lease_id: u64) -> CliResult<Gateway> {
    let lease = chain.client.lease(lease_id).await?;
    if lease.provider.is_zero() {
        return Err(CliError::failed(format!(
            "lease {lease_id} does not exist (no bid accepted for order {lease_id} yet?)"
        )));
    }
    Ok(Gateway::of(
        &chain.client.provider_info(lease.provider).await?,
    ))
}

/// Connects to `gateway`; a certificate other than the registered one is refused
/// before anything is sent.
pub async fn connect(gateway: &Gateway, signer: PrivateKeySigner) -> CliResult<SignedLeaseClient> {
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        SignedLeaseClient::connect(&gateway.endpoint, gateway.pin, signer, CONNECT_TIMEOUT),
    )
    .await
    {
        Ok(client) => Ok(client?),
        Err(_) => Err(unreachable(&gateway.endpoint)),
    }
}

fn unreachable(endpoint: &str) -> CliError {
    CliError::msg(
        ExitKind::Network,
        format!(
            "provider gateway {endpoint} did not answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ),
    )
}

pub async fn status(client: &mut SignedLeaseClient, lease_id: u64) -> CliResult<LeaseStatus> {
    match tokio::time::timeout(CALL_TIMEOUT, client.status(lease_id)).await {
        Ok(status) => Ok(status?),
        Err(_) => Err(CliError::msg(
            ExitKind::Network,
            format!(
                "GetStatus for lease {lease_id}: no answer within {}s",
                CALL_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Every service has all its replicas ready and the lease is running.
pub fn is_running(status: &LeaseStatus) -> bool {
    status.state.eq_ignore_ascii_case("running")
        && !status.services.is_empty()
        && status.services.iter().all(|service| {
            service.total_replicas > 0 && service.ready_replicas >= service.total_replicas
        })
}

/// The lease has failed for good.
pub fn is_over(status: &LeaseStatus) -> bool {
    ["closing", "closed", "failed"]
        .iter()
        .any(|state| status.state.eq_ignore_ascii_case(state))
}

/// JSON view of a gateway status (the generated type is not serde).
pub fn status_json(status: &LeaseStatus) -> serde_json::Value {
    serde_json::json!({
        "lease_id": status.lease_id,
        "state": status.state,
        "revision": status.revision,
        "message": status.message,
        "services": status.services.iter().map(|service| serde_json::json!({
            "name": service.name,
            "ready_replicas": service.ready_replicas,
            "total_replicas": service.total_replicas,
            "uris": service.uris,
            "states": service.states,
        })).collect::<Vec<_>>(),
    })
}

/// Every URI of every service.
pub fn uris(status: &LeaseStatus) -> Vec<String> {
    status
        .services
        .iter()
        .flat_map(|service| service.uris.iter().cloned())
        .collect()
}
