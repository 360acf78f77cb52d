//! Deploying the market to any EVM network (the `leasehold-deploy` binary's library side):
//! the chain-id check, an existing ERC-20 or the test token as the payment token, a deployment
//! that resumes where an interrupted one stopped, attaching to (verifying) an existing one, and
//! the files an explorer needs to verify the contracts.
//!
//! Resuming: the progress file records the plan (chain id, deployer, token, parameters) and,
//! after each mined step, its result. Before a contract creation is sent, the nonce it uses and
//! the current block are recorded too: a creation whose receipt never reached the file (the
//! process was killed while waiting) is found at its CREATE address (deployer + nonce) instead
//! of being deployed a second time.

use std::path::{Path, PathBuf};

use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::Provider;
use alloy::sol_types::SolConstructor as _;
use serde::{Deserialize, Serialize};

use crate::bindings::{Marketplace, ProviderRegistry, TestToken};
use crate::deploy::{DeployParams, Deployment, send_from};
use crate::error::ClientError;

/// Chain ids of local development nodes (anvil, hardhat, ganache): the only chains where a raw
/// private key and the test token are accepted.
pub const DEV_CHAIN_IDS: [u64; 2] = [31_337, 1_337];

/// The compiler the committed artifacts were built with (`SOLC_VERSION` in
/// `scripts/versions.env`), as explorers name it.
pub const SOLC_LONG_VERSION: &str = "0.8.28+commit.7893614a";

/// The solc standard-JSON input of the three contracts (`scripts/contracts build` writes it;
/// `scripts/contracts check` and a test check it still compiles to the committed bytecode).
pub const STANDARD_JSON_INPUT: &str = include_str!("../artifacts/standard-json-input.json");

/// `ProviderRegistry.MAX_UNBONDING_PERIOD` (365 days).
pub const MAX_UNBONDING_PERIOD_SECS: u64 = 365 * 86_400;

/// `ProviderRegistry.MAX_DELIVERY_SLASH_BPS` (50%).
pub const MAX_DELIVERY_SLASH_BPS: u16 = 5_000;

/// Whether `chain_id` is a local development chain (see [`DEV_CHAIN_IDS`]).
pub fn is_dev_chain(chain_id: u64) -> bool {
    DEV_CHAIN_IDS.contains(&chain_id)
}

/// What went wrong deploying or attaching.
#[derive(Debug, thiserror::Error)]
pub enum NetworkDeployError {
    #[error("the node reports chain id {actual} but --chain-id is {expected}")]
    ChainIdMismatch { expected: u64, actual: u64 },
    #[error("the deployment is for chain id {recorded} but the node reports {actual}")]
    DeploymentOnOtherChain { recorded: u64, actual: u64 },
    #[error("{what} {address} has no code on chain {chain_id}")]
    NoCode {
        what: String,
        address: Address,
        chain_id: u64,
    },
    #[error("--token {address} is not an ERC-20 with decimals() and symbol(): {reason}")]
    NotAToken { address: Address, reason: String },
    #[error(
        "progress file {} belongs to another deployment ({}); use the same arguments to resume, \
         or another --state file for a new deployment",
        path.display(), differences.join("; ")
    )]
    PlanMismatch {
        path: PathBuf,
        differences: Vec<String>,
    },
    #[error("progress file {}: {reason}", path.display())]
    StateFile { path: PathBuf, reason: String },
    #[error("wiring: {0}")]
    Wiring(String),
    #[error("{call}: {reason}")]
    Rpc { call: &'static str, reason: String },
    #[error(transparent)]
    Client(#[from] ClientError),
}

fn rpc(call: &'static str) -> impl FnOnce(alloy::transports::TransportError) -> NetworkDeployError {
    move |error| NetworkDeployError::Rpc {
        call,
        reason: error.to_string(),
    }
}

fn view(call: &'static str) -> impl FnOnce(alloy::contract::Error) -> NetworkDeployError {
    move |error| NetworkDeployError::Client(ClientError::from_contract(call, error))
}

/// Fails unless the node's chain id is `expected`.
pub async fn check_chain_id<P: Provider>(
    provider: &P,
    expected: u64,
) -> Result<u64, NetworkDeployError> {
    let actual = provider.get_chain_id().await.map_err(rpc("eth_chainId"))?;
    if actual == expected {
        Ok(actual)
    } else {
        Err(NetworkDeployError::ChainIdMismatch { expected, actual })
    }
}

async fn require_code<P: Provider>(
    provider: &P,
    what: &str,
    address: Address,
    chain_id: u64,
) -> Result<(), NetworkDeployError> {
    let code = provider
        .get_code_at(address)
        .await
        .map_err(rpc("eth_getCode"))?;
    if code.is_empty() {
        Err(NetworkDeployError::NoCode {
            what: what.to_owned(),
            address,
            chain_id,
        })
    } else {
        Ok(())
    }
}

/// An ERC-20's display metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenMetadata {
    pub symbol: String,
    pub decimals: u8,
}

