//! Chain event follower: reads contract logs with `eth_getLogs` over bounded block ranges a few
//! confirmations behind the head, hands each log to an idempotent handler in (block, log index)
//! order, and persists a cursor once a whole range has been handled.
//!
//! Delivery guarantee: within one [`Follower`] every log reaches the handler exactly once. Across
//! restarts a range whose cursor was not yet saved is delivered again, which is why handlers
//! must be idempotent.

use std::future::Future;
use std::time::Duration;

use alloy::primitives::Address;
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, Log};
use tracing::{debug, info, warn};

use crate::cursor::{CursorError, CursorStore};
use crate::heads::{HeadWatch, next_head_or};
use crate::log_ranges::{DEFAULT_MAX_LOG_RANGE, RangeLimit};

/// An RPC failure (transport error, timeout, malformed answer). Retried by [`Follower::run`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    message: String,
}

impl SourceError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// Where logs come from. Implemented over any alloy provider by [`RpcLogSource`].
pub trait LogSource {
    /// The latest block number.
    fn head_block(&self) -> impl Future<Output = Result<u64, SourceError>> + Send;
    /// All logs of interest in the inclusive block range `from..=to`.
    fn logs(
        &self,
        from: u64,
        to: u64,
    ) -> impl Future<Output = Result<Vec<Log>, SourceError>> + Send;
}

/// Logs matching a filter (by default: emitted by a fixed set of contract addresses), read
/// through an alloy provider.
#[derive(Debug, Clone)]
pub struct RpcLogSource<P> {
    provider: P,
    filter: Filter,
}

impl<P: Provider> RpcLogSource<P> {
    pub fn new(provider: P, addresses: impl IntoIterator<Item = Address>) -> Self {
        let addresses: Vec<Address> = addresses.into_iter().collect();
        Self::with_filter(provider, Filter::new().address(addresses))
    }

    /// Logs matching `filter` (addresses, event signatures, topics); its block range is
    /// replaced by each call's.
    pub fn with_filter(provider: P, filter: Filter) -> Self {
        Self { provider, filter }
    }
}

impl<P: Provider> LogSource for RpcLogSource<P> {
    async fn head_block(&self) -> Result<u64, SourceError> {
        self.provider
            .get_block_number()
            .await
            .map_err(|e| SourceError::new(format!("eth_blockNumber: {e}")))
    }

    async fn logs(&self, from: u64, to: u64) -> Result<Vec<Log>, SourceError> {
        let filter = self.filter.clone().from_block(from).to_block(to);
        self.provider
            .get_logs(&filter)
            .await
            .map_err(|e| SourceError::new(format!("eth_getLogs {from}..={to}: {e}")))
    }
}

/// Consumer of followed logs. Must be idempotent: after a crash a log may be seen again.
pub trait LogHandler {
    type Error: std::error::Error + Send + Sync + 'static;
    fn handle(&mut self, log: &Log) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Exponential backoff with a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(10),
        }
    }
}

/// The running state of a [`BackoffPolicy`]: each failure doubles the delay up to the cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    next: Duration,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            next: policy.initial.min(policy.max),
        }
    }

    /// The delay to wait after the current failure.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = delay.saturating_mul(2).min(self.policy.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.policy.initial.min(self.policy.max);
    }
}

#[derive(Debug, Clone)]
pub struct FollowerConfig {
    /// First block to read when the cursor store is empty (typically the deployment block).
    pub start_block: u64,
    /// Only blocks at least this many below the head are read, so shallow reorgs are never seen.
    pub confirmations: u64,
    /// Largest block range per `eth_getLogs` call. Halved after a failed call, regrown on success.
    pub max_range: u64,
    /// Pause between polls once caught up; with a [`HeadWatch`] (see [`Follower::wake_on`]) a
    /// new head ends the pause early, and this is the fallback while the socket is down.
    pub poll_interval: Duration,
    /// Upper bound on one RPC call; a call that takes longer counts as a failure.
    pub request_timeout: Duration,
    pub backoff: BackoffPolicy,
    /// Give up after this many consecutive RPC failures; `None` retries forever.
    pub max_consecutive_failures: Option<u32>,
}

