//! `leasehold-deploy`: deploys the Leasehold contracts to any EVM network, or attaches to a
//! deployment and verifies it. A thin shell over `leasehold_contracts::deployer`.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider as _, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, ValueEnum};
use leasehold_contracts::deployer::{
    self, DeployPlan, DeployStep, MAX_DELIVERY_SLASH_BPS, MAX_UNBONDING_PERIOD_SECS, PaymentToken,
    StepOutcome, TokenMetadata, VerifiedMarket,
};
use leasehold_contracts::{DELIVERY_WINDOW_SECS, DeployParams, Deployment, MAX_BIDS};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// The environment variable holding the keystore password when no --password-file is given.
const PASSWORD_ENV: &str = "LEASEHOLD_DEPLOY_PASSWORD";

#[derive(Debug, Parser)]
#[command(
    name = "leasehold-deploy",
    version,
    about = "Deploy the Leasehold market (ProviderRegistry + Marketplace) to any EVM network, or verify an existing deployment",
    after_help = "Examples:\n  \
    # an L2 testnet, paying in an existing 6-decimal stablecoin, key from a keystore\n  \
    leasehold-deploy --rpc-url https://sepolia.example.org --chain-id 11155420 \\\n    \
      --keystore deployer.json --password-file deployer.pass \\\n    \
      --token 0x5fd84259d66Cd46123540766Be93DFE6D43130D7 \\\n    \
      --minimum-stake 100 --unbonding-period 7d --delivery-slash-bps 1000 --bid-bond 1\n\n  \
    # a local anvil with the test token (raw keys and --test-token: development chains only)\n  \
    leasehold-deploy --rpc-url http://127.0.0.1:8545 --chain-id 31337 --private-key 0xac09... \\\n    \
      --test-token --minimum-stake 100 --unbonding-period 60 --delivery-slash-bps 1000 --bid-bond 1\n\n  \
    # re-run the same command after an interruption: it continues from the first missing step\n\n  \
    # check an existing deployment and rewrite its file\n  \
    leasehold-deploy --rpc-url https://sepolia.example.org --chain-id 11155420 --attach deployment.json\n\n\
    Limits (bids per order, delivery window bounds, ...) are compile-time constants of the contracts\n\
    and are printed in the summary."
)]
struct Cli {
    /// JSON-RPC URL of the node.
    #[arg(long, env = "LEASEHOLD_RPC_URL")]
    rpc_url: String,
    /// The chain id you mean to deploy to; refused when the node reports another.
    #[arg(long)]
    chain_id: u64,
    /// Verify the deployment in this file against the chain and rewrite it (no transactions).
    #[arg(long, value_name = "DEPLOYMENT_JSON", conflicts_with_all = ["token", "test_token", "keystore", "private_key"])]
    attach: Option<PathBuf>,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    token: TokenArgs,
    #[command(flatten)]
    params: ParamArgs,
    /// Where to write the deployment JSON the provider and tenant read; default: deployment.json,
    /// or with --attach the attached file.
    #[arg(long)]
    deployment: Option<PathBuf>,
    /// Progress file of a deployment; default: next to --deployment, `<name>.progress.json`.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Directory for the explorer-verification files (standard-json-input.json, verification.json);
    /// default: the directory of --deployment.
    #[arg(long)]
    verify_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Args)]
struct KeyArgs {
    /// Web3 Secret Storage keystore of the deploying account.
    #[arg(long, conflicts_with = "private_key")]
    keystore: Option<PathBuf>,
    /// File holding the keystore password (first line); else $LEASEHOLD_DEPLOY_PASSWORD, else a prompt.
    #[arg(long, requires = "keystore")]
    password_file: Option<PathBuf>,
    /// Raw hex private key: development chains only (chain id 31337 or 1337).
    #[arg(long, env = "LEASEHOLD_DEPLOY_PRIVATE_KEY", hide_env_values = true)]
    private_key: Option<String>,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// Existing ERC-20 to pay in (its decimals and symbol are read from the chain).
    #[arg(long, conflicts_with = "test_token")]
    token: Option<Address>,
    /// Deploy the 6-decimal TestToken with a faucet: development chains only.
    #[arg(long)]
    test_token: bool,
}

