//! Prometheus text exposition on `/metrics`, over a minimal HTTP/1.x handler so the
//! daemon needs no web framework: leases by state, capacity / allocated / reserved,
//! bids, the follower's block, withdrawals.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use alloy::primitives::U256;
use leasehold_contracts::LaneStats;
use leasehold_scheduler::{GpuModelKey, Resources};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

use crate::daemon::{Core, DaemonError};
use crate::lease::LeaseStateKind;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub bids_placed: Counter,
    pub bids_failed: Counter,
    pub bids_skipped: Counter,
    /// Orders not bid on because the stake could not back one more bid (below the minimum,
    /// or its free part under one bond).
    pub bids_stake_short: Counter,
    /// Orders not bid on because the tenant's bid window and grace outlast the reservation
    /// timeout: a bid withdrawn before the grace ends forfeits its bond.
    pub bids_window_too_long: Counter,
    /// Orders not bid on because the leased IP pool had too few free addresses.
    pub bids_no_leased_ip: Counter,
    /// Bonds of this provider's bids resolved on ended orders (released or forfeited).
    pub bonds_resolved: Counter,
    pub withdrawals: Counter,
    pub insolvent_closes: Counter,
    pub reconciles: Counter,
    pub follower_restarts: Counter,
    /// Reconciles of queued work that failed (each is retried after a backoff).
    pub work_failures: Counter,
    pub leases_adopted: Counter,
    /// Pre-lease starts accepted, adopted by their lease, and removed (see `speculative`).
    pub speculative_starts: Counter,
    pub speculative_adopted: Counter,
    pub speculative_removed: Counter,
    pub deploy_failures: Counter,
    pub failed_deploy_closes: Counter,
    /// Chain reorgs the follower found (each rewinds it to the fork).
    pub chain_reorgs: Counter,
    /// Leases whose creation a reorg undid: workload removed, allocation freed, forgotten.
    pub leases_reorged_away: Counter,
    /// The deepest reorg found, in blocks.
    chain_reorg_max_depth: AtomicU64,
    /// Token base units withdrawn, saturating at u64::MAX.
    withdrawn: AtomicU64,
}

impl Metrics {
    pub fn add_withdrawn(&self, amount: U256) {
        let amount = u64::try_from(amount).unwrap_or(u64::MAX);
        let _ = self
            .withdrawn
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |total| {
                Some(total.saturating_add(amount))
            });
    }

    pub fn note_reorg(&self, depth: u64) {
        self.chain_reorgs.inc();
        self.chain_reorg_max_depth
            .fetch_max(depth, Ordering::Relaxed);
    }

    pub fn chain_reorg_max_depth(&self) -> u64 {
        self.chain_reorg_max_depth.load(Ordering::Relaxed)
    }

    pub fn withdrawn(&self) -> u64 {
        self.withdrawn.load(Ordering::Relaxed)
    }
}

/// Capacity, allocations (leases) and reservations (open bids) of the inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapacityReport {
    pub capacity: Resources,
    pub allocated: Resources,
    pub reserved: Resources,
    pub gpus_capacity: u64,
    pub gpus_allocated: u64,
    pub gpus_reserved: u64,
    /// Whole GPUs per canonical model key (`nvidia/a100/80Gi/sxm`), in every ledger.
    pub gpus_by_model: BTreeMap<GpuModelKey, GpuLedgers>,
    /// Addresses of the leased IP pool.
    pub leased_ips: crate::ip_pool::IpLedgers,
}

/// Whole GPUs of one model by ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuLedgers {
    pub capacity: u64,
    pub allocated: u64,
    pub reserved: u64,
}

/// Which [`GpuLedgers`] field a placement counts into.
#[derive(Clone, Copy)]
enum Ledger {
    Allocated,
    Reserved,
}

impl GpuLedgers {
    fn add(&mut self, ledger: Ledger, gpus: u64) {
        let field = match ledger {
            Ledger::Allocated => &mut self.allocated,
            Ledger::Reserved => &mut self.reserved,
        };
        *field = field.saturating_add(gpus);
    }
}

