//! Connecting to the chain: the deployment file, the wrong-network check and the client.

use std::sync::Arc;
use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, U256};
use alloy::providers::{Provider as _, ProviderBuilder};
use alloy::rpc::client::RpcClient;
use alloy::signers::local::PrivateKeySigner;
use leasehold_contracts::{
    Deployment, FeePolicy, MarketplaceClient, MemoryJournal, TxLane, transport,
};

use crate::config::{Settings, env};
use crate::error::{CliError, CliResult, ExitKind};

/// How long a single RPC call may take before the CLI reports the node unreachable.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(15);

/// How often a local node is asked whether a sent transaction was mined.
const LOCAL_RECEIPT_POLL: Duration = Duration::from_millis(100);

/// How long a tenant transaction may wait for a block before it is re-sent with higher fees:
/// a command bumps at most twice within [`TX_PATIENCE`] and then fails clearly.
const TX_STUCK_AFTER: Duration = Duration::from_secs(20);
const TX_PATIENCE: Duration = Duration::from_secs(60);

/// The tenant's fees: the node's suggestion within the configured caps.
fn fee_policy(settings: &Settings) -> FeePolicy {
    let local = transport::parse_rpc_urls("rpc_url", &settings.rpc_url)
        .is_ok_and(|urls| urls.iter().all(alloy::transports::utils::guess_local_url));
    FeePolicy {
        max_fee_per_gas: settings.max_fee_per_gas,
        max_priority_fee_per_gas: settings.max_priority_fee,
        cap_setting: "--max-fee-per-gas-gwei (LEASEHOLD_MAX_FEE_PER_GAS_GWEI, max_fee_per_gas_gwei)",
        stuck_after: TX_STUCK_AFTER,
        poll_interval: if local {
            LOCAL_RECEIPT_POLL
        } else {
            Duration::from_secs(1)
        },
        give_up_after: TX_PATIENCE,
    }
}

/// A client for the configured deployment, after checking the node is on its chain.
pub struct Chain {
    pub client: MarketplaceClient,
    pub deployment: Deployment,
    pub rpc_url: String,
}

impl Chain {
    /// Connects as `signer`; read-only commands pass `None` and get a throwaway key that
    /// never signs anything.
    pub async fn connect(settings: &Settings, signer: Option<PrivateKeySigner>) -> CliResult<Self> {
        let path = settings.deployment_path()?;
        let deployment = Deployment::load(path).map_err(|e| CliError::new(ExitKind::Usage, e))?;
        if let Some(expected) = settings.chain_id
            && expected != deployment.chain_id
        {
            return Err(wrong_network(
                &format!("{} / config chain_id", env::CHAIN_ID),
                expected,
                &path.display().to_string(),
                deployment.chain_id,
            ));
        }
        let node = node_chain_id(&settings.rpc_url).await?;
        if node != deployment.chain_id {
            return Err(wrong_network(
                &format!("the RPC at {}", settings.rpc_url),
                node,
                &format!("the deployment {}", path.display()),
                deployment.chain_id,
            ));
        }
        let signer = signer.unwrap_or_else(PrivateKeySigner::random);
        let sender = signer.address();
        let wallet = EthereumWallet::from(signer.clone());
        // The fillers of `leasehold_contracts::signing_provider` (see there for why nonces
        // come from the node), over a transport whose requests time out, so a node that
        // stops answering mid-command fails the command instead of hanging it.
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(EthereumWallet::from(signer))
            .connect_client(rpc_client(&settings.rpc_url)?)
            .erased();
        let lane = TxLane::new(
            provider.clone(),
            wallet,
            deployment.chain_id,
            fee_policy(settings),
            Arc::new(MemoryJournal::default()),
        );
        let client = MarketplaceClient::new(provider, sender, deployment).with_lane(Arc::new(lane));
        Ok(Self {
            client,
            deployment,
            rpc_url: settings.rpc_url.clone(),
        })
    }

