//! Command-line arguments (clap derive). Every command documents an example and the exit
//! codes in its `--help`.

use std::path::PathBuf;

use alloy::primitives::{Address, U256};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::Output;

macro_rules! exit_codes {
    () => {
        "Exit codes:\n  0  success\n  1  the operation failed or the input is invalid\n  2  usage or configuration error\n  3  chain or network error (RPC, wrong network, provider gateway unreachable)\n  4  timeout (no bids, workload not running in time)"
    };
}

macro_rules! help {
    ($($example:literal),+ $(,)?) => {
        concat!("Examples:\n", $("  ", $example, "\n",)+ "\nAll commands take --output json|text.\n\n", exit_codes!())
    };
}

const TOP_HELP: &str = concat!(
    "Examples:\n  tenant deploy app.yaml\n  tenant status 7 --output json\n\n",
    "Configuration: ~/.config/leasehold/config.toml (or $XDG_CONFIG_HOME, or --config), keys\n",
    "rpc_url, ws_url, deployment, keystore, password_file, chain_id, data_dir,\n",
    "max_fee_per_gas_gwei, max_priority_fee_gwei; overridden by\n",
    "LEASEHOLD_RPC_URL, LEASEHOLD_WS_URL, LEASEHOLD_DEPLOYMENT, LEASEHOLD_KEYSTORE,\n",
    "LEASEHOLD_PASSWORD, LEASEHOLD_PASSWORD_FILE, LEASEHOLD_PRIVATE_KEY (devnets),\n",
    "LEASEHOLD_CHAIN_ID and LEASEHOLD_MAX_FEE_PER_GAS_GWEI, overridden by flags. Amounts are payment-token base units (6 decimals on the devnet token).\n\n",
    exit_codes!()
);

/// Leasehold tenant CLI.
#[derive(Debug, Parser)]
#[command(
    name = "tenant",
    version,
    about = "Deploy and manage workloads on Leasehold",
    after_help = TOP_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Output format: human text, or one JSON document on stdout.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Config file (default: $XDG_CONFIG_HOME/leasehold/config.toml).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// JSON-RPC URL of the chain, or several separated by commas (tried in order when one
    /// fails); overrides LEASEHOLD_RPC_URL.
    #[arg(long, global = true, value_name = "URL")]
    pub rpc_url: Option<String>,
    /// WebSocket URL of the same node (`ws://`, overrides LEASEHOLD_WS_URL): `deploy` wakes
    /// on each new block instead of polling.
    #[arg(long, global = true, value_name = "URL")]
    pub ws_url: Option<String>,
    /// Deployment JSON with the contract addresses (overrides LEASEHOLD_DEPLOYMENT).
    #[arg(long, global = true, value_name = "PATH")]
    pub deployment: Option<PathBuf>,
    /// Keystore file of the tenant key (overrides LEASEHOLD_KEYSTORE).
    #[arg(long, global = true, value_name = "PATH")]
    pub keystore: Option<PathBuf>,
    /// The most a transaction may pay per gas, in gwei (e.g. 0.05; overrides
    /// LEASEHOLD_MAX_FEE_PER_GAS_GWEI): a command whose transaction needs more fails before
    /// sending it. A transaction not mined within 20 s is re-sent with fees raised by 12.5 %,
    /// within this cap.
    #[arg(long, global = true, value_name = "GWEI")]
    pub max_fee_per_gas_gwei: Option<leasehold_contracts::Gwei>,
}

