//! What an operator installs (`deploy/`) is checked here, since no image is built and no
//! cluster runs in CI: every Kubernetes manifest deserialises into its k8s-openapi type
//! (which checks `apiVersion` and `kind`), the objects refer to each other by the right
//! names, the RBAC grants what the Kubernetes runtime does, the ConfigMap's provider.toml
//! passes the daemon's own validation, and the systemd unit and Dockerfile have what they
//! need.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use leasehold_provider::config::{Config, RuntimeKind};
use serde::de::DeserializeOwned;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(relative: &str) -> String {
    let path = deploy_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn object<T: DeserializeOwned>(file: &str) -> T {
    serde_saphyr::from_str(&read(&format!("kubernetes/{file}")))
        .unwrap_or_else(|error| panic!("deploy/kubernetes/{file}: {error}"))
}

struct Objects {
    namespace: Namespace,
    account: ServiceAccount,
    role: ClusterRole,
    binding: ClusterRoleBinding,
    config: ConfigMap,
    claim: PersistentVolumeClaim,
    deployment: Deployment,
    service: Service,
}

fn objects() -> Objects {
    let files: Vec<String> = std::fs::read_dir(deploy_dir().join("kubernetes"))
        .expect("deploy/kubernetes")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(files.len(), 8, "a file here is checked below: {files:?}");
    Objects {
        namespace: object("namespace.yaml"),
        account: object("serviceaccount.yaml"),
        role: object("clusterrole.yaml"),
        binding: object("clusterrolebinding.yaml"),
        config: object("configmap.yaml"),
        claim: object("persistentvolumeclaim.yaml"),
        deployment: object("deployment.yaml"),
        service: object("service.yaml"),
    }
}

#[test]
fn the_kubernetes_objects_parse_and_refer_to_each_other() {
    let objects = objects();
    let namespace = objects
        .namespace
        .metadata
        .name
        .clone()
        .expect("namespace name");
    let in_namespace = |name: &str, actual: &Option<String>| {
        assert_eq!(
            actual.as_deref(),
            Some(namespace.as_str()),
            "{name}'s namespace"
        );
    };
    in_namespace("service account", &objects.account.metadata.namespace);
    in_namespace("config map", &objects.config.metadata.namespace);
    in_namespace("claim", &objects.claim.metadata.namespace);
    in_namespace("deployment", &objects.deployment.metadata.namespace);
    in_namespace("service", &objects.service.metadata.namespace);

    let account = objects.account.metadata.name.clone().expect("account name");
    assert_eq!(
        objects.binding.role_ref.name,
        objects.role.metadata.name.clone().expect("role name")
    );
    let subjects = objects.binding.subjects.clone().unwrap_or_default();
    assert!(
        subjects
            .iter()
            .any(|subject| subject.kind == "ServiceAccount"
                && subject.name == account
                && subject.namespace.as_deref() == Some(namespace.as_str())),
        "the binding names the provider's service account"
    );

    let spec = objects.deployment.spec.clone().expect("deployment spec");
    assert_eq!(spec.replicas, Some(1), "one daemon per provider account");
    assert_eq!(
        spec.strategy.and_then(|strategy| strategy.type_).as_deref(),
        Some("Recreate"),
        "never two daemons at once, not even during a rollout"
    );
    let pod = spec.template.spec.expect("pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some(account.as_str()));
    let labels = spec
        .template
        .metadata
        .and_then(|meta| meta.labels)
        .unwrap_or_default();
    let selector = spec.selector.match_labels.unwrap_or_default();
    assert!(
        selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
    );
    let service_selector = objects
        .service
        .spec
        .clone()
        .and_then(|spec| spec.selector)
        .unwrap_or_default();
    assert!(
        service_selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
    );

    let volumes: BTreeMap<String, _> = pod
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|volume| (volume.name.clone(), volume))
        .collect();
    let container = &pod.containers[0];
    let mount_of = |volume: &str| {
        container
            .volume_mounts
            .iter()
            .flatten()
            .find(|mount| mount.name == volume)
            .map(|mount| mount.mount_path.clone())
            .unwrap_or_else(|| panic!("volume {volume} is mounted"))
    };
    let config_volume = volumes
        .values()
        .find(|volume| volume.config_map.is_some())
        .expect("a config map volume");
    assert_eq!(
        config_volume
            .config_map
            .as_ref()
            .map(|source| source.name.as_str()),
        objects.config.metadata.name.as_deref()
    );
    let claim_volume = volumes
        .values()
        .find(|volume| volume.persistent_volume_claim.is_some())
        .expect("a data volume");
    assert_eq!(
        claim_volume
            .persistent_volume_claim
            .as_ref()
            .map(|claim| claim.claim_name.as_str()),
        objects.claim.metadata.name.as_deref()
    );
    let args = container.args.clone().unwrap_or_default();
    let config_path = format!("{}/provider.toml", mount_of(&config_volume.name));
    assert!(
        args.windows(2)
            .any(|pair| pair[0] == "--config" && pair[1] == config_path),
        "{args:?}"
    );
    assert!(args.iter().any(|arg| arg == "run"), "{args:?}");
    let key_from_secret = container.env.iter().flatten().any(|env| {
        env.name == "LEASEHOLD_PROVIDER_KEY"
            && env
                .value_from
                .as_ref()
                .is_some_and(|from| from.secret_key_ref.is_some())
    });
    assert!(key_from_secret, "the key comes from a Secret");

    // The config the daemon will load: valid, the Kubernetes runtime, data on the volume.
    let toml = objects
        .config
        .data
        .as_ref()
        .and_then(|data| data.get("provider.toml"))
        .expect("provider.toml in the config map");
    let config = Config::from_toml_str(toml, Path::new("deploy/kubernetes/configmap.yaml"))
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.runtime.kind, RuntimeKind::Kubernetes);
    assert_eq!(config.data_dir, PathBuf::from(mount_of(&claim_volume.name)));
    assert_eq!(
        config.key.private_key_env.as_deref(),
        Some("LEASEHOLD_PROVIDER_KEY")
    );
    let ports: Vec<i32> = container
        .ports
        .iter()
        .flatten()
        .map(|port| port.container_port)
        .collect();
    for listen in [
        Some(config.gateway.listen.clone()),
        config.metrics.listen.clone(),
    ]
    .into_iter()
    .flatten()
    {
        let port: i32 = listen
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("a port");
        assert!(ports.contains(&port), "{listen} is a container port");
    }
}

