//! Bid ranking for tenants, and the on-chain default matcher mirrored off-chain so the
//! CLI can predict who `settle` will pick.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::resources::{GpuModelKey, GpuModelPattern};

/// An order as the contract sees it: the group's totals.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OrderSpec {
    pub max_price_per_hour: u128,
    pub cpu_milli: u64,
    pub memory_mib: u64,
    pub storage_mib: u64,
    pub gpu_units: u64,
    /// Empty means any model.
    pub allowed_gpu_models: Vec<GpuModelPattern>,
    pub required_attributes: BTreeSet<String>,
}

/// What a provider has left, as registered on chain (capacity minus allocated).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProviderRoom {
    pub cpu_milli: u64,
    pub memory_mib: u64,
    pub storage_mib: u64,
    pub gpus: BTreeMap<GpuModelKey, u64>,
}

/// A provider's track record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Reputation {
    pub leases_completed: u64,
    pub leases_failed: u64,
}

impl Reputation {
    /// Success rate with a neutral prior (Laplace): a newcomer scores 0.5, not 0 or 1.
    pub fn success_rate(&self) -> f64 {
        (self.leases_completed as f64 + 1.0)
            / ((self.leases_completed + self.leases_failed) as f64 + 2.0)
    }
}

/// One bid on an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bid {
    /// Position in on-chain order (bid id / block order): lower is earlier.
    pub bid_index: u64,
    pub provider: String,
    pub price_per_hour: u128,
    pub gpu_model: Option<GpuModelKey>,
    pub attributes: BTreeSet<String>,
    pub reputation: Reputation,
    pub room: ProviderRoom,
    #[serde(default)]
    pub withdrawn: bool,
    /// Why the provider itself cannot be matched now, for reasons the chain checks beyond
    /// the bid (not active, stake below the minimum, an order's `signedBy` audit no longer
    /// holding); `None` when it can.
    #[serde(default)]
    pub provider_unmatchable: Option<String>,
}

/// Why a bid cannot win.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Ineligible {
    #[error("withdrawn")]
    Withdrawn,
    #[error("price {price} above the order's maximum {max}")]
    OverMaxPrice { price: u128, max: u128 },
    #[error("missing required attribute `{0}`")]
    MissingAttribute(String),
    #[error("gpu model {0} not allowed by the order")]
    GpuModelNotAllowed(GpuModelKey),
    #[error("names no gpu model for a gpu order")]
    NoGpuModel,
    #[error("no room: {0}")]
    NoRoom(String),
    #[error("provider cannot be matched: {0}")]
    ProviderUnmatchable(String),
}

/// Whether a bid may win, mirroring the contract's checks in its order.
pub fn eligibility(order: &OrderSpec, bid: &Bid) -> Result<(), Ineligible> {
    if bid.withdrawn {
        return Err(Ineligible::Withdrawn);
    }
    if let Some(reason) = &bid.provider_unmatchable {
        return Err(Ineligible::ProviderUnmatchable(reason.clone()));
    }
    if bid.price_per_hour > order.max_price_per_hour {
        return Err(Ineligible::OverMaxPrice {
            price: bid.price_per_hour,
            max: order.max_price_per_hour,
        });
    }
    if let Some(missing) = order
        .required_attributes
        .iter()
        .find(|a| !bid.attributes.contains(*a))
    {
        return Err(Ineligible::MissingAttribute(missing.clone()));
    }
    if order.gpu_units > 0 {
        let model = bid.gpu_model.as_ref().ok_or(Ineligible::NoGpuModel)?;
        if !order.allowed_gpu_models.is_empty()
            && !order.allowed_gpu_models.iter().any(|p| p.matches(model))
        {
            return Err(Ineligible::GpuModelNotAllowed(model.clone()));
        }
    }
    has_room(order, bid).map_err(Ineligible::NoRoom)
}

