//! From the tenant's manifest to what the runtime runs, and from a manifest group to the
//! on-chain order it must match.
//!
//! An order names its group (keccak256 of the SDL placement's name), so the provider runs
//! exactly the manifest group of that name; sizes never choose the group. That group's
//! replicas must still equal the order's and its resources fit inside what the order
//! reserved, which stops a tenant from paying for a small order and sending a large workload.

use std::collections::BTreeMap;
use std::net::IpAddr;

use alloy::primitives::B256;
use leasehold_contracts::{OrderEncodingError, OrderSpec, Resources as ChainResources};
use leasehold_manifests::{
    GpuModelKey, Group, Manifest, ManifestGroup, Protocol as ManifestProtocol, Service,
    StorageMount,
};

use crate::runtime::{
    LeaseDeployment, PersistentVolume, PortExposure, Protocol, RamVolume, SHARED_MEMORY_MOUNT,
    ServiceDeployment, ServiceResources,
};

const MIB: u64 = 1024 * 1024;

/// Why a manifest cannot be turned into a deployment for an order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeploymentError {
    #[error("manifest is not valid manifest JSON: {0}")]
    Json(String),
    #[error(
        "the order names group {group_name}, but no manifest group's name hashes to it \
         (the manifest has: {available})"
    )]
    GroupNotInManifest { group_name: B256, available: String },
    #[error(
        "manifest group `{group}` does not fit its order ({replicas} replicas, {cpu_milli} cpu \
         millis, {memory_mib} MiB memory, {storage_mib} MiB storage, {gpu_count} GPUs)"
    )]
    GroupExceedsOrder {
        group: String,
        replicas: u16,
        cpu_milli: u64,
        memory_mib: u64,
        storage_mib: u64,
        gpu_count: u32,
    },
    #[error("manifest group `{0}` is not in the manifest")]
    UnknownGroup(String),
    #[error("services.{service}.env: entry {entry:?} is not NAME=value")]
    Env { service: String, entry: String },
    #[error("manifest group `{group}`: {what} overflows")]
    Overflow { group: String, what: &'static str },
    #[error(transparent)]
    Order(OrderEncodingError),
    #[error(
        "services.{service}: needs {wanted} GPU(s) but the lease's allocation has only {available} left"
    )]
    GpuShortfall {
        service: String,
        wanted: u32,
        available: usize,
    },
    #[error("{0}")]
    ExceedsLease(#[from] leasehold_contracts::LeaseFitError),
    #[error(
        "manifest group `{group}` exposes ports on {wanted} IP endpoint(s) ({names}), but its \
         order asked for {held} leased IP address(es)"
    )]
    LeasedIps {
        group: String,
        wanted: usize,
        names: String,
        held: usize,
    },
}

/// Totals of a manifest group, in the units an order uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupDemand {
    pub replicas: u64,
    pub resources: ChainResources,
    pub gpu_count: u64,
}

/// keccak256 of an attribute `key=value`, as announced on chain.
pub fn attribute_key(text: &str) -> B256 {
    leasehold_contracts::chain_key(text)
}

/// The on-chain key of a GPU model (`leasehold_manifests::GpuModelKey::chain_key`).
pub fn gpu_model_key(model: &GpuModelKey) -> B256 {
    B256::from(model.chain_key())
}

/// The order a tenant posts for one SDL group (the shared encoding in
/// `leasehold_contracts::order`).
pub fn order_spec_for_group(group: &Group) -> Result<OrderSpec, DeploymentError> {
    leasehold_contracts::order_spec_for_group(group).map_err(|error| match error {
        OrderEncodingError::OutOfRange { group, what } => DeploymentError::Overflow { group, what },
        other => DeploymentError::Order(other),
    })
}

/// Parses the manifest JSON the tenant sent (its hash is checked by the caller).
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, DeploymentError> {
    serde_json::from_slice(bytes).map_err(|error| DeploymentError::Json(error.to_string()))
}

