//! Follows the contracts with the shared [`Follower`] and writes what it delivers to the
//! [`Store`].
//!
//! The follower hands logs to a [`LogHandler`] one by one and saves its cursor once a range is
//! complete. Here the handler only buffers, and the cursor store is where the range is
//! written: the buffered logs, any pending rewind and the new cursor go to the database in one
//! transaction ([`Store::commit_range`]). So a crash (even `kill -9`) at any point either
//! loses the whole uncommitted range, which the follower then reads again from the saved
//! cursor, or nothing: no event is missed or applied twice. Only after the commit are the new
//! events announced to stream subscribers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::eips::BlockNumberOrTag;
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Log;
use leasehold_contracts::{
    Backoff, BackoffPolicy, ChainEvent, CursorError, CursorState, CursorStore, Deployment,
    Follower, FollowerConfig, FollowerError, LogHandler, Reorg, RpcLogSource, Step,
};
use serde_json::Value;
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::store::{IndexedLog, Store};

/// What the live stream carries.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// A committed event, as `/api/v1/events` shows it.
    Event {
        block: u64,
        log_index: u64,
        kind: &'static str,
        json: Arc<Value>,
    },
    /// Everything from `fork_block` on was undone (a reorg); canonical events follow.
    Reorg { fork_block: u64 },
}

/// Progress the API's status route shows.
#[derive(Debug, Default)]
pub struct Progress {
    /// Last block fully indexed, plus one (0: nothing yet).
    pub next_block: AtomicU64,
    /// The newest head the follower saw.
    pub head_block: AtomicU64,
}

#[derive(Debug, Default)]
struct Pending {
    logs: Vec<Log>,
    rewind_to: Option<u64>,
}

struct Shared {
    store: Store,
    deployment: Deployment,
    rpc: DynProvider,
    pending: Mutex<Pending>,
    stream: broadcast::Sender<StreamItem>,
    progress: Arc<Progress>,
}

#[derive(Debug, thiserror::Error)]
#[error("ingest state lock poisoned")]
pub struct Poisoned;

/// The follower's handler: buffers until the cursor store commits.
struct Buffer(Arc<Shared>);

impl LogHandler for Buffer {
    type Error = Poisoned;

    async fn handle(&mut self, log: &Log) -> Result<(), Poisoned> {
        self.0
            .pending
            .lock()
            .map_err(|_| Poisoned)?
            .logs
            .push(log.clone());
        Ok(())
    }

    async fn rewind(&mut self, reorg: &Reorg) -> Result<(), Poisoned> {
        let mut pending = self.0.pending.lock().map_err(|_| Poisoned)?;
        pending
            .logs
            .retain(|log| log.block_number.unwrap_or_default() < reorg.fork_block);
        pending.rewind_to = Some(
            pending
                .rewind_to
                .map_or(reorg.fork_block, |earlier| earlier.min(reorg.fork_block)),
        );
        Ok(())
    }
}

/// The follower's cursor store: commits the buffered range with the cursor.
struct Committer(Arc<Shared>);

fn backend(error: impl std::error::Error + Send + Sync + 'static) -> CursorError {
    CursorError::Backend(Box::new(error))
}

impl CursorStore for Committer {
    async fn load(&self) -> Result<Option<CursorState>, CursorError> {
        self.0.store.cursor().await.map_err(backend)
    }

