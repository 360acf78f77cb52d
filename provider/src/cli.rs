//! The `provider` command line: `init`, `register`, `update`, `run`, `status`,
//! `withdraw`, `deregister`. `main.rs` parses [`Cli`] and calls [`run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use alloy::primitives::U256;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use leasehold_manifests::GpuModelKey;
use serde_json::json;

use crate::chain::{Chain, load_signer, profile_with_capacity, registration_names};
use crate::config::{Config, RuntimeKind};
use crate::daemon::{
    Core, Daemon, DaemonOptions, connect_runtime, kubernetes_runtime, runtime_scope,
};
use crate::gateway::GatewayIdentity;
use crate::hardware::{Hardware, HardwareOverrides};
use crate::registration::{Capacity, CapacityLimits, parse_gpu_limit};
use crate::runtime::{Runtime, RuntimeScope};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// The exit-code contract, the same as the tenant CLI's (documented in `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitKind {
    /// The operation failed (a revert, a refused registration, a runtime error).
    Failed = 1,
    /// Usage or configuration error (also clap's own argument errors).
    Usage = 2,
    /// Chain or network error (RPC unreachable, wrong network, gateway unreachable).
    Network = 3,
}

impl ExitKind {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// What kind of failure an error is, from the typed errors in its chain.
    pub fn of(error: &anyhow::Error) -> Self {
        use crate::chain::ChainSetupError;
        use crate::config::ConfigError;
        use leasehold_contracts::ClientError;
        for cause in error.chain() {
            if cause.is::<ConfigError>() || cause.is::<UsageError>() {
                return Self::Usage;
            }
            if let Some(setup) = cause.downcast_ref::<ChainSetupError>() {
                return match setup {
                    ChainSetupError::Connect { .. } | ChainSetupError::ChainId { .. } => {
                        Self::Network
                    }
                    _ => Self::Usage,
                };
            }
            if let Some(client) = cause.downcast_ref::<ClientError>() {
                return match client {
                    ClientError::Rpc { .. }
                    | ClientError::Pending { .. }
                    | ClientError::StillPending { .. } => Self::Network,
                    _ => Self::Failed,
                };
            }
            if cause.is::<tonic::transport::Error>() || cause.is::<tonic::Status>() {
                return Self::Network;
            }
        }
        Self::Failed
    }
}

