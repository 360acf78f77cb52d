use std::collections::BTreeMap;

use super::create::container_create_body;
use super::observe::{
    event_from_message, needs_start, published_uris, replica_state, split_log_frame,
};
use super::pull::split_image_reference;
use bollard::models::{
    ContainerCreateBody, ContainerState, ContainerStateStatusEnum, DeviceRequest, EventMessage,
    PortBinding, PortMap, RestartPolicyNameEnum,
};

use super::*;
use crate::runtime::{PortExposure, Protocol, ReplicaState, ServiceDeployment, ServiceResources};

fn deployment(gpu_devices: Vec<Vec<String>>) -> LeaseDeployment {
    let resources = ServiceResources {
        cpu_millis: 500,
        memory_bytes: 256 * 1024 * 1024,
        storage_bytes: 1 << 30,
    };
    let service = ServiceDeployment {
        command: vec!["sh".into(), "-c".into()],
        args: vec!["exec httpd -f".into()],
        env: BTreeMap::from([("MODE".to_owned(), "fast".to_owned())]),
        expose: vec![
            PortExposure::global(80, Protocol::Tcp),
            PortExposure {
                global: false,
                ..PortExposure::global(9000, Protocol::Udp)
            },
        ],
        replicas: u32::try_from(gpu_devices.len().max(1)).unwrap_or(1),
        gpu_devices,
        ..ServiceDeployment::new("infer", "leasehold/busybox:test", resources)
    };
    LeaseDeployment {
        lease_id: 9,
        tenant: "0x00000000000000000000000000000000000000bb".into(),
        services: vec![service],
    }
}

fn body_of(deployment: &LeaseDeployment, index: usize) -> ContainerCreateBody {
    let scope = RuntimeScope::default();
    let replica = deployment
        .replicas(&scope)
        .nth(index)
        .expect("replica exists");
    container_create_body(&scope, deployment, &replica, "leasehold-lease-9", "0.0.0.0")
        .expect("valid body")
}

#[test]
fn create_body_sets_limits_hardening_and_labels() {
    let deployment = deployment(vec![]);
    let body = body_of(&deployment, 0);
    let host = body.host_config.clone().expect("host config");
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(256 * 1024 * 1024));
    assert_eq!(host.memory_swap, host.memory);
    assert_eq!(host.pids_limit, Some(PIDS_LIMIT));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges".to_owned()])
    );
    assert_eq!(host.privileged, Some(false));
    assert!(host.binds.is_none() && host.mounts.is_none());
    assert!(host.device_requests.is_none());
    assert_eq!(host.network_mode.as_deref(), Some("leasehold-lease-9"));
    let policy = host.restart_policy.expect("restart policy");
    assert_eq!(policy.name, Some(RestartPolicyNameEnum::ON_FAILURE));
    assert_eq!(policy.maximum_retry_count, Some(MAX_RESTART_RETRIES));
    let bindings = host.port_bindings.expect("port bindings");
    assert_eq!(bindings.len(), 1, "only the global port is published");
    let binding = bindings
        .get("80/tcp")
        .cloned()
        .flatten()
        .expect("80/tcp published");
    assert_eq!(binding[0].host_ip.as_deref(), Some("0.0.0.0"));
    assert_eq!(binding[0].host_port.as_deref(), Some(""));
    assert_eq!(
        body.exposed_ports,
        Some(vec!["80/tcp".to_owned(), "9000/udp".to_owned()])
    );
    assert_eq!(
        body.entrypoint,
        Some(vec!["sh".to_owned(), "-c".to_owned()])
    );
    assert_eq!(body.cmd, Some(vec!["exec httpd -f".to_owned()]));
    assert_eq!(body.env, Some(vec!["MODE=fast".to_owned()]));
    let labels = body.labels.expect("labels");
    assert_eq!(labels.get(LABEL_LEASE).map(String::as_str), Some("9"));
    assert_eq!(labels.get(LABEL_SERVICE).map(String::as_str), Some("infer"));
    let endpoints = body
        .networking_config
        .and_then(|n| n.endpoints_config)
        .expect("endpoints");
    let aliases = endpoints
        .get("leasehold-lease-9")
        .and_then(|e| e.aliases.clone());
    assert_eq!(aliases, Some(vec!["infer".to_owned()]));
}