    async fn save(&self, state: &CursorState) -> Result<(), CursorError> {
        let shared = &self.0;
        let (logs, rewind_to) = {
            let mut pending = shared.pending.lock().map_err(|_| CursorError::Poisoned)?;
            (std::mem::take(&mut pending.logs), pending.rewind_to.take())
        };
        let indexed = index_logs(shared, logs).await?;
        let fresh = shared
            .store
            .commit_range(rewind_to, &indexed, state, &shared.deployment)
            .await
            .map_err(backend)?;
        shared
            .progress
            .next_block
            .store(state.next_block, Ordering::Relaxed);
        if let Some(fork_block) = rewind_to {
            let _ = shared.stream.send(StreamItem::Reorg { fork_block });
        }
        for log in fresh {
            let json = crate::api::event_json(
                log.block,
                log.log_index,
                &log.tx_hash,
                log.at,
                log.event.name(),
                crate::event_json::data(&log.event),
            );
            // No subscriber is fine: the events table keeps everything for replay.
            let _ = shared.stream.send(StreamItem::Event {
                block: log.block,
                log_index: log.log_index,
                kind: log.event.name(),
                json: Arc::new(json),
            });
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum IndexError {
    #[error("reading the time of block {block}: {message}")]
    BlockTime { block: u64, message: String },
    #[error(transparent)]
    Decode(#[from] leasehold_contracts::EventDecodeError),
}

/// Decodes the range's logs (skipping events the contracts do not declare) and finds their
/// block times: from the log when the node includes it, else from the block.
async fn index_logs(shared: &Shared, logs: Vec<Log>) -> Result<Vec<IndexedLog>, CursorError> {
    let mut times: HashMap<u64, u64> = HashMap::new();
    let mut indexed = Vec::with_capacity(logs.len());
    for raw in logs {
        let Some(decoded) = ChainEvent::decode(&raw, &shared.deployment)
            .map_err(IndexError::from)
            .map_err(backend)?
        else {
            continue;
        };
        let at = match raw.block_timestamp {
            Some(at) => at,
            None => match times.get(&decoded.block) {
                Some(at) => *at,
                None => {
                    let at = block_time(&shared.rpc, decoded.block)
                        .await
                        .map_err(backend)?;
                    times.insert(decoded.block, at);
                    at
                }
            },
        };
        indexed.push(IndexedLog {
            block: decoded.block,
            log_index: decoded.log_index,
            tx_hash: raw
                .transaction_hash
                .map(crate::apply::hash)
                .unwrap_or_default(),
            at,
            event: decoded.event,
            raw,
        });
    }
    Ok(indexed)
}

async fn block_time(rpc: &DynProvider, block: u64) -> Result<u64, IndexError> {
    let found = rpc
        .get_block_by_number(BlockNumberOrTag::Number(block))
        .await
        .map_err(|e| IndexError::BlockTime {
            block,
            message: e.to_string(),
        })?;
    found
        .map(|b| b.header.timestamp)
        .ok_or_else(|| IndexError::BlockTime {
            block,
            message: "the node does not have it".to_owned(),
        })
}

/// How the ingest follows the chain.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub confirmations: u64,
    pub poll_interval: Duration,
    pub max_range: u64,
    /// How often catch-up progress is logged.
    pub progress_every: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            confirmations: 2,
            poll_interval: Duration::from_millis(500),
            max_range: leasehold_contracts::DEFAULT_MAX_LOG_RANGE,
            progress_every: Duration::from_secs(2),
        }
    }
}

/// The ingest side of a running indexer.
pub struct Ingest {
    shared: Arc<Shared>,
    config: IngestConfig,
}

impl Ingest {
    pub fn new(
        store: Store,
        deployment: Deployment,
        rpc: DynProvider,
        stream: broadcast::Sender<StreamItem>,
        progress: Arc<Progress>,
        config: IngestConfig,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                deployment,
                rpc,
                pending: Mutex::new(Pending::default()),
                stream,
                progress,
            }),
            config,
        }
    }

    fn follower(&self) -> Follower<RpcLogSource<DynProvider>, Committer> {
        let deployment = &self.shared.deployment;
        let source = RpcLogSource::new(
            self.shared.rpc.clone(),
            [deployment.marketplace, deployment.registry],
        );
        Follower::new(
            source,
            Committer(self.shared.clone()),
            FollowerConfig {
                start_block: deployment.start_block,
                confirmations: self.config.confirmations,
                max_range: self.config.max_range,
                poll_interval: self.config.poll_interval,
                ..FollowerConfig::default()
            },
        )
    }

    /// Follows the chain forever. RPC failures are retried with backoff; a failed commit
    /// drops the follower's in-memory state and starts again from the saved cursor.
    pub async fn run(self) -> ! {
        let mut backoff = Backoff::new(BackoffPolicy::default());
        let mut rate = Rate::new(self.config.progress_every);
        loop {
            if let Ok(mut pending) = self.shared.pending.lock() {
                *pending = Pending::default();
            }
            let mut follower = self.follower();
            let mut handler = Buffer(self.shared.clone());
            loop {
                match follower.step(&mut handler).await {
                    Ok(Step::Advanced {
                        from,
                        to,
                        delivered,
                    }) => {
                        backoff.reset();
                        rate.advanced(from, to, delivered, &self.shared.progress);
                    }
                    Ok(Step::CaughtUp { head, .. }) => {
                        backoff.reset();
                        self.shared
                            .progress
                            .head_block
                            .store(head, Ordering::Relaxed);
                        rate.caught_up(&self.shared.progress);
                        tokio::time::sleep(self.config.poll_interval).await;
                    }
                    Ok(Step::Rewound {
                        fork_block, depth, ..
                    }) => {
                        backoff.reset();
                        warn!(fork_block, depth, "reorg: index rewound to the fork");
                    }
                    Err(FollowerError::Source { source, .. }) => {
                        let delay = backoff.next_delay();
                        warn!(error = %source, ?delay, "RPC failed; retrying");
                        tokio::time::sleep(delay).await;
                    }
                    Err(error) => {
                        let delay = backoff.next_delay();
                        warn!(error = %error, ?delay, "indexing failed; restarting from the saved cursor");
                        tokio::time::sleep(delay).await;
                        break;
                    }
                }
            }
        }
    }
}

