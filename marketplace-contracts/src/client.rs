//! Typed client over the Marketplace, ProviderRegistry and payment token for one account.

use std::sync::Arc;

use alloy::network::EthereumWallet;
use alloy::primitives::aliases::U88;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, Log, TransactionReceipt};
use alloy::signers::SignerSync as _;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolEvent, SolStruct as _};
use tracing::debug;

use crate::bindings::{Marketplace, ProviderRegistry, TestToken};
use crate::deploy::{Deployment, estimated, send_from, succeeded};
use crate::error::ClientError;
use crate::follower::RpcLogSource;
use crate::log_ranges::{DEFAULT_MAX_LOG_RANGE, logs_in_ranges};
use crate::names::{KeyNames, MAX_NAMES_PER_CALL, check_name};
use crate::order::chain_key;
use crate::transport::{RPC_REQUEST_TIMEOUT, parse_rpc_urls, rpc_client};
use crate::txlane::TxLane;
use crate::types::{
    Attestation, AutoAcceptRule, BidInfo, CloseReason, DELIVERY_WINDOW_SECS, GpuBid, GpuState,
    LeaseInfo, LeaseSettlement, LeaseStarted, LockedBond, MAX_BIDS, ManifestUpdate, NewOrder,
    OrderInfo, OrderPosted, OrderRequirements, OrderStatus, Owed, Payment, ProviderInfo,
    ProviderProfile, ProviderStatus, ResolvedBond, SkippedBid, UndeliveredClose, id_to_u64,
};

/// An HTTP provider that signs with `signer`, over one URL or a comma-separated list with
/// failover and rate-limit retries ([`crate::transport`]). Nonces are read from the node's
/// pending count for every transaction: alloy's default cached nonce manager would consume a
/// nonce when gas estimation fails on a revert and leave a gap that stalls every later
/// transaction.
pub fn signing_provider(
    rpc_url: &str,
    signer: PrivateKeySigner,
) -> Result<DynProvider, ClientError> {
    let urls = parse_rpc_urls("rpc_url", rpc_url)?;
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer))
        .connect_client(rpc_client(&urls, RPC_REQUEST_TIMEOUT)?)
        .erased())
}

/// Acts as one account (`sender`) against a [`Deployment`]. Every transaction waits for its
/// receipt; token approvals are sent only when the current allowance does not cover the amount.
#[derive(Debug, Clone)]
pub struct MarketplaceClient {
    provider: DynProvider,
    sender: Address,
    deployment: Deployment,
    market: Marketplace::MarketplaceInstance<DynProvider>,
    registry: ProviderRegistry::ProviderRegistryInstance<DynProvider>,
    /// When set, every transaction goes through it (nonces, capped fees, replacement,
    /// journal); else through the provider's own fillers.
    lane: Option<Arc<TxLane>>,
}

impl MarketplaceClient {
    /// `provider` must be able to sign for `sender` (e.g. built with a wallet holding its key).
    pub fn new(provider: DynProvider, sender: Address, deployment: Deployment) -> Self {
        let market = Marketplace::new(deployment.marketplace, provider.clone());
        let registry = ProviderRegistry::new(deployment.registry, provider.clone());
        Self {
            provider,
            sender,
            deployment,
            market,
            registry,
            lane: None,
        }
    }

    /// Sends every transaction through `lane`, which must sign for the same account.
    pub fn with_lane(mut self, lane: Arc<TxLane>) -> Self {
        self.lane = Some(lane);
        self
    }

    pub fn lane(&self) -> Option<&Arc<TxLane>> {
        self.lane.as_ref()
    }

    /// Connects over HTTP and signs with `signer` (see [`signing_provider`]).
    pub fn connect_http(
        rpc_url: &str,
        signer: PrivateKeySigner,
        deployment: Deployment,
    ) -> Result<Self, ClientError> {
        let sender = signer.address();
        let provider = signing_provider(rpc_url, signer)?;
        Ok(Self::new(provider, sender, deployment))
    }

    pub fn sender(&self) -> Address {
        self.sender
    }

    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// Logs matching `filter` from the deployment's start block to the head, read in ranges
    /// the endpoint accepts ([`logs_in_ranges`], at most [`DEFAULT_MAX_LOG_RANGE`] blocks).
    pub async fn logs_since_start(
        &self,
        call: &'static str,
        filter: Filter,
    ) -> Result<Vec<Log>, ClientError> {
        let head = self
            .provider
            .get_block_number()
            .await
            .map_err(|e| ClientError::from_contract("eth_blockNumber", e.into()))?;
        let source = RpcLogSource::with_filter(self.provider.clone(), filter);
        logs_in_ranges(
            &source,
            self.deployment.start_block,
            head,
            DEFAULT_MAX_LOG_RANGE,
        )
        .await
        .map_err(|source| ClientError::Logs { call, source })
    }

    async fn send<D: alloy::contract::CallDecoder>(
        &self,
        call: &'static str,
        builder: alloy::contract::CallBuilder<&DynProvider, D>,
    ) -> Result<TransactionReceipt, ClientError> {
        let receipt = match &self.lane {
            None => send_from(call, self.sender, builder).await?,
            Some(lane) => {
                let (builder, gas_limit) = estimated(call, self.sender, builder).await?;
                let request = builder.as_ref().clone();
                let receipt = lane.send(call, request).await?;
                succeeded(call, &builder, receipt, gas_limit).await?
            }
        };
        debug!(call, tx = %receipt.transaction_hash, block = ?receipt.block_number, "transaction mined");
        Ok(receipt)
    }

