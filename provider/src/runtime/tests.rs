use super::*;

const TENANT: &str = "0x00000000000000000000000000000000000000aa";

fn web_service() -> ServiceDeployment {
    let resources = ServiceResources {
        cpu_millis: 250,
        memory_bytes: 64 * 1024 * 1024,
        storage_bytes: 0,
    };
    ServiceDeployment {
        expose: vec![PortExposure {
            external_port: 80,
            ..PortExposure::global(8080, Protocol::Tcp)
        }],
        replicas: 2,
        ..ServiceDeployment::new("web", "leasehold/busybox:test", resources)
    }
}

fn deployment() -> LeaseDeployment {
    LeaseDeployment {
        lease_id: 42,
        tenant: TENANT.into(),
        services: vec![web_service()],
    }
}

fn field_of(err: RuntimeError) -> String {
    match err {
        RuntimeError::InvalidDeployment { field, .. } => field,
        other => panic!("expected an invalid deployment, got {other}"),
    }
}

#[test]
fn names_are_deterministic_and_distinct_per_lease_and_scope() {
    let scope = RuntimeScope::new(31337, "0x00000000000000000000000000000000000000AA");
    let tag = scope.tag();
    assert_eq!(tag.len(), 6);
    assert_eq!(scope.provider, "0x00000000000000000000000000000000000000aa");
    assert_eq!(
        scope.replica_name(42, "web", 1),
        format!("leasehold-{tag}-42-web-1")
    );
    assert_ne!(
        scope.replica_name(4, "2-web", 1),
        scope.replica_name(42, "web", 1)
    );
    assert_eq!(
        scope.lease_network_name(42),
        format!("leasehold-{tag}-lease-42")
    );
    let names: Vec<String> = deployment()
        .replicas(&scope)
        .map(|replica| replica.name)
        .collect();
    assert_eq!(
        names,
        vec![
            format!("leasehold-{tag}-42-web-0"),
            format!("leasehold-{tag}-42-web-1")
        ]
    );
    // Another chain or another provider: other names, same lease id.
    let other_chain = RuntimeScope::new(1, &scope.provider);
    let other_provider = RuntimeScope::new(31337, TENANT.replace("aa", "ab"));
    for other in [other_chain, other_provider] {
        assert_ne!(other.tag(), tag);
        assert_ne!(
            other.replica_name(42, "web", 1),
            scope.replica_name(42, "web", 1)
        );
        assert_ne!(other.labels(), scope.labels());
    }
}

#[test]
fn replica_labels_name_scope_lease_service_and_replica() {
    let deployment = deployment();
    let scope = RuntimeScope::new(5, TENANT);
    let replica = deployment.replicas(&scope).nth(1).expect("two replicas");
    let labels = deployment.replica_labels(&scope, &replica);
    assert_eq!(labels.get(LABEL_CHAIN).map(String::as_str), Some("5"));
    assert_eq!(labels.get(LABEL_PROVIDER).map(String::as_str), Some(TENANT));
    let read = |key: &str| labels.get(key).cloned();
    assert!(scope.owns(&read));
    assert!(!RuntimeScope::new(6, TENANT).owns(&read));
    assert_eq!(labels.get(LABEL_LEASE).map(String::as_str), Some("42"));
    assert_eq!(labels.get(LABEL_TENANT).map(String::as_str), Some(TENANT));
    assert_eq!(labels.get(LABEL_SERVICE).map(String::as_str), Some("web"));
    assert_eq!(labels.get(LABEL_REPLICA).map(String::as_str), Some("1"));
    assert_eq!(labels.get(LABEL_REPLICAS).map(String::as_str), Some("2"));
    assert_eq!(
        labels.get(LABEL_EXPOSE).map(String::as_str),
        Some("8080/tcp=80")
    );
    assert_eq!(lease_selector(42), "io.leasehold.lease=42");
    assert_eq!(parse_lease_label("42"), Some(42));
    assert_eq!(parse_lease_label("x"), None);
}

