//! `Lease.Shell`: the signed first message, then stdin and resizes in, output out.
//!
//! The stream's first message must be the `ShellRequest` the call's credentials sign; it
//! is authorised exactly like a unary call (signature, clock, the lease's tenant, replay).
//! Every later message rides on that authorisation. Stdin chunks over
//! [`MAX_SHELL_CHUNK_BYTES`] end the session with `ResourceExhausted`; output is split
//! into chunks of at most that size.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use leasehold_proto::auth::methods;
use leasehold_proto::client::{MAX_SHELL_CHUNK_BYTES, MAX_SHELL_COMMAND_BYTES};
use leasehold_proto::gateway::{
    ShellExit, ShellInput, ShellOutput, ShellRequest, shell_input, shell_output,
};
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};

use super::{GatewayStream, LeaseScoped, LeaseService};
use crate::runtime::{ExecInput, ExecOutput, ExecRequest, ExecSession, TerminalSize};

/// How long a client may take to send the signed first message.
pub(crate) const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

impl LeaseScoped for ShellRequest {
    fn lease_id(&self) -> u64 {
        self.lease_id
    }
}

fn terminal_size(cols: u32, rows: u32) -> Option<TerminalSize> {
    let size = TerminalSize {
        cols: u16::try_from(cols).unwrap_or(u16::MAX),
        rows: u16::try_from(rows).unwrap_or(u16::MAX),
    };
    (size.cols > 0 && size.rows > 0).then_some(size)
}

/// The runtime's request from the tenant's, refusing what no backend should see.
pub(crate) fn exec_request(request: ShellRequest) -> Result<ExecRequest, Status> {
    if request.service.is_empty() {
        return Err(Status::invalid_argument(
            "service: empty; name the service to run the command in",
        ));
    }
    if request.command.is_empty() {
        return Err(Status::invalid_argument(
            "command: empty; name the program to run, e.g. `sh`",
        ));
    }
    let command_bytes = request
        .command
        .iter()
        .fold(0usize, |sum, arg| sum.saturating_add(arg.len()));
    if command_bytes > MAX_SHELL_COMMAND_BYTES {
        return Err(Status::invalid_argument(format!(
            "command: {command_bytes} bytes; at most {MAX_SHELL_COMMAND_BYTES} are accepted"
        )));
    }
    Ok(ExecRequest {
        service: request.service,
        replica: request.replica,
        command: request.command,
        tty: request.tty,
        size: request
            .size
            .and_then(|size| terminal_size(size.cols, size.rows)),
    })
}

fn output_message(output: shell_output::Output) -> ShellOutput {
    ShellOutput {
        output: Some(output),
    }
}

/// One runtime output item as shell messages of at most [`MAX_SHELL_CHUNK_BYTES`].
pub(crate) fn output_messages(item: ExecOutput) -> Vec<ShellOutput> {
    let chunks = |bytes: Vec<u8>, wrap: fn(Vec<u8>) -> shell_output::Output| {
        bytes
            .chunks(MAX_SHELL_CHUNK_BYTES)
            .map(|chunk| output_message(wrap(chunk.to_vec())))
            .collect()
    };
    match item {
        ExecOutput::Stdout(bytes) => chunks(bytes, shell_output::Output::Stdout),
        ExecOutput::Stderr(bytes) => chunks(bytes, shell_output::Output::Stderr),
        ExecOutput::Exit(code) => vec![output_message(shell_output::Output::Exit(ShellExit {
            code: code.unwrap_or(-1),
        }))],
    }
}

/// Forwards the client's messages after the first to the session until the client stops
/// sending; a protocol violation is reported on `abort`.
async fn pump_input(
    mut inputs: Streaming<ShellInput>,
    session: mpsc::Sender<ExecInput>,
    abort: oneshot::Sender<Status>,
) {
    loop {
        let message = match inputs.message().await {
            Ok(Some(message)) => message,
            // The client half-closed: no more stdin, the command runs on.
            Ok(None) => {
                let _ = session.send(ExecInput::CloseStdin).await;
                return;
            }
            // The client is gone: dropping the sender ends the session.
            Err(_) => return,
        };
        let input = match message.input {
            Some(shell_input::Input::Stdin(bytes)) if bytes.len() > MAX_SHELL_CHUNK_BYTES => {
                let _ = abort.send(Status::resource_exhausted(format!(
                    "stdin message of {} bytes; at most {MAX_SHELL_CHUNK_BYTES} per message",
                    bytes.len()
                )));
                return;
            }
            Some(shell_input::Input::Stdin(bytes)) => ExecInput::Stdin(bytes),
            Some(shell_input::Input::Resize(size)) => match terminal_size(size.cols, size.rows) {
                Some(size) => ExecInput::Resize(size),
                None => continue,
            },
            Some(shell_input::Input::CloseStdin(_)) => ExecInput::CloseStdin,
            Some(shell_input::Input::Start(_)) | None => {
                let _ = abort.send(Status::invalid_argument(
                    "only the first Shell message may be `start`; later ones carry stdin, resize or close_stdin",
                ));
                return;
            }
        };
        if session.send(input).await.is_err() {
            return;
        }
    }
}

/// The session's output as gRPC messages, ended early by a protocol violation.
fn output_stream(
    output: GatewayStream<ExecOutput>,
    input: mpsc::Sender<ExecInput>,
    inputs: Streaming<ShellInput>,
) -> GatewayStream<ShellOutput> {
    let (abort, aborted) = oneshot::channel();
    tokio::spawn(pump_input(inputs, input, abort));
    type Aborted = Pin<Box<dyn Future<Output = Status> + Send>>;
    // Never resolves when the input ended without a violation.
    let aborted: Aborted = Box::pin(async move {
        match aborted.await {
            Ok(status) => status,
            Err(_) => std::future::pending().await,
        }
    });
    let state = Some((output, aborted));
    futures_util::stream::unfold(state, |state| async move {
        let (mut output, mut aborted) = state?;
        tokio::select! {
            biased;
            status = &mut aborted => Some((vec![Err(status)], None)),
            item = output.next() => match item {
                Some(Ok(item)) => Some((
                    output_messages(item).into_iter().map(Ok).collect(),
                    Some((output, aborted)),
                )),
                Some(Err(status)) => Some((vec![Err(status)], None)),
                None => None,
            },
        }
    })
    .flat_map(futures_util::stream::iter)
    .boxed()
}

impl LeaseService {
    /// Reads and authorises the signed first message, then connects the stream to a
    /// runtime session.
    pub(super) async fn open_shell(
        &self,
        request: Request<Streaming<ShellInput>>,
    ) -> Result<Response<GatewayStream<ShellOutput>>, Status> {
        let (metadata, extensions, mut inputs) = request.into_parts();
        let first = tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, inputs.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no ShellRequest within {} s of opening the stream",
                    FIRST_MESSAGE_TIMEOUT.as_secs()
                ))
            })??;
        let Some(ShellInput {
            input: Some(shell_input::Input::Start(shell_request)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first Shell message must be `start`, the signed ShellRequest",
            ));
        };
        // Shape only (cheap, reveals nothing); who may run it is checked next.
        let exec = exec_request(shell_request.clone())?;
        let request = Request::from_parts(metadata, extensions, shell_request);
        self.signed_call(methods::SHELL, request, |backend, message| async move {
            let ExecSession { input, output } = backend.exec(message.lease_id, exec).await?;
            let output = self.gateway_stream(output);
            Ok(output_stream(output, input, inputs))
        })
        .await
    }
}
