//! Commands on an existing deployment: `status`, `logs`, `close`, `topup`, `bids`, `leases`.

use alloy::primitives::{Address, B256, U256};
use leasehold_contracts::{CloseReason, OrderStatus};
use leasehold_proto::client::unix_now;
use leasehold_scheduler::ranking::{self, RankingPolicy};
use serde_json::json;

use crate::chain::Chain;
use crate::commands::Ctx;
use crate::error::{CliError, CliResult, Context as _, ExitKind};
use crate::gateway;
use crate::market::{self, Names};
use crate::output::{Output, address_text, closes_in, emit, status_text, table};
use crate::records;
use crate::wallet;

/// Names for a lease's keys from its local record's manifest, when there is one.
fn names_for(ctx: &Ctx, chain: &Chain, order_id: u64) -> Names {
    records::find(
        &ctx.settings.deployments_dir(),
        chain.deployment.marketplace,
        order_id,
    )
    .and_then(|record| std::fs::read_to_string(&record.manifest_path).ok())
    .and_then(|yaml| leasehold_manifests::parse(&yaml).ok())
    .map(|sdl| Names::from_groups(&sdl.groups()))
    .unwrap_or_default()
}

/// Providers' bid bonds on one order, from the tenant's side: how many bids still lock a bond
/// that will be forfeited to it (withdrawn or passed over), and what the registry already
/// credits it (forfeited bonds and slashes of every order, `tenant wallet claim`).
#[derive(Debug, Clone, serde::Serialize)]
struct TenantBonds {
    bid_bond: String,
    /// Bids of this order whose bonds will be forfeited to the tenant once resolved.
    forfeits_pending: Vec<u64>,
    /// What those bonds add up to.
    pending_amount: String,
    /// Forfeited bonds and slashes credited to the tenant in the registry, claimable now.
    claimable: String,
}

impl TenantBonds {
    fn describe(&self) -> Option<String> {
        let pending = (!self.forfeits_pending.is_empty()).then(|| {
            format!(
                "{} from {} bid(s) forfeit to you once released (`tenant wallet claim --release-bonds <order>`)",
                self.pending_amount,
                self.forfeits_pending.len()
            )
        });
        let claimable = (self.claimable != "0")
            .then(|| format!("{} claimable (`tenant wallet claim`)", self.claimable));
        match (pending, claimable) {
            (None, None) => None,
            (Some(p), None) => Some(p),
            (None, Some(c)) => Some(c),
            (Some(p), Some(c)) => Some(format!("{p}; {c}")),
        }
    }
}

async fn tenant_bonds(chain: &Chain, order_id: u64, tenant: Address) -> CliResult<TenantBonds> {
    let client = &chain.client;
    let bond = client.bid_bond().await?;
    let forfeits_pending: Vec<u64> = client
        .locked_bonds(order_id)
        .await?
        .into_iter()
        .filter(|locked| locked.forfeits)
        .map(|locked| locked.bid_id)
        .collect();
    let count = U256::from(forfeits_pending.len());
    let (_, claimable) = client
        .claimable(client.stake_token().await?, tenant)
        .await?;
    Ok(TenantBonds {
        bid_bond: bond.to_string(),
        pending_amount: bond.saturating_mul(count).to_string(),
        forfeits_pending,
        claimable: claimable.to_string(),
    })
}

