//! The ingress certificate: the provider's own PEM files (a wildcard for the ingress
//! domain), served with rustls on ring, the crypto kube already builds.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::IngressError;

/// Reads the certificate chain and private key and builds the server configuration
/// (HTTP/1.1 only, announced by ALPN).
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, IngressError> {
    let tls_error = |field: &'static str, path: &Path, reason: String| IngressError::Tls {
        field,
        path: path.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|error| tls_error("tls_cert", cert, error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| tls_error("tls_cert", cert, error.to_string()))?;
    if chain.is_empty() {
        return Err(tls_error(
            "tls_cert",
            cert,
            "holds no PEM certificate".into(),
        ));
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|error| tls_error("tls_key", key, error.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| tls_error("tls_cert", cert, error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|error| {
            tls_error(
                "tls_key",
                key,
                format!("does not fit the certificate: {error}"),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
