use std::process::ExitCode;

use clap::Parser;
use leasehold_tenant::{Cli, run};

fn main() -> ExitCode {
    run(Cli::parse())
}
