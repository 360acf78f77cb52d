//! A fresh anvil per test with the contracts deployed, and helpers to act as its dev accounts.

use std::future::Future;
use std::ops::Deref;
use std::time::Duration;

use alloy::primitives::{Address, B256, U256, keccak256};
use leasehold_contracts::devnet::DevnetConfig;
use leasehold_contracts::{
    MarketplaceClient, NewOrder, OrderRequirements, OrderSpec, ProviderProfile, Resources,
};

/// Upper bound for any single test: nothing may hang.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// One test token (6 decimals).
pub const TOKEN: u64 = leasehold_contracts::devnet::ONE_TOKEN;

pub const DEPLOYER: usize = leasehold_contracts::devnet::DEPLOYER;
pub const TENANT: usize = 1;
pub const PROVIDER_A: usize = 2;
pub const PROVIDER_B: usize = 3;
pub const STRANGER: usize = 4;

/// Runs a test body with [`TEST_TIMEOUT`].
pub async fn within<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test exceeded its time limit")
}

/// The shared devnet (`leasehold_contracts::devnet`), failing the test on any error.
pub struct Devnet(leasehold_contracts::devnet::Devnet);

impl Deref for Devnet {
    type Target = leasehold_contracts::devnet::Devnet;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Devnet {
    /// Anvil on a free port, instant mining (`block_time: None`) or one block every N seconds,
    /// with the contracts deployed and accounts 0-4 funded with 100,000 tokens.
    pub async fn start(block_time: Option<u64>) -> Self {
        Self::start_with(DevnetConfig {
            block_time,
            ..DevnetConfig::default()
        })
        .await
    }

    /// As [`Devnet::start`], with any other setting of `config` (accounts 0-4 funded).
    pub async fn start_with(config: DevnetConfig) -> Self {
        let config = DevnetConfig {
            funded_accounts: 5,
            ..config
        };
        Self(
            leasehold_contracts::devnet::Devnet::start_with(config)
                .await
                .unwrap_or_else(|error| panic!("devnet did not start: {error}")),
        )
    }

    pub fn client(&self, index: usize) -> MarketplaceClient {
        self.0
            .client(index)
            .unwrap_or_else(|error| panic!("client {index}: {error}"))
    }

    pub async fn balance(&self, owner: Address) -> U256 {
        self.client(STRANGER)
            .token_balance(self.deployment.token, owner)
            .await
            .expect("balanceOf")
    }

    /// The next mined block (i.e. the next transaction, with instant mining) gets `timestamp`.
    pub async fn set_next_timestamp(&self, timestamp: u64) {
        self.0
            .set_next_timestamp(timestamp)
            .await
            .expect("anvil_setNextBlockTimestamp");
    }

    /// Moves chain time forward and mines a block so views see it.
    pub async fn warp(&self, seconds: u64) {
        self.0.warp(seconds).await.expect("warp");
    }

    /// Mines one block (at the timestamp set by [`Devnet::set_next_timestamp`], if any).
    pub async fn rpc_mine(&self) {
        self.0.mine().await.expect("evm_mine");
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
        gateway_cert_sha256: B256::repeat_byte(0xce),
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
            group_name: leasehold_contracts::group_name_key("dcloud"),
            resources: amount,
            gpu_count: 0,
            replicas: 1,
            leased_ips: 0,
            requirements: OrderRequirements {
                allowed_gpu_models: Vec::new(),
                required_attributes: vec![attribute("region=eu-west")],
                ..OrderRequirements::default()
            },
        },
        manifest_hash: keccak256(b"{\"services\":{}}"),
        max_price_per_hour: U256::from(max_price_per_hour),
        deposit: U256::from(deposit),
        bid_window_secs,
        delivery_window_secs: leasehold_contracts::DEFAULT_DELIVERY_WINDOW_SECS,
    }
}
