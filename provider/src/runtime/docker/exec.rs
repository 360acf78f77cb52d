//! `docker exec` for `tenant shell`: create the exec attached (with a TTY when asked),
//! pump stdin and resizes into it, stream its output, and read its exit code.

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerSummaryStateEnum, ExecConfig};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::DockerRuntime;
use super::engine::engine_error;
use super::observe::label;
use crate::runtime::{
    DEFAULT_TERMINAL_SIZE, EXEC_INPUT_BUFFER, ExecInput, ExecOutput, ExecRequest, ExecSession,
    LABEL_REPLICA, RuntimeError, TerminalSize, receiver_stream, validate_exec,
};

/// How long the exit code may take to show after the output ended.
const EXIT_CODE_WAIT: Duration = Duration::from_secs(5);

/// How long a killed command's replica is watched for stopping.
const STOP_SETTLE: Duration = Duration::from_secs(2);

/// Output chunks buffered towards the caller before the engine's stream is paused.
const OUTPUT_BUFFER: usize = 64;

/// The exec body: attached, never privileged, the container's own user.
pub fn exec_config(request: &ExecRequest) -> ExecConfig {
    ExecConfig {
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(request.tty),
        // Set at creation: a resize sent right after the start can reach the engine before
        // the command has its terminal, and is then lost.
        console_size: request.tty.then(|| {
            let size = request.size.unwrap_or(DEFAULT_TERMINAL_SIZE);
            vec![usize::from(size.rows), usize::from(size.cols)]
        }),
        cmd: Some(request.command.clone()),
        privileged: Some(false),
        ..ExecConfig::default()
    }
}

impl DockerRuntime {
    pub(super) async fn exec_in_replica(
        &self,
        lease_id: u64,
        request: &ExecRequest,
    ) -> Result<ExecSession, RuntimeError> {
        validate_exec(request)?;
        let what = || {
            format!(
                "running replica {} of service {} of lease {lease_id}",
                request.replica, request.service
            )
        };
        let container = self
            .lease_containers(lease_id, Some(&request.service))
            .await?
            .into_iter()
            .find(|container| {
                label(container.labels.as_ref(), LABEL_REPLICA).and_then(|n| n.parse::<u32>().ok())
                    == Some(request.replica)
            })
            .filter(|container| container.state == Some(ContainerSummaryStateEnum::RUNNING))
            .and_then(|container| container.id)
            .ok_or_else(|| RuntimeError::NotFound { what: what() })?;

        let docker = self.docker.clone();
        let exec = docker
            .create_exec(&container, exec_config(request))
            .await
            .map_err(|err| engine_error(format!("create an exec in {}", what()), &err))?
            .id;
        let started = docker
            .start_exec(
                &exec,
                Some(StartExecOptions {
                    detach: false,
                    tty: request.tty,
                    output_capacity: Some(leasehold_proto::client::MAX_SHELL_CHUNK_BYTES),
                }),
            )
            .await
            .map_err(|err| engine_error(format!("start an exec in {}", what()), &err))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(RuntimeError::Engine {
                action: format!("attach to an exec in {}", what()),
                reason: "the engine started it detached".into(),
            });
        };
        if request.tty {
            resize(
                &docker,
                &exec,
                request.size.unwrap_or(DEFAULT_TERMINAL_SIZE),
            )
            .await;
        }

        let (input_sender, mut inputs) = mpsc::channel::<ExecInput>(EXEC_INPUT_BUFFER);
        let resizer = docker.clone();
        let resized_exec = exec.clone();
        tokio::spawn(async move {
            let mut stdin = Some(input);
            while let Some(message) = inputs.recv().await {
                match message {
                    ExecInput::Stdin(bytes) => {
                        let Some(writer) = stdin.as_mut() else {
                            continue;
                        };
                        if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err()
                        {
                            // The command closed its stdin or ended: the output side reports.
                            stdin = None;
                        }
                    }
                    ExecInput::Resize(size) => resize(&resizer, &resized_exec, size).await,
                    ExecInput::CloseStdin => {
                        if let Some(mut writer) = stdin.take() {
                            let _ = writer.shutdown().await;
                        }
                    }
                }
            }
            if let Some(mut writer) = stdin {
                let _ = writer.shutdown().await;
            }
        });

