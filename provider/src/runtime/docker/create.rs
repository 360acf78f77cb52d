//! The container a replica runs in: limits, hardening, ports, labels, network.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, DeviceRequest, EndpointSettings, HostConfig, HostConfigLogConfig,
    NetworkingConfig, PortBinding, PortMap, RestartPolicy, RestartPolicyNameEnum,
};

use super::{LOG_MAX_FILES, LOG_MAX_SIZE, MAX_RESTART_RETRIES, PIDS_LIMIT};
use crate::runtime::{LeaseDeployment, Protocol, ReplicaSpec, RuntimeError, RuntimeScope};

/// The container for one replica: limits, hardening, ports, labels, network.
pub fn container_create_body(
    scope: &RuntimeScope,
    deployment: &LeaseDeployment,
    replica: &ReplicaSpec<'_>,
    network: &str,
    bind_ip: &str,
) -> Result<ContainerCreateBody, RuntimeError> {
    let service = replica.service;
    let port_key = |port: u16, proto: Protocol| format!("{port}/{proto}");
    let exposed_ports = service
        .expose
        .iter()
        .map(|exposure| port_key(exposure.port, exposure.proto))
        .collect();
    let port_bindings: PortMap = service
        .expose
        .iter()
        .filter(|exposure| exposure.global)
        .map(|exposure| {
            let binding = PortBinding {
                host_ip: Some(bind_ip.to_owned()),
                // Empty asks the engine for a free ephemeral port.
                host_port: Some(
                    exposure
                        .host_port
                        .map(|port| port.to_string())
                        .unwrap_or_default(),
                ),
            };
            (port_key(exposure.port, exposure.proto), Some(vec![binding]))
        })
        .collect();
    let device_requests = (!replica.gpu_devices.is_empty()).then(|| {
        vec![DeviceRequest {
            driver: Some("nvidia".to_owned()),
            device_ids: Some(replica.gpu_devices.to_vec()),
            capabilities: Some(vec![vec!["gpu".to_owned()]]),
            ..Default::default()
        }]
    });
    let memory = service.resources.memory_limit_bytes()?;
    let host_config = HostConfig {
        nano_cpus: Some(service.resources.nano_cpus()?),
        memory: Some(memory),
        // Equal to Memory: no swap on top of the limit.
        memory_swap: Some(memory),
        pids_limit: Some(PIDS_LIMIT),
        cap_drop: Some(vec!["ALL".to_owned()]),
        security_opt: Some(vec!["no-new-privileges".to_owned()]),
        privileged: Some(false),
        binds: None,
        mounts: None,
        publish_all_ports: Some(false),
        port_bindings: Some(port_bindings),
        network_mode: Some(network.to_owned()),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::ON_FAILURE),
            maximum_retry_count: Some(MAX_RESTART_RETRIES),
        }),
        device_requests,
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".to_owned()),
            config: Some(HashMap::from([
                ("max-size".to_owned(), LOG_MAX_SIZE.to_owned()),
                ("max-file".to_owned(), LOG_MAX_FILES.to_owned()),
            ])),
        }),
        ..Default::default()
    };
    let endpoint = EndpointSettings {
        // Other services of the lease reach this one by its service name.
        aliases: Some(vec![service.name.clone()]),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(service.image.clone()),
        entrypoint: (!service.command.is_empty()).then(|| service.command.clone()),
        cmd: (!service.args.is_empty()).then(|| service.args.clone()),
        env: Some(
            service
                .env
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect(),
        ),
        exposed_ports: Some(exposed_ports),
        labels: Some(
            deployment
                .replica_labels(scope, replica)
                .into_iter()
                .collect(),
        ),
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(network.to_owned(), endpoint)])),
        }),
        ..Default::default()
    })
}
