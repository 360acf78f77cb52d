//! The tenant command line. `main.rs` only parses arguments and calls [`run`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use leasehold_manifests::{Group, ManifestErrors, Sdl, Totals};
use serde::Serialize;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the manifest is invalid.
pub const EXIT_INVALID: u8 = 1;
/// Exit code: usage or IO error (bad arguments, unreadable file).
pub const EXIT_USAGE: u8 = 2;

const EXIT_CODES: &str = "Exit codes:\n  0  success\n  1  invalid manifest (every error is printed)\n  2  usage or IO error (bad arguments, unreadable file)";

/// Leasehold tenant CLI.
#[derive(Debug, Parser)]
#[command(name = "tenant", version, about = "Deploy and manage workloads on Leasehold", after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable table.
    Text,
    /// One JSON document.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and validate an SDL file; show its groups and manifest hash.
    #[command(after_help = concat!(
        "Example:\n  tenant validate manifests/examples/hello.yaml\n  tenant validate app.yaml --output json\n\n",
        "Exit codes:\n  0  valid\n  1  invalid manifest (every error is printed with path, line and column)\n  2  usage or IO error (bad arguments, unreadable file)"
    ))]
    Validate {
        /// SDL file (Akash SDL v2.0 or v2.1).
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

/// Runs the CLI and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate { file, output } => match validate(&file, output) {
            Ok(report) => {
                print!("{}", report.text);
                ExitCode::from(report.code)
            }
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::from(EXIT_USAGE)
            }
        },
    }
}

/// What `validate` prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Text for stdout.
    pub text: String,
    /// Exit code.
    pub code: u8,
}

#[derive(Serialize)]
struct GroupJson<'a> {
    #[serde(flatten)]
    group: &'a Group,
    totals: Totals,
}

#[derive(Serialize)]
struct ValidJson<'a> {
    valid: bool,
    version: leasehold_manifests::Version,
    manifest_hash: String,
    groups: Vec<GroupJson<'a>>,
}

/// Reads and validates `file`. IO problems are errors; an invalid manifest is a [`Report`]
/// with exit code [`EXIT_INVALID`].
pub fn validate(file: &Path, output: Output) -> anyhow::Result<Report> {
    let yaml =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    match leasehold_manifests::parse(&yaml) {
        Ok(sdl) => valid_report(&sdl, output),
        Err(errors) => invalid_report(file, &errors, output),
    }
}

fn valid_report(sdl: &Sdl, output: Output) -> anyhow::Result<Report> {
    let groups = sdl.groups();
    let hash = sdl.manifest().hash_hex();
    let mut with_totals = Vec::new();
    for group in &groups {
        with_totals.push(GroupJson {
            group,
            totals: group.totals().context("computing group totals")?,
        });
    }
    let text = match output {
        Output::Json => {
            let document = ValidJson {
                valid: true,
                version: sdl.version(),
                manifest_hash: hash,
                groups: with_totals,
            };
            format!("{}\n", serde_json::to_string_pretty(&document)?)
        }
        Output::Text => table(&with_totals, &hash),
    };
    Ok(Report {
        text,
        code: EXIT_OK,
    })
}

fn invalid_report(file: &Path, errors: &ManifestErrors, output: Output) -> anyhow::Result<Report> {
    let text = match output {
        Output::Json => format!("{}\n", serde_json::to_string_pretty(errors)?),
        Output::Text => {
            let mut text = format!("{}: {} error(s)\n", file.display(), errors.errors().len());
            for error in errors.errors() {
                let _ = writeln!(text, "  {error}");
            }
            text
        }
    };
    Ok(Report {
        text,
        code: EXIT_INVALID,
    })
}

fn mebibytes(bytes: u64) -> String {
    format!("{}Mi", bytes / (1 << 20))
}

fn table(groups: &[GroupJson<'_>], hash: &str) -> String {
    let mut rows = vec![
        [
            "GROUP",
            "COUNT",
            "CPU",
            "MEMORY",
            "STORAGE",
            "GPU",
            "PRICE/H",
            "ENDPOINTS",
        ]
        .map(str::to_owned),
    ];
    for entry in groups {
        for unit in &entry.group.units {
            let resources = &unit.resources;
            let storage: u64 = resources.storage.iter().map(|volume| volume.bytes).sum();
            let gpu = if resources.gpu.units == 0 {
                "-".to_owned()
            } else {
                let models: Vec<String> = resources
                    .gpu
                    .models
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                format!("{} x {}", resources.gpu.units, models.join("|"))
            };
            rows.push([
                entry.group.name.clone(),
                unit.count.to_string(),
                format!("{}m", resources.cpu_millis),
                mebibytes(resources.memory_bytes),
                mebibytes(storage),
                gpu,
                format!("{} {}", unit.price.amount, unit.price.denom),
                resources.endpoints.len().to_string(),
            ]);
        }
        let totals = &entry.totals;
        rows.push([
            format!("{} (total)", entry.group.name),
            totals.replicas.to_string(),
            format!("{}m", totals.cpu_millis),
            mebibytes(totals.memory_bytes),
            mebibytes(totals.storage_bytes),
            totals.gpu_units.to_string(),
            format!("{} {}", totals.price.amount, totals.price.denom),
            String::new(),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(text, "{}", cells.join("  ").trim_end());
    }
    let _ = writeln!(text, "manifest hash: {hash}");
    text
}
