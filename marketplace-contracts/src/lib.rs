//! Leasehold marketplace contracts: alloy bindings over the committed Foundry artifacts, a typed
//! client, a devnet deploy helper and a chain event follower.

pub mod bindings;
pub mod client;
pub mod cursor;
pub mod deploy;
pub mod error;
pub mod follower;
pub mod types;

pub use client::{MarketplaceClient, signing_provider};
pub use cursor::{CursorError, CursorStore, FileCursorStore, MemoryCursorStore};
pub use deploy::{DeployParams, Deployment, FAUCET_CAP, deploy_all, fund_with_faucet};
pub use error::{ClientError, RevertReason};
pub use follower::{
    Backoff, BackoffPolicy, Follower, FollowerConfig, FollowerError, LogHandler, LogSource,
    FollowerStats, RpcLogSource, SourceError, Step,
};
pub use types::*;