pub async fn status(ctx: &Ctx, lease_id: u64) -> CliResult<u8> {
    let signer = wallet::signer(&ctx.settings)?;
    let chain = Chain::connect(&ctx.settings, Some(signer.clone())).await?;
    let order = chain.client.order(lease_id).await?;
    let record = records::find(
        &ctx.settings.deployments_dir(),
        chain.deployment.marketplace,
        lease_id,
    );
    let group = record
        .as_ref()
        .and_then(|r| r.groups.iter().find(|g| g.order_id == lease_id))
        .map(|g| g.group.clone());
    let lease = if order.status == OrderStatus::Open || order.status == OrderStatus::Cancelled {
        None
    } else {
        Some(chain.client.lease(lease_id).await?)
    };
    let owed = match &lease {
        Some(lease) if lease.active => Some(chain.client.owed(lease_id).await?),
        _ => None,
    };
    // The workload's status only exists while the lease is active.
    let (workload, gateway_error) = match &lease {
        Some(lease) if lease.active => {
            let provider_gateway =
                gateway::Gateway::of(&chain.client.provider_info(lease.provider).await?);
            let result = async {
                let mut client = gateway::connect(&provider_gateway, signer.clone()).await?;
                gateway::status(&mut client, lease_id).await
            }
            .await;
            match result {
                Ok(status) => (Some(status), None),
                Err(error) => (None, Some(error)),
            }
        }
        _ => (None, None),
    };
    let delivery = lease.as_ref().map(|lease| Delivery::of(lease, unix_now()));
    let bonds = tenant_bonds(&chain, lease_id, signer.address()).await?;
    let document = json!({
        "lease_id": lease_id,
        "group": group,
        "order": order,
        "lease": lease,
        "delivery": delivery,
        "owed": owed,
        "workload": workload.as_ref().map(gateway::status_json),
        "gateway_error": gateway_error.as_ref().map(|e| format!("{:#}", e.error)),
        "bonds": bonds,
    });
    emit(ctx.output, &document, || {
        let mut text = format!(
            "lease {lease_id}{}\norder     {}, escrow {}, max {}/h\n",
            group
                .as_deref()
                .map_or(String::new(), |g| format!(" (group `{g}`)")),
            status_text(&order.status),
            order.escrow,
            order.max_price_per_hour
        );
        if let Some(lease) = &lease {
            text.push_str(&format!(
                "lease     {} with {} at {}/h, paid {}, escrow {}\n",
                if lease.active { "active" } else { "closed" },
                lease.provider,
                lease.price_per_hour,
                lease.paid,
                lease.escrow
            ));
        }
        if let (Some(lease), Some(delivery)) = (&lease, delivery) {
            text.push_str(&format!("delivery  {}\n", delivery.describe(lease)));
        }
        if let Some(owed) = &owed {
            text.push_str(&format!(
                "owed      {} withdrawable, {} shortfall{}\n",
                owed.withdrawable,
                owed.shortfall,
                if owed.shortfall.is_zero() {
                    ""
                } else {
                    "  (INSOLVENT: top up)"
                }
            ));
        }
        if let Some(status) = &workload {
            text.push_str(&format!(
                "workload  {} (revision {}) {}\n",
                status.state, status.revision, status.message
            ));
            let mut rows = vec![
                ["SERVICE", "READY", "STATES", "URIS", "HOSTNAMES"]
                    .map(str::to_owned)
                    .to_vec(),
            ];
            for service in &status.services {
                rows.push(vec![
                    service.name.clone(),
                    format!("{}/{}", service.ready_replicas, service.total_replicas),
                    service.states.join(","),
                    service.uris.join(" "),
                    service.hostnames.join(" "),
                ]);
            }
            text.push_str(&table(&rows));
        }
        if let Some(error) = &gateway_error {
            text.push_str(&format!("workload  unknown: {:#}\n", error.error));
        }
        if let Some(line) = bonds.describe() {
            text.push_str(&format!("bonds     {line}\n"));
        }
        text
    });
    // The chain part printed; an unreachable gateway still makes the exit code say so.
    Ok(gateway_error.map_or(0, |error| error.kind.code()))
}