fn add_placement(
    total: &mut Resources,
    gpus: &mut u64,
    by_model: &mut BTreeMap<GpuModelKey, GpuLedgers>,
    ledger: Ledger,
    placement: &leasehold_scheduler::GroupPlacement,
) {
    for replica in &placement.replicas {
        total.cpu_millis = total
            .cpu_millis
            .saturating_add(replica.resources.cpu_millis);
        total.memory_bytes = total
            .memory_bytes
            .saturating_add(replica.resources.memory_bytes);
        total.ephemeral_storage_bytes = total
            .ephemeral_storage_bytes
            .saturating_add(replica.resources.ephemeral_storage_bytes);
        let milli: u64 = replica
            .gpus
            .iter()
            .map(|share| u64::from(share.milli))
            .sum();
        *gpus = gpus.saturating_add(milli / 1000);
        let mut milli_by_model: BTreeMap<&GpuModelKey, u64> = BTreeMap::new();
        for share in &replica.gpus {
            let entry = milli_by_model.entry(&share.model).or_default();
            *entry = entry.saturating_add(u64::from(share.milli));
        }
        for (model, milli) in milli_by_model {
            by_model
                .entry(model.clone())
                .or_default()
                .add(ledger, milli / 1000);
        }
    }
}

impl Core {
    pub fn capacity_report(&self) -> Result<CapacityReport, DaemonError> {
        let inventory = self.inventory()?;
        let mut report = CapacityReport::default();
        for node in inventory.cluster().node_specs() {
            report.capacity.cpu_millis = report
                .capacity
                .cpu_millis
                .saturating_add(node.capacity.cpu_millis);
            report.capacity.memory_bytes = report
                .capacity
                .memory_bytes
                .saturating_add(node.capacity.memory_bytes);
            report.capacity.ephemeral_storage_bytes = report
                .capacity
                .ephemeral_storage_bytes
                .saturating_add(node.capacity.ephemeral_storage_bytes);
            report.gpus_capacity = report.gpus_capacity.saturating_add(node.gpus.len() as u64);
            for device in &node.gpus {
                let ledgers = report
                    .gpus_by_model
                    .entry(device.spec.model.clone())
                    .or_default();
                ledgers.capacity = ledgers.capacity.saturating_add(1);
            }
        }
        for placement in inventory.allocations().values() {
            add_placement(
                &mut report.allocated,
                &mut report.gpus_allocated,
                &mut report.gpus_by_model,
                Ledger::Allocated,
                placement,
            );
        }
        for reservation in inventory.reservations().values() {
            add_placement(
                &mut report.reserved,
                &mut report.gpus_reserved,
                &mut report.gpus_by_model,
                Ledger::Reserved,
                &reservation.placement,
            );
        }
        drop(inventory);
        report.leased_ips = self.ip_pool()?.ledgers();
        Ok(report)
    }

