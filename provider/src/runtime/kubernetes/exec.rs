//! `kubectl exec` for `tenant shell`: the pod of the replica, a websocket attach through
//! kube-rs (`ws`), stdin and resizes in, stdout and stderr out, and the exit code read
//! from the status channel.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::Resource;
use kube::api::{Api, AttachParams, ListParams, TerminalSize as KubeTerminalSize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::KubernetesRuntime;
use super::status::indexed_pods;
use crate::runtime::{
    DEFAULT_TERMINAL_SIZE, EXEC_INPUT_BUFFER, ExecInput, ExecOutput, ExecRequest, ExecSession,
    RuntimeError, TerminalSize, lease_selector, receiver_stream, validate_exec,
};

/// Output chunks buffered towards the caller before reading pauses.
const OUTPUT_BUFFER: usize = 64;

/// What the exec attaches to: the service's container, stdin always (a one-shot command
/// may read it), stderr apart unless there is a terminal (Kubernetes merges them then and
/// refuses both at once).
pub fn attach_params(request: &ExecRequest) -> AttachParams {
    AttachParams {
        container: Some(request.service.clone()),
        stdin: true,
        stdout: true,
        stderr: !request.tty,
        tty: request.tty,
        max_stdin_buf_size: Some(leasehold_proto::client::MAX_SHELL_CHUNK_BYTES),
        max_stdout_buf_size: Some(leasehold_proto::client::MAX_SHELL_CHUNK_BYTES),
        max_stderr_buf_size: Some(leasehold_proto::client::MAX_SHELL_CHUNK_BYTES),
    }
}

/// The exec request's path and query, as kube-rs sends it for `pod` in `namespace`.
pub fn exec_path(
    namespace: &str,
    pod: &str,
    request: &ExecRequest,
) -> Result<String, RuntimeError> {
    kube::core::Request::new(Pod::url_path(&(), Some(namespace)))
        .exec(pod, request.command.clone(), &attach_params(request))
        .map(|built| built.uri().to_string())
        .map_err(|error| super::super::invalid("command", error.to_string()))
}

/// The command's exit code from the exec's final status: `Success` is 0, a
/// `NonZeroExitCode` failure carries the code as its `ExitCode` cause.
pub fn exit_code(status: &Status) -> Option<i32> {
    if status.status.as_deref() == Some("Success") {
        return Some(0);
    }
    status
        .details
        .as_ref()?
        .causes
        .as_ref()?
        .iter()
        .find(|cause| cause.reason.as_deref() == Some("ExitCode"))
        .and_then(|cause| cause.message.as_deref()?.parse().ok())
}

fn kube_size(size: TerminalSize) -> KubeTerminalSize {
    KubeTerminalSize {
        width: size.cols,
        height: size.rows,
    }
}

/// Copies `reader` into the output channel as `wrap`ped chunks until it ends, or until
/// `ended` says its writer is gone and all it wrote was read: kube-rs leaves the pipes
/// open when the websocket fails, so their end of file alone would never come.
async fn copy_output(
    mut reader: impl AsyncRead + Unpin,
    output: mpsc::Sender<Result<ExecOutput, RuntimeError>>,
    wrap: fn(Vec<u8>) -> ExecOutput,
    mut ended: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; leasehold_proto::client::MAX_SHELL_CHUNK_BYTES];
    loop {
        // Reading first: what is already in the pipe is delivered before stopping.
        let read = tokio::select! {
            biased;
            read = reader.read(&mut buffer) => read,
            _ = ended.wait_for(|ended| *ended) => return,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                let chunk = buffer.get(..read).unwrap_or_default().to_vec();
                if output.send(Ok(wrap(chunk))).await.is_err() {
                    return;
                }
            }
        }
    }
}