#[derive(Debug, Args)]
struct ParamArgs {
    /// Stake each provider locks at registration, in whole tokens (e.g. 100 or 2.5).
    #[arg(long)]
    minimum_stake: Option<String>,
    /// Time between deregistering and withdrawing the stake: seconds, or with s/m/h/d (at most 365d).
    #[arg(long)]
    unbonding_period: Option<String>,
    /// Share of its stake a provider loses per undelivered lease, in basis points (at most 5000).
    #[arg(long)]
    delivery_slash_bps: Option<u16>,
    /// Stake locked per bid, in whole tokens (at most --minimum-stake; 0: no bonds).
    #[arg(long)]
    bid_bond: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let read_only = ProviderBuilder::new().connect_http(
        cli.rpc_url
            .parse()
            .with_context(|| format!("--rpc-url {:?} is not a URL", cli.rpc_url))?,
    );
    let read_only = read_only.erased();
    let chain_id = deployer::check_chain_id(&read_only, cli.chain_id)
        .await
        .with_context(|| format!("checking the chain of {}", cli.rpc_url))?;
    let target = cli
        .deployment
        .clone()
        .or_else(|| cli.attach.clone())
        .unwrap_or_else(|| PathBuf::from("deployment.json"));
    let dir = target.parent().map(Path::to_path_buf).unwrap_or_default();
    let verify_dir = cli.verify_dir.clone().unwrap_or_else(|| dir.clone());

    let (market, test_token, steps) = match &cli.attach {
        Some(path) => {
            let deployment = Deployment::load(path)?;
            let market = deployer::verify_deployment(&read_only, &deployment)
                .await
                .with_context(|| format!("verifying {}", path.display()))?;
            (market, false, Vec::new())
        }
        None => {
            let signer = load_signer(&cli.key, chain_id)?;
            let (token, metadata) = payment_token(&cli.token, &read_only, chain_id).await?;
            let params = parse_params(&cli.params, metadata.decimals)?;
            let plan = DeployPlan {
                chain_id,
                deployer: signer.address(),
                token,
                params,
            };
            let state = cli
                .state
                .clone()
                .unwrap_or_else(|| target.with_extension("progress.json"));
            let signing = leasehold_contracts::signing_provider(&cli.rpc_url, signer)?;
            if cli.output == Output::Text {
                println!(
                    "deploying to chain {chain_id} as {} (progress: {})",
                    plan.deployer,
                    state.display()
                );
            }
            let mut steps = Vec::new();
            let output = cli.output;
            let deployment =
                deployer::deploy_resumable(&signing, &plan, &state, |step, outcome| {
                    if output == Output::Text {
                        println!("{}", progress_line(step, outcome));
                    }
                    steps.push(json!({ "step": step, "name": step.name(), "result": outcome }));
                })
                .await
                .context("deploying")?;
            let market = deployer::verify_deployment(&read_only, &deployment)
                .await
                .context("verifying the new deployment")?;
            (market, token == PaymentToken::Test, steps)
        }
    };

    write_files(&market, test_token, &target, &verify_dir)?;
    print_summary(&cli, &market, &target, &verify_dir, &steps);
    Ok(())
}

fn progress_line(step: DeployStep, outcome: StepOutcome) -> String {
    let name = step.name();
    match outcome {
        StepOutcome::Done { address, block } => {
            format!("  {name:<42} done       {address} (block {block})")
        }
        StepOutcome::AlreadyDone { address } => {
            format!("  {name:<42} recorded   {address} (code verified)")
        }
        StepOutcome::Recovered { address } => {
            format!("  {name:<42} recovered  {address} (mined before an interruption)")
        }
        StepOutcome::Existing { address } => {
            format!("  {:<42} existing   {address}", "payment token")
        }
    }
}