/// Catch-up figures: blocks and events per second since the last report.
struct Rate {
    every: Duration,
    since: Instant,
    blocks: u64,
    events: u64,
    reported_caught_up: bool,
    /// The whole catch-up (until the follower is first caught up again).
    started: Instant,
    total_blocks: u64,
    total_events: u64,
}

impl Rate {
    fn new(every: Duration) -> Self {
        Self {
            every,
            since: Instant::now(),
            blocks: 0,
            events: 0,
            reported_caught_up: false,
            started: Instant::now(),
            total_blocks: 0,
            total_events: 0,
        }
    }

    fn advanced(&mut self, from: u64, to: u64, delivered: usize, progress: &Progress) {
        self.blocks = self
            .blocks
            .saturating_add(to.saturating_sub(from).saturating_add(1));
        self.events = self.events.saturating_add(delivered as u64);
        self.total_blocks = self
            .total_blocks
            .saturating_add(to.saturating_sub(from).saturating_add(1));
        self.total_events = self.total_events.saturating_add(delivered as u64);
        self.reported_caught_up = false;
        let elapsed = self.since.elapsed();
        if elapsed >= self.every {
            let seconds = elapsed.as_secs_f64();
            info!(
                indexed_block = to,
                head_block = progress.head_block.load(Ordering::Relaxed),
                blocks_per_sec = format!("{:.0}", self.blocks as f64 / seconds),
                events_per_sec = format!("{:.0}", self.events as f64 / seconds),
                "catching up"
            );
            self.since = Instant::now();
            self.blocks = 0;
            self.events = 0;
        }
    }

    fn caught_up(&mut self, progress: &Progress) {
        if !self.reported_caught_up {
            let seconds = self.started.elapsed().as_secs_f64().max(f64::EPSILON);
            info!(
                indexed_block = progress
                    .next_block
                    .load(Ordering::Relaxed)
                    .saturating_sub(1),
                head_block = progress.head_block.load(Ordering::Relaxed),
                blocks = self.total_blocks,
                events = self.total_events,
                blocks_per_sec = format!("{:.0}", self.total_blocks as f64 / seconds),
                events_per_sec = format!("{:.0}", self.total_events as f64 / seconds),
                "caught up; following new blocks"
            );
            self.started = Instant::now();
            self.total_blocks = 0;
            self.total_events = 0;
            self.reported_caught_up = true;
            self.since = Instant::now();
            self.blocks = 0;
            self.events = 0;
        }
    }
}
