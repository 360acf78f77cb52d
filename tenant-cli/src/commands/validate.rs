//! `tenant validate`: parse and check an SDL without touching the network.

use std::fmt::Write as _;
use std::path::Path;

use leasehold_manifests::{Group, ManifestErrors, ManifestWarning, Sdl, Totals};
use serde::Serialize;

use crate::error::{CliError, CliResult, ExitKind};
use crate::output::{Output, table};

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
    /// How each group's price is read.
    pricing: Vec<String>,
    warnings: &'a [ManifestWarning],
}

/// Prints the report; exit code 0 when valid, 1 when the manifest has errors (with `strict`,
/// also when it has warnings).
pub fn run(file: &Path, strict: bool, output: Output) -> CliResult<u8> {
    match read_sdl(file, strict)? {
        Ok(sdl) => {
            check_auditors(file, &sdl)?;
            print!("{}", valid_report(&sdl, output)?);
            Ok(0)
        }
        Err(errors) => {
            print!("{}", invalid_report(file, &errors, output));
            Ok(ExitKind::Failed.code())
        }
    }
}

/// Reads and parses; IO problems are usage errors (exit 2), manifest errors are returned.
pub fn read_sdl(file: &Path, strict: bool) -> CliResult<Result<Sdl, ManifestErrors>> {
    let yaml = std::fs::read_to_string(file)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", file.display())))?;
    Ok(if strict {
        leasehold_manifests::parse_strict(&yaml)
    } else {
        leasehold_manifests::parse(&yaml)
    })
}

/// One line per group saying how its SDL price becomes the order's maximum price.
pub fn pricing_lines(groups: &[Group]) -> CliResult<Vec<String>> {
    let mut lines = Vec::new();
    for group in groups {
        let totals = group
            .totals()
            .map_err(|e| CliError::failed(format!("computing group totals: {e}")))?;
        let per_replica: Vec<String> = group
            .units
            .iter()
            .map(|unit| {
                format!(
                    "{} x {} {}",
                    unit.count, unit.price.amount, unit.price.denom
                )
            })
            .collect();
        lines.push(format!(
            "group `{}`: {} per replica per hour, read as token base units: the order's maximum \
             is {}/h in the deployment's payment token (Akash would read the amount per block)",
            group.name,
            per_replica.join(" + "),
            totals.price.amount.floor_units()
        ));
    }
    Ok(lines)
}

/// The text block listing warnings, one per line (empty when there are none).
pub fn warnings_text(warnings: &[ManifestWarning]) -> String {
    let mut text = String::new();
    for warning in warnings {
        let _ = writeln!(text, "warning: {warning}");
    }
    text
}

/// `signedBy` auditors must be EVM addresses (Akash's bech32 ones cannot attest here): a
/// manifest naming others is refused with the field, never deployed as if unaudited.
pub fn check_auditors(file: &Path, sdl: &Sdl) -> CliResult<()> {
    let problems: Vec<String> = sdl
        .groups()
        .iter()
        .filter_map(|group| {
            leasehold_contracts::auditors_for_group(&group.name, &group.requirements.signed_by)
                .err()
        })
        .map(|error| error.to_string())
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(CliError::failed(format!(
        "{} cannot be deployed on Leasehold:\n  {}",
        file.display(),
        problems.join("\n  ")
    )))
}

/// Reads an SDL that must be valid (for commands that go on to use it): errors are listed.
pub fn load_valid(file: &Path) -> CliResult<Sdl> {
    let sdl = read_sdl(file, false)?.map_err(|errors| {
        let mut text = format!(
            "{} is not a valid SDL: {} error(s)",
            file.display(),
            errors.errors().len()
        );
        for error in errors.errors() {
            let _ = write!(text, "\n  {error}");
        }
        CliError::failed(text).with_details(serde_json::to_value(&errors).unwrap_or_default())
    })?;
    check_auditors(file, &sdl)?;
    Ok(sdl)
}

fn valid_report(sdl: &Sdl, output: Output) -> CliResult<String> {
    let groups = sdl.groups();
    let hash = sdl.manifest().hash_hex();
    let mut with_totals = Vec::new();
    for group in &groups {
        let totals = group
            .totals()
            .map_err(|e| CliError::failed(format!("computing group totals: {e}")))?;
        with_totals.push(GroupJson { group, totals });
    }
    let pricing = pricing_lines(&groups)?;
    Ok(match output {
        Output::Json => crate::output::json(&ValidJson {
            valid: true,
            version: sdl.version(),
            manifest_hash: hash,
            groups: with_totals,
            pricing,
            warnings: sdl.warnings(),
        }),
        Output::Text => {
            let mut text = groups_table(&with_totals, &hash);
            for line in pricing {
                let _ = writeln!(text, "pricing: {line}");
            }
            text.push_str(&warnings_text(sdl.warnings()));
            text
        }
    })
}

fn invalid_report(file: &Path, errors: &ManifestErrors, output: Output) -> String {
    match output {
        Output::Json => crate::output::json(errors),
        Output::Text => {
            let mut text = format!("{}: {} error(s)\n", file.display(), errors.errors().len());
            for error in errors.errors() {
                let _ = writeln!(text, "  {error}");
            }
            text
        }
    }
}

fn mebibytes(bytes: u64) -> String {
    format!("{}Mi", bytes / (1 << 20))
}

fn groups_table(groups: &[GroupJson<'_>], hash: &str) -> String {
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
        .map(str::to_owned)
        .to_vec(),
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
            rows.push(vec![
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
        rows.push(vec![
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
    format!("{}manifest hash: {hash}\n", table(&rows))
}
