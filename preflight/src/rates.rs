//! Providers' prices as their recent bids show them: price lists are not on chain, bids are.

use std::collections::HashMap;

use alloy::primitives::{Address, U256};

/// Only the most recent bids count: prices change.
pub const RECENT_BIDS: usize = 50;

/// A bid as placed on chain, with the replicas of the order it was placed on (its price is
/// for all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacedBid {
    pub provider: Address,
    pub price_per_hour: U256,
    pub replicas: u16,
}

/// The bids that count, of `bids` in the order they were placed: the last [`RECENT_BIDS`].
/// Callers that must look something up per bid (the order's replicas) look up only these.
pub fn recent<T>(bids: &[T]) -> &[T] {
    bids.get(bids.len().saturating_sub(RECENT_BIDS)..)
        .unwrap_or_default()
}

/// The lowest price per replica-hour each provider bid among the [`recent`] bids of `bids`
/// (in the order they were placed), rounded up so the estimate is never below a bid.
pub fn recent_rates(bids: &[PlacedBid]) -> HashMap<Address, U256> {
    let mut rates: HashMap<Address, U256> = HashMap::new();
    for bid in recent(bids) {
        // An order of no replicas cannot be posted; a log claiming one says nothing.
        if bid.replicas == 0 {
            continue;
        }
        let rate = bid.price_per_hour.div_ceil(U256::from(bid.replicas));
        rates
            .entry(bid.provider)
            .and_modify(|lowest| *lowest = (*lowest).min(rate))
            .or_insert(rate);
    }
    rates
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bid(provider: u8, price: u64, replicas: u16) -> PlacedBid {
        PlacedBid {
            provider: Address::repeat_byte(provider),
            price_per_hour: U256::from(price),
            replicas,
        }
    }

    #[test]
    fn the_lowest_rate_per_replica_rounded_up() {
        let rates = recent_rates(&[bid(1, 10, 3), bid(1, 9, 1), bid(2, 7, 2), bid(3, 5, 0)]);
        // 10/3 rounds up to 4, below the 9 of the one-replica bid.
        assert_eq!(rates.get(&Address::repeat_byte(1)), Some(&U256::from(4)));
        assert_eq!(rates.get(&Address::repeat_byte(2)), Some(&U256::from(4)));
        assert_eq!(
            rates.get(&Address::repeat_byte(3)),
            None,
            "no replicas, no rate"
        );
    }

    #[test]
    fn only_the_last_bids_count() {
        // An old cheap bid, then RECENT_BIDS dearer ones: the cheap one has aged out.
        let mut bids = vec![bid(1, 1, 1)];
        bids.extend((0..RECENT_BIDS).map(|_| bid(1, 100, 1)));
        assert_eq!(recent(&bids).len(), RECENT_BIDS);
        assert_eq!(
            recent_rates(&bids).get(&Address::repeat_byte(1)),
            Some(&U256::from(100))
        );
        bids.pop();
        assert_eq!(
            recent_rates(&bids).get(&Address::repeat_byte(1)),
            Some(&U256::from(1)),
            "one fewer and the cheap bid counts again"
        );
        assert!(recent::<PlacedBid>(&[]).is_empty());
    }
}
