//! The daemon's controller (the kube-rs shape): the chain follower only ingests typed
//! events into keyed work ([`ingest`]); workers reconcile one key at a time
//! ([`reconcile`]); a failure backs off its own key only.
//!
//! Delivery: the follower's cursor is saved through [`WatermarkCursor`], which never moves it
//! past the oldest block whose work is unfinished. After a crash the follower reads that
//! block again and the work is queued again; every reconcile is idempotent, so work done
//! twice does no harm and work queued but not done is never lost.

use std::path::Path;
use std::sync::Arc;

use alloy::primitives::Address;
use leasehold_contracts::{
    ChainEvent, ChainLog, CursorError, CursorState, CursorStore, FileCursorStore, OrderPosted,
};
use tracing::{debug, info, warn};

use super::queue::{Outcome, Task, WorkQueue};
use super::{Core, DaemonError, unix_now};
use crate::store::{Store, StoreError};

/// The name of the daemon's follower in the store's cursor table.
pub const FOLLOWER: &str = "chain";
/// Where the cursor lived before the store held it (imported once, then removed).
pub const LEGACY_CURSOR_FILE: &str = "follower-cursor.json";

/// What work is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkKey {
    /// An order and the lease it becomes (lease ids are order ids): bidding, the lease's
    /// start and its end never interleave, and nothing else waits for them.
    Order(u64),
    /// Collecting a lease's payment (or closing it when insolvent).
    Payment(u64),
    /// Resolving the bonds of our bids on an order that ended (its own key: a slow or failing
    /// release never holds up the order's lease work).
    Bonds(u64),
    /// After a reorg: queueing a resync of every order the store holds.
    Resync,
}

/// One thing to bring about for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// An order was posted: bid when eligible and it fits.
    Bid(Box<OrderPosted>),
    /// Our bid is on chain: remember its id.
    BidPlaced { bid_id: u64 },
    /// Our bid lost, was withdrawn or evicted, or the order was cancelled: free the
    /// reservation.
    Release,
    /// We won the lease.
    LeaseWon { tenant: Address },
    /// The lease closed on chain.
    LeaseClosed,
    /// Withdraw what the lease owes (or close it when insolvent).
    Collect,
    /// The order ended (leased or cancelled): resolve the bonds our bids on it still lock.
    ReleaseBonds,
    /// A reorg may have undone what the daemon did for this order: make it match the
    /// canonical chain ([`Core::resync_order`]).
    Resync,
    /// A reorg from `block` on: resync every order with a lease or reservation in the store.
    ResyncAll { block: u64 },
    /// The tenant recorded a new manifest for the lease: remember the revision until its
    /// manifest arrives.
    ManifestUpdated {
        revision: u32,
        manifest_hash: alloy::primitives::B256,
    },
}

/// The daemon's queue.
pub type Queue = WorkQueue<WorkKey, Work>;

/// Queues the work a chain event asks of this provider; events that need nothing are
/// dropped here.
pub fn ingest(queue: &Queue, me: Address, log: ChainLog) {
    let block = Some(log.block);
    // An order that ends frees the bonds of every bid on it: ours are released (or, for a
    // bid we withdrew or that was passed over, forfeited) by our own `releaseBonds`.
    let ended = match &log.event {
        ChainEvent::LeaseCreated { lease_id: id, .. }
        | ChainEvent::OrderCancelled { order_id: id, .. } => Some(*id),
        _ => None,
    };
    let (key, work) = match log.event {
        ChainEvent::OrderCreated(order) => {
            (WorkKey::Order(order.order_id), Work::Bid(Box::new(order)))
        }
        ChainEvent::BidPlaced {
            order_id,
            bid_id,
            provider,
            ..
        } if provider == me => (WorkKey::Order(order_id), Work::BidPlaced { bid_id }),
        ChainEvent::BidWithdrawn {
            order_id, provider, ..
        }
        | ChainEvent::BidEvicted {
            order_id, provider, ..
        } if provider == me => (WorkKey::Order(order_id), Work::Release),
        ChainEvent::OrderCancelled { order_id, .. } => (WorkKey::Order(order_id), Work::Release),
        ChainEvent::LeaseCreated {
            lease_id,
            tenant,
            provider,
            ..
        } => {
            let work = if provider == me {
                Work::LeaseWon { tenant }
            } else {
                // Someone else won: our bid, if any, lost.
                Work::Release
            };
            (WorkKey::Order(lease_id), work)
        }
        ChainEvent::LeaseClosed { lease_id, .. } => (WorkKey::Order(lease_id), Work::LeaseClosed),
        ChainEvent::ManifestUpdated {
            lease_id,
            revision,
            manifest_hash,
        } => (
            WorkKey::Order(lease_id),
            Work::ManifestUpdated {
                revision,
                manifest_hash,
            },
        ),
        other => {
            debug!(event = other.name(), "event needs no reaction");
            return;
        }
    };
    if !queue.push(key, block, work) {
        debug!(?key, "work already queued");
    }
    if let Some(order_id) = ended {
        queue.push(WorkKey::Bonds(order_id), block, Work::ReleaseBonds);
    }
}

