//! The market indexer against a real anvil chain with the real contracts, the real
//! `leasehold-market` binary, and real SQLite and PostgreSQL databases.

mod api;
mod bench;
mod console;
mod crowd;
mod history;
mod preflight;
mod relay;
mod reorg;
mod stream;
mod support;