    async fn query<D: alloy::contract::CallDecoder>(
        &self,
        call: &'static str,
        builder: alloy::contract::CallBuilder<&DynProvider, D>,
    ) -> Result<D::CallOutput, ClientError> {
        builder
            .from(self.sender)
            .call()
            .await
            .map_err(|e| ClientError::from_contract(call, e))
    }

    // ------------------------------------------------------------------ tokens

    /// Approves `spender` for `amount` of `token` unless the allowance already covers it.
    /// Returns whether an approval was sent.
    pub async fn ensure_allowance(
        &self,
        token: Address,
        spender: Address,
        amount: U256,
    ) -> Result<bool, ClientError> {
        let erc20 = TestToken::new(token, self.provider.clone());
        let current = self
            .query("allowance", erc20.allowance(self.sender, spender))
            .await?;
        if current >= amount {
            return Ok(false);
        }
        self.send("approve", erc20.approve(spender, amount)).await?;
        Ok(true)
    }

    pub async fn token_balance(&self, token: Address, owner: Address) -> Result<U256, ClientError> {
        let erc20 = TestToken::new(token, self.provider.clone());
        self.query("balanceOf", erc20.balanceOf(owner)).await
    }

    // ------------------------------------------------------------------ provider registry

    /// Registers the sender as a provider, approving the registry for the minimum stake first.
    pub async fn register_provider(&self, profile: &ProviderProfile) -> Result<(), ClientError> {
        let stake = self.minimum_stake().await?;
        let token = self.query("stakeToken", self.registry.stakeToken()).await?;
        self.ensure_allowance(token, self.deployment.registry, stake)
            .await?;
        let (endpoint, gateway_cert, attributes, capacity, gpus) = profile.sol_args();
        let register = self
            .registry
            .register(endpoint, gateway_cert, attributes, capacity, gpus);
        self.send("register", register).await?;
        Ok(())
    }

    pub async fn update_provider(&self, profile: &ProviderProfile) -> Result<(), ClientError> {
        let (endpoint, gateway_cert, attributes, capacity, gpus) = profile.sol_args();
        let update = self
            .registry
            .update(endpoint, gateway_cert, attributes, capacity, gpus);
        self.send("update", update).await?;
        Ok(())
    }

    /// Publishes the strings attribute and GPU model keys are hashed from
    /// (`ProviderRegistry.publishNames`), so that clients can show them. Names the registry
    /// already holds are skipped (one `named` call each), and nothing is sent when all are:
    /// re-publishing on every `register`/`update` costs no gas. Returns how many were new.
    pub async fn publish_names(&self, names: &[String]) -> Result<usize, ClientError> {
        let mut seen = std::collections::BTreeSet::new();
        let mut unpublished = Vec::new();
        for (index, name) in names.iter().enumerate() {
            check_name(index, name).map_err(|error| ClientError::InvalidInput {
                field: "names",
                reason: error.to_string(),
            })?;
            let key = chain_key(name);
            if seen.insert(key) && !self.query("named", self.registry.named(key)).await? {
                unpublished.push(name.clone());
            }
        }
        for chunk in unpublished.chunks(MAX_NAMES_PER_CALL) {
            let publish = self.registry.publishNames(chunk.to_vec());
            self.send("publishNames", publish).await?;
        }
        Ok(unpublished.len())
    }

    /// Every name published on the registry (`KeyNamed`) since the deployment's start block.
    pub async fn key_names(&self) -> Result<KeyNames, ClientError> {
        let filter = Filter::new()
            .address(self.deployment.registry)
            .event_signature(ProviderRegistry::KeyNamed::SIGNATURE_HASH);
        let logs = self
            .logs_since_start("eth_getLogs KeyNamed", filter)
            .await?;
        let mut names = KeyNames::new();
        for log in &logs {
            if let Ok(event) = log.log_decode::<ProviderRegistry::KeyNamed>() {
                names.insert_announced(event.inner.data.key, &event.inner.data.name);
            }
        }
        Ok(names)
    }

    /// Starts unbonding; returns the timestamp from which the stake can be withdrawn.
    pub async fn deregister_provider(&self) -> Result<u64, ClientError> {
        let receipt = self.send("deregister", self.registry.deregister()).await?;
        let event: ProviderRegistry::ProviderDeregistered =
            self.event("deregister", &receipt, self.deployment.registry)?;
        Ok(event.unbondingEnds)
    }

    /// Returns the stake after unbonding; the amount withdrawn.
    pub async fn withdraw_stake(&self) -> Result<U256, ClientError> {
        let receipt = self
            .send("withdrawStake", self.registry.withdrawStake())
            .await?;
        let event: ProviderRegistry::StakeWithdrawn =
            self.event("withdrawStake", &receipt, self.deployment.registry)?;
        Ok(event.amount)
    }

    /// Adds `amount` to the sender's stake (approving the registry first when needed); a
    /// provider slashed below the minimum stake may bid again once it reaches it. Returns the
    /// stake after the top-up.
    pub async fn add_stake(&self, amount: U256) -> Result<U256, ClientError> {
        if amount.is_zero() {
            return Err(ClientError::InvalidInput {
                field: "amount",
                reason: "must be greater than zero".to_owned(),
            });
        }
        let token = self.query("stakeToken", self.registry.stakeToken()).await?;
        self.ensure_allowance(token, self.deployment.registry, amount)
            .await?;
        let receipt = self
            .send("addStake", self.registry.addStake(amount))
            .await?;
        let event: ProviderRegistry::StakeAdded =
            self.event("addStake", &receipt, self.deployment.registry)?;
        Ok(event.stake)
    }