/// Reads `decimals()` and `symbol()` of the token at `address`, refusing an address without
/// code (an EOA or a typo: a call to it would "succeed" with empty data).
pub async fn token_metadata<P: Provider>(
    provider: &P,
    address: Address,
    chain_id: u64,
) -> Result<TokenMetadata, NetworkDeployError> {
    require_code(provider, "--token", address, chain_id).await?;
    // TestToken's ABI includes the ERC-20 metadata functions every token shares.
    let token = TestToken::new(address, provider);
    let not_a_token = |error: alloy::contract::Error| NetworkDeployError::NotAToken {
        address,
        reason: error.to_string(),
    };
    let decimals = token.decimals().call().await.map_err(not_a_token)?;
    let symbol = token.symbol().call().await.map_err(not_a_token)?;
    Ok(TokenMetadata { symbol, decimals })
}

/// The test token's metadata (fixed in `TestToken.sol`).
pub fn test_token_metadata() -> TokenMetadata {
    TokenMetadata {
        symbol: "tUSD".to_owned(),
        decimals: 6,
    }
}

/// A decimal amount of whole tokens (`100`, `0.5`) in base units of a token with `decimals`.
/// The error says why, without naming the flag (the caller does).
pub fn parse_token_amount(text: &str, decimals: u8) -> Result<U256, String> {
    let text = text.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |part: &str| part.chars().all(|c| c.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !digits(whole) || !digits(fraction) {
        return Err(format!(
            "`{text}` is not a decimal amount of tokens (e.g. 100 or 2.5)"
        ));
    }
    if fraction.len() > usize::from(decimals) {
        return Err(format!(
            "`{text}` has more than the token's {decimals} decimal places"
        ));
    }
    let scale = U256::from(10u8)
        .checked_pow(U256::from(decimals))
        .ok_or_else(|| format!("{decimals} decimals do not fit in 256 bits"))?;
    let parse = |part: &str| -> Result<U256, String> {
        if part.is_empty() {
            Ok(U256::ZERO)
        } else {
            U256::from_str_radix(part, 10).map_err(|e| format!("`{text}`: {e}"))
        }
    };
    let fraction_scale = U256::from(10u8)
        .checked_pow(U256::from(
            usize::from(decimals).saturating_sub(fraction.len()),
        ))
        .ok_or_else(|| format!("`{text}` is too large"))?;
    parse(whole)?
        .checked_mul(scale)
        .and_then(|base| {
            parse(fraction)
                .ok()?
                .checked_mul(fraction_scale)
                .and_then(|f| base.checked_add(f))
        })
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Base units as a decimal amount of whole tokens (`100000000`, 6 → `100`; `1500000` → `1.5`).
pub fn format_token_amount(amount: U256, decimals: u8) -> String {
    let digits = amount.to_string();
    let decimals = usize::from(decimals);
    if decimals == 0 {
        return digits;
    }
    let padded = format!("{digits:0>width$}", width = decimals + 1);
    let (whole, fraction) = padded.split_at(padded.len() - decimals);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        whole.to_owned()
    } else {
        format!("{whole}.{fraction}")
    }
}

/// The payment token of a new deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentToken {
    /// An ERC-20 already on the chain (e.g. a stablecoin).
    Existing(Address),
    /// A fresh `TestToken` with a faucet (development chains only).
    Test,
}

/// Everything that decides what a deployment is. A progress file resumes only the same plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployPlan {
    pub chain_id: u64,
    pub deployer: Address,
    pub token: PaymentToken,
    pub params: DeployParams,
}

