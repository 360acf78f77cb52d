//! `tenant providers` and `tenant preflight`.

use std::fmt::Write as _;
use std::path::Path;

use alloy::primitives::{Address, U256};
use leasehold_contracts::{Attestation, OrderRequirements, ProviderInfo, ProviderStatus};
use leasehold_manifests::Group;
use serde::Serialize;

use crate::chain::Chain;
use crate::commands::Ctx;
use crate::error::CliResult;
use crate::market::{self, GroupOrder, NamedKey, Names, Reason};
use crate::output::{emit, table};

/// Every registered provider's on-chain record (`all`: unbonding ones too).
pub async fn registered(chain: &Chain, all: bool) -> CliResult<Vec<ProviderInfo>> {
    let mut providers = Vec::new();
    for address in chain.client.providers().await? {
        let info = chain.client.provider_info(address).await?;
        if all || info.status == ProviderStatus::Active {
            providers.push(info);
        }
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

/// A provider that could serve a group.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub provider: Address,
    pub endpoint: String,
    /// The provider's GPU models and attributes, with their names.
    pub gpu_models: Vec<NamedKey>,
    pub attributes: Vec<NamedKey>,
    /// From the provider's recent bids, scaled to this group's replicas; `None` when it has
    /// not bid yet.
    pub estimated_price_per_hour: Option<String>,
}

/// A provider that cannot serve a group, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Rejected {
    pub provider: Address,
    pub endpoint: String,
    pub gpu_models: Vec<NamedKey>,
    pub attributes: Vec<NamedKey>,
    pub reason: Reason,
}

/// The preflight of one group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupPreflight {
    pub group: String,
    pub replicas: u16,
    pub cpu_milli: u64,
    pub memory_mib: u64,
    pub storage_mib: u64,
    pub gpu_count: u32,
    pub max_price_per_hour: String,
    pub eligible: Vec<Candidate>,
    pub ineligible: Vec<Rejected>,
}

/// The preflight of a whole SDL.
#[derive(Debug, Clone, Serialize)]
pub struct Preflight {
    pub groups: Vec<GroupPreflight>,
    /// The groups' keys and every name published on chain, read once for the report and
    /// reused by `deploy` for its bid table.
    #[serde(skip)]
    pub names: Names,
}

impl Preflight {
    /// True when every group has at least one provider that could serve it.
    pub fn servable(&self) -> bool {
        self.groups.iter().all(|group| !group.eligible.is_empty())
    }

    /// Plain text, one paragraph per group (also used in the no-bids error).
    pub fn explain(&self) -> String {
        let mut text = String::new();
        for group in &self.groups {
            let total = group.eligible.len() + group.ineligible.len();
            let _ = writeln!(
                text,
                "group `{}` ({} replicas, {}m cpu, {} MiB memory, {} MiB storage, {} GPUs, max {}/h): {} of {total} provider(s) can serve it",
                group.group,
                group.replicas,
                group.cpu_milli,
                group.memory_mib,
                group.storage_mib,
                group.gpu_count,
                group.max_price_per_hour,
                group.eligible.len(),
            );
            for candidate in &group.eligible {
                let price = candidate
                    .estimated_price_per_hour
                    .as_deref()
                    .map_or("price unknown until it bids".to_owned(), |p| {
                        format!("~{p}/h from its recent bids")
                    });
                let _ = writeln!(
                    text,
                    "  ok   {} {} [{}] ({price})",
                    candidate.provider,
                    candidate.endpoint,
                    offer(&candidate.gpu_models, &candidate.attributes)
                );
            }
            for rejected in &group.ineligible {
                let _ = writeln!(
                    text,
                    "  no   {} {} [{}]: {} [{}]",
                    rejected.provider,
                    rejected.endpoint,
                    offer(&rejected.gpu_models, &rejected.attributes),
                    rejected.reason.message,
                    rejected.reason.kind
                );
            }
        }
        text
    }
}

