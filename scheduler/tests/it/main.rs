//! Integration tests of leasehold-scheduler: inventory properties, the openb
//! simulation on the real trace, and the `scheduler` CLI.

mod cli;
mod inventory;
mod simulate;