/// Brings about one item of work. Errors back the key off; a bid whose window has passed
/// (or that failed `max_bid_attempts` times) is given up, since nobody can take it any more.
pub async fn reconcile(core: Arc<Core>, task: Task<WorkKey, Work>) -> Outcome {
    let Task {
        key,
        work,
        failures,
    } = task;
    let result = match (&key, &work) {
        (WorkKey::Order(_), Work::Bid(order)) => core.on_order_created(order).await,
        (WorkKey::Order(order_id), Work::BidPlaced { bid_id }) => {
            core.on_bid_placed(*order_id, *bid_id).await
        }
        (WorkKey::Order(order_id), Work::Release) => core.release_reservation(*order_id).await,
        (WorkKey::Order(lease_id), Work::LeaseWon { tenant }) => {
            match core.on_lease_won(*lease_id, *tenant).await {
                Ok(true) => {
                    // The lease adopted a pre-lease start: its deploy finds the replicas
                    // running and confirms delivery, which may wait; not on this key.
                    let (core, lease_id) = (Arc::clone(&core), *lease_id);
                    tokio::spawn(async move {
                        if let Err(error) = core.deploy_lease(lease_id).await {
                            warn!(lease_id, %error, "deploy of an adopted pre-lease start failed; the reconciler retries");
                        }
                    });
                    Ok(())
                }
                Ok(false) => Ok(()),
                Err(error) => Err(error),
            }
        }
        (WorkKey::Order(lease_id), Work::LeaseClosed) => core.on_lease_closed(*lease_id).await,
        (
            WorkKey::Order(lease_id),
            Work::ManifestUpdated {
                revision,
                manifest_hash,
            },
        ) => {
            core.on_manifest_updated(*lease_id, *revision, *manifest_hash)
                .await
        }
        (WorkKey::Payment(lease_id), Work::Collect) => core.collect(*lease_id).await.map(drop),
        (WorkKey::Bonds(order_id), Work::ReleaseBonds) => core.release_own_bonds(*order_id).await,
        (WorkKey::Order(order_id), Work::Resync) => core.resync_order(*order_id).await,
        (WorkKey::Resync, Work::ResyncAll { block }) => core.queue_resyncs(*block).await,
        (key, work) => {
            warn!(?key, ?work, "work queued under the wrong key; dropped");
            return Outcome::GiveUp;
        }
    };
    let Err(error) = result else {
        if failures > 0 {
            info!(?key, failures, "work succeeded after retries");
        }
        return Outcome::Done;
    };
    core.metrics.work_failures.inc();
    let attempts = failures.saturating_add(1);
    let give_up = match &work {
        Work::Bid(order) => {
            order.bid_window_end <= unix_now() || attempts >= core.options.max_bid_attempts
        }
        Work::Collect | Work::ReleaseBonds => attempts >= core.options.max_bid_attempts,
        _ => false,
    };
    if give_up {
        warn!(?key, attempts, %error, "work failed; giving up");
        if let Work::Bid(order) = &work
            && let Err(error) = core.release_reservation(order.order_id).await
        {
            warn!(?key, %error, "releasing the reservation of an abandoned bid failed; expiry frees it");
        }
        Outcome::GiveUp
    } else {
        warn!(?key, attempts, %error, "work failed; retrying after backoff");
        Outcome::Failed
    }
}

/// The follower's cursor in the store, held back to the oldest block with unfinished work.
pub struct WatermarkCursor {
    store: Store,
    queue: Arc<Queue>,
}