/// How `deploy` picks the winning bid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Select {
    /// Accept the lowest price (earliest on a tie) with room, after the bid window or as
    /// soon as every provider the preflight found eligible has bid.
    #[default]
    Cheapest,
    /// Accept the best weighted score (price and track record), after the bid window or as
    /// soon as every provider the preflight found eligible has bid.
    Score,
    /// Show the ranked bids after the bid window and ask which to accept.
    Interactive,
    /// After the bid window, call the contract's `settle` (the default on-chain matcher).
    Settle,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and validate an SDL file; show its groups and manifest hash.
    #[command(after_help = help!(
        "tenant validate manifests/examples/hello.yaml",
        "tenant validate app.yaml --output json",
        "tenant validate app.yaml --strict"
    ))]
    Validate {
        /// SDL file (Akash SDL v2.0 or v2.1).
        file: PathBuf,
        /// Treat every warning (unknown keys, keys Leasehold does not honour, Akash denoms)
        /// as an error: exit 1 when there is any.
        #[arg(long)]
        strict: bool,
    },
    /// Manage the tenant key: keystores, balances, the devnet faucet.
    #[command(subcommand, after_help = help!(
        "tenant wallet new",
        "tenant wallet balance --output json"
    ))]
    Wallet(WalletCommand),
    /// List registered providers: endpoint, attributes, capacity and allocation.
    #[command(after_help = help!("tenant providers", "tenant providers --all --output json"))]
    Providers {
        /// Include providers that are unbonding.
        #[arg(long)]
        all: bool,
    },
    /// Which providers could serve each group of an SDL, at what maximum price, and why the
    /// others cannot.
    #[command(after_help = help!("tenant preflight app.yaml", "tenant preflight app.yaml --output json"))]
    Preflight {
        /// SDL file.
        file: PathBuf,
    },
    /// Post an SDL as on-chain orders, pick bids, send the manifest and wait until it runs.
    #[command(after_help = help!(
        "tenant deploy app.yaml",
        "tenant deploy app.yaml --deposit 5000000 --bid-window 20 --select settle",
        "tenant deploy app.yaml --select interactive --timeout 300",
        "tenant deploy app.yaml --auto-accept --provider 0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    ))]
    Deploy(DeployArgs),
    /// Show a lease: on-chain state, escrow, and the workload's status from the provider.
    #[command(after_help = help!("tenant status 7", "tenant status 7 --output json"))]
    Status {
        /// Lease id (equal to its order id).
        lease: u64,
    },
    /// Print (or follow) the workload's logs from the provider.
    #[command(after_help = help!(
        "tenant logs 7 --tail 50",
        "tenant logs 7 -f --service web",
        "tenant logs 7 --output json   # one JSON object per line"
    ))]
    Logs {
        /// Lease id.
        lease: u64,
        /// Keep streaming new lines until interrupted.
        #[arg(short, long)]
        follow: bool,
        /// Lines per replica from the end (0: everything retained).
        #[arg(long, default_value_t = 100)]
        tail: u32,
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
    },
    /// Print what happens to the lease's workloads from now on: image pulls, starts,
    /// exits with their codes, restarts, out-of-memory kills, evictions.
    #[command(after_help = help!(
        "tenant events 7 -f",
        "tenant events 7 -f --output json   # one JSON object per line"
    ))]
    Events {
        /// Lease id.
        lease: u64,
        /// Keep streaming until interrupted (without it: until nothing happened for 20 s).
        #[arg(short, long)]
        follow: bool,
    },
    /// Run a new manifest on an active lease: same lease, volumes and URLs. The new
    /// manifest must keep the groups and replica counts and fit the resources the lease
    /// bought (checked before any transaction); records its hash on chain
    /// (`updateManifest`), sends it to the provider and waits until the new revision runs.
    #[command(after_help = help!(
        "tenant update 7 app.yaml",
        "tenant update 7 app-v2.yaml --output json"
    ))]
    Update {
        /// Lease id.
        lease: u64,
        /// The new SDL file.
        file: PathBuf,
    },
    /// Close a lease (refunding the unspent escrow), or cancel a still unmatched order.
    #[command(after_help = help!("tenant close 7", "tenant close 7 --output json"))]
    Close {
        /// Lease or order id.
        lease: u64,
    },
    /// Add to a lease's (or open order's) escrow.
    #[command(after_help = help!("tenant topup 7 1000000", "tenant topup 7 1_000_000 --output json"))]
    Topup {
        /// Lease or order id.
        lease: u64,
        /// Amount in token base units.
        #[arg(value_parser = parse_amount)]
        amount: U256,
    },
    /// List an order's bids, ranked, with why a bid cannot win.
    #[command(after_help = help!("tenant bids 7", "tenant bids 7 --output json"))]
    Bids {
        /// Order id.
        order: u64,
    },
    /// Deployments recorded on this machine, with their on-chain state.
    #[command(after_help = help!("tenant leases", "tenant leases --output json"))]
    Leases,
    /// Act as an auditor (Akash's `signedBy`): attest that a provider holds attributes, revoke
    /// attestations, list them. Orders whose SDL placement lists the auditor's 0x address in
    /// `signedBy.allOf`/`anyOf` take bids only from providers it attests.
    #[command(subcommand, after_help = help!(
        "tenant audit attest 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 region=eu-west tier=community",
        "tenant audit revoke 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 region=eu-west",
        "tenant audit list --provider 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 --output json"
    ))]
    Audit(AuditCommand),
    /// Open a shell in one of the lease's replicas, or run one command there.
    #[command(after_help = SHELL_HELP)]
    Shell(ShellArgs),
}