impl KubernetesRuntime {
    pub(super) async fn exec_in_pod(
        &self,
        lease_id: u64,
        request: &ExecRequest,
    ) -> Result<ExecSession, RuntimeError> {
        validate_exec(request)?;
        let what = format!(
            "running replica {} of service {} of lease {lease_id}",
            request.replica, request.service
        );
        let not_found = || RuntimeError::NotFound { what: what.clone() };
        if self.owned_namespace(lease_id).await?.is_none() {
            return Err(not_found());
        }
        let workload = self
            .workloads(lease_id)
            .await?
            .into_iter()
            .find(|workload| workload.service == request.service)
            .ok_or_else(not_found)?;
        let pods: Vec<Pod> = self
            .list_in(
                lease_id,
                &ListParams::default().labels(&lease_selector(lease_id)),
            )
            .await?;
        let pod = indexed_pods(&workload, &pods)
            .into_iter()
            .find(|(replica, _)| *replica == request.replica)
            .and_then(|(_, pod)| pod.metadata.name.clone())
            .ok_or_else(not_found)?;
        let api: Api<Pod> = self.namespaced(lease_id);
        let mut attached = api
            .exec(&pod, request.command.clone(), &attach_params(request))
            .await
            .map_err(|error| super::api_error(format!("exec in {what}"), error))?;

        let mut resizes = attached.terminal_size();
        if let Some(resizes) = resizes.as_mut() {
            let _ = resizes.try_send(kube_size(request.size.unwrap_or(DEFAULT_TERMINAL_SIZE)));
        }
        let (input_sender, mut inputs) = mpsc::channel::<ExecInput>(EXEC_INPUT_BUFFER);
        let mut stdin = attached.stdin();
        tokio::spawn(async move {
            while let Some(message) = inputs.recv().await {
                match message {
                    ExecInput::Stdin(bytes) => {
                        if let Some(writer) = stdin.as_mut()
                            && writer.write_all(&bytes).await.is_err()
                        {
                            stdin = None;
                        }
                    }
                    // A full resize queue already holds a size; the next resize follows.
                    ExecInput::Resize(size) => {
                        if let Some(resizes) = resizes.as_mut() {
                            let _ = resizes.try_send(kube_size(size));
                        }
                    }
                    ExecInput::CloseStdin => {
                        if let Some(mut writer) = stdin.take() {
                            let _ = writer.shutdown().await;
                        }
                    }
                }
            }
            // The session was dropped: the command reads end of file (kube-rs only sends
            // the close when the pipe is shut down, not when it is dropped).
            if let Some(mut writer) = stdin {
                let _ = writer.shutdown().await;
            }
        });

        let (output_sender, outputs) = mpsc::channel(OUTPUT_BUFFER);
        let stdout = attached.stdout();
        let stderr = attached.stderr();
        let status = attached.take_status();
        let (ended_sender, ended) = watch::channel(false);
        tokio::spawn(async move {
            let copy_stdout = async {
                if let Some(reader) = stdout {
                    let output = output_sender.clone();
                    copy_output(reader, output, ExecOutput::Stdout, ended.clone()).await;
                }
            };
            let copy_stderr = async {
                if let Some(reader) = stderr {
                    let output = output_sender.clone();
                    copy_output(reader, output, ExecOutput::Stderr, ended.clone()).await;
                }
            };
            // Owns the websocket task until it ends: dropping it earlier would end the session.
            let connection = async {
                let outcome = attached.join().await;
                let _ = ended_sender.send(true);
                outcome
            };
            let ((), (), outcome) = tokio::join!(copy_stdout, copy_stderr, connection);
            let last = match outcome {
                Ok(()) => Ok(ExecOutput::Exit(match status {
                    Some(status) => status.await.as_ref().and_then(exit_code),
                    None => None,
                })),
                Err(error) => Err(RuntimeError::Unavailable {
                    reason: format!(
                        "the exec connection to {what} broke while the command ran: {error}"
                    ),
                }),
            };
            let _ = output_sender.send(last).await;
        });
        Ok(ExecSession {
            input: input_sender,
            output: receiver_stream(outputs),
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    use super::*;

    fn request(tty: bool) -> ExecRequest {
        ExecRequest {
            service: "web".into(),
            replica: 1,
            command: vec!["sh".into(), "-c".into(), "echo a b; exit 3".into()],
            tty,
            size: None,
        }
    }

    fn query(path: &str) -> Vec<(String, String)> {
        let (_, query) = path.split_once('?').expect("a query");
        url_pairs(query)
    }

    /// `application/x-www-form-urlencoded` pairs, decoded.
    fn url_pairs(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(key), decode(value))
            })
            .collect()
    }

    fn decode(text: &str) -> String {
        let bytes = text.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut index = 0;
        while let Some(&byte) = bytes.get(index) {
            if byte == b'%' {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                index += 3;
            } else {
                out.push(byte);
                index += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn a_one_shot_exec_attaches_stdin_stdout_and_stderr_apart() {
        let path = exec_path("lh-abc", "web-0", &request(false)).unwrap();
        assert!(
            path.starts_with("/api/v1/namespaces/lh-abc/pods/web-0/exec?"),
            "{path}"
        );
        let mut got = query(&path);
        got.sort();
        let mut want = pairs(&[
            ("container", "web"),
            ("stdin", "true"),
            ("stdout", "true"),
            ("stderr", "true"),
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo a b; exit 3"),
        ]);
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn a_terminal_exec_asks_for_a_tty_and_merges_stderr() {
        let path = exec_path("lh-abc", "web-0", &request(true)).unwrap();
        let got = query(&path);
        assert!(
            got.contains(&("tty".to_owned(), "true".to_owned())),
            "{got:?}"
        );
        assert!(
            !got.iter().any(|(key, _)| key == "stderr"),
            "stderr and tty at once is refused by the API server: {got:?}"
        );
        assert!(
            got.contains(&("stdin".to_owned(), "true".to_owned())),
            "{got:?}"
        );
    }

    #[test]
    fn the_exit_code_comes_from_the_status_channel() {
        let status = |status: &str, reason: &str, causes: Option<Vec<StatusCause>>| Status {
            status: Some(status.into()),
            reason: Some(reason.into()),
            details: causes.map(|causes| StatusDetails {
                causes: Some(causes),
                ..StatusDetails::default()
            }),
            ..Status::default()
        };
        assert_eq!(exit_code(&status("Success", "", None)), Some(0));
        let exit_3 = StatusCause {
            reason: Some("ExitCode".into()),
            message: Some("3".into()),
            field: None,
        };
        assert_eq!(
            exit_code(&status("Failure", "NonZeroExitCode", Some(vec![exit_3]))),
            Some(3)
        );
        assert_eq!(exit_code(&status("Failure", "InternalError", None)), None);
    }
}
