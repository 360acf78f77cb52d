//! A local devnet in one call (feature `devnet`): anvil on a free port, the three contracts
//! deployed, the first dev accounts funded with the test token. Used by the tests of every
//! crate that needs a chain, by the `leasehold-devnet` launcher and by `scripts/demo`.
//!
//! Setup always runs with instant mining, so deploying and funding take milliseconds instead
//! of one block per transaction; the requested block time is switched on afterwards.

mod proxy;

use std::path::{Path, PathBuf};

use alloy::node_bindings::{Anvil, AnvilInstance, NodeError};
use alloy::primitives::{Address, U256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;

use crate::client::{MarketplaceClient, signing_provider};
use crate::deploy::{DeployParams, Deployment, DeploymentFileError, deploy_all, fund_with_faucet};
use crate::error::ClientError;

pub use proxy::{ProxyCounters, RpcProxy};

/// One test token: the devnet token has 6 decimals.
pub const ONE_TOKEN: u64 = 1_000_000;

/// The dev account that deploys the contracts.
pub const DEPLOYER: usize = 0;

/// What went wrong bringing a devnet up or using it.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    #[error(
        "anvil not found at {}: run scripts/bootstrap to install it into .tools/bin, or set ANVIL_BIN",
        path.display()
    )]
    AnvilNotFound { path: PathBuf },
    #[error("anvil did not start: {0}")]
    Spawn(#[from] NodeError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("anvil RPC {call}: {reason}")]
    Rpc { call: &'static str, reason: String },
    #[error("dev account {index} does not exist (anvil has {count})")]
    NoSuchAccount { index: usize, count: usize },
    #[error(transparent)]
    DeploymentFile(#[from] DeploymentFileError),
    #[error("solc not found at {}: run scripts/bootstrap to install it into .tools/bin", path.display())]
    SolcNotFound { path: PathBuf },
    #[error("solc --standard-json: {0}")]
    Solc(String),
}

/// The anvil binary: `$ANVIL_BIN`, else `<repo>/.tools/bin/anvil` (installed by
/// `scripts/bootstrap`).
pub fn anvil_bin() -> Result<PathBuf, DevnetError> {
    let path = std::env::var_os("ANVIL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/anvil"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(DevnetError::AnvilNotFound { path })
    }
}

/// The repo's solc (`<repo>/.tools/bin/solc`, the solc-js shim `scripts/bootstrap` installs
/// at `SOLC_VERSION`).
pub fn solc_bin() -> Result<PathBuf, DevnetError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/solc");
    if path.is_file() {
        Ok(path)
    } else {
        Err(DevnetError::SolcNotFound { path })
    }
}

/// Compiles a standard-JSON `input` with [`solc_bin`] and returns its standard-JSON output
/// (compiler errors are in its `errors`, as solc reports them).
pub fn solc_standard_json(input: &str) -> Result<serde_json::Value, DevnetError> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let solc = solc_bin()?;
    let failed =
        |what: &str, error: &dyn std::fmt::Display| DevnetError::Solc(format!("{what}: {error}"));
    let mut child = Command::new(&solc)
        .arg("--standard-json")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| failed(&solc.display().to_string(), &error))?;
    child
        .stdin
        .take()
        .ok_or_else(|| DevnetError::Solc("no stdin".to_owned()))?
        .write_all(input.as_bytes())
        .map_err(|error| failed("writing the input", &error))?;
    let output = child
        .wait_with_output()
        .map_err(|error| failed("waiting for it", &error))?;
    serde_json::from_slice(&output.stdout).map_err(|error| failed("its output", &error))
}

/// How to bring a devnet up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevnetConfig {
    /// `None`: a block per transaction (instant mining); `Some(n)`: a block every n seconds.
    pub block_time: Option<u64>,
    /// How many of anvil's dev accounts, from index 0, get test tokens.
    pub funded_accounts: usize,
    /// Test tokens (base units) each funded account receives.
    pub funding: U256,
    /// `None`: a free port.
    pub port: Option<u16>,
    pub params: DeployParams,
    /// Keep no per-block state on disk (anvil `--prune-history`). Long synthetic histories
    /// (benchmarks mining 100k blocks) otherwise write gigabytes under `~/.foundry/anvil/tmp`;
    /// logs and headers stay queryable, only calls against old state fail.
    pub prune_history: bool,
}

impl Default for DevnetConfig {
    fn default() -> Self {
        Self {
            block_time: None,
            funded_accounts: 6,
            funding: U256::from(100_000 * ONE_TOKEN),
            port: None,
            params: DeployParams::default(),
            prune_history: false,
        }
    }
}

/// A running anvil with the contracts deployed. Anvil is killed when this is dropped.
pub struct Devnet {
    pub anvil: AnvilInstance,
    pub deployment: Deployment,
    pub params: DeployParams,
    /// Read-only and anvil-API access (no wallet).
    pub rpc: DynProvider,
}