#[test]
fn the_cluster_role_grants_what_the_kubernetes_runtime_does() {
    let role = objects().role;
    let rules = role.rules.unwrap_or_default();
    let allows = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|rule| {
            rule.api_groups.iter().flatten().any(|g| g == group)
                && rule.resources.iter().flatten().any(|r| r == resource)
                && rule.verbs.iter().any(|v| v == verb)
        })
    };
    // Written by server-side apply and removed at teardown.
    let written = [
        ("", "namespaces"),
        ("", "services"),
        ("", "resourcequotas"),
        ("", "limitranges"),
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("networking.k8s.io", "networkpolicies"),
    ];
    for (group, resource) in written {
        for verb in ["get", "list", "create", "patch", "delete"] {
            assert!(allows(group, resource, verb), "{verb} {group}/{resource}");
        }
    }
    // Read for status, logs, events and the inventory.
    for (group, resource) in [
        ("", "pods"),
        ("", "pods/log"),
        ("", "events"),
        ("", "nodes"),
    ] {
        assert!(allows(group, resource, "get"), "get {resource}");
        assert!(allows(group, resource, "list"), "list {resource}");
    }
    // The lease's pull Secret is written and deleted by name, never read back.
    for verb in ["create", "patch", "delete"] {
        assert!(allows("", "secrets", verb), "{verb} secrets");
    }
    for verb in ["get", "list", "watch"] {
        assert!(
            !allows("", "secrets", verb),
            "no read access to the cluster's secrets ({verb})"
        );
    }
    assert!(!allows("", "nodes", "patch"), "nodes are read only");
}

/// `[Section]` -> key -> values (a key may repeat).
fn unit_file(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut current = None;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            current = Some(name.to_owned());
            sections.entry(name.to_owned()).or_default();
            continue;
        }
        let section = current
            .clone()
            .unwrap_or_else(|| panic!("line {}: a key before any section", number + 1));
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not key=value: {line}", number + 1));
        sections
            .entry(section)
            .or_default()
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    sections
}

#[test]
fn the_systemd_unit_has_the_required_keys() {
    let unit = unit_file(&read("systemd/leasehold-provider.service"));
    assert_eq!(
        unit.keys().map(String::as_str).collect::<Vec<_>>(),
        ["Install", "Service", "Unit"]
    );
    let one = |section: &str, key: &str| -> String {
        let values = unit[section].get(key).cloned().unwrap_or_default();
        assert_eq!(values.len(), 1, "[{section}] {key} once");
        values[0].clone()
    };
    assert!(!one("Unit", "Description").is_empty());
    assert!(one("Unit", "After").contains("docker.service"));
    let exec: Vec<String> = one("Service", "ExecStart")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(exec[0], "/usr/local/bin/provider");
    assert!(
        exec.windows(2)
            .any(|pair| pair[0] == "--config" && pair[1].ends_with(".toml"))
    );
    assert!(exec.iter().any(|arg| arg == "run"));
    assert_eq!(one("Service", "Restart"), "on-failure");
    assert!(one("Service", "EnvironmentFile").starts_with('/'));
    assert_eq!(one("Service", "NoNewPrivileges"), "true");
    assert_eq!(one("Install", "WantedBy"), "multi-user.target");
    assert!(
        !unit["Service"].contains_key("Environment"),
        "the key goes in the EnvironmentFile, never in the unit"
    );
}

