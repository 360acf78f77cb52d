//! The daemon's side of the chain: the signing key, the deployment named in the config,
//! the provider's on-chain profile, and one transaction lane.
//!
//! Every transaction of the provider's account goes through [`Chain`]'s
//! [`TxLane`], one at a time: nonces in order, EIP-1559 fees
//! within the config's caps, stuck transactions replaced and dropped ones re-broadcast. The
//! daemon's lane journals what it signs in the store, so a restart settles what was in
//! flight before it signs anything new (ARCHITECTURE.md, "Transaction lane").

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use leasehold_contracts::keystore::KeystoreError;
use leasehold_contracts::{
    BidInfo, ClientError, CloseReason, Deployment, FeePolicy, LaneStats, LeaseInfo,
    LeaseSettlement, MarketplaceClient, MemoryJournal, OrderInfo, OrderPosted, OrderRequirements,
    Owed, Payment, ProviderProfile, TxJournal, TxLane,
};
use leasehold_manifests::GpuModelKey;
use tokio::sync::Mutex;

use crate::config::{ChainConfig, Config, KeySource};
use crate::deployment::attribute_key;
use crate::hardware::Hardware;
use crate::registration::Capacity;

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

/// The signing key the config names: a Web3 Secret Storage keystore file decrypted with
/// the password in the named environment variable, or a raw key in the named variable.
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
        KeySource::Keystore { path, password_env } => {
            let password = std::env::var(&password_env).map_err(|_| {
                ChainSetupError::Key(format!(
                    "environment variable {password_env} (key.password_env, the password of keystore {}) is not set",
                    path.display()
                ))
            })?;
            decrypt_keystore(&path, &password)
        }
    }
}