impl Devnet {
    /// Anvil on a free port mining every `block_time` seconds (`None`: instantly), contracts
    /// deployed, accounts 0..6 funded with 100,000 tokens each.
    pub async fn start(block_time: Option<u64>) -> Result<Self, DevnetError> {
        Self::start_with(DevnetConfig {
            block_time,
            ..DevnetConfig::default()
        })
        .await
    }

    pub async fn start_with(config: DevnetConfig) -> Result<Self, DevnetError> {
        let mut anvil = Anvil::at(anvil_bin()?);
        if let Some(port) = config.port {
            anvil = anvil.port(port);
        }
        if config.prune_history {
            anvil = anvil.arg("--prune-history");
        }
        let anvil = anvil.try_spawn()?;
        let rpc = ProviderBuilder::new()
            .connect_http(anvil.endpoint_url())
            .erased();
        let count = anvil.keys().len();
        if config.funded_accounts > count {
            return Err(DevnetError::NoSuchAccount {
                index: config.funded_accounts.saturating_sub(1),
                count,
            });
        }
        let deployer = signer_at(&anvil, DEPLOYER)?;
        let deploying = signing_provider(&anvil.endpoint(), deployer.clone())?;
        let deployment = deploy_all(&deploying, deployer.address(), &config.params).await?;
        let funded: Vec<Address> = anvil
            .addresses()
            .iter()
            .take(config.funded_accounts)
            .copied()
            .collect();
        if !funded.is_empty() {
            fund_with_faucet(
                &deploying,
                deployment.token,
                deployer.address(),
                &funded,
                config.funding,
            )
            .await?;
        }
        if let Some(seconds) = config.block_time {
            rpc.anvil_set_interval_mining(seconds)
                .await
                .map_err(|error| rpc_error("anvil_setIntervalMining", error))?;
        }
        Ok(Self {
            anvil,
            deployment,
            params: config.params,
            rpc,
        })
    }

    /// The HTTP JSON-RPC URL.
    pub fn endpoint(&self) -> String {
        self.anvil.endpoint()
    }

    /// The WebSocket JSON-RPC URL (anvil serves it on the HTTP port).
    pub fn ws_endpoint(&self) -> String {
        self.anvil.ws_endpoint()
    }

    /// How many dev accounts anvil has.
    pub fn accounts(&self) -> usize {
        self.anvil.keys().len()
    }

    pub fn signer(&self, index: usize) -> Result<PrivateKeySigner, DevnetError> {
        signer_at(&self.anvil, index)
    }

    pub fn address(&self, index: usize) -> Result<Address, DevnetError> {
        self.signer(index).map(|signer| signer.address())
    }

    /// Dev account `index`'s private key as 0x-prefixed hex (anvil's public test keys).
    pub fn private_key_hex(&self, index: usize) -> Result<String, DevnetError> {
        self.signer(index)
            .map(|signer| alloy::hex::encode_prefixed(signer.to_bytes()))
    }

    /// A contracts client acting as dev account `index`.
    pub fn client(&self, index: usize) -> Result<MarketplaceClient, DevnetError> {
        Ok(MarketplaceClient::connect_http(
            &self.endpoint(),
            self.signer(index)?,
            self.deployment,
        )?)
    }

    /// Writes the deployment JSON the daemon and the CLI read.
    pub fn write_deployment(&self, path: &Path) -> Result<(), DevnetError> {
        Ok(self.deployment.save(path)?)
    }

    /// Moves chain time forward by `seconds` and mines a block so views see it.
    pub async fn warp(&self, seconds: u64) -> Result<(), DevnetError> {
        self.rpc
            .anvil_increase_time(seconds)
            .await
            .map_err(|error| rpc_error("evm_increaseTime", error))?;
        self.mine().await
    }

    /// Mines one block now.
    pub async fn mine(&self) -> Result<(), DevnetError> {
        self.rpc
            .evm_mine(None)
            .await
            .map(drop)
            .map_err(|error| rpc_error("evm_mine", error))
    }

    /// The next mined block gets `timestamp`.
    pub async fn set_next_timestamp(&self, timestamp: u64) -> Result<(), DevnetError> {
        self.rpc
            .anvil_set_next_block_timestamp(timestamp)
            .await
            .map_err(|error| rpc_error("anvil_setNextBlockTimestamp", error))
    }
}

fn rpc_error(call: &'static str, error: impl std::fmt::Display) -> DevnetError {
    DevnetError::Rpc {
        call,
        reason: error.to_string(),
    }
}

fn signer_at(anvil: &AnvilInstance, index: usize) -> Result<PrivateKeySigner, DevnetError> {
    anvil
        .nth_key(index)
        .map(|key| PrivateKeySigner::from(key.clone()))
        .ok_or(DevnetError::NoSuchAccount {
            index,
            count: anvil.keys().len(),
        })
}
