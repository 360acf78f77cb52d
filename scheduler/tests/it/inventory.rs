use std::collections::BTreeMap;

use leasehold_scheduler::{
    GpuConstraint, GpuDemand, GpuDevice, GpuModelKey, GpuModelPattern, GpuSpec, GroupRequest,
    GroupUnit, Inventory, InventoryError, NodeSpec, PolicyKind, ReplicaRequest, Resources,
    WorkloadProfile,
};
use proptest::prelude::*;

const GIB: u64 = 1 << 30;
const MODELS: [&str; 3] = [
    "nvidia/t4/16gi/pcie",
    "nvidia/a100/80gi/sxm",
    "nvidia/a100/40gi/pcie",
];

fn node(id: usize, model: usize, gpus: u32, cpu: u64) -> NodeSpec {
    let key = MODELS[model].parse::<GpuModelKey>().unwrap();
    NodeSpec {
        id: format!("node-{id}"),
        capacity: Resources {
            cpu_millis: cpu,
            memory_bytes: 64 * GIB,
            ephemeral_storage_bytes: 100 * GIB,
            persistent_storage: [("ssd".to_string(), 500 * GIB)].into_iter().collect(),
        },
        gpus: (0..gpus)
            .map(|index| GpuDevice {
                index,
                spec: GpuSpec::from_key(key.clone(), 40 * GIB),
            })
            .collect(),
    }
}

fn replica(cpu: u64, gpu: GpuDemand, models: &[&str]) -> ReplicaRequest {
    ReplicaRequest {
        resources: Resources {
            cpu_millis: cpu,
            memory_bytes: 4 * GIB,
            ephemeral_storage_bytes: GIB,
            persistent_storage: [("ssd".to_string(), 10 * GIB)].into_iter().collect(),
        },
        gpu,
        gpu_constraint: GpuConstraint {
            models: models
                .iter()
                .map(|m| m.parse::<GpuModelPattern>().unwrap())
                .collect(),
            ..GpuConstraint::default()
        },
    }
}

fn group(name: &str, units: Vec<(ReplicaRequest, u32)>) -> GroupRequest {
    GroupRequest {
        name: name.into(),
        units: units
            .into_iter()
            .map(|(replica, count)| GroupUnit { replica, count })
            .collect(),
    }
}

fn inventory(nodes: Vec<NodeSpec>) -> Inventory {
    Inventory::new(nodes, PolicyKind::BestFit.build(WorkloadProfile::default())).unwrap()
}

#[test]
fn reserve_commit_release_lifecycle_is_idempotent() {
    let mut inv = inventory(vec![node(0, 1, 4, 16_000), node(1, 0, 2, 16_000)]);
    let empty = inv.cluster().free_by_node();
    let web = group(
        "web",
        vec![(replica(2000, GpuDemand::Whole(2), &["nvidia/a100/*"]), 2)],
    );
    let placed = inv.reserve("order-1", &web, 100).unwrap();
    assert_eq!(placed.replicas.len(), 2);
    assert!(
        placed
            .replicas
            .iter()
            .all(|r| r.node_id == "node-0" && r.gpus.len() == 2)
    );
    // Same id again: the same reservation, no more capacity taken.
    assert_eq!(inv.reserve("order-1", &web, 100).unwrap(), placed);
    // A third a100 replica does not fit: all or nothing, and nothing changes.
    let before = inv.cluster().free_by_node();
    let err = inv.reserve(
        "order-2",
        &group(
            "big",
            vec![(replica(1000, GpuDemand::Whole(2), &["nvidia/a100/*"]), 1)],
        ),
        100,
    );
    assert!(matches!(err, Err(InventoryError::NoFit { .. })), "{err:?}");
    assert_eq!(inv.cluster().free_by_node(), before);

    inv.commit("order-1", 50).unwrap();
    inv.commit("order-1", 60).unwrap();
    assert!(inv.reservations().is_empty() && inv.allocations().contains_key("order-1"));
    assert!(matches!(
        inv.reserve("order-1", &web, 100),
        Err(InventoryError::AlreadyAllocated(_))
    ));
    assert!(inv.release("order-1").unwrap());
    assert!(!inv.release("order-1").unwrap());
    assert_eq!(inv.cluster().free_by_node(), empty);
}

