//! Chain data in the scheduler's terms, so its eligibility and ranking rules (the ones
//! `settle` mirrors) decide, not a copy of them; and its verdicts back in the user's words.

use std::collections::{BTreeMap, BTreeSet};

use alloy::primitives::{B256, U256};
use leasehold_contracts::{BidInfo, OrderSpec, ProviderInfo, ProviderStatus};
use leasehold_scheduler::GpuModelPattern;
use leasehold_scheduler::ranking::{self, Ineligible, ProviderRoom};

use crate::names::{Names, is_stand_in, key_of};

/// The order in the scheduler's terms.
pub fn scheduler_order(
    spec: &OrderSpec,
    max_price_per_hour: U256,
    names: &Names,
) -> ranking::OrderSpec {
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
            .map(|key| names.gpu_pattern(key))
            .collect(),
        required_attributes: spec
            .requirements
            .required_attributes
            .iter()
            .map(ToString::to_string)
            .collect(),
    }
}

/// The order in the scheduler's terms for judging bids already placed on it. `placeBid`
/// proved each bid's model matches one of the order's entries, so a model this CLI cannot
/// name (a `stand_in`) is allowed as the chain allowed it; recovered models are matched by
/// the rule.
pub fn order_for_bids(
    spec: &OrderSpec,
    max_price_per_hour: U256,
    names: &Names,
    bids: &[BidInfo],
) -> ranking::OrderSpec {
    let mut order = scheduler_order(spec, max_price_per_hour, names);
    if !order.allowed_gpu_models.is_empty() {
        for bid in bids.iter().filter(|bid| bid.gpu_model != B256::ZERO) {
            let model = names.gpu_model(&bid.gpu_model);
            if is_stand_in(&model) {
                order.allowed_gpu_models.push(model.into());
            }
        }
    }
    order
}

