//! Reading the engine's view back: container states, published ports, log frames
//! and engine events, in runtime-neutral terms.

use std::collections::{BTreeSet, HashMap};

use bollard::models::{
    ContainerState, ContainerStateStatusEnum, ContainerSummary, EventMessage, PortMap,
};

use super::MAX_RESTART_RETRIES;
use crate::runtime::{
    LABEL_REPLICA, LABEL_SERVICE, Protocol, ReplicaState, RuntimeEvent, RuntimeEventKind,
    service_uri,
};

/// Whether deploy should start this container: a fresh one, or one that
/// stopped without its restart policy having given up on it (host or engine
/// restart, clean exit). A crash loop that exhausted its retries stays down so
/// that status keeps showing why.
pub(super) fn needs_start(state: Option<&ContainerState>, restart_count: i64) -> bool {
    match state.and_then(|state| state.status) {
        Some(ContainerStateStatusEnum::CREATED) => true,
        Some(ContainerStateStatusEnum::EXITED) => {
            let exit_code = state.and_then(|state| state.exit_code).unwrap_or(0);
            exit_code == 0 || restart_count < MAX_RESTART_RETRIES
        }
        _ => false,
    }
}

/// The runtime-neutral view of Docker's container state.
pub fn replica_state(state: Option<&ContainerState>) -> ReplicaState {
    let Some(state) = state else {
        return ReplicaState::Other("unknown".to_owned());
    };
    match state.status {
        Some(ContainerStateStatusEnum::CREATED) => ReplicaState::Pending,
        Some(ContainerStateStatusEnum::RUNNING) => ReplicaState::Running,
        Some(ContainerStateStatusEnum::RESTARTING) => ReplicaState::Restarting {
            last_exit_code: state.exit_code,
        },
        Some(ContainerStateStatusEnum::EXITED) => ReplicaState::Exited {
            exit_code: state.exit_code.unwrap_or(0),
            oom_killed: state.oom_killed.unwrap_or(false),
        },
        Some(other) => ReplicaState::Other(other.to_string()),
        None => ReplicaState::Other("unknown".to_owned()),
    }
}

/// URIs of the published global ports the engine reports.
/// A port bound on another address than the runtime's `bind_ip` is on the lease's leased
/// IP, which is then the URI's host.
pub(super) fn published_uris(
    ports: Option<&PortMap>,
    exposures: &std::collections::BTreeMap<(u16, Protocol), u16>,
    public_host: &str,
    bind_ip: &str,
) -> Vec<String> {
    let Some(ports) = ports else {
        return Vec::new();
    };
    let mut uris = BTreeSet::new();
    for (key, bindings) in ports {
        let Some((port, proto)) = key
            .split_once('/')
            .and_then(|(port, proto)| Some((port.parse::<u16>().ok()?, Protocol::parse(proto)?)))
        else {
            continue;
        };
        let Some(external_port) = exposures.get(&(port, proto)) else {
            continue;
        };
        for binding in bindings.iter().flatten() {
            if let Some(host_port) = binding.host_port.as_deref().and_then(|p| p.parse().ok()) {
                let host = binding
                    .host_ip
                    .as_deref()
                    .filter(|ip| !ip.is_empty() && *ip != bind_ip)
                    .unwrap_or(public_host);
                uris.insert(service_uri(host, proto, *external_port, host_port));
            }
        }
    }
    uris.into_iter().collect()
}

/// Splits what Docker sends for one log frame into lines, each with the
/// RFC 3339 timestamp Docker prefixes when asked to.
pub fn split_log_frame(frame: &[u8]) -> Vec<(Option<String>, Vec<u8>)> {
    let frame = frame.strip_suffix(b"\n").unwrap_or(frame);
    frame
        .split(|byte| *byte == b'\n')
        .map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match line.iter().position(|byte| *byte == b' ') {
                Some(space) if looks_like_timestamp(line.get(..space).unwrap_or_default()) => (
                    std::str::from_utf8(line.get(..space).unwrap_or_default())
                        .ok()
                        .map(str::to_owned),
                    line.get(space + 1..).unwrap_or_default().to_vec(),
                ),
                _ => (None, line.to_vec()),
            }
        })
        .collect()
}

pub(super) fn looks_like_timestamp(text: &[u8]) -> bool {
    text.len() >= 20
        && text.get(4) == Some(&b'-')
        && text.get(10) == Some(&b'T')
        && text
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-:.+".contains(byte))
}

pub(super) fn event_from_message(lease_id: u64, message: EventMessage) -> RuntimeEvent {
    let attributes = message.actor.and_then(|actor| actor.attributes);
    let attribute = |key: &str| attributes.as_ref().and_then(|a| a.get(key)).cloned();
    let action = message.action.unwrap_or_default();
    let kind = match action.as_str() {
        "create" => RuntimeEventKind::Created,
        "start" => RuntimeEventKind::Started,
        "die" => RuntimeEventKind::Died {
            exit_code: attribute("exitCode").and_then(|code| code.parse().ok()),
        },
        "oom" => RuntimeEventKind::OutOfMemory,
        "destroy" => RuntimeEventKind::Removed,
        _ => RuntimeEventKind::Other { action },
    };
    RuntimeEvent {
        lease_id,
        service: attribute(LABEL_SERVICE),
        replica: attribute(LABEL_REPLICA).and_then(|n| n.parse().ok()),
        kind,
    }
}

pub(super) fn container_name(container: &ContainerSummary) -> Option<&str> {
    container
        .names
        .as_ref()?
        .first()
        .map(|name| name.trim_start_matches('/'))
}

pub(super) fn label<'a>(labels: Option<&'a HashMap<String, String>>, key: &str) -> Option<&'a str> {
    labels?.get(key).map(String::as_str)
}
