//! `POST /api/v1/preflight`: the preflight crate's report (the one `tenant preflight` prints)
//! for an SDL, from the chain the server follows. Providers and audit verdicts are read from
//! the chain at its head through the contracts client, as the tenant reads them: the index
//! lacks fields the eligibility rule needs (`ProviderInfo`'s unbonding end and locked bonds)
//! and lags by the confirmations, and `checkAudit` is a registry call anyway. Recent bid rates
//! and published names come from the index, which holds every bid and `KeyNamed` event.

use alloy::primitives::{Address, B256, U256};
use leasehold_contracts::{ClientError, KeyNames, MarketplaceClient};
use leasehold_manifests::Group;
use leasehold_preflight::{AuditVerdicts, Inputs, PlacedBid, Preflight, RECENT_BIDS};
use sqlx::{AnyPool, Row};

use crate::api::{ApiError, ApiState};

/// Reads the inputs and makes the report for `groups` (an SDL that validated).
pub async fn report(state: &ApiState, groups: &[Group]) -> Result<Preflight, ApiError> {
    // Read-only: no transaction is sent, so no sender.
    let client = MarketplaceClient::new(state.rpc.clone(), Address::ZERO, state.deployment);
    // Unbonding ones too: the report lists them as inactive.
    let providers = client.provider_infos().await.map_err(chain_error)?;
    let pool = state.store.pool();
    let rates = leasehold_preflight::recent_rates(&recent_bids(pool).await?);
    let published = published_names(pool).await?;
    let mut audits = AuditVerdicts::default();
    let audited = leasehold_preflight::audited_groups(groups)
        .map_err(|error| ApiError::bad("body", error.to_string()))?;
    for (group, requirements) in audited {
        for provider in &providers {
            let missing = client
                .missing_audit(provider.address, &requirements)
                .await
                .map_err(chain_error)?;
            audits.record(&group, provider.address, missing);
        }
    }
    leasehold_preflight::preflight(&Inputs {
        groups,
        providers: &providers,
        rates: &rates,
        published: &published,
        audits: &audits,
    })
    .map_err(|error| ApiError::bad("body", error.to_string()))
}

fn chain_error(error: ClientError) -> ApiError {
    tracing::warn!(%error, "preflight chain read failed");
    ApiError::chain(format!("reading the chain failed: {error}"))
}

/// The newest [`RECENT_BIDS`] indexed bids, oldest first, with their orders' replicas. The
/// index keeps no log position for bids: within one block, bids are ordered by order and bid id.
async fn recent_bids(pool: &AnyPool) -> Result<Vec<PlacedBid>, ApiError> {
    let limit = i64::try_from(RECENT_BIDS).unwrap_or(i64::MAX);
    let rows = sqlx::query(
        "SELECT b.provider, b.price_per_hour, o.replicas FROM bids b \
         JOIN orders o ON o.id = b.order_id \
         ORDER BY b.placed_block DESC, b.order_id DESC, b.bid_id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut bids = Vec::with_capacity(rows.len());
    for row in rows.iter().rev() {
        let provider: String = row.try_get("provider")?;
        let price: String = row.try_get("price_per_hour")?;
        let replicas: i64 = row.try_get("replicas")?;
        bids.push(PlacedBid {
            provider: provider
                .parse()
                .map_err(|_| corrupt("bids.provider", &provider))?,
            price_per_hour: price
                .parse::<U256>()
                .map_err(|_| corrupt("bids.price_per_hour", &price))?,
            // The contract stores replicas as a uint16.
            replicas: u16::try_from(replicas)
                .map_err(|_| corrupt("orders.replicas", &replicas.to_string()))?,
        });
    }
    Ok(bids)
}

/// The names published on chain, each checked against its key again.
async fn published_names(pool: &AnyPool) -> Result<KeyNames, ApiError> {
    let rows = sqlx::query("SELECT name_key, name FROM names")
        .fetch_all(pool)
        .await?;
    let mut names = KeyNames::new();
    for row in &rows {
        let key: String = row.try_get("name_key")?;
        let name: String = row.try_get("name")?;
        let key: B256 = key.parse().map_err(|_| corrupt("names.name_key", &key))?;
        names.insert_announced(key, &name);
    }
    Ok(names)
}

fn corrupt(column: &str, value: &str) -> ApiError {
    ApiError::from(sqlx::Error::Decode(
        format!("{column} `{value}` is not what the indexer writes").into(),
    ))
}
