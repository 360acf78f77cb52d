//! The provider daemon: hardware discovery, configuration, the persisted lease
//! store, and the container runtimes that run tenants' workloads.
//!
//! See ARCHITECTURE.md for how the modules fit together.

pub mod config;
pub mod gateway;
pub mod hardware;
pub mod ingress;
pub mod ip_pool;
pub mod lease;
pub mod runtime;
pub mod store;
// -- daemon --
pub mod bidder;
pub mod chain;
pub mod cli;
pub mod daemon;
pub mod deployment;
pub mod leases;
pub mod metrics;
pub mod reconciler;
pub mod registration;
pub mod resync;
pub mod sealing;
pub mod speculative;
pub mod updates;
pub mod withdrawer;