pub async fn logs(
    ctx: &Ctx,
    lease_id: u64,
    follow: bool,
    tail: u32,
    service: Option<&str>,
) -> CliResult<u8> {
    let signer = wallet::signer(&ctx.settings)?;
    let chain = Chain::connect(&ctx.settings, Some(signer.clone())).await?;
    let provider_gateway = gateway::gateway_of(&chain, lease_id).await?;
    let mut client = gateway::connect(&provider_gateway, signer).await?;
    let mut stream = client
        .logs(lease_id, service, follow, tail)
        .await
        .ctx(format!(
            "logs of lease {lease_id} from {}",
            provider_gateway.endpoint
        ))?;
    drain(
        &mut stream,
        follow,
        &provider_gateway.endpoint,
        "log",
        |line| {
            let text = String::from_utf8_lossy(&line.line);
            let text = text.trim_end_matches('\n');
            match ctx.output {
                // NDJSON: one object per line, so `-f` can be piped into jq.
                Output::Json => println!(
                    "{}",
                    json!({
                        "service": line.service,
                        "replica": line.replica,
                        "stderr": line.stderr,
                        "timestamp_unix_nanos": line.timestamp_unix_nanos,
                        "line": text,
                    })
                ),
                Output::Text => println!("{}[{}] {text}", line.service, line.replica),
            }
        },
    )
    .await?;
    Ok(0)
}

pub async fn events(ctx: &Ctx, lease_id: u64, follow: bool) -> CliResult<u8> {
    let signer = wallet::signer(&ctx.settings)?;
    let chain = Chain::connect(&ctx.settings, Some(signer.clone())).await?;
    let provider_gateway = gateway::gateway_of(&chain, lease_id).await?;
    let mut client = gateway::connect(&provider_gateway, signer).await?;
    let mut stream = client.events(lease_id).await.ctx(format!(
        "events of lease {lease_id} from {}",
        provider_gateway.endpoint
    ))?;
    drain(
        &mut stream,
        follow,
        &provider_gateway.endpoint,
        "event",
        |event| match ctx.output {
            Output::Json => println!(
                "{}",
                json!({
                    "timestamp_unix_nanos": event.timestamp_unix_nanos,
                    "kind": event.kind,
                    "service": event.service,
                    "message": event.message,
                })
            ),
            Output::Text => {
                let service = if event.service.is_empty() {
                    "-"
                } else {
                    event.service.as_str()
                };
                println!("{service} {} {}", event.kind, event.message);
            }
        },
    )
    .await?;
    Ok(0)
}

/// Hands each message of a gateway stream to `each` until the stream ends, or, without
/// `follow`, until nothing arrived for [`gateway::CALL_TIMEOUT`].
async fn drain<T>(
    stream: &mut tonic::Streaming<T>,
    follow: bool,
    endpoint: &str,
    what: &str,
    mut each: impl FnMut(T),
) -> CliResult<()> {
    let idle = (!follow).then_some(gateway::CALL_TIMEOUT);
    loop {
        let next = match idle {
            Some(limit) => match tokio::time::timeout(limit, stream.message()).await {
                Ok(next) => next,
                Err(_) => return Ok(()),
            },
            None => stream.message().await,
        };
        match next {
            Ok(Some(message)) => each(message),
            Ok(None) => return Ok(()),
            Err(status) => {
                return Err(CliError::msg(
                    ExitKind::Network,
                    format!("{what} stream from {endpoint} ended: {}", status.message()),
                ));
            }
        }
    }
}

