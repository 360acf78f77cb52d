//! Integration tests of the wire protocol crate.

mod gateway_auth_vectors;
