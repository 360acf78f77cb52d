//! The Docker engine as a user inspects it: the `docker` CLI, filtered by the lease label
//! the provider's Docker runtime puts on everything it creates.

use std::process::{Command, Stdio};

/// The label the provider's runtime puts on a lease's containers and networks.
pub const LEASE_LABEL: &str = "io.leasehold.lease";

fn docker(args: &[&str]) -> Option<String> {
    let output = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn ids(args: &[&str]) -> Vec<String> {
    docker(args)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Every container (running or not) of `lease`, by id.
pub fn lease_containers(lease: u64) -> Vec<String> {
    let filter = format!("label={LEASE_LABEL}={lease}");
    ids(&["ps", "-aq", "--no-trunc", "--filter", &filter])
}

/// Every network of `lease`, by id.
pub fn lease_networks(lease: u64) -> Vec<String> {
    let filter = format!("label={LEASE_LABEL}={lease}");
    ids(&["network", "ls", "-q", "--no-trunc", "--filter", &filter])
}

/// `docker inspect` of one object as JSON.
pub fn inspect(id: &str) -> Option<serde_json::Value> {
    let text = docker(&["inspect", id])?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.get(0).cloned()
}

/// Removes the containers and networks of `leases` (test cleanup; errors are ignored).
pub fn remove_leases(leases: &[u64]) {
    for &lease in leases {
        let containers = lease_containers(lease);
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(containers.iter().map(String::as_str));
            let _ = docker(&args);
        }
        let networks = lease_networks(lease);
        if !networks.is_empty() {
            let mut args = vec!["network", "rm"];
            args.extend(networks.iter().map(String::as_str));
            let _ = docker(&args);
        }
    }
}

/// Whether a Docker engine answers.
pub fn available() -> bool {
    docker(&["version", "--format", "{{.Server.Version}}"]).is_some()
}