    /// The part of its stake a provider locks per bid.
    pub async fn bid_bond(&self) -> Result<U256, ClientError> {
        self.query("bidBond", self.registry.bidBond()).await
    }

    /// The bids of `order_id` whose bonds are still locked.
    pub async fn locked_bonds(&self, order_id: u64) -> Result<Vec<LockedBond>, ClientError> {
        let mut locked = Vec::new();
        for bid in self.bids(order_id).await? {
            let held = self
                .query(
                    "bondLocked",
                    self.registry
                        .bondLocked(U256::from(order_id), U256::from(bid.bid_id)),
                )
                .await?;
            if held {
                locked.push(LockedBond {
                    bid_id: bid.bid_id,
                    provider: bid.provider,
                    forfeits: bid.withdrawn,
                });
            }
        }
        Ok(locked)
    }

    /// Resolves the bonds of `bid_ids` on an order that has ended (anyone may): withdrawn or
    /// passed-over bids forfeit theirs to the tenant, the others get theirs back. Bids whose
    /// bond was already resolved are passed over.
    pub async fn release_bonds(
        &self,
        order_id: u64,
        bid_ids: &[u64],
    ) -> Result<Vec<ResolvedBond>, ClientError> {
        let ids = bid_ids.iter().map(|id| U256::from(*id)).collect();
        let release = self.registry.releaseBonds(U256::from(order_id), ids);
        let receipt = self.send("releaseBonds", release).await?;
        self.resolved_bonds("releaseBonds", &receipt)
    }

    /// Pays out everything `token` credited to the sender by the marketplace (`from_registry`
    /// false: failed payments and refunds) or the registry (true: forfeited bonds, slashes,
    /// stake that could not be pushed), to `to`. Returns the amount claimed.
    pub async fn claim(
        &self,
        token: Address,
        to: Address,
        from_registry: bool,
    ) -> Result<U256, ClientError> {
        let (receipt, emitter) = if from_registry {
            let claim = self.registry.claim(token, to);
            (self.send("claim", claim).await?, self.deployment.registry)
        } else {
            let claim = self.market.claim(token, to);
            (
                self.send("claim", claim).await?,
                self.deployment.marketplace,
            )
        };
        let claimed: ProviderRegistry::Claimed = self.event("claim", &receipt, emitter)?;
        Ok(claimed.amount)
    }

    /// The stake token (what bonds, slashes and stakes are paid in).
    pub async fn stake_token(&self) -> Result<Address, ClientError> {
        self.query("stakeToken", self.registry.stakeToken()).await
    }

    pub async fn minimum_stake(&self) -> Result<U256, ClientError> {
        self.query("minimumStake", self.registry.minimumStake())
            .await
    }

    pub async fn provider_info(&self, provider: Address) -> Result<ProviderInfo, ClientError> {
        let view = self
            .query("getProvider", self.registry.getProvider(provider))
            .await?;
        let status = ProviderStatus::try_from(view.status)
            .map_err(|code| ClientError::out_of_range("getProvider", "status", code))?;
        Ok(ProviderInfo {
            address: provider,
            status,
            stake: view.stake,
            unbonding_ends: view.unbondingEnds,
            active_leases: view.activeLeases,
            endpoint: view.endpoint,
            gateway_cert_sha256: view.gatewayCertSha256,
            attributes: view.attributes,
            capacity: view.capacity.into(),
            allocated: view.allocated.into(),
            gpus: view
                .gpus
                .into_iter()
                .map(|g| GpuState {
                    model_key: g.modelKey,
                    capacity: g.capacity,
                    allocated: g.allocated,
                })
                .collect(),
            deliveries_confirmed: view.deliveriesConfirmed,
            deliveries_failed: view.deliveriesFailed,
            locked_bonds: view.lockedBonds,
        })
    }

    /// Every address that ever registered (check [`ProviderInfo::status`]).
    pub async fn providers(&self) -> Result<Vec<Address>, ClientError> {
        let count = self
            .query("providerCount", self.registry.providerCount())
            .await?;
        let count = id_to_u64(count)
            .map_err(|e| ClientError::out_of_range("providerCount", "count", e.0))?;
        let mut providers = Vec::new();
        for index in 0..count {
            providers.push(
                self.query("providerAt", self.registry.providerAt(U256::from(index)))
                    .await?,
            );
        }
        Ok(providers)
    }

    /// The record of every address that ever registered, read at the head: what the tenant's
    /// `providers` and `preflight` and the market's preflight list.
    pub async fn provider_infos(&self) -> Result<Vec<ProviderInfo>, ClientError> {
        let mut infos = Vec::new();
        for address in self.providers().await? {
            infos.push(self.provider_info(address).await?);
        }
        Ok(infos)
    }

    // ------------------------------------------------------------------ auditors

    /// As an auditor, attests that `provider` holds each of `attributes` (chain keys, see
    /// [`crate::order::chain_key`]).
    pub async fn attest(&self, provider: Address, attributes: &[B256]) -> Result<(), ClientError> {
        let attest = self.registry.attest(provider, attributes.to_vec());
        self.send("attest", attest).await?;
        Ok(())
    }

    /// Withdraws the sender's attestations of `attributes` for `provider`.
    pub async fn revoke(&self, provider: Address, attributes: &[B256]) -> Result<(), ClientError> {
        let revoke = self.registry.revoke(provider, attributes.to_vec());
        self.send("revoke", revoke).await?;
        Ok(())
    }

