//! The `scheduler` binary: trace simulation and benchmarks over the library.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use leasehold_scheduler::PolicyKind;
use leasehold_scheduler::policy::BalanceWeights;
use leasehold_scheduler::sim::{
    SimConfig, SimOutcome, parse_openb_nodes, parse_openb_pods, simulate,
};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "scheduler",
    version,
    about = "Leasehold scheduler: placement simulation and benchmarks",
    after_help = "Example:\n  scheduler simulate --nodes openb_node_list_gpu_node.csv \\\n    --pods openb_pod_list_default.csv --seeds 42..51"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay an openb GPU trace against a policy (the FGD paper's workload-tuning experiment)
    #[command(
        after_help = "Example:\n  scheduler simulate --nodes data/openb/openb_node_list_gpu_node.csv \\\n    --pods data/openb/openb_pod_list_default.csv --policy fgd-balanced --demand 1.3 --seeds 42..51 --json"
    )]
    Simulate(SimulateArgs),
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// Node list CSV (openb_node_list_gpu_node.csv)
    #[arg(long)]
    nodes: PathBuf,
    /// Pod list CSV (openb_pod_list_*.csv)
    #[arg(long)]
    pods: PathBuf,
    /// Placement policy: first-fit, best-fit, fgd or fgd-balanced
    #[arg(long, default_value = "fgd-balanced")]
    policy: PolicyKind,
    /// Arrived demand as a multiple of cluster GPU capacity
    #[arg(long, default_value_t = 1.3)]
    demand: f64,
    /// Seeds, a single number or an inclusive range `A..B`
    #[arg(long, default_value = "42..51")]
    seeds: String,
    /// Repeat the node list K times
    #[arg(long, default_value_t = 1)]
    scale: u32,
    /// fgd-balanced: weight of GPU capacity starved of CPU/memory
    #[arg(long, default_value_t = BalanceWeights::TUNED.starvation)]
    starvation_weight: f64,
    /// fgd-balanced: weight of the credit for keeping model-constrained GPUs free
    #[arg(long, default_value_t = BalanceWeights::TUNED.pressure)]
    pressure_weight: f64,
    /// Stop each run after this many arrivals
    #[arg(long)]
    limit: Option<usize>,
    /// Print JSON (same as --output json)
    #[arg(long)]
    json: bool,
    /// Output format: text or json
    #[arg(long, default_value = "text")]
    output: OutputFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Serialize)]
struct Report {
    policy: String,
    seeds: Vec<u64>,
    scale: u32,
    nodes: usize,
    mean_arrivals: f64,
    mean_alloc_pct_at_100: f64,
    mean_alloc_pct_at_end: f64,
    mean_failed_pods: f64,
    placements_per_second: f64,
    mean_run_seconds: f64,
    runs: Vec<SimOutcome>,
}

fn parse_seeds(text: &str) -> Result<Vec<u64>> {
    let parse = |part: &str| {
        part.trim()
            .parse::<u64>()
            .with_context(|| format!("--seeds: `{part}` is not a number"))
    };
    match text.split_once("..") {
        Some((start, end)) => {
            let (start, end) = (parse(start)?, parse(end.trim_start_matches('='))?);
            if start > end {
                bail!("--seeds: range {start}..{end} is empty");
            }
            Ok((start..=end).collect())
        }
        None => Ok(vec![parse(text)?]),
    }
}

fn run_simulate(args: SimulateArgs) -> Result<()> {
    if !(args.demand.is_finite() && args.demand > 0.0 && args.demand <= 100.0) {
        bail!(
            "--demand must be a positive multiple of capacity (e.g. 1.3), got {}",
            args.demand
        );
    }
    if !(args.starvation_weight.is_finite() && args.starvation_weight >= 0.0) {
        bail!(
            "--starvation-weight must be a non-negative number, got {}",
            args.starvation_weight
        );
    }
    if args.scale == 0 {
        bail!("--scale must be at least 1");
    }
    let seeds = parse_seeds(&args.seeds)?;
    let nodes_text = std::fs::read_to_string(&args.nodes)
        .with_context(|| format!("reading --nodes {}", args.nodes.display()))?;
    let pods_text = std::fs::read_to_string(&args.pods)
        .with_context(|| format!("reading --pods {}", args.pods.display()))?;
    let nodes = parse_openb_nodes(&nodes_text)
        .with_context(|| format!("parsing {}", args.nodes.display()))?;
    let pods =
        parse_openb_pods(&pods_text).with_context(|| format!("parsing {}", args.pods.display()))?;
    let mut runs = Vec::with_capacity(seeds.len());
    let mut seconds = 0.0;
    for &seed in &seeds {
        let config = SimConfig {
            policy: args.policy,
            demand_permille: (args.demand * 1000.0).round() as u64,
            seed,
            scale: args.scale,
            limit: args.limit,
            weights: BalanceWeights {
                starvation: args.starvation_weight,
                pressure: args.pressure_weight,
            },
        };
        let started = Instant::now();
        let outcome = simulate(&nodes, &pods, &config).context("simulation")?;
        seconds += started.elapsed().as_secs_f64();
        runs.push(outcome);
    }
    let count = runs.len() as f64;
    let mean = |f: &dyn Fn(&SimOutcome) -> f64| runs.iter().map(f).sum::<f64>() / count;
    let arrivals: usize = runs.iter().map(|run| run.arrivals).sum();
    let report = Report {
        policy: args.policy.to_string(),
        seeds,
        scale: args.scale,
        nodes: runs.first().map_or(0, |run| run.nodes),
        mean_arrivals: mean(&|run| run.arrivals as f64),
        mean_alloc_pct_at_100: mean(&|run| run.ratio_at_100() * 100.0),
        mean_alloc_pct_at_end: mean(&|run| run.ratio_at_end() * 100.0),
        mean_failed_pods: mean(&|run| run.failed as f64),
        placements_per_second: if seconds > 0.0 {
            arrivals as f64 / seconds
        } else {
            0.0
        },
        mean_run_seconds: seconds / count,
        runs,
    };
    if args.json || args.output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "policy {} | {} nodes | seeds {:?} | mean arrivals {:.0}",
            report.policy, report.nodes, report.seeds, report.mean_arrivals
        );
        println!(
            "gpu allocation: {:.2}% at 100% demand, {:.2}% at {:.0}% demand",
            report.mean_alloc_pct_at_100,
            report.mean_alloc_pct_at_end,
            args.demand * 100.0
        );
        println!("failed pods (mean): {:.1}", report.mean_failed_pods);
        println!(
            "throughput: {:.0} placements/s, {:.3} s per run",
            report.placements_per_second, report.mean_run_seconds
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Simulate(args) => run_simulate(args),
    }
}