impl DeployPlan {
    /// What differs between `self` (recorded) and `other` (asked for), field by field.
    fn differences(&self, other: &Self) -> Vec<String> {
        let mut out = Vec::new();
        let mut compare = |name: &str, recorded: String, asked: String| {
            if recorded != asked {
                out.push(format!("{name}: recorded {recorded}, asked {asked}"));
            }
        };
        compare(
            "chain id",
            self.chain_id.to_string(),
            other.chain_id.to_string(),
        );
        compare(
            "deployer",
            self.deployer.to_string(),
            other.deployer.to_string(),
        );
        compare(
            "token",
            format!("{:?}", self.token),
            format!("{:?}", other.token),
        );
        let (a, b) = (&self.params, &other.params);
        compare(
            "minimum stake",
            a.minimum_stake.to_string(),
            b.minimum_stake.to_string(),
        );
        compare(
            "unbonding period",
            a.unbonding_period_secs.to_string(),
            b.unbonding_period_secs.to_string(),
        );
        compare(
            "delivery slash bps",
            a.delivery_slash_bps.to_string(),
            b.delivery_slash_bps.to_string(),
        );
        compare("bid bond", a.bid_bond.to_string(), b.bid_bond.to_string());
        out
    }
}

/// One step of a deployment, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployStep {
    Token,
    Registry,
    Marketplace,
    Wiring,
}

impl DeployStep {
    pub fn name(self) -> &'static str {
        match self {
            DeployStep::Token => "TestToken",
            DeployStep::Registry => "ProviderRegistry",
            DeployStep::Marketplace => "Marketplace",
            DeployStep::Wiring => "ProviderRegistry.initialize(marketplace)",
        }
    }
}

/// A contract the deployment created: where, and the block it was mined in (or, when it was
/// recovered from its CREATE address, a block at or before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    pub address: Address,
    pub block: u64,
}

/// A creation sent but not yet recorded as mined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub step: DeployStep,
    pub nonce: u64,
    /// The head when it was sent: its block is at or after this one.
    pub not_before_block: u64,
}

/// The progress file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployProgress {
    pub plan: DeployPlan,
    pub token: Option<Created>,
    pub registry: Option<Created>,
    pub marketplace: Option<Created>,
    pub wired: bool,
    pub in_flight: Option<InFlight>,
}

impl DeployProgress {
    fn new(plan: DeployPlan) -> Self {
        Self {
            plan,
            token: None,
            registry: None,
            marketplace: None,
            wired: false,
            in_flight: None,
        }
    }

    fn slot(&mut self, step: DeployStep) -> &mut Option<Created> {
        match step {
            DeployStep::Token => &mut self.token,
            DeployStep::Registry => &mut self.registry,
            DeployStep::Marketplace | DeployStep::Wiring => &mut self.marketplace,
        }
    }

    /// Reads a progress file; `None` when there is none yet.
    pub fn load(path: &Path) -> Result<Option<Self>, NetworkDeployError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(state_error(path, error)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|error| state_error(path, error))
    }

    /// Writes the file through a temporary one and a rename, so a kill never leaves half a file.
    pub fn save(&self, path: &Path) -> Result<(), NetworkDeployError> {
        let text = serde_json::to_string_pretty(self).map_err(|error| state_error(path, error))?;
        let partial = path.with_extension("partial");
        std::fs::write(&partial, text + "\n").map_err(|error| state_error(path, error))?;
        std::fs::rename(&partial, path).map_err(|error| state_error(path, error))
    }
}

fn state_error(path: &Path, error: impl std::fmt::Display) -> NetworkDeployError {
    NetworkDeployError::StateFile {
        path: path.to_owned(),
        reason: error.to_string(),
    }
}

/// What happened to one step, for progress lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum StepOutcome {
    /// Sent and mined now.
    Done { address: Address, block: u64 },
    /// Recorded by an earlier run; code verified at the address.
    AlreadyDone { address: Address },
    /// Sent by an earlier run that stopped before recording it; found at its CREATE address.
    Recovered { address: Address },
    /// Not part of this plan's work (an existing token is used as it is).
    Existing { address: Address },
}

