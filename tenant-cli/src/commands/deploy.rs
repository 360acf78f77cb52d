//! `tenant deploy`: validate, preflight, fund and post one order per group, watch bids,
//! pick a winner (or let `settle` pick), send the signed manifest, wait until it runs.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead as _;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use futures_util::FutureExt as _;
use leasehold_contracts::{
    AutoAcceptRule, Backoff, BackoffPolicy, BidInfo, DepositFunding, HeadWatch, LeaseStarted,
    NewOrder, OrderPosted, OrderStatus, ProviderInfo, next_head_or,
};
use leasehold_proto::client::unix_now;
use leasehold_scheduler::ranking::{self, RankedBid, RankingPolicy};
use serde_json::json;

use super::providers::{self, Preflight};
use super::validate;
use crate::chain::Chain;
use crate::cli::{DeployArgs, Select};
use crate::commands::Ctx;
use crate::error::{CliError, CliResult, Context as _, ExitKind};
use crate::gateway;
use crate::market::{self, GroupOrder, Names};
use crate::output::{Output, Progress, address_text, closes_in, emit, table};
use crate::records::{DeploymentRecord, GroupRecord};
use crate::wallet;

/// Default deposit: this many hours at the group's maximum price.
const DEFAULT_DEPOSIT_HOURS: u64 = 24;
/// Chain polls while waiting for bids and the lease when no WebSocket is configured; with
/// one, each new block wakes the wait and this is only the fallback.
const CHAIN_POLL: Duration = Duration::from_millis(250);
/// The longest wait for a new head before reading the chain anyway (socket down).
const HEAD_FALLBACK: Duration = Duration::from_secs(1);
/// Status polls of a provider's gateway until the workload runs (a local call for the
/// provider: the workload usually starts within a second or two).
const STATUS_POLL: Duration = Duration::from_millis(100);
/// Retries of `SendManifest` while the provider has not seen the lease yet: it usually has
/// within a few hundred milliseconds of the block (and, after a pre-lease start, runs the
/// workload already), so start short and back off only a little.
const MANIFEST_RETRY: BackoffPolicy = BackoffPolicy {
    initial: Duration::from_millis(50),
    max: Duration::from_millis(400),
};
/// Bound on the pre-lease manifest (sent while `acceptBid` is mined): it never holds up the
/// deploy by more than this, and a provider that does not answer gets the manifest after the
/// lease as before.
const PRE_LEASE_TIMEOUT: Duration = Duration::from_secs(3);
/// With `--auto-accept`, preflight candidates that get the manifest before they bid (without
/// `--provider`): each may start the workload, and all but the winner remove it again.
const PRE_BID_CANDIDATES: usize = 3;
/// Bound on sending the manifest before the bids of `--auto-accept`: a provider refuses
/// until it has reserved for the order, so the tenant sends again ([`MANIFEST_RETRY`]); past
/// this the provider gets the manifest once the lease exists, as without the early send.
const PRE_BID_TIMEOUT: Duration = Duration::from_secs(10);

/// A manifest on its way to a provider ahead of its bid (`--auto-accept`).
struct PreBidSend {
    endpoint: String,
    provider: Address,
    /// `Ok` once the provider took it; the last refusal when the bound passed.
    sent: tokio::task::JoinHandle<Result<(), String>>,
}

struct Deploying<'a> {
    args: &'a DeployArgs,
    chain: Chain,
    signer: PrivateKeySigner,
    progress: Progress,
    names: Names,
    preflight: Preflight,
    providers: HashMap<Address, ProviderInfo>,
    /// New heads over the configured WebSocket; `None` polls.
    heads: Option<HeadWatch>,
    /// The canonical manifest the winners get; `None` with `--no-manifest`.
    manifest_json: Option<Vec<u8>>,
    /// `--auto-accept`: the manifests sent ahead of the bids, by order.
    pre_bid: HashMap<u64, Vec<PreBidSend>>,
}

