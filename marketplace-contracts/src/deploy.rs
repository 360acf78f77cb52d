//! Devnet deployment of the three contracts and test-token funding.

use std::path::{Path, PathBuf};

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::BlockId;
use alloy::rpc::types::TransactionReceipt;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::bindings::{Marketplace, ProviderRegistry, TestToken};
use crate::error::ClientError;

/// Where the contracts live. Written to JSON by devnet scripts and read by the daemon and CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub chain_id: u64,
    pub token: Address,
    pub registry: Address,
    pub marketplace: Address,
    /// Block of the first deployment transaction: where event followers start.
    pub start_block: u64,
}

/// Failure to read or write a deployment file.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentFileError {
    #[error("deployment file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("deployment file {path} is not valid deployment JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl Deployment {
    /// Reads a deployment written by [`Deployment::save`] (or by hand: all fields required).
    pub fn load(path: &Path) -> Result<Self, DeploymentFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| DeploymentFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| DeploymentFileError::Json {
            path: path.to_owned(),
            source,
        })
    }

    /// Writes pretty JSON (addresses as lower-case hex).
    pub fn save(&self, path: &Path) -> Result<(), DeploymentFileError> {
        let text =
            serde_json::to_string_pretty(self).map_err(|source| DeploymentFileError::Json {
                path: path.to_owned(),
                source,
            })?;
        std::fs::write(path, text + "\n").map_err(|source| DeploymentFileError::Io {
            path: path.to_owned(),
            source,
        })
    }
}

/// Registry constructor parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployParams {
    /// Stake pulled from each provider at registration, in token base units.
    pub minimum_stake: U256,
    /// Seconds between `deregister` and `withdrawStake`.
    pub unbonding_period_secs: u64,
    /// Share of its stake, in basis points (at most 5000), a provider loses to the tenant for
    /// each lease it does not confirm within the order's delivery window.
    #[serde(default = "default_delivery_slash_bps")]
    pub delivery_slash_bps: u16,
    /// Part of its stake a provider locks per bid (at most `minimum_stake`), forfeited to the
    /// tenant when the bid is withdrawn or passed over as ineligible at match time.
    #[serde(default = "default_bid_bond")]
    pub bid_bond: U256,
}

fn default_delivery_slash_bps() -> u16 {
    1_000
}

/// 1 tUSD: 1% of the default minimum stake.
fn default_bid_bond() -> U256 {
    U256::from(1_000_000u64)
}

impl Default for DeployParams {
    fn default() -> Self {
        Self {
            // 100 tUSD (6 decimals)
            minimum_stake: U256::from(100_000_000u64),
            unbonding_period_secs: 60,
            delivery_slash_bps: default_delivery_slash_bps(),
            bid_bond: default_bid_bond(),
        }
    }
}

/// The most one `TestToken.faucet` call may mint (`FAUCET_CAP`: 1,000,000 tokens).
pub const FAUCET_CAP: u64 = 1_000_000_000_000;

/// The part of a gas estimate added on top of it: a quarter, at least [`GAS_MARGIN_FLOOR`].
pub const GAS_MARGIN_PERCENT: u64 = 25;

/// The smallest margin added to an estimate: enough for a token transfer to an account that
/// held none (a fresh storage slot, 22.1k) plus the call around it. An estimate is taken
/// against the current block; the transaction runs in a later one, where e.g. `closeLease`
/// has accrued something to pay and makes a transfer the estimate did not include.
pub const GAS_MARGIN_FLOOR: u64 = 40_000;

/// The gas limit sent for a transaction whose estimate is `estimate`.
pub fn gas_limit_with_margin(estimate: u64) -> u64 {
    let margin = (estimate / 100)
        .saturating_mul(GAS_MARGIN_PERCENT)
        .max(GAS_MARGIN_FLOOR);
    estimate.saturating_add(margin)
}

/// Sends a transaction built by a generated binding from `from` and waits for a successful
/// receipt. Every Leasehold transaction goes through here: the gas limit is the node's
/// estimate plus [`gas_limit_with_margin`]; a revert at estimation becomes
/// [`ClientError::Reverted`], and a transaction mined but failed is replayed at its block
/// to decode why ([`ClientError::TxFailed`]).
pub(crate) async fn send_from<P, D>(
    call: &'static str,
    from: Address,
    builder: alloy::contract::CallBuilder<P, D>,
) -> Result<TransactionReceipt, ClientError>
where
    P: Provider,
    D: alloy::contract::CallDecoder,
{
    let (builder, gas_limit) = estimated(call, from, builder).await?;
    let pending = builder
        .send()
        .await
        .map_err(|e| ClientError::from_contract(call, e))?;
    let receipt = pending
        .with_timeout(Some(RECEIPT_TIMEOUT))
        .get_receipt()
        .await
        .map_err(|source| ClientError::Pending {
            call,
            source: Box::new(source),
        })?;
    succeeded(call, &builder, receipt, gas_limit).await
}

/// `builder` from `from` with its gas limit set to the node's estimate plus
/// [`gas_limit_with_margin`]; a revert at estimation is [`ClientError::Reverted`].
pub(crate) async fn estimated<P, D>(
    call: &'static str,
    from: Address,
    builder: alloy::contract::CallBuilder<P, D>,
) -> Result<(alloy::contract::CallBuilder<P, D>, u64), ClientError>
where
    P: Provider,
    D: alloy::contract::CallDecoder,
{
    // Estimated on the pending block, as alloy's gas filler does: its timestamp is the node's
    // clock, where an idle instant-mining chain's latest block may be long past.
    let builder = builder.from(from).block(BlockId::pending());
    let estimate = builder
        .estimate_gas()
        .await
        .map_err(|e| ClientError::from_contract(call, e))?;
    let gas_limit = gas_limit_with_margin(estimate);
    Ok((builder.gas(gas_limit), gas_limit))
}