impl Default for FollowerConfig {
    fn default() -> Self {
        Self {
            start_block: 0,
            confirmations: 2,
            max_range: DEFAULT_MAX_LOG_RANGE,
            poll_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            backoff: BackoffPolicy::default(),
            max_consecutive_failures: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FollowerError<H: std::error::Error + 'static> {
    #[error("RPC failed {attempts} times in a row, last error: {source}")]
    Source {
        attempts: u32,
        #[source]
        source: SourceError,
    },
    #[error("cursor store: {0}")]
    Cursor(#[from] CursorError),
    #[error("handler failed on the log at block {block}, index {log_index}: {source}")]
    Handler {
        block: u64,
        log_index: u64,
        #[source]
        source: H,
    },
    #[error("invalid follower config: {0}")]
    Config(&'static str),
}

/// What one [`Follower::step`] achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Logs of blocks `from..=to` were delivered (possibly none) and the cursor now points past `to`.
    Advanced {
        from: u64,
        to: u64,
        delivered: usize,
    },
    /// Nothing confirmed yet beyond the cursor.
    CaughtUp { next_block: u64, head: u64 },
}

/// Counters for observability (also exported through `tracing` events).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowerStats {
    /// Block ranges fully delivered and committed to the cursor.
    pub ranges: u64,
    /// Logs handed to the handler.
    pub delivered: u64,
    /// RPC calls that failed or timed out.
    pub rpc_failures: u64,
}

/// Position of a log in the chain, used to order and de-duplicate deliveries.
type LogPosition = (u64, u64);

/// Internal: a failed step, either retryable (RPC) or fatal.
enum StepError<H: std::error::Error + 'static> {
    Source(SourceError),
    Fatal(FollowerError<H>),
}

impl<H: std::error::Error + 'static> From<CursorError> for StepError<H> {
    fn from(err: CursorError) -> Self {
        StepError::Fatal(FollowerError::Cursor(err))
    }
}

pub struct Follower<S, C> {
    source: S,
    store: C,
    config: FollowerConfig,
    next_block: Option<u64>,
    range: RangeLimit,
    /// The last log handed to the handler successfully in the range not yet committed to the
    /// cursor; lets a retried range skip what was already delivered.
    delivered_through: Option<LogPosition>,
    stats: FollowerStats,
    heads: Option<HeadWatch>,
}

impl<S: LogSource, C: CursorStore> Follower<S, C> {
    pub fn new(source: S, store: C, config: FollowerConfig) -> Self {
        let range = RangeLimit::new(config.max_range);
        Self {
            source,
            store,
            config,
            next_block: None,
            range,
            delivered_through: None,
            stats: FollowerStats::default(),
            heads: None,
        }
    }

    /// Wakes the follower on every new head `heads` announces instead of only after
    /// `poll_interval`. The notification only wakes: logs are still read by block range.
    pub fn wake_on(mut self, heads: HeadWatch) -> Self {
        self.heads = Some(heads);
        self
    }

    pub fn stats(&self) -> FollowerStats {
        self.stats
    }

    pub fn config(&self) -> &FollowerConfig {
        &self.config
    }

    /// The next block to process, loading it from the store on first use.
    pub async fn next_block(&mut self) -> Result<u64, CursorError> {
        if let Some(next) = self.next_block {
            return Ok(next);
        }
        let next = self.store.load().await?.unwrap_or(self.config.start_block);
        self.next_block = Some(next);
        Ok(next)
    }