/// The totals of a manifest group's services.
pub fn group_demand(group: &ManifestGroup) -> Result<GroupDemand, DeploymentError> {
    let overflow = |what| DeploymentError::Overflow {
        group: group.name.clone(),
        what,
    };
    let mut replicas = 0u64;
    let mut cpu = 0u64;
    let mut memory = 0u64;
    let mut storage = 0u64;
    let mut gpus = 0u64;
    for service in &group.services {
        let count = u64::from(service.count);
        let per_storage = service
            .resources
            .disk_storage_bytes()
            .ok_or_else(|| overflow("storage"))?;
        let per_memory = service
            .resources
            .memory_with_ram_bytes()
            .ok_or_else(|| overflow("memory"))?;
        let scaled = |value: u64, what| value.checked_mul(count).ok_or_else(|| overflow(what));
        replicas = replicas
            .checked_add(count)
            .ok_or_else(|| overflow("replicas"))?;
        cpu = cpu
            .checked_add(scaled(service.resources.cpu_millis, "cpu")?)
            .ok_or_else(|| overflow("cpu"))?;
        memory = memory
            .checked_add(scaled(per_memory, "memory")?)
            .ok_or_else(|| overflow("memory"))?;
        storage = storage
            .checked_add(scaled(per_storage, "storage")?)
            .ok_or_else(|| overflow("storage"))?;
        gpus = gpus
            .checked_add(scaled(u64::from(service.resources.gpu.units), "gpu")?)
            .ok_or_else(|| overflow("gpu"))?;
    }
    Ok(GroupDemand {
        replicas,
        resources: ChainResources {
            cpu_milli: cpu,
            memory_mib: memory.div_ceil(MIB),
            storage_mib: storage.div_ceil(MIB),
        },
        gpu_count: gpus,
    })
}

/// The manifest group whose name the order carries (`order.group_name` is keccak256 of it).
fn named_group<'m>(
    manifest: &'m Manifest,
    order: &OrderSpec,
) -> Result<&'m ManifestGroup, DeploymentError> {
    manifest
        .groups
        .iter()
        .find(|group| leasehold_contracts::group_name_key(&group.name) == order.group_name)
        .ok_or_else(|| DeploymentError::GroupNotInManifest {
            group_name: order.group_name,
            available: manifest
                .groups
                .iter()
                .map(|group| format!("`{}`", group.name))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The manifest group the order names (`order.group_name` is keccak256 of its name), provided
/// the order pays for it: same replica count, and every resource within the order's.
pub fn order_group<'m>(
    manifest: &'m Manifest,
    order: &OrderSpec,
) -> Result<&'m ManifestGroup, DeploymentError> {
    let group = named_group(manifest, order)?;
    let demand = group_demand(group)?;
    let fits = demand.replicas == u64::from(order.replicas)
        && demand.resources.cpu_milli <= order.resources.cpu_milli
        && demand.resources.memory_mib <= order.resources.memory_mib
        && demand.resources.storage_mib <= order.resources.storage_mib
        && demand.gpu_count <= u64::from(order.gpu_count);
    if fits {
        return Ok(group);
    }
    Err(DeploymentError::GroupExceedsOrder {
        group: group.name.clone(),
        replicas: order.replicas,
        cpu_milli: order.resources.cpu_milli,
        memory_mib: order.resources.memory_mib,
        storage_mib: order.resources.storage_mib,
        gpu_count: order.gpu_count,
    })
}

/// The manifest group an update of a running lease runs: the group the order names, with
/// the same group count as the manifest it replaces (`groups_before`), the same replica
/// count and every resource within what the lease bought; the first field that does not
/// fit is named.
pub fn update_group<'m>(
    manifest: &'m Manifest,
    order: &OrderSpec,
    groups_before: usize,
) -> Result<&'m ManifestGroup, DeploymentError> {
    if manifest.groups.len() != groups_before {
        return Err(leasehold_contracts::LeaseFitError::GroupCount {
            wanted: manifest.groups.len(),
            bought: groups_before,
        }
        .into());
    }
    let group = named_group(manifest, order)?;
    let demand = group_demand(group)?;
    let wanted = OrderSpec {
        resources: demand.resources,
        gpu_count: u32::try_from(demand.gpu_count).unwrap_or(u32::MAX),
        replicas: u16::try_from(demand.replicas).unwrap_or(u16::MAX),
        ..order.clone()
    };
    leasehold_contracts::check_within_lease(&group.name, &wanted, order)?;
    Ok(group)
}

