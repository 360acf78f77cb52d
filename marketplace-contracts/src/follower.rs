//! Chain event follower: reads contract logs with `eth_getLogs` over bounded block ranges a few
//! confirmations behind the head, hands each log to an idempotent handler in (block, log index)
//! order, and persists a cursor once a whole range has been handled.
//!
//! Delivery guarantee: within one [`Follower`] every log of the canonical chain reaches the
//! handler exactly once. Across restarts a range whose cursor was not yet saved is delivered
//! again, which is why handlers must be idempotent.
//!
//! Reorgs, of any depth: the follower keeps the hash of the last block of every range it
//! finished ([`CursorState::checkpoints`], saved with the cursor). Each step compares the
//! newest one with the chain; when it differs, older ones are compared until one matches,
//! and the follower rewinds to the block after it (to `start_block` when none matches: the
//! checkpoints are thinned, never dropped entirely, so this only happens on a chain that
//! shares nothing with the one read). The handler hears of it first ([`LogHandler::rewind`],
//! with the logs this process delivered from the abandoned blocks), then the canonical logs
//! from the fork on are delivered as new. A range is only delivered when the hash of its last
//! block and of the newest checkpoint did not change while its logs were read, so no log of a
//! chain that was replaced mid-read is ever handed over.

use std::future::Future;
use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, Log};
use tracing::{debug, info, warn};

use crate::cursor::{BlockRef, CursorError, CursorState, CursorStore};
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
    /// The hash of the canonical block `number`; `None` when the chain is shorter.
    fn block_hash(
        &self,
        number: u64,
    ) -> impl Future<Output = Result<Option<B256>, SourceError>> + Send;
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

    async fn block_hash(&self, number: u64) -> Result<Option<B256>, SourceError> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(number))
            .await
            .map_err(|e| SourceError::new(format!("eth_getBlockByNumber {number}: {e}")))?;
        Ok(block.map(|block| block.header.hash))
    }
}

/// A reorg the follower found: the blocks from `fork_block` on that it had read are no
/// longer canonical.
#[derive(Debug, Clone, PartialEq)]
pub struct Reorg {
    /// The first block that is read again (the block after the newest checkpoint still on
    /// the chain). The real fork may be later: what lies between is simply read again.
    pub fork_block: u64,
    /// Blocks the follower had finished that are read again (`fork_block` through the
    /// newest checkpoint): the reorg's depth as far as this follower can tell.
    pub depth: u64,
    /// The logs this process delivered from `fork_block` on, in delivery order. After a
    /// restart it holds only what was delivered since, so a handler that must undo work
    /// also looks at its own state from `fork_block` on.
    pub retracted: Vec<Log>,
}

/// Consumer of followed logs. Must be idempotent: after a crash a log may be seen again.
pub trait LogHandler {
    type Error: std::error::Error + Send + Sync + 'static;
    fn handle(&mut self, log: &Log) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// The chain was reorganised: what was delivered from `reorg.fork_block` on may be gone,
    /// and the canonical logs from there are delivered next. Called before the cursor moves
    /// back, so after a crash it is called again: it must be idempotent too.
    fn rewind(&mut self, reorg: &Reorg) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = reorg;
        async { Ok(()) }
    }
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
    /// Block hashes kept to find a fork point. Past this, the older half is thinned to every
    /// other entry, so the kept blocks reach back ever further at ever wider spacing and a
    /// reorg of any depth still finds a common block (at worst further back than the fork).
    pub max_checkpoints: usize,
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
            max_checkpoints: DEFAULT_MAX_CHECKPOINTS,
        }
    }
}