    /// Whether the order's `signedBy` auditors attest `provider`'s required attributes
    /// (`ProviderRegistry.checkAudit`); `None` when they do, else the first missing `all_of`
    /// auditor (`Some(Address::ZERO)` when no `any_of` auditor does). Always `None` for orders
    /// without auditors.
    pub async fn missing_audit(
        &self,
        provider: Address,
        requirements: &OrderRequirements,
    ) -> Result<Option<Address>, ClientError> {
        if requirements.signed_by.is_empty() {
            return Ok(None);
        }
        let check = self.registry.checkAudit(
            provider,
            requirements.required_attributes.clone(),
            requirements.signed_by.all_of.clone(),
            requirements.signed_by.any_of.clone(),
        );
        let result = self.query("checkAudit", check).await?;
        Ok((!result.audited).then_some(result.missing))
    }

    /// The attestations standing now, from the registry's attest/revoke events since the
    /// deployment's start block, optionally only those of `auditor` and/or for `provider`.
    pub async fn attestations(
        &self,
        auditor: Option<Address>,
        provider: Option<Address>,
    ) -> Result<Vec<Attestation>, ClientError> {
        let topic = |address: Option<Address>| address.map(|a| B256::from(a.into_word()));
        let filter = Filter::new()
            .address(self.deployment.registry)
            .event_signature(vec![
                ProviderRegistry::AttributeAttested::SIGNATURE_HASH,
                ProviderRegistry::AttestationRevoked::SIGNATURE_HASH,
            ]);
        let filter = match topic(auditor) {
            Some(t) => filter.topic1(t),
            None => filter,
        };
        let filter = match topic(provider) {
            Some(t) => filter.topic2(t),
            None => filter,
        };
        let logs = self
            .logs_since_start("eth_getLogs attestations", filter)
            .await?;
        let mut standing: Vec<Attestation> = Vec::new();
        for log in &logs {
            if let Ok(event) = log.log_decode::<ProviderRegistry::AttributeAttested>() {
                let e = event.inner.data;
                standing.push(Attestation {
                    auditor: e.auditor,
                    provider: e.provider,
                    attribute: e.attribute,
                });
            } else if let Ok(event) = log.log_decode::<ProviderRegistry::AttestationRevoked>() {
                let e = event.inner.data;
                standing.retain(|a| {
                    (a.auditor, a.provider, a.attribute) != (e.auditor, e.provider, e.attribute)
                });
            }
        }
        Ok(standing)
    }

    // ------------------------------------------------------------------ orders and bids

    /// Posts an order, approving the deposit first when needed. Returns the announced order.
    pub async fn create_order(&self, order: &NewOrder) -> Result<OrderPosted, ClientError> {
        check_new_order(order)?;
        self.ensure_allowance(order.token, self.deployment.marketplace, order.deposit)
            .await?;
        let create = self.market.createOrder(
            order.token,
            order.spec.clone().into(),
            order.manifest_hash,
            order.max_price_per_hour,
            order.deposit,
            order.bid_window_secs,
            order.delivery_window_secs,
        );
        let receipt = self.send("createOrder", create).await?;
        self.order_created("createOrder", &receipt)
    }

    /// Posts `order` in one transaction where the token allows: nothing to approve when the
    /// allowance covers the deposit; otherwise an EIP-2612 permit signed by `signer` (the
    /// sender's key) goes with `createOrderWithPermit` when the token supports it (EIP-5267
    /// `eip712Domain` answers and its domain separator matches). Falls back to `approve` then
    /// `createOrder` for a token without permit.
    pub async fn create_order_with_permit(
        &self,
        order: &NewOrder,
        signer: &PrivateKeySigner,
    ) -> Result<(OrderPosted, DepositFunding), ClientError> {
        self.post_order(order, signer, None).await
    }

    /// [`Self::create_order_with_permit`] with an acceptance rule ([`AutoAcceptRule`]): the
    /// first bid it covers becomes the lease without an `acceptBid`. Only
    /// `createOrderWithPermit` takes a rule, so it is used whatever covers the deposit (with
    /// an unusable permit, which the contract ignores, when the allowance does).
    pub async fn create_order_auto_accept(
        &self,
        order: &NewOrder,
        signer: &PrivateKeySigner,
        rule: &AutoAcceptRule,
    ) -> Result<(OrderPosted, DepositFunding), ClientError> {
        self.post_order(order, signer, Some(auto_accept_of(order, rule)?))
            .await
    }

