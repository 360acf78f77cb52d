//! Persistent volumes: one named volume per lease, service, replica and SDL volume,
//! created before the replica's container and removed only when the lease is torn
//! down, so that the data outlives container restarts, replacements (a manifest
//! update) and the daemon itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use bollard::models::{Mount, MountType, Volume, VolumeCreateRequest};
use bollard::query_parameters::{ListVolumesOptionsBuilder, RemoveVolumeOptionsBuilder};

use super::DockerRuntime;
use super::engine::{engine_error, is_not_found};
use super::observe::label;
use crate::runtime::{
    LABEL_LEASE, LABEL_REPLICA, LABEL_SERVICE, LABEL_VOLUME, LeaseDeployment, ReplicaSpec,
    RuntimeError, RuntimeScope, invalid, lease_selector, parse_lease_label,
};

/// The driver option of a `local` volume naming the host directory it binds.
const DEVICE_OPTION: &str = "device";

/// Where one storage class's volumes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeBackend {
    /// A volume driver with its options (`local` keeps data under the engine's root).
    Driver {
        driver: String,
        options: BTreeMap<String, String>,
    },
    /// A host directory: each volume is a `local` bind volume of its own
    /// subdirectory, which teardown deletes with the volume.
    HostDir(PathBuf),
}

impl VolumeBackend {
    /// The engine's `local` driver, with no options.
    pub fn local() -> Self {
        VolumeBackend::Driver {
            driver: "local".to_owned(),
            options: BTreeMap::new(),
        }
    }
}

/// The mounts of a replica's persistent volumes, by the names [`RuntimeScope::volume_name`] gives.
pub(super) fn volume_mounts(
    scope: &RuntimeScope,
    deployment: &LeaseDeployment,
    replica: &ReplicaSpec<'_>,
) -> Vec<Mount> {
    replica
        .service
        .volumes
        .iter()
        .map(|volume| Mount {
            target: Some(volume.mount.clone()),
            source: Some(scope.volume_name(
                deployment.lease_id,
                &replica.service.name,
                replica.index,
                &volume.name,
            )),
            typ: Some(MountType::VOLUME),
            read_only: Some(volume.read_only),
            ..Default::default()
        })
        .collect()
}

impl DockerRuntime {
    /// Creates the replica's volumes that do not exist yet and checks that those that
    /// do are this lease's. Existing volumes are reused as they are: their data is the point.
    pub(super) async fn ensure_volumes(
        &self,
        deployment: &LeaseDeployment,
        replica: &ReplicaSpec<'_>,
    ) -> Result<(), RuntimeError> {
        let scope = &self.config.scope;
        for volume in &replica.service.volumes {
            let name = scope.volume_name(
                deployment.lease_id,
                &replica.service.name,
                replica.index,
                &volume.name,
            );
            match self.docker.inspect_volume(&name).await {
                Ok(existing) => {
                    let labels = Some(&existing.labels);
                    let ours = scope.owns(&|key: &str| label(labels, key).map(str::to_owned));
                    if !ours
                        || label(labels, LABEL_LEASE).and_then(parse_lease_label)
                            != Some(deployment.lease_id)
                    {
                        return Err(RuntimeError::Conflict {
                            name,
                            lease_id: deployment.lease_id,
                        });
                    }
                    continue;
                }
                Err(err) if is_not_found(&err) => {}
                Err(err) => return Err(engine_error(format!("inspect volume {name}"), &err)),
            }
            let class = volume
                .class
                .as_deref()
                .unwrap_or(leasehold_manifests::DEFAULT_STORAGE_CLASS);
            let backend = self.config.storage_classes.get(class).ok_or_else(|| {
                invalid(
                    format!("services.{}.volumes.{}", replica.service.name, volume.name),
                    format!("storage class `{class}` is not offered by this provider"),
                )
            })?;
            let (driver, options) = match backend {
                VolumeBackend::Driver { driver, options } => (driver.clone(), options.clone()),
                VolumeBackend::HostDir(dir) => {
                    let path = dir.join(&name);
                    let create = || {
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::create_dir_all(&path)?;
                        // Whatever uid the image runs as (root without capabilities
                        // included) must be able to write its own volume.
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
                    };
                    create().map_err(|error| RuntimeError::Engine {
                        action: format!("create volume directory {}", path.display()),
                        reason: error.to_string(),
                    })?;
                    let options = BTreeMap::from([
                        ("type".to_owned(), "none".to_owned()),
                        ("o".to_owned(), "bind".to_owned()),
                        (
                            DEVICE_OPTION.to_owned(),
                            path.to_string_lossy().into_owned(),
                        ),
                    ]);
                    ("local".to_owned(), options)
                }
            };
            let mut labels = deployment.lease_labels(scope);
            labels.insert(LABEL_SERVICE.to_owned(), replica.service.name.clone());
            labels.insert(LABEL_REPLICA.to_owned(), replica.index.to_string());
            labels.insert(LABEL_VOLUME.to_owned(), volume.name.clone());
            let request = VolumeCreateRequest {
                name: Some(name.clone()),
                driver: Some(driver),
                driver_opts: Some(options.into_iter().collect()),
                labels: Some(labels.into_iter().collect()),
                ..Default::default()
            };
            self.docker
                .create_volume(request)
                .await
                .map_err(|err| engine_error(format!("create volume {name}"), &err))?;
            tracing::info!(
                lease_id = deployment.lease_id,
                volume = name,
                class,
                "created volume"
            );
        }
        Ok(())
    }

