//! Talking to the engine: its capabilities and how its errors become runtime errors.

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::Network;

use super::BRIDGE_NAME_OPTION;
use crate::runtime::RuntimeError;

/// Whether the engine's storage driver caps a container's writable layer with
/// `StorageOpt size`: overlay2 only on xfs mounted with project quotas (not visible
/// through the API, so xfs is taken as the sign), btrfs and zfs always.
pub(super) async fn supports_storage_opt(docker: &Docker) -> bool {
    let Ok(info) = docker.info().await else {
        return false;
    };
    let backing = info
        .driver_status
        .unwrap_or_default()
        .into_iter()
        .find(|pair| pair.first().map(String::as_str) == Some("Backing Filesystem"))
        .and_then(|pair| pair.get(1).cloned())
        .unwrap_or_default();
    match info.driver.as_deref() {
        Some("overlay2") => backing == "xfs",
        Some("btrfs" | "zfs") => true,
        _ => false,
    }
}

pub(super) fn egress_error(reason: impl Into<String>) -> RuntimeError {
    RuntimeError::EgressPolicy {
        reason: reason.into(),
    }
}

/// The Linux bridge of a lease network, from the option the runtime created it with.
pub(super) fn bridge_of(network: &Network) -> Option<String> {
    network.options.as_ref()?.get(BRIDGE_NAME_OPTION).cloned()
}

/// already (the container exists, runs, is gone...).
pub(super) fn accept_status<T>(
    result: Result<T, DockerError>,
    accepted: &[u16],
) -> Result<(), DockerError> {
    match result {
        Ok(_) => Ok(()),
        Err(DockerError::DockerResponseServerError { status_code, .. })
            if accepted.contains(&status_code) =>
        {
            Ok(())
        }
        Err(err) => Err(err),
    }
}

pub(super) fn is_not_found(err: &DockerError) -> bool {
    matches!(
        err,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The engine's own words where it gave some.
pub(super) fn error_reason(err: &DockerError) -> String {
    match err {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

pub(super) fn engine_error(action: impl Into<String>, err: &DockerError) -> RuntimeError {
    RuntimeError::Engine {
        action: action.into(),
        reason: error_reason(err),
    }
}

/// The engine runtime the NVIDIA container toolkit registers; device requests with the
/// `nvidia` driver need it.
pub const NVIDIA_RUNTIME: &str = "nvidia";

/// Whether `docker info` lists the NVIDIA runtime.
pub(super) async fn has_nvidia_runtime(docker: &Docker) -> bool {
    docker.info().await.ok().is_some_and(|info| {
        info.runtimes
            .is_some_and(|runtimes| runtimes.contains_key(NVIDIA_RUNTIME))
    })
}

/// Refuses a deployment with GPU replicas on an engine without the NVIDIA runtime,
/// saying what the operator must install, rather than the engine's "could not select
/// device driver" after the container was half made.
pub(super) fn check_gpu_runtime(
    deployment: &crate::runtime::LeaseDeployment,
    has_nvidia_runtime: bool,
) -> Result<(), RuntimeError> {
    let wants_gpus = deployment
        .services
        .iter()
        .any(|service| !service.gpu_devices.is_empty());
    if wants_gpus && !has_nvidia_runtime {
        return Err(RuntimeError::Unsupported {
            what: format!("the GPUs of lease {}", deployment.lease_id),
            reason: format!(
                "the Docker engine has no `{NVIDIA_RUNTIME}` runtime (`docker info` lists none); \
                 install the NVIDIA container toolkit and run `nvidia-ctk runtime configure \
                 --runtime=docker`, then restart dockerd"
            ),
        });
    }
    Ok(())
}
