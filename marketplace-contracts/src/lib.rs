//! Leasehold marketplace contracts from Rust.
//!
//! - [`bindings`]: `alloy::sol!` bindings generated from the committed artifacts in `artifacts/`
//!   (`Marketplace`, `ProviderRegistry`, `TestToken`); building needs no node or forge.
//! - [`MarketplaceClient`]: one account's typed view of a [`Deployment`]: provider registration
//!   and unbonding, orders, bids, leases, payments and queries. Reverts come back as
//!   [`ClientError::Reverted`] with the custom error decoded, e.g.
//!   `acceptBid reverted: ProviderLacksCapacity(provider: 0x…)`.
//! - [`deployer`]: deploying to any network (the `leasehold-deploy` binary): chain-id check,
//!   an existing ERC-20 or the test token, resumable progress, attach/verify, explorer inputs;
//!   [`keystore`] turns a keystore file into a signer.
//! - [`deploy_all`] and [`fund_with_faucet`] for devnets; with the `devnet` feature,
//!   `devnet::Devnet` brings up anvil with the contracts deployed and dev accounts funded.
//! - [`Follower`]: reads contract logs over bounded block ranges a few confirmations behind the
//!   head, delivers them in order to a [`LogHandler`], persists a cursor ([`FileCursorStore`]) and
//!   retries RPC failures with capped exponential backoff; a [`HeadWatch`] (`eth_subscribe`
//!   newHeads over a WebSocket) wakes it at each new block instead of at its poll interval; it
//!   checks the hashes of the blocks it read and, after a reorg of any depth, rewinds to the
//!   fork and tells the handler ([`Reorg`]).
//! - [`names`]: the strings behind attribute and GPU model keys, published on chain
//!   (`publishNames`, [`ChainEvent::KeyNamed`]) and read back into [`KeyNames`]. [`ChainEvent::decode`] turns the
//!   delivered logs into typed events (plain Rust values; the bindings stay in this crate).

pub mod bindings;
pub mod client;
pub mod cursor;
pub mod deploy;
pub mod deployer;
#[cfg(feature = "devnet")]
pub mod devnet;
pub mod error;
pub mod events;
pub mod follower;
pub mod heads;
pub mod keystore;
pub mod log_ranges;
pub mod names;
pub mod order;
pub mod transport;
pub mod txlane;
pub mod types;

pub use client::{DepositFunding, MarketplaceClient, signing_provider};
pub use cursor::{
    BlockRef, CursorError, CursorState, CursorStore, FileCursorStore, MemoryCursorStore,
};
pub use deploy::{
    DeployParams, Deployment, DeploymentFileError, FAUCET_CAP, GAS_MARGIN_FLOOR,
    GAS_MARGIN_PERCENT, deploy_all, fund_with_faucet, gas_limit_with_margin,
};
pub use error::{ClientError, FeeCapShortfall, FundsShortfall, RevertReason};
pub use events::{ChainEvent, ChainLog, EventDecodeError};
pub use follower::{
    Backoff, BackoffPolicy, Follower, FollowerConfig, FollowerError, FollowerStats, LogHandler,
    LogSource, Reorg, RpcLogSource, SourceError, Step,
};
pub use heads::{HeadWatch, HeadWatchError, next_head_or};
pub use log_ranges::{DEFAULT_MAX_LOG_RANGE, RangeLimit, logs_in_ranges};
pub use names::{KeyNames, MAX_NAME_LENGTH, MAX_NAMES_PER_CALL, NameError};
pub use order::{
    GroupOrder, LeaseFitError, OrderEncodingError, auditors_for_group, chain_key,
    check_within_lease, gpu_bid, group_name_key, group_order, order_spec_for_group,
};
pub use txlane::{
    FeePolicy, Fees, Gwei, GweiError, JournalError, LaneStats, MemoryJournal, SentTx, Settlement,
    TxJournal, TxLane,
};
pub use types::*;
