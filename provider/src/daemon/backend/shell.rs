//! `tenant shell` on the daemon's side: a runtime exec session that lives only while the
//! lease is open.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::{DaemonBackend, internal, runtime_error};
use crate::gateway::BackendError;
use crate::lease::LeaseStateKind;
use crate::runtime::{ExecOutput, ExecRequest, ExecSession, RuntimeError};

/// How often an open shell checks that its lease is still open.
pub const SHELL_LEASE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The lease states in which no shell may run (the workload is going or gone).
fn is_closing(state: LeaseStateKind) -> bool {
    matches!(state, LeaseStateKind::Closing | LeaseStateKind::Closed)
}

impl DaemonBackend {
    /// Why the lease takes no shell now, if it does not.
    async fn shell_refusal(&self, lease_id: u64) -> Result<Option<BackendError>, BackendError> {
        let record = self
            .core
            .store
            .find_lease(lease_id)
            .await
            .map_err(internal)?
            .ok_or(BackendError::UnknownLease { lease_id })?;
        let state = record.state.kind();
        Ok(is_closing(state).then(|| BackendError::Unavailable {
            reason: format!(
                "lease {lease_id} is {}; the shell session ended",
                state.as_str()
            ),
        }))
    }

    pub(super) async fn exec_session(
        &self,
        lease_id: u64,
        request: ExecRequest,
    ) -> Result<ExecSession<BackendError>, BackendError> {
        if let Some(refusal) = self.shell_refusal(lease_id).await? {
            return Err(refusal);
        }
        let session = self
            .core
            .runtime
            .exec(lease_id, &request)
            .await
            .map_err(|error| match error {
                RuntimeError::NotFound { what } => BackendError::NotFound { what },
                other => runtime_error(lease_id, other),
            })?
            .map_err(move |error| runtime_error(lease_id, error));
        // The runtime's output, cut off with the reason once the lease starts closing. A
        // teardown usually kills the command before the next check: the session's last
        // item is replaced by the lease's state when that explains it.
        let watcher = Arc::new(DaemonBackend::new(self.core.clone()));
        let closed_watcher = Arc::clone(&watcher);
        let closed = Box::pin(async move {
            loop {
                tokio::time::sleep(SHELL_LEASE_CHECK_INTERVAL).await;
                match closed_watcher.shell_refusal(lease_id).await {
                    Ok(Some(refusal)) | Err(refusal) => return refusal,
                    Ok(None) => {}
                }
            }
        });
        let output = futures_util::stream::unfold(
            Some((session.output, closed, watcher)),
            move |state| async move {
                let (mut output, mut closed, watcher) = state?;
                tokio::select! {
                    refusal = &mut closed => Some((Err(refusal), None)),
                    item = output.next() => match item {
                        Some(last @ (Ok(ExecOutput::Exit(_)) | Err(_))) => {
                            let item = match watcher.shell_refusal(lease_id).await {
                                Ok(Some(refusal)) => Err(refusal),
                                _ => last,
                            };
                            Some((item, None))
                        }
                        Some(item) => Some((item, Some((output, closed, watcher)))),
                        None => None,
                    },
                }
            },
        )
        .boxed();
        Ok(ExecSession {
            input: session.input,
            output,
        })
    }
}