    async fn post_order(
        &self,
        order: &NewOrder,
        signer: &PrivateKeySigner,
        rule: Option<Marketplace::AutoAccept>,
    ) -> Result<(OrderPosted, DepositFunding), ClientError> {
        check_new_order(order)?;
        if signer.address() != self.sender {
            return Err(ClientError::InvalidInput {
                field: "signer",
                reason: format!("{} is not the sender {}", signer.address(), self.sender),
            });
        }
        let marketplace = self.deployment.marketplace;
        let erc20 = TestToken::new(order.token, self.provider.clone());
        let allowance = self
            .query("allowance", erc20.allowance(self.sender, marketplace))
            .await?;
        if allowance >= order.deposit {
            return match rule {
                None => Ok((self.create_order(order).await?, DepositFunding::Allowance)),
                Some(rule) => {
                    self.send_create_with_permit(
                        order,
                        no_permit(),
                        rule,
                        DepositFunding::Allowance,
                    )
                    .await
                }
            };
        }
        let Some(domain) = self.permit_domain(order.token).await else {
            return match rule {
                None => Ok((self.create_order(order).await?, DepositFunding::Approval)),
                Some(rule) => {
                    self.ensure_allowance(order.token, marketplace, order.deposit)
                        .await?;
                    self.send_create_with_permit(order, no_permit(), rule, DepositFunding::Approval)
                        .await
                }
            };
        };
        let nonce = self.query("nonces", erc20.nonces(self.sender)).await?;
        let deadline = U256::from(unix_now().saturating_add(PERMIT_LIFETIME_SECS));
        let permit = permit::Permit {
            owner: self.sender,
            spender: marketplace,
            value: order.deposit,
            nonce,
            deadline,
        };
        let signature = signer
            .sign_hash_sync(&permit.eip712_signing_hash(&domain))
            .map_err(|e| ClientError::InvalidInput {
                field: "signer",
                reason: format!("cannot sign the permit: {e}"),
            })?;
        let permit = Marketplace::Permit {
            deadline,
            v: 27 + u8::from(signature.v()),
            r: signature.r().into(),
            s: signature.s().into(),
        };
        let rule = rule.unwrap_or(Marketplace::AutoAccept {
            provider: Address::ZERO,
            maxPricePerHour: U88::ZERO,
        });
        self.send_create_with_permit(order, permit, rule, DepositFunding::Permit)
            .await
    }

    async fn send_create_with_permit(
        &self,
        order: &NewOrder,
        permit: Marketplace::Permit,
        rule: Marketplace::AutoAccept,
        funding: DepositFunding,
    ) -> Result<(OrderPosted, DepositFunding), ClientError> {
        let create = self.market.createOrderWithPermit(
            order.token,
            order.spec.clone().into(),
            order.manifest_hash,
            order.max_price_per_hour,
            order.deposit,
            order.bid_window_secs,
            order.delivery_window_secs,
            permit,
            rule,
        );
        let receipt = self.send("createOrderWithPermit", create).await?;
        Ok((
            self.order_created("createOrderWithPermit", &receipt)?,
            funding,
        ))
    }

    /// The token's EIP-712 domain when it implements EIP-2612 permits: `eip712Domain`
    /// (EIP-5267) answers and the domain it describes hashes to the token's
    /// `DOMAIN_SEPARATOR`. `None` for any other token (the caller approves instead).
    async fn permit_domain(&self, token: Address) -> Option<Eip712Domain> {
        let erc20 = TestToken::new(token, self.provider.clone());
        let described = self
            .query("eip712Domain", erc20.eip712Domain())
            .await
            .ok()?;
        let separator = self
            .query("DOMAIN_SEPARATOR", erc20.DOMAIN_SEPARATOR())
            .await
            .ok()?;
        let domain = Eip712Domain::new(
            Some(described.name.into()),
            Some(described.version.into()),
            Some(described.chainId),
            Some(described.verifyingContract),
            None,
        );
        (domain.separator() == separator).then_some(domain)
    }

    fn order_created(
        &self,
        call: &'static str,
        receipt: &TransactionReceipt,
    ) -> Result<OrderPosted, ClientError> {
        let event: Marketplace::OrderCreated =
            self.event(call, receipt, self.deployment.marketplace)?;
        OrderPosted::try_from(event).map_err(|e| ClientError::out_of_range(call, "orderId", e.0))
    }

    /// The order as announced by its `OrderCreated` event (with the GPU-model and attribute lists
    /// bidders must re-supply), searched from the deployment's start block.
    pub async fn order_posted(&self, order_id: u64) -> Result<OrderPosted, ClientError> {
        let filter = Filter::new()
            .address(self.deployment.marketplace)
            .event_signature(Marketplace::OrderCreated::SIGNATURE_HASH)
            .topic1(B256::from(U256::from(order_id)));
        let logs = self
            .logs_since_start("eth_getLogs OrderCreated", filter)
            .await?;
        let event = logs
            .iter()
            .find_map(|log| log.log_decode::<Marketplace::OrderCreated>().ok())
            .ok_or_else(|| ClientError::InvalidInput {
                field: "order_id",
                reason: format!("no OrderCreated event for order {order_id}"),
            })?;
        OrderPosted::try_from(event.inner.data)
            .map_err(|e| ClientError::out_of_range("order_posted", "orderId", e.0))
    }

    /// The order's acceptance rule as its `AutoAcceptSet` event announced it (the contract
    /// keeps the rule private), searched from the deployment's start block; `None` when the
    /// order was created without one.
    pub async fn auto_accept_rule(
        &self,
        order_id: u64,
    ) -> Result<Option<AutoAcceptRule>, ClientError> {
        let filter = Filter::new()
            .address(self.deployment.marketplace)
            .event_signature(Marketplace::AutoAcceptSet::SIGNATURE_HASH)
            .topic1(B256::from(U256::from(order_id)));
        let logs = self
            .logs_since_start("eth_getLogs AutoAcceptSet", filter)
            .await?;
        Ok(logs
            .iter()
            .find_map(|log| log.log_decode::<Marketplace::AutoAcceptSet>().ok())
            .map(|event| AutoAcceptRule {
                provider: (event.inner.provider != Address::ZERO).then_some(event.inner.provider),
                max_price_per_hour: event.inner.maxPricePerHour,
            }))
    }