/// The runtime deployment of one manifest group. `gpu_devices` are the device ids the
/// lease's allocation holds, handed out to GPU replicas in service order.
pub fn lease_deployment(
    lease_id: u64,
    tenant: &str,
    manifest: &Manifest,
    group_name: &str,
    gpu_devices: &[String],
    leased_ips: &[IpAddr],
) -> Result<LeaseDeployment, DeploymentError> {
    let group = manifest
        .groups
        .iter()
        .find(|group| group.name == group_name)
        .ok_or_else(|| DeploymentError::UnknownGroup(group_name.to_owned()))?;
    let addresses = leased_addresses(group, leased_ips)?;
    let mut devices = gpu_devices.iter();
    let services = group
        .services
        .iter()
        .map(|service| service_deployment(service, &mut devices, &addresses))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LeaseDeployment {
        lease_id,
        tenant: tenant.to_owned(),
        services,
    })
}

/// Which leased address each IP endpoint of the group gets: the lease's addresses in the
/// order the pool handed them out, to the endpoint names in sorted order. The lease holds
/// exactly as many as its order asked for, which must be what the group uses.
fn leased_addresses<'g>(
    group: &'g ManifestGroup,
    leased_ips: &[IpAddr],
) -> Result<BTreeMap<&'g str, IpAddr>, DeploymentError> {
    let names = group.leased_ip_names();
    if names.len() != leased_ips.len() {
        return Err(DeploymentError::LeasedIps {
            group: group.name.clone(),
            wanted: names.len(),
            names: names.join(", "),
            held: leased_ips.len(),
        });
    }
    Ok(names.into_iter().zip(leased_ips.iter().copied()).collect())
}

fn service_deployment<'d>(
    service: &Service,
    devices: &mut impl Iterator<Item = &'d String>,
    leased: &BTreeMap<&str, IpAddr>,
) -> Result<ServiceDeployment, DeploymentError> {
    let mut env = BTreeMap::new();
    for entry in service.env.iter().flatten() {
        let (name, value) = entry.split_once('=').ok_or_else(|| DeploymentError::Env {
            service: service.name.clone(),
            entry: entry.clone(),
        })?;
        env.insert(name.to_owned(), value.to_owned());
    }
    let storage_bytes = service
        .resources
        .storage
        .iter()
        .filter(|volume| !volume.persistent && !volume.is_ram())
        .fold(0u64, |sum, volume| sum.saturating_add(volume.bytes));
    let per_replica = service.resources.gpu.units;
    let mut gpu_devices = Vec::new();
    if per_replica > 0 {
        for _ in 0..service.count {
            let taken: Vec<String> = devices
                .by_ref()
                .take(usize::try_from(per_replica).unwrap_or(usize::MAX))
                .cloned()
                .collect();
            if taken.len() < usize::try_from(per_replica).unwrap_or(usize::MAX) {
                return Err(DeploymentError::GpuShortfall {
                    service: service.name.clone(),
                    wanted: per_replica,
                    available: taken.len(),
                });
            }
            gpu_devices.push(taken);
        }
    }
    Ok(ServiceDeployment {
        name: service.name.clone(),
        image: service.image.clone(),
        command: service.command.clone().unwrap_or_default(),
        args: service.args.clone().unwrap_or_default(),
        env,
        expose: exposures(service, leased),
        resources: ServiceResources {
            cpu_millis: service.resources.cpu_millis,
            // The tmpfs of `ram` volumes is charged to the replica's memory.
            memory_bytes: service
                .resources
                .memory_with_ram_bytes()
                .unwrap_or(u64::MAX),
            storage_bytes,
        },
        replicas: service.count,
        gpu_devices,
        volumes: persistent_volumes(service),
        ram_volumes: ram_volumes(service),
        gpu_models: service.resources.gpu.models.clone(),
        credentials: service.credentials.clone(),
    })
}

/// The service's persistent volumes with their mounts (a persistent volume the SDL
/// mounts nowhere is not given to the runtime: nothing could use it).
fn persistent_volumes(service: &Service) -> Vec<PersistentVolume> {
    service
        .resources
        .storage
        .iter()
        .filter(|volume| volume.persistent)
        .filter_map(|volume| {
            let mount = volume_mount(service, &volume.name)?;
            Some(PersistentVolume {
                name: volume.name.clone(),
                mount: mount.mount.clone(),
                size_bytes: volume.bytes,
                class: volume.class.clone(),
                read_only: mount.read_only,
            })
        })
        .collect()
}

