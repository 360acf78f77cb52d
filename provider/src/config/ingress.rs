//! `[ingress]`: the provider's HTTP reverse proxy (see `crate::ingress`). Absent means no
//! ingress: services answer only on their published ports, as before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ingress::{IngressError, IngressListeners, load_tls};

pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:80";
pub const DEFAULT_HTTPS_LISTEN: &str = "0.0.0.0:443";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressConfig {
    /// The domain generated hostnames live under (`<id>.<domain>`); its wildcard DNS
    /// record points at this host.
    pub domain: String,
    /// Plain HTTP.
    #[serde(default = "default_http_listen")]
    pub http_listen: String,
    /// HTTPS, served when `tls_cert` and `tls_key` are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_listen: Option<String>,
    /// PEM certificate chain (a wildcard for `*.<domain>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

fn default_http_listen() -> String {
    DEFAULT_HTTP_LISTEN.to_owned()
}

impl IngressConfig {
    /// Every problem, as (field under `ingress.`, reason).
    pub(crate) fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if let Err(reason) = check_domain(&self.domain) {
            problems.push(("domain", reason));
        }
        if let Err(error) = self.http_listen.parse::<SocketAddr>() {
            problems.push((
                "http_listen",
                format!("`{}` is not host:port ({error})", self.http_listen),
            ));
        }
        if let Some(listen) = &self.https_listen
            && let Err(error) = listen.parse::<SocketAddr>()
        {
            problems.push((
                "https_listen",
                format!("`{listen}` is not host:port ({error})"),
            ));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => problems.push(("tls_key", "is required with tls_cert".into())),
            (None, Some(_)) => problems.push(("tls_cert", "is required with tls_key".into())),
            (None, None) if self.https_listen.is_some() => problems.push((
                "https_listen",
                "needs tls_cert and tls_key (HTTPS serves that certificate)".into(),
            )),
            _ => {}
        }
        problems
    }

    pub(crate) fn resolve_relative_paths(&mut self, resolve: impl Fn(&mut PathBuf)) {
        self.tls_cert
            .iter_mut()
            .chain(self.tls_key.iter_mut())
            .for_each(resolve);
    }

    /// The listeners to bind, with the certificate read from disk.
    pub fn listeners(&self) -> Result<IngressListeners, IngressError> {
        let listen = |field: &'static str, text: &str| {
            text.parse::<SocketAddr>()
                .map_err(|error| IngressError::Listen {
                    field,
                    addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidInput, error),
                })
        };
        let http = listen("http_listen", &self.http_listen)?;
        let https = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let addr = listen(
                    "https_listen",
                    self.https_listen.as_deref().unwrap_or(DEFAULT_HTTPS_LISTEN),
                )?;
                Some((addr, load_tls(Path::new(cert), Path::new(key))?))
            }
            _ => None,
        };
        Ok(IngressListeners { http, https })
    }
}

/// A DNS name of letter-digit-hyphen labels (no wildcard: the wildcard is implied).
fn check_domain(domain: &str) -> Result<(), String> {
    let domain = domain.trim_end_matches('.');
    if domain.is_empty() || domain.len() > 200 {
        return Err(format!(
            "`{domain}` must be a DNS name of 1 to 200 characters"
        ));
    }
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if domain.split('.').all(valid_label) {
        Ok(())
    } else {
        Err(format!(
            "`{domain}` is not a DNS name (labels of letters, digits and `-`; no `*`: \
             the wildcard is implied)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingress(text: &str) -> IngressConfig {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn defaults_listen_on_port_80_and_serve_no_https() {
        let config = ingress("domain = \"ingress.example.org\"");
        assert!(config.problems().is_empty());
        assert_eq!(config.http_listen, DEFAULT_HTTP_LISTEN);
        assert!(config.listeners().expect("listeners").https.is_none());
    }

    #[test]
    fn every_problem_names_its_field() {
        let config = ingress(
            "domain = \"*.bad_domain\"\nhttp_listen = \"80\"\nhttps_listen = \"nowhere\"\ntls_cert = \"c.pem\"",
        );
        let fields: Vec<&str> = config.problems().iter().map(|(field, _)| *field).collect();
        assert_eq!(fields, ["domain", "http_listen", "https_listen", "tls_key"]);
        let https_without_cert = ingress("domain = \"a.b\"\nhttps_listen = \"0.0.0.0:443\"");
        assert_eq!(https_without_cert.problems()[0].0, "https_listen");
    }
}