    /// The scope's volumes carrying every label of `labels` too.
    async fn volumes_with_labels(&self, labels: Vec<String>) -> Result<Vec<Volume>, RuntimeError> {
        let mut labels = labels;
        labels.extend(self.config.scope.selectors());
        let filters = HashMap::from([("label", labels)]);
        let options = ListVolumesOptionsBuilder::new().filters(&filters).build();
        let listed = self
            .docker
            .list_volumes(Some(options))
            .await
            .map_err(|err| engine_error("list volumes", &err))?;
        Ok(listed.volumes.unwrap_or_default())
    }

    /// Leases of the scope that still hold a volume.
    pub(super) async fn volume_leases(&self) -> Result<BTreeSet<u64>, RuntimeError> {
        Ok(self
            .volumes_with_labels(vec![LABEL_LEASE.to_owned()])
            .await?
            .iter()
            .filter_map(|volume| label(Some(&volume.labels), LABEL_LEASE))
            .filter_map(parse_lease_label)
            .collect())
    }

    /// Removes the lease's volumes (their containers are gone by then) and, for a
    /// host-directory class, the directory with the data.
    pub(super) async fn remove_lease_volumes(&self, lease_id: u64) -> Result<(), RuntimeError> {
        for volume in self
            .volumes_with_labels(vec![lease_selector(lease_id)])
            .await?
        {
            let options = RemoveVolumeOptionsBuilder::new().force(true).build();
            match self.docker.remove_volume(&volume.name, Some(options)).await {
                Ok(()) => {}
                Err(err) if is_not_found(&err) => {}
                Err(err) => {
                    return Err(engine_error(format!("remove volume {}", volume.name), &err));
                }
            }
            if let Some(dir) = self.host_dir_of(&volume) {
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => {
                        return Err(RuntimeError::Engine {
                            action: format!("remove volume directory {}", dir.display()),
                            reason: error.to_string(),
                        });
                    }
                }
            }
            tracing::info!(lease_id, volume = volume.name, "removed volume");
        }
        Ok(())
    }

    /// The directory a host-directory volume binds, when it is the volume's own
    /// directory under a configured `host_dir` (never anything else: this is deleted).
    fn host_dir_of(&self, volume: &Volume) -> Option<PathBuf> {
        let device = Path::new(volume.options.get(DEVICE_OPTION)?);
        self.config.storage_classes.values().find_map(|backend| {
            let VolumeBackend::HostDir(root) = backend else {
                return None;
            };
            (device.parent() == Some(root.as_path())
                && device.file_name() == Some(volume.name.as_ref()))
            .then(|| device.to_path_buf())
        })
    }
}
