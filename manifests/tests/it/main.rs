//! Integration tests of leasehold-manifests.

mod compat;
mod conformance;
mod errors;
mod properties;
