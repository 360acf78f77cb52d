//! What a runtime reports: the status of a lease's replicas, their log lines and
//! events, and the URIs their published ports answer at.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::pin::Pin;

use futures_util::Stream;

use super::{Protocol, RuntimeError};

/// The URI under which a published port answers. The scheme says what the provider
/// serves there, not what the port number suggests: a TCP port exposed as 80 is
/// HTTP (Akash routes those through its HTTP ingress, so the workload serves plain
/// HTTP); every other TCP port, 443 included, is forwarded as raw TCP with no TLS
/// terminated by the provider, so it is `tcp://` (Akash lists such ports the same way).
pub fn service_uri(
    public_host: &str,
    proto: Protocol,
    external_port: u16,
    host_port: u16,
) -> String {
    let scheme = match (proto, external_port) {
        (Protocol::Tcp, 80) => "http",
        (Protocol::Tcp, _) => "tcp",
        (Protocol::Udp, _) => "udp",
    };
    if public_host.contains(':') && !public_host.starts_with('[') {
        format!("{scheme}://[{public_host}]:{host_port}")
    } else {
        format!("{scheme}://{public_host}:{host_port}")
    }
}

/// What a runtime observed about one replica; [`LeaseRuntimeStatus::from_observed`]
/// turns a list of them into the status of a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedReplica {
    pub service: String,
    pub replica: u32,
    /// How many replicas the service was deployed with.
    pub service_replicas: u32,
    pub state: ReplicaState,
    pub restart_count: u32,
    pub uris: Vec<String>,
}

/// The state of a lease's workloads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseRuntimeStatus {
    pub lease_id: u64,
    /// Empty when the runtime holds nothing for the lease.
    pub services: Vec<ServiceRuntimeStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRuntimeStatus {
    pub name: String,
    pub ready_replicas: u32,
    pub total_replicas: u32,
    /// Where the service's global ports answer, one per replica and port.
    pub uris: Vec<String>,
    /// One entry per expected replica, in index order.
    pub replicas: Vec<ReplicaStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub replica: u32,
    pub state: ReplicaState,
    pub restart_count: u32,
}

/// What a replica is doing, in terms both Docker and Kubernetes can report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaState {
    /// Expected but not present in the runtime.
    Missing,
    /// Created, not started yet (or image still being prepared).
    Pending,
    Running,
    /// Crashed and waiting to be restarted by the restart policy.
    Restarting {
        last_exit_code: Option<i64>,
    },
    /// Stopped and not going to be restarted (the restart policy gave up, or it
    /// exited successfully).
    Exited {
        exit_code: i64,
        oom_killed: bool,
    },
    /// Anything else the runtime reports (paused, being removed, dead...).
    Other(String),
}

impl ReplicaState {
    pub fn is_ready(&self) -> bool {
        matches!(self, ReplicaState::Running)
    }
}

impl fmt::Display for ReplicaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaState::Missing => f.write_str("missing"),
            ReplicaState::Pending => f.write_str("pending"),
            ReplicaState::Running => f.write_str("running"),
            ReplicaState::Restarting {
                last_exit_code: Some(code),
            } => write!(f, "restarting (last exit code {code})"),
            ReplicaState::Restarting {
                last_exit_code: None,
            } => f.write_str("restarting"),
            ReplicaState::Exited {
                exit_code,
                oom_killed: true,
            } => write!(f, "exited with code {exit_code} (out of memory)"),
            ReplicaState::Exited { exit_code, .. } => write!(f, "exited with code {exit_code}"),
            ReplicaState::Other(state) => f.write_str(state),
        }
    }
}

impl LeaseRuntimeStatus {
    /// Groups observed replicas by service (sorted by name), fills in the
    /// replicas the runtime does not hold as [`ReplicaState::Missing`] and
    /// counts the ready ones.
    pub fn from_observed(lease_id: u64, observed: Vec<ObservedReplica>) -> Self {
        let mut by_service: BTreeMap<String, Vec<ObservedReplica>> = BTreeMap::new();
        for replica in observed {
            by_service
                .entry(replica.service.clone())
                .or_default()
                .push(replica);
        }
        let services = by_service
            .into_iter()
            .map(|(name, mut replicas)| {
                replicas.sort_by_key(|replica| replica.replica);
                let expected = replicas
                    .iter()
                    .map(|replica| replica.service_replicas)
                    .max()
                    .unwrap_or(0);
                let mut uris = BTreeSet::new();
                let mut statuses: BTreeMap<u32, ReplicaStatus> = BTreeMap::new();
                for replica in replicas {
                    uris.extend(replica.uris);
                    statuses.insert(
                        replica.replica,
                        ReplicaStatus {
                            replica: replica.replica,
                            state: replica.state,
                            restart_count: replica.restart_count,
                        },
                    );
                }
                for index in 0..expected {
                    statuses.entry(index).or_insert(ReplicaStatus {
                        replica: index,
                        state: ReplicaState::Missing,
                        restart_count: 0,
                    });
                }
                let replicas: Vec<ReplicaStatus> = statuses.into_values().collect();
                let ready = replicas
                    .iter()
                    .filter(|replica| replica.state.is_ready())
                    .count();
                ServiceRuntimeStatus {
                    name,
                    ready_replicas: u32::try_from(ready).unwrap_or(u32::MAX),
                    total_replicas: expected,
                    uris: uris.into_iter().collect(),
                    replicas,
                }
            })
            .collect();
        LeaseRuntimeStatus { lease_id, services }
    }

    pub fn service(&self, name: &str) -> Option<&ServiceRuntimeStatus> {
        self.services.iter().find(|service| service.name == name)
    }

    /// Every service has all its replicas running.
    pub fn is_ready(&self) -> bool {
        !self.services.is_empty()
            && self
                .services
                .iter()
                .all(|service| service.ready_replicas == service.total_replicas)
    }
}

/// One line a replica wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub service: String,
    pub replica: u32,
    pub stderr: bool,
    /// The line without its trailing newline; bytes, as workloads need not write UTF-8.
    pub line: Vec<u8>,
    /// RFC 3339 time the runtime recorded the line at, when it reports one.
    pub timestamp: Option<String>,
}

/// Something that happened to a lease's workloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEvent {
    pub lease_id: u64,
    pub service: Option<String>,
    pub replica: Option<u32>,
    pub kind: RuntimeEventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeEventKind {
    /// Progress of an image download (`status` as the engine words it).
    PullProgress {
        image: String,
        status: String,
        current: Option<u64>,
        total: Option<u64>,
    },
    PullComplete {
        image: String,
    },
    Created,
    Started,
    Died {
        exit_code: Option<i64>,
    },
    OutOfMemory,
    /// Removed by the provider for exceeding what the lease bought (to be replaced
    /// fresh), with the reason.
    Evicted {
        reason: String,
    },
    Removed,
    /// Any other engine action, by its engine name.
    Other {
        action: String,
    },
}

pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogLine, RuntimeError>> + Send>>;
pub type EventStream = Pin<Box<dyn Stream<Item = Result<RuntimeEvent, RuntimeError>> + Send>>;
