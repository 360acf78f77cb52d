//! Image pulls, with progress reported as runtime events.

use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;
use leasehold_manifests::Credentials;

use super::DockerRuntime;
use super::engine::{engine_error, error_reason, is_not_found};
use crate::runtime::{RuntimeError, RuntimeEvent, RuntimeEventKind, registry};

impl DockerRuntime {
    pub(super) async fn ensure_image(
        &self,
        lease_id: u64,
        image: &str,
        credentials: Option<&Credentials>,
    ) -> Result<(), RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(err) if is_not_found(&err) => {}
            Err(err) => {
                return Err(engine_error(
                    format!("inspect image {}", image.escape_debug()),
                    &err,
                ));
            }
        }
        tracing::info!(
            lease_id,
            image,
            credentials = credentials.map(tracing::field::display),
            "pulling image"
        );
        let pull = self.pull_image(lease_id, image, credentials);
        match tokio::time::timeout(self.config.pull_timeout, pull).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(RuntimeError::ImagePull {
                    image: image.to_owned(),
                    reason: format!("timed out after {:?}", self.config.pull_timeout),
                });
            }
        }
        tracing::info!(lease_id, image, "image pulled");
        self.emit(RuntimeEvent {
            lease_id,
            service: None,
            replica: None,
            kind: RuntimeEventKind::PullComplete {
                image: image.to_owned(),
            },
        });
        Ok(())
    }

    async fn pull_image(
        &self,
        lease_id: u64,
        image: &str,
        credentials: Option<&Credentials>,
    ) -> Result<(), RuntimeError> {
        let pull_error = |reason: String| RuntimeError::ImagePull {
            image: image.to_owned(),
            reason: explain_refusal(reason, credentials),
        };
        let (from_image, tag) = split_image_reference(image);
        let mut options = CreateImageOptionsBuilder::new().from_image(&from_image);
        if let Some(tag) = &tag {
            options = options.tag(tag);
        }
        let mut progress = self.docker.create_image(
            Some(options.build()),
            None,
            credentials.map(registry::docker_credentials),
        );
        while let Some(item) = progress.next().await {
            let info = item.map_err(|err| pull_error(error_reason(&err)))?;
            if let Some(detail) = info.error_detail {
                return Err(pull_error(
                    detail.message.unwrap_or_else(|| "unknown error".to_owned()),
                ));
            }
            let status = match (info.id, info.status) {
                (Some(layer), Some(status)) => format!("{layer}: {status}"),
                (None, Some(status)) => status,
                (_, None) => continue,
            };
            let detail = info.progress_detail.unwrap_or_default();
            let current = detail.current.and_then(|n| u64::try_from(n).ok());
            let total = detail.total.and_then(|n| u64::try_from(n).ok());
            tracing::debug!(lease_id, image, status, current, total, "pull progress");
            self.emit(RuntimeEvent {
                lease_id,
                service: None,
                replica: None,
                kind: RuntimeEventKind::PullProgress {
                    image: image.to_owned(),
                    status,
                    current,
                    total,
                },
            });
        }
        // A pull stream can end without an error line yet leave no image behind.
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(err) => Err(pull_error(format!(
                "the engine reported no error but the image is absent: {}",
                error_reason(&err)
            ))),
        }
    }
}

/// What the engine says when a registry refuses a pull for want of (the right) credentials.
const AUTH_REFUSALS: [&str; 4] = [
    "unauthorized",
    "no basic auth credentials",
    "authentication required",
    "denied",
];

/// A refusal for credentials becomes "unauthorized: ..." saying what to do about it (the
/// engine's own words differ per case, e.g. "no basic auth credentials"); any other
/// reason is kept as the engine gave it.
fn explain_refusal(reason: String, credentials: Option<&Credentials>) -> String {
    let lower = reason.to_lowercase();
    if !AUTH_REFUSALS.iter().any(|refusal| lower.contains(refusal)) {
        return reason;
    }
    match credentials {
        Some(credentials) => format!(
            "unauthorized: the registry refused the credentials of user `{}` for `{}` \
             ({reason})",
            credentials.username, credentials.host
        ),
        None => format!(
            "unauthorized: the registry requires credentials; give the service \
             `credentials` (host, username, password) in the SDL ({reason})"
        ),
    }
}

/// Splits an image reference into what the pull API wants: the name and the
/// tag to pull (`latest` when none is given, as `docker pull` does; none for a
/// digest, which the name already carries).
pub fn split_image_reference(image: &str) -> (String, Option<String>) {
    if image.contains('@') {
        return (image.to_owned(), None);
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image.get(last_slash..).and_then(|name| name.rfind(':')) {
        Some(colon) => {
            let split = last_slash + colon;
            (
                image.get(..split).unwrap_or(image).to_owned(),
                image.get(split + 1..).map(str::to_owned),
            )
        }
        None => (image.to_owned(), Some("latest".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_pull_says_unauthorized_and_what_to_do() {
        let none = explain_refusal(
            "Head \"http://r/v2/x\": no basic auth credentials".into(),
            None,
        );
        assert!(none.starts_with("unauthorized: "), "{none}");
        assert!(none.contains("`credentials`"), "{none}");
        let credentials = Credentials {
            host: "r:5000".into(),
            email: String::new(),
            username: "team".into(),
            password: "never-shown".into(),
        };
        let wrong = explain_refusal(
            "unauthorized: authentication required".into(),
            Some(&credentials),
        );
        assert!(wrong.contains("user `team` for `r:5000`"), "{wrong}");
        assert!(!wrong.contains("never-shown"), "{wrong}");
        let other = explain_refusal("manifest unknown".into(), Some(&credentials));
        assert_eq!(other, "manifest unknown");
    }
}
