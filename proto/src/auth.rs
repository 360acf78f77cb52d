//! Signed lease calls.
//!
//! A lease call carries three metadata entries ([`metadata`]). The signature is
//! an EIP-191 `personal_sign` over [`signing_message`]:
//!
//! ```text
//! leasehold:{method}:{lease_id}:{timestamp}:{nonce}:{keccak256(body)}
//! ```
//!
//! `method` is the full gRPC path (`/leasehold.gateway.v1.Lease/SendManifest`),
//! `lease_id` (the order id for `SendOrderManifest`, which comes before the lease)
//! and `timestamp` (unix seconds) are decimal, `nonce` is 16 random
//! bytes and the body hash is keccak256 over the protobuf-encoded request, both
//! `0x`-prefixed lower-case hex. Binding the path and the body hash means a
//! signature for one call can never authorise another call, lease or payload;
//! the nonce lets a client make the same call many times a second.
//!
//! [`verify`] refuses high-s signatures (each ECDSA signature has a twin with
//! `s' = n - s` that recovers the same signer, so only the low-s one counts),
//! recovers the signer and applies the clock-skew window. The provider must
//! additionally require the signer to be the lease's tenant on chain and refuse
//! a [`Credentials::replay_key`] it has seen before. The replay key is derived
//! from the signed content, not from the signature bytes, so no re-encoding of
//! a signature makes an old call new.

use alloy::primitives::{Address, B256, Signature, keccak256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use tonic::metadata::{MetadataMap, MetadataValue};

/// Signed calls older or newer than this, relative to the provider's clock, are
/// refused.
pub const MAX_CLOCK_SKEW_SECS: u64 = 5 * 60;

/// gRPC metadata keys of a signed lease call.
pub mod metadata {
    /// The caller's `0x`-prefixed address; must be the lease's tenant on chain.
    pub const ADDRESS: &str = "x-leasehold-address";
    /// Unix seconds, decimal.
    pub const TIMESTAMP: &str = "x-leasehold-timestamp";
    /// 16 random bytes, `0x`-prefixed hex; fresh for every call.
    pub const NONCE: &str = "x-leasehold-nonce";
    /// 65-byte `r || s || v` signature, `0x`-prefixed hex, low-s.
    pub const SIGNATURE: &str = "x-leasehold-signature";
}

/// Full gRPC paths of the lease calls, the `method` part of the signed message.
pub mod methods {
    pub const SEND_MANIFEST: &str = "/leasehold.gateway.v1.Lease/SendManifest";
    /// The pre-lease manifest: signed over the order id where the others have a lease id
    /// (the method in the message keeps the two apart), by the order's tenant.
    pub const SEND_ORDER_MANIFEST: &str = "/leasehold.gateway.v1.Lease/SendOrderManifest";
    pub const GET_STATUS: &str = "/leasehold.gateway.v1.Lease/GetStatus";
    pub const STREAM_LOGS: &str = "/leasehold.gateway.v1.Lease/StreamLogs";
    pub const STREAM_EVENTS: &str = "/leasehold.gateway.v1.Lease/StreamEvents";
    /// Signed over the stream's first message, its `ShellRequest`.
    pub const SHELL: &str = "/leasehold.gateway.v1.Lease/Shell";
    /// Every method that requires a tenant signature.
    pub const SIGNED: [&str; 6] = [
        SEND_MANIFEST,
        SEND_ORDER_MANIFEST,
        GET_STATUS,
        STREAM_LOGS,
        STREAM_EVENTS,
        SHELL,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("method `{0}` is not a signed lease call")]
    UnknownMethod(String),
    #[error("missing metadata `{0}`: lease calls must be signed")]
    Missing(&'static str),
    #[error("metadata `{key}` is malformed: {reason}")]
    Malformed { key: &'static str, reason: String },
    #[error(
        "timestamp {timestamp} is {skew} s away from the provider clock ({now}); at most {MAX_CLOCK_SKEW_SECS} s is accepted"
    )]
    ClockSkew { timestamp: u64, now: u64, skew: u64 },
    #[error("signature was made by {recovered}, not by the claimed caller {claimed}")]
    WrongSigner {
        claimed: Address,
        recovered: Address,
    },
    #[error(
        "signature has a high s value; only the low-s form (s <= n/2, as every Ethereum signer produces) is accepted"
    )]
    HighS,
    #[error("signing failed: {0}")]
    Signing(String),
}

