//! Registry passwords at rest: the store keeps a lease's manifest, and a manifest's
//! `credentials.password` is sealed before it is written, so that neither the provider's
//! database nor a dump of it holds a tenant's registry password in clear.
//!
//! The key is derived from the provider's signing key (HKDF-SHA256, fixed salt and
//! info), so a restarted daemon (a kill -9 included) unseals what it stored and can pull
//! again without the tenant; a store copied away from the key is useless. The cipher is
//! ChaCha20-Poly1305 with a random 96-bit nonce per password; the associated data binds
//! each sealed value to its lease, registry host and user name, so a sealed password
//! moved to another lease or registry fails to open instead of being sent there.
//!
//! A sealed password is `sealed:v1:` followed by the hex of nonce, ciphertext and tag.

use leasehold_manifests::Manifest;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, Salt};
use ring::rand::{SecureRandom, SystemRandom};

/// Prefix of a sealed password.
pub const SEALED_PREFIX: &str = "sealed:v1:";
const SALT: &[u8] = b"leasehold provider credential seal";
const INFO: &[u8] = b"manifest credentials v1";

/// Why a password could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("no randomness for a nonce")]
    Random,
    #[error("sealing the credentials of service `{service}` failed")]
    Seal { service: String },
    #[error(
        "the stored credentials of service `{service}` do not open with this provider's key: \
         the store was altered or comes from another provider"
    )]
    Open { service: String },
}

/// Seals and opens registry passwords with a key derived from the provider's key.
pub struct CredentialSeal {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for CredentialSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialSeal(<key redacted>)")
    }
}

impl CredentialSeal {
    /// The seal of the provider whose signing key is `signing_key` (its 32 secret bytes).
    pub fn from_signing_key(signing_key: &[u8]) -> Self {
        let okm = Salt::new(HKDF_SHA256, SALT).extract(signing_key);
        let key = okm
            .expand(&[INFO], &CHACHA20_POLY1305)
            .map(UnboundKey::from)
            // `expand` fails only for an output longer than 255 hash lengths; 32 bytes is not.
            .unwrap_or_else(|_| unreachable!("HKDF-SHA256 yields a 32-byte key"));
        CredentialSeal {
            key: LessSafeKey::new(key),
            random: SystemRandom::new(),
        }
    }

    /// Whether any service of `manifest` carries credentials (and so needs sealing).
    pub fn has_credentials(manifest: &Manifest) -> bool {
        services(manifest).any(|service| service.credentials.is_some())
    }

    /// Seals every password of `manifest` that is not sealed yet.
    pub fn seal(&self, lease_id: u64, manifest: &mut Manifest) -> Result<(), SealError> {
        for group in &mut manifest.groups {
            for service in &mut group.services {
                let name = service.name.clone();
                let Some(credentials) = service.credentials.as_mut() else {
                    continue;
                };
                let aad = associated_data(lease_id, &credentials.host, &credentials.username);
                let mut nonce = [0u8; NONCE_LEN];
                self.random
                    .fill(&mut nonce)
                    .map_err(|_| SealError::Random)?;
                let mut sealed = credentials.password.as_bytes().to_vec();
                self.key
                    .seal_in_place_append_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad.as_bytes()),
                        &mut sealed,
                    )
                    .map_err(|_| SealError::Seal {
                        service: name.clone(),
                    })?;
                let mut blob = nonce.to_vec();
                blob.extend_from_slice(&sealed);
                credentials.password = format!("{SEALED_PREFIX}{}", hex::encode(blob));
            }
        }
        Ok(())
    }

    /// Opens every sealed password of `manifest` in place. A password without the prefix
    /// is left alone (stored by a daemon before passwords were sealed).
    pub fn open(&self, lease_id: u64, manifest: &mut Manifest) -> Result<(), SealError> {
        for group in &mut manifest.groups {
            for service in &mut group.services {
                let Some(credentials) = service.credentials.as_mut() else {
                    continue;
                };
                let Some(sealed) = credentials.password.strip_prefix(SEALED_PREFIX) else {
                    continue;
                };
                let failed = || SealError::Open {
                    service: service.name.clone(),
                };
                let mut blob = hex::decode(sealed).map_err(|_| failed())?;
                if blob.len() < NONCE_LEN {
                    return Err(failed());
                }
                let mut ciphertext = blob.split_off(NONCE_LEN);
                let nonce = Nonce::try_assume_unique_for_key(&blob).map_err(|_| failed())?;
                let aad = associated_data(lease_id, &credentials.host, &credentials.username);
                let plain = self
                    .key
                    .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut ciphertext)
                    .map_err(|_| failed())?;
                credentials.password = String::from_utf8(plain.to_vec()).map_err(|_| failed())?;
            }
        }
        Ok(())
    }
}