    /// Bids on an order; `requirements` are the order's lists (see [`Self::order_posted`]).
    /// `gpu_model` is the concrete canonical model offered (`nvidia/a100/80Gi/sxm`), `None` for
    /// CPU-only orders; the proof that it matches an allowed entry is built here
    /// ([`crate::order::gpu_bid`]). A model that matches none is still sent, so the contract's
    /// `GpuModelNotAllowed` comes back. Returns the bid id.
    pub async fn place_bid(
        &self,
        order_id: u64,
        price_per_hour: U256,
        gpu_model: Option<&str>,
        requirements: &OrderRequirements,
    ) -> Result<u64, ClientError> {
        let gpu = match gpu_model {
            None => None,
            Some(model) => {
                let model: leasehold_manifests::GpuModelKey =
                    model
                        .parse()
                        .map_err(|error: leasehold_manifests::GpuKeyError| {
                            ClientError::InvalidInput {
                                field: "gpu_model",
                                reason: error.to_string(),
                            }
                        })?;
                Some(
                    crate::order::gpu_bid(&model, &requirements.allowed_gpu_models)
                        .unwrap_or_else(|| GpuBid::unmatched(&model)),
                )
            }
        };
        let bid = self.market.placeBid(
            U256::from(order_id),
            price_per_hour,
            gpu.into(),
            requirements.allowed_gpu_models.clone(),
            requirements.required_attributes.clone(),
        );
        let receipt = self.send("placeBid", bid).await?;
        let event: Marketplace::BidPlaced =
            self.event("placeBid", &receipt, self.deployment.marketplace)?;
        self.id("placeBid", "bidId", event.bidId)
    }

    pub async fn withdraw_bid(&self, order_id: u64, bid_id: u64) -> Result<(), ClientError> {
        let withdraw = self
            .market
            .withdrawBid(U256::from(order_id), U256::from(bid_id));
        self.send("withdrawBid", withdraw).await?;
        Ok(())
    }

    /// The tenant picks a bid; reverts with `ProviderLacksCapacity` when the provider is full.
    pub async fn accept_bid(
        &self,
        order_id: u64,
        bid_id: u64,
    ) -> Result<LeaseStarted, ClientError> {
        let accept = self
            .market
            .acceptBid(U256::from(order_id), U256::from(bid_id));
        let receipt = self.send("acceptBid", accept).await?;
        self.lease_started("acceptBid", &receipt)
    }

    /// Matches an order after its bid window: cheapest bid whose provider has room.
    /// Matches the order by `settle`. One call passes over at most `SETTLE_SKIP_LIMIT` bids
    /// whose provider is no longer eligible and then ends without a lease (bounding its gas);
    /// this sends it again until the lease is created or `NoEligibleBid` says none is left.
    pub async fn settle(&self, order_id: u64) -> Result<LeaseStarted, ClientError> {
        let market = self.deployment.marketplace;
        let mut skipped = Vec::new();
        // Each call without a lease marks at least one of the (at most 16) bids skipped.
        for _ in 0..=MAX_BIDS {
            let receipt = self
                .send("settle", self.market.settle(U256::from(order_id)))
                .await?;
            if events::<Marketplace::LeaseCreated>(&receipt, market)
                .next()
                .is_some()
            {
                let mut lease = self.lease_started("settle", &receipt)?;
                skipped.append(&mut lease.skipped);
                lease.skipped = skipped;
                return Ok(lease);
            }
            for skip in events::<Marketplace::BidSkipped>(&receipt, market) {
                skipped.push(SkippedBid {
                    bid_id: self.id("settle", "bidId", skip.bidId)?,
                    provider: skip.provider,
                });
            }
        }
        Err(ClientError::InvalidInput {
            field: "order_id",
            reason: format!("settle({order_id}) created no lease after passing over every bid"),
        })
    }

    /// Refunds an unmatched order's whole escrow; returns the refund.
    pub async fn cancel_order(&self, order_id: u64) -> Result<U256, ClientError> {
        let receipt = self
            .send("cancelOrder", self.market.cancelOrder(U256::from(order_id)))
            .await?;
        let event: Marketplace::OrderCancelled =
            self.event("cancelOrder", &receipt, self.deployment.marketplace)?;
        Ok(event.refund)
    }

    /// Adds to the escrow of an open order or active lease, approving first when needed.
    /// Returns the new escrow balance.
    pub async fn top_up(&self, order_id: u64, amount: U256) -> Result<U256, ClientError> {
        let order = self.order(order_id).await?;
        self.ensure_allowance(order.token, self.deployment.marketplace, amount)
            .await?;
        let receipt = self
            .send("topUp", self.market.topUp(U256::from(order_id), amount))
            .await?;
        let event: Marketplace::EscrowToppedUp =
            self.event("topUp", &receipt, self.deployment.marketplace)?;
        Ok(event.escrow)
    }

    // ------------------------------------------------------------------ leases

    /// The provider collects what has accrued, capped at the escrow.
    pub async fn withdraw_payment(&self, lease_id: u64) -> Result<Payment, ClientError> {
        let receipt = self
            .send("withdraw", self.market.withdraw(U256::from(lease_id)))
            .await?;
        let event: Marketplace::PaymentWithdrawn =
            self.event("withdraw", &receipt, self.deployment.marketplace)?;
        Ok(Payment {
            amount: event.amount,
            total_paid: event.totalPaid,
        })
    }

    /// Closes a lease (tenant, provider, or anyone when insolvent).
    pub async fn close_lease(
        &self,
        lease_id: u64,
        reason: CloseReason,
    ) -> Result<LeaseSettlement, ClientError> {
        let close = self.market.closeLease(U256::from(lease_id), reason.code());
        let receipt = self.send("closeLease", close).await?;
        let event: Marketplace::LeaseClosed =
            self.event("closeLease", &receipt, self.deployment.marketplace)?;
        Ok(LeaseSettlement {
            paid_to_provider: event.paidToProvider,
            refunded_to_tenant: event.refundedToTenant,
        })
    }