/// The per-call random value bound into the signed message.
pub type Nonce = alloy::primitives::B128;

/// A fresh random nonce.
pub fn new_nonce() -> Nonce {
    Nonce::from(rand08::random::<u128>())
}

/// The three metadata values of a signed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub address: Address,
    pub timestamp: u64,
    pub nonce: Nonce,
    pub signature: Signature,
}

impl Credentials {
    /// Reads the credentials from a request's metadata.
    pub fn from_metadata(md: &MetadataMap) -> Result<Self, AuthError> {
        let get = |key: &'static str| -> Result<&str, AuthError> {
            md.get(key)
                .ok_or(AuthError::Missing(key))?
                .to_str()
                .map_err(|_| AuthError::Malformed {
                    key,
                    reason: "not ASCII".into(),
                })
        };
        let address =
            get(metadata::ADDRESS)?
                .parse::<Address>()
                .map_err(|e| AuthError::Malformed {
                    key: metadata::ADDRESS,
                    reason: e.to_string(),
                })?;
        let timestamp =
            get(metadata::TIMESTAMP)?
                .parse::<u64>()
                .map_err(|e| AuthError::Malformed {
                    key: metadata::TIMESTAMP,
                    reason: format!("expected unix seconds: {e}"),
                })?;
        let nonce = get(metadata::NONCE)?
            .parse::<Nonce>()
            .map_err(|e| AuthError::Malformed {
                key: metadata::NONCE,
                reason: format!("expected 16 bytes of 0x-prefixed hex: {e}"),
            })?;
        let signature = get(metadata::SIGNATURE)?
            .parse::<Signature>()
            .map_err(|e| AuthError::Malformed {
                key: metadata::SIGNATURE,
                reason: e.to_string(),
            })?;
        Ok(Self {
            address,
            timestamp,
            nonce,
            signature,
        })
    }

    /// Writes the credentials into a request's metadata.
    pub fn insert_into(&self, md: &mut MetadataMap) {
        // Hex and decimal strings are always valid ASCII metadata values.
        let ascii = |s: String| MetadataValue::try_from(s).expect("hex/decimal is ASCII");
        md.insert(metadata::ADDRESS, ascii(self.address.to_checksum(None)));
        md.insert(metadata::TIMESTAMP, ascii(self.timestamp.to_string()));
        md.insert(metadata::NONCE, ascii(self.nonce.to_string()));
        md.insert(
            metadata::SIGNATURE,
            ascii(format!(
                "0x{}",
                alloy::hex::encode(self.signature.as_bytes())
            )),
        );
    }

    /// The provider's replay-cache key for this call: keccak256 of the signer
    /// and the signed message, so any second signature over the same call
    /// (a malleated twin, another encoding) finds the same key.
    pub fn replay_key(&self, method: &str, lease_id: u64, body: &[u8]) -> Result<B256, AuthError> {
        let message = signing_message(method, lease_id, self.timestamp, self.nonce, body)?;
        let mut keyed = self.address.to_vec();
        keyed.extend_from_slice(message.as_bytes());
        Ok(keccak256(keyed))
    }
}

/// The text a tenant signs (EIP-191) for one lease call.
pub fn signing_message(
    method: &str,
    lease_id: u64,
    timestamp: u64,
    nonce: Nonce,
    body: &[u8],
) -> Result<String, AuthError> {
    if !methods::SIGNED.contains(&method) {
        return Err(AuthError::UnknownMethod(method.to_owned()));
    }
    Ok(format!(
        "leasehold:{method}:{lease_id}:{timestamp}:{nonce}:{}",
        keccak256(body)
    ))
}

/// Signs one call as the tenant, with `nonce` (use [`new_nonce`]).
pub fn sign(
    signer: &PrivateKeySigner,
    method: &str,
    lease_id: u64,
    timestamp: u64,
    nonce: Nonce,
    body: &[u8],
) -> Result<Credentials, AuthError> {
    let message = signing_message(method, lease_id, timestamp, nonce, body)?;
    let signature = signer
        .sign_message_sync(message.as_bytes())
        .map_err(|e| AuthError::Signing(e.to_string()))?;
    Ok(Credentials {
        address: signer.address(),
        timestamp,
        nonce,
        signature,
    })
}

