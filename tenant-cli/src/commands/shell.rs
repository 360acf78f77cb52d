//! `tenant shell`: a command in one of the lease's replicas, interactive or one-shot,
//! over the gateway's signed `Lease.Shell` stream.

use std::io::{Read as _, Write as _};

use futures_util::StreamExt as _;
use leasehold_proto::client::MAX_SHELL_CHUNK_BYTES;
use leasehold_proto::gateway::{ShellInput, ShellRequest, TerminalSize, shell_output};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::chain::Chain;
use crate::cli::ShellArgs;
use crate::commands::Ctx;
use crate::error::{CliError, CliResult, Context as _, ExitKind, ResultExt as _};
use crate::output::Output;
use crate::{gateway, terminal, wallet};

/// The program run when the tenant names none.
pub const DEFAULT_COMMAND: &str = "sh";

/// Stdin is read (and sent) in pieces of at most this many bytes.
const STDIN_CHUNK_BYTES: usize = MAX_SHELL_CHUNK_BYTES / 2;

/// Input messages waiting for the network before stdin reading pauses.
const INPUT_BUFFER: usize = 32;

/// The service to run in: the one named, else the lease's only service.
async fn pick_service(
    client: &mut leasehold_proto::client::SignedLeaseClient,
    lease_id: u64,
    named: Option<String>,
) -> CliResult<String> {
    if let Some(service) = named {
        return Ok(service);
    }
    let status = gateway::status(client, lease_id).await?;
    let mut names: Vec<String> = status.services.into_iter().map(|s| s.name).collect();
    match names.len() {
        1 => Ok(names.remove(0)),
        0 => Err(CliError::failed(format!(
            "lease {lease_id} runs no service yet (state {}); try again once it runs",
            status.state
        ))),
        _ => Err(CliError::usage(format!(
            "lease {lease_id} runs services {}: choose one with --service",
            names.join(", ")
        ))),
    }
}

/// Reads stdin on a plain thread (a blocked read cannot be cancelled, and must not keep
/// the async runtime from shutting down) and sends it in chunks, then `close_stdin`.
fn forward_stdin(input: mpsc::Sender<ShellInput>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buffer = vec![0u8; STDIN_CHUNK_BYTES];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    let chunk = buffer.get(..read).unwrap_or_default().to_vec();
                    if input.blocking_send(ShellInput::stdin(chunk)).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = input.blocking_send(ShellInput::close_stdin());
    });
}

/// Sends the terminal's new size on every SIGWINCH.
fn forward_resizes(input: mpsc::Sender<ShellInput>) -> CliResult<()> {
    let mut resized = signal(SignalKind::window_change())
        .or_kind(ExitKind::Failed)
        .ctx("watching the terminal size")?;
    tokio::spawn(async move {
        while resized.recv().await.is_some() {
            if let Some((cols, rows)) = terminal::size()
                && input
                    .send(ShellInput::resize(u32::from(cols), u32::from(rows)))
                    .await
                    .is_err()
            {
                return;
            }
        }
    });
    Ok(())
}

/// What a one-shot command printed, for `--output json`.
#[derive(Default)]
struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

pub async fn run(ctx: &Ctx, args: ShellArgs) -> CliResult<u8> {
    let lease_id = args.lease;
    let tty = if args.tty {
        true
    } else if args.no_tty {
        false
    } else {
        terminal::stdin_is_terminal() && args.command.is_empty()
    };
    if tty && ctx.output == Output::Json {
        return Err(CliError::usage(
            "--output json collects a one-shot command's output; it cannot drive a terminal: add --no-tty",
        ));
    }
    let command = if args.command.is_empty() {
        vec![DEFAULT_COMMAND.to_owned()]
    } else {
        args.command
    };

    let signer = wallet::signer(&ctx.settings)?;
    let chain = Chain::connect(&ctx.settings, Some(signer.clone())).await?;
    let provider_gateway = gateway::gateway_of(&chain, lease_id).await?;
    let mut client = gateway::connect(&provider_gateway, signer).await?;
    let service = pick_service(&mut client, lease_id, args.service).await?;

    let size = tty.then(terminal::size).flatten();
    let request = ShellRequest {
        lease_id,
        service: service.clone(),
        replica: args.replica,
        command: command.clone(),
        tty,
        size: size.map(|(cols, rows)| TerminalSize {
            cols: u32::from(cols),
            rows: u32::from(rows),
        }),
    };
    let (input, inputs) = mpsc::channel(INPUT_BUFFER);
    let inputs = futures_util::stream::unfold(inputs, |mut inputs| async move {
        inputs.recv().await.map(|message| (message, inputs))
    });
    let mut output = client.shell(request, inputs).await.ctx(format!(
        "shell in lease {lease_id} at {}",
        provider_gateway.endpoint
    ))?;

    // From here on every return path drops this guard, which restores the terminal.
    let raw_mode = if tty && terminal::stdin_is_terminal() {
        Some(
            terminal::RawMode::enable()
                .or_kind(ExitKind::Failed)
                .ctx("switching the terminal to raw mode")?,
        )
    } else {
        None
    };
    if raw_mode.is_some() {
        forward_resizes(input.clone())?;
    }
    forward_stdin(input);

    let mut terminated = signal(SignalKind::terminate()).or_kind(ExitKind::Failed)?;
    let mut hung_up = signal(SignalKind::hangup()).or_kind(ExitKind::Failed)?;
    let mut captured = (ctx.output == Output::Json).then(Captured::default);
    let exit_code = loop {
        let message = tokio::select! {
            message = output.next() => message,
            _ = terminated.recv() => break None,
            _ = hung_up.recv() => break None,
        };
        let output = match message {
            Some(Ok(message)) => message.output,
            Some(Err(status)) => {
                drop(raw_mode);
                let kind = match status.code() {
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => ExitKind::Network,
                    _ => ExitKind::Failed,
                };
                return Err(CliError::msg(
                    kind,
                    format!("shell in lease {lease_id} ended: {}", status.message()),
                ));
            }
            None => break None,
        };
        match (output, captured.as_mut()) {
            (Some(shell_output::Output::Stdout(bytes)), Some(captured)) => {
                captured.stdout.extend_from_slice(&bytes);
            }
            (Some(shell_output::Output::Stderr(bytes)), Some(captured)) => {
                captured.stderr.extend_from_slice(&bytes);
            }
            (Some(shell_output::Output::Stdout(bytes)), None) => {
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(&bytes).and_then(|()| stdout.flush());
            }
            (Some(shell_output::Output::Stderr(bytes)), None) => {
                let mut stderr = std::io::stderr().lock();
                let _ = stderr.write_all(&bytes).and_then(|()| stderr.flush());
            }
            (Some(shell_output::Output::Exit(exit)), _) => break Some(exit.code),
            (None, _) => {}
        }
    };
    drop(raw_mode);

    let Some(code) = exit_code else {
        return Err(CliError::msg(
            ExitKind::Network,
            format!("shell in lease {lease_id} ended without the command's exit code"),
        ));
    };
    if let Some(captured) = captured {
        println!(
            "{}",
            json!({
                "lease_id": lease_id,
                "service": service,
                "replica": args.replica,
                "command": command,
                "exit_code": code,
                "stdout": String::from_utf8_lossy(&captured.stdout),
                "stderr": String::from_utf8_lossy(&captured.stderr),
            })
        );
    }
    // -1: the provider could not read the code (the replica went away mid-command).
    u8::try_from(code).map_err(|_| {
        CliError::failed(format!(
            "the command's exit code is unknown ({code}): its replica may have stopped"
        ))
    })
}
