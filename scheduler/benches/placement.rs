//! Placement and reservation speed on a synthetic 1,000-node GPU inventory.
//! Run: `cargo bench -p leasehold-scheduler --bench placement`

use divan::Bencher;
use leasehold_scheduler::{
    Cluster, GpuConstraint, GpuDemand, GpuDevice, GpuModelKey, GpuSpec, GroupRequest, GroupUnit,
    Inventory, NodeSpec, PolicyKind, ReplicaRequest, Resources, WorkloadProfile,
};

const GIB: u64 = 1 << 30;
const NODES: usize = 1000;

fn main() {
    divan::main();
}

fn nodes() -> Vec<NodeSpec> {
    let models = [
        "nvidia/a100/80gi/sxm",
        "nvidia/t4/16gi/pcie",
        "nvidia/v100/32gi/pcie",
    ];
    (0..NODES)
        .map(|i| {
            let key = models[i % models.len()]
                .parse::<GpuModelKey>()
                .unwrap_or_else(|e| panic!("{e}"));
            let gpus = [8, 4, 2][i % 3];
            NodeSpec {
                id: format!("node-{i}"),
                capacity: Resources {
                    cpu_millis: 96_000,
                    memory_bytes: 384 * GIB,
                    ..Resources::default()
                },
                gpus: (0..gpus)
                    .map(|index| GpuDevice {
                        index,
                        spec: GpuSpec::from_key(key.clone(), 32 * GIB),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// A repeating mix like openb's: mostly single and fractional GPUs, a few multi-GPU.
fn requests(count: usize) -> Vec<ReplicaRequest> {
    let shapes = [
        (GpuDemand::Whole(1), 12_000),
        (GpuDemand::Fraction(810), 8_000),
        (GpuDemand::Fraction(470), 4_000),
        (GpuDemand::None, 16_000),
        (GpuDemand::Fraction(230), 3_000),
        (GpuDemand::Whole(2), 24_000),
        (GpuDemand::Whole(8), 64_000),
    ];
    (0..count)
        .map(|i| {
            let (gpu, cpu) = shapes[(i * 7 + i / 3) % shapes.len()];
            ReplicaRequest {
                resources: Resources {
                    cpu_millis: cpu,
                    memory_bytes: 16 * GIB,
                    ..Resources::default()
                },
                gpu,
                gpu_constraint: GpuConstraint::default(),
            }
        })
        .collect()
}

/// Places 2,000 replicas one by one into an empty 1,000-node cluster.
#[divan::bench(args = ["first-fit", "best-fit", "fgd", "fgd-balanced"], sample_count = 20)]
fn place_2000_replicas(bencher: Bencher, policy: &str) {
    let kind: PolicyKind = policy.parse().unwrap_or_else(|e| panic!("{e}"));
    let work = requests(2000);
    bencher
        .with_inputs(|| {
            Cluster::new(nodes(), kind.build(WorkloadProfile::from_requests(&work)))
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .bench_local_values(|mut cluster| {
            for request in &work {
                divan::black_box(cluster.place(request));
            }
            cluster
        });
}

/// Reserves then releases a 4-replica group on a half-full inventory.
#[divan::bench(args = ["best-fit", "fgd-balanced"])]
fn reserve_and_release_group(bencher: Bencher, policy: &str) {
    let kind: PolicyKind = policy.parse().unwrap_or_else(|e| panic!("{e}"));
    let work = requests(3000);
    let mut inventory = Inventory::new(nodes(), kind.build(WorkloadProfile::from_requests(&work)))
        .unwrap_or_else(|e| panic!("{e}"));
    for (i, request) in work.iter().enumerate() {
        let group = GroupRequest {
            name: format!("fill-{i}"),
            units: vec![GroupUnit {
                replica: request.clone(),
                count: 1,
            }],
        };
        let _ = inventory.reserve(&format!("fill-{i}"), &group, u64::MAX);
    }
    let group = GroupRequest {
        name: "bench".into(),
        units: vec![GroupUnit {
            replica: requests(2).remove(1),
            count: 4,
        }],
    };
    bencher.bench_local(|| {
        let placed = inventory
            .reserve("bench", &group, u64::MAX)
            .map(|p| p.replicas.len());
        let released = inventory.release("bench");
        divan::black_box((placed, released))
    });
}
