//! From what the API server reports (workloads, pods, public Services) to the
//! runtime-neutral [`ObservedReplica`]s; pure, so every pod state is unit-tested.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, Service};

use super::objects::{leased_ip_service_name, node_port_service_name};
use crate::runtime::{LABEL_SERVICE, ObservedReplica, Protocol, ReplicaState, service_uri};

/// What status needs of one Deployment or StatefulSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadView {
    pub service: String,
    pub replicas: u32,
    /// StatefulSet pods carry their replica index in their name.
    pub ordered: bool,
    /// Why the controller cannot create pods (quota, admission), when it says so.
    pub failure: Option<String>,
}

fn service_label(labels: Option<&BTreeMap<String, String>>, name: Option<&String>) -> String {
    labels
        .and_then(|labels| labels.get(LABEL_SERVICE))
        .or(name)
        .cloned()
        .unwrap_or_default()
}

fn replicas_of(replicas: Option<i32>) -> u32 {
    replicas.and_then(|n| u32::try_from(n).ok()).unwrap_or(1)
}

impl WorkloadView {
    pub fn of_deployment(deployment: &Deployment) -> Self {
        let spec = deployment.spec.as_ref();
        let failure = deployment
            .status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .and_then(|conditions| {
                conditions
                    .iter()
                    .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
            })
            .map(|condition| condition.message.clone().unwrap_or_default());
        WorkloadView {
            service: service_label(
                deployment.metadata.labels.as_ref(),
                deployment.metadata.name.as_ref(),
            ),
            replicas: replicas_of(spec.and_then(|spec| spec.replicas)),
            ordered: false,
            failure,
        }
    }

    pub fn of_stateful_set(stateful_set: &StatefulSet) -> Self {
        WorkloadView {
            service: service_label(
                stateful_set.metadata.labels.as_ref(),
                stateful_set.metadata.name.as_ref(),
            ),
            replicas: replicas_of(stateful_set.spec.as_ref().and_then(|spec| spec.replicas)),
            ordered: true,
            failure: None,
        }
    }
}

/// A global port as its public Service publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedPort {
    pub proto: Protocol,
    pub external_port: u16,
    pub at: PublishedAt,
}

/// Where a published port answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishedAt {
    /// This node port of every node (the NodePort Service).
    NodePort(u16),
    /// The port itself (`external_port`) on the lease's leased address (the Service with
    /// that address in `externalIPs`).
    LeasedIp(IpAddr),
}

/// The published ports of each service, from its NodePort Service and its leased-IP
/// Services; a Service not named as the runtime names them publishes nothing.
pub fn published_ports(services: &[Service]) -> BTreeMap<String, Vec<PublishedPort>> {
    let mut published: BTreeMap<String, Vec<PublishedPort>> = BTreeMap::new();
    for service in services {
        let Some(spec) = service.spec.as_ref() else {
            continue;
        };
        let owner = service_label(service.metadata.labels.as_ref(), None);
        let name = service.metadata.name.as_deref();
        let leased_address = match spec.external_ips.as_deref() {
            Some([address]) => address.parse::<IpAddr>().ok(),
            _ => None,
        };
        let node_ports = spec.type_.as_deref() == Some("NodePort")
            && name == Some(node_port_service_name(&owner).as_str());
        let leased = spec.type_.as_deref() == Some("ClusterIP")
            && leased_address.is_some_and(|address| {
                name == Some(leased_ip_service_name(&owner, address).as_str())
            });
        if !node_ports && !leased {
            continue;
        }
        for port in spec.ports.iter().flatten() {
            let proto = match port.protocol.as_deref() {
                Some("UDP") => Protocol::Udp,
                _ => Protocol::Tcp,
            };
            let Ok(external_port) = u16::try_from(port.port) else {
                continue;
            };
            let at = match (leased_address, port.node_port.map(u16::try_from)) {
                (Some(address), _) if leased => PublishedAt::LeasedIp(address),
                (_, Some(Ok(node_port))) if node_ports => PublishedAt::NodePort(node_port),
                _ => continue,
            };
            published
                .entry(owner.clone())
                .or_default()
                .push(PublishedPort {
                    proto,
                    external_port,
                    at,
                });
        }
    }
    published
}

