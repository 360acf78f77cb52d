//! Cross-reference checks and derivation of groups and the manifest (Akash's group builder).

use std::collections::{BTreeMap, BTreeSet};

use crate::check::{Checker, Loc, join};
use crate::model::{
    Attribute, Endpoint, EndpointKind, Expose, Group, Manifest, ManifestGroup, Price, Protocol,
    Requirements, ResourceUnit, Resources, Service, ServiceParams,
};
use crate::sdl::{
    ComputeSpec, Document, MAX_GROUP_UNITS, MAX_GROUPS, MAX_UNIT_COUNT, MAX_UNIT_CPU_MILLIS,
    MAX_UNIT_GPU, MAX_UNIT_MEMORY_BYTES, MAX_UNIT_STORAGE_BYTES, ServiceSpec, Version,
};

const TEE_ATTRIBUTE: &str = "tee/type";

/// Akash's leased-IP numbering: every non-plain-global target's IP name (empty
/// for service-to-service targets) of every deployed service, sorted; numbered from 1,
/// a repeated name keeping its last number.
fn endpoint_sequence_numbers(document: &Document) -> BTreeMap<String, u32> {
    let mut names: Vec<&str> = document
        .deployments
        .keys()
        .filter_map(|name| document.services.get(name))
        .flat_map(|service| service.expose.iter())
        .flat_map(|expose| expose.to.iter())
        .filter(|to| !(to.global && to.ip.is_empty()))
        .map(|to| to.ip.as_str())
        .collect();
    names.sort_unstable();
    let mut numbers = BTreeMap::new();
    for (position, name) in names.into_iter().enumerate() {
        numbers.insert(
            name.to_owned(),
            u32::try_from(position + 1).unwrap_or(u32::MAX),
        );
    }
    numbers
}

fn manifest_exposes(service: &ServiceSpec, numbers: &BTreeMap<String, u32>) -> Vec<Expose> {
    let mut exposes = Vec::new();
    for expose in &service.expose {
        let base = Expose {
            port: expose.port,
            external_port: expose.external_port,
            proto: expose.proto,
            service: String::new(),
            global: false,
            hosts: expose.hosts.clone(),
            http_options: expose.http_options.clone(),
            ip: String::new(),
            endpoint_sequence_number: 0,
        };
        if expose.to.is_empty() {
            exposes.push(base);
            continue;
        }
        for to in &expose.to {
            let endpoint_sequence_number = if to.global && !to.ip.is_empty() {
                numbers.get(&to.ip).copied().unwrap_or(0)
            } else {
                0
            };
            exposes.push(Expose {
                service: to.service.clone(),
                global: to.global,
                ip: to.ip.clone(),
                endpoint_sequence_number,
                ..base.clone()
            });
        }
    }
    // Akash's ServiceExposes order: target service, port, protocol, global first.
    exposes.sort_by(|left, right| {
        left.service
            .cmp(&right.service)
            .then(left.port.cmp(&right.port))
            .then(left.proto.cmp(&right.proto))
            .then(right.global.cmp(&left.global))
    });
    exposes
}

fn endpoints_of(exposes: &[Expose]) -> Vec<Endpoint> {
    let mut endpoints = Vec::new();
    for expose in exposes.iter().filter(|expose| expose.global) {
        let external = if expose.external_port == 0 {
            expose.port
        } else {
            expose.external_port
        };
        let kind = if expose.proto == Protocol::Tcp && external == 80 {
            EndpointKind::SharedHttp
        } else {
            EndpointKind::RandomPort
        };
        endpoints.push(Endpoint {
            kind,
            sequence_number: 0,
        });
        if !expose.ip.is_empty() {
            endpoints.push(Endpoint {
                kind: EndpointKind::LeasedIp,
                sequence_number: expose.endpoint_sequence_number,
            });
        }
    }
    endpoints
}