const SHELL_HELP: &str = concat!(
    "Examples:\n",
    "  tenant shell 7                          # interactive sh in the only service, replica 0\n",
    "  tenant shell 7 --service web --replica 1 -- bash\n",
    "  tenant shell 7 -- sh -c 'exit 3'; echo $?   # prints 3\n",
    "  tenant shell 7 --output json -- cat /etc/hostname\n",
    "\n",
    "Without a command and with stdin on a terminal, the session is interactive: the local\n",
    "terminal is in raw mode (restored on exit), window resizes follow, Ctrl-D ends it.\n",
    "stdin is forwarded otherwise too, so `echo hi | tenant shell 7 -- cat` works.\n",
    "\n",
    "Exit code: the command's own (0-255), like `docker exec`. When the CLI itself fails\n",
    "before the command ran or the session broke, it prints `error: ...` and exits with:\n  ",
    "1  the provider refused (not your lease, no such service or replica)\n",
    "  2  usage or configuration error\n",
    "  3  chain or network error (RPC, provider gateway unreachable, lease closed)"
);

/// `tenant shell` arguments.
#[derive(Debug, Clone, Args)]
pub struct ShellArgs {
    /// Lease id.
    pub lease: u64,
    /// The service to run in (default: the lease's only service).
    #[arg(long)]
    pub service: Option<String>,
    /// The replica of the service, from 0.
    #[arg(long, default_value_t = 0)]
    pub replica: u32,
    /// Allocate a terminal (default: when stdin is a terminal and no command is given).
    #[arg(long, overrides_with = "no_tty")]
    pub tty: bool,
    /// Never allocate a terminal: separate stdout and stderr.
    #[arg(long)]
    pub no_tty: bool,
    /// The command and its arguments, after `--` (default: `sh`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `tenant deploy` arguments.
#[derive(Debug, Clone, Args)]
pub struct DeployArgs {
    /// SDL file.
    pub file: PathBuf,
    /// Escrow deposit per order, in token base units (default: 24 hours at the group's
    /// maximum price).
    #[arg(long, value_parser = parse_amount)]
    pub deposit: Option<U256>,
    /// Seconds providers have to bid. Providers bid only when they can hold their reservation
    /// until 120 s after the window (their `bid.reservation_timeout_secs`, by default 900 s:
    /// windows up to 750 s).
    #[arg(long, default_value_t = 10)]
    pub bid_window: u64,
    /// Seconds the winning provider has to confirm on chain that the workload runs (60-3600).
    /// Nothing is paid before that; unconfirmed by then, `tenant close` refunds the whole
    /// escrow plus part of the provider's stake.
    #[arg(
        long,
        default_value_t = leasehold_contracts::DEFAULT_DELIVERY_WINDOW_SECS,
        value_parser = clap::value_parser!(u64).range(60..=3600)
    )]
    pub delivery_window: u64,
    /// How the winning bid is chosen.
    #[arg(long, value_enum, default_value_t = Select::Cheapest)]
    pub select: Select,
    /// Give up (exit 4) when no usable bid arrives, or the workload is not running, within
    /// this many seconds of posting.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Stop after the lease is created: do not send the manifest or wait for the workload.
    #[arg(long)]
    pub no_manifest: bool,
    /// The order's maximum price per hour for the whole group, in token base units, instead
    /// of the SDL's `pricing` (read per replica per hour): `GROUP=AMOUNT` for one group, or
    /// `AMOUNT` for every group. Repeatable.
    #[arg(long, value_name = "[GROUP=]AMOUNT", value_parser = parse_max_price)]
    pub max_price: Vec<MaxPrice>,
    /// Let the chain accept a bid: each order carries an auto-accept rule, so the first bid
    /// from `--provider` (default: any provider the order admits) at or below
    /// `--auto-accept-price` becomes the lease in the bid's own transaction, a block sooner
    /// than `acceptBid`. The manifest goes to that provider (or to at most 3 preflight
    /// candidates) as soon as the order is mined, so the workload starts while the bid is
    /// mined. Without a covered bid by the end of the window, `--select` chooses as usual.
    #[arg(long)]
    pub auto_accept: bool,
    /// With `--auto-accept`: only this provider's bid is accepted automatically.
    #[arg(long, value_name = "ADDR", requires = "auto_accept")]
    pub provider: Option<Address>,
    /// With `--auto-accept`: the highest price per hour accepted automatically, in token base
    /// units (default: the order's maximum price).
    #[arg(long, value_name = "AMOUNT", value_parser = parse_amount, requires = "auto_accept")]
    pub auto_accept_price: Option<U256>,
}