/// What a provider offers, by name (short hash where unnamed): GPU models, then attributes.
fn offer(gpu_models: &[NamedKey], attributes: &[NamedKey]) -> String {
    let shown: Vec<String> = gpu_models
        .iter()
        .chain(attributes)
        .map(|named| {
            named
                .name
                .clone()
                .unwrap_or_else(|| crate::output::short_hex(&named.key.to_string()))
        })
        .collect();
    if shown.is_empty() {
        "no GPUs or attributes".to_owned()
    } else {
        shown.join(", ")
    }
}

/// Checks every group against every active provider with the scheduler's eligibility rule.
pub async fn preflight(chain: &Chain, groups: &[Group]) -> CliResult<Preflight> {
    let providers = registered(chain, true).await?;
    let rates = crate::history::recent_rates(chain).await?;
    let names = Names::from_groups(groups).with_published(&chain.client.key_names().await?);
    let mut report = Vec::new();
    for group in groups {
        let GroupOrder {
            spec,
            max_price_per_hour,
            ..
        } = market::group_order(group)?;
        let order = market::scheduler_order(&spec, max_price_per_hour, &names);
        let mut eligible = Vec::new();
        let mut ineligible = Vec::new();
        for provider in &providers {
            let estimate = rates
                .get(&provider.address)
                .and_then(|rate| rate.checked_mul(U256::from(spec.replicas)));
            let price = estimate.map_or(0, |p| u128::try_from(p).unwrap_or(u128::MAX));
            let bid = market::hypothetical_bid(&spec, provider, price, &names);
            let reason = match market::explain(&order, &bid, provider, &names) {
                None => audit_reason(chain, provider.address, &spec.requirements).await?,
                reason => reason,
            };
            let gpu_models: Vec<NamedKey> = provider
                .gpus
                .iter()
                .map(|gpu| names.named(&gpu.model_key))
                .collect();
            let attributes: Vec<NamedKey> = provider
                .attributes
                .iter()
                .map(|key| names.named(key))
                .collect();
            match reason {
                None => eligible.push(Candidate {
                    provider: provider.address,
                    endpoint: provider.endpoint.clone(),
                    gpu_models,
                    attributes,
                    estimated_price_per_hour: estimate.map(|p| p.to_string()),
                }),
                Some(reason) => ineligible.push(Rejected {
                    provider: provider.address,
                    endpoint: provider.endpoint.clone(),
                    gpu_models,
                    attributes,
                    reason: price_reason_with_basis(reason),
                }),
            }
        }
        report.push(GroupPreflight {
            group: group.name.clone(),
            replicas: spec.replicas,
            cpu_milli: spec.resources.cpu_milli,
            memory_mib: spec.resources.memory_mib,
            storage_mib: spec.resources.storage_mib,
            gpu_count: spec.gpu_count,
            max_price_per_hour: max_price_per_hour.to_string(),
            eligible,
            ineligible,
        });
    }
    Ok(Preflight {
        groups: report,
        names,
    })
}

/// Why the group's `signedBy` auditors would refuse `provider`'s bid, if they would.
async fn audit_reason(
    chain: &Chain,
    provider: Address,
    requirements: &OrderRequirements,
) -> CliResult<Option<Reason>> {
    let missing = chain.client.missing_audit(provider, requirements).await?;
    Ok(missing.map(|auditor| Reason {
        kind: "audit",
        message: if auditor.is_zero() {
            "no signedBy.anyOf auditor attests its required attributes".to_owned()
        } else {
            format!("signedBy.allOf auditor {auditor} does not attest its required attributes")
        },
    }))
}

fn price_reason_with_basis(reason: Reason) -> Reason {
    if reason.kind != "price" {
        return reason;
    }
    Reason {
        message: format!("too expensive: its recent bids suggest {}", reason.message),
        ..reason
    }
}

pub async fn preflight_command(ctx: &Ctx, file: &Path) -> CliResult<u8> {
    let sdl = super::validate::load_valid(file)?;
    let chain = Chain::connect(&ctx.settings, None).await?;
    let report = preflight(&chain, &sdl.groups()).await?;
    emit(ctx.output, &report, || report.explain());
    Ok(0)
}
