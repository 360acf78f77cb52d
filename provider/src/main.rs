//! The `provider` binary: parses arguments and hands them to the library.

use clap::Parser;
use leasehold_provider::cli::{Cli, init_logging, run_and_report};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    run_and_report(Cli::parse()).await
}