pub async fn run(ctx: &Ctx, args: &DeployArgs) -> CliResult<u8> {
    if args.select == Select::Interactive && ctx.output == Output::Json {
        return Err(CliError::usage(
            "--select interactive needs text output; use cheapest, score or settle with --output json",
        ));
    }
    let progress = Progress::new(ctx.output);
    progress.working(format!("validating {}", args.file.display()));
    let sdl = validate::load_valid(&args.file)?;
    let groups = sdl.groups();
    let manifest = sdl.manifest();
    let manifest_hash = B256::from(manifest.hash());
    let mut orders = groups
        .iter()
        .map(market::group_order)
        .collect::<CliResult<Vec<GroupOrder>>>()?;
    market::override_max_prices(&mut orders, &args.max_price)?;
    progress.step(
        "validated",
        format!(
            "{} is valid: {} group(s), manifest hash {manifest_hash}",
            args.file.display(),
            groups.len()
        ),
        json!({ "groups": groups.len(), "manifest_hash": manifest_hash }),
    );
    for warning in sdl.warnings() {
        progress.line(
            "warning",
            format!("warning: {warning}"),
            serde_json::to_value(warning).unwrap_or_default(),
        );
    }
    for (line, order) in validate::pricing_lines(&groups)?.into_iter().zip(&orders) {
        let overridden = args
            .max_price
            .iter()
            .any(|o| o.group.is_none() || o.group.as_deref() == Some(order.group.as_str()));
        let text = if overridden {
            format!(
                "group `{}`: maximum {}/h from --max-price (the SDL's pricing is not used)",
                order.group, order.max_price_per_hour
            )
        } else {
            line
        };
        progress.step(
            "pricing",
            text,
            json!({ "group": order.group, "max_price_per_hour": order.max_price_per_hour.to_string(), "denom": order.denom, "overridden": overridden }),
        );
    }

    let signer = wallet::signer(&ctx.settings)?;
    let chain = Chain::connect(&ctx.settings, Some(signer.clone())).await?;
    let heads = match &ctx.settings.ws_url {
        Some(url) => Some(HeadWatch::websocket(url).map_err(CliError::usage)?),
        None => None,
    };

    progress.working("preflight: checking the registered providers");
    let preflight = providers::preflight(&chain, &groups).await?;
    for group in &preflight.groups {
        progress.step(
            "preflight",
            format!(
                "group `{}`: {} provider(s) could serve it at up to {}/h",
                group.group,
                group.eligible.len(),
                group.max_price_per_hour
            ),
            serde_json::to_value(group).unwrap_or_default(),
        );
    }
    if !preflight.servable() {
        progress.line(
            "warning",
            format!(
                "warning: no registered provider can serve every group yet; posting anyway\n{}",
                preflight.explain()
            ),
            serde_json::Value::Null,
        );
    }

    let mut deploying = Deploying {
        args,
        chain,
        signer,
        progress,
        names: preflight.names.clone(),
        preflight,
        providers: HashMap::new(),
        heads,
        manifest_json: (!args.no_manifest).then(|| manifest.canonical_json().into_bytes()),
        pre_bid: HashMap::new(),
    };
    let deposits = deploying.check_funds(&orders).await?;
    let (mut record, posted) = deploying
        .post_orders(&orders, &deposits, manifest_hash, &manifest.hash_hex())
        .await?;
    let records_dir = ctx.settings.deployments_dir();
    let record_path = record.save(&records_dir)?;

    let mut results = Vec::new();
    for (index, order) in posted.iter().enumerate() {
        let expected: Vec<Address> = deploying
            .preflight
            .groups
            .get(index)
            .map(|group| group.eligible.iter().map(|c| c.provider).collect())
            .unwrap_or_default();
        let lease = deploying.await_lease(order, &expected).await?;
        let provider_gateway = gateway::Gateway::of(&deploying.provider(lease.provider).await?);
        if let Some(group) = record.group_mut(order.order_id) {
            group.lease_id = Some(lease.lease_id);
            group.provider = Some(lease.provider);
            group.endpoint = Some(provider_gateway.endpoint.clone());
            group.price_per_hour = Some(lease.price_per_hour);
        }
        record.save(&records_dir)?;
        results.push((lease, provider_gateway));
    }

    let mut summary = Vec::new();
    for ((lease, provider_gateway), group) in results.iter().zip(&record.groups) {
        let status = if args.no_manifest {
            None
        } else {
            let manifest_json = deploying.manifest_json.clone().unwrap_or_default();
            Some(
                deploying
                    .deliver(lease.lease_id, provider_gateway, manifest_json)
                    .await?,
            )
        };
        summary.push(json!({
            "group": group.group,
            "order_id": group.order_id,
            "lease_id": lease.lease_id,
            "provider": lease.provider,
            "endpoint": provider_gateway.endpoint,
            "price_per_hour": lease.price_per_hour.to_string(),
            "status": status.as_ref().map(gateway::status_json),
            "uris": status.as_ref().map(gateway::uris).unwrap_or_default(),
        }));
    }
    deploying.progress.finish();
    let document = json!({
        "deployment": record.id,
        "manifest_hash": record.manifest_hash,
        "record": record_path,
        "groups": summary,
    });
    emit(ctx.output, &document, || {
        let mut rows = vec![
            ["GROUP", "LEASE", "PROVIDER", "PRICE/H", "URIS"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for entry in &summary {
            let uris: Vec<String> = entry["uris"]
                .as_array()
                .map(|uris| {
                    uris.iter()
                        .filter_map(|u| u.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            rows.push(vec![
                entry["group"].as_str().unwrap_or_default().to_owned(),
                entry["lease_id"].to_string(),
                address_text(&entry["provider"]),
                entry["price_per_hour"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                if uris.is_empty() {
                    "-".to_owned()
                } else {
                    uris.join(" ")
                },
            ]);
        }
        let next = if args.no_manifest {
            "manifest not sent (--no-manifest)"
        } else {
            "running"
        };
        format!(
            "{}deployment {} {next}; record: {}\n  tenant status {}   tenant logs {} -f   tenant close {}\n",
            table(&rows),
            record.id,
            record_path.display(),
            record.id,
            record.id,
            record.id
        )
    });
    Ok(0)
}

impl Deploying<'_> {
    async fn provider(&mut self, address: Address) -> CliResult<ProviderInfo> {
        if let Some(info) = self.providers.get(&address) {
            return Ok(info.clone());
        }
        let info = self.chain.client.provider_info(address).await?;
        self.providers.insert(address, info.clone());
        Ok(info)
    }

    /// Deposits per order; fails before sending anything when the wallet cannot pay them.
    async fn check_funds(&self, orders: &[GroupOrder]) -> CliResult<Vec<U256>> {
        let mut deposits = Vec::new();
        for order in orders {
            let deposit = match self.args.deposit {
                Some(deposit) => deposit,
                None => order
                    .max_price_per_hour
                    .checked_mul(U256::from(DEFAULT_DEPOSIT_HOURS))
                    .ok_or_else(|| {
                        CliError::failed(format!("group `{}`: deposit overflows", order.group))
                    })?,
            };
            if deposit.is_zero() {
                return Err(CliError::failed(format!(
                    "group `{}`: the deposit would be 0; pass --deposit",
                    order.group
                )));
            }
            deposits.push(deposit);
        }
        let needed = deposits
            .iter()
            .try_fold(U256::ZERO, |sum, deposit| sum.checked_add(*deposit))
            .ok_or_else(|| CliError::failed("the deposits overflow"))?;
        let me = self.chain.sender();
        let balance = self.chain.token_balance(me).await?;
        if balance < needed {
            return Err(CliError::failed(format!(
                "insufficient funds: {me} holds {balance} of token {}, but the deposits need {needed} \
                 ({} order(s)); fund the wallet (`tenant wallet faucet` on a devnet) or lower --deposit",
                self.chain.deployment.token,
                deposits.len()
            ))
            .with_details(json!({ "balance": balance.to_string(), "needed": needed.to_string() })));
        }
        if self.chain.eth_balance(me).await?.is_zero() {
            return Err(CliError::failed(format!(
                "insufficient funds: {me} has no ETH to pay for gas"
            )));
        }
        Ok(deposits)
    }

    /// One `createOrder` per group, each paying its deposit by EIP-2612 permit in the same
    /// transaction where the token supports it (else `approve` first).
    async fn post_orders(
        &mut self,
        orders: &[GroupOrder],
        deposits: &[U256],
        manifest_hash: B256,
        manifest_hash_hex: &str,
    ) -> CliResult<(DeploymentRecord, Vec<OrderPosted>)> {
        let deployment = self.chain.deployment;
        let mut posted = Vec::new();
        for (index, (order, deposit)) in orders.iter().zip(deposits).enumerate() {
            self.progress
                .working(format!("posting the order for group `{}`", order.group));
            let new_order = NewOrder {
                token: deployment.token,
                spec: order.spec.clone(),
                manifest_hash,
                max_price_per_hour: order.max_price_per_hour,
                deposit: *deposit,
                bid_window_secs: self.args.bid_window,
                delivery_window_secs: self.args.delivery_window,
            };
            let rule = self.args.auto_accept.then(|| AutoAcceptRule {
                provider: self.args.provider,
                max_price_per_hour: self
                    .args
                    .auto_accept_price
                    .unwrap_or(order.max_price_per_hour),
            });
            let created = match &rule {
                Some(rule) => {
                    self.chain
                        .client
                        .create_order_auto_accept(&new_order, &self.signer, rule)
                        .await
                }
                None => {
                    self.chain
                        .client
                        .create_order_with_permit(&new_order, &self.signer)
                        .await
                }
            };
            let (created, funding) =
                created.ctx(format!("posting the order for group `{}`", order.group))?;
            let paid_by = match funding {
                DepositFunding::Allowance => "the existing allowance",
                DepositFunding::Permit => "a permit in the same transaction",
                DepositFunding::Approval => "an approval first (the token has no permit)",
            };
            self.progress.step(
                "order_created",
                format!(
                    "order {} for group `{}`: max {}/h, deposit {deposit} (paid by {paid_by}), bid window closes {}",
                    created.order_id,
                    order.group,
                    order.max_price_per_hour,
                    closes_in(created.bid_window_end)
                ),
                json!({
                    "order_id": created.order_id,
                    "group": order.group,
                    "funding": funding,
                    "auto_accept": rule.map(|rule| json!({
                        "provider": rule.provider,
                        "max_price_per_hour": rule.max_price_per_hour.to_string(),
                    })),
                }),
            );
            if rule.is_some() {
                self.send_before_bids(index, created.order_id).await?;
            }
            posted.push(created);
        }
        let first = posted.first().map_or(0, |order| order.order_id);
        let record = DeploymentRecord {
            id: first,
            created_at: unix_now(),
            chain_id: deployment.chain_id,
            marketplace: deployment.marketplace,
            tenant: self.chain.sender(),
            manifest_path: std::fs::canonicalize(&self.args.file).unwrap_or(self.args.file.clone()),
            manifest_hash: manifest_hash_hex.to_owned(),
            groups: orders
                .iter()
                .zip(deposits)
                .zip(&posted)
                .map(|((order, deposit), created)| GroupRecord {
                    group: order.group.clone(),
                    order_id: created.order_id,
                    deposit: *deposit,
                    max_price_per_hour: order.max_price_per_hour,
                    lease_id: None,
                    provider: None,
                    endpoint: None,
                    price_per_hour: None,
                })
                .collect(),
        };
        Ok((record, posted))
    }

    /// Bids as the scheduler sees them, with their providers.
    async fn current_bids(&mut self, order_id: u64) -> CliResult<Vec<(BidInfo, ProviderInfo)>> {
        let bids = self.chain.client.bids(order_id).await?;
        let mut out = Vec::new();
        for bid in bids {
            let provider = self.provider(bid.provider).await?;
            out.push((bid, provider));
        }
        Ok(out)
    }

    fn bid_row(&self, bid: &BidInfo, provider: &ProviderInfo) -> String {
        let gpu = if bid.gpu_model == B256::ZERO {
            "-".to_owned()
        } else {
            self.names.name(&bid.gpu_model)
        };
        let attributes: Vec<String> = provider
            .attributes
            .iter()
            .map(|a| self.names.name(a))
            .collect();
        format!(
            "  bid {:<3} {}  {:>10}/h  gpu {:<22} attrs {}  {}",
            bid.bid_id,
            provider.address,
            bid.price_per_hour,
            gpu,
            if attributes.is_empty() {
                "-".to_owned()
            } else {
                attributes.join(",")
            },
            provider.endpoint
        )
    }

    /// Waits for the next block (WebSocket) or the next poll.
    async fn next_block(&mut self) {
        let limit = if self.heads.is_some() {
            HEAD_FALLBACK
        } else {
            CHAIN_POLL
        };
        next_head_or(self.heads.as_mut(), limit).await;
    }

    /// Watches bids until the choice is decided and a usable bid exists, then creates the
    /// lease the way `--select` says; exit 4 (with the preflight) when the timeout passes
    /// first. Decided: the window has closed, or (cheapest and score) every provider the
    /// preflight found eligible (`expected`) has bid, so no better bid can come.
    async fn await_lease(
        &mut self,
        order: &OrderPosted,
        expected: &[Address],
    ) -> CliResult<LeaseStarted> {
        let order_id = order.order_id;
        let deadline = Instant::now() + Duration::from_secs(self.args.timeout);
        let mut shown = 0usize;
        // Track records matter only to the weighted score; skip the log queries otherwise.
        let reputations = if self.args.select == Select::Score {
            crate::history::reputations(&self.chain).await?
        } else {
            HashMap::new()
        };
        self.progress.line(
            "bids",
            format!(
                "bids on order {order_id} (window closes {}):",
                closes_in(order.bid_window_end)
            ),
            json!({ "order_id": order_id }),
        );
        loop {
            let bids = self.current_bids(order_id).await?;
            let auto_accepted = if self.args.auto_accept {
                self.auto_accepted(order_id).await?
            } else {
                None
            };
            for (bid, provider) in bids.iter().skip(shown) {
                let row = self.bid_row(bid, provider);
                self.progress.line(
                    "bid",
                    row,
                    json!({
                        "order_id": order_id,
                        "bid_id": bid.bid_id,
                        "provider": provider.address,
                        "price_per_hour": bid.price_per_hour.to_string(),
                        "gpu_model": (bid.gpu_model != B256::ZERO).then(|| self.names.name(&bid.gpu_model)),
                        "endpoint": provider.endpoint,
                    }),
                );
            }
            shown = bids.len();
            if let Some(lease) = auto_accepted {
                self.lease_created(&lease);
                self.report_pre_bid(order_id, lease.provider);
                return Ok(lease);
            }
            let now = unix_now();
            let providers: Vec<&ProviderInfo> = bids.iter().map(|(_, provider)| provider).collect();
            let unmatchable =
                market::unmatchable_providers(&self.chain.client, &order.spec, &providers).await?;
            let scheduler_bids: Vec<ranking::Bid> = bids
                .iter()
                .zip(unmatchable)
                .map(|((bid, provider), why)| {
                    let reputation = reputations.get(&provider.address).copied();
                    market::scheduler_bid(
                        bid,
                        provider,
                        reputation.unwrap_or_default(),
                        &self.names,
                        why,
                    )
                })
                .collect();
            let placed: Vec<BidInfo> = bids.iter().map(|(bid, _)| bid.clone()).collect();
            let scheduler_order =
                market::order_for_bids(&order.spec, order.max_price_per_hour, &self.names, &placed);
            let any_eligible = ranking::onchain_winner(&scheduler_order, &scheduler_bids).is_some();
            let everyone_bid = !expected.is_empty()
                && expected
                    .iter()
                    .all(|provider| bids.iter().any(|(bid, _)| bid.provider == *provider));
            // With a rule, the chain accepts the covered bid itself; choosing early could only
            // race it.
            let decided = now >= order.bid_window_end
                || (everyone_bid
                    && !self.args.auto_accept
                    && matches!(self.args.select, Select::Cheapest | Select::Score));
            let gateways: HashMap<u64, gateway::Gateway> = bids
                .iter()
                .map(|(bid, provider)| (bid.bid_id, gateway::Gateway::of(provider)))
                .collect();
            if decided
                && any_eligible
                && let Some(lease) = self
                    .choose(order, &scheduler_order, &scheduler_bids, &gateways)
                    .await?
            {
                self.lease_created(&lease);
                self.report_pre_bid(order_id, lease.provider);
                return Ok(lease);
            }
            if Instant::now() >= deadline {
                return Err(self.no_bids(order, bids.len()).await);
            }
            let waiting = if now < order.bid_window_end {
                format!(
                    "order {order_id}: {} bid(s), window closes in {}s",
                    bids.len(),
                    order.bid_window_end - now
                )
            } else {
                format!(
                    "order {order_id}: waiting for a usable bid ({} so far)",
                    bids.len()
                )
            };
            self.progress.working(waiting);
            self.next_block().await;
        }
    }

    fn lease_created(&self, lease: &LeaseStarted) {
        self.progress.step(
            "lease_created",
            format!(
                "lease {} with {} at {}/h (bid {})",
                lease.lease_id, lease.provider, lease.price_per_hour, lease.bid_id
            ),
            serde_json::to_value(lease).unwrap_or_default(),
        );
    }

    /// The lease the order's auto-accept rule created, once the chain has it.
    async fn auto_accepted(&self, order_id: u64) -> CliResult<Option<LeaseStarted>> {
        let order = self.chain.client.order(order_id).await?;
        if order.status != OrderStatus::Leased {
            return Ok(None);
        }
        let lease = self.chain.client.lease(order_id).await?;
        Ok(Some(LeaseStarted {
            lease_id: lease.lease_id,
            tenant: lease.tenant,
            provider: lease.provider,
            bid_id: u64::from(lease.bid_id),
            price_per_hour: lease.price_per_hour,
            gpu_model: lease.gpu_model,
            skipped: Vec::new(),
        }))
    }

    /// `--auto-accept`: sends the manifest of the order just mined to the provider its rule
    /// names, or to the group's first [`PRE_BID_CANDIDATES`] preflight candidates, in the
    /// background, so that a provider starts the workload while its bid is mined.
    async fn send_before_bids(&mut self, group_index: usize, order_id: u64) -> CliResult<()> {
        let Some(manifest_json) = self.manifest_json.clone() else {
            return Ok(());
        };
        let targets: Vec<Address> = match self.args.provider {
            Some(named) => vec![named],
            None => self
                .preflight
                .groups
                .get(group_index)
                .map(|group| {
                    group
                        .eligible
                        .iter()
                        .take(PRE_BID_CANDIDATES)
                        .map(|candidate| candidate.provider)
                        .collect()
                })
                .unwrap_or_default(),
        };
        let mut sends = Vec::new();
        for provider in targets {
            let provider_gateway = gateway::Gateway::of(&self.provider(provider).await?);
            sends.push(PreBidSend {
                endpoint: provider_gateway.endpoint.clone(),
                provider,
                sent: tokio::spawn(send_until_taken(
                    provider_gateway,
                    self.signer.clone(),
                    order_id,
                    manifest_json.clone(),
                )),
            });
        }
        self.pre_bid.insert(order_id, sends);
        Ok(())
    }

    /// Stops the manifests still on their way ahead of the bids of `order_id` and says
    /// whether the lease's provider took its one (the `manifest_pre_lease` events).
    fn report_pre_bid(&mut self, order_id: u64, winner: Address) {
        for send in self.pre_bid.remove(&order_id).unwrap_or_default() {
            let outcome = if send.sent.is_finished() {
                send.sent
                    .now_or_never()
                    .map(|joined| joined.unwrap_or_else(|error| Err(error.to_string())))
            } else {
                send.sent.abort();
                None
            };
            if send.provider != winner {
                continue;
            }
            let data =
                json!({ "order_id": order_id, "endpoint": send.endpoint, "auto_accept": true });
            match outcome {
                Some(Ok(())) => self.progress.line(
                    "manifest_pre_lease",
                    format!(
                        "manifest sent to {} ahead of its bid; it started the workload while the bid was mined",
                        send.endpoint
                    ),
                    data,
                ),
                Some(Err(error)) => self.progress.line(
                    "manifest_pre_lease_refused",
                    format!(
                        "  {} did not take the manifest ahead of its bid ({error}); it gets it now",
                        send.endpoint
                    ),
                    data,
                ),
                None => self.progress.line(
                    "manifest_pre_lease_refused",
                    format!(
                        "  {} had not taken the manifest when its bid became the lease; it gets it now",
                        send.endpoint
                    ),
                    data,
                ),
            }
        }
    }

    /// Creates the lease by `--select`; `None` when every candidate turned out to lack room
    /// (the caller keeps waiting for bids).
    async fn choose(
        &mut self,
        order: &OrderPosted,
        scheduler_order: &ranking::OrderSpec,
        bids: &[ranking::Bid],
        gateways: &HashMap<u64, gateway::Gateway>,
    ) -> CliResult<Option<LeaseStarted>> {
        let order_id = order.order_id;
        let policy = match self.args.select {
            Select::Settle => {
                self.progress
                    .working(format!("settle({order_id}): the contract picks the winner"));
                return match self.chain.client.settle(order_id).await {
                    Ok(lease) => Ok(Some(lease)),
                    // Chain time can trail the local clock by a block.
                    Err(error) if error.revert_name().is_some_and(|n| n.contains("BidWindow")) => {
                        Ok(None)
                    }
                    Err(error) => Err(CliError::from(error).context("settle")),
                };
            }
            Select::Cheapest | Select::Interactive => RankingPolicy::Cheapest,
            Select::Score => RankingPolicy::Weighted {
                price: 1.0,
                unreliability: 1.0,
                preferred_attributes: BTreeMap::new(),
            },
        };
        let ranked: Vec<RankedBid> = ranking::rank(scheduler_order, bids, &policy)
            .into_iter()
            .filter(|bid| bid.eligible)
            .collect();
        let candidates = if self.args.select == Select::Interactive {
            vec![self.ask(&ranked)?]
        } else {
            ranked.iter().map(|bid| bid.bid_index).collect()
        };
        for bid_id in candidates {
            self.progress
                .working(format!("acceptBid({order_id}, {bid_id})"));
            // The bidder starts the workload while the acceptance is mined.
            let (accepted, ()) = tokio::join!(
                self.chain.client.accept_bid(order_id, bid_id),
                self.send_before_lease(order_id, bid_id, gateways.get(&bid_id)),
            );
            match accepted {
                Ok(lease) => return Ok(Some(lease)),
                Err(error) if error.revert_name() == Some("ProviderLacksCapacity") => {
                    self.progress.line(
                        "bid_skipped",
                        format!("  bid {bid_id}: provider has no room any more, trying the next"),
                        json!({ "bid_id": bid_id }),
                    );
                }
                Err(error) => return Err(CliError::from(error).context("acceptBid")),
            }
        }
        Ok(None)
    }

    /// Sends the manifest to the provider of the bid being accepted before the lease exists
    /// (`SendOrderManifest`), so that it can start the workload while `acceptBid` is mined.
    /// Best effort: a refusal or a silent provider is reported, and [`Self::deliver`] sends
    /// the manifest once the lease exists, exactly as without this step.
    async fn send_before_lease(
        &self,
        order_id: u64,
        bid_id: u64,
        provider_gateway: Option<&gateway::Gateway>,
    ) {
        let (Some(manifest_json), Some(provider_gateway)) = (&self.manifest_json, provider_gateway)
        else {
            return;
        };
        let endpoint = &provider_gateway.endpoint;
        let attempt = async {
            let mut client = gateway::connect(provider_gateway, self.signer.clone()).await?;
            client
                .send_order_manifest(order_id, bid_id, manifest_json.clone())
                .await
                .map_err(CliError::from)
        };
        let data = json!({ "order_id": order_id, "bid_id": bid_id, "endpoint": endpoint });
        match tokio::time::timeout(PRE_LEASE_TIMEOUT, attempt).await {
            Ok(Ok(())) => self.progress.line(
                "manifest_pre_lease",
                format!("manifest sent to {endpoint} ahead of the lease; it starts the workload now"),
                data,
            ),
            Ok(Err(error)) => self.progress.line(
                "manifest_pre_lease_refused",
                format!(
                    "  {endpoint} did not take the manifest ahead of the lease ({:#}); it gets it once the lease exists",
                    error.error
                ),
                data,
            ),
            Err(_) => self.progress.line(
                "manifest_pre_lease_refused",
                format!(
                    "  {endpoint} did not answer within {}s ahead of the lease; it gets the manifest once the lease exists",
                    PRE_LEASE_TIMEOUT.as_secs()
                ),
                data,
            ),
        }
    }

    fn ask(&self, ranked: &[RankedBid]) -> CliResult<u64> {
        let mut rows = vec![
            ["BID", "PROVIDER", "PRICE/H", "WHY"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for bid in ranked {
            rows.push(vec![
                bid.bid_index.to_string(),
                bid.provider.clone(),
                bid.price_per_hour.to_string(),
                bid.reasons.join("; "),
            ]);
        }
        self.progress
            .line("choices", table(&rows), serde_json::Value::Null);
        let default = ranked.first().map(|bid| bid.bid_index);
        eprint!(
            "accept which bid? [{}]: ",
            default.map_or("none".to_owned(), |id| id.to_string())
        );
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| CliError::usage(format!("cannot read the choice: {e}")))?;
        let choice = line.trim();
        if choice.is_empty() {
            return default.ok_or_else(|| CliError::failed("no eligible bid to accept"));
        }
        let bid: u64 = choice
            .parse()
            .map_err(|_| CliError::failed(format!("`{choice}` is not a bid id")))?;
        if !ranked.iter().any(|candidate| candidate.bid_index == bid) {
            return Err(CliError::failed(format!(
                "bid {bid} is not one of the eligible bids"
            )));
        }
        Ok(bid)
    }

    /// The exit-4 error: what preflight said, after cancelling the order for a full refund.
    async fn no_bids(&self, order: &OrderPosted, bids: usize) -> CliError {
        let refund = match self.chain.client.cancel_order(order.order_id).await {
            Ok(refund) => format!("order {} cancelled, {refund} refunded", order.order_id),
            Err(error) => format!(
                "cancelling order {} failed ({error}); run `tenant close {}` to get the deposit back",
                order.order_id, order.order_id
            ),
        };
        CliError::msg(
            ExitKind::Timeout,
            format!(
                "no usable bid on order {} within {}s ({bids} bid(s) seen); {refund}.\npreflight:\n{}",
                order.order_id,
                self.args.timeout,
                self.preflight.explain().trim_end()
            ),
        )
        .with_details(json!({
            "order_id": order.order_id,
            "bids": bids,
            "preflight": self.preflight,
        }))
    }

    /// Sends the signed manifest to the winner's gateway (retrying while the provider has
    /// not yet seen the lease), then polls its status until every replica runs.
    async fn deliver(
        &self,
        lease_id: u64,
        provider_gateway: &gateway::Gateway,
        manifest_json: Vec<u8>,
    ) -> CliResult<leasehold_proto::gateway::LeaseStatus> {
        let endpoint = &provider_gateway.endpoint;
        let deadline = Instant::now() + Duration::from_secs(self.args.timeout);
        // The lease came from a receipt: its block may have been reorged away since.
        self.chain.ensure_lease_on_chain(lease_id).await?;
        let mut last_error: String;
        let mut retry = Backoff::new(MANIFEST_RETRY);
        // One connection for every attempt while it works: the retries wait for the provider
        // to see the lease, not for the network.
        let mut connected: Option<leasehold_proto::client::SignedLeaseClient> = None;
        let mut client = loop {
            self.progress
                .working(format!("sending the manifest to {endpoint}"));
            let attempt = async {
                let mut client = match connected.take() {
                    Some(client) => client,
                    None => gateway::connect(provider_gateway, self.signer.clone()).await?,
                };
                connected = Some(client.clone());
                match tokio::time::timeout(
                    gateway::CALL_TIMEOUT,
                    client.send_manifest(lease_id, manifest_json.clone()),
                )
                .await
                {
                    Ok(sent) => sent.map_err(CliError::from)?,
                    Err(_) => {
                        connected = None;
                        return Err(CliError::msg(ExitKind::Network, "SendManifest timed out"));
                    }
                }
                Ok::<_, CliError>(client)
            };
            match attempt.await {
                Ok(client) => break client,
                Err(error) if is_final(&error) => {
                    return Err(error.context(format!("provider {endpoint} refused the manifest")));
                }
                Err(error) => last_error = format!("{:#}", error.error),
            }
            // The provider may not know the lease because the chain no longer has it.
            self.chain.ensure_lease_on_chain(lease_id).await?;
            if Instant::now() >= deadline {
                return Err(CliError::msg(
                    ExitKind::Timeout,
                    format!(
                        "could not deliver the manifest of lease {lease_id} to {endpoint} within {}s: {last_error}",
                        self.args.timeout
                    ),
                ));
            }
            tokio::time::sleep(retry.next_delay()).await;
        };
        self.progress.step(
            "manifest_sent",
            format!("manifest sent to {endpoint}"),
            json!({ "lease_id": lease_id, "endpoint": endpoint }),
        );
        loop {
            match gateway::status(&mut client, lease_id).await {
                Ok(status) if gateway::is_running(&status) => {
                    self.progress.step(
                        "running",
                        format!(
                            "lease {lease_id} is running: {}",
                            gateway::uris(&status).join(" ")
                        ),
                        gateway::status_json(&status),
                    );
                    return Ok(status);
                }
                Ok(status) if gateway::is_over(&status) => {
                    return Err(CliError::failed(format!(
                        "lease {lease_id} is {}: {}",
                        status.state, status.message
                    ))
                    .with_details(gateway::status_json(&status)));
                }
                Ok(status) => {
                    let ready: Vec<String> = status
                        .services
                        .iter()
                        .map(|s| format!("{} {}/{}", s.name, s.ready_replicas, s.total_replicas))
                        .collect();
                    last_error = format!("{} {}", status.state, status.message);
                    self.progress.working(format!(
                        "lease {lease_id}: {} {}",
                        status.state,
                        ready.join(", ")
                    ));
                }
                Err(error) => last_error = format!("{:#}", error.error),
            }
            self.chain.ensure_lease_on_chain(lease_id).await?;
            if Instant::now() >= deadline {
                return Err(CliError::msg(
                    ExitKind::Timeout,
                    format!(
                        "lease {lease_id} not running within {}s (last: {last_error}); see `tenant status {lease_id}` and `tenant logs {lease_id}`",
                        self.args.timeout
                    ),
                ));
            }
            tokio::time::sleep(STATUS_POLL).await;
        }
    }
}

/// Refusals that retrying cannot fix (a bad manifest); everything else may be the provider
/// not having seen the lease yet.
/// Sends an auto-accept order's manifest to one provider until it takes it: it refuses
/// until it has reserved for the order (usually within the block its bid goes into), so
/// this retries from 50 ms over one connection, for at most [`PRE_BID_TIMEOUT`].
async fn send_until_taken(
    provider_gateway: gateway::Gateway,
    signer: PrivateKeySigner,
    order_id: u64,
    manifest_json: Vec<u8>,
) -> Result<(), String> {
    let deadline = Instant::now() + PRE_BID_TIMEOUT;
    let mut retry = Backoff::new(MANIFEST_RETRY);
    let mut connected: Option<leasehold_proto::client::SignedLeaseClient> = None;
    loop {
        let attempt = async {
            let mut client = match connected.take() {
                Some(client) => client,
                None => gateway::connect(&provider_gateway, signer.clone()).await?,
            };
            connected = Some(client.clone());
            match tokio::time::timeout(
                gateway::CALL_TIMEOUT,
                client.send_auto_accept_manifest(order_id, manifest_json.clone()),
            )
            .await
            {
                Ok(sent) => sent.map_err(CliError::from),
                Err(_) => {
                    connected = None;
                    Err(CliError::msg(
                        ExitKind::Network,
                        "SendOrderManifest timed out",
                    ))
                }
            }
        };
        let last_error = match attempt.await {
            Ok(()) => return Ok(()),
            Err(error) => format!("{:#}", error.error),
        };
        if Instant::now() >= deadline {
            return Err(last_error);
        }
        tokio::time::sleep(retry.next_delay()).await;
    }
}

fn is_final(error: &CliError) -> bool {
    use leasehold_proto::client::ClientError;
    match error.error.downcast_ref::<ClientError>() {
        // Retrying cannot change the certificate a gateway presents.
        Some(ClientError::CertificateMismatch { .. }) => true,
        Some(client_error) => client_error
            .status()
            .is_some_and(|status| status.code() == tonic::Code::InvalidArgument),
        None => false,
    }
}
