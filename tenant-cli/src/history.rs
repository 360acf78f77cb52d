//! What the chain's event history says about providers: the prices they bid (their price
//! lists are not on chain, their bids are) and how their leases ended (a track record for
//! `--select score`).

use std::collections::HashMap;

use alloy::primitives::{Address, U256};
use alloy::rpc::types::{Filter, Log};
use alloy::sol_types::SolEvent;
use leasehold_contracts::CloseReason;
use leasehold_contracts::bindings::Marketplace;
use leasehold_preflight::PlacedBid;
use leasehold_scheduler::ranking::Reputation;

use crate::chain::Chain;
use crate::error::CliResult;

async fn events<E: SolEvent>(chain: &Chain, call: &'static str) -> CliResult<Vec<E>> {
    let filter = Filter::new()
        .address(chain.deployment.marketplace)
        .event_signature(E::SIGNATURE_HASH);
    // In ranges the endpoint accepts; each call is bounded by the transport's RPC timeout.
    let logs: Vec<Log> = chain.client.logs_since_start(call, filter).await?;
    Ok(logs
        .iter()
        .filter_map(|log| log.log_decode::<E>().ok())
        .map(|log| log.inner.data)
        .collect())
}

/// The lowest price per replica-hour each provider bid recently (the preflight crate's rule),
/// reading the replicas of only the orders its recent bids were placed on.
pub async fn recent_rates(chain: &Chain) -> CliResult<HashMap<Address, U256>> {
    let bids = events::<Marketplace::BidPlaced>(chain, "eth_getLogs BidPlaced").await?;
    let mut replicas_of: HashMap<U256, u16> = HashMap::new();
    let mut placed = Vec::new();
    for bid in leasehold_preflight::recent(&bids) {
        let replicas = match replicas_of.get(&bid.orderId) {
            Some(replicas) => *replicas,
            None => {
                let Ok(order_id) = u64::try_from(bid.orderId) else {
                    continue;
                };
                let replicas = chain.client.order(order_id).await?.replicas;
                replicas_of.insert(bid.orderId, replicas);
                replicas
            }
        };
        placed.push(PlacedBid {
            provider: bid.provider,
            price_per_hour: bid.pricePerHour,
            replicas,
        });
    }
    Ok(leasehold_preflight::recent_rates(&placed))
}

/// Leases a provider completed (closed at the tenant's request) or failed (closed by the
/// provider, as a failed workload, or never delivered: `DeliveryFailed`, the on-chain
/// `deliveriesFailed` count). Closures for the tenant's own reasons (insolvency, a manifest
/// never sent) do not count against the provider. A lease counts once.
pub async fn reputations(chain: &Chain) -> CliResult<HashMap<Address, Reputation>> {
    let created = events::<Marketplace::LeaseCreated>(chain, "eth_getLogs LeaseCreated").await?;
    let provider_of: HashMap<U256, Address> = created
        .iter()
        .map(|lease| (lease.leaseId, lease.provider))
        .collect();
    let undelivered =
        events::<Marketplace::DeliveryFailed>(chain, "eth_getLogs DeliveryFailed").await?;
    let mut reputations: HashMap<Address, Reputation> = HashMap::new();
    for failure in &undelivered {
        let entry = reputations.entry(failure.provider).or_default();
        entry.leases_failed = entry.leases_failed.saturating_add(1);
    }
    let undelivered: std::collections::HashSet<U256> =
        undelivered.iter().map(|failure| failure.leaseId).collect();
    let closed = events::<Marketplace::LeaseClosed>(chain, "eth_getLogs LeaseClosed").await?;
    for lease in closed
        .into_iter()
        .filter(|lease| !undelivered.contains(&lease.leaseId))
    {
        let Some(provider) = provider_of.get(&lease.leaseId) else {
            continue;
        };
        let entry = reputations.entry(*provider).or_default();
        if lease.reason == CloseReason::TenantRequest.code() {
            entry.leases_completed = entry.leases_completed.saturating_add(1);
        } else if lease.reason == CloseReason::ProviderRequest.code()
            || lease.reason == CloseReason::WorkloadFailed.code()
        {
            entry.leases_failed = entry.leases_failed.saturating_add(1);
        }
    }
    Ok(reputations)
}