    async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, SourceError>>,
    ) -> Result<T, SourceError> {
        match tokio::time::timeout(self.config.request_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(SourceError::new(format!(
                "RPC call timed out after {:?}",
                self.config.request_timeout
            ))),
        }
    }

    /// One poll: read the next confirmed range (if any), deliver it, save the cursor.
    /// RPC failures are returned as [`FollowerError::Source`] with `attempts: 1`.
    pub async fn step<H: LogHandler>(
        &mut self,
        handler: &mut H,
    ) -> Result<Step, FollowerError<H::Error>> {
        self.attempt(handler).await.map_err(|err| match err {
            StepError::Source(source) => FollowerError::Source {
                attempts: 1,
                source,
            },
            StepError::Fatal(err) => err,
        })
    }

    /// [`Self::try_step`], counting RPC failures.
    async fn attempt<H: LogHandler>(
        &mut self,
        handler: &mut H,
    ) -> Result<Step, StepError<H::Error>> {
        let result = self.try_step(handler).await;
        if let Err(StepError::Source(_)) = &result {
            self.stats.rpc_failures = self.stats.rpc_failures.saturating_add(1);
        }
        result
    }

    async fn try_step<H: LogHandler>(
        &mut self,
        handler: &mut H,
    ) -> Result<Step, StepError<H::Error>> {
        if self.config.max_range == 0 {
            return Err(StepError::Fatal(FollowerError::Config(
                "max_range must be at least 1",
            )));
        }
        let from = self.next_block().await?;
        let head = self
            .call(self.source.head_block())
            .await
            .map_err(StepError::Source)?;
        let Some(safe_head) = head.checked_sub(self.config.confirmations) else {
            return Ok(Step::CaughtUp {
                next_block: from,
                head,
            });
        };
        if from > safe_head {
            return Ok(Step::CaughtUp {
                next_block: from,
                head,
            });
        }
        let to = self.range.end(from, safe_head);
        let logs = match self.call(self.source.logs(from, to)).await {
            Ok(logs) => logs,
            Err(err) => {
                // Providers reject ranges with too many results; a smaller one may pass.
                self.range.shrink();
                return Err(StepError::Source(err));
            }
        };
        let logs = order_logs(logs, from, to).map_err(StepError::Source)?;
        let mut delivered = 0usize;
        for (position, log) in &logs {
            if self.delivered_through.is_some_and(|done| *position <= done) {
                continue;
            }
            handler.handle(log).await.map_err(|source| {
                StepError::Fatal(FollowerError::Handler {
                    block: position.0,
                    log_index: position.1,
                    source,
                })
            })?;
            self.delivered_through = Some(*position);
            delivered += 1;
            self.stats.delivered = self.stats.delivered.saturating_add(1);
        }
        let next = to.saturating_add(1);
        self.store.save(next).await?;
        self.next_block = Some(next);
        self.delivered_through = None;
        self.stats.ranges = self.stats.ranges.saturating_add(1);
        self.range.grow();
        if delivered > 0 {
            info!(from, to, delivered, head, "follower delivered logs");
        } else {
            debug!(from, to, head, "follower advanced over empty range");
        }
        Ok(Step::Advanced {
            from,
            to,
            delivered,
        })
    }

    /// Follow the chain until `shutdown` completes or a non-RPC error occurs. RPC errors are
    /// retried with capped exponential backoff. Shutdown is only observed between steps, so the
    /// cursor always matches what the handler has seen.
    pub async fn run<H: LogHandler>(
        &mut self,
        handler: &mut H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), FollowerError<H::Error>> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut backoff = Backoff::new(self.config.backoff);
        let mut failures: u32 = 0;
        loop {
            let step = self.attempt(handler).await;
            let caught_up = matches!(step, Ok(Step::CaughtUp { .. }));
            let pause = match step {
                Ok(Step::Advanced { .. }) => {
                    failures = 0;
                    backoff.reset();
                    Duration::ZERO
                }
                Ok(Step::CaughtUp { next_block, head }) => {
                    failures = 0;
                    backoff.reset();
                    debug!(next_block, head, "follower caught up");
                    self.config.poll_interval
                }
                Err(StepError::Source(source)) => {
                    failures = failures.saturating_add(1);
                    if self
                        .config
                        .max_consecutive_failures
                        .is_some_and(|cap| failures >= cap)
                    {
                        return Err(FollowerError::Source {
                            attempts: failures,
                            source,
                        });
                    }
                    let delay = backoff.next_delay();
                    warn!(error = %source, failures, ?delay, "follower RPC error, backing off");
                    delay
                }
                Err(StepError::Fatal(err)) => return Err(err),
            };
            // RPC backoff is not cut short by a new head: the node is what is failing.
            let heads = if caught_up { self.heads.as_mut() } else { None };
            tokio::select! {
                biased;
                () = &mut shutdown => {
                    info!("follower shutting down");
                    return Ok(());
                }
                () = next_head_or(heads, pause) => {}
            }
        }
    }
}