fn resources_of(compute: &ComputeSpec, endpoints: Vec<Endpoint>) -> Resources {
    Resources {
        id: 0,
        cpu_millis: compute.cpu_millis,
        memory_bytes: compute.memory_bytes,
        storage: compute.storage.clone(),
        gpu: compute.gpu.clone(),
        endpoints,
    }
}

/// Checks that names used by `deployment` and `expose` exist and fit together.
fn check_references(document: &Document, checker: &mut Checker) {
    let mut endpoints_used = BTreeSet::new();
    let mut ports_used: BTreeMap<(String, u16, Protocol), String> = BTreeMap::new();
    for (service_name, placements) in &document.deployments {
        let Some(service) = document.services.get(service_name) else {
            if document.declared.contains(&join("services", service_name)) {
                continue;
            }
            let loc = placements
                .values()
                .next()
                .map(|spec| spec.loc.clone())
                .unwrap_or_else(|| Loc {
                    path: join("deployment", service_name),
                    ..Loc::default()
                });
            checker.error(
                &Loc { path: join("deployment", service_name), ..loc },
                format!("deployment names service `{service_name}`, which is not declared under services"),
            );
            continue;
        };
        for (placement_name, deployment) in placements {
            let profile = &deployment.profile;
            let compute = document.compute.get(profile);
            if compute.is_none() && !document.declared.contains(&join("compute", profile)) {
                checker.error(
                    &Loc {
                        path: join(&deployment.loc.path, "profile"),
                        ..deployment.loc.clone()
                    },
                    format!(
                        "no compute profile named `{profile}` (declared: {})",
                        names(document.compute.keys())
                    ),
                );
            }
            match document.placements.get(placement_name) {
                None if document.declared.contains(&join("placement", placement_name)) => {}
                None => checker.error(
                    &deployment.loc,
                    format!(
                        "no placement profile named `{placement_name}` (declared: {})",
                        names(document.placements.keys())
                    ),
                ),
                Some(placement) if !placement.priced.contains(profile) => checker.error(
                    &Loc { path: join(&deployment.loc.path, "profile"), ..deployment.loc.clone() },
                    format!(
                        "placement `{placement_name}` has no pricing for compute profile `{profile}`; \
                         add profiles.placement.{placement_name}.pricing.{profile}"
                    ),
                ),
                Some(_) => {}
            }
            if let Some(compute) = compute {
                check_volumes(service_name, service, compute, checker);
                if let Some((tee, loc)) = &service.tee
                    && tee.kind == "cpu-gpu"
                    && compute.gpu.units == 0
                {
                    checker.error(
                        loc,
                        format!(
                            "tee `cpu-gpu` needs GPU resources, but compute profile `{profile}` \
                             requests no gpu units"
                        ),
                    );
                }
            }
        }
        for expose in &service.expose {
            for to in expose.to.iter().filter(|to| !to.ip.is_empty()) {
                if !document.endpoints.contains_key(&to.ip) {
                    checker.error(
                        &Loc {
                            path: join(&to.loc.path, "ip"),
                            ..to.loc.clone()
                        },
                        format!("no endpoint named `{}` is declared under endpoints", to.ip),
                    );
                    continue;
                }
                endpoints_used.insert(to.ip.clone());
                let key = (to.ip.clone(), expose.external_port, expose.proto);
                if let Some(other) = ports_used.insert(key, service_name.clone())
                    && other != *service_name
                {
                    checker.error(
                        &to.loc,
                        format!(
                            "IP endpoint `{}` port {} is already used by service `{other}`",
                            to.ip, expose.port
                        ),
                    );
                }
            }
        }
    }
    for (name, loc) in &document.endpoints {
        if !endpoints_used.contains(name) {
            checker.error(
                loc,
                format!("endpoint `{name}` is declared but never used by a deployed service"),
            );
        }
    }
}

fn names<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&str> = keys.map(String::as_str).collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}

