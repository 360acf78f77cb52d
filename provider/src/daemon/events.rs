//! The follower's handler: decodes each log into a typed [`ChainEvent`] and queues the
//! work it asks for ([`super::controller::ingest`]). Nothing here calls the chain, the
//! store or the runtime, so a slow or failing reaction never holds up the follower.
//!
//! [`ChainEvent`]: leasehold_contracts::ChainEvent

use std::sync::Arc;

use alloy::primitives::Address;
use alloy::rpc::types::Log;
use leasehold_contracts::{ChainEvent, Deployment, LogHandler};
use tracing::warn;

use super::DaemonError;
use super::controller::{Queue, ingest};

pub struct EventHandler {
    deployment: Deployment,
    me: Address,
    queue: Arc<Queue>,
}

impl EventHandler {
    pub fn new(deployment: Deployment, me: Address, queue: Arc<Queue>) -> Self {
        Self {
            deployment,
            me,
            queue,
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
}
