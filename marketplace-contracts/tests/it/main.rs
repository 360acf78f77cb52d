//! Integration tests against a real anvil started per test (see `support`).

mod auto_accept;
mod bonds;
mod capacity;
mod delivery;
mod deploy;
mod follower;
mod heads;
mod lifecycle;
mod payments;
mod permit;
mod rpc;
mod reorg;
mod support;
mod txlane;