/// Deploys `plan` as `deployer` through `provider` (which signs for it), resuming the
/// progress in `state_path`; `progress` hears about each step as it completes.
pub async fn deploy_resumable<P: Provider>(
    provider: &P,
    plan: &DeployPlan,
    state_path: &Path,
    mut progress: impl FnMut(DeployStep, StepOutcome),
) -> Result<Deployment, NetworkDeployError> {
    let chain_id = check_chain_id(provider, plan.chain_id).await?;
    let mut state = match DeployProgress::load(state_path)? {
        Some(state) if state.plan == *plan => state,
        Some(state) => {
            return Err(NetworkDeployError::PlanMismatch {
                path: state_path.to_owned(),
                differences: state.plan.differences(plan),
            });
        }
        None => {
            let state = DeployProgress::new(*plan);
            state.save(state_path)?;
            state
        }
    };

    let token = match plan.token {
        PaymentToken::Existing(address) => {
            require_code(provider, "--token", address, chain_id).await?;
            progress(DeployStep::Token, StepOutcome::Existing { address });
            address
        }
        PaymentToken::Test => {
            create_step(
                provider,
                &mut state,
                state_path,
                DeployStep::Token,
                &mut progress,
                TestToken::deploy_builder,
            )
            .await?
            .address
        }
    };
    let params = plan.params;
    let registry = create_step(
        provider,
        &mut state,
        state_path,
        DeployStep::Registry,
        &mut progress,
        |p| {
            ProviderRegistry::deploy_builder(
                p,
                token,
                params.minimum_stake,
                params.unbonding_period_secs,
                params.delivery_slash_bps,
                params.bid_bond,
            )
        },
    )
    .await?;
    let marketplace = create_step(
        provider,
        &mut state,
        state_path,
        DeployStep::Marketplace,
        &mut progress,
        |p| Marketplace::deploy_builder(p, registry.address),
    )
    .await?
    .address;

    let bound = ProviderRegistry::new(registry.address, provider)
        .marketplace()
        .call()
        .await
        .map_err(view("marketplace"))?;
    if bound == marketplace {
        progress(
            DeployStep::Wiring,
            StepOutcome::AlreadyDone {
                address: registry.address,
            },
        );
    } else if bound.is_zero() {
        let receipt = send_from(
            "initialize",
            plan.deployer,
            ProviderRegistry::new(registry.address, provider).initialize(marketplace),
        )
        .await?;
        progress(
            DeployStep::Wiring,
            StepOutcome::Done {
                address: registry.address,
                block: receipt.block_number.unwrap_or_default(),
            },
        );
    } else {
        return Err(NetworkDeployError::Wiring(format!(
            "registry {} is bound to marketplace {bound}, not {marketplace}",
            registry.address
        )));
    }
    state.wired = true;
    state.save(state_path)?;

    let start_block = state
        .token
        .map_or(registry.block, |token| token.block.min(registry.block));
    Ok(Deployment {
        chain_id,
        token,
        registry: registry.address,
        marketplace,
        start_block,
    })
}

