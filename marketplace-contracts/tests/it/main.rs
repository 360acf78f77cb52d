//! Integration tests against a real anvil started per test (see `support`).

mod bonds;
mod capacity;
mod delivery;
mod follower;
mod heads;
mod lifecycle;
mod payments;
mod permit;
mod reorg;
mod support;
