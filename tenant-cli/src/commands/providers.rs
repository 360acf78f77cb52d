//! `tenant providers` and `tenant preflight`.

use std::path::Path;

use alloy::primitives::Address;
use leasehold_contracts::{Attestation, ProviderInfo, ProviderStatus};
use leasehold_manifests::Group;
use leasehold_preflight::{AuditVerdicts, Inputs, PreflightError};

pub use leasehold_preflight::Preflight;

use crate::chain::Chain;
use crate::commands::Ctx;
use crate::error::{CliError, CliResult};
use crate::market::Names;
use crate::output::{emit, table};

/// Every registered provider's on-chain record (`all`: unbonding ones too).
pub async fn registered(chain: &Chain, all: bool) -> CliResult<Vec<ProviderInfo>> {
    let mut providers = chain.client.provider_infos().await?;
    if !all {
        providers.retain(|info| info.status == ProviderStatus::Active);
    }
    Ok(providers)
}

pub async fn list(ctx: &Ctx, all: bool) -> CliResult<u8> {
    let chain = Chain::connect(&ctx.settings, None).await?;
    let providers = registered(&chain, all).await?;
    let attestations = chain.client.attestations(None, None).await?;
    let names = Names::default().with_published(&chain.client.key_names().await?);
    let listed: Vec<serde_json::Value> = providers
        .iter()
        .map(|provider| with_names(provider, &names))
        .collect();
    emit(
        ctx.output,
        &serde_json::json!({ "providers": listed, "attestations": attestations }),
        || {
            if providers.is_empty() {
                return "no providers registered\n".to_owned();
            }
            let mut rows = vec![
                [
                    "PROVIDER",
                    "STATUS",
                    "ENDPOINT",
                    "ATTRIBUTES",
                    "CPU (m)",
                    "MEMORY (MiB)",
                    "STORAGE (MiB)",
                    "GPUS",
                    "LEASES",
                    "DELIVERED",
                    "UNDELIVERED",
                    "AUDITORS",
                ]
                .map(str::to_owned)
                .to_vec(),
            ];
            for p in &providers {
                let used = |allocated: u64, capacity: u64| format!("{allocated}/{capacity}");
                let gpus: Vec<String> = p
                    .gpus
                    .iter()
                    .map(|g| {
                        format!(
                            "{}/{} {}",
                            g.allocated,
                            g.capacity,
                            names.name(&g.model_key)
                        )
                    })
                    .collect();
                rows.push(vec![
                    p.address.to_string(),
                    format!("{:?}", p.status).to_lowercase(),
                    p.endpoint.clone(),
                    key_list(&p.attributes, &names),
                    used(p.allocated.cpu_milli, p.capacity.cpu_milli),
                    used(p.allocated.memory_mib, p.capacity.memory_mib),
                    used(p.allocated.storage_mib, p.capacity.storage_mib),
                    if gpus.is_empty() {
                        "-".to_owned()
                    } else {
                        gpus.join(", ")
                    },
                    p.active_leases.to_string(),
                    p.deliveries_confirmed.to_string(),
                    p.deliveries_failed.to_string(),
                    auditors_of(&attestations, p.address),
                ]);
            }
            format!(
                "{}(allocated/capacity; DELIVERED/UNDELIVERED: leases the provider confirmed running \
             in time / closed undelivered, each of which cost it part of its stake; attributes and \
             GPU models are keccak256 keys on chain, shown by the names published for them and \
             as short hashes where nobody did; AUDITORS: accounts attesting some of its \
             attributes, see `tenant audit list --provider ADDRESS`)\n",
                table(&rows)
            )
        },
    );
    Ok(0)
}

/// A provider's record as JSON with the names of its keys beside them: `attribute_names`
/// (in `attributes` order) and each GPU's `model_name`, `null` where nobody named the key.
fn with_names(provider: &ProviderInfo, names: &Names) -> serde_json::Value {
    let mut value = serde_json::to_value(provider).unwrap_or_default();
    value["attribute_names"] = serde_json::json!(
        provider
            .attributes
            .iter()
            .map(|key| names.known(key))
            .collect::<Vec<_>>()
    );
    if let Some(gpus) = value["gpus"].as_array_mut() {
        for (entry, gpu) in gpus.iter_mut().zip(&provider.gpus) {
            entry["model_name"] = serde_json::json!(names.known(&gpu.model_key));
        }
    }
    value
}

/// Keys by name (or short hash), comma-separated; `-` for none.
fn key_list(keys: &[alloy::primitives::B256], names: &Names) -> String {
    if keys.is_empty() {
        return "-".to_owned();
    }
    keys.iter()
        .map(|key| names.name(key))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The distinct auditors attesting something for `provider`, or `-`.
fn auditors_of(attestations: &[Attestation], provider: Address) -> String {
    let mut auditors: Vec<String> = attestations
        .iter()
        .filter(|a| a.provider == provider)
        .map(|a| a.auditor.to_string())
        .collect();
    auditors.sort();
    auditors.dedup();
    if auditors.is_empty() {
        "-".to_owned()
    } else {
        auditors.join(", ")
    }
}

/// Reads what the preflight needs from the chain (every registered provider, their recent
/// bid rates, the published names, the audited groups' `checkAudit` verdicts) and makes it.
pub async fn preflight(chain: &Chain, groups: &[Group]) -> CliResult<Preflight> {
    let providers = registered(chain, true).await?;
    let rates = crate::history::recent_rates(chain).await?;
    let published = chain.client.key_names().await?;
    let mut audits = AuditVerdicts::default();
    for (group, requirements) in leasehold_preflight::audited_groups(groups).map_err(failed)? {
        for provider in &providers {
            let missing = chain
                .client
                .missing_audit(provider.address, &requirements)
                .await?;
            audits.record(&group, provider.address, missing);
        }
    }
    leasehold_preflight::preflight(&Inputs {
        groups,
        providers: &providers,
        rates: &rates,
        published: &published,
        audits: &audits,
    })
    .map_err(failed)
}

fn failed(error: PreflightError) -> CliError {
    CliError::failed(error.to_string())
}

pub async fn preflight_command(ctx: &Ctx, file: &Path) -> CliResult<u8> {
    let sdl = super::validate::load_valid(file)?;
    let chain = Chain::connect(&ctx.settings, None).await?;
    let report = preflight(&chain, &sdl.groups()).await?;
    emit(ctx.output, &report, || report.explain());
    Ok(0)
}