#[test]
fn expired_reservations_return_capacity_and_cannot_commit() {
    let mut inv = inventory(vec![node(0, 0, 2, 8000)]);
    let empty = inv.cluster().free_by_node();
    let unit = group("g", vec![(replica(1000, GpuDemand::Fraction(600), &[]), 1)]);
    inv.reserve("a", &unit, 10).unwrap();
    inv.reserve("b", &unit, 20).unwrap();
    assert!(matches!(
        inv.commit("a", 10),
        Err(InventoryError::Expired { .. })
    ));
    assert_eq!(inv.expire(10).unwrap(), vec!["a".to_string()]);
    assert_eq!(inv.expire(15).unwrap(), Vec::<String>::new());
    assert_eq!(inv.expire(20).unwrap(), vec!["b".to_string()]);
    assert_eq!(inv.cluster().free_by_node(), empty);
}

#[test]
fn snapshot_round_trips_through_json() {
    let mut inv = inventory(vec![node(0, 1, 8, 64_000), node(1, 0, 4, 32_000)]);
    inv.reserve(
        "r",
        &group(
            "r",
            vec![(replica(1000, GpuDemand::Fraction(250), &["nvidia/t4"]), 3)],
        ),
        99,
    )
    .unwrap();
    inv.reserve(
        "l",
        &group("l", vec![(replica(8000, GpuDemand::Whole(4), &[]), 1)]),
        99,
    )
    .unwrap();
    inv.commit("l", 1).unwrap();
    let json = serde_json::to_string(&inv.snapshot()).unwrap();
    let restored = Inventory::restore(
        serde_json::from_str(&json).unwrap(),
        PolicyKind::FirstFit.build(WorkloadProfile::default()),
    )
    .unwrap();
    assert_eq!(
        restored.cluster().free_by_node(),
        inv.cluster().free_by_node()
    );
    assert_eq!(restored.snapshot(), inv.snapshot());

    // A snapshot that overcommits a GPU is rejected, naming the entry.
    let mut bad = inv.snapshot();
    let mut twin = bad.allocations["l"].clone();
    twin.group = "twin".into();
    bad.allocations.insert("twin".into(), twin);
    bad.allocations.get_mut("twin").unwrap().replicas[0]
        .resources
        .cpu_millis = 1;
    let error = Inventory::restore(bad, PolicyKind::FirstFit.build(WorkloadProfile::default()))
        .unwrap_err();
    assert!(
        error.to_string().contains("snapshot entry `twin`"),
        "{error}"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Reserve {
        id: u8,
        group: GroupRequest,
        expires_at: u64,
    },
    Commit {
        id: u8,
        now: u64,
    },
    Release {
        id: u8,
    },
    Expire {
        now: u64,
    },
}

fn arbitrary_replica() -> impl Strategy<Value = ReplicaRequest> {
    let gpu = prop_oneof![
        Just(GpuDemand::None),
        (1u32..=4).prop_map(GpuDemand::Whole),
        (1u32..1000).prop_map(GpuDemand::Fraction),
    ];
    let models = prop_oneof![
        Just(vec![]),
        Just(vec!["nvidia/a100/*"]),
        Just(vec!["nvidia/t4/16gi/pcie"]),
        Just(vec!["nvidia/*/40gi"]),
    ];
    (0u64..12_000, gpu, models).prop_map(|(cpu, gpu, models)| replica(cpu, gpu, &models))
}

fn arbitrary_op() -> impl Strategy<Value = Op> {
    let units = prop::collection::vec((arbitrary_replica(), 1u32..=3), 1..=2);
    prop_oneof![
        3 => (0u8..8, units, 0u64..50).prop_map(|(id, units, expires_at)| Op::Reserve {
            id,
            group: group(&format!("g{id}"), units),
            expires_at,
        }),
        2 => (0u8..8, 0u64..50).prop_map(|(id, now)| Op::Commit { id, now }),
        1 => (0u8..8).prop_map(|id| Op::Release { id }),
        1 => (0u64..60).prop_map(|now| Op::Expire { now }),
    ]
}

/// Capacity minus free must equal exactly what the ledgers hold, GPU by GPU; every
/// share must honour its request.
fn check_invariants(
    inv: &Inventory,
    nodes: &[NodeSpec],
    groups: &BTreeMap<String, GroupRequest>,
) -> Result<(), TestCaseError> {
    let mut used_cpu: BTreeMap<&str, u64> = BTreeMap::new();
    let mut used_gpu: BTreeMap<(&str, u32), u64> = BTreeMap::new();
    let ledgers = inv
        .reservations()
        .iter()
        .map(|(id, r)| (id, &r.placement))
        .chain(inv.allocations().iter());
    for (id, placement) in ledgers {
        let group = &groups[id.as_str()];
        let requests: Vec<&ReplicaRequest> = group
            .units
            .iter()
            .flat_map(|u| std::iter::repeat_n(&u.replica, u.count as usize))
            .collect();
        prop_assert_eq!(requests.len(), placement.replicas.len());
        for (request, replica) in requests.iter().zip(&placement.replicas) {
            *used_cpu.entry(replica.node_id.as_str()).or_default() += replica.resources.cpu_millis;
            for share in &replica.gpus {
                *used_gpu
                    .entry((replica.node_id.as_str(), share.device_index))
                    .or_default() += u64::from(share.milli);
                let allowed = &request.gpu_constraint.models;
                prop_assert!(allowed.is_empty() || allowed.iter().any(|p| p.matches(&share.model)));
            }
            match request.gpu {
                GpuDemand::None => prop_assert!(replica.gpus.is_empty()),
                GpuDemand::Fraction(milli) => {
                    prop_assert_eq!(replica.gpus.len(), 1);
                    prop_assert_eq!(replica.gpus[0].milli, milli);
                }
                GpuDemand::Whole(units) => {
                    let mut devices: Vec<u32> =
                        replica.gpus.iter().map(|g| g.device_index).collect();
                    devices.sort_unstable();
                    devices.dedup();
                    prop_assert_eq!(devices.len(), units as usize);
                    prop_assert!(replica.gpus.iter().all(|g| g.milli == 1000));
                }
            }
        }
    }
    let free = inv.cluster().free_by_node();
    for spec in nodes {
        let (resources, gpus) = &free[&spec.id];
        prop_assert!(resources.cpu_millis <= spec.capacity.cpu_millis);
        prop_assert!(resources.memory_bytes <= spec.capacity.memory_bytes);
        prop_assert_eq!(
            spec.capacity.cpu_millis - resources.cpu_millis,
            used_cpu.get(spec.id.as_str()).copied().unwrap_or(0)
        );
        for (device, free_milli) in spec.gpus.iter().zip(gpus) {
            prop_assert!(*free_milli <= 1000);
            let used = used_gpu
                .get(&(spec.id.as_str(), device.index))
                .copied()
                .unwrap_or(0);
            prop_assert!(used <= 1000, "gpu over 1000 milli");
            prop_assert_eq!(1000 - u64::from(*free_milli), used);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn ledgers_conserve_capacity_exactly(
        shapes in prop::collection::vec((0usize..3, 0u32..=8, 4_000u64..64_000), 1..6),
        ops in prop::collection::vec(arbitrary_op(), 1..40),
        policy in 0usize..4,
    ) {
        let nodes: Vec<NodeSpec> = shapes.iter().enumerate().map(|(i, &(m, g, c))| node(i, m, g, c)).collect();
        let profile = WorkloadProfile::from_requests(ops.iter().flat_map(|op| match op {
            Op::Reserve { group, .. } => group.units.iter().map(|u| &u.replica).collect(),
            _ => Vec::new(),
        }));
        let mut inv = Inventory::new(nodes.clone(), PolicyKind::ALL[policy].build(profile)).unwrap();
        let mut groups: BTreeMap<String, GroupRequest> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Reserve { id, group, expires_at } => {
                    let id = format!("{id}");
                    let before = inv.cluster().free_by_node();
                    let known = inv.reservations().contains_key(&id) || inv.allocations().contains_key(&id);
                    match inv.reserve(&id, &group, expires_at) {
                        Ok(_) => {
                            groups.entry(id).or_insert(group);
                        }
                        Err(_) => {
                            prop_assert_eq!(before, inv.cluster().free_by_node(), "failed reserve changed capacity");
                            prop_assert!(known || !inv.reservations().contains_key(&id));
                        }
                    }
                }
                Op::Commit { id, now } => {
                    let _ = inv.commit(&format!("{id}"), now);
                }
                Op::Release { id } => {
                    let id = format!("{id}");
                    inv.release(&id).unwrap();
                    prop_assert!(!inv.reservations().contains_key(&id));
                }
                Op::Expire { now } => {
                    inv.expire(now).unwrap();
                    prop_assert!(inv.reservations().values().all(|r| r.expires_at > now));
                }
            }
            groups.retain(|id, _| inv.reservations().contains_key(id) || inv.allocations().contains_key(id));
            check_invariants(&inv, &nodes, &groups)?;
        }
        // Releasing everything gives back the empty cluster exactly.
        let ids: Vec<String> = groups.keys().cloned().collect();
        for id in ids {
            prop_assert!(inv.release(&id).unwrap());
        }
        let fresh = Inventory::new(nodes.clone(), PolicyKind::FirstFit.build(WorkloadProfile::default())).unwrap();
        prop_assert_eq!(inv.cluster().free_by_node(), fresh.cluster().free_by_node());
    }
}
