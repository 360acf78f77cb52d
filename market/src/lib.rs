//! The Leasehold market indexer (`leasehold-market`).
//!
//! - [`ingest`]: follows the marketplace and registry with the contracts crate's
//!   [`leasehold_contracts::Follower`] (confirmations, bounded log ranges, reorg checkpoints)
//!   and commits each range with the cursor in one database transaction.
//! - [`store`]: the index database, SQLite by default or PostgreSQL, one schema for both;
//!   [`apply`] is the one rule by which each event changes the derived tables, used while
//!   following and when rebuilding after a reorg.
//! - [`api`]: the JSON API under `/api/v1` and its Server-Sent Events stream (documented in
//!   `market/API.md`); [`sdl`] validates SDL files as `tenant validate` does and shows the
//!   orders `tenant deploy` would post; [`preflight`] answers which providers can serve an
//!   SDL's groups with the preflight crate's report (the one `tenant preflight` prints);
//!   [`console`] serves the built web console at `/`; [`relay`] forwards the console's
//!   signed gateway calls over the pinned TLS connection.

pub mod api;
pub mod apply;
pub mod console;
pub mod event_json;
pub mod ingest;
pub mod preflight;
pub mod relay;
pub mod sdl;
pub mod store;