    /// The lease's provider confirms that every replica runs; payment accrues from now.
    pub async fn confirm_lease(&self, lease_id: u64) -> Result<(), ClientError> {
        let receipt = self
            .send(
                "confirmLease",
                self.market.confirmLease(U256::from(lease_id)),
            )
            .await?;
        let _: Marketplace::LeaseConfirmed =
            self.event("confirmLease", &receipt, self.deployment.marketplace)?;
        Ok(())
    }

    /// The tenant records the hash of a new manifest for an active lease (pending or
    /// confirmed); the provider then runs that manifest.
    pub async fn update_manifest(
        &self,
        lease_id: u64,
        manifest_hash: B256,
    ) -> Result<ManifestUpdate, ClientError> {
        let update = self
            .market
            .updateManifest(U256::from(lease_id), manifest_hash);
        let receipt = self.send("updateManifest", update).await?;
        let updated: Marketplace::ManifestUpdated =
            self.event("updateManifest", &receipt, self.deployment.marketplace)?;
        Ok(ManifestUpdate {
            lease_id,
            revision: updated.revision,
            manifest_hash: updated.manifestHash,
        })
    }

    /// Closes a lease its provider did not confirm by the deadline (anyone may): the tenant
    /// gets the whole escrow back and part of the provider's stake.
    pub async fn close_undelivered(&self, lease_id: u64) -> Result<UndeliveredClose, ClientError> {
        let close = self.market.closeUndelivered(U256::from(lease_id));
        let receipt = self.send("closeUndelivered", close).await?;
        let closed: Marketplace::LeaseClosed =
            self.event("closeUndelivered", &receipt, self.deployment.marketplace)?;
        let failed: Marketplace::DeliveryFailed =
            self.event("closeUndelivered", &receipt, self.deployment.marketplace)?;
        Ok(UndeliveredClose {
            refunded_to_tenant: closed.refundedToTenant,
            slashed_to_tenant: failed.slashed,
        })
    }

    /// What the marketplace and the registry hold for `account` in `token` because a transfer
    /// to it failed (blocklisted address, paused token): `(marketplace, registry)`.
    pub async fn claimable(
        &self,
        token: Address,
        account: Address,
    ) -> Result<(U256, U256), ClientError> {
        let market = self
            .query("claimable", self.market.claimable(token, account))
            .await?;
        let registry = self
            .query("claimable", self.registry.claimable(token, account))
            .await?;
        Ok((market, registry))
    }

    // ------------------------------------------------------------------ queries

    /// The order, or `InvalidInput` when no such order exists.
    pub async fn order(&self, order_id: u64) -> Result<OrderInfo, ClientError> {
        let view = self
            .query("getOrder", self.market.getOrder(U256::from(order_id)))
            .await?;
        let status = OrderStatus::try_from(view.status)
            .map_err(|code| ClientError::out_of_range("getOrder", "status", code))?;
        if status == OrderStatus::None {
            return Err(ClientError::InvalidInput {
                field: "order_id",
                reason: format!("order {order_id} does not exist"),
            });
        }
        Ok(OrderInfo {
            order_id,
            tenant: view.tenant,
            token: view.token,
            status,
            bid_count: view.bidCount,
            replicas: view.replicas,
            gpu_count: view.gpuCount,
            bid_window_end: view.bidWindowEnd,
            resources: view.resources.into(),
            max_price_per_hour: view.maxPricePerHour,
            escrow: view.escrow,
            manifest_hash: view.manifestHash,
            group_name: view.groupName,
            requirements_hash: view.requirementsHash,
            expires_at: view.expiresAt,
            delivery_window_secs: view.deliveryWindow,
        })
    }

    pub async fn bids(&self, order_id: u64) -> Result<Vec<BidInfo>, ClientError> {
        let bids = self
            .query("getBids", self.market.getBids(U256::from(order_id)))
            .await?;
        Ok(bids
            .into_iter()
            .zip(0u64..)
            .map(|(bid, bid_id)| BidInfo {
                bid_id,
                provider: bid.provider,
                price_per_hour: bid.pricePerHour,
                gpu_model: bid.gpuModel,
                withdrawn: bid.withdrawn,
            })
            .collect())
    }

    pub async fn lease(&self, lease_id: u64) -> Result<LeaseInfo, ClientError> {
        let view = self
            .query("getLease", self.market.getLease(U256::from(lease_id)))
            .await?;
        Ok(LeaseInfo::from_view(lease_id, view))
    }

    /// What the provider could withdraw now and the uncovered remainder.
    pub async fn owed(&self, lease_id: u64) -> Result<Owed, ClientError> {
        let owed = self
            .query("owed", self.market.owed(U256::from(lease_id)))
            .await?;
        Ok(Owed {
            withdrawable: owed.withdrawable,
            shortfall: owed.shortfall,
        })
    }

    pub async fn is_insolvent(&self, lease_id: u64) -> Result<bool, ClientError> {
        self.query("isInsolvent", self.market.isInsolvent(U256::from(lease_id)))
            .await
    }

    // ------------------------------------------------------------------ receipts

    fn id(&self, call: &'static str, field: &'static str, value: U256) -> Result<u64, ClientError> {
        id_to_u64(value).map_err(|e| ClientError::out_of_range(call, field, e.0))
    }

    fn event<E: SolEvent>(
        &self,
        call: &'static str,
        receipt: &TransactionReceipt,
        emitter: Address,
    ) -> Result<E, ClientError> {
        events::<E>(receipt, emitter)
            .next()
            .ok_or(ClientError::MissingEvent {
                call,
                event: E::SIGNATURE,
                tx_hash: receipt.transaction_hash,
            })
    }