    pub fn sender(&self) -> Address {
        self.client.sender()
    }

    /// Fails when the chain (at its head) no longer has lease `lease_id` as ours: the block
    /// whose receipt reported it was reorged away and the transaction was not mined again.
    /// Waits call it so they never act on (or wait forever for) a lease that is gone.
    pub async fn ensure_lease_on_chain(&self, lease_id: u64) -> CliResult<()> {
        match self.client.lease(lease_id).await {
            Ok(lease) if lease.tenant == self.sender() => Ok(()),
            Ok(_) => Err(CliError::failed(format!(
                "lease {lease_id} is no longer ours on chain: the block that created it was reorged away and the order went to someone else"
            ))),
            Err(error) if error.revert_name() == Some("LeaseNotFound") => {
                Err(CliError::failed(format!(
                    "lease {lease_id} is no longer on chain: the block that created it was reorged away; its order is open again (run `tenant deploy` again, or accept a bid on it)"
                )))
            }
            Err(error) => Err(CliError::from(error).context(format!("reading lease {lease_id}"))),
        }
    }

    pub async fn eth_balance(&self, owner: Address) -> CliResult<U256> {
        bounded("eth_getBalance", self.client.provider().get_balance(owner)).await
    }

    pub async fn token_balance(&self, owner: Address) -> CliResult<U256> {
        Ok(self
            .client
            .token_balance(self.deployment.token, owner)
            .await?)
    }
}

fn wrong_network(what: &str, chain: u64, other: &str, other_chain: u64) -> CliError {
    CliError::msg(
        ExitKind::Network,
        format!(
            "wrong network: {what} is on chain id {chain}, but {other} is for chain id \
             {other_chain}; point {} at the right node or {} at the right deployment",
            env::RPC_URL,
            env::DEPLOYMENT
        ),
    )
    .with_details(serde_json::json!({ "rpc_chain_id": chain, "expected_chain_id": other_chain }))
}

/// Awaits an RPC future for at most [`RPC_TIMEOUT`]; failures are network errors (exit 3).
pub async fn bounded<T, E: std::fmt::Display>(
    call: &str,
    future: impl std::future::IntoFuture<Output = Result<T, E>>,
) -> CliResult<T> {
    match tokio::time::timeout(RPC_TIMEOUT, future.into_future()).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(CliError::msg(ExitKind::Network, format!("{call}: {error}"))),
        Err(_) => Err(CliError::msg(
            ExitKind::Network,
            format!("{call}: no answer within {}s", RPC_TIMEOUT.as_secs()),
        )),
    }
}

/// A JSON-RPC client over one URL or a comma-separated list (failover, rate limits retried:
/// `leasehold_contracts::transport`) whose every request gives up after [`RPC_TIMEOUT`].
fn rpc_client(rpc_url: &str) -> CliResult<RpcClient> {
    let urls = transport::parse_rpc_urls("rpc_url", rpc_url)
        .map_err(|e| CliError::usage(format!("RPC URL: {e}")))?;
    let client = transport::rpc_client(&urls, RPC_TIMEOUT)?;
    // Local nodes (devnets with 1-second or instant blocks) get receipts polled every
    // 100 ms instead of alloy's 250 ms; remote nodes keep alloy's interval.
    Ok(
        if urls.iter().all(alloy::transports::utils::guess_local_url) {
            client.with_poll_interval(LOCAL_RECEIPT_POLL)
        } else {
            client
        },
    )
}

/// The chain id the node at `rpc_url` reports.
pub async fn node_chain_id(rpc_url: &str) -> CliResult<u64> {
    let provider = ProviderBuilder::new()
        .disable_recommended_fillers()
        .connect_client(rpc_client(rpc_url)?);
    bounded(
        &format!("eth_chainId at {rpc_url}"),
        provider.get_chain_id(),
    )
    .await
}
