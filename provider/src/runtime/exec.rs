//! A command run inside a replica (`tenant shell`): what both backends take and give.

use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use tokio::sync::mpsc;

use super::RuntimeError;

/// The first terminal size when the caller gave none.
pub const DEFAULT_TERMINAL_SIZE: TerminalSize = TerminalSize { cols: 80, rows: 24 };

/// Input messages a session buffers before the sender waits (backpressure on stdin).
pub const EXEC_INPUT_BUFFER: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    pub cols: u16,
    pub rows: u16,
}

/// Which replica runs what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub service: String,
    pub replica: u32,
    /// argv, never empty.
    pub command: Vec<String>,
    /// A terminal: output arrives as stdout only, resizes apply.
    pub tty: bool,
    pub size: Option<TerminalSize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecInput {
    Stdin(Vec<u8>),
    Resize(TerminalSize),
    /// No more stdin: the command reads end of file.
    CloseStdin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The last item: the command ended with this code (`None`: the runtime cannot tell).
    Exit(Option<i32>),
}

/// A running command: send it input, read its output (which ends with
/// [`ExecOutput::Exit`]). Dropping both ends the session; the backend then closes the
/// command's stdin and stops reading.
pub struct ExecSession<E = RuntimeError> {
    pub input: mpsc::Sender<ExecInput>,
    pub output: BoxStream<'static, Result<ExecOutput, E>>,
}

impl<E: Send + 'static> ExecSession<E> {
    /// The same session with its errors converted.
    pub fn map_err<F: Send + 'static>(
        self,
        convert: impl Fn(E) -> F + Send + 'static,
    ) -> ExecSession<F> {
        ExecSession {
            input: self.input,
            output: self.output.map(move |item| item.map_err(&convert)).boxed(),
        }
    }
}

impl<E> std::fmt::Debug for ExecSession<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSession").finish_non_exhaustive()
    }
}

/// Checks what a tenant asked to run before any backend sees it.
pub fn validate_exec(request: &ExecRequest) -> Result<(), RuntimeError> {
    if request.command.is_empty() {
        return Err(super::invalid(
            "command",
            "is empty: name the program to run, e.g. `sh`",
        ));
    }
    if request.command.iter().any(|arg| arg.contains('\0')) {
        return Err(super::invalid("command", "an argument contains a NUL byte"));
    }
    if let Some(size) = request.size
        && (size.cols == 0 || size.rows == 0)
    {
        return Err(super::invalid(
            "size",
            format!("{}x{} has a zero dimension", size.cols, size.rows),
        ));
    }
    Ok(())
}

/// The items of `receiver` as a stream, ending when every sender is gone.
pub(crate) fn receiver_stream<T: Send + 'static>(
    receiver: mpsc::Receiver<T>,
) -> BoxStream<'static, T> {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
    .boxed()
}
