//! The tenant's view of the market: a manifest group as an on-chain order with the tenant's
//! price overrides, and what the chain says about matching providers now. Names for the
//! chain's keys and the chain data in the scheduler's terms are the preflight crate's (shared
//! with the market server); they are re-exported here for the commands.

use alloy::primitives::{Address, B256, U256};
use leasehold_contracts::{OrderSpec, ProviderInfo, ProviderStatus};
use leasehold_manifests::Group;
use leasehold_scheduler::ranking;

pub use leasehold_preflight::{
    NamedKey, Names, Reason, explain, hypothetical_bid, order_for_bids, scheduler_bid,
    scheduler_order,
};

use crate::cli::MaxPrice;
use crate::error::{CliError, CliResult};

/// keccak256 of a `key=value` attribute or a canonical GPU model string, as stored on chain.
pub fn chain_key(text: &str) -> B256 {
    leasehold_contracts::chain_key(text)
}

pub use leasehold_contracts::GroupOrder;

/// The order a group becomes (the contracts crate's encoding, which the market API's
/// `sdl/validate` shows the console too).
pub fn group_order(group: &Group) -> CliResult<GroupOrder> {
    leasehold_contracts::group_order(group).map_err(|e| CliError::failed(e.to_string()))
}

/// Applies `--max-price` overrides: a group's own override wins over one for every group.
/// An override naming a group the SDL does not have is a usage error.
pub fn override_max_prices(orders: &mut [GroupOrder], overrides: &[MaxPrice]) -> CliResult<()> {
    for named in overrides.iter().filter_map(|o| o.group.as_deref()) {
        if !orders.iter().any(|order| order.group == named) {
            let groups: Vec<&str> = orders.iter().map(|order| order.group.as_str()).collect();
            return Err(CliError::usage(format!(
                "--max-price names group `{named}`, which the SDL does not have; its groups: {}",
                groups.join(", ")
            )));
        }
    }
    for order in orders.iter_mut() {
        let own = overrides
            .iter()
            .rev()
            .find(|o| o.group.as_deref() == Some(order.group.as_str()));
        let every = overrides.iter().rev().find(|o| o.group.is_none());
        if let Some(chosen) = own.or(every) {
            order.max_price_per_hour = chosen.per_hour;
        }
    }
    Ok(())
}

/// Why the chain would not match `provider` now, beyond its bid (see
/// `ranking::Bid::provider_unmatchable`): not active, stake below the minimum, or the order's
/// `signedBy` auditors no longer attesting it (`missing_audit`, from
/// `MarketplaceClient::missing_audit`).
pub fn provider_unmatchable(
    provider: &ProviderInfo,
    minimum_stake: U256,
    missing_audit: Option<Address>,
) -> Option<String> {
    if provider.status != ProviderStatus::Active {
        return Some(format!("provider is {:?}, not active", provider.status).to_lowercase());
    }
    if provider.stake < minimum_stake {
        return Some(format!(
            "stake {} is below the minimum {minimum_stake}",
            provider.stake
        ));
    }
    missing_audit.map(|auditor| {
        if auditor == Address::ZERO {
            "no signedBy anyOf auditor attests the provider".to_owned()
        } else {
            format!("signedBy auditor {auditor} does not attest the provider")
        }
    })
}

/// For each provider, why the chain would not match it on an order with `spec` (see
/// [`provider_unmatchable`]); one audit query per provider on audited orders only.
pub async fn unmatchable_providers(
    client: &leasehold_contracts::MarketplaceClient,
    spec: &OrderSpec,
    providers: &[&ProviderInfo],
) -> CliResult<Vec<Option<String>>> {
    let minimum = client.minimum_stake().await?;
    let mut reasons = Vec::with_capacity(providers.len());
    for provider in providers {
        let missing = if is_audited(spec) {
            client
                .missing_audit(provider.address, &spec.requirements)
                .await?
        } else {
            None
        };
        reasons.push(provider_unmatchable(provider, minimum, missing));
    }
    Ok(reasons)
}

fn is_audited(spec: &OrderSpec) -> bool {
    let auditors = &spec.requirements.signed_by;
    !auditors.all_of.is_empty() || !auditors.any_of.is_empty()
}

/// What `settle` will do on an order with `spec`, call by call: the contract passes over at
/// most `SETTLE_SKIP_LIMIT` bids per call (one on audited orders) before it returns.
pub fn settle_plan(
    spec: &OrderSpec,
    order: &ranking::OrderSpec,
    bids: &[ranking::Bid],
) -> ranking::SettlePlan {
    let limit = if is_audited(spec) {
        1
    } else {
        leasehold_contracts::SETTLE_SKIP_LIMIT
    };
    ranking::settle_plan(order, bids, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTI: &str = include_str!("../../manifests/examples/multi-service.yaml");

    /// The example's group posted as two groups, `eu` and `us`.
    fn two_orders() -> Vec<GroupOrder> {
        let sdl = leasehold_manifests::parse(MULTI).unwrap();
        let eu = group_order(&sdl.groups()[0]).unwrap();
        let us = GroupOrder {
            group: "us".to_owned(),
            ..eu.clone()
        };
        vec![eu, us]
    }

    fn max_price(group: Option<&str>, per_hour: u64) -> MaxPrice {
        MaxPrice {
            group: group.map(str::to_owned),
            per_hour: U256::from(per_hour),
        }
    }

    #[test]
    fn max_price_overrides_one_group_or_every_group() {
        let mut orders = two_orders();
        let sdl_prices: Vec<U256> = orders.iter().map(|o| o.max_price_per_hour).collect();
        let first = orders[0].group.clone();
        override_max_prices(&mut orders, &[max_price(Some(&first), 7)]).unwrap();
        assert_eq!(orders[0].max_price_per_hour, U256::from(7u64));
        assert_eq!(
            orders[1].max_price_per_hour, sdl_prices[1],
            "others keep the SDL's"
        );
        override_max_prices(
            &mut orders,
            &[max_price(None, 9), max_price(Some(&first), 3)],
        )
        .unwrap();
        assert_eq!(orders[0].max_price_per_hour, U256::from(3u64));
        assert_eq!(orders[1].max_price_per_hour, U256::from(9u64));
        let error = override_max_prices(&mut orders, &[max_price(Some("nope"), 1)]).unwrap_err();
        assert!(format!("{:#}", error.error).contains("nope"));
    }
}
