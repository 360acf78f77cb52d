//! Integration tests against a real anvil started per test (see `support`).

mod auto_accept;
mod bonds;
mod capacity;
mod delivery;
mod deploy;
mod follower;
mod heads;
mod lifecycle;
mod names;
mod payments;
mod permit;
mod reorg;
mod rpc;
mod support;
mod txlane;