/// See [`FollowerConfig::max_checkpoints`].
pub const DEFAULT_MAX_CHECKPOINTS: usize = 128;

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
    /// A reorg was found; the cursor moved back to `fork_block` and nothing was delivered.
    Rewound {
        fork_block: u64,
        depth: u64,
        retracted: usize,
    },
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
    /// Reorgs found (each a rewind).
    pub reorgs: u64,
    /// The deepest of them, in blocks ([`Reorg::depth`]).
    pub max_reorg_depth: u64,
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
    /// Ascending by number; loaded with `next_block`.
    checkpoints: Vec<BlockRef>,
    /// Logs delivered at or after the oldest checkpoint, to tell the handler what a reorg
    /// took away.
    recent: Vec<(LogPosition, Log)>,
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
            checkpoints: Vec::new(),
            recent: Vec::new(),
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
        let state = self
            .store
            .load()
            .await?
            .unwrap_or(CursorState::at(self.config.start_block));
        self.next_block = Some(state.next_block);
        self.checkpoints = state.checkpoints;
        Ok(state.next_block)
    }

    async fn save_cursor(&mut self, next_block: u64) -> Result<(), CursorError> {
        let state = CursorState {
            next_block,
            checkpoints: self.checkpoints.clone(),
        };
        self.store.save(&state).await?;
        self.next_block = Some(next_block);
        Ok(())
    }

    async fn canonical_hash(&self, number: u64) -> Result<Option<B256>, SourceError> {
        self.call(self.source.block_hash(number)).await
    }

    /// Compares the newest checkpoint with the chain; on a difference, finds the newest one
    /// that still matches. `None` when nothing changed.
    async fn find_reorg(&self) -> Result<Option<(u64, u64)>, SourceError> {
        let Some(newest) = self.checkpoints.last() else {
            return Ok(None);
        };
        if self.canonical_hash(newest.number).await? == Some(newest.hash) {
            return Ok(None);
        }
        let mut fork_block = self.config.start_block;
        for checkpoint in self.checkpoints.iter().rev().skip(1) {
            if self.canonical_hash(checkpoint.number).await? == Some(checkpoint.hash) {
                fork_block = checkpoint.number.saturating_add(1);
                break;
            }
        }
        let depth = newest.number.saturating_add(1).saturating_sub(fork_block);
        Ok(Some((fork_block, depth)))
    }

    /// Tells the handler, then moves the cursor back to `fork_block`.
    async fn rewind<H: LogHandler>(
        &mut self,
        handler: &mut H,
        fork_block: u64,
        depth: u64,
    ) -> Result<Step, StepError<H::Error>> {
        let retracted: Vec<Log> = self
            .recent
            .iter()
            .filter(|((block, _), _)| *block >= fork_block)
            .map(|(_, log)| log.clone())
            .collect();
        warn!(
            fork_block,
            depth,
            retracted = retracted.len(),
            "chain reorganised: rewinding the follower to the fork"
        );
        let reorg = Reorg {
            fork_block,
            depth,
            retracted,
        };
        handler.rewind(&reorg).await.map_err(|source| {
            StepError::Fatal(FollowerError::Handler {
                block: fork_block,
                log_index: 0,
                source,
            })
        })?;
        self.checkpoints.retain(|c| c.number < fork_block);
        self.recent.retain(|((block, _), _)| *block < fork_block);
        self.delivered_through = None;
        let next = self.next_block().await?.min(fork_block);
        self.save_cursor(next).await?;
        self.stats.reorgs = self.stats.reorgs.saturating_add(1);
        self.stats.max_reorg_depth = self.stats.max_reorg_depth.max(depth);
        Ok(Step::Rewound {
            fork_block,
            depth,
            retracted: reorg.retracted.len(),
        })
    }

    /// Records `to` as finished on the chain with `hash`, thinning old checkpoints.
    fn add_checkpoint(&mut self, number: u64, hash: B256) {
        if self.checkpoints.last().is_some_and(|c| c.number >= number) {
            // A cursor held back below a newer checkpoint (re-reading after a restart): the
            // newer one already vouches for this block.
            return;
        }
        self.checkpoints.push(BlockRef { number, hash });
        let cap = self.config.max_checkpoints.max(2);
        if self.checkpoints.len() > cap {
            let older_half = self.checkpoints.len() / 2;
            let mut index = 0usize;
            // Keep the oldest and every other one of the older half.
            self.checkpoints.retain(|_| {
                let keep = index >= older_half || index.is_multiple_of(2);
                index += 1;
                keep
            });
        }
        if let Some(oldest) = self.checkpoints.first().map(|c| c.number) {
            self.recent.retain(|((block, _), _)| *block >= oldest);
        }
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
        let safe_head = head
            .checked_sub(self.config.confirmations)
            .filter(|safe_head| from <= *safe_head);
        let Some(safe_head) = safe_head else {
            // Nothing new to read, but what was read may have been replaced meanwhile.
            if let Some((fork_block, depth)) = self.find_reorg().await.map_err(StepError::Source)? {
                return self.rewind(handler, fork_block, depth).await;
            }
            return Ok(Step::CaughtUp {
                next_block: from,
                head,
            });
        };
        let to = self.range.end(from, safe_head);
        let to_hash = self
            .canonical_hash(to)
            .await
            .map_err(StepError::Source)?
            .ok_or_else(|| {
                StepError::Source(SourceError::new(format!(
                    "block {to} is missing though the head is {head}"
                )))
            })?;
        let logs = match self.call(self.source.logs(from, to)).await {
            Ok(logs) => logs,
            Err(err) => {
                // Providers reject ranges with too many results; a smaller one may pass.
                self.range.shrink();
                return Err(StepError::Source(err));
            }
        };
        // Checked after the read: a reorg before or during it shows here, and one after it
        // shows at the next step, since `to_hash` is then kept as a checkpoint.
        if let Some((fork_block, depth)) = self.find_reorg().await.map_err(StepError::Source)? {
            return self.rewind(handler, fork_block, depth).await;
        }
        if self.canonical_hash(to).await.map_err(StepError::Source)? != Some(to_hash) {
            return Err(StepError::Source(SourceError::new(format!(
                "block {to} changed while its logs were read (a reorg at the head); reading again"
            ))));
        }
        let logs = order_logs(logs, from, to).map_err(StepError::Source)?;
        if let Some((_, stale)) = logs
            .iter()
            .find(|(position, log)| position.0 == to && log.block_hash != Some(to_hash))
        {
            return Err(StepError::Source(SourceError::new(format!(
                "eth_getLogs answered for block {to} with a log of block {:?}, not {to_hash}; reading again",
                stale.block_hash
            ))));
        }
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
            self.recent.push((*position, log.clone()));
            delivered += 1;
            self.stats.delivered = self.stats.delivered.saturating_add(1);
        }
        let next = to.saturating_add(1);
        self.add_checkpoint(to, to_hash);
        self.save_cursor(next).await?;
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
                Ok(Step::Advanced { .. } | Step::Rewound { .. }) => {
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

    /// A scripted chain: a head, a set of logs, and queued failures. Block hashes derive
    /// from the block number and the chain's `fork` generation for blocks at or above the
    /// fork block, so [`FakeChain::reorg`] replaces every block from there on.
    #[derive(Default)]
    struct FakeChain {
        head: Mutex<u64>,
        logs: Mutex<Vec<Log>>,
        failures: Mutex<VecDeque<&'static str>>,
        calls: Mutex<Vec<(u64, u64)>>,
        fork: Mutex<(u64, u8)>,
    }

    impl FakeChain {
        fn hash(&self, block: u64) -> B256 {
            let (fork_block, generation) = *self.fork.lock().unwrap();
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&block.to_be_bytes());
            if block >= fork_block {
                bytes[8] = generation;
            }
            B256::from(bytes)
        }
        /// Replaces blocks `fork_block..` by new ones holding the logs at `positions`.
        fn reorg(&self, fork_block: u64, positions: &[LogPosition]) {
            let mut fork = self.fork.lock().unwrap();
            *fork = (fork_block, fork.1.wrapping_add(1));
            let mut logs = self.logs.lock().unwrap();
            logs.retain(|log| log.block_number.unwrap() < fork_block);
            logs.extend(positions.iter().map(|&(b, i)| log_at(b, i)));
        }
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
                .lock()
                .unwrap()
                .iter()
                .rev()
                .filter(|l| (from..=to).contains(&l.block_number.unwrap()))
                .map(|l| Log {
                    block_hash: Some(self.hash(l.block_number.unwrap())),
                    ..l.clone()
                })
                .collect())
        }
        async fn block_hash(&self, number: u64) -> Result<Option<B256>, SourceError> {
            self.take_failure("hash")?;
            Ok((number <= *self.head.lock().unwrap()).then(|| self.hash(number)))
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("handler refused")]
    struct Refused;

    #[derive(Default)]
    struct Collector {
        seen: Vec<LogPosition>,
        fail_at: Option<LogPosition>,
        /// (fork block, depth, retracted positions) of every rewind.
        rewinds: Vec<(u64, u64, Vec<LogPosition>)>,
    }

    impl Collector {
        /// What the handler believes the chain holds: seen minus retracted.
        fn live(&self) -> Vec<LogPosition> {
            self.seen.clone()
        }
    }

    impl LogHandler for Collector {
        type Error = Refused;
        async fn rewind(&mut self, reorg: &Reorg) -> Result<(), Refused> {
            let retracted: Vec<LogPosition> = reorg
                .retracted
                .iter()
                .map(|l| (l.block_number.unwrap(), l.log_index.unwrap()))
                .collect();
            self.seen.retain(|p| !retracted.contains(p));
            self.rewinds
                .push((reorg.fork_block, reorg.depth, retracted));
            Ok(())
        }
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
            max_checkpoints: DEFAULT_MAX_CHECKPOINTS,
        }
    }

    fn chain(head: u64, positions: &[LogPosition]) -> FakeChain {
        FakeChain {
            head: Mutex::new(head),
            logs: Mutex::new(positions.iter().map(|&(b, i)| log_at(b, i)).collect()),
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
        assert_eq!(store.load().await.unwrap().unwrap().next_block, 19);
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
        store.save(&CursorState::at(10)).await.unwrap();
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
            while store.load().await.unwrap().map(|s| s.next_block) != Some(11) {
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
    async fn a_reorg_behind_the_cursor_retracts_and_redelivers_from_the_fork() {
        let chain = chain(20, &[(3, 0), (9, 0), (12, 0), (15, 0)]);
        let store = MemoryCursorStore::default();
        let mut follower = Follower::new(&chain, &store, config(2, 4));
        let mut handler = Collector::default();
        drain(&mut follower, &mut handler).await.unwrap();
        assert_eq!(handler.live(), vec![(3, 0), (9, 0), (12, 0), (15, 0)]);

        // Blocks 10.. replaced: 12 and 15 gone, a new log at 11; the head moves on.
        chain.reorg(10, &[(11, 0), (17, 0)]);
        *chain.head.lock().unwrap() = 21;
        let step = follower.step(&mut handler).await.unwrap();
        // Checkpoints are range ends 3, 7, 11, 15, 18: 7 is the newest that still matches.
        assert_eq!(
            step,
            Step::Rewound {
                fork_block: 8,
                depth: 11,
                retracted: 3
            }
        );
        assert_eq!(handler.rewinds[0].2, vec![(9, 0), (12, 0), (15, 0)]);
        assert_eq!(store.load().await.unwrap().unwrap().next_block, 8);
        drain(&mut follower, &mut handler).await.unwrap();
        assert_eq!(handler.live(), vec![(3, 0), (9, 0), (11, 0), (17, 0)]);
        assert_eq!(follower.stats().reorgs, 1);
        assert_eq!(follower.stats().max_reorg_depth, 11);
    }

    #[tokio::test]
    async fn a_restarted_follower_finds_a_reorg_from_the_saved_checkpoints() {
        let chain = chain(10, &[(2, 0), (6, 0)]);
        let store = MemoryCursorStore::default();
        drain(
            &mut Follower::new(&chain, &store, config(0, 3)),
            &mut Collector::default(),
        )
        .await
        .unwrap();
        chain.reorg(5, &[(7, 1)]);
        let mut restarted = Follower::new(&chain, &store, config(0, 3));
        let mut handler = Collector::default();
        let step = restarted.step(&mut handler).await.unwrap();
        // Range ends 2, 5, 8, 10: 2 still matches. Nothing was delivered by this process.
        assert!(
            matches!(
                step,
                Step::Rewound {
                    fork_block: 3,
                    retracted: 0,
                    ..
                }
            ),
            "{step:?}"
        );
        drain(&mut restarted, &mut handler).await.unwrap();
        assert_eq!(handler.live(), vec![(7, 1)]);
    }

    #[tokio::test]
    async fn a_block_that_changes_during_the_read_is_not_delivered() {
        let chain = chain(10, &[(4, 0)]);
        let store = MemoryCursorStore::default();
        let mut follower = Follower::new(&chain, &store, config(0, 100));
        let mut handler = Collector::default();
        // The first hash of block 10 is taken before the read; a reorg lands in between.
        chain.fail_next("hash");
        assert!(follower.step(&mut handler).await.is_err());
        struct ReorgDuringRead<'a>(&'a FakeChain);
        let source = ReorgDuringRead(&chain);
        impl LogSource for ReorgDuringRead<'_> {
            async fn head_block(&self) -> Result<u64, SourceError> {
                (&self.0).head_block().await
            }
            async fn logs(&self, from: u64, to: u64) -> Result<Vec<Log>, SourceError> {
                let logs = (&self.0).logs(from, to).await;
                self.0.reorg(3, &[(5, 0)]);
                logs
            }
            async fn block_hash(&self, number: u64) -> Result<Option<B256>, SourceError> {
                (&self.0).block_hash(number).await
            }
        }
        let mut racing = Follower::new(source, &store, config(0, 100));
        let err = racing.step(&mut handler).await.unwrap_err();
        assert!(err.to_string().contains("changed while"), "{err}");
        assert!(handler.seen.is_empty(), "{:?}", handler.seen);
        drain(&mut follower, &mut handler).await.unwrap();
        assert_eq!(handler.live(), vec![(5, 0)]);
    }

    #[tokio::test]
    async fn checkpoints_are_bounded_yet_reach_back_to_the_start() {
        let chain = chain(400, &[(1, 0)]);
        let store = MemoryCursorStore::default();
        let mut cfg = config(0, 1);
        cfg.max_checkpoints = 16;
        let mut follower = Follower::new(&chain, &store, cfg);
        let mut handler = Collector::default();
        drain(&mut follower, &mut handler).await.unwrap();
        let saved = store.load().await.unwrap().unwrap();
        assert!(saved.checkpoints.len() <= 16, "{}", saved.checkpoints.len());
        assert_eq!(saved.checkpoints.first().map(|c| c.number), Some(0));
        assert_eq!(saved.checkpoints.last().map(|c| c.number), Some(400));
        // A reorg of 350 blocks still finds a common block below the fork.
        chain.reorg(50, &[]);
        let Step::Rewound { fork_block, .. } = follower.step(&mut handler).await.unwrap() else {
            panic!("no rewind");
        };
        assert!(fork_block <= 50, "{fork_block}");
        drain(&mut follower, &mut handler).await.unwrap();
        assert_eq!(handler.live(), vec![(1, 0)]);
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
