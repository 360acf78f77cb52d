//! The container a replica runs in: limits, hardening, ports, labels, network.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, DeviceRequest, EndpointSettings, HostConfig, HostConfigLogConfig, Mount,
    MountTmpfsOptions, MountType, NetworkingConfig, PortBinding, PortMap, RestartPolicy,
    RestartPolicyNameEnum,
};

use super::volumes::volume_mounts;
use super::{LOG_MAX_FILES, LOG_MAX_SIZE, MAX_RESTART_RETRIES, PIDS_LIMIT};
use crate::runtime::{
    LeaseDeployment, PortExposure, Protocol, RamVolume, ReplicaSpec, RuntimeError, RuntimeScope,
    invalid,
};

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
                host_ip: Some(
                    exposure
                        .leased_ip
                        .map_or_else(|| bind_ip.to_owned(), |address| address.to_string()),
                ),
                // Empty asks the engine for a free ephemeral port.
                host_port: Some(
                    host_port(exposure, service.replicas)
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
    let (shm_size, ram_mounts) = ram_mounts(&service.name, &service.ram_volumes)?;
    let mounts: Vec<Mount> = volume_mounts(scope, deployment, replica)
        .into_iter()
        .chain(ram_mounts)
        .collect();
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
        mounts: (!mounts.is_empty()).then_some(mounts),
        shm_size,
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
    let mut env: Vec<String> = service
        .env
        .iter()
        .filter(|(key, _)| !replica_owns_env(replica, key))
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    if !replica.gpu_devices.is_empty() {
        // The replica's own devices, whatever the image or the tenant set: CUDA and the
        // NVIDIA hook read it, and another replica's GPUs must stay invisible.
        env.push(format!(
            "{NVIDIA_VISIBLE_DEVICES}={}",
            replica.gpu_devices.join(",")
        ));
    }
    Ok(ContainerCreateBody {
        image: Some(service.image.clone()),
        entrypoint: (!service.command.is_empty()).then(|| service.command.clone()),
        cmd: (!service.args.is_empty()).then(|| service.args.clone()),
        env: Some(env),
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

/// The variable naming the GPUs a container sees (NVIDIA container toolkit).
pub const NVIDIA_VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";

/// Whether the provider sets `key` for this replica, overriding the manifest.
fn replica_owns_env(replica: &ReplicaSpec<'_>, key: &str) -> bool {
    !replica.gpu_devices.is_empty() && key == NVIDIA_VISIBLE_DEVICES
}

/// The replica's `ram` volumes: `/dev/shm` resized with `ShmSize`, any other mount a tmpfs
/// of its size. Both are charged to the container's memory cgroup, whose limit counts them.
fn ram_mounts(
    service: &str,
    volumes: &[RamVolume],
) -> Result<(Option<i64>, Vec<Mount>), RuntimeError> {
    let size = |volume: &RamVolume| {
        i64::try_from(volume.size_bytes).map_err(|_| {
            invalid(
                format!("services.{service}.volumes.{}", volume.name),
                "too large",
            )
        })
    };
    let mut shm_size = None;
    let mut mounts = Vec::new();
    for volume in volumes {
        if volume.is_shared_memory() {
            shm_size = Some(size(volume)?);
            continue;
        }
        mounts.push(Mount {
            target: Some(volume.mount.clone()),
            typ: Some(MountType::TMPFS),
            tmpfs_options: Some(MountTmpfsOptions {
                size_bytes: Some(size(volume)?),
                // World-writable with the sticky bit, as /dev/shm: the image's user may
                // not be root.
                mode: Some(0o1777),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    Ok((shm_size, mounts))
}

/// The host port to ask the engine for. On a leased address the service keeps its own
/// port (`as`, else the container port) when one replica can take it and it is free there;
/// otherwise, like every other exposure, the engine picks a free one.
fn host_port(exposure: &PortExposure, replicas: u32) -> Option<u16> {
    if exposure.host_port.is_some() {
        return exposure.host_port;
    }
    let address = exposure.leased_ip?;
    let port = exposure.external_port;
    let free = match exposure.proto {
        Protocol::Tcp => std::net::TcpListener::bind((address, port)).is_ok(),
        Protocol::Udp => std::net::UdpSocket::bind((address, port)).is_ok(),
    };
    (replicas == 1 && free).then_some(port)
}

/// Keeps the host ports a replaced container was given: every binding of `body` that asks
/// the engine for a free port (empty host port) gets the port `previous` (the old
/// container's `NetworkSettings.Ports`) had for the same container port and protocol, so a
/// rolled service (update in place) stays at the same URL.
pub fn pin_host_ports(body: &mut ContainerCreateBody, previous: &PortMap) {
    let Some(bindings) = body
        .host_config
        .as_mut()
        .and_then(|host| host.port_bindings.as_mut())
    else {
        return;
    };
    for (key, wanted) in bindings.iter_mut() {
        let assigned = previous
            .get(key)
            .into_iter()
            .flatten()
            .flatten()
            .find_map(|binding| binding.host_port.clone().filter(|port| !port.is_empty()));
        let Some(assigned) = assigned else {
            continue;
        };
        for binding in wanted.iter_mut().flatten() {
            if binding.host_port.as_deref().is_none_or(str::is_empty) {
                binding.host_port = Some(assigned.clone());
            }
        }
    }
}

#[cfg(test)]
mod pin_tests {
    use super::*;

    fn binding(host_port: &str) -> Option<Vec<PortBinding>> {
        Some(vec![PortBinding {
            host_ip: Some("127.0.0.1".to_owned()),
            host_port: Some(host_port.to_owned()),
        }])
    }

    #[test]
    fn a_replaced_container_keeps_the_host_port_of_each_expose() {
        let mut body = ContainerCreateBody {
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([
                    ("80/tcp".to_owned(), binding("")),
                    ("53/udp".to_owned(), binding("")),
                    ("9000/tcp".to_owned(), binding("19000")),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let previous: PortMap = HashMap::from([
            ("80/tcp".to_owned(), binding("32768")),
            ("9000/tcp".to_owned(), binding("40000")),
            ("8080/tcp".to_owned(), binding("32769")),
        ]);
        pin_host_ports(&mut body, &previous);
        let ports = body.host_config.unwrap().port_bindings.unwrap();
        let host_port = |key: &str| ports[key].as_ref().unwrap()[0].host_port.clone().unwrap();
        assert_eq!(host_port("80/tcp"), "32768", "the old container's port");
        assert_eq!(host_port("53/udp"), "", "a new expose gets a free port");
        assert_eq!(
            host_port("9000/tcp"),
            "19000",
            "a fixed port stays as asked"
        );
    }
}