/// A command used wrongly (e.g. `init` over an existing file without `--force`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Debug, Parser)]
#[command(
    name = "provider",
    version,
    about = "Leasehold provider: bid on orders and run leases",
    after_help = concat!(
        "Example:\n  provider init --config provider.toml && LEASEHOLD_PROVIDER_KEY=0x... provider register --config provider.toml\n\n",
        "Exit codes (as the tenant CLI's):\n  0  success\n  1  the operation failed (revert, refused registration, runtime error)\n  2  usage or configuration error\n  3  chain or network error (RPC unreachable, wrong network, gateway unreachable)\n\nEvery command takes --output json|text; with json, an error is also printed on stdout as {\"error\": {\"message\", \"kind\", \"exit_code\"}}."
    )
)]
pub struct Cli {
    /// The config file.
    #[arg(
        long,
        global = true,
        default_value = "provider.toml",
        env = "LEASEHOLD_PROVIDER_CONFIG"
    )]
    pub config: PathBuf,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Detect the hardware and write a starting config.
    #[command(
        after_help = "Example:\n  provider init --config provider.toml --data-dir /var/lib/leasehold"
    )]
    Init {
        /// Where the daemon keeps its database and cursor.
        #[arg(long, default_value = "./provider-data")]
        data_dir: PathBuf,
        /// Overwrite an existing config file.
        #[arg(long)]
        force: bool,
    },
    /// Register on chain with the minimum stake: capacity, GPU models, attributes, endpoint.
    #[command(after_help = concat!(
        "Capacity: on Kubernetes (runtime.kind = \"kubernetes\"), the sum of the cluster's schedulable nodes\n",
        "(allocatable minus the requests of pods that are not this provider's leases), read through the\n",
        "kubeconfig exactly as the daemon reads it; otherwise this host's detected hardware.\n",
        "The --max-* flags limit it; on Kubernetes the config's [hardware] cpu_millis, memory_mib and\n",
        "storage_mib limit it too (a flag replaces the config's limit for this command only; the daemon's\n",
        "drift check uses the config's, so put lasting limits there).\n\n",
        "Example:\n  LEASEHOLD_PROVIDER_KEY=0x... provider register --config provider.toml\n",
        "  LEASEHOLD_PROVIDER_KEY=0x... provider register --config provider.toml --max-cpu-millis 64000 --max-gpus nvidia/a100/80Gi/sxm=4"
    ))]
    Register {
        #[command(flatten)]
        limits: CapacityFlags,
    },
    /// Publish the current capacity, GPU models, and the config's attributes and endpoint to an
    /// existing registration (after changing the config, the hardware or the cluster).
    #[command(after_help = concat!(
        "Capacity is read as `register` reads it (the cluster's nodes on Kubernetes, else this host),\n",
        "within the --max-* flags and, on Kubernetes, the config's [hardware] limits.\n\n",
        "Example:\n  LEASEHOLD_PROVIDER_KEY=0x... provider update --config provider.toml --output json\n",
        "  LEASEHOLD_PROVIDER_KEY=0x... provider update --config provider.toml --max-memory-mib 262144"
    ))]
    Update {
        #[command(flatten)]
        limits: CapacityFlags,
    },
    /// Print the fingerprint of the gateway's TLS certificate (made in the data dir on first
    /// use), or replace the certificate with --rotate.
    #[command(after_help = concat!(
        "The certificate is self-signed; tenants accept the gateway because this fingerprint is in\n",
        "the provider's on-chain registration. After --rotate, run `provider update` (the daemon\n",
        "must be restarted to serve the new certificate); until then tenants refuse the gateway.\n\n",
        "Example:\n  provider gateway-cert --config provider.toml --rotate"
    ))]
    GatewayCert {
        /// Make a new key and certificate, replacing the old ones.
        #[arg(long)]
        rotate: bool,
    },
    /// Run the daemon until SIGINT or SIGTERM.
    #[command(
        after_help = "Example:\n  LEASEHOLD_PROVIDER_KEY=0x... provider run --config provider.toml --metrics 127.0.0.1:9102"
    )]
    Run {
        /// First block to follow when no cursor is saved (the contracts' deployment block).
        #[arg(long, default_value_t = 0)]
        start_block: u64,
        /// Blocks to stay behind the head.
        #[arg(long, default_value_t = 2)]
        confirmations: u64,
        /// Serve Prometheus metrics on this `host:port`, or on a port of 127.0.0.1
        /// (overrides `metrics.listen` in the config).
        #[arg(long, value_parser = crate::config::parse_metrics_listen)]
        metrics: Option<SocketAddr>,
        /// Seconds between withdrawals.
        #[arg(long, default_value_t = 300)]
        withdraw_interval: u64,
        /// Seconds a tenant has to send the manifest.
        #[arg(long, default_value_t = 300)]
        manifest_timeout: u64,
        /// Failed deployments in a row after which a lease is closed as "deploy failed".
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        max_deploy_attempts: u64,
        /// Leave alone workloads of leases this daemon does not know (when several
        /// daemons share one container engine).
        #[arg(long)]
        keep_unknown_workloads: bool,
        /// On Kubernetes, send `provider update` itself when the cluster's capacity drifts
        /// from the on-chain registration (never below what leases hold; drift is always
        /// logged and exported as `leasehold_registration_drift` either way).
        #[arg(long)]
        resync_registration: bool,
        /// Minutes between two re-syncs of the registration.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        resync_interval_minutes: u64,
    },
    /// Ask a running daemon's gateway for its status (Provider.GetStatus).
    #[command(
        after_help = "Example:\n  provider status --gateway https://127.0.0.1:8443 --output json"
    )]
    Status {
        /// Default: the config's gateway.listen.
        #[arg(long)]
        gateway: Option<String>,
    },
    /// Collect what every open lease owes now (and close insolvent ones).
    #[command(
        after_help = "Example:\n  LEASEHOLD_PROVIDER_KEY=0x... provider withdraw --config provider.toml"
    )]
    Withdraw,
    /// Top the stake up: a provider slashed below the minimum stake (for undelivered leases)
    /// can neither bid nor win until its stake reaches the minimum again.
    #[command(
        after_help = "Example:\n  LEASEHOLD_PROVIDER_KEY=0x... provider add-stake --config provider.toml\n  LEASEHOLD_PROVIDER_KEY=0x... provider add-stake 5000000 --config provider.toml --output json"
    )]
    AddStake {
        /// Amount in stake-token base units (default: what is missing up to the minimum).
        amount: Option<u128>,
    },
    /// Resolve the bonds our bids lock on ended orders (leased, cancelled or expired): the
    /// daemon does this when an order is leased or cancelled; expired orders need this.
    #[command(
        after_help = "Example:\n  LEASEHOLD_PROVIDER_KEY=0x... provider release-bonds 7 8 --config provider.toml"
    )]
    ReleaseBonds {
        /// Order ids.
        #[arg(required = true)]
        orders: Vec<u64>,
    },
    /// Collect what the contracts credited to the provider's key (payments or stake that
    /// could not be pushed).
    #[command(
        after_help = "Example:\n  LEASEHOLD_PROVIDER_KEY=0x... provider claim --config provider.toml --output json"
    )]
    Claim {
        /// Where the tokens go (default: the provider's address).
        #[arg(long)]
        to: Option<alloy::primitives::Address>,
    },
    /// Start unbonding; the stake can be withdrawn after the unbonding period.
    #[command(
        after_help = "Example:\n  LEASEHOLD_PROVIDER_KEY=0x... provider deregister --config provider.toml"
    )]
    Deregister,
}