/// One contract creation: verified when recorded, recovered when sent but not recorded,
/// otherwise sent with a recorded nonce.
async fn create_step<'p, P: Provider, D: alloy::contract::CallDecoder>(
    provider: &'p P,
    state: &mut DeployProgress,
    state_path: &Path,
    step: DeployStep,
    progress: &mut impl FnMut(DeployStep, StepOutcome),
    builder: impl FnOnce(&'p P) -> alloy::contract::CallBuilder<&'p P, D>,
) -> Result<Created, NetworkDeployError> {
    let chain_id = state.plan.chain_id;
    let deployer = state.plan.deployer;
    if let Some(created) = *state.slot(step) {
        require_code(
            provider,
            &format!("recorded {}", step.name()),
            created.address,
            chain_id,
        )
        .await?;
        progress(
            step,
            StepOutcome::AlreadyDone {
                address: created.address,
            },
        );
        return Ok(created);
    }
    let mined_nonce = provider
        .get_transaction_count(deployer)
        .await
        .map_err(rpc("eth_getTransactionCount"))?;
    if let Some(in_flight) = state.in_flight.filter(|f| f.step == step)
        && in_flight.nonce < mined_nonce
    {
        let address = deployer.create(in_flight.nonce);
        let code = provider
            .get_code_at(address)
            .await
            .map_err(rpc("eth_getCode"))?;
        if !code.is_empty() {
            let created = Created {
                address,
                block: in_flight.not_before_block,
            };
            *state.slot(step) = Some(created);
            state.in_flight = None;
            state.save(state_path)?;
            progress(step, StepOutcome::Recovered { address });
            return Ok(created);
        }
    }
    let nonce = provider
        .get_transaction_count(deployer)
        .pending()
        .await
        .map_err(rpc("eth_getTransactionCount"))?;
    let head = provider
        .get_block_number()
        .await
        .map_err(rpc("eth_blockNumber"))?;
    state.in_flight = Some(InFlight {
        step,
        nonce,
        not_before_block: head,
    });
    state.save(state_path)?;
    let receipt = send_from(step.name(), deployer, builder(provider).nonce(nonce)).await?;
    let address = receipt.contract_address.ok_or(ClientError::MissingEvent {
        call: step.name(),
        event: "contractAddress",
        tx_hash: receipt.transaction_hash,
    })?;
    let created = Created {
        address,
        block: receipt.block_number.unwrap_or(head),
    };
    *state.slot(step) = Some(created);
    state.in_flight = None;
    state.save(state_path)?;
    progress(
        step,
        StepOutcome::Done {
            address,
            block: created.block,
        },
    );
    Ok(created)
}

/// A deployment as the chain says it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedMarket {
    pub deployment: Deployment,
    pub token: TokenMetadata,
    pub params: DeployParams,
}

/// Checks `deployment` against the chain: the node's chain id is the deployment's, the three
/// contracts have code and point at each other. Returns the parameters the registry holds.
pub async fn verify_deployment<P: Provider>(
    provider: &P,
    deployment: &Deployment,
) -> Result<VerifiedMarket, NetworkDeployError> {
    let chain_id = check_chain_id(provider, deployment.chain_id)
        .await
        .map_err(|error| match error {
            NetworkDeployError::ChainIdMismatch { expected, actual } => {
                NetworkDeployError::DeploymentOnOtherChain {
                    recorded: expected,
                    actual,
                }
            }
            other => other,
        })?;
    require_code(provider, "marketplace", deployment.marketplace, chain_id).await?;
    require_code(provider, "registry", deployment.registry, chain_id).await?;
    let token = token_metadata(provider, deployment.token, chain_id)
        .await
        .map_err(|error| match error {
            NetworkDeployError::NoCode {
                address, chain_id, ..
            } => NetworkDeployError::NoCode {
                what: "token".to_owned(),
                address,
                chain_id,
            },
            other => other,
        })?;
    let registry = ProviderRegistry::new(deployment.registry, provider);
    let market = Marketplace::new(deployment.marketplace, provider);
    let wiring = |what: &str, found: Address, expected: Address| {
        if found == expected {
            Ok(())
        } else {
            Err(NetworkDeployError::Wiring(format!(
                "{what} is {found}, expected {expected}"
            )))
        }
    };
    let market_registry = market.registry().call().await.map_err(view("registry"))?;
    wiring(
        "marketplace.registry()",
        market_registry,
        deployment.registry,
    )?;
    let bound = registry
        .marketplace()
        .call()
        .await
        .map_err(view("marketplace"))?;
    wiring("registry.marketplace()", bound, deployment.marketplace)?;
    let stake_token = registry
        .stakeToken()
        .call()
        .await
        .map_err(view("stakeToken"))?;
    wiring("registry.stakeToken()", stake_token, deployment.token)?;
    let params = DeployParams {
        minimum_stake: registry
            .minimumStake()
            .call()
            .await
            .map_err(view("minimumStake"))?,
        unbonding_period_secs: registry
            .unbondingPeriod()
            .call()
            .await
            .map_err(view("unbondingPeriod"))?,
        delivery_slash_bps: registry
            .deliverySlashBps()
            .call()
            .await
            .map_err(view("deliverySlashBps"))?,
        bid_bond: registry.bidBond().call().await.map_err(view("bidBond"))?,
    };
    Ok(VerifiedMarket {
        deployment: *deployment,
        token,
        params,
    })
}

