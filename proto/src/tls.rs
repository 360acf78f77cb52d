//! The gateway's transport: TLS with the provider's own, usually self-signed,
//! certificate, trusted because its SHA-256 fingerprint is the one the provider
//! registered on chain.
//!
//! There is no CA and no hostname check: a gateway is the provider that registered
//! the certificate, whatever name or address it is reached at. The handshake's
//! signature is still verified against the pinned certificate's key, so a peer
//! that merely replays the certificate without its private key is refused.
//! Every client of the gateway connects through [`connect`]; there is no plain
//! HTTP/2 path.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use alloy::primitives::{Address, B256};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::client::ClientError;

/// SHA-256 of a certificate's DER encoding: what a provider registers and a tenant pins.
pub fn cert_sha256(der: &[u8]) -> B256 {
    B256::from_slice(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

/// The fingerprint of the first certificate in a PEM text, or why there is none.
pub fn cert_pem_sha256(pem: &[u8]) -> Result<B256, rustls::pki_types::pem::Error> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem).map(|der| cert_sha256(&der))
}

/// The certificate a provider's gateway must present: the fingerprint read from the
/// provider's on-chain registration, and whose it is (for the error that names it;
/// `None` when a provider checks its own gateway without loading its key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayPin {
    pub provider: Option<Address>,
    pub cert_sha256: B256,
}

/// The `host:port` a gateway endpoint names. The gateway speaks TLS only, so an
/// `http://` endpoint is refused rather than silently upgraded.
pub fn gateway_authority(address: &str) -> Result<String, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidEndpoint {
        endpoint: address.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = match address.split_once("://") {
        None => address,
        Some(("https", rest)) => rest,
        Some(("http", _)) => {
            return Err(invalid(
                "the gateway speaks TLS only: register `https://host:port` (or `host:port`)",
            ));
        }
        Some((scheme, _)) => {
            return Err(invalid(&format!(
                "unsupported scheme `{scheme}`: expected `https://host:port` or `host:port`"
            )));
        }
    };
    let authority = rest.trim_end_matches('/');
    let uri: Uri = format!("https://{authority}")
        .parse()
        .map_err(|e: tonic::codegen::http::uri::InvalidUri| invalid(&e.to_string()))?;
    match uri.authority() {
        Some(parsed) if parsed.as_str() == authority && parsed.port_u16().is_some() => {
            Ok(authority.to_owned())
        }
        _ => Err(invalid("expected `host:port` with nothing after the port")),
    }
}

/// Opens a TLS connection to the gateway at `address` that succeeds only when the
/// gateway presents the certificate `pin` names; nothing is sent before that.
pub async fn connect(
    address: &str,
    pin: GatewayPin,
    connect_timeout: Duration,
) -> Result<Channel, ClientError> {
    let authority = gateway_authority(address)?;
    let host = match authority.rsplit_once(':') {
        Some((host, _port)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => authority.as_str(),
    };
    let server_name =
        ServerName::try_from(host.to_owned()).map_err(|e| ClientError::InvalidEndpoint {
            endpoint: address.to_owned(),
            reason: e.to_string(),
        })?;
    let verifier = Arc::new(PinnedVerifier::new(pin.cert_sha256));
    let tls = TlsConnector::from(Arc::new(client_config(Arc::clone(&verifier))));
    let target = authority.clone();
    let connector = tower::service_fn(move |_: Uri| {
        let (tls, server_name, target) = (tls.clone(), server_name.clone(), target.clone());
        async move {
            let tcp = TcpStream::connect(&target).await?;
            tcp.set_nodelay(true)?;
            Ok::<_, std::io::Error>(TokioIo::new(tls.connect(server_name, tcp).await?))
        }
    });
    // The scheme stays `http` for tonic: TLS is this connector's, and tonic would
    // otherwise wrap an `https` URI in a second, CA-verified TLS layer of its own.
    let endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| ClientError::InvalidEndpoint {
            endpoint: address.to_owned(),
            reason: e.to_string(),
        })?
        .connect_timeout(connect_timeout);
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|source| match verifier.mismatch() {
            Some(presented) => ClientError::CertificateMismatch {
                provider: pin
                    .provider
                    .map_or_else(|| "(this provider)".to_owned(), |a| a.to_string()),
                endpoint: address.to_owned(),
                expected: pin.cert_sha256,
                presented,
            },
            None => ClientError::Connect {
                endpoint: address.to_owned(),
                source,
            },
        })
}

fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(verifier: Arc<PinnedVerifier>) -> rustls::ClientConfig {
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"))
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// Accepts exactly the certificate whose SHA-256 is `expected`, and remembers a
/// different one so that the caller can name it.
#[derive(Debug)]
struct PinnedVerifier {
    expected: B256,
    presented: Mutex<Option<B256>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedVerifier {
    fn new(expected: B256) -> Self {
        Self {
            expected,
            presented: Mutex::new(None),
            algorithms: crypto_provider().signature_verification_algorithms,
        }
    }

    /// The fingerprint of a refused certificate, if one was refused.
    fn mismatch(&self) -> Option<B256> {
        *self
            .presented
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = cert_sha256(end_entity.as_ref());
        if presented == self.expected {
            return Ok(ServerCertVerified::assertion());
        }
        *self
            .presented
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(presented);
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed() -> CertificateDer<'static> {
        rcgen::generate_simple_self_signed(vec!["gateway.test".to_owned()])
            .unwrap()
            .cert
            .der()
            .clone()
    }

    fn verify(verifier: &PinnedVerifier, cert: &CertificateDer<'_>) -> bool {
        verifier
            .verify_server_cert(
                cert,
                &[],
                &ServerName::try_from("anything.example").unwrap(),
                &[],
                UnixTime::now(),
            )
            .is_ok()
    }

    #[test]
    fn accepts_exactly_the_pinned_certificate_whatever_the_name() {
        let cert = self_signed();
        let verifier = PinnedVerifier::new(cert_sha256(&cert));
        assert!(verify(&verifier, &cert));
        assert_eq!(verifier.mismatch(), None);
    }

    #[test]
    fn refuses_another_certificate_and_remembers_its_fingerprint() {
        let pinned = self_signed();
        let other = self_signed();
        let verifier = PinnedVerifier::new(cert_sha256(&pinned));
        assert!(!verify(&verifier, &other));
        assert_eq!(verifier.mismatch(), Some(cert_sha256(&other)));
    }

    #[test]
    fn fingerprint_is_sha256_of_the_der() {
        // SHA-256 of the empty input (FIPS 180-2 test vector).
        assert_eq!(
            cert_sha256(b"").to_string(),
            "0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn endpoints_name_host_and_port_over_tls_only() {
        assert_eq!(
            gateway_authority("127.0.0.1:8443").unwrap(),
            "127.0.0.1:8443"
        );
        assert_eq!(
            gateway_authority("https://provider.example:8443/").unwrap(),
            "provider.example:8443"
        );
        let plain = gateway_authority("http://127.0.0.1:8443").unwrap_err();
        assert!(plain.to_string().contains("TLS only"), "{plain}");
        assert!(gateway_authority("https://provider.example").is_err());
        assert!(gateway_authority("https://provider.example:8443/path").is_err());
        let bad = gateway_authority("bad host:1").unwrap_err();
        assert!(bad.to_string().contains("`bad host:1`"), "{bad}");
    }
}