/// The receipt when it succeeded, else [`ClientError::TxFailed`] with the revert its replay
/// produces.
pub(crate) async fn succeeded<P, D>(
    call: &'static str,
    builder: &alloy::contract::CallBuilder<P, D>,
    receipt: TransactionReceipt,
    gas_limit: u64,
) -> Result<TransactionReceipt, ClientError>
where
    P: Provider,
    D: alloy::contract::CallDecoder,
{
    if !receipt.status() {
        // Replaying on the state after its block reproduces a revert caused by a transaction
        // mined before it (the usual race: the state changed after the estimate); a replay
        // that succeeds points at gas.
        let replay = match receipt.block_number {
            Some(block) => builder.call().block(block.into()).await,
            None => builder.call().await,
        };
        let reason = replay
            .err()
            .and_then(|error| error.as_revert_data())
            .map(|data| Box::new(crate::error::RevertReason::decode(&data)));
        return Err(ClientError::TxFailed {
            call,
            tx_hash: receipt.transaction_hash,
            reason,
            gas_used: receipt.gas_used,
            gas_limit,
        });
    }
    Ok(receipt)
}

/// How long to wait for a sent transaction to be mined.
pub(crate) const RECEIPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn created_address(
    call: &'static str,
    receipt: &TransactionReceipt,
) -> Result<Address, ClientError> {
    receipt.contract_address.ok_or(ClientError::MissingEvent {
        call,
        event: "contractAddress",
        tx_hash: receipt.transaction_hash,
    })
}

/// Deploys TestToken, ProviderRegistry and Marketplace from `deployer` (which the provider's
/// wallet must be able to sign for) and binds the registry to the marketplace.
pub async fn deploy_all<P: Provider>(
    provider: &P,
    deployer: Address,
    params: &DeployParams,
) -> Result<Deployment, ClientError> {
    let chain_id = provider
        .get_chain_id()
        .await
        .map_err(|e| ClientError::from_contract("eth_chainId", e.into()))?;

    let receipt = send_from(
        "deploy TestToken",
        deployer,
        TestToken::deploy_builder(provider),
    )
    .await?;
    let start_block = receipt.block_number.unwrap_or_default();
    let token = created_address("deploy TestToken", &receipt)?;

    let receipt = send_from(
        "deploy ProviderRegistry",
        deployer,
        ProviderRegistry::deploy_builder(
            provider,
            token,
            params.minimum_stake,
            params.unbonding_period_secs,
            params.delivery_slash_bps,
            params.bid_bond,
        ),
    )
    .await?;
    let registry = created_address("deploy ProviderRegistry", &receipt)?;

    let receipt = send_from(
        "deploy Marketplace",
        deployer,
        Marketplace::deploy_builder(provider, registry),
    )
    .await?;
    let marketplace = created_address("deploy Marketplace", &receipt)?;

    send_from(
        "initialize",
        deployer,
        ProviderRegistry::new(registry, provider).initialize(marketplace),
    )
    .await?;

    let deployment = Deployment {
        chain_id,
        token,
        registry,
        marketplace,
        start_block,
    };
    info!(?deployment, "contracts deployed");
    Ok(deployment)
}

/// Mints `amount` test tokens to each recipient through the faucet, split into calls of at
/// most [`FAUCET_CAP`].
pub async fn fund_with_faucet<P: Provider>(
    provider: &P,
    token: Address,
    from: Address,
    recipients: &[Address],
    amount: U256,
) -> Result<(), ClientError> {
    if amount.is_zero() {
        return Err(ClientError::InvalidInput {
            field: "amount",
            reason: "must be greater than zero".to_owned(),
        });
    }
    let faucet = TestToken::new(token, provider);
    let cap = U256::from(FAUCET_CAP);
    for &recipient in recipients {
        let mut remaining = amount;
        while !remaining.is_zero() {
            let chunk = remaining.min(cap);
            send_from("faucet", from, faucet.faucet(recipient, chunk)).await?;
            remaining = remaining.saturating_sub(chunk);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::address;

    #[test]
    fn deployment_file_round_trips_and_reports_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deployment.json");
        let deployment = Deployment {
            chain_id: 31_337,
            token: address!("0x5FbDB2315678afecb367f032d93F642f64180aa3"),
            registry: address!("0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"),
            marketplace: address!("0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"),
            start_block: 1,
        };
        deployment.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"marketplace\": \"0x9fe46736679d2d9a65f0992f2272de9f3c7fa6e0\""),
            "{text}"
        );
        assert_eq!(Deployment::load(&path).unwrap(), deployment);

        std::fs::write(&path, r#"{"chain_id": 1}"#).unwrap();
        let err = Deployment::load(&path).unwrap_err();
        assert!(err.to_string().contains("missing field `token`"), "{err}");
        let err = Deployment::load(&dir.path().join("absent.json")).unwrap_err();
        assert!(matches!(err, DeploymentFileError::Io { .. }));
    }
}

#[cfg(test)]
mod gas_tests {
    use super::*;

    #[test]
    fn the_margin_is_a_quarter_with_a_floor() {
        assert_eq!(gas_limit_with_margin(80_000), 120_000, "floor");
        assert_eq!(gas_limit_with_margin(1_000_000), 1_250_000, "a quarter");
        assert_eq!(gas_limit_with_margin(u64::MAX), u64::MAX, "saturates");
    }
}