    /// Every bond a transaction resolved (released or forfeited), in log order.
    fn resolved_bonds(
        &self,
        call: &'static str,
        receipt: &TransactionReceipt,
    ) -> Result<Vec<ResolvedBond>, ClientError> {
        let registry = self.deployment.registry;
        let mut resolved = Vec::new();
        for log in receipt
            .inner
            .logs()
            .iter()
            .filter(|log| log.address() == registry)
        {
            if let Ok(event) = log.log_decode::<ProviderRegistry::BondReleased>() {
                let event = event.inner.data;
                resolved.push(ResolvedBond {
                    order_id: self.id(call, "orderId", event.orderId)?,
                    bid_id: self.id(call, "bidId", event.bidId)?,
                    provider: event.provider,
                    amount: event.amount,
                    forfeited_to: None,
                });
            } else if let Ok(event) = log.log_decode::<ProviderRegistry::BondForfeited>() {
                let event = event.inner.data;
                resolved.push(ResolvedBond {
                    order_id: self.id(call, "orderId", event.orderId)?,
                    bid_id: self.id(call, "bidId", event.bidId)?,
                    provider: event.provider,
                    amount: event.amount,
                    forfeited_to: Some(event.tenant),
                });
            }
        }
        Ok(resolved)
    }

    fn lease_started(
        &self,
        call: &'static str,
        receipt: &TransactionReceipt,
    ) -> Result<LeaseStarted, ClientError> {
        let market = self.deployment.marketplace;
        let created: Marketplace::LeaseCreated = self.event(call, receipt, market)?;
        let skipped = events::<Marketplace::BidSkipped>(receipt, market)
            .map(|skip| {
                Ok(SkippedBid {
                    bid_id: self.id(call, "bidId", skip.bidId)?,
                    provider: skip.provider,
                })
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(LeaseStarted {
            lease_id: self.id(call, "leaseId", created.leaseId)?,
            tenant: created.tenant,
            provider: created.provider,
            bid_id: self.id(call, "bidId", created.bidId)?,
            price_per_hour: created.pricePerHour,
            gpu_model: created.gpuModel,
            skipped,
        })
    }
}

/// Events of type `E` emitted by `emitter` in a receipt, in log order.
/// How [`MarketplaceClient::create_order_with_permit`] covered the deposit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DepositFunding {
    /// The allowance already covered it: one transaction.
    Allowance,
    /// An EIP-2612 permit went with the order: one transaction.
    Permit,
    /// `approve`, then the order: two transactions (the token has no permit).
    Approval,
}

/// How long a permit signature stays valid: long enough for a slow block, short enough that a
/// signature lifted from a dropped transaction is soon useless.
const PERMIT_LIFETIME_SECS: u64 = 600;

mod permit {
    alloy::sol! {
        /// EIP-2612's signed message.
        struct Permit {
            address owner;
            address spender;
            uint256 value;
            uint256 nonce;
            uint256 deadline;
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// The checks `createOrder` would revert on that are cheaper to make before any transaction.
/// A permit the token refuses (zero signature): `createOrderWithPermit` ignores it and takes
/// the deposit on the allowance.
fn no_permit() -> Marketplace::Permit {
    Marketplace::Permit {
        deadline: U256::ZERO,
        v: 0,
        r: B256::ZERO,
        s: B256::ZERO,
    }
}

/// The contract's form of `rule`, checked as the contract would (`PriceAboveMax`) so that the
/// error names the field.
fn auto_accept_of(
    order: &NewOrder,
    rule: &AutoAcceptRule,
) -> Result<Marketplace::AutoAccept, ClientError> {
    let price = rule.max_price_per_hour;
    if price.is_zero() || price > order.max_price_per_hour {
        return Err(ClientError::InvalidInput {
            field: "auto_accept.max_price_per_hour",
            reason: format!(
                "{price} must be above zero and at most the order's maximum price {}",
                order.max_price_per_hour
            ),
        });
    }
    let max_price = U88::checked_from_limbs_slice(price.as_limbs()).ok_or_else(|| {
        ClientError::InvalidInput {
            field: "auto_accept.max_price_per_hour",
            reason: format!("{price} does not fit the contract's 88 bits"),
        }
    })?;
    Ok(Marketplace::AutoAccept {
        provider: rule.provider.unwrap_or(Address::ZERO),
        maxPricePerHour: max_price,
    })
}

fn check_new_order(order: &NewOrder) -> Result<(), ClientError> {
    if order.deposit.is_zero() {
        return Err(ClientError::InvalidInput {
            field: "deposit",
            reason: "must be greater than zero".to_owned(),
        });
    }
    if !DELIVERY_WINDOW_SECS.contains(&order.delivery_window_secs) {
        return Err(ClientError::InvalidInput {
            field: "delivery_window_secs",
            reason: format!(
                "{} s is outside {}..={} s",
                order.delivery_window_secs,
                DELIVERY_WINDOW_SECS.start(),
                DELIVERY_WINDOW_SECS.end()
            ),
        });
    }
    Ok(())
}

fn events<E: SolEvent>(
    receipt: &TransactionReceipt,
    emitter: Address,
) -> impl Iterator<Item = E> + '_ {
    receipt
        .inner
        .logs()
        .iter()
        .filter(move |log| log.address() == emitter)
        .filter_map(|log| log.log_decode::<E>().ok())
        .map(|log| log.inner.data)
}
