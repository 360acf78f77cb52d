//! Integration tests against a real anvil started per test (see `support`).

mod capacity;
mod follower;
mod lifecycle;
mod payments;
mod support;
