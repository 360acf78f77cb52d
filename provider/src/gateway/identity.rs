//! The gateway's TLS identity: a self-signed certificate and its key, made by the
//! provider on first use, kept in its data dir and reused across restarts. Tenants
//! trust it because its SHA-256 fingerprint is in the provider's on-chain
//! registration (`register`/`update` publish [`GatewayIdentity::cert_sha256`]), so
//! no CA is involved and the certificate's names do not matter.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use alloy::primitives::B256;
use tonic::transport::{Identity, ServerTlsConfig};

/// The certificate's file in the data dir (PEM).
pub const CERT_FILE: &str = "gateway-cert.pem";
/// The private key's file in the data dir (PEM, mode 0600).
pub const KEY_FILE: &str = "gateway-key.pem";
/// The name in the certificate; informative only (tenants pin the fingerprint).
const CERT_NAME: &str = "leasehold-gateway";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read the gateway's TLS {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the gateway's TLS {what} {path}: {source}")]
    Write {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{present} exists but {missing} does not: restore it, or delete both to make a new \
         certificate (then run `provider update` so that tenants accept it)"
    )]
    HalfPresent { present: PathBuf, missing: PathBuf },
    #[error("{path} holds no PEM certificate: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("cannot generate the gateway's certificate: {0}")]
    Generate(#[source] rcgen::Error),
}

/// The certificate and key the gateway serves, and the certificate's fingerprint.
#[derive(Clone)]
pub struct GatewayIdentity {
    cert_pem: String,
    key_pem: String,
    cert_sha256: B256,
}

impl fmt::Debug for GatewayIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayIdentity")
            .field("cert_sha256", &self.cert_sha256)
            .finish_non_exhaustive()
    }
}

impl GatewayIdentity {
    /// A new self-signed certificate with a fresh key, in memory only.
    pub fn generate() -> Result<Self, IdentityError> {
        let certified = rcgen::generate_simple_self_signed(vec![CERT_NAME.to_owned()])
            .map_err(IdentityError::Generate)?;
        Ok(Self {
            cert_sha256: leasehold_proto::tls::cert_sha256(certified.cert.der()),
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
        })
    }

    /// The identity saved in `data_dir`, made and saved first when there is none.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, IdentityError> {
        let (cert, key) = paths(data_dir);
        match (cert.exists(), key.exists()) {
            (false, false) => Self::rotate(data_dir),
            (true, false) => Err(IdentityError::HalfPresent {
                present: cert,
                missing: key,
            }),
            (false, true) => Err(IdentityError::HalfPresent {
                present: key,
                missing: cert,
            }),
            (true, true) => Self::load(data_dir),
        }
    }

    /// The identity saved in `data_dir`.
    pub fn load(data_dir: &Path) -> Result<Self, IdentityError> {
        let (cert, key) = paths(data_dir);
        let read = |what, path: &Path| {
            std::fs::read_to_string(path).map_err(|source| IdentityError::Read {
                what,
                path: path.to_owned(),
                source,
            })
        };
        let cert_pem = read("certificate", &cert)?;
        let key_pem = read("key", &key)?;
        let cert_sha256 =
            leasehold_proto::tls::cert_pem_sha256(cert_pem.as_bytes()).map_err(|error| {
                IdentityError::Certificate {
                    path: cert.clone(),
                    reason: error.to_string(),
                }
            })?;
        Ok(Self {
            cert_pem,
            key_pem,
            cert_sha256,
        })
    }

    /// Replaces the identity in `data_dir` with a new one (the data dir is created if
    /// needed). Tenants refuse it until `provider update` publishes its fingerprint.
    pub fn rotate(data_dir: &Path) -> Result<Self, IdentityError> {
        let identity = Self::generate()?;
        std::fs::create_dir_all(data_dir).map_err(|source| IdentityError::Write {
            what: "directory",
            path: data_dir.to_owned(),
            source,
        })?;
        let (cert, key) = paths(data_dir);
        // Each file is replaced whole; a crash between the two leaves a pair that does
        // not match, which the next `rotate` repairs.
        write_atomically(&key, "key", identity.key_pem.as_bytes())?;
        write_atomically(&cert, "certificate", identity.cert_pem.as_bytes())?;
        Ok(identity)
    }

    /// SHA-256 of the certificate's DER encoding: what the registration carries.
    pub fn cert_sha256(&self) -> B256 {
        self.cert_sha256
    }

    pub(crate) fn server_tls(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }
}

fn paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    (data_dir.join(CERT_FILE), data_dir.join(KEY_FILE))
}

/// Writes through a temporary file in the same directory and renames it over `path`,
/// so that a reader never sees half a file; only the owner may read it.
fn write_atomically(path: &Path, what: &'static str, contents: &[u8]) -> Result<(), IdentityError> {
    let error = |source| IdentityError::Write {
        what,
        path: path.to_owned(),
        source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(error)?;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::rename(&temporary, path).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn is_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = GatewayIdentity::load_or_create(dir.path()).unwrap();
        let again = GatewayIdentity::load_or_create(dir.path()).unwrap();
        assert_eq!(first.cert_sha256(), again.cert_sha256());
        assert_eq!(first.key_pem, again.key_pem);
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key is the owner's only");
    }

    #[test]
    fn rotation_replaces_the_saved_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let first = GatewayIdentity::load_or_create(dir.path()).unwrap();
        let rotated = GatewayIdentity::rotate(dir.path()).unwrap();
        assert_ne!(first.cert_sha256(), rotated.cert_sha256());
        let loaded = GatewayIdentity::load(dir.path()).unwrap();
        assert_eq!(loaded.cert_sha256(), rotated.cert_sha256());
    }

    #[test]
    fn a_lone_certificate_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        GatewayIdentity::load_or_create(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        let error = GatewayIdentity::load_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(error, IdentityError::HalfPresent { .. }),
            "{error}"
        );
        assert!(error.to_string().contains(KEY_FILE), "{error}");
    }

    #[test]
    fn a_corrupt_certificate_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        GatewayIdentity::load_or_create(dir.path()).unwrap();
        std::fs::write(dir.path().join(CERT_FILE), "not pem").unwrap();
        let error = GatewayIdentity::load(dir.path()).unwrap_err();
        assert!(error.to_string().contains(CERT_FILE), "{error}");
    }
}
