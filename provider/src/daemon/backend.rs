//! The daemon's side of the gateway: [`GatewayBackend`] over the store, chain and runtime.

use std::str::FromStr;
use std::sync::Arc;

use alloy::primitives::{Address, B256};
use async_trait::async_trait;
use futures_util::StreamExt;
use leasehold_proto::gateway::{
    GpuCount, LeaseEvent, LeaseStatus, LogLine, ProviderStatus, Resources as ProtoResources,
    ServiceStatus,
};
use tracing::warn;

mod shell;

use super::Core;
use crate::gateway::{BackendError, BackendStream, GatewayBackend, LogQuery};
use crate::leases::ManifestRejected;
use crate::runtime::{ExecRequest, ExecSession, RuntimeError, RuntimeEventKind};
use crate::speculative::{PreLease, PreLeaseBid};
use leasehold_contracts::OrderStatus;

/// Replay keys are unique on their own; the store wants an owner column.
const REPLAY_OWNER: &str = "gateway";

pub struct DaemonBackend {
    core: Arc<Core>,
}

impl DaemonBackend {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// Deploys a lease that has its manifest, off the gateway call.
    fn spawn_lease_deploy(&self, lease_id: u64) {
        let core = self.core.clone();
        tokio::spawn(async move {
            if let Err(error) = core.deploy_lease(lease_id).await {
                warn!(lease_id, %error, "deploy after manifest failed; the reconciler retries");
            }
        });
    }
}

fn internal(error: impl std::error::Error + Send + Sync + 'static) -> BackendError {
    BackendError::internal(error)
}

/// A refused manifest, as the caller sees it (lease or pre-lease path alike).
fn rejected(error: ManifestRejected) -> BackendError {
    match error {
        ManifestRejected::UnknownLease(lease_id) => BackendError::UnknownLease { lease_id },
        ManifestRejected::WrongState { lease_id, state } => {
            BackendError::LeaseNotAwaitingManifest {
                lease_id,
                state: state.to_string(),
            }
        }
        ManifestRejected::HashMismatch { expected, got } => BackendError::HashMismatch {
            expected: B256::from_str(&expected).unwrap_or_default(),
            got: B256::from_str(&got).unwrap_or_default(),
        },
        ManifestRejected::OrderNotStartable { order_id, reason } => {
            BackendError::OrderNotStartable { order_id, reason }
        }
        ManifestRejected::Internal(error) => internal(error),
        other => BackendError::InvalidManifest {
            reason: other.to_string(),
        },
    }
}

fn runtime_error(lease_id: u64, error: RuntimeError) -> BackendError {
    match error {
        RuntimeError::NotFound { what } => BackendError::UnknownService {
            lease_id,
            service: what,
        },
        RuntimeError::Unavailable { reason } => BackendError::Unavailable { reason },
        other => internal(other),
    }
}

fn now_nanos() -> i64 {
    i64::try_from(super::unix_now())
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000_000)
}

#[async_trait]
impl GatewayBackend for DaemonBackend {
    async fn lease_tenant(&self, lease_id: u64) -> Result<Option<Address>, BackendError> {
        let Some(record) = self
            .core
            .store
            .find_lease(lease_id)
            .await
            .map_err(internal)?
        else {
            return Ok(None);
        };
        Address::from_str(&record.tenant)
            .map(Some)
            .map_err(internal)
    }

    async fn remember_signature(
        &self,
        replay_key: String,
        timestamp: u64,
    ) -> Result<bool, BackendError> {
        self.core
            .store
            .remember_signature(REPLAY_OWNER, &replay_key, timestamp)
            .await
            .map_err(internal)
    }

    async fn accept_manifest(
        &self,
        lease_id: u64,
        manifest_json: Vec<u8>,
    ) -> Result<(), BackendError> {
        self.core
            .accept_manifest(lease_id, &manifest_json)
            .await
            .map_err(rejected)?;
        self.spawn_lease_deploy(lease_id);
        Ok(())
    }

    async fn order_tenant(&self, order_id: u64) -> Result<Option<Address>, BackendError> {
        let order = match self.core.chain.order(order_id).await {
            Ok(order) => order,
            Err(error) if error.revert_name() == Some("OrderNotFound") => return Ok(None),
            Err(error) => return Err(internal(error)),
        };
        Ok((order.status != OrderStatus::None && !order.tenant.is_zero()).then_some(order.tenant))
    }

    async fn accept_order_manifest(
        &self,
        order_id: u64,
        bid: PreLeaseBid,
        manifest_json: Vec<u8>,
    ) -> Result<(), BackendError> {
        match self
            .core
            .accept_order_manifest(order_id, bid, &manifest_json)
            .await
            .map_err(rejected)?
        {
            PreLease::Accepted => {
                let core = self.core.clone();
                tokio::spawn(async move {
                    if let Err(error) = core.deploy_speculative(order_id).await {
                        warn!(order_id, %error, "pre-lease start failed; the lease deploys on its own path");
                    }
                });
            }
            PreLease::AlreadyAccepted => {}
            PreLease::Leased => self.spawn_lease_deploy(order_id),
        }
        Ok(())
    }