impl WatermarkCursor {
    pub fn new(store: Store, queue: Arc<Queue>) -> Self {
        Self { store, queue }
    }
}

fn backend(error: StoreError) -> CursorError {
    CursorError::Backend(Box::new(error))
}

impl CursorStore for WatermarkCursor {
    async fn load(&self) -> Result<Option<CursorState>, CursorError> {
        self.store.cursor_state(FOLLOWER).await.map_err(backend)
    }

    async fn save(&self, state: &CursorState) -> Result<(), CursorError> {
        let next_block = self
            .queue
            .lowest_block()
            .map_or(state.next_block, |pending| pending.min(state.next_block));
        let state = CursorState {
            next_block,
            checkpoints: state.checkpoints.clone(),
        };
        self.store
            .save_cursor_state(FOLLOWER, &state)
            .await
            .map_err(backend)
    }
}

/// Moves a cursor file of an older daemon into the store, once: the store's cursor wins
/// when both exist, and the file is removed either way so there is one source of truth.
pub async fn import_legacy_cursor(store: &Store, data_dir: &Path) -> Result<(), DaemonError> {
    let path = data_dir.join(LEGACY_CURSOR_FILE);
    if !path.exists() {
        return Ok(());
    }
    let file = FileCursorStore::new(&path);
    let imported = file
        .load()
        .await
        .map_err(|error| DaemonError::Cursor(error.to_string()))?;
    if store.cursor(FOLLOWER).await?.is_none()
        && let Some(imported) = imported
    {
        let next_block = imported.next_block;
        store.save_cursor_state(FOLLOWER, &imported).await?;
        info!(next_block, file = %path.display(), "follower cursor imported into the store");
    }
    std::fs::remove_file(&path)
        .map_err(|error| DaemonError::Cursor(format!("removing {}: {error}", path.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::queue::RetryPolicy;

    async fn sqlite_store(dir: &Path) -> Store {
        let url = format!("sqlite://{}?mode=rwc", dir.join("provider.db").display());
        Store::connect(&url).await.expect("store")
    }

    #[tokio::test]
    async fn an_old_cursor_file_is_imported_once_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = sqlite_store(dir.path()).await;
        let file = FileCursorStore::new(dir.path().join(LEGACY_CURSOR_FILE));
        file.save(&CursorState::at(1234))
            .await
            .expect("write the old file");
        import_legacy_cursor(&store, dir.path())
            .await
            .expect("import");
        assert_eq!(store.cursor(FOLLOWER).await.expect("cursor"), Some(1234));
        assert!(!file.path().exists(), "one source of truth: the file goes");

        // A file that reappears (an old binary ran again) never overrides the store.
        store.set_cursor(FOLLOWER, 2000).await.expect("cursor");
        file.save(&CursorState::at(10))
            .await
            .expect("write the old file");
        import_legacy_cursor(&store, dir.path())
            .await
            .expect("import");
        assert_eq!(store.cursor(FOLLOWER).await.expect("cursor"), Some(2000));
        assert!(!file.path().exists());
        // Nothing to import is fine.
        import_legacy_cursor(&store, dir.path())
            .await
            .expect("no file");
        store.close().await;
    }

    #[tokio::test]
    async fn the_saved_cursor_never_passes_unfinished_work() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = sqlite_store(dir.path()).await;
        let queue = Arc::new(Queue::new(RetryPolicy::default()));
        let cursor = WatermarkCursor::new(store.clone(), queue.clone());
        cursor.save(&CursorState::at(50)).await.expect("save");
        assert_eq!(
            cursor.load().await.expect("load").map(|s| s.next_block),
            Some(50)
        );

        let me = Address::repeat_byte(1);
        let closed = |lease_id| ChainLog {
            block: 40 + lease_id,
            log_index: 0,
            event: ChainEvent::LeaseClosed {
                lease_id,
                closed_by: me,
                reason: 1,
                paid_to_provider: Default::default(),
                refunded_to_tenant: Default::default(),
            },
        };
        ingest(&queue, me, closed(7));
        ingest(&queue, me, closed(9));
        ingest(&queue, me, closed(7));
        assert_eq!(queue.len(), 2, "the redelivered event is queued once");
        cursor.save(&CursorState::at(60)).await.expect("save");
        assert_eq!(
            cursor.load().await.expect("load").map(|s| s.next_block),
            Some(47)
        );

        let first = queue.next().await;
        assert_eq!(first.key, WorkKey::Order(7));
        queue.finish(&first.key, Outcome::Done);
        cursor.save(&CursorState::at(60)).await.expect("save");
        assert_eq!(
            cursor.load().await.expect("load").map(|s| s.next_block),
            Some(49)
        );
        let second = queue.next().await;
        queue.finish(&second.key, Outcome::Done);
        cursor.save(&CursorState::at(60)).await.expect("save");
        assert_eq!(
            cursor.load().await.expect("load").map(|s| s.next_block),
            Some(60)
        );
        store.close().await;
    }

    #[test]
    fn events_of_others_need_no_work_and_ours_are_keyed_by_order() {
        let queue = Queue::new(RetryPolicy::default());
        let me = Address::repeat_byte(1);
        let other = Address::repeat_byte(2);
        let at = |event| ChainLog {
            block: 3,
            log_index: 0,
            event,
        };
        ingest(
            &queue,
            me,
            at(ChainEvent::BidPlaced {
                order_id: 4,
                bid_id: 0,
                provider: other,
                price_per_hour: Default::default(),
                gpu_model: Default::default(),
            }),
        );
        ingest(
            &queue,
            me,
            at(ChainEvent::PaymentWithdrawn {
                lease_id: 4,
                provider: me,
                amount: Default::default(),
                total_paid: Default::default(),
            }),
        );
        assert!(queue.is_empty());
        ingest(
            &queue,
            me,
            at(ChainEvent::BidEvicted {
                order_id: 5,
                bid_id: 1,
                provider: me,
                reason: 0,
            }),
        );
        let task = futures_util::FutureExt::now_or_never(queue.next()).expect("ready");
        assert_eq!((task.key, task.work), (WorkKey::Order(5), Work::Release));
        queue.finish(&task.key, Outcome::Done);
        // an order leased to someone else ends: its reservation is released and, on its own
        // key, the bonds of our bids on it are resolved
        ingest(
            &queue,
            me,
            at(ChainEvent::LeaseCreated {
                lease_id: 6,
                tenant: other,
                provider: other,
                bid_id: 0,
                price_per_hour: Default::default(),
                gpu_model: Default::default(),
            }),
        );
        let mut queued = Vec::new();
        for _ in 0..2 {
            let task = futures_util::FutureExt::now_or_never(queue.next()).expect("ready");
            queue.finish(&task.key, Outcome::Done);
            queued.push((task.key, task.work));
        }
        queued.sort_by_key(|(key, _)| *key);
        assert_eq!(
            queued,
            vec![
                (WorkKey::Order(6), Work::Release),
                (WorkKey::Bonds(6), Work::ReleaseBonds)
            ]
        );
        for (provider, expected) in [
            (me, Work::LeaseWon { tenant: other }),
            (other, Work::Release),
        ] {
            let queue = Queue::new(RetryPolicy::default());
            ingest(
                &queue,
                me,
                at(ChainEvent::LeaseCreated {
                    lease_id: 4,
                    tenant: other,
                    provider,
                    bid_id: 0,
                    price_per_hour: Default::default(),
                    gpu_model: Default::default(),
                }),
            );
            let task = futures_util::FutureExt::now_or_never(queue.next()).expect("ready");
            assert_eq!((task.key, task.work), (WorkKey::Order(4), expected));
        }
    }

    #[test]
    fn a_manifest_update_is_work_for_its_lease() {
        let queue = Queue::new(RetryPolicy::default());
        let manifest_hash = alloy::primitives::B256::repeat_byte(7);
        let update = ChainLog {
            block: 9,
            log_index: 0,
            event: ChainEvent::ManifestUpdated {
                lease_id: 4,
                revision: 2,
                manifest_hash,
            },
        };
        ingest(&queue, Address::repeat_byte(1), update.clone());
        ingest(&queue, Address::repeat_byte(1), update);
        assert_eq!(queue.len(), 1, "a redelivered event is queued once");
        assert_eq!(queue.lowest_block(), Some(9), "the cursor waits for it");
        let task = futures_util::FutureExt::now_or_never(queue.next()).expect("ready");
        assert_eq!(
            (task.key, task.work),
            (
                WorkKey::Order(4),
                Work::ManifestUpdated {
                    revision: 2,
                    manifest_hash
                }
            )
        );
    }
}