fn has_room(order: &OrderSpec, bid: &Bid) -> Result<(), String> {
    let room = &bid.room;
    let short = |what: &str, need: u64, free: u64| Err(format!("{what} needs {need}, {free} free"));
    if order.cpu_milli > room.cpu_milli {
        return short("cpu milli", order.cpu_milli, room.cpu_milli);
    }
    if order.memory_mib > room.memory_mib {
        return short("memory MiB", order.memory_mib, room.memory_mib);
    }
    if order.storage_mib > room.storage_mib {
        return short("storage MiB", order.storage_mib, room.storage_mib);
    }
    if order.gpu_units > 0 {
        let free = bid
            .gpu_model
            .as_ref()
            .and_then(|m| room.gpus.get(m))
            .copied()
            .unwrap_or(0);
        if order.gpu_units > free {
            return short("gpus", order.gpu_units, free);
        }
    }
    Ok(())
}

/// The bid `settle` awards: the lowest price among eligible bids, the earliest bid
/// (lowest index) on a tie. `None` when no bid is eligible.
pub fn onchain_winner<'a>(order: &OrderSpec, bids: &'a [Bid]) -> Option<&'a Bid> {
    bids.iter()
        .filter(|bid| eligibility(order, bid).is_ok())
        .min_by(|a, b| cheapest_first(a, b))
}

/// What `settle` does from now on, call by call (the contract's rule): it takes the standing
/// (not withdrawn) bids cheapest first, earliest on a tie; it passes over each ineligible one
/// for good (marking it withdrawn: its bond is forfeit), at most `skip_limit` per call, after
/// which the call returns without a lease; it awards the first eligible one. A call that passed
/// over bids and then finds none left also returns; the next one reverts `NoEligibleBid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlePlan {
    /// The bid the calls end at, if any.
    pub winner: Option<u64>,
    /// The bids passed over on the way, in order.
    pub passed_over: Vec<u64>,
    /// Successful `settle` transactions needed (the last awards the winner, if any).
    pub calls: u32,
}

/// The [`SettlePlan`] for `bids` under the contract's per-call `skip_limit`
/// (`SETTLE_SKIP_LIMIT`, or 1 on orders with `signedBy` auditors).
pub fn settle_plan(order: &OrderSpec, bids: &[Bid], skip_limit: usize) -> SettlePlan {
    let skip_limit = skip_limit.max(1);
    let mut standing: Vec<&Bid> = bids.iter().filter(|bid| !bid.withdrawn).collect();
    standing.sort_by(|a, b| cheapest_first(a, b));
    let mut plan = SettlePlan {
        winner: None,
        passed_over: Vec::new(),
        calls: 0,
    };
    let mut skipped_in_call = 0;
    for bid in standing {
        if eligibility(order, bid).is_ok() {
            plan.winner = Some(bid.bid_index);
            plan.calls += 1;
            return plan;
        }
        plan.passed_over.push(bid.bid_index);
        skipped_in_call += 1;
        if skipped_in_call == skip_limit {
            plan.calls += 1;
            skipped_in_call = 0;
        }
    }
    if skipped_in_call > 0 {
        plan.calls += 1;
    }
    plan
}

fn cheapest_first(a: &Bid, b: &Bid) -> Ordering {
    a.price_per_hour
        .cmp(&b.price_per_hour)
        .then(a.bid_index.cmp(&b.bid_index))
}

/// How a tenant wants bids ordered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "policy")]
pub enum RankingPolicy {
    /// Exactly the on-chain order: cheapest, then earliest.
    Cheapest,
    /// A weighted score, lower is better: `price` weighs the price as a fraction of
    /// the order's maximum, `unreliability` weighs (1 - success rate), and each
    /// preferred attribute the bid has subtracts its bonus.
    Weighted {
        price: f64,
        unreliability: f64,
        #[serde(default)]
        preferred_attributes: BTreeMap<String, f64>,
    },
}

/// One bid's place in a ranking, with the reasons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedBid {
    pub bid_index: u64,
    pub provider: String,
    pub price_per_hour: u128,
    /// Lower is better; eligible bids always come before ineligible ones.
    pub score: f64,
    pub eligible: bool,
    pub reasons: Vec<String>,
}