    async fn lease_status(&self, lease_id: u64) -> Result<LeaseStatus, BackendError> {
        let (record, status) = self
            .core
            .lease_status(lease_id)
            .await
            .map_err(internal)?
            .ok_or(BackendError::UnknownLease { lease_id })?;
        let revisions = self
            .core
            .store
            .manifest_revisions(lease_id)
            .await
            .map_err(internal)?;
        let mut hostnames = self.core.hostnames(lease_id);
        Ok(LeaseStatus {
            revision: u32::try_from(revisions.applied).unwrap_or(u32::MAX),
            lease_id,
            state: record.state.kind().to_string(),
            services: status
                .services
                .into_iter()
                .map(|service| ServiceStatus {
                    hostnames: hostnames.remove(&service.name).unwrap_or_default(),
                    name: service.name,
                    ready_replicas: service.ready_replicas,
                    total_replicas: service.total_replicas,
                    uris: service.uris,
                    states: service
                        .replicas
                        .iter()
                        .map(|replica| replica.state.to_string())
                        .collect(),
                })
                .collect(),
            message: record.state.reason().unwrap_or_default(),
        })
    }

    async fn logs(
        &self,
        lease_id: u64,
        query: LogQuery,
    ) -> Result<BackendStream<LogLine>, BackendError> {
        self.known(lease_id).await?;
        let stream = self
            .core
            .runtime
            .logs(lease_id, query.service.as_deref(), query.follow, query.tail)
            .await
            .map_err(|error| runtime_error(lease_id, error))?;
        Ok(stream
            .map(move |line| {
                line.map(|line| LogLine {
                    service: line.service,
                    replica: line.replica,
                    stderr: line.stderr,
                    line: line.line,
                    timestamp_unix_nanos: 0,
                })
                .map_err(|error| runtime_error(lease_id, error))
            })
            .boxed())
    }

    /// The lease's recorded history first (won, manifest, deploy attempts and failures,
    /// closing and why), then the runtime's events as they happen.
    async fn events(&self, lease_id: u64) -> Result<BackendStream<LeaseEvent>, BackendError> {
        self.known(lease_id).await?;
        let history: Vec<Result<LeaseEvent, BackendError>> = self
            .core
            .store
            .history(lease_id)
            .await
            .map_err(internal)?
            .into_iter()
            .map(|entry| {
                Ok(LeaseEvent {
                    timestamp_unix_nanos: i64::try_from(entry.at)
                        .unwrap_or(0)
                        .saturating_mul(1_000_000_000),
                    kind: entry.kind,
                    service: String::new(),
                    message: entry.message,
                })
            })
            .collect();
        let stream = self
            .core
            .runtime
            .events(lease_id)
            .await
            .map_err(|error| runtime_error(lease_id, error))?;
        let live = stream.map(move |event| {
            event
                .map(|event| {
                    let (kind, message) = match event.kind {
                        RuntimeEventKind::PullProgress { image, status, .. } => {
                            ("pull_progress", format!("{image}: {status}"))
                        }
                        RuntimeEventKind::PullComplete { image } => ("pull_complete", image),
                        RuntimeEventKind::Created => ("created", String::new()),
                        RuntimeEventKind::Started => ("started", String::new()),
                        RuntimeEventKind::Died { exit_code } => (
                            "died",
                            exit_code
                                .map(|code| format!("exit code {code}"))
                                .unwrap_or_default(),
                        ),
                        RuntimeEventKind::OutOfMemory => ("oom", String::new()),
                        RuntimeEventKind::Evicted { reason } => ("evicted", reason),
                        RuntimeEventKind::Removed => ("removed", String::new()),
                        RuntimeEventKind::Other { action } => ("other", action),
                    };
                    LeaseEvent {
                        timestamp_unix_nanos: now_nanos(),
                        kind: kind.to_owned(),
                        service: event.service.unwrap_or_default(),
                        message,
                    }
                })
                .map_err(|error| runtime_error(lease_id, error))
        });
        Ok(futures_util::stream::iter(history).chain(live).boxed())
    }

    async fn provider_status(&self) -> Result<ProviderStatus, BackendError> {
        let report = self.core.capacity_report().map_err(internal)?;
        let active = self.core.open_leases().await.map_err(internal)?.len();
        // One entry per model that has any GPUs in the ledger.
        let per_model = |pick: fn(&crate::metrics::GpuLedgers) -> u64| {
            report
                .gpus_by_model
                .iter()
                .filter(|(_, ledgers)| pick(ledgers) > 0)
                .map(|(model, ledgers)| GpuCount {
                    model: model.to_string(),
                    count: u32::try_from(pick(ledgers)).unwrap_or(u32::MAX),
                })
                .collect::<Vec<_>>()
        };
        let resources =
            |r: &leasehold_scheduler::Resources, gpus: Vec<GpuCount>, ips: u64| ProtoResources {
                cpu_milli: r.cpu_millis,
                memory_bytes: r.memory_bytes,
                storage_bytes: r.ephemeral_storage_bytes,
                gpus,
                leased_ips: u32::try_from(ips).unwrap_or(u32::MAX),
            };
        let ips = report.leased_ips;
        Ok(ProviderStatus {
            address: self.core.chain.address().to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            capacity: Some(resources(
                &report.capacity,
                per_model(|l| l.capacity),
                ips.capacity,
            )),
            allocated: Some(resources(
                &report.allocated,
                per_model(|l| l.allocated),
                ips.allocated,
            )),
            reserved: Some(resources(
                &report.reserved,
                per_model(|l| l.reserved),
                ips.reserved,
            )),
            active_leases: u32::try_from(active).unwrap_or(u32::MAX),
        })
    }

    async fn exec(
        &self,
        lease_id: u64,
        request: ExecRequest,
    ) -> Result<ExecSession<BackendError>, BackendError> {
        self.exec_session(lease_id, request).await
    }
}

impl DaemonBackend {
    async fn known(&self, lease_id: u64) -> Result<(), BackendError> {
        match self
            .core
            .store
            .find_lease(lease_id)
            .await
            .map_err(internal)?
        {
            Some(_) => Ok(()),
            None => Err(BackendError::UnknownLease { lease_id }),
        }
    }
}
