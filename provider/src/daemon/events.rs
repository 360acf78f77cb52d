//! The follower's handler: decodes each log into a typed [`ChainEvent`] and queues the
//! work it asks for ([`super::controller::ingest`]). Nothing here calls the chain, the
//! store or the runtime, so a slow or failing reaction never holds up the follower.
//! A reorg queues a resync of every order it touched and of everything the store holds
//! ([`Work::ResyncAll`]): the retracted logs are only what this process saw.
//!
//! [`ChainEvent`]: leasehold_contracts::ChainEvent

use std::sync::Arc;

use alloy::primitives::Address;
use alloy::rpc::types::Log;
use leasehold_contracts::{ChainEvent, Deployment, LogHandler, Reorg};
use tracing::warn;

use super::DaemonError;
use super::controller::{Queue, Work, WorkKey, ingest};
use crate::metrics::Metrics;

pub struct EventHandler {
    deployment: Deployment,
    me: Address,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
}

impl EventHandler {
    pub fn new(
        deployment: Deployment,
        me: Address,
        queue: Arc<Queue>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            deployment,
            me,
            queue,
            metrics,
        }
    }
}

impl LogHandler for EventHandler {
    type Error = DaemonError;

    async fn handle(&mut self, log: &Log) -> Result<(), DaemonError> {
        match ChainEvent::decode(log, &self.deployment) {
            Ok(Some(log)) => ingest(&self.queue, self.me, log),
            Ok(None) => {}
            // Our contracts never emit such ids; nothing can be done with the event.
            Err(error) => warn!(%error, "ignoring an undecodable event"),
        }
        Ok(())
    }

    async fn rewind(&mut self, reorg: &Reorg) -> Result<(), DaemonError> {
        self.metrics.note_reorg(reorg.depth);
        let touched: std::collections::BTreeSet<u64> = reorg
            .retracted
            .iter()
            .filter_map(|log| ChainEvent::decode(log, &self.deployment).ok().flatten())
            .filter_map(|log| log.event.order_id())
            .collect();
        warn!(
            fork_block = reorg.fork_block,
            depth = reorg.depth,
            retracted = reorg.retracted.len(),
            orders = ?touched,
            "chain reorg: resyncing the orders and leases it may have undone"
        );
        // Held at the fork block: the cursor does not pass it until the resync is done.
        let block = Some(reorg.fork_block);
        for order_id in touched {
            self.queue
                .push(WorkKey::Order(order_id), block, Work::Resync);
        }
        self.queue.push(
            WorkKey::Resync,
            block,
            Work::ResyncAll {
                block: reorg.fork_block,
            },
        );
        Ok(())
    }
}
