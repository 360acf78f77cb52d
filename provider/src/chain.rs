//! The daemon's side of the chain: the signing key, the deployment named in the config,
//! the provider's on-chain profile, and one transaction lane.
//!
//! Every transaction of the provider's account goes through [`Chain`]'s lane, one at a
//! time: the client reads the nonce from the node's pending count, so two concurrent sends
//! would pick the same nonce and one would be dropped.

use std::collections::BTreeMap;
use std::str::FromStr;

use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use leasehold_contracts::{
    BidInfo, ClientError, CloseReason, Deployment, GpuCapacity, LeaseInfo, LeaseSettlement,
    MarketplaceClient, OrderInfo, OrderPosted, OrderRequirements, Owed, Payment, ProviderProfile,
    Resources,
};
use tokio::sync::Mutex;

use crate::config::{Config, KeySource};
use crate::deployment::{attribute_key, gpu_model_key};
use crate::hardware::Hardware;

/// Why the daemon cannot talk to the chain as configured.
#[derive(Debug, thiserror::Error)]
pub enum ChainSetupError {
    #[error("key: {0}")]
    Key(String),
    #[error("chain.{field}: {reason}")]
    Address { field: &'static str, reason: String },
    #[error("connecting to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: ClientError,
    },
    #[error("chain.chain_id is {configured} but the node at {url} reports {actual}")]
    ChainId {
        url: String,
        configured: u64,
        actual: u64,
    },
}

/// The signing key the config names. Keystore files need a keystore-enabled build; a raw
/// key is read from the named environment variable.
pub fn load_signer(config: &Config) -> Result<PrivateKeySigner, ChainSetupError> {
    let source = config
        .key_source()
        .map_err(|problems| ChainSetupError::Key(problems.to_string()))?;
    match source {
        KeySource::PrivateKeyEnv { variable } => {
            let text = std::env::var(&variable).map_err(|_| {
                ChainSetupError::Key(format!("environment variable {variable} is not set"))
            })?;
            PrivateKeySigner::from_str(text.trim()).map_err(|error| {
                ChainSetupError::Key(format!(
                    "environment variable {variable} is not a hex private key: {error}"
                ))
            })
        }
        KeySource::Keystore { path, .. } => Err(ChainSetupError::Key(format!(
            "keystore {} cannot be read by this build; set key.private_key_env instead",
            path.display()
        ))),
    }
}

fn parse_address(field: &'static str, text: &str) -> Result<Address, ChainSetupError> {
    Address::from_str(text).map_err(|error| ChainSetupError::Address {
        field,
        reason: format!("`{text}` is not an address: {error}"),
    })
}

/// The contracts the config names. `start_block` is where the follower begins when it has
/// no cursor yet.
pub fn deployment_from_config(
    config: &Config,
    chain_id: u64,
    start_block: u64,
) -> Result<Deployment, ChainSetupError> {
    Ok(Deployment {
        chain_id,
        token: parse_address("token", &config.chain.token)?,
        registry: parse_address("registry", &config.chain.registry)?,
        marketplace: parse_address("marketplace", &config.chain.marketplace)?,
        start_block,
    })
}

/// What `provider register` announces: the hardware's capacity, its GPUs grouped by
/// model key, the config's attributes and the gateway's public endpoint.
pub fn provider_profile(config: &Config, hardware: &Hardware) -> ProviderProfile {
    let mut gpus: BTreeMap<String, u32> = BTreeMap::new();
    for gpu in &hardware.gpus {
        let count = gpus.entry(gpu.model_key.clone()).or_insert(0);
        *count = count.saturating_add(1);
    }
    ProviderProfile {
        endpoint: public_endpoint(config),
        attributes: config
            .attributes
            .iter()
            .map(|text| attribute_key(text))
            .collect(),
        capacity: Resources {
            cpu_milli: hardware.cpu_millis,
            memory_mib: hardware.memory_mib,
            storage_mib: hardware.storage_mib,
        },
        gpus: gpus
            .into_iter()
            .map(|(model, count)| GpuCapacity {
                model_key: gpu_model_key(&model),
                count,
            })
            .collect(),
    }
}

/// The URL tenants reach the gateway at.
pub fn public_endpoint(config: &Config) -> String {
    config
        .gateway
        .public_endpoint
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.gateway.listen))
}

/// The provider's client plus the lane its transactions queue in.
#[derive(Debug)]
pub struct Chain {
    client: MarketplaceClient,
    lane: Mutex<()>,
}

impl Chain {
    /// Connects and checks the chain id against the config when it names one.
    pub async fn connect(
        config: &Config,
        signer: PrivateKeySigner,
        start_block: u64,
    ) -> Result<Self, ChainSetupError> {
        use alloy::providers::Provider;
        let url = config.chain.rpc_url.clone();
        let connect = |source| ChainSetupError::Connect {
            url: url.clone(),
            source,
        };
        let provider =
            leasehold_contracts::signing_provider(&url, signer.clone()).map_err(connect)?;
        let actual = provider
            .get_chain_id()
            .await
            .map_err(|e| connect(ClientError::from_contract("eth_chainId", e.into())))?;
        if let Some(configured) = config.chain.chain_id
            && configured != actual
        {
            return Err(ChainSetupError::ChainId {
                url,
                configured,
                actual,
            });
        }
        let deployment = deployment_from_config(config, actual, start_block)?;
        Ok(Self {
            client: MarketplaceClient::new(provider, signer.address(), deployment),
            lane: Mutex::new(()),
        })
    }

    pub fn address(&self) -> Address {
        self.client.sender()
    }

    pub fn client(&self) -> &MarketplaceClient {
        &self.client
    }

    pub fn deployment(&self) -> &Deployment {
        self.client.deployment()
    }

    pub async fn place_bid(
        &self,
        order_id: u64,
        price: U256,
        gpu_model: B256,
        requirements: &OrderRequirements,
    ) -> Result<u64, ClientError> {
        let _turn = self.lane.lock().await;
        self.client
            .place_bid(order_id, price, gpu_model, requirements)
            .await
    }

    pub async fn withdraw_bid(&self, order_id: u64, bid_id: u64) -> Result<(), ClientError> {
        let _turn = self.lane.lock().await;
        self.client.withdraw_bid(order_id, bid_id).await
    }

    pub async fn close_lease(
        &self,
        lease_id: u64,
        reason: CloseReason,
    ) -> Result<LeaseSettlement, ClientError> {
        let _turn = self.lane.lock().await;
        self.client.close_lease(lease_id, reason).await
    }

    pub async fn withdraw_payment(&self, lease_id: u64) -> Result<Payment, ClientError> {
        let _turn = self.lane.lock().await;
        self.client.withdraw_payment(lease_id).await
    }

    pub async fn order(&self, order_id: u64) -> Result<OrderInfo, ClientError> {
        self.client.order(order_id).await
    }

    pub async fn order_posted(&self, order_id: u64) -> Result<OrderPosted, ClientError> {
        self.client.order_posted(order_id).await
    }

    pub async fn bids(&self, order_id: u64) -> Result<Vec<BidInfo>, ClientError> {
        self.client.bids(order_id).await
    }

    pub async fn lease(&self, lease_id: u64) -> Result<LeaseInfo, ClientError> {
        self.client.lease(lease_id).await
    }

    pub async fn owed(&self, lease_id: u64) -> Result<Owed, ClientError> {
        self.client.owed(lease_id).await
    }

    pub async fn is_insolvent(&self, lease_id: u64) -> Result<bool, ClientError> {
        self.client.is_insolvent(lease_id).await
    }
}
