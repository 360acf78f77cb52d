//! The provider's integration tests: one binary, one module per area.

mod daemon;
mod deploy_files;
mod gateway;
mod ingress;
mod private_registry;
mod rpc_fault;
mod runtime_docker;
mod runtime_docker_policy;
mod runtime_kubernetes;
mod store;
mod tx_lane;