/// What an explorer asks for to verify one contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerificationEntry {
    /// `src/Marketplace.sol:Marketplace`: the source unit and contract in the standard-JSON input.
    pub contract: String,
    pub address: Address,
    pub compiler: &'static str,
    /// ABI-encoded constructor arguments.
    pub constructor_args: Bytes,
}

/// The verification entries of the contracts this deployment created (an existing token is
/// not ours to verify).
pub fn verification_entries(market: &VerifiedMarket, test_token: bool) -> Vec<VerificationEntry> {
    let d = &market.deployment;
    let p = &market.params;
    let entry = |name: &str, address: Address, args: Vec<u8>| VerificationEntry {
        contract: format!("src/{name}.sol:{name}"),
        address,
        compiler: SOLC_LONG_VERSION,
        constructor_args: args.into(),
    };
    let mut out = Vec::new();
    if test_token {
        out.push(entry("TestToken", d.token, Vec::new()));
    }
    out.push(entry(
        "ProviderRegistry",
        d.registry,
        ProviderRegistry::constructorCall {
            stakeToken_: d.token,
            minimumStake_: p.minimum_stake,
            unbondingPeriod_: p.unbonding_period_secs,
            deliverySlashBps_: p.delivery_slash_bps,
            bidBond_: p.bid_bond,
        }
        .abi_encode(),
    ));
    out.push(entry(
        "Marketplace",
        d.marketplace,
        Marketplace::constructorCall {
            registry_: d.registry,
        }
        .abi_encode(),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_amounts_scale_by_the_token_decimals() {
        assert_eq!(parse_token_amount("100", 6), Ok(U256::from(100_000_000u64)));
        assert_eq!(parse_token_amount("1.5", 6), Ok(U256::from(1_500_000u64)));
        assert_eq!(parse_token_amount("0.000001", 6), Ok(U256::from(1u64)));
        assert_eq!(parse_token_amount(".5", 2), Ok(U256::from(50u64)));
        assert_eq!(parse_token_amount("7", 0), Ok(U256::from(7u64)));
        let err = parse_token_amount("0.0000001", 6).unwrap_err();
        assert!(
            err.contains("more than the token's 6 decimal places"),
            "{err}"
        );
        for bad in ["", ".", "1e6", "-1", "1,5", "abc"] {
            let err = parse_token_amount(bad, 6).unwrap_err();
            assert!(err.contains("not a decimal amount"), "{bad}: {err}");
        }
        let huge = "9".repeat(80);
        assert!(
            parse_token_amount(&huge, 18)
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn token_amounts_format_back() {
        for (units, decimals, text) in [
            (100_000_000u64, 6, "100"),
            (1_500_000, 6, "1.5"),
            (1, 6, "0.000001"),
            (0, 6, "0"),
            (42, 0, "42"),
        ] {
            assert_eq!(format_token_amount(U256::from(units), decimals), text);
            assert_eq!(parse_token_amount(text, decimals), Ok(U256::from(units)));
        }
    }

    #[test]
    fn a_plan_names_what_differs() {
        let plan = DeployPlan {
            chain_id: 10,
            deployer: Address::repeat_byte(1),
            token: PaymentToken::Test,
            params: DeployParams::default(),
        };
        let mut other = plan;
        other.params.bid_bond = U256::from(5u8);
        other.chain_id = 11;
        let differences = plan.differences(&other);
        assert_eq!(differences.len(), 2, "{differences:?}");
        assert!(differences[0].starts_with("chain id: recorded 10, asked 11"));
        assert!(differences[1].starts_with("bid bond: recorded 1000000, asked 5"));
        assert!(plan.differences(&plan).is_empty());
    }

    #[test]
    fn the_standard_json_input_names_every_deployable_contract() {
        let input: serde_json::Value = serde_json::from_str(STANDARD_JSON_INPUT).unwrap();
        for name in ["Marketplace", "ProviderRegistry", "TestToken"] {
            let unit = &input["sources"][format!("src/{name}.sol")]["content"];
            assert!(
                unit.as_str()
                    .is_some_and(|s| s.contains(&format!("contract {name}"))),
                "{name} missing"
            );
        }
        assert_eq!(input["settings"]["evmVersion"], "cancun");
    }
}
