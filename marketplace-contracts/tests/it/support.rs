//! A fresh anvil per test with the contracts deployed, and helpers to act as its dev accounts.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use leasehold_contracts::{
    DeployParams, Deployment, MarketplaceClient, NewOrder, OrderRequirements, OrderSpec,
    ProviderProfile, Resources, deploy_all, fund_with_faucet, signing_provider,
};

/// Upper bound for any single test: nothing may hang.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// One test token (6 decimals).
pub const TOKEN: u64 = 1_000_000;

pub const DEPLOYER: usize = 0;
pub const TENANT: usize = 1;
pub const PROVIDER_A: usize = 2;
pub const PROVIDER_B: usize = 3;
pub const STRANGER: usize = 4;

pub fn anvil_bin() -> PathBuf {
    let path = std::env::var_os("ANVIL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/anvil"));
    assert!(
        path.exists(),
        "anvil not found at {} (set ANVIL_BIN, or run scripts/bootstrap to install it)",
        path.display()
    );
    path
}

/// Runs a test body with [`TEST_TIMEOUT`].
pub async fn within<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test exceeded its time limit")
}

pub struct Devnet {
    pub anvil: AnvilInstance,
    pub deployment: Deployment,
    pub params: DeployParams,
    /// Read-only and anvil-API access (no wallet).
    pub rpc: DynProvider,
}

impl Devnet {
    /// Anvil on a free port, instant mining (`block_time: None`) or one block every N seconds,
    /// with the contracts deployed and every dev account funded with 100,000 tokens.
    pub async fn start(block_time: Option<u64>) -> Self {
        let mut anvil = Anvil::at(anvil_bin());
        if let Some(seconds) = block_time {
            anvil = anvil.block_time(seconds);
        }
        let anvil = anvil.try_spawn().expect("anvil did not start");
        let rpc = ProviderBuilder::new()
            .connect_http(anvil.endpoint_url())
            .erased();
        let params = DeployParams::default();
        let deployer = Self::signer_of(&anvil, DEPLOYER);
        let deploying =
            signing_provider(&anvil.endpoint(), deployer.clone()).expect("signing provider");
        let deployment = deploy_all(&deploying, deployer.address(), &params)
            .await
            .expect("deploy_all failed");
        let accounts: Vec<Address> = anvil.addresses().iter().take(5).copied().collect();
        fund_with_faucet(
            &deploying,
            deployment.token,
            deployer.address(),
            &accounts,
            U256::from(100_000 * TOKEN),
        )
        .await
        .expect("faucet funding failed");
        Self {
            anvil,
            deployment,
            params,
            rpc,
        }
    }

    fn signer_of(anvil: &AnvilInstance, index: usize) -> PrivateKeySigner {
        PrivateKeySigner::from(anvil.keys()[index].clone())
    }

    pub fn client(&self, index: usize) -> MarketplaceClient {
        MarketplaceClient::connect_http(
            &self.anvil.endpoint(),
            Self::signer_of(&self.anvil, index),
            self.deployment,
        )
        .expect("client")
    }

    pub async fn balance(&self, owner: Address) -> U256 {
        self.client(STRANGER)
            .token_balance(self.deployment.token, owner)
            .await
            .expect("balanceOf")
    }

    /// The next mined block (i.e. the next transaction, with instant mining) gets `timestamp`.
    pub async fn set_next_timestamp(&self, timestamp: u64) {
        self.rpc
            .anvil_set_next_block_timestamp(timestamp)
            .await
            .expect("anvil_setNextBlockTimestamp");
    }

    /// Moves chain time forward and mines a block so views see it.
    pub async fn warp(&self, seconds: u64) {
        self.rpc
            .anvil_increase_time(seconds)
            .await
            .expect("evm_increaseTime");
        self.rpc.evm_mine(None).await.expect("evm_mine");
    }
}

pub fn attribute(text: &str) -> B256 {
    keccak256(text.as_bytes())
}

pub fn resources(cpu_milli: u64, memory_mib: u64, storage_mib: u64) -> Resources {
    Resources {
        cpu_milli,
        memory_mib,
        storage_mib,
    }
}

pub fn profile(endpoint: &str, capacity: Resources) -> ProviderProfile {
    ProviderProfile {
        endpoint: endpoint.to_owned(),
        attributes: vec![attribute("region=eu-west")],
        capacity,
        gpus: Vec::new(),
    }
}

/// A CPU-only order for `amount` resources requiring region=eu-west.
pub fn cpu_order(
    devnet: &Devnet,
    amount: Resources,
    max_price_per_hour: u64,
    deposit: u64,
    bid_window_secs: u64,
) -> NewOrder {
    NewOrder {
        token: devnet.deployment.token,
        spec: OrderSpec {
            resources: amount,
            gpu_count: 0,
            replicas: 1,
            requirements: OrderRequirements {
                allowed_gpu_models: Vec::new(),
                required_attributes: vec![attribute("region=eu-west")],
            },
        },
        manifest_hash: keccak256(b"{\"services\":{}}"),
        max_price_per_hour: U256::from(max_price_per_hour),
        deposit: U256::from(deposit),
        bid_window_secs,
    }
}

impl Devnet {
    /// Mines one block (at the timestamp set by [`Devnet::set_next_timestamp`], if any).
    pub async fn rpc_mine(&self) {
        self.rpc.evm_mine(None).await.expect("evm_mine");
    }
}
