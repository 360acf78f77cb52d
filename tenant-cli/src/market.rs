//! The tenant's view of the market: a manifest group as an on-chain order, names for the
//! keccak256 keys the chain stores, and chain data in the scheduler's terms so its
//! eligibility and ranking rules (the ones `settle` mirrors) decide, not a copy of them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use alloy::primitives::{Address, B256, U256};
use leasehold_contracts::{BidInfo, OrderSpec, ProviderInfo, ProviderStatus};
use leasehold_manifests::Group;
use leasehold_scheduler::ranking::{self, Ineligible, ProviderRoom};
use leasehold_scheduler::{GpuModelKey, ModelPattern};

use crate::cli::MaxPrice;
use crate::error::{CliError, CliResult};

/// keccak256 of a `key=value` attribute or a canonical GPU model string, as stored on chain.
pub fn chain_key(text: &str) -> B256 {
    leasehold_contracts::chain_key(text)
}

/// The order a group becomes: its totals (memory and storage rounded up to MiB), its
/// required attributes and its allowed GPU models, plus the maximum price per hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOrder {
    pub group: String,
    pub spec: OrderSpec,
    pub max_price_per_hour: U256,
    /// Denomination named in the SDL (informational: the deployment fixes the token).
    pub denom: String,
}

pub fn group_order(group: &Group) -> CliResult<GroupOrder> {
    let totals = group
        .totals()
        .map_err(|e| CliError::failed(format!("group `{}`: {e}", group.name)))?;
    let spec = leasehold_contracts::order_spec_for_group(group)
        .map_err(|e| CliError::failed(e.to_string()))?;
    Ok(GroupOrder {
        group: group.name.clone(),
        spec,
        max_price_per_hour: U256::from(totals.price.amount.floor_units()),
        denom: totals.price.denom,
    })
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

/// Human names for on-chain keys, learned from manifests (the chain stores only hashes).
#[derive(Debug, Clone, Default)]
pub struct Names {
    names: HashMap<B256, String>,
}

impl Names {
    /// Every attribute and GPU model string a set of groups mentions.
    pub fn from_groups(groups: &[Group]) -> Self {
        let mut names = Self::default();
        for group in groups {
            for attribute in &group.requirements.attributes {
                names.learn(&format!("{}={}", attribute.key, attribute.value));
            }
            for unit in &group.units {
                for model in &unit.resources.gpu.models {
                    names.learn(&model.to_string());
                }
            }
        }
        names
    }

    pub fn learn(&mut self, text: &str) {
        self.names.insert(chain_key(text), text.to_owned());
    }

    /// The name, or the short hex of the key.
    pub fn name(&self, key: &B256) -> String {
        self.names
            .get(key)
            .or_else(|| known_model_strings().get(key))
            .cloned()
            .unwrap_or_else(|| crate::output::short_hex(&key.to_string()))
    }
}

/// The model strings behind on-chain keys: every known concrete model
/// (`leasehold_manifests::known_models`) and each pattern it matches, by keccak256. Known keys
/// go to the scheduler as their real strings, so its pattern rule (the contract's; vectors in
/// `marketplace-contracts/test/vectors/gpu_patterns.json`) decides which registered models an
/// order's patterns accept.
fn known_model_strings() -> &'static HashMap<B256, String> {
    static KNOWN: std::sync::OnceLock<HashMap<B256, String>> = std::sync::OnceLock::new();
    KNOWN.get_or_init(|| {
        leasehold_manifests::known_models()
            .iter()
            .flat_map(|model| model.patterns_matched())
            .map(|pattern| {
                let text = pattern.to_string();
                (chain_key(&text), text)
            })
            .collect()
    })
}

/// An unknown key stands in for its name inside the scheduler as `chain/<key>/0Gi/key`, which
/// only the same key matches (a model key must look like `vendor/model/ram/interface`).
fn stand_in(key: &B256) -> String {
    format!("chain/{key}/0Gi/key")
}

fn model_key(key: &B256) -> Option<GpuModelKey> {
    known_model_strings()
        .get(key)
        .and_then(|text| GpuModelKey::parse(text).ok())
        .or_else(|| GpuModelKey::parse(&stand_in(key)).ok())
}

fn model_pattern(key: &B256) -> Option<ModelPattern> {
    known_model_strings()
        .get(key)
        .and_then(|text| ModelPattern::parse(text).ok())
        .or_else(|| ModelPattern::parse(&stand_in(key)).ok())
}

/// Recovers the key from a scheduler-side model name produced by [`model_key`].
fn key_of_model_name(name: &str) -> Option<B256> {
    match name.strip_prefix("chain/") {
        Some(rest) => rest.split('/').next()?.parse().ok(),
        None => Some(chain_key(name)),
    }
}

