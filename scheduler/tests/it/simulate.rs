use std::path::PathBuf;

use leasehold_scheduler::sim::{
    SimConfig, parse_openb_nodes, parse_openb_pods, simulate, workload,
};
use leasehold_scheduler::{BalanceWeights, PolicyKind};

pub fn openb(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/openb")
        .join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(openb(file)).expect("the openb trace ships in /work/shared/data/openb")
}

#[test]
fn openb_default_trace_one_seed_is_sane() {
    let nodes = parse_openb_nodes(&read("openb_node_list_gpu_node.csv")).unwrap();
    let pods = parse_openb_pods(&read("openb_pod_list_default.csv")).unwrap();
    assert_eq!(nodes.len(), 1213);
    assert_eq!(nodes.iter().map(|n| n.gpus.len()).sum::<usize>(), 6212);
    assert_eq!(pods.len(), 8152);

    // The reference protocol: the whole file, shuffled, then samples up to 130% of capacity.
    let order = workload(&pods, 6_212_000, 1300, 42);
    let mut first: Vec<usize> = order[..pods.len()].to_vec();
    assert_ne!(first, (0..pods.len()).collect::<Vec<_>>(), "shuffled");
    first.sort_unstable();
    assert_eq!(first, (0..pods.len()).collect::<Vec<_>>(), "every pod once");
    let demand: u64 = order.iter().map(|&i| pods[i].gpu.milli().unwrap()).sum();
    assert!(demand <= 8_075_600 && demand > 8_000_000, "{demand}");
    assert_eq!(
        order,
        workload(&pods, 6_212_000, 1300, 42),
        "deterministic per seed"
    );

    // A debug build replays the first 4,000 arrivals (all below 100% demand).
    let config = SimConfig {
        policy: PolicyKind::FgdBalanced,
        demand_permille: 1300,
        seed: 42,
        scale: 1,
        limit: Some(4000),
        weights: BalanceWeights::TUNED,
    };
    let outcome = simulate(&nodes, &pods, &config).unwrap();
    assert_eq!(outcome.arrivals, 4000);
    assert_eq!(outcome.placed + outcome.failed, 4000);
    assert_eq!(outcome.gpu_capacity_milli, 6_212_000);
    let requested: u64 = order[..4000]
        .iter()
        .map(|&i| pods[i].gpu.milli().unwrap())
        .sum();
    // Early in the trace the cluster is far from full: nearly everything fits.
    assert!(outcome.failed < 40, "{outcome:?}");
    assert!(outcome.allocated_at_end_milli + outcome.failed_gpu_milli == requested);
    let ratio = outcome.ratio_at_end();
    assert!(ratio > 0.3 && ratio < 0.8, "{ratio}");
}

#[test]
fn trace_errors_name_line_and_column() {
    let error =
        parse_openb_pods("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\np,100,10,1,abc,\n")
            .unwrap_err();
    assert_eq!(
        error.to_string(),
        "pod list line 2: column `gpu_milli`: `abc`: invalid digit found in string"
    );
    let error =
        parse_openb_nodes("sn,cpu_milli,memory_mib,gpu,model\nn1,100,10,2,Z9\n").unwrap_err();
    assert!(
        error.to_string().contains("unknown gpu model `Z9`"),
        "{error}"
    );
    let error = parse_openb_pods("name,cpu_milli\np,1\n").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("header lacks column `memory_mib`"),
        "{error}"
    );
}

#[test]
fn a_trace_above_the_demand_is_thinned_at_random_not_cut_and_arrives_shuffled() {
    let pods = parse_openb_pods(&read("openb_pod_list_multigpu50.csv")).unwrap();
    let milli =
        |order: &[usize]| -> u64 { order.iter().map(|&i| pods[i].gpu.milli().unwrap()).sum() };
    let whole: Vec<usize> = (0..pods.len()).collect();
    assert!(milli(&whole) > 8_075_600, "the file alone exceeds 130%");

    let order = workload(&pods, 6_212_000, 1300, 42);
    let demand = milli(&order);
    assert!(demand <= 8_075_600 && demand > 8_060_000, "{demand}");
    let mut distinct = order.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), order.len(), "no pod twice");
    // Pods from the whole file survive, the last tenth included (a cut would keep none).
    let tail = pods.len() * 9 / 10;
    let from_tail = order.iter().filter(|&&i| i >= tail).count();
    assert!(
        from_tail > pods.len() / 20,
        "{from_tail} of the last tenth kept"
    );
    let multi_gpu = |order: &[usize]| {
        order
            .iter()
            .filter(|&&i| pods[i].gpu.milli().unwrap() > 1000)
            .count()
    };
    let share_kept = multi_gpu(&order) as f64 / multi_gpu(&whole) as f64;
    assert!(
        (0.6..0.8).contains(&share_kept),
        "multi-GPU pods kept in proportion: {share_kept}"
    );
    assert_ne!(
        order,
        workload(&pods, 6_212_000, 1300, 43),
        "the seed picks the pods"
    );
    // Shuffled: the multi-GPU pods (the file's last tenth) do not all come last.
    let first_half_multi = multi_gpu(&order[..order.len() / 2]);
    assert!(
        first_half_multi > multi_gpu(&order) / 3,
        "{first_half_multi}"
    );
}