#[test]
fn create_body_requests_gpus_by_device_id_per_replica() {
    let deployment = deployment(vec![vec!["0".into()], vec!["GPU-abc".into(), "3".into()]]);
    let requests = body_of(&deployment, 1)
        .host_config
        .and_then(|host| host.device_requests)
        .expect("device requests");
    assert_eq!(
        requests,
        vec![DeviceRequest {
            driver: Some("nvidia".into()),
            device_ids: Some(vec!["GPU-abc".into(), "3".into()]),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }]
    );
    let first = body_of(&deployment, 0)
        .host_config
        .and_then(|host| host.device_requests);
    assert_eq!(
        first.and_then(|r| r[0].device_ids.clone()),
        Some(vec!["0".to_owned()])
    );
}

#[test]
fn fixed_host_ports_are_requested() {
    let mut deployment = deployment(vec![]);
    deployment.services[0].expose[0].host_port = Some(18080);
    let bindings = body_of(&deployment, 0)
        .host_config
        .and_then(|host| host.port_bindings)
        .expect("bindings");
    let binding = bindings.get("80/tcp").cloned().flatten().expect("80/tcp");
    assert_eq!(binding[0].host_port.as_deref(), Some("18080"));
}

/// A leased exposure is bound on its address only, on its own port when that is free
/// there, and on an engine-chosen port when it is taken or the service has replicas.
#[test]
fn leased_exposures_bind_their_address_on_their_own_port_when_free() {
    let address: std::net::IpAddr = "127.0.0.5".parse().unwrap();
    let taken = std::net::TcpListener::bind((address, 0)).expect("127.0.0.5 is on lo");
    let taken_port = taken.local_addr().unwrap().port();
    let free_port = std::net::TcpListener::bind((address, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let binding_for = |external_port: u16, replicas: u32| {
        let mut deployment = deployment(vec![]);
        let service = &mut deployment.services[0];
        service.replicas = replicas;
        service.expose[0].external_port = external_port;
        service.expose[0].leased_ip = Some(address);
        let bindings = body_of(&deployment, 0)
            .host_config
            .and_then(|host| host.port_bindings)
            .expect("bindings");
        bindings.get("80/tcp").cloned().flatten().expect("80/tcp")[0].clone()
    };
    let free = binding_for(free_port, 1);
    assert_eq!(free.host_ip.as_deref(), Some("127.0.0.5"));
    assert_eq!(free.host_port, Some(free_port.to_string()));
    assert_eq!(binding_for(taken_port, 1).host_port.as_deref(), Some(""));
    assert_eq!(binding_for(free_port, 2).host_port.as_deref(), Some(""));
    drop(taken);
}

#[test]
fn image_references_split_into_name_and_tag() {
    let cases = [
        ("nginx", "nginx", Some("latest")),
        ("nginx:1.25", "nginx", Some("1.25")),
        (
            "registry.local:5000/team/app",
            "registry.local:5000/team/app",
            Some("latest"),
        ),
        (
            "registry.local:5000/team/app:v2",
            "registry.local:5000/team/app",
            Some("v2"),
        ),
        ("app@sha256:abcd", "app@sha256:abcd", None),
    ];
    for (reference, name, tag) in cases {
        assert_eq!(
            split_image_reference(reference),
            (name.to_owned(), tag.map(str::to_owned)),
            "{reference}"
        );
    }
}

fn state(status: ContainerStateStatusEnum, exit_code: i64) -> ContainerState {
    ContainerState {
        status: Some(status),
        exit_code: Some(exit_code),
        ..Default::default()
    }
}

#[test]
fn docker_states_map_to_replica_states() {
    use ContainerStateStatusEnum as S;
    assert_eq!(
        replica_state(Some(&state(S::RUNNING, 0))),
        ReplicaState::Running
    );
    assert_eq!(
        replica_state(Some(&state(S::CREATED, 0))),
        ReplicaState::Pending
    );
    assert_eq!(
        replica_state(Some(&state(S::RESTARTING, 3))),
        ReplicaState::Restarting {
            last_exit_code: Some(3)
        }
    );
    assert_eq!(
        replica_state(Some(&state(S::EXITED, 3))),
        ReplicaState::Exited {
            exit_code: 3,
            oom_killed: false
        }
    );
    assert_eq!(
        replica_state(Some(&state(S::PAUSED, 0))),
        ReplicaState::Other("paused".into())
    );
    assert_eq!(replica_state(None), ReplicaState::Other("unknown".into()));
}

#[test]
fn deploy_restarts_only_what_the_restart_policy_did_not_give_up_on() {
    use ContainerStateStatusEnum as S;
    assert!(needs_start(Some(&state(S::CREATED, 0)), 0));
    assert!(!needs_start(Some(&state(S::RUNNING, 0)), 0));
    assert!(!needs_start(Some(&state(S::RESTARTING, 3)), 2));
    assert!(needs_start(Some(&state(S::EXITED, 0)), 0));
    assert!(needs_start(Some(&state(S::EXITED, 137)), 0));
    assert!(!needs_start(
        Some(&state(S::EXITED, 3)),
        MAX_RESTART_RETRIES
    ));
}

#[test]
fn published_ports_become_uris() {
    let exposures = BTreeMap::from([((80, Protocol::Tcp), 80), ((53, Protocol::Udp), 53)]);
    let ports: PortMap = HashMap::from([
        (
            "80/tcp".to_owned(),
            Some(vec![PortBinding {
                host_ip: Some("0.0.0.0".into()),
                host_port: Some("49153".into()),
            }]),
        ),
        ("53/udp".to_owned(), None),
        (
            "9000/tcp".to_owned(),
            Some(vec![PortBinding {
                host_ip: Some("0.0.0.0".into()),
                host_port: Some("49154".into()),
            }]),
        ),
    ]);
    assert_eq!(
        published_uris(Some(&ports), &exposures, "provider.example", "0.0.0.0"),
        vec!["http://provider.example:49153"]
    );
    assert!(published_uris(None, &exposures, "h", "0.0.0.0").is_empty());
    // A port on the lease's leased IP is reached at that address.
    let leased: PortMap = HashMap::from([(
        "53/udp".to_owned(),
        Some(vec![PortBinding {
            host_ip: Some("203.0.113.9".into()),
            host_port: Some("53".into()),
        }]),
    )]);
    assert_eq!(
        published_uris(Some(&leased), &exposures, "provider.example", "0.0.0.0"),
        vec!["udp://203.0.113.9:53"]
    );
}

#[test]
fn log_frames_split_into_timestamped_lines() {
    let frame = b"2026-11-22T02:54:02.123456789Z hello world\n";
    assert_eq!(
        split_log_frame(frame),
        vec![(
            Some("2026-11-22T02:54:02.123456789Z".to_owned()),
            b"hello world".to_vec()
        )]
    );
    let two = b"2026-11-22T02:54:02Z a\n2026-11-22T02:54:03Z b\n";
    let lines: Vec<Vec<u8>> = split_log_frame(two)
        .into_iter()
        .map(|(_, line)| line)
        .collect();
    assert_eq!(lines, vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(
        split_log_frame(b"no timestamp here"),
        vec![(None, b"no timestamp here".to_vec())]
    );
}

#[test]
fn engine_events_map_to_runtime_events() {
    let message = EventMessage {
        action: Some("die".into()),
        actor: Some(bollard::models::EventActor {
            id: Some("abc".into()),
            attributes: Some(HashMap::from([
                ("exitCode".to_owned(), "3".to_owned()),
                (LABEL_SERVICE.to_owned(), "web".to_owned()),
                (LABEL_REPLICA.to_owned(), "1".to_owned()),
            ])),
        }),
        ..Default::default()
    };
    let event = event_from_message(5, message);
    assert_eq!(event.kind, RuntimeEventKind::Died { exit_code: Some(3) });
    assert_eq!(event.service.as_deref(), Some("web"));
    assert_eq!(event.replica, Some(1));
}

#[test]
fn ram_volumes_resize_dev_shm_and_mount_sized_tmpfs() {
    use bollard::models::{Mount, MountTmpfsOptions, MountType};

    use crate::runtime::{RamVolume, SHARED_MEMORY_MOUNT};

    let mut deployment = deployment(vec![]);
    deployment.services[0].ram_volumes = vec![
        RamVolume {
            name: "shm".into(),
            mount: SHARED_MEMORY_MOUNT.into(),
            size_bytes: 64 * 1024 * 1024,
        },
        RamVolume {
            name: "scratch".into(),
            mount: "/scratch".into(),
            size_bytes: 16 * 1024 * 1024,
        },
    ];
    let host = body_of(&deployment, 0).host_config.expect("host config");
    assert_eq!(host.shm_size, Some(64 * 1024 * 1024));
    assert_eq!(
        host.mounts,
        Some(vec![Mount {
            target: Some("/scratch".into()),
            typ: Some(MountType::TMPFS),
            tmpfs_options: Some(MountTmpfsOptions {
                size_bytes: Some(16 * 1024 * 1024),
                mode: Some(0o1777),
                ..Default::default()
            }),
            ..Default::default()
        }])
    );
    assert!(host.binds.is_none(), "never a host path");
    assert_eq!(
        host.memory,
        Some(256 * 1024 * 1024),
        "the memory limit is the service's, ram volumes included"
    );
    // A ram volume bigger than the memory that must hold it is refused.
    deployment.services[0].ram_volumes[0].size_bytes = 1 << 30;
    let error = deployment.validate().expect_err("does not fit").to_string();
    assert!(error.contains("services.infer.ram_volumes"), "{error}");
}

#[test]
fn each_gpu_replica_sees_exactly_its_own_devices() {
    use super::NVIDIA_VISIBLE_DEVICES;

    let mut gpus = deployment(vec![vec!["0".into()], vec!["GPU-abc".into(), "3".into()]]);
    // A tenant cannot widen what a replica sees.
    gpus.services[0]
        .env
        .insert(NVIDIA_VISIBLE_DEVICES.into(), "all".into());
    let env = |index| body_of(&gpus, index).env.expect("env");
    assert_eq!(
        env(0),
        vec![
            "MODE=fast".to_owned(),
            "NVIDIA_VISIBLE_DEVICES=0".to_owned()
        ]
    );
    assert_eq!(
        env(1),
        vec![
            "MODE=fast".to_owned(),
            "NVIDIA_VISIBLE_DEVICES=GPU-abc,3".to_owned()
        ]
    );
    // Without GPUs the variable is the tenant's own business.
    let mut plain = deployment(vec![]);
    plain.services[0]
        .env
        .insert(NVIDIA_VISIBLE_DEVICES.into(), "none".into());
    assert!(
        body_of(&plain, 0)
            .env
            .expect("env")
            .contains(&"NVIDIA_VISIBLE_DEVICES=none".to_owned())
    );
}

#[test]
fn gpu_leases_need_the_nvidia_runtime_and_say_how_to_get_it() {
    use super::engine::check_gpu_runtime;

    let gpus = deployment(vec![vec!["0".into()]]);
    let error = check_gpu_runtime(&gpus, false)
        .expect_err("no runtime")
        .to_string();
    assert!(
        error.contains("nvidia") && error.contains("nvidia-ctk"),
        "{error}"
    );
    assert!(
        crate::runtime::RuntimeError::Unsupported {
            what: String::new(),
            reason: String::new()
        }
        .is_workload_fault(),
        "permanent: retrying cannot help, so the lease ends and the tenant is refunded"
    );
    assert!(check_gpu_runtime(&gpus, true).is_ok());
    assert!(check_gpu_runtime(&deployment(vec![]), false).is_ok());
}
