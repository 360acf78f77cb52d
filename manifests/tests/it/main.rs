//! Integration tests of leasehold-manifests.

mod conformance;
mod errors;
mod properties;
