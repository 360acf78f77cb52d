//! The provider gateway protocol.
//!
//! `proto/leasehold/gateway/v1/gateway.proto` defines the `Lease` and `Provider`
//! gRPC services ([`gateway`]). This crate also owns the one piece of the
//! protocol that both sides must compute byte for byte: how a tenant signs a
//! lease call and how the provider checks it ([`auth`]), and the clients that
//! sign those calls ([`client`]) over TLS pinned to the certificate the provider
//! registered on chain ([`tls`]).

pub mod auth;
pub mod client;
pub mod tls;

/// Generated messages, clients (`lease_client`, `provider_client`) and servers
/// (`lease_server`, `provider_server`) of `leasehold.gateway.v1`.
pub mod gateway {
    #![allow(clippy::all)]
    tonic::include_proto!("leasehold.gateway.v1");
}

/// Full gRPC path of the public (unsigned) `Provider.GetStatus` call.
pub const PROVIDER_GET_STATUS: &str = "/leasehold.gateway.v1.Provider/GetStatus";

/// The gateway's protobuf source, for clients in other languages.
pub const GATEWAY_PROTO: &str = include_str!("../proto/leasehold/gateway/v1/gateway.proto");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_declares_every_signed_method() {
        for method in auth::methods::SIGNED {
            let rpc = method.rsplit('/').next().unwrap_or_default();
            assert!(
                GATEWAY_PROTO.contains(&format!("rpc {rpc}(")),
                "{rpc} missing from gateway.proto"
            );
        }
    }
}
