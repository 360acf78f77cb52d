//! Preflight: for each group of a manifest, which registered providers could serve it (the
//! scheduler's eligibility rule over the chain's records), at what price their recent bids
//! suggest, and why each other provider cannot.
//!
//! API boundary: pure functions over data the callers have read (`tenant preflight` and
//! `tenant deploy` from the chain, the market server from the chain and its index), so both
//! report the same thing from the same inputs. No IO, no async.

mod names;
mod rates;
mod report;
mod scheduler;

pub use names::{NamedKey, Names, short_hex};
pub use rates::{PlacedBid, RECENT_BIDS, recent, recent_rates};
pub use report::{
    AuditVerdicts, Candidate, GroupPreflight, Inputs, Preflight, PreflightError, Rejected,
    audited_groups, preflight,
};
pub use scheduler::{
    Reason, explain, hypothetical_bid, order_for_bids, room, scheduler_bid, scheduler_order,
};
