//! Exit codes and the error type every command returns.

use std::fmt;

use serde::Serialize;

/// Documented in every command's `--help`.
pub const EXIT_CODES: &str = "Exit codes:\n  0  success\n  1  the operation failed or the input is invalid\n  2  usage or configuration error\n  3  chain or network error (RPC, wrong network, provider gateway unreachable)\n  4  timeout (no bids, workload not running in time)";

/// How a command ended; the numeric value is the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitKind {
    Failed = 1,
    Usage = 2,
    Network = 3,
    Timeout = 4,
}

impl ExitKind {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// An error with its exit code and, optionally, structured details for `--output json`.
#[derive(Debug)]
pub struct CliError {
    pub kind: ExitKind,
    pub error: anyhow::Error,
    pub details: Option<serde_json::Value>,
}

pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    pub fn new(kind: ExitKind, error: impl Into<anyhow::Error>) -> Self {
        Self {
            kind,
            error: error.into(),
            details: None,
        }
    }

    pub fn msg(kind: ExitKind, message: impl fmt::Display) -> Self {
        Self::new(kind, anyhow::anyhow!("{message}"))
    }

    pub fn failed(message: impl fmt::Display) -> Self {
        Self::msg(ExitKind::Failed, message)
    }

    pub fn usage(message: impl fmt::Display) -> Self {
        Self::msg(ExitKind::Usage, message)
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Adds context in front of the message, keeping the kind.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Self {
            kind: self.kind,
            error: self.error.context(context.to_string()),
            details: self.details,
        }
    }
}

impl From<anyhow::Error> for CliError {
    fn from(error: anyhow::Error) -> Self {
        Self::new(ExitKind::Failed, error)
    }
}

impl From<leasehold_contracts::ClientError> for CliError {
    fn from(error: leasehold_contracts::ClientError) -> Self {
        use leasehold_contracts::ClientError as E;
        let kind = match &error {
            E::Rpc { .. } | E::Pending { .. } | E::Logs { .. } | E::StillPending { .. } => {
                ExitKind::Network
            }
            _ => ExitKind::Failed,
        };
        // The message already reads `<call> reverted: Name(arg: value); <advice>`; JSON
        // output gets the same pieces as fields.
        let details = error.revert().map(|reason| {
            let args: serde_json::Map<String, serde_json::Value> = reason
                .args
                .iter()
                .map(|(name, value)| (name.clone(), value.clone().into()))
                .collect();
            serde_json::json!({
                "revert": { "error": reason.name, "args": args, "advice": reason.advice() }
            })
        });
        let error = Self::new(kind, error);
        match details {
            Some(details) => error.with_details(details),
            None => error,
        }
    }
}

impl From<leasehold_proto::client::ClientError> for CliError {
    fn from(error: leasehold_proto::client::ClientError) -> Self {
        use leasehold_proto::client::ClientError as E;
        let kind = match &error {
            E::Connect { .. } => ExitKind::Network,
            // "Could not talk to the provider" rather than "it said no".
            E::Rpc { status, .. }
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                ) =>
            {
                ExitKind::Network
            }
            _ => ExitKind::Failed,
        };
        Self::new(kind, error)
    }
}

/// `.or_kind(ExitKind::Usage)` / `.or_usage()` on any result whose error converts to anyhow.
pub trait ResultExt<T> {
    fn or_kind(self, kind: ExitKind) -> CliResult<T>;
    fn or_usage(self) -> CliResult<T>;
}

impl<T, E: Into<anyhow::Error>> ResultExt<T> for Result<T, E> {
    fn or_kind(self, kind: ExitKind) -> CliResult<T> {
        self.map_err(|error| CliError::new(kind, error))
    }
    fn or_usage(self) -> CliResult<T> {
        self.or_kind(ExitKind::Usage)
    }
}

/// `.ctx("doing x")` on results already carrying a [`CliError`]-convertible error.
pub trait Context<T> {
    fn ctx(self, context: impl fmt::Display) -> CliResult<T>;
}

impl<T, E: Into<CliError>> Context<T> for Result<T, E> {
    fn ctx(self, context: impl fmt::Display) -> CliResult<T> {
        self.map_err(|error| error.into().context(context))
    }
}
