//! A keyed work queue and its runner: the shape of kube-runtime's controller (scheduler +
//! runner) over plain tokio.
//!
//! - Work is queued under a key (an order, a payment); a key's items run one at a time and
//!   in order, different keys run concurrently on at most `workers` tasks.
//! - An item equal to one already waiting under its key is dropped (a redelivered log).
//! - The reconcile function says what happened ([`Outcome`]): done, requeue after a delay,
//!   or failed; a failure backs its key off exponentially (capped) and never delays another
//!   key. A reconcile that exceeds the time limit counts as failed.
//! - [`WorkQueue::lowest_block`] is the oldest chain block whose work is not finished, so the
//!   follower's saved cursor never passes work that a crash would lose.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What a reconcile of one item achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Finished: the next item of the key (if any) runs.
    Done,
    /// Not finished, and not a failure (e.g. waiting for something): the same item runs
    /// again after the delay; the key's failure count is kept.
    Requeue(Duration),
    /// Failed: the same item runs again after the key's next backoff delay.
    Failed,
    /// Failed for good: the item is dropped.
    GiveUp,
}

/// Exponential backoff per key: `initial`, doubled per consecutive failure, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The delay after the `failures`-th consecutive failure (1-based).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }
}

/// One item handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task<K, W> {
    pub key: K,
    pub work: W,
    /// Consecutive failures of this key so far (0 on the first try).
    pub failures: u32,
}

#[derive(Debug)]
struct Queued<W> {
    /// The chain block the work came from; `None` for work not derived from a log.
    block: Option<u64>,
    work: W,
}

#[derive(Debug)]
struct KeyState<W> {
    items: VecDeque<Queued<W>>,
    ready_at: Instant,
    failures: u32,
    running: bool,
}

/// Keyed work waiting or running.
#[derive(Debug)]
pub struct WorkQueue<K, W> {
    keys: Mutex<BTreeMap<K, KeyState<W>>>,
    wake: Notify,
    retry: RetryPolicy,
}

impl<K: Ord + Clone, W: Clone + PartialEq> WorkQueue<K, W> {
    pub fn new(retry: RetryPolicy) -> Self {
        Self {
            keys: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
            retry,
        }
    }

    fn keys(&self) -> MutexGuard<'_, BTreeMap<K, KeyState<W>>> {
        // A panic while holding this lock leaves the map consistent (every update is one
        // statement), so a poisoned lock is still usable.
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `work` under `key`; `false` when the same work already waits there.
    pub fn push(&self, key: K, block: Option<u64>, work: W) -> bool {
        let mut keys = self.keys();
        let state = keys.entry(key).or_insert_with(|| KeyState {
            items: VecDeque::new(),
            ready_at: Instant::now(),
            failures: 0,
            running: false,
        });
        // The item a worker holds may be half done; an equal one queued behind it runs again
        // afterwards, which idempotent reconciles allow. Only waiting duplicates are dropped.
        let waiting = state.items.iter().skip(usize::from(state.running));
        if waiting.clone().any(|queued| queued.work == work) {
            return false;
        }
        state.items.push_back(Queued { block, work });
        drop(keys);
        self.wake.notify_waiters();
        true
    }