        let (output_sender, outputs) = mpsc::channel(OUTPUT_BUFFER);
        let replica = format!(
            "replica {} of service {} of lease {lease_id}",
            request.replica, request.service
        );
        tokio::spawn(async move {
            let mut output = output;
            while let Some(frame) = output.next().await {
                let item = match frame {
                    Ok(LogOutput::StdErr { message }) => Ok(ExecOutput::Stderr(message.to_vec())),
                    Ok(
                        LogOutput::StdOut { message }
                        | LogOutput::Console { message }
                        | LogOutput::StdIn { message },
                    ) => Ok(ExecOutput::Stdout(message.to_vec())),
                    Err(err) => Err(engine_error("read exec output", &err)),
                };
                let failed = item.is_err();
                if output_sender.send(item).await.is_err() || failed {
                    return;
                }
            }
            // A command killed with its container (a restart, the lease's teardown) did
            // not end by itself: say so instead of passing on the kill's exit code.
            let code = exit_code(&docker, &exec).await;
            let item = if replica_survived(&docker, &container, code).await {
                Ok(ExecOutput::Exit(code))
            } else {
                Err(RuntimeError::Unavailable {
                    reason: format!("{replica} stopped while the command ran"),
                })
            };
            let _ = output_sender.send(item).await;
        });
        Ok(ExecSession {
            input: input_sender,
            output: receiver_stream(outputs),
        })
    }
}

async fn resize(docker: &bollard::Docker, exec: &str, size: TerminalSize) {
    let options = ResizeExecOptions {
        height: size.rows,
        width: size.cols,
    };
    if let Err(error) = docker.resize_exec(exec, options).await {
        // A resize racing the command's end is harmless.
        tracing::debug!(exec, %error, "exec resize failed");
    }
}

async fn replica_runs(docker: &bollard::Docker, container: &str) -> bool {
    docker
        .inspect_container(container, None)
        .await
        .ok()
        .and_then(|inspected| inspected.state?.running)
        == Some(true)
}

/// Whether the replica still runs after the command ended with `code`. A code of a kill
/// (128 + signal, or none) may be the container stopping, which the engine shows a moment
/// after the command's end: such a code is checked for [`STOP_SETTLE`].
async fn replica_survived(docker: &bollard::Docker, container: &str, code: Option<i32>) -> bool {
    let killed = code.is_none_or(|code| code >= 128);
    let deadline = tokio::time::Instant::now() + if killed { STOP_SETTLE } else { Duration::ZERO };
    loop {
        if !replica_runs(docker, container).await {
            return false;
        }
        if tokio::time::Instant::now() >= deadline {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The exec's exit code once the engine has it; `None` when it never says (the
/// container was removed).
async fn exit_code(docker: &bollard::Docker, exec: &str) -> Option<i32> {
    let deadline = tokio::time::Instant::now() + EXIT_CODE_WAIT;
    loop {
        let inspected = docker.inspect_exec(exec).await.ok()?;
        if inspected.running != Some(true) {
            return inspected
                .exit_code
                .map(|code| i32::try_from(code).unwrap_or(i32::MIN));
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::TerminalSize;

    fn request(tty: bool, size: Option<TerminalSize>) -> ExecRequest {
        ExecRequest {
            service: "web".into(),
            replica: 0,
            command: vec!["sh".into()],
            tty,
            size,
        }
    }

    #[test]
    fn a_terminal_gets_its_size_at_creation_as_rows_then_columns() {
        let size = TerminalSize {
            cols: 123,
            rows: 45,
        };
        assert_eq!(
            exec_config(&request(true, Some(size))).console_size,
            Some(vec![45, 123])
        );
        let default = exec_config(&request(true, None))
            .console_size
            .expect("size");
        assert_eq!(
            default,
            vec![
                usize::from(DEFAULT_TERMINAL_SIZE.rows),
                usize::from(DEFAULT_TERMINAL_SIZE.cols)
            ]
        );
        assert_eq!(exec_config(&request(false, Some(size))).console_size, None);
    }
}