pub async fn close(ctx: &Ctx, lease_id: u64) -> CliResult<u8> {
    let chain = Chain::connect(&ctx.settings, Some(wallet::signer(&ctx.settings)?)).await?;
    let order = chain.client.order(lease_id).await?;
    let document = match order.status {
        OrderStatus::Open => {
            let refund = chain
                .client
                .cancel_order(lease_id)
                .await
                .ctx(format!("cancelling order {lease_id}"))?;
            json!({ "lease_id": lease_id, "action": "cancelled_order", "refunded_to_tenant": refund.to_string() })
        }
        OrderStatus::Leased => {
            // Unconfirmed past its deadline (in chain time: the estimate decides), the lease
            // closes as undelivered, which also moves part of the provider's stake to us.
            if !chain.client.lease(lease_id).await?.confirmed {
                match chain.client.close_undelivered(lease_id).await {
                    Ok(closed) => {
                        let document = json!({
                            "lease_id": lease_id,
                            "action": "closed_undelivered",
                            "paid_to_provider": "0",
                            "refunded_to_tenant": closed.refunded_to_tenant.to_string(),
                            "slashed_to_tenant": closed.slashed_to_tenant.to_string(),
                        });
                        emit(ctx.output, &document, || {
                            format!(
                                "lease {lease_id} closed undelivered: provider paid nothing, refunded {} plus {} of its stake\n",
                                closed.refunded_to_tenant, closed.slashed_to_tenant
                            )
                        });
                        return Ok(0);
                    }
                    // Still inside its window, or confirmed since we read it: an ordinary close.
                    Err(error)
                        if matches!(
                            error.revert_name(),
                            Some("DeliveryWindowOpen" | "LeaseNotPending")
                        ) => {}
                    Err(error) => {
                        return Err(CliError::from(error)
                            .context(format!("closing undelivered lease {lease_id}")));
                    }
                }
            }
            let settlement = chain
                .client
                .close_lease(lease_id, CloseReason::TenantRequest)
                .await
                .ctx(format!("closing lease {lease_id}"))?;
            json!({
                "lease_id": lease_id,
                "action": "closed_lease",
                "paid_to_provider": settlement.paid_to_provider.to_string(),
                "refunded_to_tenant": settlement.refunded_to_tenant.to_string(),
            })
        }
        other => {
            return Err(CliError::failed(format!(
                "lease {lease_id} is already {other:?}; nothing to close"
            )));
        }
    };
    emit(ctx.output, &document, || match order.status {
        OrderStatus::Open => format!(
            "order {lease_id} cancelled; refunded {}\n",
            document["refunded_to_tenant"].as_str().unwrap_or_default()
        ),

        _ => format!(
            "lease {lease_id} closed; provider paid {}, refunded {}\n",
            document["paid_to_provider"].as_str().unwrap_or_default(),
            document["refunded_to_tenant"].as_str().unwrap_or_default()
        ),
    });
    Ok(0)
}

pub async fn topup(ctx: &Ctx, lease_id: u64, amount: U256) -> CliResult<u8> {
    if amount.is_zero() {
        return Err(CliError::failed("the amount must be greater than 0"));
    }
    let chain = Chain::connect(&ctx.settings, Some(wallet::signer(&ctx.settings)?)).await?;
    let me = chain.sender();
    let balance = chain.token_balance(me).await?;
    if balance < amount {
        return Err(CliError::failed(format!(
            "insufficient funds: {me} holds {balance} of token {}, the top-up needs {amount}",
            chain.deployment.token
        )));
    }
    let escrow = chain
        .client
        .top_up(lease_id, amount)
        .await
        .ctx(format!("topping up lease {lease_id}"))?;
    emit(
        ctx.output,
        &json!({ "lease_id": lease_id, "added": amount.to_string(), "escrow": escrow.to_string() }),
        || format!("added {amount} to lease {lease_id}; escrow now {escrow}\n"),
    );
    Ok(0)
}

