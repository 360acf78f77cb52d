//! From the manifests crate's groups (one per on-chain order) to scheduling requests.

use std::collections::BTreeSet;

use leasehold_manifests as manifests;

use crate::resources::{
    GpuConstraint, GpuDemand, GroupRequest, GroupUnit, ReplicaRequest, ResourceError, Resources,
    add,
};

pub use leasehold_manifests::DEFAULT_STORAGE_CLASS;

/// A group that cannot be expressed as a scheduling request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("group `{group}` resource unit {unit}: {source}")]
pub struct ConversionError {
    pub group: String,
    /// 1-based, as in the manifest.
    pub unit: usize,
    #[source]
    pub source: ResourceError,
}

/// One replica's request from a manifest resource unit.
pub fn replica_request(resources: &manifests::Resources) -> Result<ReplicaRequest, ResourceError> {
    let mut request = Resources {
        cpu_millis: resources.cpu_millis,
        memory_bytes: resources.memory_bytes,
        ..Resources::default()
    };
    for volume in &resources.storage {
        if let Some(class) = volume.persistent_class() {
            let class = class.to_string();
            let held = request.persistent_storage.entry(class).or_insert(0);
            *held = add(*held, volume.bytes, "persistent storage")?;
        } else if volume.is_ram() {
            request.memory_bytes = add(request.memory_bytes, volume.bytes, "memory")?;
        } else {
            request.ephemeral_storage_bytes = add(
                request.ephemeral_storage_bytes,
                volume.bytes,
                "ephemeral storage",
            )?;
        }
    }
    let models = resources.gpu.models.clone();
    Ok(ReplicaRequest {
        resources: request,
        gpu: GpuDemand::whole(resources.gpu.units),
        gpu_constraint: GpuConstraint {
            models,
            ..GpuConstraint::default()
        },
    })
}

/// The scheduling request of a whole group: every unit with its replica count.
pub fn group_request(group: &manifests::Group) -> Result<GroupRequest, ConversionError> {
    let units = group
        .units
        .iter()
        .enumerate()
        .map(|(index, unit)| {
            let replica = replica_request(&unit.resources).map_err(|source| ConversionError {
                group: group.name.clone(),
                unit: index + 1,
                source,
            })?;
            Ok(GroupUnit {
                replica,
                count: unit.count,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(GroupRequest {
        name: group.name.clone(),
        units,
    })
}

/// The group's required provider attributes as `key=value` strings (see
/// [`manifests::Group::required_attributes`]).
pub fn required_attributes(group: &manifests::Group) -> BTreeSet<String> {
    group.required_attributes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{GpuDevice, NodeSpec};
    use crate::inventory::Inventory;
    use crate::policy::{PolicyKind, WorkloadProfile};
    use crate::resources::{GpuModelKey, GpuSpec};

    const GIB: u64 = 1 << 30;

    const SDL: &str = r#"
version: "2.0"
services:
  inference:
    image: vllm/vllm-openai:v0.6.3
    expose:
      - port: 8000
        as: 80
        to:
          - global: true
    params:
      storage:
        models:
          mount: /models
profiles:
  compute:
    gpu-large:
      resources:
        cpu:
          units: 8
        memory:
          size: 64Gi
        storage:
          - size: 20Gi
          - name: models
            size: 200Gi
            attributes:
              persistent: true
              class: beta3
        gpu:
          units: 2
          attributes:
            vendor:
              nvidia:
                - model: a100
                  ram: 80Gi
                  interface: sxm
                - model: h100
  placement:
    gpu-cloud:
      attributes:
        region: eu-west
      pricing:
        gpu-large:
          denom: usdc
          amount: 2000000
deployment:
  inference:
    gpu-cloud:
      profile: gpu-large
      count: 3
"#;

    #[test]
    fn ram_volumes_are_requested_as_memory() {
        let sdl = SDL.replace(
            "          - size: 20Gi\n",
            "          - size: 20Gi\n          - name: shm\n            size: 16Gi\n            attributes:\n              class: ram\n",
        );
        let sdl = manifests::parse(&sdl).unwrap_or_else(|errors| panic!("{errors:?}"));
        let request = group_request(&sdl.groups()[0]).unwrap();
        let replica = &request.units[0].replica;
        assert_eq!(replica.resources.memory_bytes, 64 * GIB + 16 * GIB);
        assert_eq!(replica.resources.ephemeral_storage_bytes, 20 * GIB);
        let totals = sdl.groups()[0].totals().unwrap();
        assert_eq!(totals.memory_bytes, 3 * (64 + 16) * GIB);
        assert_eq!(totals.storage_bytes, 3 * (20 + 200) * GIB);
    }

    #[test]
    fn sdl_group_becomes_a_placeable_request() {
        let sdl = manifests::parse(SDL).unwrap_or_else(|errors| panic!("{errors:?}"));
        let groups = sdl.groups();
        let request = group_request(&groups[0]).unwrap();
        assert_eq!(request.name, "gpu-cloud");
        assert_eq!(request.units.len(), 1);
        let unit = &request.units[0];
        assert_eq!(unit.count, 3);
        let replica = &unit.replica;
        assert_eq!(replica.resources.cpu_millis, 8000);
        assert_eq!(replica.resources.memory_bytes, 64 * GIB);
        assert_eq!(replica.resources.ephemeral_storage_bytes, 20 * GIB);
        assert_eq!(
            replica.resources.persistent_storage.get("beta3"),
            Some(&(200 * GIB))
        );
        assert_eq!(replica.gpu, GpuDemand::Whole(2));
        let allowed: Vec<String> = replica
            .gpu_constraint
            .models
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(allowed, ["nvidia/a100/80Gi/sxm", "nvidia/h100/*/*"]);
        let required = required_attributes(&groups[0]);
        assert!(required.contains("region=eu-west"));
        // The persistent beta3 volume asks for a provider announcing that class.
        assert!(required.contains("capabilities/storage/1/class=beta3"));
        assert!(required.contains("capabilities/storage/1/persistent=true"));

        // It places on a node with the allowed model, whole GPUs, and not on the other.
        let node = |id: &str, model: &str| NodeSpec {
            id: id.into(),
            capacity: Resources {
                cpu_millis: 64_000,
                memory_bytes: 512 * GIB,
                ephemeral_storage_bytes: 1024 * GIB,
                persistent_storage: [("beta3".to_string(), 2048 * GIB)].into_iter().collect(),
            },
            gpus: (0..8)
                .map(|index| GpuDevice {
                    index,
                    spec: GpuSpec::from_key(model.parse::<GpuModelKey>().unwrap(), 80 * GIB),
                })
                .collect(),
        };
        let nodes = vec![
            node("l40s", "nvidia/l40s/48Gi/pcie"),
            node("h100", "nvidia/h100/80Gi/sxm"),
        ];
        let mut inventory = Inventory::new(
            nodes,
            PolicyKind::FgdBalanced.build(WorkloadProfile::default()),
        )
        .unwrap();
        let placed = inventory.reserve("order-1", &request, 10).unwrap();
        assert_eq!(placed.replicas.len(), 3);
        assert!(
            placed
                .replicas
                .iter()
                .all(|r| r.node_id == "h100" && r.gpus.len() == 2)
        );
    }
}