/// A Dockerfile's `(INSTRUCTION, argument)` pairs, comments and blank lines left out.
fn instructions(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let (word, rest) = line.split_once(' ')?;
            word.chars()
                .all(|c| c.is_ascii_uppercase())
                .then(|| (word.to_owned(), rest.trim().to_owned()))
        })
        .collect()
}

/// The last argument of `word` (the one Docker uses).
fn last(instructions: &[(String, String)], word: &str) -> String {
    instructions
        .iter()
        .rev()
        .find(|(found, _)| found == word)
        .map(|(_, value)| value.clone())
        .unwrap_or_else(|| panic!("no {word}"))
}

#[test]
fn the_dockerfile_builds_a_static_binary_on_a_minimal_image() {
    let text = read("Dockerfile");
    let instructions = instructions(&text);
    let from: Vec<&str> = instructions
        .iter()
        .filter(|(word, _)| word == "FROM")
        .map(|(_, image)| image.as_str())
        .collect();
    assert_eq!(from.len(), 2, "a build stage and the image: {from:?}");
    let final_image = from[1];
    assert!(
        final_image == "scratch" || final_image.contains("distroless/static"),
        "{final_image}"
    );
    assert!(
        text.contains("--target x86_64-unknown-linux-musl"),
        "a static build"
    );
    assert!(text.contains("-p leasehold-provider --bin provider"));
    let entrypoint = instructions
        .iter()
        .rev()
        .find(|(word, _)| word == "ENTRYPOINT")
        .map(|(_, value)| value.clone())
        .expect("an ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(&entrypoint).expect("exec form");
    assert_eq!(entrypoint, ["/usr/local/bin/provider"]);
    let user = instructions
        .iter()
        .find(|(word, _)| word == "USER")
        .map(|(_, value)| value.clone())
        .expect("a USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "{user}"
    );
}

#[test]
fn the_scratch_image_runs_what_the_distroless_one_runs_as_non_root() {
    let distroless = instructions(&read("Dockerfile"));
    let scratch = instructions(&read("Dockerfile.scratch"));
    let from: Vec<&str> = scratch
        .iter()
        .filter(|(word, _)| word == "FROM")
        .map(|(_, image)| image.as_str())
        .collect();
    assert_eq!(from, ["scratch"], "nothing to pull");
    for word in ["ENTRYPOINT", "CMD", "VOLUME", "EXPOSE"] {
        assert_eq!(last(&scratch, word), last(&distroless, word), "{word}");
    }
    let user = last(&scratch, "USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "{user}"
    );
    let script = read("build-image");
    assert!(script.contains("+crt-static") && script.contains("Dockerfile.scratch"));
}

/// Builds the scratch image with `deploy/build-image` (a static debug build of the
/// provider in its own target dir, deleted afterwards: minutes and a few GB) and runs
/// `provider --help` in it. Opt-in: `cargo test -p leasehold-provider --test it -- --ignored
/// the_scratch_image_builds`, with Docker (under `flock /tmp/leasehold-docker.lock`).
#[test]
#[ignore = "builds the provider from scratch into its own target dir (minutes, GBs) and needs Docker"]
fn the_scratch_image_builds_here_and_runs_provider_help() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let tag = format!("leasehold-provider:scratch-test-{}", std::process::id());
    let mut build = Command::new(deploy_dir().join("build-image"))
        .arg(&tag)
        .stdin(Stdio::null())
        .spawn()
        .expect("deploy/build-image runs");
    let deadline = Instant::now() + Duration::from_secs(45 * 60);
    let status = loop {
        if let Some(status) = build.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = build.kill();
            panic!("deploy/build-image took over 45 minutes");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(status.success(), "deploy/build-image failed: {status}");
    let run = Command::new("docker")
        .args(["run", "--rm", "--network", "none", &tag, "--help"])
        .output()
        .expect("docker run");
    let _ = Command::new("docker")
        .args(["rmi", "--force", &tag])
        .output();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{run:?}");
    assert!(
        stdout.contains("Leasehold provider") && stdout.contains("register"),
        "{stdout}"
    );
}