/// Decrypts a keystore file ([`leasehold_contracts::keystore`]), pointing a wrong password
/// at the config key that supplies it.
pub fn decrypt_keystore(path: &Path, password: &str) -> Result<PrivateKeySigner, ChainSetupError> {
    leasehold_contracts::keystore::decrypt_keystore(path, password).map_err(|error| match error {
        KeystoreError::WrongPassword { .. } => {
            ChainSetupError::Key(format!("{error}; check key.password_env"))
        }
        other => ChainSetupError::Key(other.to_string()),
    })
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

/// What `provider register` announces for one host: the hardware's capacity, its GPUs
/// grouped by model key, the config's attributes, the gateway's public endpoint and the
/// fingerprint of the certificate it serves.
pub fn provider_profile(
    config: &Config,
    hardware: &Hardware,
    gateway_cert_sha256: B256,
) -> ProviderProfile {
    profile_with_capacity(
        config,
        &Capacity::of_hardware(hardware),
        gateway_cert_sha256,
    )
}

/// The registration of `capacity` with the config's attributes, the public endpoint and
/// the gateway certificate's fingerprint.
pub fn profile_with_capacity(
    config: &Config,
    capacity: &Capacity,
    gateway_cert_sha256: B256,
) -> ProviderProfile {
    ProviderProfile {
        endpoint: public_endpoint(config),
        gateway_cert_sha256,
        attributes: config
            .announced_attributes()
            .iter()
            .map(|text| attribute_key(text))
            .collect(),
        capacity: capacity.resources,
        gpus: capacity.gpu_capacity(),
    }
}

/// The strings the keys of a registration are hashed from: the config's attributes and the
/// capacity's GPU models, published with the registration (`publishNames`) so that tenants
/// see `nvidia/a100/80Gi/sxm` rather than its hash.
pub fn registration_names(config: &Config, capacity: &Capacity) -> Vec<String> {
    let mut names = config.announced_attributes();
    names.extend(capacity.gpu_model_names());
    names
}

/// The URL tenants reach the gateway at.
pub fn public_endpoint(config: &Config) -> String {
    config
        .gateway
        .public_endpoint
        .clone()
        .unwrap_or_else(|| format!("https://{}", config.gateway.listen))
}

/// How long a transaction may wait for a block before it is replaced, unless the config
/// says otherwise.
pub const DEFAULT_TX_STUCK_AFTER: Duration = Duration::from_secs(60);

/// The lane's fees and patience from the `[chain]` section.
pub fn fee_policy(chain: &ChainConfig) -> FeePolicy {
    FeePolicy {
        max_fee_per_gas: chain.max_fee_per_gas_gwei,
        max_priority_fee_per_gas: chain.max_priority_fee_gwei,
        cap_setting: "chain.max_fee_per_gas_gwei",
        stuck_after: chain
            .tx_stuck_after_secs
            .map_or(DEFAULT_TX_STUCK_AFTER, Duration::from_secs),
        ..FeePolicy::default()
    }
}

/// The provider's client plus the lane its transactions queue in.
#[derive(Debug)]
pub struct Chain {
    client: MarketplaceClient,
    /// Held across the transactions of one operation (an approval and the call it allows).
    lane: Mutex<()>,
    /// The registry's `minimumStake` and `bidBond` (immutable), once read.
    stake_terms: std::sync::OnceLock<(U256, U256)>,
}

impl Chain {
    /// Connects and checks the chain id against the config when it names one. What the lane
    /// signs is journaled in memory only: for one-shot commands (the daemon uses
    /// [`Chain::connect_journaled`]).
    pub async fn connect(
        config: &Config,
        signer: PrivateKeySigner,
        start_block: u64,
    ) -> Result<Self, ChainSetupError> {
        Self::connect_journaled(
            config,
            signer,
            start_block,
            Arc::new(MemoryJournal::default()),
        )
        .await
    }

    /// Connects with a lane that journals into `journal` (the daemon's store).
    pub async fn connect_journaled(
        config: &Config,
        signer: PrivateKeySigner,
        start_block: u64,
        journal: Arc<dyn TxJournal>,
    ) -> Result<Self, ChainSetupError> {
        use alloy::providers::Provider;
        let url = config.chain.rpc_endpoints();
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
        let lane = TxLane::new(
            provider.clone(),
            alloy::network::EthereumWallet::from(signer.clone()),
            actual,
            fee_policy(&config.chain),
            journal,
        );
        Ok(Self {
            client: MarketplaceClient::new(provider, signer.address(), deployment)
                .with_lane(Arc::new(lane)),
            lane: Mutex::new(()),
            stake_terms: std::sync::OnceLock::new(),
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

    fn tx_lane(&self) -> Result<&Arc<TxLane>, ClientError> {
        self.client.lane().ok_or(ClientError::InvalidInput {
            field: "lane",
            reason: "the provider's client has no transaction lane".into(),
        })
    }

    /// What the lane had to do (replacements, re-broadcasts, refusals), for `/metrics`.
    pub fn lane_stats(&self) -> Option<Arc<LaneStats>> {
        self.client.lane().map(|lane| lane.stats().clone())
    }

    /// The account's native balance in wei (what pays for gas).
    pub async fn balance(&self) -> Result<U256, ClientError> {
        self.tx_lane()?.balance().await
    }

    /// Settles what a previous run left in flight (waits for it to be mined, replacing or
    /// re-broadcasting it); returns how many nonces it settled.
    pub async fn recover_transactions(&self) -> Result<usize, ClientError> {
        let _turn = self.lane.lock().await;
        self.tx_lane()?.recover().await
    }

    pub async fn place_bid(
        &self,
        order_id: u64,
        price: U256,
        gpu_model: Option<&GpuModelKey>,
        requirements: &OrderRequirements,
    ) -> Result<u64, ClientError> {
        let _turn = self.lane.lock().await;
        let gpu_model = gpu_model.map(ToString::to_string);
        self.client
            .place_bid(order_id, price, gpu_model.as_deref(), requirements)
            .await
    }

    /// Changes the registration (the daemon's re-sync of a drifted cluster), publishing
    /// `names` (the strings of its keys) first; names already on chain cost nothing.
    pub async fn update_provider(
        &self,
        profile: &ProviderProfile,
        names: &[String],
    ) -> Result<(), ClientError> {
        let _turn = self.lane.lock().await;
        self.client.publish_names(names).await?;
        self.client.update_provider(profile).await
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

    /// Tells the chain the lease's workload runs: payment accrues from now on.
    pub async fn confirm_lease(&self, lease_id: u64) -> Result<(), ClientError> {
        let _turn = self.lane.lock().await;
        self.client.confirm_lease(lease_id).await
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

    pub async fn auto_accept_rule(
        &self,
        order_id: u64,
    ) -> Result<Option<leasehold_contracts::AutoAcceptRule>, ClientError> {
        self.client.auto_accept_rule(order_id).await
    }

    /// The order's first `signedBy` auditor that does not attest this provider (see
    /// [`MarketplaceClient::missing_audit`]); `None` when the audit holds or none is required.
    pub async fn missing_audit(
        &self,
        requirements: &OrderRequirements,
    ) -> Result<Option<Address>, ClientError> {
        self.client
            .missing_audit(self.address(), requirements)
            .await
    }

    /// `Some` when this provider's stake cannot back one more bid (see
    /// [`crate::bidder::stake_shortfall`]). The minimum and the bond are constructor
    /// constants, read once.
    pub async fn stake_shortfall(
        &self,
    ) -> Result<Option<crate::bidder::StakeShortfall>, ClientError> {
        let (minimum, bond) = match self.stake_terms.get() {
            Some(terms) => *terms,
            None => {
                let terms = (
                    self.client.minimum_stake().await?,
                    self.client.bid_bond().await?,
                );
                *self.stake_terms.get_or_init(|| terms)
            }
        };
        let info = self.client.provider_info(self.address()).await?;
        Ok(crate::bidder::stake_shortfall(&info, minimum, bond))
    }

    /// Resolves the bonds of this provider's bids `bid_ids` on the ended order `order_id`.
    pub async fn release_bonds(
        &self,
        order_id: u64,
        bid_ids: &[u64],
    ) -> Result<Vec<leasehold_contracts::ResolvedBond>, ClientError> {
        let _turn = self.lane.lock().await;
        self.client.release_bonds(order_id, bid_ids).await
    }

    /// This provider's bids on `order_id` whose bonds are still locked.
    pub async fn my_locked_bonds(&self, order_id: u64) -> Result<Vec<u64>, ClientError> {
        let me = self.address();
        Ok(self
            .client
            .locked_bonds(order_id)
            .await?
            .into_iter()
            .filter(|bond| bond.provider == me)
            .map(|bond| bond.bid_id)
            .collect())
    }

    /// Whether `order` is past its `expiresAt` by the chain's clock. Expiry is lazy on chain:
    /// such an order still reads `Open`, but no bid on it can win any more.
    pub async fn order_expired(&self, order: &OrderInfo) -> Result<bool, ClientError> {
        Ok(order.expires_at <= self.now().await?)
    }

    /// The latest block's timestamp: the clock the contract judges expiry by (a devnet's may
    /// run ahead of the host's).
    pub async fn now(&self) -> Result<u64, ClientError> {
        use alloy::providers::Provider;
        let block = self
            .client
            .provider()
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .map_err(|e| ClientError::from_contract("eth_getBlockByNumber", e.into()))?;
        Ok(block.map_or(0, |block| block.header.timestamp))
    }

    pub async fn bids(&self, order_id: u64) -> Result<Vec<BidInfo>, ClientError> {
        self.client.bids(order_id).await
    }

    pub async fn lease(&self, lease_id: u64) -> Result<LeaseInfo, ClientError> {
        self.client.lease(lease_id).await
    }

    /// The lease, or `None` when the chain has none with this id (never created, or its
    /// creation was reorged away).
    pub async fn find_lease(&self, lease_id: u64) -> Result<Option<LeaseInfo>, ClientError> {
        match self.client.lease(lease_id).await {
            Ok(lease) => Ok(Some(lease)),
            Err(error) if error.revert_name() == Some("LeaseNotFound") => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub async fn owed(&self, lease_id: u64) -> Result<Owed, ClientError> {
        self.client.owed(lease_id).await
    }

    pub async fn is_insolvent(&self, lease_id: u64) -> Result<bool, ClientError> {
        self.client.is_insolvent(lease_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "correct horse battery staple";

    fn keystore_of(signer: &PrivateKeySigner, dir: &Path) -> std::path::PathBuf {
        let mut rng = rand08::thread_rng();
        PrivateKeySigner::encrypt_keystore(
            dir,
            &mut rng,
            signer.to_bytes(),
            PASSWORD,
            Some("provider.json"),
        )
        .expect("keystore written");
        dir.join("provider.json")
    }

    #[test]
    fn keystore_decrypts_to_the_key_it_was_made_from_and_refuses_a_wrong_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = PrivateKeySigner::random();
        let path = keystore_of(&signer, dir.path());

        let loaded = decrypt_keystore(&path, PASSWORD).expect("right password decrypts");
        assert_eq!(loaded.address(), signer.address());

        let wrong = "not the password";
        let message = decrypt_keystore(&path, wrong)
            .expect_err("wrong password refused")
            .to_string();
        assert!(message.contains("wrong password"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(!message.contains(wrong), "the password leaked: {message}");
    }

    #[test]
    fn missing_or_malformed_keystore_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("absent.json");
        let message = decrypt_keystore(&missing, PASSWORD)
            .expect_err("missing file")
            .to_string();
        assert!(message.contains("absent.json"), "{message}");
        assert!(message.contains("not found"), "{message}");

        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, "{\"not\": \"a keystore\"}").expect("write");
        let message = decrypt_keystore(&garbage, PASSWORD)
            .expect_err("not a keystore")
            .to_string();
        assert!(message.contains("garbage.json"), "{message}");
        assert!(message.contains("Web3 Secret Storage"), "{message}");

        let message = decrypt_keystore(dir.path(), PASSWORD)
            .expect_err("a directory")
            .to_string();
        assert!(message.contains("is not a file"), "{message}");
    }

    #[test]
    fn a_keystore_config_without_its_password_variable_names_the_variable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = keystore_of(&PrivateKeySigner::random(), dir.path());
        let overrides = crate::hardware::HardwareOverrides {
            cpu_millis: Some(1_000),
            memory_mib: Some(1_024),
            storage_mib: Some(1_024),
            gpus: Vec::new(),
        };
        let hardware = Hardware::detect(dir.path(), &overrides).expect("hardware");
        let mut config = Config::default_for(&hardware, dir.path().to_path_buf());
        config.key.private_key_env = None;
        config.key.keystore = Some(path);
        config.key.password_env = Some("LEASEHOLD_TEST_PASSWORD_THAT_IS_NEVER_SET".into());
        let message = load_signer(&config)
            .expect_err("no password variable")
            .to_string();
        assert!(
            message.contains("LEASEHOLD_TEST_PASSWORD_THAT_IS_NEVER_SET"),
            "{message}"
        );
        assert!(message.contains("provider.json"), "{message}");
    }
}
