//! The `provider` binary: parses arguments and hands them to the library.

use clap::Parser;
use leasehold_provider::cli::{Cli, init_logging, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    run(Cli::parse()).await
}