    /// The whole exposition text.
    pub async fn render_metrics(&self) -> Result<String, DaemonError> {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family("leasehold_leases", "gauge", "Leases by state.");
        let mut lines = String::new();
        for kind in LeaseStateKind::ALL {
            let count = self.store.leases_in_state(kind).await?.len();
            let _ = writeln!(lines, "leasehold_leases{{state=\"{kind}\"}} {count}");
        }
        out.push_str(&lines);
        let report = self.capacity_report()?;
        let mut resource = |name: &str, help: &str, pick: &dyn Fn(&Resources) -> u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (ledger, resources) in [
                ("capacity", &report.capacity),
                ("allocated", &report.allocated),
                ("reserved", &report.reserved),
            ] {
                let _ = writeln!(out, "{name}{{ledger=\"{ledger}\"}} {}", pick(resources));
            }
        };
        resource(
            "leasehold_cpu_millis",
            "CPU in millicores by ledger.",
            &|r| r.cpu_millis,
        );
        resource(
            "leasehold_memory_bytes",
            "Memory in bytes by ledger.",
            &|r| r.memory_bytes,
        );
        resource(
            "leasehold_storage_bytes",
            "Ephemeral storage in bytes by ledger.",
            &|r| r.ephemeral_storage_bytes,
        );
        let _ = writeln!(
            out,
            "# HELP leasehold_gpus GPUs by ledger.\n# TYPE leasehold_gpus gauge\n\
             leasehold_gpus{{ledger=\"capacity\"}} {}\nleasehold_gpus{{ledger=\"allocated\"}} {}\n\
             leasehold_gpus{{ledger=\"reserved\"}} {}",
            report.gpus_capacity, report.gpus_allocated, report.gpus_reserved
        );
        let _ = writeln!(
            out,
            "# HELP leasehold_gpus_by_model GPUs by model and ledger.\n\
             # TYPE leasehold_gpus_by_model gauge"
        );
        let ips = report.leased_ips;
        let _ = writeln!(
            out,
            "# HELP leasehold_leased_ips Leased IP addresses of the pool by ledger.\n\
             # TYPE leasehold_leased_ips gauge\n\
             leasehold_leased_ips{{ledger=\"capacity\"}} {}\n\
             leasehold_leased_ips{{ledger=\"allocated\"}} {}\n\
             leasehold_leased_ips{{ledger=\"reserved\"}} {}",
            ips.capacity, ips.allocated, ips.reserved
        );
        for (model, ledgers) in &report.gpus_by_model {
            for (ledger, count) in [
                ("capacity", ledgers.capacity),
                ("allocated", ledgers.allocated),
                ("reserved", ledgers.reserved),
            ] {
                let _ = writeln!(
                    out,
                    "leasehold_gpus_by_model{{model=\"{model}\",ledger=\"{ledger}\"}} {count}"
                );
            }
        }
        let drift = self.registration.drift();
        if !drift.is_empty() {
            let _ = writeln!(
                out,
                "# HELP leasehold_registration_drift What the cluster could register now minus \
                 the on-chain registration, per resource (cpu_milli, memory_mib, storage_mib, \
                 gpu/<model>); 0 when in step.\n# TYPE leasehold_registration_drift gauge"
            );
            for (resource, difference) in &drift {
                let _ = writeln!(
                    out,
                    "leasehold_registration_drift{{resource=\"{resource}\"}} {difference}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP leasehold_gateway_cert_mismatch 1 when the gateway's certificate is not the \
             one registered on chain (tenants refuse the gateway; run `provider update`).\n\
             # TYPE leasehold_gateway_cert_mismatch gauge\n\
             leasehold_gateway_cert_mismatch {}",
            u8::from(!self.gateway_cert_registered)
        );
        // One RPC per scrape: cheap next to the store's queries, and the number an operator
        // must watch on a network where gas costs money.
        match self.chain.balance().await {
            Ok(balance) => {
                let _ = writeln!(
                    out,
                    "# HELP leasehold_account_balance_wei The provider account's native balance \
                     (what pays for gas).\n# TYPE leasehold_account_balance_wei gauge\n\
                     leasehold_account_balance_wei {balance}"
                );
            }
            Err(error) => debug!(%error, "balance for /metrics"),
        }
        let lane = self.chain.lane_stats().unwrap_or_default();
        for (name, help, value) in [
            (
                "leasehold_tx_replaced_total",
                "Stuck transactions replaced on their nonce with higher fees.",
                &lane.replaced,
            ),
            (
                "leasehold_tx_resent_total",
                "Transactions the node dropped, broadcast again.",
                &lane.resent,
            ),
            (
                "leasehold_tx_fee_cap_exceeded_total",
                "Transactions not sent because the network needed more than chain.max_fee_per_gas_gwei.",
                &lane.fee_cap_exceeded,
            ),
            (
                "leasehold_tx_insufficient_funds_total",
                "Transactions not sent because the account could not pay for gas.",
                &lane.insufficient_funds,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                LaneStats::get(value)
            );
        }
        let cursor = self
            .store
            .cursor(crate::daemon::controller::FOLLOWER)
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
        for (name, kind, help, value) in [
            (
                "leasehold_bids_placed_total",
                "counter",
                "Bids placed on chain.",
                self.metrics.bids_placed.get(),
            ),
            (
                "leasehold_cluster_drifted_nodes_total",
                "counter",
                "Cluster nodes found added, removed or changed since start (Kubernetes).",
                self.cluster_drifted_nodes(),
            ),
            (
                "leasehold_registration_resyncs_total",
                "counter",
                "Registration updates the daemon sent after the cluster drifted (--resync-registration).",
                self.registration.resyncs_total(),
            ),
            (
                "leasehold_registration_resyncs_refused_total",
                "counter",
                "Re-syncs refused because the cluster shrank below what running leases hold.",
                self.registration.refusals_total(),
            ),
            (
                "leasehold_bids_failed_total",
                "counter",
                "Bids the chain refused or that failed to send.",
                self.metrics.bids_failed.get(),
            ),
            (
                "leasehold_orders_skipped_total",
                "counter",
                "Orders not bid on (ineligible, no room, price).",
                self.metrics.bids_skipped.get(),
            ),
            (
                "leasehold_orders_skipped_no_leased_ip_total",
                "counter",
                "Orders not bid on because the leased IP pool had too few free addresses.",
                self.metrics.bids_no_leased_ip.get(),
            ),
            (
                "leasehold_orders_skipped_stake_short_total",
                "counter",
                "Orders not bid on because the stake is below the minimum or its free part below one bid bond (provider add-stake, or release ended orders' bonds).",
                self.metrics.bids_stake_short.get(),
            ),
            (
                "leasehold_orders_skipped_window_too_long_total",
                "counter",
                "Orders not bid on because their bid window plus the tenant's grace outlasts bid.reservation_timeout_secs (a lapsed bid withdrawn before the grace ends forfeits its bond).",
                self.metrics.bids_window_too_long.get(),
            ),
            (
                "leasehold_bonds_resolved_total",
                "counter",
                "Bonds of the provider's bids resolved after their orders ended.",
                self.metrics.bonds_resolved.get(),
            ),
            (
                "leasehold_follower_next_block",
                "gauge",
                "Next block the chain follower will read.",
                cursor,
            ),
            (
                "leasehold_work_queued",
                "gauge",
                "Work items (bids, lease starts and ends, payments) waiting or running.",
                u64::try_from(self.queued_work()).unwrap_or(u64::MAX),
            ),
            (
                "leasehold_work_failures_total",
                "counter",
                "Reconciles of queued work that failed and were retried with backoff.",
                self.metrics.work_failures.get(),
            ),
            (
                "leasehold_chain_reorgs_total",
                "counter",
                "Chain reorgs the follower found and rewound (any depth).",
                self.metrics.chain_reorgs.get(),
            ),
            (
                "leasehold_chain_reorg_max_depth",
                "gauge",
                "Deepest chain reorg found since start, in blocks.",
                self.metrics.chain_reorg_max_depth(),
            ),
            (
                "leasehold_leases_reorged_away_total",
                "counter",
                "Leases whose creation a reorg undid (workload removed, allocation freed).",
                self.metrics.leases_reorged_away.get(),
            ),
            (
                "leasehold_follower_restarts_total",
                "counter",
                "Chain follower restarts after errors.",
                self.metrics.follower_restarts.get(),
            ),
            (
                "leasehold_withdrawals_total",
                "counter",
                "Successful payment withdrawals.",
                self.metrics.withdrawals.get(),
            ),
            (
                "leasehold_withdrawn_base_units_total",
                "counter",
                "Token base units withdrawn.",
                self.metrics.withdrawn(),
            ),
            (
                "leasehold_insolvent_closes_total",
                "counter",
                "Leases closed for insolvency.",
                self.metrics.insolvent_closes.get(),
            ),
            (
                "leasehold_leases_adopted_total",
                "counter",
                "Running workloads adopted because the store did not know their lease.",
                self.metrics.leases_adopted.get(),
            ),
            (
                "leasehold_pre_lease_starts_total",
                "counter",
                "Workloads started from a manifest sent before the lease existed.",
                self.metrics.speculative_starts.get(),
            ),
            (
                "leasehold_pre_lease_adopted_total",
                "counter",
                "Pre-lease starts adopted by their lease without a restart.",
                self.metrics.speculative_adopted.get(),
            ),
            (
                "leasehold_pre_lease_removed_total",
                "counter",
                "Pre-lease starts removed because their lease went elsewhere or never came.",
                self.metrics.speculative_removed.get(),
            ),
            (
                "leasehold_deploy_failures_total",
                "counter",
                "Deployments the runtime refused or could not complete.",
                self.metrics.deploy_failures.get(),
            ),
            (
                "leasehold_failed_deploy_closes_total",
                "counter",
                "Leases closed because their deployment kept failing.",
                self.metrics.failed_deploy_closes.get(),
            ),
            (
                "leasehold_reconciles_total",
                "counter",
                "Completed reconcile passes.",
                self.metrics.reconciles.get(),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        Ok(out)
    }
}

/// Serves `/metrics` until `stop` turns true.
pub async fn serve(core: Arc<Core>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let core = core.clone();
        tokio::spawn(async move {
            if let Err(error) = answer(&core, stream).await {
                debug!(%peer, %error, "metrics request failed");
            }
        });
    }
}

async fn answer(core: &Core, mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    // Only the request line matters; stop at the end of the headers or 8 KiB.
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buffer))
                .await
                .map_err(|_| std::io::Error::other("request timed out"))??;
        if read == 0 {
            break;
        }
        request.extend_from_slice(buffer.get(..read).unwrap_or_default());
    }
    let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    let (status, body) = if line.starts_with(b"GET /metrics ") {
        match core.render_metrics().await {
            Ok(body) => ("200 OK", body),
            Err(error) => ("500 Internal Server Error", format!("{error}\n")),
        }
    } else {
        ("404 Not Found", "only /metrics is served\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
