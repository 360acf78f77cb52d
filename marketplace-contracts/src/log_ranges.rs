//! `eth_getLogs` within the block-range limits public endpoints impose, for every reader: the
//! follower (one range per step) and one-shot history reads ([`logs_in_ranges`]: the tenant's
//! bid and lease history, `order_posted`, attestations).
//!
//! Endpoints refuse ranges above their limit (often 1k-10k blocks) or with too many results,
//! with provider-specific messages; rather than parse them, a failed range is halved and the
//! next one regrows after a success.

use alloy::rpc::types::Log;

use crate::follower::{LogSource, SourceError};

/// The default largest range per call: what most public endpoints accept.
pub const DEFAULT_MAX_LOG_RANGE: u64 = 1_000;

/// The size of the next `eth_getLogs` range: at most `max`, halved after each failed call,
/// doubled (up to `max`) after each successful one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeLimit {
    max: u64,
    current: u64,
}

impl RangeLimit {
    /// `max` of 0 is treated as 1.
    pub fn new(max: u64) -> Self {
        let max = max.max(1);
        Self { max, current: max }
    }

    pub fn current(&self) -> u64 {
        self.current
    }

    /// The last block of the range starting at `from`, not beyond `last`.
    pub fn end(&self, from: u64, last: u64) -> u64 {
        last.min(from.saturating_add(self.current.saturating_sub(1)))
    }

    /// After a failed call. Returns false when the range was already a single block.
    pub fn shrink(&mut self) -> bool {
        let was = self.current;
        self.current = (self.current / 2).max(1);
        was > 1
    }

    /// After a successful call.
    pub fn grow(&mut self) {
        self.current = self.current.saturating_mul(2).min(self.max);
    }
}

/// Every log `source` has in `from..=to`, in ranges of at most `max_range` blocks that halve
/// after a failed call. Fails when a single-block range fails (the endpoint is down, not
/// limiting), with that call's error. Logs come back in the order the ranges were read.
pub async fn logs_in_ranges<S: LogSource>(
    source: &S,
    from: u64,
    to: u64,
    max_range: u64,
) -> Result<Vec<Log>, SourceError> {
    let mut limit = RangeLimit::new(max_range);
    let mut logs = Vec::new();
    let mut next = from;
    while next <= to {
        let end = limit.end(next, to);
        match source.logs(next, end).await {
            Ok(mut found) => {
                logs.append(&mut found);
                limit.grow();
                next = match end.checked_add(1) {
                    Some(next) => next,
                    None => break,
                };
            }
            Err(error) => {
                if !limit.shrink() {
                    return Err(error);
                }
                tracing::debug!(from = next, to = end, %error, "eth_getLogs range refused, halving");
            }
        }
    }
    Ok(logs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Refuses ranges wider than `limit` blocks; one log per block.
    struct Limited {
        limit: u64,
        down: bool,
        calls: Mutex<Vec<(u64, u64)>>,
    }

    impl LogSource for Limited {
        async fn head_block(&self) -> Result<u64, SourceError> {
            Ok(0)
        }
        async fn logs(&self, from: u64, to: u64) -> Result<Vec<Log>, SourceError> {
            self.calls.lock().unwrap().push((from, to));
            if self.down || to - from + 1 > self.limit {
                return Err(SourceError::new("range too large"));
            }
            Ok((from..=to)
                .map(|block| Log {
                    block_number: Some(block),
                    ..Default::default()
                })
                .collect())
        }
        async fn block_hash(
            &self,
            _number: u64,
        ) -> Result<Option<alloy::primitives::B256>, SourceError> {
            unreachable!("one-shot reads never ask for block hashes")
        }
    }

    #[tokio::test]
    async fn ranges_above_the_endpoint_limit_are_halved_until_they_pass() {
        let source = Limited {
            limit: 1_000,
            down: false,
            calls: Mutex::new(Vec::new()),
        };
        let logs = logs_in_ranges(&source, 10, 5_009, 10_000).await.unwrap();
        let blocks: Vec<u64> = logs.iter().filter_map(|l| l.block_number).collect();
        assert_eq!(
            blocks,
            (10..=5_009).collect::<Vec<_>>(),
            "every block once, in order"
        );
        let calls = source.calls.lock().unwrap();
        assert!(calls.iter().all(|(from, to)| to >= from && *to <= 5_009));
        assert!(calls.len() < 40, "halving converges: {calls:?}");
    }

    #[tokio::test]
    async fn a_failing_single_block_is_an_error() {
        let source = Limited {
            limit: 1,
            down: true,
            calls: Mutex::new(Vec::new()),
        };
        let error = logs_in_ranges(&source, 0, 100, 8).await.unwrap_err();
        assert!(error.to_string().contains("range too large"));
        assert_eq!(source.calls.lock().unwrap().len(), 4, "8, 4, 2, 1 blocks");
        assert_eq!(
            logs_in_ranges(&source, 5, 4, 8).await.unwrap().len(),
            0,
            "empty range"
        );
    }

    #[test]
    fn the_limit_halves_and_regrows_within_its_bounds() {
        let mut limit = RangeLimit::new(8);
        assert_eq!(limit.end(10, 100), 17);
        assert_eq!(limit.end(10, 12), 12);
        assert!(limit.shrink());
        assert_eq!(limit.current(), 4);
        limit.grow();
        limit.grow();
        assert_eq!(limit.current(), 8, "capped at max");
        let mut one = RangeLimit::new(0);
        assert!(!one.shrink());
        assert_eq!(one.end(u64::MAX, u64::MAX), u64::MAX);
    }
}