fn load_signer(key: &KeyArgs, chain_id: u64) -> Result<PrivateKeySigner> {
    if let Some(text) = &key.private_key {
        if !deployer::is_dev_chain(chain_id) {
            bail!(
                "--private-key: a raw key is accepted only on development chains (chain id {:?}); \
                 chain {chain_id} needs --keystore",
                deployer::DEV_CHAIN_IDS
            );
        }
        return PrivateKeySigner::from_str(text.trim())
            .map_err(|error| anyhow::anyhow!("--private-key: not a hex private key: {error}"));
    }
    let Some(path) = &key.keystore else {
        bail!(
            "--keystore: required (the deploying account's key; --private-key on development chains)"
        );
    };
    let password = match &key.password_file {
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("--password-file {}", file.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        None => match std::env::var(PASSWORD_ENV) {
            Ok(password) => password,
            Err(_) => rpassword::prompt_password(format!("password of {}: ", path.display()))
                .with_context(|| {
                    format!("--keystore: no --password-file, no ${PASSWORD_ENV}, and no terminal to ask on")
                })?,
        },
    };
    Ok(leasehold_contracts::keystore::decrypt_keystore(
        path, &password,
    )?)
}

async fn payment_token(
    args: &TokenArgs,
    provider: &DynProvider,
    chain_id: u64,
) -> Result<(PaymentToken, TokenMetadata)> {
    match (args.token, args.test_token) {
        (Some(address), _) => {
            let metadata = deployer::token_metadata(provider, address, chain_id).await?;
            Ok((PaymentToken::Existing(address), metadata))
        }
        (None, true) if deployer::is_dev_chain(chain_id) => {
            Ok((PaymentToken::Test, deployer::test_token_metadata()))
        }
        (None, true) => bail!(
            "--test-token: the test token (anyone can mint it) is for development chains only \
             (chain id {:?}); chain {chain_id} needs --token <address of an ERC-20>",
            deployer::DEV_CHAIN_IDS
        ),
        (None, false) => bail!(
            "--token: required (the ERC-20 to pay in), or --test-token on a development chain"
        ),
    }
}

fn parse_params(args: &ParamArgs, decimals: u8) -> Result<DeployParams> {
    let amount = |flag: &str, value: &Option<String>| -> Result<U256> {
        let text = value
            .as_deref()
            .with_context(|| format!("{flag}: required"))?;
        deployer::parse_token_amount(text, decimals)
            .map_err(|reason| anyhow::anyhow!("{flag}: {reason}"))
    };
    let minimum_stake = amount("--minimum-stake", &args.minimum_stake)?;
    if minimum_stake.is_zero() || minimum_stake > U256::from(u128::MAX) {
        bail!("--minimum-stake: must be more than 0 and less than 2^128 base units");
    }
    let bid_bond = amount("--bid-bond", &args.bid_bond)?;
    if bid_bond > minimum_stake {
        bail!("--bid-bond: must not exceed --minimum-stake");
    }
    let unbonding = args
        .unbonding_period
        .as_deref()
        .context("--unbonding-period: required")?;
    let unbonding_period_secs = parse_duration_secs(unbonding)
        .map_err(|reason| anyhow::anyhow!("--unbonding-period: {reason}"))?;
    if unbonding_period_secs > MAX_UNBONDING_PERIOD_SECS {
        bail!(
            "--unbonding-period: {unbonding} is more than 365 days (the contract's MAX_UNBONDING_PERIOD)"
        );
    }
    let delivery_slash_bps = args
        .delivery_slash_bps
        .context("--delivery-slash-bps: required")?;
    if delivery_slash_bps > MAX_DELIVERY_SLASH_BPS {
        bail!(
            "--delivery-slash-bps: {delivery_slash_bps} is more than {MAX_DELIVERY_SLASH_BPS} (50%)"
        );
    }
    Ok(DeployParams {
        minimum_stake,
        unbonding_period_secs,
        delivery_slash_bps,
        bid_bond,
    })
}

/// `90`, `90s`, `15m`, `2h`, `7d` in seconds.
fn parse_duration_secs(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let multiplier: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use s, m, h or d)"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("`{text}` is not a duration (e.g. 3600, 90m, 7d)"))
}

