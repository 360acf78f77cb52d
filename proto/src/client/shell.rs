//! `Lease.Shell`: a signed bidirectional stream. The call's credentials sign the
//! [`ShellRequest`], which travels as the stream's first message; everything after it
//! (stdin, resizes, end of input) rides on that one authorisation.

use futures_util::{Stream, StreamExt};
use tonic::{Request, Streaming};

use super::{ClientError, SignedLeaseClient};
use crate::auth::methods;
use crate::gateway::{ShellInput, ShellOutput, ShellRequest, TerminalSize, shell_input};

/// The most stdin (or output) bytes one shell message carries; the provider refuses a
/// larger stdin chunk and splits larger output.
pub const MAX_SHELL_CHUNK_BYTES: usize = 64 * 1024;

/// The most bytes of a shell command line (all arguments together).
pub const MAX_SHELL_COMMAND_BYTES: usize = 64 * 1024;

impl ShellInput {
    /// Stdin bytes (callers split at [`MAX_SHELL_CHUNK_BYTES`]).
    pub fn stdin(bytes: Vec<u8>) -> Self {
        Self {
            input: Some(shell_input::Input::Stdin(bytes)),
        }
    }

    pub fn resize(cols: u32, rows: u32) -> Self {
        Self {
            input: Some(shell_input::Input::Resize(TerminalSize { cols, rows })),
        }
    }

    /// No more stdin.
    pub fn close_stdin() -> Self {
        Self {
            input: Some(shell_input::Input::CloseStdin(true)),
        }
    }
}

impl SignedLeaseClient {
    /// Starts `request` in one of the lease's replicas and forwards `input` (stdin,
    /// resizes, end of input) to it; the returned stream carries its output and ends with
    /// its exit code.
    pub async fn shell(
        &mut self,
        request: ShellRequest,
        input: impl Stream<Item = ShellInput> + Send + 'static,
    ) -> Result<Streaming<ShellOutput>, ClientError> {
        let method = methods::SHELL;
        let signed = self.sign(method, request.lease_id, request)?;
        let (metadata, extensions, request) = signed.into_parts();
        let first = ShellInput {
            input: Some(shell_input::Input::Start(request)),
        };
        let messages = futures_util::stream::iter([first]).chain(input);
        let call = Request::from_parts(metadata, extensions, messages);
        let response = self
            .inner
            .shell(call)
            .await
            .map_err(ClientError::rpc(method))?;
        Ok(response.into_inner())
    }
}