/// A `--max-price` override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaxPrice {
    /// The group (placement) it applies to; `None`: every group without its own override.
    pub group: Option<String>,
    /// Maximum price per hour for the group's order, in token base units.
    pub per_hour: U256,
}

/// Reads `GROUP=AMOUNT` or `AMOUNT`.
pub fn parse_max_price(text: &str) -> Result<MaxPrice, String> {
    let (group, amount) = match text.split_once('=') {
        Some((group, _)) if group.trim().is_empty() => {
            return Err(format!("`{text}`: the group name before `=` is empty"));
        }
        Some((group, amount)) => (Some(group.trim().to_owned()), amount),
        None => (None, text),
    };
    Ok(MaxPrice {
        group,
        per_hour: parse_amount(amount.trim())?,
    })
}

/// `tenant audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Attest, with the configured key as the auditor, that PROVIDER holds each attribute.
    #[command(after_help = help!(
        "tenant audit attest 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 region=eu-west",
        "tenant audit attest 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 host=akash tier=community --output json"
    ))]
    Attest {
        /// The provider's address.
        provider: Address,
        /// Attributes as the SDL's placement writes them, `key=value` (at most 32).
        #[arg(required = true, value_parser = parse_attribute)]
        attributes: Vec<String>,
    },
    /// Withdraw the configured key's attestations of these attributes for PROVIDER; bids that
    /// relied on them no longer win.
    #[command(after_help = help!(
        "tenant audit revoke 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 region=eu-west"
    ))]
    Revoke {
        /// The provider's address.
        provider: Address,
        /// Attributes, `key=value`.
        #[arg(required = true, value_parser = parse_attribute)]
        attributes: Vec<String>,
    },
    /// Standing attestations, optionally of one auditor and/or for one provider. Attributes are
    /// keccak256 keys on chain: the ones given with --attribute are shown by name.
    #[command(after_help = help!(
        "tenant audit list",
        "tenant audit list --auditor 0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC --output json",
        "tenant audit list --provider 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 --attribute region=eu-west"
    ))]
    List {
        /// Only this auditor's attestations.
        #[arg(long)]
        auditor: Option<Address>,
        /// Only attestations for this provider.
        #[arg(long)]
        provider: Option<Address>,
        /// Attribute names to show instead of their keys (`key=value`, repeatable).
        #[arg(long = "attribute", value_parser = parse_attribute)]
        attributes: Vec<String>,
    },
}