/// Sorts logs by (block, log index), drops removed and duplicate entries and rejects logs that
/// lack a position or fall outside the requested range.
fn order_logs(logs: Vec<Log>, from: u64, to: u64) -> Result<Vec<(LogPosition, Log)>, SourceError> {
    let mut positioned = Vec::with_capacity(logs.len());
    for log in logs {
        if log.removed {
            continue;
        }
        let (Some(block), Some(index)) = (log.block_number, log.log_index) else {
            return Err(SourceError::new(
                "eth_getLogs returned a log without block number or log index",
            ));
        };
        if block < from || block > to {
            return Err(SourceError::new(format!(
                "eth_getLogs {from}..={to} returned a log from block {block}"
            )));
        }
        positioned.push(((block, index), log));
    }
    positioned.sort_by_key(|(position, _)| *position);
    positioned.dedup_by_key(|(position, _)| *position);
    Ok(positioned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::MemoryCursorStore;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    fn log_at(block: u64, index: u64) -> Log {
        Log {
            block_number: Some(block),
            log_index: Some(index),
            ..Default::default()
        }
    }

    /// A scripted chain: a head, a set of logs, and queued failures.
    #[derive(Default)]
    struct FakeChain {
        head: Mutex<u64>,
        logs: Vec<Log>,
        failures: Mutex<VecDeque<&'static str>>,
        calls: Mutex<Vec<(u64, u64)>>,
    }

    impl FakeChain {
        fn fail_next(&self, what: &'static str) {
            self.failures.lock().unwrap().push_back(what);
        }
        fn take_failure(&self, call: &str) -> Result<(), SourceError> {
            let mut failures = self.failures.lock().unwrap();
            if failures.front().is_some_and(|f| *f == call) {
                failures.pop_front();
                return Err(SourceError::new(format!("scripted {call} failure")));
            }
            Ok(())
        }
    }

    impl LogSource for &FakeChain {
        async fn head_block(&self) -> Result<u64, SourceError> {
            self.take_failure("head")?;
            Ok(*self.head.lock().unwrap())
        }
        async fn logs(&self, from: u64, to: u64) -> Result<Vec<Log>, SourceError> {
            self.take_failure("logs")?;
            self.calls.lock().unwrap().push((from, to));
            // Reversed on purpose: the follower must order them itself.
            Ok(self
                .logs
                .iter()
                .rev()
                .filter(|l| (from..=to).contains(&l.block_number.unwrap()))
                .cloned()
                .collect())
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("handler refused")]
    struct Refused;

    #[derive(Default)]
    struct Collector {
        seen: Vec<LogPosition>,
        fail_at: Option<LogPosition>,
    }

    impl LogHandler for Collector {
        type Error = Refused;
        async fn handle(&mut self, log: &Log) -> Result<(), Refused> {
            let position = (log.block_number.unwrap(), log.log_index.unwrap());
            if self.fail_at.take_if(|p| *p == position).is_some() {
                return Err(Refused);
            }
            self.seen.push(position);
            Ok(())
        }
    }

    fn config(confirmations: u64, max_range: u64) -> FollowerConfig {
        FollowerConfig {
            start_block: 0,
            confirmations,
            max_range,
            poll_interval: Duration::from_millis(1),
            request_timeout: Duration::from_secs(1),
            backoff: BackoffPolicy {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(4),
            },
            max_consecutive_failures: None,
        }
    }

    fn chain(head: u64, positions: &[LogPosition]) -> FakeChain {
        FakeChain {
            head: Mutex::new(head),
            logs: positions.iter().map(|&(b, i)| log_at(b, i)).collect(),
            ..Default::default()
        }
    }

    async fn drain(
        follower: &mut Follower<&FakeChain, &MemoryCursorStore>,
        handler: &mut Collector,
    ) -> Result<(), FollowerError<Refused>> {
        loop {
            if let Step::CaughtUp { .. } = follower.step(handler).await? {
                return Ok(());
            }
        }
    }

    #[tokio::test]
    async fn delivers_in_order_in_bounded_ranges_behind_confirmations() {
        let chain = chain(20, &[(3, 1), (3, 0), (7, 2), (12, 0), (18, 0), (19, 0)]);
        let store = MemoryCursorStore::default();
        let mut follower = Follower::new(&chain, &store, config(2, 5));
        let mut handler = Collector::default();
        drain(&mut follower, &mut handler).await.unwrap();
        // Head 20 with 2 confirmations: block 18 is the last one read, 19 not yet.
        assert_eq!(handler.seen, vec![(3, 0), (3, 1), (7, 2), (12, 0), (18, 0)]);
        assert_eq!(store.load().await.unwrap(), Some(19));
        let calls = chain.calls.lock().unwrap().clone();
        assert!(calls.iter().all(|(f, t)| t - f < 5), "{calls:?}");
        assert_eq!(calls.first(), Some(&(0, 4)));
        assert_eq!(calls.last().map(|c| c.1), Some(18));

        *chain.head.lock().unwrap() = 21;
        drain(&mut follower, &mut handler).await.unwrap();
        assert_eq!(handler.seen.last(), Some(&(19, 0)));
        assert_eq!(handler.seen.len(), 6);
    }

    #[tokio::test]
    async fn a_chain_shorter_than_the_confirmations_is_not_read() {
        let chain = chain(1, &[(0, 0), (1, 0)]);
        let store = MemoryCursorStore::default();
        let mut follower = Follower::new(&chain, &store, config(2, 10));
        let step = follower.step(&mut Collector::default()).await.unwrap();
        assert_eq!(
            step,
            Step::CaughtUp {
                next_block: 0,
                head: 1
            }
        );
        assert!(chain.calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn resumes_from_the_persisted_cursor() {
        let chain = chain(30, &[(2, 0), (10, 0), (20, 0)]);
        let store = MemoryCursorStore::default();
        store.save(10).await.unwrap();
        let mut follower = Follower::new(&chain, &store, config(0, 100));
        let mut handler = Collector::default();
        drain(&mut follower, &mut handler).await.unwrap();
        assert_eq!(handler.seen, vec![(10, 0), (20, 0)]);
    }

    #[tokio::test]
    async fn rpc_failures_are_retried_and_nothing_is_lost_or_repeated() {
        let chain = chain(10, &[(1, 0), (4, 0), (4, 1), (9, 0)]);
        for what in ["head", "logs", "logs", "head", "logs"] {
            chain.fail_next(what);
        }
        let store = MemoryCursorStore::default();
        let mut follower = Follower::new(&chain, &store, config(0, 4));
        let mut handler = Collector::default();
        let done = async {
            while store.load().await.unwrap() != Some(11) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), follower.run(&mut handler, done))
            .await
            .expect("follower did not finish")
            .unwrap();
        assert_eq!(handler.seen, vec![(1, 0), (4, 0), (4, 1), (9, 0)]);
        assert!(chain.failures.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn failing_logs_call_shrinks_the_range() {
        let chain = chain(100, &[(50, 0)]);
        chain.fail_next("logs");
        let store = MemoryCursorStore::default();
        let mut follower = Follower::new(&chain, &store, config(0, 64));
        let mut handler = Collector::default();
        let err = follower.step(&mut handler).await.unwrap_err();
        assert!(matches!(err, FollowerError::Source { attempts: 1, .. }));
        let step = follower.step(&mut handler).await.unwrap();
        assert_eq!(
            step,
            Step::Advanced {
                from: 0,
                to: 31,
                delivered: 0
            }
        );
    }

    #[tokio::test]
    async fn gives_up_after_the_configured_number_of_failures() {
        let chain = chain(10, &[]);
        for _ in 0..3 {
            chain.fail_next("head");
        }
        let store = MemoryCursorStore::default();
        let mut cfg = config(0, 10);
        cfg.max_consecutive_failures = Some(3);
        let mut follower = Follower::new(&chain, &store, cfg);
        let err = follower
            .run(&mut Collector::default(), std::future::pending())
            .await
            .unwrap_err();
        assert!(
            matches!(err, FollowerError::Source { attempts: 3, .. }),
            "{err}"
        );
        assert_eq!(store.load().await.unwrap(), None);
    }

    #[tokio::test]
    async fn handler_failure_keeps_the_cursor_and_the_retry_skips_delivered_logs() {
        let chain = chain(10, &[(2, 0), (3, 0), (3, 1), (8, 0)]);
        let store = MemoryCursorStore::default();
        let mut follower = Follower::new(&chain, &store, config(0, 100));
        let mut handler = Collector {
            fail_at: Some((3, 1)),
            ..Default::default()
        };
        let err = follower.step(&mut handler).await.unwrap_err();
        assert!(
            matches!(
                err,
                FollowerError::Handler {
                    block: 3,
                    log_index: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(store.load().await.unwrap(), None, "cursor must not move");
        drain(&mut follower, &mut handler).await.unwrap();
        assert_eq!(handler.seen, vec![(2, 0), (3, 0), (3, 1), (8, 0)]);

        // A fresh follower (a restart) with an uncommitted range re-delivers it: at-least-once.
        let store = MemoryCursorStore::default();
        let mut restarted = Follower::new(&chain, &store, config(0, 100));
        let mut first = Collector {
            fail_at: Some((8, 0)),
            ..Default::default()
        };
        assert!(restarted.step(&mut first).await.is_err());
        let mut restarted = Follower::new(&chain, &store, config(0, 100));
        let mut second = Collector::default();
        drain(&mut restarted, &mut second).await.unwrap();
        assert_eq!(second.seen, vec![(2, 0), (3, 0), (3, 1), (8, 0)]);
    }

    #[tokio::test]
    async fn malformed_and_removed_logs() {
        let mut removed = log_at(1, 0);
        removed.removed = true;
        let ordered = order_logs(vec![log_at(1, 1), removed, log_at(1, 1)], 0, 5).unwrap();
        assert_eq!(ordered.len(), 1, "removed dropped, duplicate collapsed");
        assert!(order_logs(vec![Log::default()], 0, 5).is_err());
        let err = order_logs(vec![log_at(9, 0)], 0, 5).unwrap_err();
        assert!(err.to_string().contains("block 9"), "{err}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
        });
        let delays: Vec<_> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn zero_range_is_a_config_error() {
        let chain = chain(10, &[]);
        let store = MemoryCursorStore::default();
        let mut follower = Follower::new(&chain, &store, config(0, 0));
        let err = follower.step(&mut Collector::default()).await.unwrap_err();
        assert!(matches!(err, FollowerError::Config(_)));
    }
}