/// Accepts a call's timestamp when it is within [`MAX_CLOCK_SKEW_SECS`] of `now`
/// in either direction.
pub fn check_clock_skew(timestamp: u64, now: u64) -> Result<(), AuthError> {
    let skew = timestamp.abs_diff(now);
    if skew > MAX_CLOCK_SKEW_SECS {
        return Err(AuthError::ClockSkew {
            timestamp,
            now,
            skew,
        });
    }
    Ok(())
}

/// Checks the clock window and that the signature over this exact call was made
/// by the claimed address; returns that address. Whether the address may act on
/// the lease, and whether the signature was seen before, is the caller's check.
pub fn verify(
    credentials: &Credentials,
    method: &str,
    lease_id: u64,
    body: &[u8],
    now: u64,
) -> Result<Address, AuthError> {
    check_clock_skew(credentials.timestamp, now)?;
    if credentials.signature.normalize_s().is_some() {
        return Err(AuthError::HighS);
    }
    let message = signing_message(
        method,
        lease_id,
        credentials.timestamp,
        credentials.nonce,
        body,
    )?;
    let recovered = credentials
        .signature
        .recover_address_from_msg(message.as_bytes())
        .map_err(|e| AuthError::Malformed {
            key: metadata::SIGNATURE,
            reason: format!("no signer can be recovered: {e}"),
        })?;
    if recovered != credentials.address {
        return Err(AuthError::WrongSigner {
            claimed: credentials.address,
            recovered,
        });
    }
    Ok(recovered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_700_000_000;
    const NONCE: Nonce = Nonce::repeat_byte(0x42);

    fn tenant() -> PrivateKeySigner {
        // anvil's first development key: public, for tests only.
        "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
            .parse()
            .unwrap()
    }

    #[test]
    fn message_binds_method_lease_time_and_body() {
        let msg = signing_message(methods::SEND_MANIFEST, 7, NOW, NONCE, b"").unwrap();
        // keccak256("") is a well-known constant.
        assert_eq!(
            msg,
            "leasehold:/leasehold.gateway.v1.Lease/SendManifest:7:1700000000:\
             0x42424242424242424242424242424242:\
             0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
        for other in [
            signing_message(methods::SEND_MANIFEST, 7, NOW, NONCE, b"x"),
            signing_message(methods::SEND_MANIFEST, 8, NOW, NONCE, b""),
            signing_message(methods::SEND_MANIFEST, 7, NOW + 1, NONCE, b""),
            signing_message(methods::GET_STATUS, 7, NOW, NONCE, b""),
            signing_message(methods::SEND_MANIFEST, 7, NOW, Nonce::ZERO, b""),
        ] {
            assert_ne!(msg, other.unwrap());
        }
    }

    #[test]
    fn unknown_method_is_refused() {
        let err = signing_message("/leasehold.gateway.v1.Provider/GetStatus", 1, 1, NONCE, b"");
        assert!(matches!(err, Err(AuthError::UnknownMethod(_))));
    }

    #[test]
    fn clock_skew_window_is_inclusive_and_symmetric() {
        assert!(check_clock_skew(NOW - MAX_CLOCK_SKEW_SECS, NOW).is_ok());
        assert!(check_clock_skew(NOW + MAX_CLOCK_SKEW_SECS, NOW).is_ok());
        assert!(matches!(
            check_clock_skew(NOW - MAX_CLOCK_SKEW_SECS - 1, NOW),
            Err(AuthError::ClockSkew { skew: 301, .. })
        ));
        assert!(check_clock_skew(NOW + MAX_CLOCK_SKEW_SECS + 1, NOW).is_err());
    }

    #[test]
    fn signed_call_round_trips_through_metadata() {
        let creds = sign(&tenant(), methods::GET_STATUS, 3, NOW, NONCE, b"body").unwrap();
        let mut md = MetadataMap::new();
        creds.insert_into(&mut md);
        let read = Credentials::from_metadata(&md).unwrap();
        assert_eq!(read, creds);
        let who = verify(&read, methods::GET_STATUS, 3, b"body", NOW + 10).unwrap();
        assert_eq!(who, tenant().address());
    }

    #[test]
    fn a_signature_does_not_transfer_to_another_call() {
        let creds = sign(&tenant(), methods::GET_STATUS, 3, NOW, NONCE, b"body").unwrap();
        for (method, lease, body) in [
            (methods::STREAM_LOGS, 3, &b"body"[..]),
            (methods::GET_STATUS, 4, &b"body"[..]),
            (methods::GET_STATUS, 3, &b"other"[..]),
        ] {
            let err = verify(&creds, method, lease, body, NOW).unwrap_err();
            assert!(matches!(err, AuthError::WrongSigner { .. }), "{err}");
        }
    }

    #[test]
    fn claiming_someone_elses_address_fails() {
        let mut creds = sign(&tenant(), methods::GET_STATUS, 3, NOW, NONCE, b"").unwrap();
        creds.address = Address::repeat_byte(0x11);
        assert!(matches!(
            verify(&creds, methods::GET_STATUS, 3, b"", NOW),
            Err(AuthError::WrongSigner { .. })
        ));
    }

    #[test]
    fn missing_and_malformed_metadata_name_the_key() {
        let creds = sign(&tenant(), methods::GET_STATUS, 3, NOW, NONCE, b"").unwrap();
        let mut md = MetadataMap::new();
        creds.insert_into(&mut md);
        md.remove(metadata::SIGNATURE);
        assert_eq!(
            Credentials::from_metadata(&md),
            Err(AuthError::Missing(metadata::SIGNATURE))
        );
        md.insert(metadata::SIGNATURE, MetadataValue::from_static("0x1234"));
        md.insert(metadata::TIMESTAMP, MetadataValue::from_static("yesterday"));
        let err = Credentials::from_metadata(&md).unwrap_err();
        assert!(
            matches!(
                err,
                AuthError::Malformed {
                    key: metadata::TIMESTAMP,
                    ..
                }
            ),
            "{err}"
        );
    }

    /// The other valid signature over the same message: s -> n - s, parity flipped.
    fn malleated(signature: &Signature) -> Signature {
        let order = alloy::primitives::U256::from_str_radix(
            "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141",
            16,
        )
        .unwrap();
        Signature::new(signature.r(), order - signature.s(), !signature.v())
    }

    #[test]
    fn a_malleated_high_s_twin_is_refused_and_shares_the_replay_key() {
        let creds = sign(&tenant(), methods::GET_STATUS, 3, NOW, NONCE, b"body").unwrap();
        let twin = Credentials {
            signature: malleated(&creds.signature),
            ..creds.clone()
        };
        // The twin recovers the same signer: only the low-s rule tells them apart.
        assert_eq!(
            twin.signature
                .recover_address_from_msg(
                    signing_message(methods::GET_STATUS, 3, NOW, NONCE, b"body")
                        .unwrap()
                        .as_bytes()
                )
                .unwrap(),
            tenant().address()
        );
        assert_eq!(
            verify(&twin, methods::GET_STATUS, 3, b"body", NOW),
            Err(AuthError::HighS)
        );
        assert_eq!(
            twin.replay_key(methods::GET_STATUS, 3, b"body").unwrap(),
            creds.replay_key(methods::GET_STATUS, 3, b"body").unwrap()
        );
    }

    #[test]
    fn the_same_call_twice_in_one_second_has_two_replay_keys() {
        let first = sign(&tenant(), methods::GET_STATUS, 3, NOW, new_nonce(), b"").unwrap();
        let second = sign(&tenant(), methods::GET_STATUS, 3, NOW, new_nonce(), b"").unwrap();
        assert_ne!(first.nonce, second.nonce);
        assert_ne!(
            first.replay_key(methods::GET_STATUS, 3, b"").unwrap(),
            second.replay_key(methods::GET_STATUS, 3, b"").unwrap()
        );
        for creds in [&first, &second] {
            verify(creds, methods::GET_STATUS, 3, b"", NOW).unwrap();
        }
    }

    proptest! {
        #[test]
        fn arbitrary_metadata_never_panics(addr in ".{0,50}", ts in ".{0,30}", nonce in ".{0,40}", sig in ".{0,140}") {
            let mut md = MetadataMap::new();
            for (key, value) in [(metadata::ADDRESS, addr), (metadata::TIMESTAMP, ts), (metadata::NONCE, nonce), (metadata::SIGNATURE, sig)] {
                if let Ok(v) = MetadataValue::try_from(value) {
                    md.insert(key, v);
                }
            }
            if let Ok(creds) = Credentials::from_metadata(&md) {
                let _ = verify(&creds, methods::SEND_MANIFEST, 1, b"", creds.timestamp);
            }
        }
    }
}