/// What a provider has free on chain (capacity minus allocated), per GPU model key.
pub fn room(provider: &ProviderInfo, names: &Names) -> ProviderRoom {
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
            .map(|gpu| {
                let free = u64::from(gpu.capacity.saturating_sub(gpu.allocated));
                (names.gpu_model(&gpu.model_key), free)
            })
            .collect::<BTreeMap<_, _>>(),
    }
}
/// A bid in the scheduler's terms, with the provider's track record and why the chain would
/// not match its provider (if so).
pub fn scheduler_bid(
    bid: &BidInfo,
    provider: &ProviderInfo,
    reputation: ranking::Reputation,
    names: &Names,
    unmatchable: Option<String>,
) -> ranking::Bid {
    ranking::Bid {
        bid_index: bid.bid_id,
        provider: provider.address.to_string(),
        price_per_hour: u128::try_from(bid.price_per_hour).unwrap_or(u128::MAX),
        gpu_model: (bid.gpu_model != B256::ZERO).then(|| names.gpu_model(&bid.gpu_model)),
        attributes: attribute_set(provider),
        reputation,
        room: room(provider, names),
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
pub fn hypothetical_bid(
    spec: &OrderSpec,
    provider: &ProviderInfo,
    price: u128,
    names: &Names,
) -> ranking::Bid {
    let allowed = &spec.requirements.allowed_gpu_models;
    let gpu = if spec.gpu_count == 0 {
        None
    } else {
        let allowed_patterns: Vec<GpuModelPattern> =
            allowed.iter().map(|key| names.gpu_pattern(key)).collect();
        provider
            .gpus
            .iter()
            .filter(|gpu| {
                let model = names.gpu_model(&gpu.model_key);
                allowed.is_empty()
                    || allowed_patterns
                        .iter()
                        .any(|pattern| pattern.matches(&model))
            })
            .max_by_key(|gpu| gpu.capacity.saturating_sub(gpu.allocated))
            .or_else(|| provider.gpus.first())
            .map(|gpu| gpu.model_key)
    };
    ranking::Bid {
        bid_index: 0,
        provider: provider.address.to_string(),
        price_per_hour: price,
        gpu_model: gpu.map(|key| names.gpu_model(&key)),
        attributes: attribute_set(provider),
        reputation: ranking::Reputation::default(),
        room: room(provider, names),
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
            .map(|pattern| names.name(&key_of(pattern)))
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
        Ineligible::GpuModelNotAllowed(model) if is_stand_in(&model) => Reason {
            kind: "gpu_model",
            message: format!(
                "offers GPU model {}, which is neither a known model nor one the manifest names, \
                 so whether the order's {} allow it is known only when it bids (the chain checks)",
                names.name(&key_of(&model.into())),
                allowed()
            ),
        },
        Ineligible::GpuModelNotAllowed(model) => Reason {
            kind: "gpu_model",
            message: format!(
                "offers GPU model {model}, but the order allows only {}",
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
    use crate::names::{is_stand_in, key_of};
    use leasehold_contracts::{chain_key, group_order};
    use leasehold_manifests::Group;
    use leasehold_scheduler::GpuModelKey;

    const SDL: &str = include_str!("../../manifests/examples/gpu-inference.yaml");

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
        let names = Names::default();
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

            let manifests_pattern: GpuModelPattern = pattern.parse().unwrap();
            let manifests_model: GpuModelKey = model.parse().unwrap();
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

            let proof = leasehold_contracts::gpu_bid(&manifests_model, &[chain_key(pattern)]);
            assert_eq!(proof.is_some(), expected, "bid proof: {what}");

            // The tenant sees only keys on chain: it recovers both and applies the rule.
            let from_chain_pattern = names.gpu_pattern(&chain_key(pattern));
            let from_chain_model = names.gpu_model(&chain_key(&model));
            assert_eq!(from_chain_model.to_string(), model, "recovered: {what}");
            assert_eq!(
                from_chain_pattern.matches(&from_chain_model),
                expected,
                "tenant: {what}"
            );
        }
    }

    fn provider(models: &[&str]) -> ProviderInfo {
        let plenty = leasehold_contracts::Resources {
            cpu_milli: 64_000,
            memory_mib: 1 << 20,
            storage_mib: 1 << 20,
        };
        ProviderInfo {
            address: alloy::primitives::Address::repeat_byte(7),
            status: ProviderStatus::Active,
            stake: U256::ZERO,
            unbonding_ends: 0,
            active_leases: 0,
            endpoint: "https://p.example".to_owned(),
            gateway_cert_sha256: B256::repeat_byte(0xce),
            attributes: Vec::new(),
            capacity: plenty,
            allocated: leasehold_contracts::Resources::default(),
            gpus: models
                .iter()
                .map(|model| leasehold_contracts::GpuState {
                    model_key: chain_key(model),
                    capacity: 8,
                    allocated: 0,
                })
                .collect(),
            deliveries_confirmed: 0,
            deliveries_failed: 0,
            locked_bonds: U256::ZERO,
        }
    }

    fn gpu_group(model_yaml: &str) -> Group {
        let sdl = leasehold_manifests::parse(
            &include_str!("../../manifests/examples/stable-diffusion.yaml")
                .replace("- model: rtx4090", model_yaml),
        )
        .unwrap();
        sdl.groups().remove(0)
    }

    /// Issue #12: a registered model off the known list is matched by the contract's rule in
    /// the preflight and bid views: recovered when the manifest names its model, and, when
    /// nothing names it, never called "not allowed" on a guess.
    #[test]
    fn registered_models_off_the_known_list_match_as_the_chain_would() {
        // The SDL asks for an RTX 5080, which the known list lacks.
        let group = gpu_group("- model: rtx5080");
        let names = Names::from_groups(std::slice::from_ref(&group));
        let order = group_order(&group).unwrap();
        let scheduler = scheduler_order(&order.spec, order.max_price_per_hour, &names);
        let offering = provider(&["nvidia/rtx5080/16Gi/pcie"]);
        let bid = hypothetical_bid(&order.spec, &offering, 1, &names);
        assert_eq!(
            bid.gpu_model.as_ref().map(ToString::to_string).as_deref(),
            Some("nvidia/rtx5080/16Gi/pcie")
        );
        assert_eq!(explain(&scheduler, &bid, &offering, &names), None);
        // The chain agrees: the bid proof finds the order's entry.
        let model: GpuModelKey = "nvidia/rtx5080/16Gi/pcie".parse().unwrap();
        assert!(
            leasehold_contracts::gpu_bid(&model, &order.spec.requirements.allowed_gpu_models)
                .is_some()
        );
        // An order entry neither known nor in this manifest (`*/rtx5080/16Gi/*`) is still
        // recovered from the candidates, so the model is matched by the rule.
        let wider = leasehold_contracts::OrderSpec {
            requirements: leasehold_contracts::OrderRequirements {
                allowed_gpu_models: vec![chain_key("*/rtx5080/16Gi/*")],
                ..order.spec.requirements.clone()
            },
            ..order.spec.clone()
        };
        let wider_order = scheduler_order(&wider, order.max_price_per_hour, &names);
        assert_eq!(
            wider_order.allowed_gpu_models[0].to_string(),
            "*/rtx5080/16Gi/*"
        );
        let bid = hypothetical_bid(&wider, &offering, 1, &names);
        assert_eq!(explain(&wider_order, &bid, &offering, &names), None);
        // A model the order does not allow is refused by the same rule, named.
        let other = provider(&["nvidia/rtx4090/24Gi/pcie"]);
        let bid = hypothetical_bid(&order.spec, &other, 1, &names);
        let reason = explain(&scheduler, &bid, &other, &names).unwrap();
        assert_eq!(reason.kind, "gpu_model");
        assert!(
            reason.message.contains("nvidia/rtx4090/24Gi/pcie")
                && reason.message.contains("nvidia/rtx5080/*/*"),
            "{}",
            reason.message
        );

        // `vendor: nvidia` with no model: a registered model nothing names cannot be
        // recovered; preflight says the chain decides rather than "not allowed".
        let group = {
            let sdl = leasehold_manifests::parse(
                &include_str!("../../manifests/examples/stable-diffusion.yaml").replace(
                    "              nvidia:\n                - model: rtx4090",
                    "              nvidia:",
                ),
            )
            .unwrap();
            sdl.groups().remove(0)
        };
        let names = Names::from_groups(std::slice::from_ref(&group));
        let order = group_order(&group).unwrap();
        assert_eq!(
            order.spec.requirements.allowed_gpu_models,
            [chain_key("nvidia/*/*/*")]
        );
        let scheduler = scheduler_order(&order.spec, order.max_price_per_hour, &names);
        let unnamed = provider(&["nvidia/zz9000/40Gi/pcie"]);
        let bid = hypothetical_bid(&order.spec, &unnamed, 1, &names);
        let reason = explain(&scheduler, &bid, &unnamed, &names).unwrap();
        assert!(
            reason.message.contains("known only when it bids"),
            "{}",
            reason.message
        );
        // Once it has bid, `placeBid` proved the match: the bid view counts it eligible.
        let placed = BidInfo {
            bid_id: 0,
            provider: unnamed.address,
            price_per_hour: U256::from(1),
            gpu_model: chain_key("nvidia/zz9000/40Gi/pcie"),
            withdrawn: false,
        };
        let for_bids = order_for_bids(
            &order.spec,
            order.max_price_per_hour,
            &names,
            std::slice::from_ref(&placed),
        );
        let as_scheduler = scheduler_bid(
            &placed,
            &unnamed,
            ranking::Reputation::default(),
            &names,
            None,
        );
        assert_eq!(explain(&for_bids, &as_scheduler, &unnamed, &names), None);
        // A recovered model the patterns do not allow stays refused in the bid view.
        let amd = provider(&["amd/mi300x/192Gi/oam"]);
        let wrong = BidInfo {
            gpu_model: chain_key("amd/mi300x/192Gi/oam"),
            provider: amd.address,
            ..placed
        };
        let for_bids = order_for_bids(
            &order.spec,
            order.max_price_per_hour,
            &names,
            std::slice::from_ref(&wrong),
        );
        let as_scheduler =
            scheduler_bid(&wrong, &amd, ranking::Reputation::default(), &names, None);
        assert_eq!(
            explain(&for_bids, &as_scheduler, &amd, &names).map(|r| r.kind),
            Some("gpu_model")
        );
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
        assert_eq!(key_of(&names.gpu_model(&key).into()), key);
        // A stand-in leads back to its key, and is a valid model key the scheduler can hold.
        let unknown = B256::repeat_byte(0xab);
        let stand_in = names.gpu_model(&unknown);
        assert!(is_stand_in(&stand_in));
        assert_eq!(key_of(&stand_in.into()), unknown);
    }
}