#[test]
fn exposures_round_trip_through_the_label_and_skip_local_ports() {
    let expose = vec![
        PortExposure {
            external_port: 80,
            ..PortExposure::global(8080, Protocol::Tcp)
        },
        PortExposure {
            external_port: 5353,
            ..PortExposure::global(53, Protocol::Udp)
        },
        PortExposure {
            global: false,
            ..PortExposure::global(9000, Protocol::Tcp)
        },
    ];
    let encoded = encode_exposures(&expose);
    assert_eq!(encoded, "8080/tcp=80,53/udp=5353");
    let decoded = decode_exposures(&encoded);
    assert_eq!(decoded.get(&(8080, Protocol::Tcp)), Some(&80));
    assert_eq!(decoded.get(&(53, Protocol::Udp)), Some(&5353));
    assert_eq!(decoded.len(), 2);
    assert!(decode_exposures("garbage,1/sctp=2,x/tcp=1").is_empty());
}

#[test]
fn uris_follow_the_exposed_port() {
    assert_eq!(
        service_uri("127.0.0.1", Protocol::Tcp, 80, 32768),
        "http://127.0.0.1:32768"
    );
    // Nothing terminates TLS in front of a published port: `as: 443` is raw TCP.
    assert_eq!(
        service_uri("example.org", Protocol::Tcp, 443, 1),
        "tcp://example.org:1"
    );
    assert_eq!(
        service_uri("example.org", Protocol::Tcp, 5432, 2),
        "tcp://example.org:2"
    );
    assert_eq!(
        service_uri("example.org", Protocol::Udp, 80, 3),
        "udp://example.org:3"
    );
    assert_eq!(service_uri("::1", Protocol::Tcp, 80, 4), "http://[::1]:4");
}

#[test]
fn resources_convert_with_overflow_checks() {
    let resources = ServiceResources {
        cpu_millis: 1500,
        memory_bytes: 128 * 1024 * 1024,
        storage_bytes: 0,
    };
    assert_eq!(resources.nano_cpus().ok(), Some(1_500_000_000));
    assert_eq!(resources.memory_limit_bytes().ok(), Some(134_217_728));
    let huge = ServiceResources {
        cpu_millis: u64::MAX / 10,
        memory_bytes: u64::MAX,
        storage_bytes: 0,
    };
    assert!(huge.nano_cpus().is_err());
    assert!(huge.memory_limit_bytes().is_err());
}

#[test]
fn validation_names_the_field() {
    assert!(deployment().validate().is_ok());

    let mut bad = deployment();
    bad.tenant = "0x12".into();
    assert_eq!(field_of(bad.validate().unwrap_err()), "tenant");

    let mut bad = deployment();
    bad.services[0].name = "Web_1".into();
    assert_eq!(field_of(bad.validate().unwrap_err()), "services.Web_1.name");

    let mut bad = deployment();
    bad.services.push(web_service());
    assert_eq!(field_of(bad.validate().unwrap_err()), "services.web");

    let mut bad = deployment();
    bad.services[0].resources.cpu_millis = 0;
    assert_eq!(
        field_of(bad.validate().unwrap_err()),
        "services.web.resources.cpu_millis"
    );

    let mut bad = deployment();
    bad.services[0].resources.memory_bytes = 1024;
    assert_eq!(
        field_of(bad.validate().unwrap_err()),
        "services.web.resources.memory_bytes"
    );

    let mut bad = deployment();
    bad.services[0].replicas = 0;
    assert_eq!(
        field_of(bad.validate().unwrap_err()),
        "services.web.replicas"
    );

    let mut bad = deployment();
    bad.services[0].expose[0].host_port = Some(8080);
    assert_eq!(field_of(bad.validate().unwrap_err()), "services.web.expose");

    let mut bad = deployment();
    bad.services[0].gpu_devices = vec![vec!["0".into()]];
    assert_eq!(
        field_of(bad.validate().unwrap_err()),
        "services.web.gpu_devices"
    );

    let mut bad = deployment();
    bad.services[0].env.insert("A=B".into(), "x".into());
    assert_eq!(field_of(bad.validate().unwrap_err()), "services.web.env");

    let mut bad = deployment();
    bad.services.clear();
    assert_eq!(field_of(bad.validate().unwrap_err()), "services");

    for image in ["busybox\0:test", "busybox\u{1b}[2J", "busy box"] {
        let mut bad = deployment();
        bad.services[0].image = image.into();
        let error = bad.validate().unwrap_err().to_string();
        assert!(error.contains("services.web.image"), "{error}");
        assert!(!error.chars().any(char::is_control), "raw in {error:?}");
    }

    let mut bad = deployment();
    bad.services[0].resources.memory_bytes = MIN_MEMORY_BYTES - 1;
    assert_eq!(
        field_of(bad.validate().unwrap_err()),
        "services.web.resources.memory_bytes"
    );
}