/// Ranks every bid, eligible ones first (best first), then the rest with why not.
pub fn rank(order: &OrderSpec, bids: &[Bid], policy: &RankingPolicy) -> Vec<RankedBid> {
    let mut ranked: Vec<(RankedBid, &Bid)> = bids
        .iter()
        .map(|bid| {
            let mut reasons = Vec::new();
            let eligible = match eligibility(order, bid) {
                Ok(()) => true,
                Err(why) => {
                    reasons.push(format!("ineligible: {why}"));
                    false
                }
            };
            let price_share = if order.max_price_per_hour == 0 {
                0.0
            } else {
                bid.price_per_hour as f64 / order.max_price_per_hour as f64
            };
            reasons.push(format!(
                "price {} ({:.0}% of max {})",
                bid.price_per_hour,
                price_share * 100.0,
                order.max_price_per_hour
            ));
            let score = match policy {
                RankingPolicy::Cheapest => price_share,
                RankingPolicy::Weighted {
                    price,
                    unreliability,
                    preferred_attributes,
                } => {
                    let rate = bid.reputation.success_rate();
                    reasons.push(format!(
                        "reliability {:.0}% over {} leases",
                        rate * 100.0,
                        bid.reputation.leases_completed + bid.reputation.leases_failed
                    ));
                    let mut score = price * price_share + unreliability * (1.0 - rate);
                    for (attribute, bonus) in preferred_attributes {
                        if bid.attributes.contains(attribute) {
                            reasons.push(format!("has preferred {attribute}"));
                            score -= bonus;
                        }
                    }
                    score
                }
            };
            let entry = RankedBid {
                bid_index: bid.bid_index,
                provider: bid.provider.clone(),
                price_per_hour: bid.price_per_hour,
                score,
                eligible,
                reasons,
            };
            (entry, bid)
        })
        .collect();
    ranked.sort_by(|(a, bid_a), (b, bid_b)| {
        b.eligible
            .cmp(&a.eligible)
            .then(a.score.total_cmp(&b.score))
            .then_with(|| cheapest_first(bid_a, bid_b))
    });
    if let Some((first, _)) = ranked.first_mut().filter(|(first, _)| first.eligible) {
        let note = match policy {
            RankingPolicy::Cheapest => "best: lowest price, earliest on a tie (the on-chain rule)",
            RankingPolicy::Weighted { .. } => "best weighted score",
        };
        first.reasons.insert(0, note.to_string());
    }
    ranked.into_iter().map(|(entry, _)| entry).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a100() -> GpuModelKey {
        "nvidia/a100/80gi/sxm".parse::<GpuModelKey>().unwrap()
    }

    fn roomy() -> ProviderRoom {
        ProviderRoom {
            cpu_milli: 64_000,
            memory_mib: 262_144,
            storage_mib: 1_000_000,
            gpus: [(a100(), 8)].into_iter().collect(),
        }
    }

    fn bid(index: u64, provider: &str, price: u128) -> Bid {
        Bid {
            bid_index: index,
            provider: provider.into(),
            price_per_hour: price,
            gpu_model: Some(a100()),
            attributes: ["region=eu".to_string()].into_iter().collect(),
            reputation: Reputation::default(),
            room: roomy(),
            withdrawn: false,
            provider_unmatchable: None,
        }
    }

    #[test]
    fn settle_plan_passes_over_at_most_the_limit_per_call() {
        let mut full = bid(0, "full", 100);
        full.room.gpus.insert(a100(), 1);
        let mut gone = bid(1, "gone", 110);
        gone.provider_unmatchable = Some("not active".into());
        let mut withdrawn = bid(2, "withdrawn", 50);
        withdrawn.withdrawn = true;
        let bids = vec![full, gone, withdrawn, bid(3, "honest", 300)];
        let plan = settle_plan(&order(), &bids, 2);
        assert_eq!(plan.winner, Some(3));
        assert_eq!(
            plan.passed_over,
            vec![0, 1],
            "withdrawn bids are ignored, not passed over"
        );
        assert_eq!(
            plan.calls, 2,
            "two skips end the first call; the second awards"
        );
        let audited = settle_plan(&order(), &bids, 1);
        assert_eq!((audited.winner, audited.calls), (Some(3), 3));
        assert_eq!(
            onchain_winner(&order(), &bids).map(|b| b.bid_index),
            Some(3),
            "the eventual winner is the cheapest eligible bid"
        );
        // nothing eligible: the calls pass everything over and end without a winner
        let stale = settle_plan(&order(), &bids[..2], 2);
        assert_eq!(
            (stale.winner, stale.passed_over.len(), stale.calls),
            (None, 2, 1)
        );
        let one = settle_plan(&order(), &bids[..1], 2);
        assert_eq!(
            (one.winner, one.calls),
            (None, 1),
            "the call that skips the last bid returns"
        );
        assert_eq!(settle_plan(&order(), &[], 2).calls, 0);
    }

    fn order() -> OrderSpec {
        OrderSpec {
            max_price_per_hour: 1000,
            cpu_milli: 4000,
            memory_mib: 8192,
            storage_mib: 1024,
            gpu_units: 2,
            allowed_gpu_models: vec!["nvidia/a100/*".parse::<GpuModelPattern>().unwrap()],
            required_attributes: ["region=eu".to_string()].into_iter().collect(),
        }
    }

    #[test]
    fn onchain_rule_lowest_price_then_earliest_skipping_no_room() {
        let mut full = bid(0, "full", 100);
        full.room.gpus.insert(a100(), 1);
        let bids = vec![
            full,
            bid(3, "late", 200),
            bid(1, "early", 200),
            bid(2, "pricey", 900),
        ];
        let winner = onchain_winner(&order(), &bids).unwrap();
        assert_eq!(winner.provider, "early");
        let ranked = rank(&order(), &bids, &RankingPolicy::Cheapest);
        let providers: Vec<&str> = ranked.iter().map(|r| r.provider.as_str()).collect();
        assert_eq!(providers, ["early", "late", "pricey", "full"]);
        assert!(!ranked[3].eligible);
        assert!(
            ranked[3].reasons[0].contains("no room: gpus needs 2, 1 free"),
            "{:?}",
            ranked[3].reasons
        );
        assert!(ranked[0].reasons[0].contains("on-chain rule"));
    }

    #[test]
    fn onchain_rule_skips_withdrawn_overpriced_wrong_model_and_attributes() {
        let mut withdrawn = bid(0, "withdrawn", 10);
        withdrawn.withdrawn = true;
        let over = bid(1, "over", 1001);
        let mut wrong_model = bid(2, "h100", 20);
        let h100 = "nvidia/h100/80gi/sxm".parse::<GpuModelKey>().unwrap();
        wrong_model.room.gpus.insert(h100.clone(), 8);
        wrong_model.gpu_model = Some(h100.clone());
        let mut elsewhere = bid(3, "us", 30);
        elsewhere.attributes.clear();
        let bids = vec![withdrawn, over, wrong_model, elsewhere];
        assert_eq!(onchain_winner(&order(), &bids), None);
        let why: Vec<Ineligible> = bids
            .iter()
            .filter_map(|b| eligibility(&order(), b).err())
            .collect();
        assert_eq!(
            why,
            vec![
                Ineligible::Withdrawn,
                Ineligible::OverMaxPrice {
                    price: 1001,
                    max: 1000
                },
                Ineligible::GpuModelNotAllowed(h100.clone()),
                Ineligible::MissingAttribute("region=eu".into()),
            ]
        );
    }

    #[test]
    fn weighted_ranking_trades_price_for_reliability() {
        let mut cheap_flaky = bid(0, "flaky", 400);
        cheap_flaky.reputation = Reputation {
            leases_completed: 2,
            leases_failed: 8,
        };
        let mut solid = bid(1, "solid", 500);
        solid.reputation = Reputation {
            leases_completed: 98,
            leases_failed: 0,
        };
        let bids = vec![cheap_flaky, solid];
        let cheapest = rank(&order(), &bids, &RankingPolicy::Cheapest);
        assert_eq!(cheapest[0].provider, "flaky");
        let weighted = RankingPolicy::Weighted {
            price: 1.0,
            unreliability: 1.0,
            preferred_attributes: BTreeMap::new(),
        };
        let ranked = rank(&order(), &bids, &weighted);
        assert_eq!(ranked[0].provider, "solid");
        assert!(
            ranked[0]
                .reasons
                .iter()
                .any(|r| r.contains("reliability 99%")),
            "{:?}",
            ranked[0].reasons
        );
        // A strong enough price weight flips it back.
        let price_heavy = RankingPolicy::Weighted {
            price: 10.0,
            unreliability: 1.0,
            preferred_attributes: BTreeMap::new(),
        };
        assert_eq!(rank(&order(), &bids, &price_heavy)[0].provider, "flaky");
    }
}