pub async fn bids(ctx: &Ctx, order_id: u64) -> CliResult<u8> {
    let chain = Chain::connect(&ctx.settings, None).await?;
    let order = chain.client.order(order_id).await?;
    let posted = chain.client.order_posted(order_id).await?;
    let names = names_for(ctx, &chain, order_id).with_published(&chain.client.key_names().await?);
    let reputations = crate::history::reputations(&chain).await?;
    let mut scheduler_bids = Vec::new();
    let mut infos = Vec::new();
    for bid in chain.client.bids(order_id).await? {
        let provider = chain.client.provider_info(bid.provider).await?;
        infos.push((bid, provider));
    }
    let providers: Vec<&leasehold_contracts::ProviderInfo> =
        infos.iter().map(|(_, provider)| provider).collect();
    let unmatchable =
        market::unmatchable_providers(&chain.client, &posted.spec, &providers).await?;
    for ((bid, provider), why) in infos.iter().zip(unmatchable) {
        let reputation = reputations.get(&bid.provider).copied().unwrap_or_default();
        scheduler_bids.push(market::scheduler_bid(
            bid, provider, reputation, &names, why,
        ));
    }
    let placed: Vec<_> = infos.iter().map(|(bid, _)| bid.clone()).collect();
    let scheduler_order =
        market::order_for_bids(&posted.spec, posted.max_price_per_hour, &names, &placed);
    let ranked = ranking::rank(&scheduler_order, &scheduler_bids, &RankingPolicy::Cheapest);
    // What `settle` would do matters while the order is open; afterwards, who won.
    let plan = (order.status == OrderStatus::Open)
        .then(|| market::settle_plan(&posted.spec, &scheduler_order, &scheduler_bids));
    let settle_winner = plan.as_ref().and_then(|plan| plan.winner);
    let passed_over = |bid_id: u64| {
        plan.as_ref()
            .is_some_and(|plan| plan.passed_over.contains(&bid_id))
    };
    let winner = match order.status {
        OrderStatus::Leased | OrderStatus::Closed => {
            Some(u64::from(chain.client.lease(order_id).await?.bid_id))
        }
        _ => None,
    };
    let rows: Vec<serde_json::Value> = ranked
        .iter()
        .filter_map(|rank| {
            let (bid, provider) = infos.iter().find(|(bid, _)| bid.bid_id == rank.bid_index)?;
            let as_scheduler = scheduler_bids
                .iter()
                .find(|candidate| candidate.bid_index == rank.bid_index)?;
            let reason = market::explain(&scheduler_order, as_scheduler, provider, &names);
            Some(json!({
                "bid_id": bid.bid_id,
                "provider": provider.address,
                "endpoint": provider.endpoint,
                "price_per_hour": bid.price_per_hour.to_string(),
                "gpu_model": (bid.gpu_model != B256::ZERO).then(|| names.name(&bid.gpu_model)),
                "gpu_model_key": (bid.gpu_model != B256::ZERO).then_some(bid.gpu_model),
                "withdrawn": bid.withdrawn,
                "eligible": rank.eligible,
                "settle_would_pick": settle_winner == Some(bid.bid_id),
                "settle_passes_over": passed_over(bid.bid_id),
                "won": winner == Some(bid.bid_id),
                "reasons": rank.reasons,
                "ineligible_because": reason,
                "track_record": as_scheduler.reputation,
            }))
        })
        .collect();
    let document = json!({
        "order_id": order_id,
        "status": order.status,
        "max_price_per_hour": order.max_price_per_hour.to_string(),
        "bid_window_end": order.bid_window_end,
        "settle_calls": plan.as_ref().map(|plan| plan.calls),
        "bids": rows,
    });
    emit(ctx.output, &document, || {
        if rows.is_empty() {
            return format!(
                "order {order_id} ({}): no bids yet; the bid window closes {}\n",
                status_text(&order.status),
                closes_in(order.bid_window_end)
            );
        }
        let mut table_rows = vec![
            ["BID", "PROVIDER", "PRICE/H", "GPU", "ELIGIBLE", "NOTES"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for row in &rows {
            let mut notes = Vec::new();
            if row["won"] == true {
                notes.push("won: the lease's bid".to_owned());
            }
            if row["settle_would_pick"] == true {
                notes.push("settle would pick this".to_owned());
            }
            if let Some(message) = row["ineligible_because"]["message"].as_str() {
                notes.push(message.to_owned());
            }
            table_rows.push(vec![
                row["bid_id"].to_string(),
                address_text(&row["provider"]),
                row["price_per_hour"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                row["gpu_model"].as_str().unwrap_or("-").to_owned(),
                if row["eligible"] == true { "yes" } else { "no" }.to_owned(),
                notes.join("; "),
            ]);
        }
        format!(
            "order {order_id} ({}), max {}/h\n{}",
            status_text(&order.status),
            order.max_price_per_hour,
            table(&table_rows)
        )
    });
    Ok(0)
}

pub async fn leases(ctx: &Ctx) -> CliResult<u8> {
    let chain = Chain::connect(&ctx.settings, None).await?;
    let (records, problems) = records::load_all(
        &ctx.settings.deployments_dir(),
        chain.deployment.marketplace,
    );
    let mut entries = Vec::new();
    for record in &records {
        for group in &record.groups {
            let order = chain.client.order(group.order_id).await?;
            let lease = match order.status {
                OrderStatus::Leased | OrderStatus::Closed => {
                    Some(chain.client.lease(group.order_id).await?)
                }
                _ => None,
            };
            entries.push(json!({
                "deployment": record.id,
                "group": group.group,
                "lease_id": group.order_id,
                "manifest": record.manifest_path,
                "order_status": order.status,
                "escrow": order.escrow.to_string(),
                "provider": lease.as_ref().map(|l| l.provider),
                "endpoint": group.endpoint,
                "price_per_hour": lease.as_ref().map(|l| l.price_per_hour.to_string()),
                "active": lease.as_ref().is_some_and(|l| l.active),
            }));
        }
    }
    emit(
        ctx.output,
        &json!({ "leases": entries, "unreadable_records": problems }),
        || {
            if entries.is_empty() {
                return format!(
                    "no deployments recorded in {} for this marketplace\n",
                    ctx.settings.deployments_dir().display()
                );
            }
            let mut rows = vec![
                [
                    "LEASE", "GROUP", "STATE", "PROVIDER", "PRICE/H", "ESCROW", "MANIFEST",
                ]
                .map(str::to_owned)
                .to_vec(),
            ];
            for entry in &entries {
                rows.push(vec![
                    entry["lease_id"].to_string(),
                    entry["group"].as_str().unwrap_or_default().to_owned(),
                    entry["order_status"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    address_text(&entry["provider"]),
                    entry["price_per_hour"].as_str().unwrap_or("-").to_owned(),
                    entry["escrow"].as_str().unwrap_or_default().to_owned(),
                    entry["manifest"].as_str().unwrap_or_default().to_owned(),
                ]);
            }
            let mut text = table(&rows);
            for problem in &problems {
                text.push_str(&format!("warning: unreadable record {problem}\n"));
            }
            text
        },
    );
    Ok(0)
}

/// Where a lease stands on delivery: the provider confirms on chain that the workload runs;
/// only then does payment accrue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Waiting for the provider's confirmation, before the deadline.
    Pending,
    /// The provider confirmed; payment accrues from then.
    Confirmed,
    /// Unconfirmed past the deadline: `tenant close` refunds everything plus part of the
    /// provider's stake.
    Overdue,
    /// Closed without ever being confirmed.
    Undelivered,
}

impl Delivery {
    pub fn of(lease: &leasehold_contracts::LeaseInfo, now: u64) -> Self {
        match (lease.confirmed, lease.active) {
            (true, _) => Self::Confirmed,
            (false, false) => Self::Undelivered,
            (false, true) if now >= lease.delivery_deadline => Self::Overdue,
            (false, true) => Self::Pending,
        }
    }

    fn describe(self, lease: &leasehold_contracts::LeaseInfo) -> String {
        match self {
            Self::Pending => format!(
                "pending: the provider has until {} (unix) to confirm the workload runs; nothing is paid before",
                lease.delivery_deadline
            ),
            Self::Confirmed => format!(
                "confirmed at {} (unix); payment accrues from then",
                lease.started_at
            ),
            Self::Overdue => format!(
                "OVERDUE: not confirmed by {} (unix); `tenant close {}` refunds the whole escrow plus part of the provider's stake",
                lease.delivery_deadline, lease.lease_id
            ),
            Self::Undelivered => "never confirmed; closed without payment".to_owned(),
        }
    }
}