/// Limits on the capacity `register` and `update` publish.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CapacityFlags {
    /// Register at most this much CPU, in millicores (1000 = one core).
    #[arg(long, value_name = "MILLIS")]
    pub max_cpu_millis: Option<u64>,
    /// Register at most this much memory, in MiB.
    #[arg(long, value_name = "MIB")]
    pub max_memory_mib: Option<u64>,
    /// Register at most this much ephemeral storage, in MiB.
    #[arg(long, value_name = "MIB")]
    pub max_storage_mib: Option<u64>,
    /// Register at most COUNT GPUs of MODEL (repeatable; 0 leaves the model out).
    #[arg(long = "max-gpus", value_name = "MODEL=COUNT", value_parser = parse_gpu_limit)]
    pub max_gpus: Vec<(GpuModelKey, u32)>,
}

impl CapacityFlags {
    fn limits(&self) -> CapacityLimits {
        CapacityLimits {
            cpu_millis: self.max_cpu_millis,
            memory_mib: self.max_memory_mib,
            storage_mib: self.max_storage_mib,
            gpus: self.max_gpus.iter().cloned().collect(),
        }
    }
}

fn print(output: Output, text: String, value: serde_json::Value) {
    match output {
        Output::Text => println!("{text}"),
        Output::Json => println!("{value}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publish {
    Register,
    Update,
}

/// The config at `config_path` and the chain, as its signing key.
async fn connect_chain(config_path: &std::path::Path) -> Result<(Config, Chain)> {
    let config = load(config_path)?;
    let signer = load_signer(&config).context("loading the signing key")?;
    let chain = Chain::connect(&config, signer, 0)
        .await
        .context("connecting to the chain")?;
    Ok((config, chain))
}

/// `register` and `update`: the same profile, sent as a new registration or as a change.
async fn publish_profile(
    config_path: &std::path::Path,
    output: Output,
    how: Publish,
    flags: &CapacityFlags,
) -> Result<()> {
    let (config, chain) = connect_chain(config_path).await?;
    let (capacity, source) = capacity_now(&config, &chain, flags).await?;
    let identity = GatewayIdentity::load_or_create(&config.data_dir)
        .context("the gateway's TLS certificate")?;
    let profile = profile_with_capacity(&config, &capacity, identity.cert_sha256());
    let client = chain.client();
    // Before the registration, so that a failure leaves nothing half done and every reader
    // of the registration event can already name its keys.
    let names = registration_names(&config, &capacity);
    let published = client.publish_names(&names).await.context(
        "publishing the names of the attributes and GPU models (ProviderRegistry.publishNames)",
    )?;
    let (sent, verb) = match how {
        Publish::Register => (client.register_provider(&profile).await, "registered"),
        Publish::Update => (client.update_provider(&profile).await, "updated"),
    };
    if let Err(error) = sent {
        let hint = match (how, error.revert_name()) {
            (Publish::Register, Some("AlreadyRegistered")) => {
                "this key is already registered; run `provider update` to change the registration"
            }
            (Publish::Update, Some("NotActive")) => {
                "this key is not an active provider; run `provider register` first"
            }
            (Publish::Update, Some("CapacityBelowAllocated")) => {
                "active leases hold more than the new capacity; wait for them to close or keep the capacity"
            }
            _ => "check the RPC URL, the contract addresses and the account's balance",
        };
        return Err(anyhow::Error::new(error).context(format!(
            "{} the provider failed: {hint}",
            match how {
                Publish::Register => "registering",
                Publish::Update => "updating",
            }
        )));
    }
    print(
        output,
        format!(
            "{verb} {} with {} cpu millis, {} MiB memory, {} MiB storage, {} GPU model(s), {} attribute(s) at {} (certificate sha256 {})",
            chain.address(),
            profile.capacity.cpu_milli,
            profile.capacity.memory_mib,
            profile.capacity.storage_mib,
            profile.gpus.len(),
            profile.attributes.len(),
            profile.endpoint,
            profile.gateway_cert_sha256
        ),
        json!({"provider": chain.address(), "profile": profile, "capacity_source": source, "names": names, "names_published": published}),
    );
    Ok(())
}

/// What this provider can register now, and where that came from (`cluster` or `host`):
/// on Kubernetes the cluster's nodes as the daemon reads them, within the config's
/// limits and the flags; otherwise the host's hardware, within the flags.
async fn capacity_now(
    config: &Config,
    chain: &Chain,
    flags: &CapacityFlags,
) -> Result<(Capacity, &'static str)> {
    if config.runtime.kind == RuntimeKind::Kubernetes {
        let scope = RuntimeScope::new(chain.deployment().chain_id, chain.address().to_string());
        let runtime = kubernetes_runtime(config, scope)
            .await
            .context("connecting to the Kubernetes cluster")?;
        let nodes = runtime
            .cluster_nodes()
            .await
            .context("reading the cluster's nodes")?
            .unwrap_or_default();
        let limits = CapacityLimits::from_config(&config.hardware).overridden_by(&flags.limits());
        let capacity = Capacity::of_cluster(&nodes)
            .context("summing the cluster's capacity")?
            .limited(&limits);
        return Ok((capacity, "cluster"));
    }
    let hardware =
        Hardware::detect(&config.data_dir, &config.hardware).context("detecting hardware")?;
    Ok((
        Capacity::of_hardware(&hardware).limited(&flags.limits()),
        "host",
    ))
}

fn load(path: &std::path::Path) -> Result<Config> {
    Config::load(path).with_context(|| format!("loading config {}", path.display()))
}

/// Runs one command and reports a failure the way the tenant CLI does: `error: ...` on
/// stderr, with `--output json` also an error document on stdout; returns the exit code.
pub async fn run_and_report(cli: Cli) -> std::process::ExitCode {
    let output = cli.output;
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            let kind = ExitKind::of(&error);
            eprintln!("error: {error:#}");
            if output == Output::Json {
                println!(
                    "{}",
                    json!({"error": {
                        "message": format!("{error:#}"),
                        "kind": kind,
                        "exit_code": kind.code(),
                    }})
                );
            }
            std::process::ExitCode::from(kind.code())
        }
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> Result<()> {
    let output = cli.output;
    match cli.command {
        Command::Init { data_dir, force } => {
            if cli.config.exists() && !force {
                return Err(UsageError(format!(
                    "{} exists; pass --force to overwrite it",
                    cli.config.display()
                ))
                .into());
            }
            let hardware = Hardware::detect(&data_dir, &HardwareOverrides::default())
                .context("detecting hardware")?;
            let config = Config::default_for(&hardware, data_dir);
            let text = config.to_toml_string().context("writing the config")?;
            std::fs::write(&cli.config, &text)
                .with_context(|| format!("writing {}", cli.config.display()))?;
            // The data dir may hold a certificate already (a re-init): it stays, so the
            // registration's fingerprint stays true.
            let identity = GatewayIdentity::load_or_create(&config.data_dir)
                .context("the gateway's TLS certificate")?;
            print(
                output,
                text,
                json!({"config": cli.config, "hardware": hardware,
                       "gateway_cert_sha256": identity.cert_sha256()}),
            );
        }
        Command::GatewayCert { rotate } => {
            let config = load(&cli.config)?;
            let identity = if rotate {
                GatewayIdentity::rotate(&config.data_dir)
            } else {
                GatewayIdentity::load_or_create(&config.data_dir)
            }
            .context("the gateway's TLS certificate")?;
            let path = config.data_dir.join(crate::gateway::CERT_FILE);
            let next = if rotate {
                "; run `provider update` and restart the daemon so that tenants accept it"
            } else {
                ""
            };
            print(
                output,
                format!("{} sha256 {}{next}", path.display(), identity.cert_sha256()),
                json!({"certificate": path, "sha256": identity.cert_sha256(), "rotated": rotate}),
            );
        }
        Command::Register { limits } => {
            publish_profile(&cli.config, output, Publish::Register, &limits).await?;
        }
        Command::Update { limits } => {
            publish_profile(&cli.config, output, Publish::Update, &limits).await?;
        }
        Command::Run {
            start_block,
            confirmations,
            metrics,
            withdraw_interval,
            manifest_timeout,
            max_deploy_attempts,
            keep_unknown_workloads,
            resync_registration,
            resync_interval_minutes,
        } => {
            let config = load(&cli.config)?;
            let signer = load_signer(&config).context("loading the signing key")?;
            // Validated when the config was loaded.
            let metrics = metrics.or(config.metrics.socket().unwrap_or_default());
            let options = DaemonOptions {
                start_block,
                confirmations,
                metrics_listen: metrics,
                withdraw_interval: Duration::from_secs(withdraw_interval.max(1)),
                manifest_timeout_secs: manifest_timeout,
                max_deploy_attempts,
                remove_unknown_workloads: !keep_unknown_workloads,
                resync_registration: resync_registration
                    .then(|| Duration::from_secs(resync_interval_minutes.saturating_mul(60))),
                ..DaemonOptions::default()
            };
            let handle = Daemon::start(config, signer, options)
                .await
                .context("starting the daemon")?;
            print(
                output,
                format!(
                    "provider {} running; gateway {:?}, metrics {:?}",
                    handle.core().chain().address(),
                    handle.gateway_addr(),
                    handle.metrics_addr()
                ),
                json!({
                    "provider": handle.core().chain().address(),
                    "gateway": handle.gateway_addr(),
                    "metrics": handle.metrics_addr(),
                }),
            );
            shutdown_signal().await?;
            handle.shutdown().await;
        }
        Command::Status { gateway } => {
            let config = load(&cli.config)?;
            let address = gateway.unwrap_or_else(|| config.gateway.listen.clone());
            // This provider's own gateway: pinned to the certificate in its data dir.
            let pin = leasehold_proto::tls::GatewayPin {
                provider: None,
                cert_sha256: GatewayIdentity::load(&config.data_dir)
                    .context("the gateway's TLS certificate")?
                    .cert_sha256(),
            };
            let mut client = leasehold_proto::client::ProviderClient::connect(
                &address,
                pin,
                Duration::from_secs(10),
            )
            .await
            .with_context(|| format!("connecting to the gateway at {address}"))?;
            let status = client.status().await.context("Provider.GetStatus")?;
            let resources = |r: &Option<leasehold_proto::gateway::Resources>| {
                r.as_ref().map(|r| {
                    json!({"cpu_milli": r.cpu_milli, "memory_bytes": r.memory_bytes,
                           "storage_bytes": r.storage_bytes, "leased_ips": r.leased_ips,
                           "gpus": r.gpus.iter().map(|g| json!({"model": g.model, "count": g.count})).collect::<Vec<_>>()})
                })
            };
            let value = json!({
                "address": status.address,
                "version": status.version,
                "active_leases": status.active_leases,
                "capacity": resources(&status.capacity),
                "allocated": resources(&status.allocated),
                "reserved": resources(&status.reserved),
            });
            print(
                output,
                serde_json::to_string_pretty(&value).unwrap_or_default(),
                value,
            );
        }
        Command::Withdraw => {
            let config = load(&cli.config)?;
            let signer = load_signer(&config).context("loading the signing key")?;
            let scope = runtime_scope(&config, &signer)
                .await
                .context("reading the chain id")?;
            let runtime = connect_runtime(&config, scope)
                .await
                .context("connecting to the container runtime")?;
            let core = Core::new(config, signer, runtime, DaemonOptions::default())
                .await
                .context("opening the daemon state")?;
            let mut collected = Vec::new();
            let mut lines = Vec::new();
            for lease in core.open_leases().await.context("listing leases")? {
                let amount = core
                    .collect(lease.lease_id)
                    .await
                    .with_context(|| format!("collecting lease {}", lease.lease_id))?;
                lines.push(format!("lease {}: {amount} base units", lease.lease_id));
                collected.push(json!({"lease_id": lease.lease_id, "amount": amount.to_string()}));
            }
            let text = if lines.is_empty() {
                "no open leases: nothing to collect".to_owned()
            } else {
                format!(
                    "collected from {} lease(s):\n  {}",
                    lines.len(),
                    lines.join("\n  ")
                )
            };
            print(output, text, json!({"withdrawals": collected}));
        }
        Command::AddStake { amount } => {
            let (_, chain) = connect_chain(&cli.config).await?;
            let client = chain.client();
            let amount = match amount {
                Some(amount) => U256::from(amount),
                None => {
                    let minimum = client
                        .minimum_stake()
                        .await
                        .context("reading the minimum stake")?;
                    let stake = client
                        .provider_info(client.sender())
                        .await
                        .context("reading the stake")?
                        .stake;
                    minimum.saturating_sub(stake)
                }
            };
            if amount.is_zero() {
                print(
                    output,
                    "the stake already meets the minimum: nothing to add".to_owned(),
                    json!({"added": "0"}),
                );
                return Ok(());
            }
            let stake = client.add_stake(amount).await.context("adding stake")?;
            print(
                output,
                format!("added {amount} base units; stake now {stake}"),
                json!({"added": amount.to_string(), "stake": stake.to_string()}),
            );
        }
        Command::ReleaseBonds { orders } => {
            let (_, chain) = connect_chain(&cli.config).await?;
            let mut resolved = Vec::new();
            for order_id in orders {
                let bid_ids = chain
                    .my_locked_bonds(order_id)
                    .await
                    .with_context(|| format!("reading the bonds of order {order_id}"))?;
                if bid_ids.is_empty() {
                    continue;
                }
                resolved.extend(
                    chain
                        .release_bonds(order_id, &bid_ids)
                        .await
                        .with_context(|| format!("releasing the bonds of order {order_id}"))?,
                );
            }
            let lines: Vec<String> = resolved
                .iter()
                .map(|bond| match bond.forfeited_to {
                    None => format!(
                        "order {} bid {}: {} released",
                        bond.order_id, bond.bid_id, bond.amount
                    ),
                    Some(tenant) => format!(
                        "order {} bid {}: {} forfeited to {tenant}",
                        bond.order_id, bond.bid_id, bond.amount
                    ),
                })
                .collect();
            let text = if lines.is_empty() {
                "no bond of ours was locked on those orders".to_owned()
            } else {
                lines.join("\n")
            };
            print(output, text, json!({"resolved": resolved}));
        }
        Command::Claim { to } => {
            let (_, chain) = connect_chain(&cli.config).await?;
            let client = chain.client();
            let me = client.sender();
            let recipient = to.unwrap_or(me);
            let stake_token = client
                .stake_token()
                .await
                .context("reading the stake token")?;
            let payment_token = chain.deployment().token;
            let (market_credit, _) = client
                .claimable(payment_token, me)
                .await
                .context("reading the marketplace credit")?;
            let (_, registry_credit) = client
                .claimable(stake_token, me)
                .await
                .context("reading the registry credit")?;
            let mut claimed = (U256::ZERO, U256::ZERO);
            if !market_credit.is_zero() {
                claimed.0 = client
                    .claim(payment_token, recipient, false)
                    .await
                    .context("claiming from the marketplace")?;
            }
            if !registry_credit.is_zero() {
                claimed.1 = client
                    .claim(stake_token, recipient, true)
                    .await
                    .context("claiming from the registry")?;
            }
            print(
                output,
                format!(
                    "claimed {} from the marketplace and {} from the registry to {recipient}",
                    claimed.0, claimed.1
                ),
                json!({
                    "to": recipient,
                    "claimed_from_marketplace": claimed.0.to_string(),
                    "claimed_from_registry": claimed.1.to_string(),
                }),
            );
        }
        Command::Deregister => {
            let (_, chain) = connect_chain(&cli.config).await?;
            let ends = chain
                .client()
                .deregister_provider()
                .await
                .context("deregistering")?;
            print(
                output,
                format!("unbonding; the stake can be withdrawn from unix time {ends}"),
                json!({"unbonding_ends": ends}),
            );
        }
    }
    Ok(())
}

/// Logs to stderr at the level in `LEASEHOLD_LOG` (`error`..`trace`, default `info`).
pub fn init_logging() {
    let level = std::env::var("LEASEHOLD_LOG")
        .ok()
        .and_then(|text| text.parse::<tracing::level_filters::LevelFilter>().ok())
        .unwrap_or(tracing::level_filters::LevelFilter::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn shutdown_signal() -> Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