/// The order in the scheduler's terms.
pub fn scheduler_order(spec: &OrderSpec, max_price_per_hour: U256) -> ranking::OrderSpec {
    ranking::OrderSpec {
        max_price_per_hour: u128::try_from(max_price_per_hour).unwrap_or(u128::MAX),
        cpu_milli: spec.resources.cpu_milli,
        memory_mib: spec.resources.memory_mib,
        storage_mib: spec.resources.storage_mib,
        gpu_units: u64::from(spec.gpu_count),
        allowed_gpu_models: spec
            .requirements
            .allowed_gpu_models
            .iter()
            .filter_map(model_pattern)
            .collect(),
        required_attributes: spec
            .requirements
            .required_attributes
            .iter()
            .map(ToString::to_string)
            .collect(),
    }
}

/// What a provider has free on chain (capacity minus allocated), per GPU model key.
pub fn room(provider: &ProviderInfo) -> ProviderRoom {
    let free = |capacity: u64, allocated: u64| capacity.saturating_sub(allocated);
    ProviderRoom {
        cpu_milli: free(provider.capacity.cpu_milli, provider.allocated.cpu_milli),
        memory_mib: free(provider.capacity.memory_mib, provider.allocated.memory_mib),
        storage_mib: free(
            provider.capacity.storage_mib,
            provider.allocated.storage_mib,
        ),
        gpus: provider
            .gpus
            .iter()
            .filter_map(|gpu| {
                let free = u64::from(gpu.capacity.saturating_sub(gpu.allocated));
                Some((model_key(&gpu.model_key)?, free))
            })
            .collect::<BTreeMap<_, _>>(),
    }
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

/// A bid in the scheduler's terms, with the provider's track record and why the chain would
/// not match its provider (if so).
pub fn scheduler_bid(
    bid: &BidInfo,
    provider: &ProviderInfo,
    reputation: ranking::Reputation,
    unmatchable: Option<String>,
) -> ranking::Bid {
    ranking::Bid {
        bid_index: bid.bid_id,
        provider: provider.address.to_string(),
        price_per_hour: u128::try_from(bid.price_per_hour).unwrap_or(u128::MAX),
        gpu_model: (bid.gpu_model != B256::ZERO)
            .then(|| model_key(&bid.gpu_model))
            .flatten(),
        attributes: attribute_set(provider),
        reputation,
        room: room(provider),
        withdrawn: bid.withdrawn,
        provider_unmatchable: unmatchable,
    }
}

fn attribute_set(provider: &ProviderInfo) -> BTreeSet<String> {
    provider
        .attributes
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// The bid a provider would place on `spec` at `price`: naming the allowed model it has the
/// most of free (or, if it has none, its first model, so the reason says "not allowed").
pub fn hypothetical_bid(spec: &OrderSpec, provider: &ProviderInfo, price: u128) -> ranking::Bid {
    let allowed = &spec.requirements.allowed_gpu_models;
    let gpu = if spec.gpu_count == 0 {
        None
    } else {
        let allowed_patterns: Vec<ModelPattern> =
            allowed.iter().filter_map(model_pattern).collect();
        provider
            .gpus
            .iter()
            .filter(|gpu| {
                allowed.is_empty()
                    || model_key(&gpu.model_key).is_some_and(|model| {
                        allowed_patterns
                            .iter()
                            .any(|pattern| pattern.matches(&model))
                    })
            })
            .max_by_key(|gpu| gpu.capacity.saturating_sub(gpu.allocated))
            .or_else(|| provider.gpus.first())
            .map(|gpu| gpu.model_key)
    };
    ranking::Bid {
        bid_index: 0,
        provider: provider.address.to_string(),
        price_per_hour: price,
        gpu_model: gpu.as_ref().and_then(model_key),
        attributes: attribute_set(provider),
        reputation: ranking::Reputation::default(),
        room: room(provider),
        withdrawn: false,
        provider_unmatchable: None,
    }
}

/// Why a provider cannot serve an order, in the user's words.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reason {
    /// `inactive`, `attributes`, `gpu_model`, `capacity`, `price` or `audit` (`signedBy`).
    pub kind: &'static str,
    pub message: String,
}

/// The scheduler's eligibility verdict, with keys turned back into names.
pub fn explain(
    order: &ranking::OrderSpec,
    bid: &ranking::Bid,
    provider: &ProviderInfo,
    names: &Names,
) -> Option<Reason> {
    if provider.status != ProviderStatus::Active {
        return Some(Reason {
            kind: "inactive",
            message: format!("provider is {:?}, not active", provider.status).to_lowercase(),
        });
    }
    let error = ranking::eligibility(order, bid).err()?;
    let key_name = |text: &str| match text.parse::<B256>() {
        Ok(key) => names.name(&key),
        Err(_) => text.to_owned(),
    };
    let allowed = || {
        order
            .allowed_gpu_models
            .iter()
            .filter_map(|pattern| key_of_model_name(pattern.as_str()))
            .map(|key| names.name(&key))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(match error {
        Ineligible::Withdrawn => Reason {
            kind: "withdrawn",
            message: "bid withdrawn".to_owned(),
        },
        Ineligible::OverMaxPrice { price, max } => Reason {
            kind: "price",
            message: format!("price {price}/h is above the maximum {max}/h"),
        },
        Ineligible::MissingAttribute(key) => Reason {
            kind: "attributes",
            message: format!("lacks the required attribute {}", key_name(&key)),
        },
        Ineligible::GpuModelNotAllowed(model) => Reason {
            kind: "gpu_model",
            message: format!(
                "offers GPU model {}, but the order allows only {}",
                key_of_model_name(&model).map_or(model, |key| names.name(&key)),
                allowed()
            ),
        },
        Ineligible::NoGpuModel => Reason {
            kind: "gpu_model",
            message: "has no GPUs, but the order needs some".to_owned(),
        },
        Ineligible::NoRoom(what) => Reason {
            kind: "capacity",
            message: format!("not enough free capacity: {what}"),
        },
        Ineligible::ProviderUnmatchable(why) => Reason {
            kind: "provider",
            message: why,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDL: &str = include_str!("../../manifests/examples/gpu-inference.yaml");
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

    /// The one table of the GPU pattern rule (`marketplace-contracts/test/vectors/
    /// gpu_patterns.json`, which the contract's Foundry tests run through `placeBid`): the
    /// manifests key type, the scheduler's pattern, the bid proof the provider's bidder and the
    /// client build, and this CLI's chain-key mapping all accept exactly the listed set.
    #[test]
    fn every_layer_accepts_exactly_the_shared_vector_set() {
        let vectors: serde_json::Value = serde_json::from_str(include_str!(
            "../../marketplace-contracts/test/vectors/gpu_patterns.json"
        ))
        .unwrap();
        let cases = vectors["cases"].as_array().unwrap();
        assert!(cases.len() > 60);
        for case in cases {
            let pattern = case["pattern"].as_str().unwrap();
            let model: Vec<&str> = case["model"]
                .as_array()
                .unwrap()
                .iter()
                .map(|part| part.as_str().unwrap())
                .collect();
            let model = model.join("/");
            let expected = case["matches"].as_bool().unwrap();
            let what = format!("{pattern} vs {model}");

            let manifests_pattern: leasehold_manifests::GpuModelKey = pattern.parse().unwrap();
            let manifests_model: leasehold_manifests::GpuModelKey = model.parse().unwrap();
            assert_eq!(
                manifests_pattern.matches(&manifests_model),
                expected,
                "manifests: {what}"
            );
            assert_eq!(
                manifests_model
                    .patterns_matched()
                    .contains(&manifests_pattern),
                expected,
                "manifests patterns_matched: {what}"
            );

            let scheduler_pattern = ModelPattern::parse(pattern).unwrap();
            let scheduler_model = GpuModelKey::parse(&model).unwrap();
            assert_eq!(
                scheduler_pattern.matches(&scheduler_model),
                expected,
                "scheduler: {what}"
            );

            let proof = leasehold_contracts::gpu_bid(&model, &[chain_key(pattern)]).unwrap();
            assert_eq!(proof.is_some(), expected, "bid proof: {what}");

            // The tenant sees only keys on chain.
            let (Some(from_chain_pattern), Some(from_chain_model)) = (
                model_pattern(&chain_key(pattern)),
                model_key(&chain_key(&model)),
            ) else {
                panic!("keys not mapped: {what}");
            };
            if known_model_strings().contains_key(&chain_key(&model)) {
                assert_eq!(
                    from_chain_pattern.matches(&from_chain_model),
                    expected,
                    "tenant: {what}"
                );
            }
        }
    }

    #[test]
    fn gpu_group_becomes_an_order_with_hashed_lists() {
        let sdl = leasehold_manifests::parse(SDL).unwrap();
        let groups = sdl.groups();
        let order = group_order(&groups[0]).unwrap();
        assert!(order.spec.gpu_count > 0);
        assert_eq!(order.spec.requirements.allowed_gpu_models.len(), 2);
        assert!(
            order
                .spec
                .requirements
                .allowed_gpu_models
                .contains(&chain_key("nvidia/a100/80Gi/sxm"))
        );
        let names = Names::from_groups(&groups);
        assert_eq!(
            names.name(&chain_key("nvidia/a100/80Gi/sxm")),
            "nvidia/a100/80Gi/sxm"
        );
        let key = chain_key("nvidia/a100/80Gi/sxm");
        assert_eq!(
            key_of_model_name(model_key(&key).unwrap().as_str()),
            Some(key)
        );
    }
}