fn services(manifest: &Manifest) -> impl Iterator<Item = &leasehold_manifests::Service> {
    manifest.groups.iter().flat_map(|group| &group.services)
}

fn associated_data(lease_id: u64, host: &str, username: &str) -> String {
    // Length-prefixed so that no two (host, user) pairs encode alike.
    format!(
        "leasehold-credentials:{lease_id}:{}:{host}:{}:{username}",
        host.len(),
        username.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDL: &str = r#"
version: "2.0"
services:
  web:
    image: 127.0.0.1:5000/private/web:1
    credentials:
      host: 127.0.0.1:5000
      username: tenant
      password: correct-horse-battery
profiles:
  compute:
    web:
      resources: {cpu: {units: 100m}, memory: {size: 64Mi}, storage: {size: 128Mi}}
  placement:
    anywhere:
      pricing: {web: {denom: usdc, amount: 1000}}
deployment:
  web:
    anywhere: {profile: web, count: 1}
"#;

    fn manifest() -> Manifest {
        leasehold_manifests::parse(SDL).expect("parses").manifest()
    }

    fn password(manifest: &Manifest) -> &str {
        &manifest.groups[0].services[0]
            .credentials
            .as_ref()
            .expect("credentials")
            .password
    }

    #[test]
    fn a_sealed_manifest_holds_no_password_and_opens_to_the_original() {
        let seal = CredentialSeal::from_signing_key(&[7u8; 32]);
        let original = manifest();
        let mut sealed = original.clone();
        seal.seal(42, &mut sealed).unwrap();
        let stored = sealed.canonical_json();
        assert!(!stored.contains("correct-horse-battery"), "{stored}");
        assert!(password(&sealed).starts_with(SEALED_PREFIX));
        // Nonces are random: sealing twice gives different text.
        let mut again = original.clone();
        seal.seal(42, &mut again).unwrap();
        assert_ne!(password(&again), password(&sealed));

        // A restarted daemon (same key, new seal) opens it.
        let reopened = CredentialSeal::from_signing_key(&[7u8; 32]);
        let mut opened: Manifest = serde_json::from_str(&stored).unwrap();
        reopened.open(42, &mut opened).unwrap();
        assert_eq!(opened, original);
    }

    #[test]
    fn another_key_another_lease_or_a_changed_byte_does_not_open() {
        let seal = CredentialSeal::from_signing_key(&[7u8; 32]);
        let mut sealed = manifest();
        seal.seal(42, &mut sealed).unwrap();

        let other_key = CredentialSeal::from_signing_key(&[8u8; 32]);
        let error = other_key.open(42, &mut sealed.clone()).unwrap_err();
        assert!(error.to_string().contains("service `web`"), "{error}");
        assert!(
            seal.open(43, &mut sealed.clone()).is_err(),
            "bound to the lease"
        );

        let mut tampered = sealed.clone();
        let credentials = tampered.groups[0].services[0].credentials.as_mut().unwrap();
        let last = credentials.password.pop().unwrap();
        credentials
            .password
            .push(if last == '0' { '1' } else { '0' });
        assert!(seal.open(42, &mut tampered).is_err());
        let mut moved = sealed.clone();
        moved.groups[0].services[0]
            .credentials
            .as_mut()
            .unwrap()
            .host = "evil.example".into();
        assert!(seal.open(42, &mut moved).is_err(), "bound to the host");
    }

    #[test]
    fn a_clear_password_of_an_older_daemon_is_kept() {
        let seal = CredentialSeal::from_signing_key(&[7u8; 32]);
        let mut legacy = manifest();
        seal.open(42, &mut legacy).unwrap();
        assert_eq!(password(&legacy), "correct-horse-battery");
        assert!(CredentialSeal::has_credentials(&legacy));
    }
}
