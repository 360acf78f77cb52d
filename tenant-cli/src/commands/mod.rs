//! One module per command family; [`dispatch`] routes parsed arguments to them.

pub mod audit;
pub mod deploy;
pub mod lease;
pub mod providers;
pub mod shell;
pub mod update;
pub mod validate;
pub mod wallet;

use crate::cli::{Cli, Command};
use crate::config::{Overrides, Settings};
use crate::error::CliResult;
use crate::output::Output;

/// What every command gets: resolved settings and the output format.
pub struct Ctx {
    pub settings: Settings,
    pub output: Output,
}

/// Runs a command; `Ok` carries the exit code of a command that finished (0, or 1 for an
/// invalid manifest whose errors were already printed).
pub async fn dispatch(cli: Cli) -> CliResult<u8> {
    let output = cli.global.output;
    if let Command::Validate { file, strict } = &cli.command {
        // Needs no configuration at all.
        return validate::run(file, *strict, output);
    }
    let settings = Settings::load(&Overrides {
        config: cli.global.config,
        rpc_url: cli.global.rpc_url,
        ws_url: cli.global.ws_url,
        deployment: cli.global.deployment,
        keystore: cli.global.keystore,
        max_fee_per_gas_gwei: cli.global.max_fee_per_gas_gwei,
    })?;
    let ctx = Ctx { settings, output };
    match cli.command {
        Command::Validate { .. } => Ok(0),
        Command::Wallet(command) => wallet::run(&ctx, command).await,
        Command::Providers { all } => providers::list(&ctx, all).await,
        Command::Preflight { file } => providers::preflight_command(&ctx, &file).await,
        Command::Deploy(args) => deploy::run(&ctx, &args).await,
        Command::Status { lease } => lease::status(&ctx, lease).await,
        Command::Logs {
            lease,
            follow,
            tail,
            service,
        } => lease::logs(&ctx, lease, follow, tail, service.as_deref()).await,
        Command::Events { lease, follow } => lease::events(&ctx, lease, follow).await,
        Command::Close { lease } => lease::close(&ctx, lease).await,
        Command::Topup { lease, amount } => lease::topup(&ctx, lease, amount).await,
        Command::Bids { order } => lease::bids(&ctx, order).await,
        Command::Leases => lease::leases(&ctx).await,
        Command::Shell(args) => shell::run(&ctx, args).await,
        Command::Update { lease, file } => update::run(&ctx, lease, &file).await,
        Command::Audit(command) => audit::run(&ctx, command).await,
    }
}