/// A placement attribute as the SDL writes it: `key=value`, both parts non-empty.
fn parse_attribute(text: &str) -> Result<String, String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() && !value.is_empty() => Ok(text.to_owned()),
        _ => Err(format!(
            "`{text}` is not an attribute: write key=value, as in the SDL's placement attributes"
        )),
    }
}

/// `tenant wallet ...`
#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Create a new key in a password-protected keystore (Web3 Secret Storage).
    #[command(after_help = help!(
        "tenant wallet new",
        "LEASEHOLD_PASSWORD_FILE=pw.txt tenant wallet new --keystore ./tenant.json --output json"
    ))]
    New,
    /// Encrypt an existing private key into a keystore.
    #[command(after_help = help!(
        "tenant wallet import --private-key-file key.txt",
        "cat key.txt | tenant wallet import --private-key-file - --keystore ./tenant.json"
    ))]
    Import {
        /// File holding the hex private key (`-`: stdin). Default: LEASEHOLD_PRIVATE_KEY, or
        /// a hidden prompt on a terminal.
        #[arg(long, value_name = "FILE")]
        private_key_file: Option<PathBuf>,
    },
    /// Print the address of the configured key (decrypting the keystore).
    #[command(after_help = help!("tenant wallet address", "tenant wallet address --output json"))]
    Address,
    /// ETH (for gas) and payment-token balances.
    #[command(after_help = help!(
        "tenant wallet balance",
        "tenant wallet balance 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 --output json"
    ))]
    Balance {
        /// Address to inspect (default: the configured key).
        address: Option<Address>,
    },
    /// Mint devnet test tokens (TestToken.faucet).
    #[command(after_help = help!("tenant wallet faucet", "tenant wallet faucet 5000000000 --to 0x70997970C51812dc3A010C7d01b50e0d17dc79C8"))]
    Faucet {
        /// Amount in token base units (default 1000 tokens = 1000000000).
        #[arg(value_parser = parse_amount)]
        amount: Option<U256>,
        /// Recipient (default: the configured key).
        #[arg(long)]
        to: Option<Address>,
    },
    /// Collect what the contracts credited to the key: refunds and payments that could not be
    /// pushed (marketplace), and providers' bid bonds forfeited to you (registry). With
    /// `--release-bonds`, first resolve the bonds of those ended orders' bids.
    #[command(after_help = help!(
        "tenant wallet claim",
        "tenant wallet claim --release-bonds 7 --release-bonds 8 --to 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 --output json"
    ))]
    Claim {
        /// Where the tokens go (default: the configured key).
        #[arg(long)]
        to: Option<Address>,
        /// Ended order whose bids' bonds to resolve first (repeatable).
        #[arg(long = "release-bonds", value_name = "ORDER")]
        release_bonds: Vec<u64>,
    },
}

/// Token base units: a non-negative integer, `_` separators allowed.
pub fn parse_amount(text: &str) -> Result<U256, String> {
    let digits: String = text.chars().filter(|c| *c != '_').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "`{text}` is not an amount: use token base units, e.g. 1000000 (= 1 token with 6 decimals)"
        ));
    }
    U256::from_str_radix(&digits, 10).map_err(|e| format!("`{text}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn amounts_parse_base_units_only() {
        assert_eq!(parse_amount("1_000_000"), Ok(U256::from(1_000_000u64)));
        assert!(parse_amount("1.5").is_err());
        assert!(parse_amount("-3").is_err());
        assert!(parse_amount("").is_err());
    }

    #[test]
    fn max_price_names_a_group_or_all() {
        assert_eq!(
            parse_max_price("web=2_000"),
            Ok(MaxPrice {
                group: Some("web".to_owned()),
                per_hour: U256::from(2000u64)
            })
        );
        assert_eq!(
            parse_max_price("500"),
            Ok(MaxPrice {
                group: None,
                per_hour: U256::from(500u64)
            })
        );
        assert!(parse_max_price("=5").is_err());
        assert!(parse_max_price("web=1.5").is_err());
    }

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }
}
