//! The tenant command line. `main.rs` only parses arguments and calls [`run`].
//!
//! Layout: [`cli`] (arguments), [`config`] (file, environment, flags), [`wallet`]
//! (keystores), [`chain`] (connection and the wrong-network check), [`market`] (groups as
//! orders; chain data in the scheduler's terms), [`records`] (local deployment records),
//! [`output`] (tables, JSON, progress) and one module per command family in `commands`.

pub mod chain;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod gateway;
pub mod history;
pub mod market;
pub mod output;
pub mod records;
pub mod terminal;
pub mod wallet;

use std::process::ExitCode;

pub use cli::{Cli, Command};
pub use error::{CliError, CliResult, ExitKind};
pub use output::Output;

/// Runs the CLI and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let output = cli.global.output;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(ExitKind::Failed.code());
        }
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            report(output, &error);
            ExitCode::from(error.kind.code())
        }
    }
}

/// Text: `error: ...` on stderr. JSON: additionally `{"error": {...}}` on stdout, so scripts
/// always get a document.
fn report(output: Output, error: &CliError) {
    eprintln!("error: {:#}", error.error);
    if output == Output::Json {
        let document = serde_json::json!({
            "error": {
                "message": format!("{:#}", error.error),
                "kind": error.kind,
                "exit_code": error.kind.code(),
                "details": error.details,
            }
        });
        print!("{}", output::json(&document));
    }
}