fn write_files(
    market: &VerifiedMarket,
    test_token: bool,
    deployment: &Path,
    verify_dir: &Path,
) -> Result<()> {
    let partial = deployment.with_extension("json.partial");
    market.deployment.save(&partial)?;
    std::fs::rename(&partial, deployment)
        .with_context(|| format!("writing {}", deployment.display()))?;
    if !verify_dir.as_os_str().is_empty() {
        std::fs::create_dir_all(verify_dir)
            .with_context(|| format!("creating {}", verify_dir.display()))?;
    }
    let input = verify_dir.join("standard-json-input.json");
    std::fs::write(&input, deployer::STANDARD_JSON_INPUT)
        .with_context(|| format!("writing {}", input.display()))?;
    let entries = deployer::verification_entries(market, test_token);
    let verification = verify_dir.join("verification.json");
    let text = serde_json::to_string_pretty(&json!({
        "chain_id": market.deployment.chain_id,
        "standard_json_input": "standard-json-input.json",
        "contracts": entries,
    }))?;
    std::fs::write(&verification, text + "\n")
        .with_context(|| format!("writing {}", verification.display()))?;
    Ok(())
}

fn constants() -> serde_json::Value {
    json!({
        "max_bids_per_order": MAX_BIDS,
        "delivery_window_secs": { "min": DELIVERY_WINDOW_SECS.start(), "max": DELIVERY_WINDOW_SECS.end() },
        "tenant_grace_secs": leasehold_contracts::TENANT_GRACE_SECS,
        "max_unbonding_period_secs": MAX_UNBONDING_PERIOD_SECS,
        "max_delivery_slash_bps": MAX_DELIVERY_SLASH_BPS,
    })
}

fn print_summary(
    cli: &Cli,
    market: &VerifiedMarket,
    deployment_file: &Path,
    verify_dir: &Path,
    steps: &[serde_json::Value],
) {
    let d = &market.deployment;
    let p = &market.params;
    let t = &market.token;
    let tokens = |amount: U256| {
        format!(
            "{} {}",
            deployer::format_token_amount(amount, t.decimals),
            t.symbol
        )
    };
    match cli.output {
        Output::Json => println!(
            "{}",
            json!({
                "deployment": d,
                "deployment_file": deployment_file,
                "token": t,
                "params": p,
                "constants": constants(),
                "verification": {
                    "standard_json_input": verify_dir.join("standard-json-input.json"),
                    "contracts": verify_dir.join("verification.json"),
                },
                "steps": steps,
            })
        ),
        Output::Text => {
            println!("chain id           {}", d.chain_id);
            println!(
                "token              {} ({}, {} decimals)",
                d.token, t.symbol, t.decimals
            );
            println!("registry           {}", d.registry);
            println!("marketplace        {}", d.marketplace);
            println!("start block        {}", d.start_block);
            println!("minimum stake      {}", tokens(p.minimum_stake));
            println!("bid bond           {}", tokens(p.bid_bond));
            println!("unbonding period   {} s", p.unbonding_period_secs);
            println!("delivery slash     {} bps", p.delivery_slash_bps);
            println!("compile-time limits (constants of the contracts):");
            println!("  bids per order   {MAX_BIDS}");
            println!(
                "  delivery window  {}..={} s",
                DELIVERY_WINDOW_SECS.start(),
                DELIVERY_WINDOW_SECS.end()
            );
            println!(
                "  tenant grace     {} s",
                leasehold_contracts::TENANT_GRACE_SECS
            );
            println!("deployment file    {}", deployment_file.display());
            println!(
                "verification       {} + verification.json (solc {})",
                verify_dir.join("standard-json-input.json").display(),
                deployer::SOLC_LONG_VERSION
            );
        }
    }
}