/// The replica index of each live pod of a service: a StatefulSet pod's ordinal, else
/// the pod's rank by creation time (Deployment pods have no identity of their own).
/// Terminating pods are left out: their replacements stand for them.
pub fn indexed_pods<'p>(workload: &WorkloadView, pods: &'p [Pod]) -> Vec<(u32, &'p Pod)> {
    let mut live: Vec<&Pod> = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| service_label(pod.metadata.labels.as_ref(), None) == workload.service)
        .collect();
    if workload.ordered {
        let prefix = format!("{}-", workload.service);
        return live
            .into_iter()
            .filter_map(|pod| {
                let ordinal = pod.metadata.name.as_deref()?.strip_prefix(&prefix)?;
                Some((ordinal.parse().ok()?, pod))
            })
            .collect();
    }
    live.sort_by(|a, b| {
        let key = |pod: &Pod| {
            (
                pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
                pod.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    (0u32..).zip(live).collect()
}

fn last_exit_code(status: &ContainerStatus) -> Option<i64> {
    status
        .last_state
        .as_ref()
        .and_then(|state| state.terminated.as_ref())
        .map(|terminated| i64::from(terminated.exit_code))
}

/// The neutral state of a pod and its container's restart count.
pub fn pod_state(pod: &Pod) -> (ReplicaState, u32) {
    if pod.metadata.deletion_timestamp.is_some() {
        return (ReplicaState::Other("terminating".to_owned()), 0);
    }
    let status = pod.status.as_ref();
    let container = status
        .and_then(|status| status.container_statuses.as_ref())
        .and_then(|statuses| statuses.first());
    let restarts = container
        .and_then(|c| u32::try_from(c.restart_count).ok())
        .unwrap_or(0);
    let phase = status.and_then(|status| status.phase.as_deref());
    let Some(container) = container else {
        let unschedulable = status
            .and_then(|status| status.conditions.as_ref())
            .and_then(|conditions| {
                conditions.iter().find(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            });
        return match unschedulable {
            Some(condition) => (
                ReplicaState::Other(format!(
                    "unschedulable: {}",
                    condition.message.as_deref().unwrap_or("no node fits")
                )),
                0,
            ),
            None => (ReplicaState::Pending, 0),
        };
    };
    let state = container.state.as_ref();
    if let Some(terminated) = state.and_then(|state| state.terminated.as_ref())
        && matches!(phase, Some("Succeeded" | "Failed"))
    {
        return (
            ReplicaState::Exited {
                exit_code: i64::from(terminated.exit_code),
                oom_killed: terminated.reason.as_deref() == Some("OOMKilled"),
            },
            restarts,
        );
    }
    if let Some(waiting) = state.and_then(|state| state.waiting.as_ref()) {
        let reason = waiting.reason.as_deref().unwrap_or("");
        let detail = || match waiting.message.as_deref() {
            Some(message) if !message.is_empty() => format!("{reason}: {message}"),
            _ => reason.to_owned(),
        };
        let replica_state = match reason {
            "CrashLoopBackOff" => ReplicaState::Restarting {
                last_exit_code: last_exit_code(container),
            },
            "ImagePullBackOff"
            | "ErrImagePull"
            | "InvalidImageName"
            | "ErrImageNeverPull"
            | "CreateContainerConfigError"
            | "CreateContainerError"
            | "RunContainerError" => ReplicaState::Other(detail()),
            _ => ReplicaState::Pending,
        };
        return (replica_state, restarts);
    }
    if let Some(terminated) = state.and_then(|state| state.terminated.as_ref()) {
        // Restart policy Always: a terminated container is about to be restarted.
        return (
            ReplicaState::Restarting {
                last_exit_code: Some(i64::from(terminated.exit_code)),
            },
            restarts,
        );
    }
    if state.and_then(|state| state.running.as_ref()).is_some() && container.ready {
        return (ReplicaState::Running, restarts);
    }
    (ReplicaState::Pending, restarts)
}

/// Every expected replica of the lease's workloads: observed pods, and for indices
/// without one a [`ReplicaState::Missing`] (or the controller's failure message),
/// so that a service whose pods were never created still shows up.
pub fn observe(
    workloads: &[WorkloadView],
    pods: &[Pod],
    published: &BTreeMap<String, Vec<PublishedPort>>,
    public_host: Option<&str>,
) -> Vec<ObservedReplica> {
    let mut observed = Vec::new();
    for workload in workloads {
        let ports = published
            .get(&workload.service)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut seen = vec![false; usize::try_from(workload.replicas).unwrap_or(0)];
        for (index, pod) in indexed_pods(workload, pods) {
            let Some(slot) = usize::try_from(index).ok().and_then(|i| seen.get_mut(i)) else {
                continue;
            };
            *slot = true;
            let (state, restart_count) = pod_state(pod);
            let host = public_host.map(str::to_owned).or_else(|| {
                pod.status
                    .as_ref()
                    .and_then(|status| status.host_ip.clone())
            });
            let uris = if state.is_ready() {
                ports
                    .iter()
                    .filter_map(|port| match port.at {
                        PublishedAt::NodePort(node_port) => host.as_deref().map(|host| {
                            service_uri(host, port.proto, port.external_port, node_port)
                        }),
                        PublishedAt::LeasedIp(address) => Some(service_uri(
                            &address.to_string(),
                            port.proto,
                            port.external_port,
                            port.external_port,
                        )),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            observed.push(ObservedReplica {
                service: workload.service.clone(),
                replica: index,
                service_replicas: workload.replicas,
                state,
                restart_count,
                uris,
            });
        }
        for (index, _) in (0u32..).zip(&seen).filter(|(_, seen)| !**seen) {
            observed.push(ObservedReplica {
                service: workload.service.clone(),
                replica: index,
                service_replicas: workload.replicas,
                state: workload
                    .failure
                    .as_ref()
                    .map_or(ReplicaState::Missing, |message| {
                        ReplicaState::Other(format!("cannot be created: {message}"))
                    }),
                restart_count: 0,
                uris: Vec::new(),
            });
        }
    }
    observed
}