fn check_volumes(
    service_name: &str,
    service: &ServiceSpec,
    compute: &ComputeSpec,
    checker: &mut Checker,
) {
    for (volume_name, param) in &service.storage_params {
        if !compute
            .storage
            .iter()
            .any(|volume| volume.name == *volume_name)
        {
            checker.error(
                &param.loc,
                format!(
                    "service `{service_name}` mounts volume `{volume_name}`, which its compute profile does not declare"
                ),
            );
        }
    }
    for volume in compute.storage.iter().filter(|volume| volume.persistent) {
        let mounted = service
            .storage_params
            .get(&volume.name)
            .is_some_and(|param| !param.mount.mount.is_empty());
        if !mounted {
            checker.error(
                &Loc {
                    path: join(&join(&service.loc.path, "params.storage"), &volume.name),
                    ..service.loc.clone()
                },
                format!(
                    "storage volume `{}` is persistent, so service `{service_name}` needs \
                     params.storage.{}.mount (an absolute path)",
                    volume.name, volume.name
                ),
            );
        }
    }
}

struct GroupBuilder {
    group: Group,
    services: Vec<Service>,
    /// compute profile -> index of its unit (v2.1 sharing)
    bound: BTreeMap<String, usize>,
    tee: Option<String>,
}

/// Checks cross-references and limits, then builds the groups and the manifest.
pub(crate) fn derive(document: &Document, checker: &mut Checker) -> (Vec<Group>, Manifest) {
    check_references(document, checker);
    if !checker.errors.is_empty() {
        return (Vec::new(), Manifest { groups: Vec::new() });
    }
    let numbers = endpoint_sequence_numbers(document);
    let mut builders: BTreeMap<String, GroupBuilder> = BTreeMap::new();
    for (service_name, placements) in &document.deployments {
        let Some(service) = document.services.get(service_name) else {
            continue;
        };
        for (placement_name, deployment) in placements {
            let (Some(compute), Some(placement)) = (
                document.compute.get(&deployment.profile),
                document.placements.get(placement_name),
            ) else {
                continue;
            };
            let Some(price) = placement.pricing.get(&deployment.profile) else {
                continue;
            };
            let builder = builders
                .entry(placement_name.clone())
                .or_insert_with(|| GroupBuilder {
                    group: Group {
                        name: placement_name.clone(),
                        requirements: Requirements {
                            attributes: placement.attributes.clone(),
                            signed_by: placement.signed_by.clone(),
                        },
                        units: Vec::new(),
                    },
                    services: Vec::new(),
                    bound: BTreeMap::new(),
                    tee: None,
                });
            if let Some((tee, loc)) = &service.tee {
                match &builder.tee {
                    Some(existing) if *existing != tee.kind => checker.error(
                        loc,
                        format!(
                            "placement `{placement_name}` mixes tee `{existing}` and `{}`; use one TEE type per placement",
                            tee.kind
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        builder.tee = Some(tee.kind.clone());
                        builder.group.requirements.attributes.push(Attribute {
                            key: TEE_ATTRIBUTE.to_owned(),
                            value: tee.kind.clone(),
                        });
                        builder.group.requirements.attributes.sort();
                    }
                }
            }
            let exposes = manifest_exposes(service, &numbers);
            let mut resources = resources_of(compute, endpoints_of(&exposes));
            let shared = match document.version {
                Version::V2_1 => builder.bound.get(&deployment.profile).copied(),
                Version::V2_0 => None,
            };
            match shared.and_then(|position| builder.group.units.get_mut(position)) {
                Some(unit) => {
                    resources.id = unit.resources.id;
                    unit.count = unit.count.saturating_add(deployment.count);
                    unit.resources
                        .endpoints
                        .extend(resources.endpoints.iter().copied());
                    unit.resources
                        .endpoints
                        .sort_by_key(|endpoint| endpoint.sequence_number);
                }
                None => {
                    resources.id = u32::try_from(builder.group.units.len() + 1).unwrap_or(u32::MAX);
                    builder.group.units.push(ResourceUnit {
                        resources: resources.clone(),
                        count: deployment.count,
                        price: Price {
                            denom: price.denom.clone(),
                            amount: price.amount,
                        },
                    });
                    builder
                        .bound
                        .insert(deployment.profile.clone(), builder.group.units.len() - 1);
                }
            }
            builder.services.push(manifest_service(
                service_name,
                service,
                resources,
                deployment.count,
                exposes,
            ));
        }
    }
    check_limits(&builders, checker);
    let mut groups = Vec::new();
    let mut manifest_groups = Vec::new();
    for (name, mut builder) in builders {
        builder
            .services
            .sort_by(|left, right| left.name.cmp(&right.name));
        groups.push(builder.group);
        manifest_groups.push(ManifestGroup {
            name,
            services: builder.services,
        });
    }
    (
        groups,
        Manifest {
            groups: manifest_groups,
        },
    )
}

fn manifest_service(
    name: &str,
    service: &ServiceSpec,
    resources: Resources,
    count: u32,
    expose: Vec<Expose>,
) -> Service {
    Service {
        name: name.to_owned(),
        image: service.image.clone(),
        command: service.command.clone(),
        args: service.args.clone(),
        env: service.env.clone(),
        resources,
        count,
        expose,
        params: service.has_params.then(|| ServiceParams {
            storage: service
                .storage_params
                .values()
                .map(|param| param.mount.clone())
                .collect(),
            permissions: service.permissions.clone(),
            tee: service.tee.as_ref().map(|(tee, _)| tee.clone()),
        }),
        credentials: service.credentials.clone(),
    }
}

fn check_limits(builders: &BTreeMap<String, GroupBuilder>, checker: &mut Checker) {
    let deployment = Loc {
        path: "deployment".to_owned(),
        ..Loc::default()
    };
    if builders.len() > MAX_GROUPS {
        checker.error(
            &deployment,
            format!(
                "{} placements are used; at most {MAX_GROUPS} groups are allowed",
                builders.len()
            ),
        );
    }
    let count = u64::from(u32::try_from(MAX_UNIT_COUNT).unwrap_or(u32::MAX));
    for (name, builder) in builders {
        let loc = Loc {
            path: join("profiles.placement", name),
            ..Loc::default()
        };
        let group = &builder.group;
        if group.units.len() > MAX_GROUP_UNITS {
            checker.error(
                &loc,
                format!(
                    "group `{name}` has {} resource units; at most {MAX_GROUP_UNITS} are allowed",
                    group.units.len()
                ),
            );
        }
        let denoms: BTreeSet<&str> = group
            .units
            .iter()
            .map(|unit| unit.price.denom.as_str())
            .collect();
        if denoms.len() > 1 {
            checker.error(
                &loc,
                format!(
                    "group `{name}` mixes denoms {}; one group pays in one token",
                    denoms.into_iter().collect::<Vec<_>>().join(", ")
                ),
            );
        }
        match group.totals() {
            Err(error) => checker.error(&loc, error.to_string()),
            Ok(totals) => {
                let limits = [
                    (
                        "cpu",
                        totals.cpu_millis,
                        MAX_UNIT_CPU_MILLIS.saturating_mul(count),
                    ),
                    (
                        "memory",
                        totals.memory_bytes,
                        MAX_UNIT_MEMORY_BYTES.saturating_mul(count),
                    ),
                    ("gpu", totals.gpu_units, MAX_UNIT_GPU.saturating_mul(count)),
                ];
                for (resource, total, max) in limits {
                    if total > max {
                        checker.error(
                            &loc,
                            format!("group `{name}` requests {total} {resource} in total; at most {max} is allowed"),
                        );
                    }
                }
                let storage_max = MAX_UNIT_STORAGE_BYTES.saturating_mul(count);
                if totals.storage_bytes > storage_max {
                    checker.error(
                        &loc,
                        format!("group `{name}` requests {} storage bytes in total; at most {storage_max} is allowed", totals.storage_bytes),
                    );
                }
            }
        }
    }
}
