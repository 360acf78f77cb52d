//! The `provider` binary: parses arguments and hands them to the library.

use clap::Parser;
use leasehold_provider::cli::{Cli, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run(Cli::parse()).await
}