/// The service's `ram` volumes, each where the SDL mounts it or else at `/dev/shm`.
fn ram_volumes(service: &Service) -> Vec<RamVolume> {
    service
        .resources
        .storage
        .iter()
        .filter(|volume| volume.is_ram())
        .map(|volume| RamVolume {
            name: volume.name.clone(),
            mount: volume_mount(service, &volume.name).map_or_else(
                || SHARED_MEMORY_MOUNT.to_owned(),
                |mount| mount.mount.clone(),
            ),
            size_bytes: volume.bytes,
        })
        .collect()
}

/// Where the SDL mounts the named volume of the service, if anywhere.
fn volume_mount<'s>(service: &'s Service, volume: &str) -> Option<&'s StorageMount> {
    service
        .params
        .as_ref()
        .and_then(|params| params.storage.iter().find(|mount| mount.name == volume))
}

/// One exposure per container port and protocol: the manifest lists one entry per `to`
/// target, and a port is published when any of them is global; on its leased address
/// alone when a global target names an IP endpoint.
fn exposures(service: &Service, leased: &BTreeMap<&str, IpAddr>) -> Vec<PortExposure> {
    let mut merged: BTreeMap<(u16, Protocol), PortExposure> = BTreeMap::new();
    for expose in &service.expose {
        let proto = match expose.proto {
            ManifestProtocol::Tcp => Protocol::Tcp,
            ManifestProtocol::Udp => Protocol::Udp,
        };
        let external_port = if expose.external_port == 0 {
            expose.port
        } else {
            expose.external_port
        };
        let entry = merged
            .entry((expose.port, proto))
            .or_insert_with(|| PortExposure {
                port: expose.port,
                external_port,
                proto,
                global: false,
                host_port: None,
                leased_ip: None,
            });
        if expose.global && !entry.global {
            entry.global = true;
            entry.external_port = external_port;
        }
        if expose.global
            && let Some(address) = leased.get(expose.ip.as_str())
        {
            entry.leased_ip = Some(*address);
            entry.external_port = external_port;
        }
    }
    merged.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = include_str!("../../manifests/examples/hello.yaml");

    #[test]
    fn hello_converts_to_one_published_http_service() {
        let sdl = leasehold_manifests::parse(HELLO).unwrap();
        let manifest = sdl.manifest();
        let spec = order_spec_for_group(&sdl.groups()[0]).unwrap();
        assert_eq!(spec.resources.cpu_milli, 100);
        assert_eq!(spec.resources.memory_mib, 64);
        assert_eq!(spec.replicas, 1);
        let group = order_group(&manifest, &spec).unwrap();
        let deployment = lease_deployment(7, "0xabc", &manifest, &group.name, &[], &[]).unwrap();
        let web = &deployment.services[0];
        assert_eq!(web.replicas, 1);
        assert_eq!(web.resources.memory_bytes, 64 * MIB);
        assert_eq!(web.expose.len(), 1);
        assert!(web.expose[0].global);
        assert_eq!(web.expose[0].external_port, 80);
        assert_eq!(web.command[0], "httpd");
    }

    #[test]
    fn a_group_bigger_than_its_order_is_refused() {
        let sdl = leasehold_manifests::parse(HELLO).unwrap();
        let mut spec = order_spec_for_group(&sdl.groups()[0]).unwrap();
        spec.resources.cpu_milli = 99;
        let err = order_group(&sdl.manifest(), &spec).unwrap_err();
        assert!(
            matches!(err, DeploymentError::GroupExceedsOrder { ref group, .. } if group == "anywhere"),
            "{err}"
        );
    }

    #[test]
    fn an_update_must_keep_the_groups_and_fit_what_the_lease_bought() {
        let sdl = leasehold_manifests::parse(HELLO).unwrap();
        let bought = order_spec_for_group(&sdl.groups()[0]).unwrap();
        let new_image = HELLO.replace("leasehold/busybox:test", "leasehold/busybox:other");
        let updated = leasehold_manifests::parse(&new_image).unwrap().manifest();
        assert_eq!(update_group(&updated, &bought, 1).unwrap().name, "anywhere");

        let bigger = HELLO.replace("size: 64Mi", "size: 128Mi");
        let bigger = leasehold_manifests::parse(&bigger).unwrap().manifest();
        let error = update_group(&bigger, &bought, 1).unwrap_err().to_string();
        assert_eq!(
            error,
            "group `anywhere`: memory (MiB) 128 exceeds the 64 the lease bought"
        );
        let error = update_group(&updated, &bought, 2).unwrap_err().to_string();
        assert!(error.contains("an update keeps the groups"), "{error}");
    }

    const SHARED_MEMORY: &str = r#"
version: "2.0"
services:
  infer:
    image: leasehold/busybox:test
    params:
      storage:
        scratch:
          mount: /scratch
profiles:
  compute:
    infer:
      resources:
        cpu:
          units: 1
        memory:
          size: 256Mi
        storage:
          - size: 128Mi
          - name: shm
            size: 1Gi
            attributes:
              class: ram
          - name: scratch
            size: 64Mi
            attributes:
              class: ram
  placement:
    anywhere:
      pricing:
        infer:
          denom: usdc
          amount: 1000
deployment:
  infer:
    anywhere:
      profile: infer
      count: 2
"#;

    #[test]
    fn ram_volumes_are_paid_and_run_as_memory() {
        let sdl = leasehold_manifests::parse(SHARED_MEMORY).unwrap();
        let manifest = sdl.manifest();
        let spec = order_spec_for_group(&sdl.groups()[0]).unwrap();
        assert_eq!(spec.resources.memory_mib, 2 * (256 + 1024 + 64));
        assert_eq!(spec.resources.storage_mib, 2 * 128);
        let group = order_group(&manifest, &spec).unwrap();
        let demand = group_demand(group).unwrap();
        assert_eq!(demand.resources, spec.resources);
        let deployment = lease_deployment(7, "0xabc", &manifest, &group.name, &[], &[]).unwrap();
        let infer = &deployment.services[0];
        assert_eq!(infer.resources.memory_bytes, (256 + 1024 + 64) * MIB);
        assert_eq!(infer.resources.storage_bytes, 128 * MIB);
        assert_eq!(
            infer.ram_volumes,
            vec![
                RamVolume {
                    name: "scratch".into(),
                    mount: "/scratch".into(),
                    size_bytes: 64 * MIB,
                },
                RamVolume {
                    name: "shm".into(),
                    mount: SHARED_MEMORY_MOUNT.into(),
                    size_bytes: 1024 * MIB,
                },
            ]
        );
        // An order that bought the memory without the ram volumes cannot run the group.
        let mut short = spec.clone();
        short.resources.memory_mib = 2 * 256;
        short.resources.storage_mib = 2 * (128 + 1024 + 64);
        assert!(order_group(&manifest, &short).is_err());
    }

    const TWO_GROUPS: &str = include_str!("../../manifests/examples/two-groups.yaml");

    /// Regression (issue #10): two equal-sized groups used to both run the first one.
    #[test]
    fn each_order_gets_the_group_it_names_even_when_sizes_are_equal() {
        let sdl = leasehold_manifests::parse(TWO_GROUPS).unwrap();
        let manifest = sdl.manifest();
        let groups = sdl.groups();
        assert_eq!(groups.len(), 2);
        let specs: Vec<_> = groups
            .iter()
            .map(|group| order_spec_for_group(group).unwrap())
            .collect();
        assert_eq!(specs[0].resources, specs[1].resources, "equal sizes");
        for (group, spec) in groups.iter().zip(&specs) {
            let chosen = order_group(&manifest, spec).unwrap();
            assert_eq!(chosen.name, group.name);
        }
        let service_of = |spec| {
            let group = order_group(&manifest, spec).unwrap();
            lease_deployment(1, "0xabc", &manifest, &group.name, &[], &[])
                .unwrap()
                .services[0]
                .name
                .clone()
        };
        assert_eq!(service_of(&specs[0]), "web-a");
        assert_eq!(service_of(&specs[1]), "web-b");
    }

    #[test]
    fn an_order_naming_no_manifest_group_is_refused_with_the_names_available() {
        let sdl = leasehold_manifests::parse(TWO_GROUPS).unwrap();
        let mut spec = order_spec_for_group(&sdl.groups()[0]).unwrap();
        spec.group_name = leasehold_contracts::group_name_key("gamma");
        let err = order_group(&sdl.manifest(), &spec).unwrap_err();
        assert!(
            matches!(err, DeploymentError::GroupNotInManifest { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("`alpha`, `beta`"), "{err}");
    }

    #[test]
    fn garbage_is_a_json_error() {
        assert!(matches!(
            parse_manifest(b"{not json"),
            Err(DeploymentError::Json(_))
        ));
    }
}
