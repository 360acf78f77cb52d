//! The provider daemon: hardware discovery, configuration, the persisted lease
//! store, and the container runtimes that run tenants' workloads.
//!
//! See ARCHITECTURE.md for how the modules fit together.

pub mod config;
pub mod gateway;
pub mod hardware;
pub mod lease;
pub mod runtime;
pub mod store;
