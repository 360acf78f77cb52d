//! `leasehold-devnet`: anvil with the contracts deployed and the dev accounts funded, until
//! SIGINT or SIGTERM. A thin shell over `leasehold_contracts::devnet`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use leasehold_contracts::devnet::{Devnet, DevnetConfig};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "leasehold-devnet",
    version,
    about = "Local devnet: anvil, the Leasehold contracts and funded dev accounts",
    after_help = "Example:\n  leasehold-devnet --port 8545 --block-time 1 --deployment deployment.json\n  \
                  tenant --rpc-url http://127.0.0.1:8545 --deployment deployment.json providers"
)]
struct Cli {
    /// Seconds per block; 0 mines a block per transaction.
    #[arg(long, default_value_t = 1)]
    block_time: u64,
    /// RPC port on 127.0.0.1; default: a free one.
    #[arg(long)]
    port: Option<u16>,
    /// How many dev accounts (from index 0) get test tokens.
    #[arg(long, default_value_t = 10)]
    accounts: usize,
    /// Test tokens per funded account, in whole tokens (6 decimals).
    #[arg(long, default_value_t = 100_000)]
    tokens: u64,
    /// Where to write the deployment JSON (written last: its presence means ready).
    #[arg(long, default_value = "deployment.json")]
    deployment: PathBuf,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let funding = cli
        .tokens
        .checked_mul(leasehold_contracts::devnet::ONE_TOKEN)
        .context("--tokens: too many tokens")?;
    let devnet = Devnet::start_with(DevnetConfig {
        block_time: (cli.block_time > 0).then_some(cli.block_time),
        funded_accounts: cli.accounts,
        funding: alloy::primitives::U256::from(funding),
        port: cli.port,
        ..DevnetConfig::default()
    })
    .await
    .context("starting the devnet")?;

    // Write then rename, so a watcher never reads a half-written file.
    let partial = cli.deployment.with_extension("json.partial");
    devnet
        .write_deployment(&partial)
        .context("writing the deployment file")?;
    std::fs::rename(&partial, &cli.deployment)
        .with_context(|| format!("writing {}", cli.deployment.display()))?;

    let mut accounts = Vec::new();
    for index in 0..devnet.accounts() {
        accounts.push(json!({
            "index": index,
            "address": devnet.address(index)?,
            "private_key": devnet.private_key_hex(index)?,
            "funded": index < cli.accounts,
        }));
    }
    let d = devnet.deployment;
    match cli.output {
        Output::Json => println!(
            "{}",
            json!({
                "rpc_url": devnet.endpoint(),
                "deployment_file": cli.deployment,
                "deployment": d,
                "accounts": accounts,
            })
        ),
        Output::Text => {
            println!("RPC URL      {}", devnet.endpoint());
            println!("chain id     {}", d.chain_id);
            println!("token        {}", d.token);
            println!("registry     {}", d.registry);
            println!("marketplace  {}", d.marketplace);
            println!("deployment   {}", cli.deployment.display());
            println!("dev accounts (anvil's public test keys; never use them elsewhere):");
            for account in &accounts {
                println!(
                    "  ({}) {} {}{}",
                    account["index"],
                    account["address"].as_str().unwrap_or_default(),
                    account["private_key"].as_str().unwrap_or_default(),
                    if account["funded"] == true {
                        ""
                    } else {
                        "  (no tokens)"
                    }
                );
            }
            println!("running; Ctrl-C stops anvil");
        }
    }

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT")?,
        _ = terminate.recv() => {}
    }
    // Dropping the devnet kills anvil.
    drop(devnet);
    Ok(())
}