#[test]
fn spec_hash_changes_with_what_the_replica_runs() {
    let base = deployment();
    let hash = |deployment: &LeaseDeployment, index: usize| {
        deployment
            .replicas(&RuntimeScope::default())
            .nth(index)
            .expect("replica")
            .spec_hash()
    };
    assert_eq!(hash(&base, 0), hash(&deployment(), 0), "deterministic");
    assert_eq!(
        hash(&base, 0),
        hash(&base, 1),
        "replicas of a service share a spec"
    );
    assert_eq!(hash(&base, 0).len(), 16);
    let mut changed = deployment();
    changed.services[0].env.insert("A".into(), "1".into());
    assert_ne!(hash(&changed, 0), hash(&base, 0));
    let mut changed = deployment();
    changed.services[0].command = vec!["ab".into(), "c".into()];
    let mut shifted = deployment();
    shifted.services[0].command = vec!["a".into(), "bc".into()];
    assert_ne!(hash(&changed, 0), hash(&shifted, 0));
    let mut changed = deployment();
    changed.services[0].resources.memory_bytes += 1;
    assert_ne!(hash(&changed, 0), hash(&base, 0));
    let mut changed = deployment();
    changed.services[0].gpu_devices = vec![vec!["0".into()], vec!["1".into()]];
    assert_ne!(
        hash(&changed, 0),
        hash(&changed, 1),
        "different devices, different spec"
    );
}

#[test]
fn gpu_devices_are_assigned_per_replica() {
    let mut deployment = deployment();
    deployment.services[0].gpu_devices = vec![vec!["0".into()], vec!["1".into(), "2".into()]];
    assert!(deployment.validate().is_ok());
    let devices: Vec<Vec<String>> = deployment
        .replicas(&RuntimeScope::default())
        .map(|replica| replica.gpu_devices.to_vec())
        .collect();
    assert_eq!(
        devices,
        vec![
            vec!["0".to_string()],
            vec!["1".to_string(), "2".to_string()]
        ]
    );
}

#[test]
fn status_fills_missing_replicas_and_counts_ready_ones() {
    let observed = vec![
        ObservedReplica {
            service: "web".into(),
            replica: 2,
            service_replicas: 3,
            state: ReplicaState::Exited {
                exit_code: 3,
                oom_killed: false,
            },
            restart_count: 5,
            uris: vec![],
        },
        ObservedReplica {
            service: "web".into(),
            replica: 0,
            service_replicas: 3,
            state: ReplicaState::Running,
            restart_count: 0,
            uris: vec!["http://h:2".into(), "http://h:1".into()],
        },
    ];
    let status = LeaseRuntimeStatus::from_observed(7, observed);
    let web = status.service("web").expect("web service");
    assert_eq!(web.total_replicas, 3);
    assert_eq!(web.ready_replicas, 1);
    assert_eq!(web.uris, vec!["http://h:1", "http://h:2"]);
    let states: Vec<String> = web.replicas.iter().map(|r| r.state.to_string()).collect();
    assert_eq!(states, vec!["running", "missing", "exited with code 3"]);
    assert!(!status.is_ready());
    assert!(!LeaseRuntimeStatus::default().is_ready());
}