    /// Items waiting or running.
    pub fn len(&self) -> usize {
        self.keys().values().map(|state| state.items.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys currently backing off after a failure.
    pub fn backing_off(&self) -> usize {
        self.keys()
            .values()
            .filter(|state| state.failures > 0)
            .count()
    }

    /// The oldest chain block with unfinished work.
    pub fn lowest_block(&self) -> Option<u64> {
        self.keys()
            .values()
            .flat_map(|state| state.items.iter())
            .filter_map(|queued| queued.block)
            .min()
    }

    /// Waits for the next item whose key is idle and due; marks the key running.
    pub async fn next(&self) -> Task<K, W> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait_until = {
                let mut keys = self.keys();
                let now = Instant::now();
                let due = keys
                    .iter_mut()
                    .filter(|(_, state)| !state.running && !state.items.is_empty())
                    .min_by_key(|(_, state)| state.ready_at);
                match due {
                    Some((key, state)) if state.ready_at <= now => {
                        state.running = true;
                        let Some(front) = state.items.front() else {
                            continue;
                        };
                        return Task {
                            key: key.clone(),
                            work: front.work.clone(),
                            failures: state.failures,
                        };
                    }
                    Some((_, state)) => Some(state.ready_at),
                    None => None,
                }
            };
            match wait_until {
                Some(at) => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Records what the reconcile of the key's front item achieved.
    pub fn finish(&self, key: &K, outcome: Outcome) {
        let mut keys = self.keys();
        let Some(state) = keys.get_mut(key) else {
            return;
        };
        state.running = false;
        let now = Instant::now();
        match outcome {
            Outcome::Done | Outcome::GiveUp => {
                state.items.pop_front();
                state.failures = 0;
                state.ready_at = now;
            }
            Outcome::Requeue(after) => state.ready_at = now + after,
            Outcome::Failed => {
                state.failures = state.failures.saturating_add(1);
                state.ready_at = now + self.retry.delay(state.failures);
            }
        }
        if state.items.is_empty() {
            keys.remove(key);
        }
        drop(keys);
        self.wake.notify_waiters();
    }
}

/// Runs `reconcile` over the queue on `workers` tasks until `stop` turns true. A reconcile
/// in progress at shutdown finishes first; one exceeding `time_limit` counts as failed.
pub async fn run<K, W, F, Fut>(
    queue: Arc<WorkQueue<K, W>>,
    workers: usize,
    time_limit: Duration,
    stop: watch::Receiver<bool>,
    reconcile: F,
) where
    K: Ord + Clone + Send + 'static,
    W: Clone + PartialEq + Send + 'static,
    F: Fn(Task<K, W>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    let mut tasks = JoinSet::new();
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let mut stop = stop.clone();
        let reconcile = reconcile.clone();
        tasks.spawn(async move {
            loop {
                let task = tokio::select! {
                    biased;
                    _ = stop.wait_for(|stopped| *stopped) => return,
                    task = queue.next() => task,
                };
                let key = task.key.clone();
                let outcome = tokio::time::timeout(time_limit, reconcile(task))
                    .await
                    .unwrap_or(Outcome::Failed);
                queue.finish(&key, outcome);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = policy();
        let delays: Vec<u128> = (1..=6).map(|n| policy.delay(n).as_millis()).collect();
        assert_eq!(delays, vec![20, 40, 80, 160, 200, 200]);
        assert_eq!(policy.delay(u32::MAX), Duration::from_millis(200));
    }

    #[tokio::test]
    async fn waiting_duplicates_are_dropped_and_the_lowest_block_is_tracked() {
        let queue = WorkQueue::<u64, &str>::new(policy());
        assert!(queue.push(1, Some(10), "bid"));
        assert!(!queue.push(1, Some(12), "bid"), "a redelivered log");
        assert!(queue.push(1, Some(11), "won"));
        assert!(queue.push(2, None, "collect"));
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.lowest_block(), Some(10));
        let first = queue.next().await;
        assert_eq!((first.key, first.work), (1, "bid"));
        // Running, the item may be half done: an equal one queued now runs again later.
        assert!(queue.push(1, Some(13), "bid"));
        queue.finish(&1, Outcome::Done);
        assert_eq!(queue.lowest_block(), Some(11));
    }

    #[tokio::test]
    async fn a_key_runs_its_items_in_order_one_at_a_time() {
        let queue = WorkQueue::<u64, u32>::new(policy());
        queue.push(7, None, 1);
        queue.push(7, None, 2);
        let first = queue.next().await;
        assert_eq!(first.work, 1);
        let second = tokio::time::timeout(Duration::from_millis(50), queue.next()).await;
        assert!(second.is_err(), "the key is busy with item 1");
        queue.finish(&7, Outcome::Done);
        assert_eq!(queue.next().await.work, 2);
    }

    /// The controller's promise: one key failing over and over (a `placeBid` that keeps
    /// failing) neither blocks the other keys nor spins, and succeeds once it can.
    #[tokio::test]
    async fn a_failing_key_backs_off_without_delaying_the_others() {
        let queue = Arc::new(WorkQueue::<u64, u64>::new(policy()));
        let failing_attempts = Arc::new(AtomicU32::new(0));
        let done = Arc::new(Mutex::new(Vec::new()));
        queue.push(0, Some(1), 0);
        for key in 1..=20 {
            queue.push(key, Some(key + 1), key);
        }
        let (stop, stop_rx) = watch::channel(false);
        let reconcile = {
            let failing_attempts = failing_attempts.clone();
            let done = done.clone();
            move |task: Task<u64, u64>| {
                let failing_attempts = failing_attempts.clone();
                let done = done.clone();
                async move {
                    if task.key == 0 && failing_attempts.fetch_add(1, Ordering::SeqCst) < 4 {
                        return Outcome::Failed;
                    }
                    if task.key == 5 {
                        // A slow chain call holds one worker only.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    done.lock().unwrap().push((task.key, Instant::now()));
                    Outcome::Done
                }
            }
        };
        let started = Instant::now();
        let runner = tokio::spawn(run(
            queue.clone(),
            2,
            Duration::from_secs(5),
            stop_rx,
            reconcile,
        ));
        tokio::time::timeout(Duration::from_secs(5), async {
            while !queue.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("every key finished");
        stop.send(true).unwrap();
        runner.await.unwrap();
        let done = done.lock().unwrap();
        let finished_at = |key: u64| {
            done.iter()
                .find(|(done_key, _)| *done_key == key)
                .map(|(_, at)| at.duration_since(started))
                .unwrap()
        };
        assert_eq!(
            failing_attempts.load(Ordering::SeqCst),
            5,
            "4 failures, then success"
        );
        // Backoff 20+40+80+160 ms before key 0's fifth attempt.
        assert!(finished_at(0) >= Duration::from_millis(300));
        for key in (1..=20).filter(|key| *key != 5) {
            assert!(
                finished_at(key) < Duration::from_millis(150),
                "key {key} waited for the failing or the slow key: {:?}",
                finished_at(key)
            );
        }
        assert_eq!(queue.lowest_block(), None);
    }

    #[tokio::test]
    async fn a_reconcile_over_the_time_limit_counts_as_failed() {
        let queue = Arc::new(WorkQueue::<u64, u64>::new(policy()));
        queue.push(1, Some(3), 1);
        let attempts = Arc::new(AtomicU32::new(0));
        let (stop, stop_rx) = watch::channel(false);
        let runner = tokio::spawn(run(queue.clone(), 1, Duration::from_millis(20), stop_rx, {
            let attempts = attempts.clone();
            move |_task: Task<u64, u64>| {
                let attempts = attempts.clone();
                async move {
                    if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                    Outcome::Done
                }
            }
        }));
        tokio::time::timeout(Duration::from_secs(2), async {
            while !queue.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the retry finished");
        stop.send(true).unwrap();
        runner.await.unwrap();
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn given_up_work_is_dropped() {
        let queue = WorkQueue::<u64, u64>::new(policy());
        queue.push(1, Some(4), 1);
        let task = queue.next().await;
        queue.finish(&task.key, Outcome::GiveUp);
        assert!(queue.is_empty());
        assert_eq!(queue.lowest_block(), None);
    }
}
