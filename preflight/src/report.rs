//! The preflight report and the one function that makes it.

use std::collections::HashMap;
use std::fmt::Write as _;

use alloy::primitives::{Address, U256};
use leasehold_contracts::{
    GroupOrder, KeyNames, OrderEncodingError, OrderRequirements, ProviderInfo,
};
use leasehold_manifests::Group;
use serde::Serialize;

use crate::names::{NamedKey, Names, short_hex};
use crate::scheduler::{self, Reason};

/// Why there is no report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreflightError {
    /// A group cannot become an order (the error names the group or its field).
    #[error(transparent)]
    Order(#[from] OrderEncodingError),
}

/// The registry's `checkAudit` verdicts for the groups with `signedBy` auditors (see
/// [`audited_groups`]), per group and provider, as `MarketplaceClient::missing_audit` answers:
/// the auditor that does not attest the provider's required attributes (the zero address: no
/// `anyOf` auditor does). A pair not recorded counts as attested.
#[derive(Debug, Clone, Default)]
pub struct AuditVerdicts {
    missing: HashMap<(String, Address), Address>,
}

impl AuditVerdicts {
    /// Records `missing_audit`'s answer for `provider` on `group`'s requirements.
    pub fn record(&mut self, group: &str, provider: Address, missing: Option<Address>) {
        match missing {
            Some(auditor) => {
                self.missing.insert((group.to_owned(), provider), auditor);
            }
            None => {
                self.missing.remove(&(group.to_owned(), provider));
            }
        }
    }

    fn missing(&self, group: &str, provider: Address) -> Option<Address> {
        self.missing.get(&(group.to_owned(), provider)).copied()
    }
}

/// The groups whose orders name `signedBy` auditors, with the requirements to ask the
/// registry about for each provider: the only audit questions a preflight needs answered.
pub fn audited_groups(
    groups: &[Group],
) -> Result<Vec<(String, OrderRequirements)>, PreflightError> {
    let mut audited = Vec::new();
    for group in groups {
        let order = leasehold_contracts::group_order(group)?;
        if !order.spec.requirements.signed_by.is_empty() {
            audited.push((order.group, order.spec.requirements));
        }
    }
    Ok(audited)
}

/// What a preflight is computed from, read by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub groups: &'a [Group],
    /// Every registered provider, unbonding ones too (they are listed as inactive).
    pub providers: &'a [ProviderInfo],
    /// Each provider's lowest recent price per replica-hour ([`crate::recent_rates`]).
    pub rates: &'a HashMap<Address, U256>,
    /// The names published on chain (`KeyNamed`).
    pub published: &'a KeyNames,
    pub audits: &'a AuditVerdicts,
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
    /// The groups' keys and every name published on chain, read once for the report (the
    /// tenant's `deploy` reuses them for its bid table).
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
                .unwrap_or_else(|| short_hex(&named.key.to_string()))
        })
        .collect();
    if shown.is_empty() {
        "no GPUs or attributes".to_owned()
    } else {
        shown.join(", ")
    }
}

/// Checks every group against every provider with the scheduler's eligibility rule, then the
/// group's `signedBy` auditors; prices a candidate from its recent rate times the group's
/// replicas.
pub fn preflight(inputs: &Inputs<'_>) -> Result<Preflight, PreflightError> {
    let names = Names::from_groups(inputs.groups).with_published(inputs.published);
    let mut report = Vec::new();
    for group in inputs.groups {
        let GroupOrder {
            spec,
            max_price_per_hour,
            ..
        } = leasehold_contracts::group_order(group)?;
        let order = scheduler::scheduler_order(&spec, max_price_per_hour, &names);
        let mut eligible = Vec::new();
        let mut ineligible = Vec::new();
        for provider in inputs.providers {
            let estimate = inputs
                .rates
                .get(&provider.address)
                .and_then(|rate| rate.checked_mul(U256::from(spec.replicas)));
            // No estimate (it never bid) must not make it look too expensive.
            let price = estimate.map_or(0, |p| u128::try_from(p).unwrap_or(u128::MAX));
            let bid = scheduler::hypothetical_bid(&spec, provider, price, &names);
            let reason = scheduler::explain(&order, &bid, provider, &names).or_else(|| {
                inputs
                    .audits
                    .missing(&group.name, provider.address)
                    .map(audit_reason)
            });
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

/// Why the group's `signedBy` auditors would refuse the provider's bid.
fn audit_reason(auditor: Address) -> Reason {
    Reason {
        kind: "audit",
        message: if auditor.is_zero() {
            "no signedBy.anyOf auditor attests its required attributes".to_owned()
        } else {
            format!("signedBy.allOf auditor {auditor} does not attest its required attributes")
        },
    }
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

#[cfg(test)]
mod tests {
    use alloy::primitives::B256;
    use leasehold_contracts::{GpuState, ProviderStatus, Resources, chain_key};

    use super::*;

    /// Three replicas of one RTX 4090 each, in `region=eu`, at most 5 tokens an hour in all;
    /// `signed_by` adds a placement `signedBy` block.
    fn groups(signed_by: &str) -> Vec<Group> {
        let yaml = format!(
            r#"version: "2.0"
services:
  sd:
    image: example/sd:1
profiles:
  compute:
    sd:
      resources:
        cpu:
          units: 2
        memory:
          size: 4Gi
        storage:
          size: 10Gi
        gpu:
          units: 1
          attributes:
            vendor:
              nvidia:
                - model: rtx4090
  placement:
    eu:
      attributes:
        region: eu
{signed_by}      pricing:
        sd:
          denom: usdc
          amount: 5000000
deployment:
  sd:
    eu:
      profile: sd
      count: 3
"#
        );
        leasehold_manifests::parse(&yaml)
            .unwrap_or_else(|e| panic!("test SDL: {e:?}"))
            .groups()
    }

    /// Room for the group, the region it asks for, and eight of `model`.
    fn provider(byte: u8, model: &str) -> ProviderInfo {
        let plenty = Resources {
            cpu_milli: 64_000,
            memory_mib: 1 << 20,
            storage_mib: 1 << 20,
        };
        ProviderInfo {
            address: Address::repeat_byte(byte),
            status: ProviderStatus::Active,
            stake: U256::ZERO,
            unbonding_ends: 0,
            active_leases: 0,
            endpoint: format!("https://p{byte}.example"),
            gateway_cert_sha256: B256::repeat_byte(0xce),
            attributes: vec![chain_key("region=eu")],
            capacity: plenty,
            allocated: Resources::default(),
            gpus: vec![GpuState {
                model_key: chain_key(model),
                capacity: 8,
                allocated: 0,
            }],
            deliveries_confirmed: 0,
            deliveries_failed: 0,
            locked_bonds: U256::ZERO,
        }
    }

    const GOOD: &str = "nvidia/rtx4090/24Gi/pcie";

    fn run(
        groups: &[Group],
        providers: &[ProviderInfo],
        rates: &HashMap<Address, U256>,
        audits: &AuditVerdicts,
    ) -> GroupPreflight {
        let report = preflight(&Inputs {
            groups,
            providers,
            rates,
            published: &KeyNames::new(),
            audits,
        })
        .expect("preflight");
        assert_eq!(report.groups.len(), 1);
        report.groups.into_iter().next().expect("one group")
    }

    fn reasons(group: &GroupPreflight) -> Vec<(Address, &'static str)> {
        group
            .ineligible
            .iter()
            .map(|rejected| (rejected.provider, rejected.reason.kind))
            .collect()
    }

    #[test]
    fn a_provider_with_room_and_the_model_is_eligible_with_its_names() {
        let groups = groups("");
        let group = run(
            &groups,
            &[provider(1, GOOD)],
            &HashMap::new(),
            &AuditVerdicts::default(),
        );
        assert_eq!(group.group, "eu");
        assert_eq!(group.replicas, 3);
        assert_eq!(group.gpu_count, 3);
        assert!(group.ineligible.is_empty(), "{:?}", group.ineligible);
        let candidate = &group.eligible[0];
        assert_eq!(candidate.provider, Address::repeat_byte(1));
        assert_eq!(candidate.gpu_models[0].name.as_deref(), Some(GOOD));
        assert_eq!(candidate.attributes[0].name.as_deref(), Some("region=eu"));
        assert_eq!(candidate.estimated_price_per_hour, None, "it never bid");
    }

    #[test]
    fn each_refusal_names_its_kind() {
        let groups = groups("");
        let wrong_model = provider(1, "amd/mi300x/192Gi/oam");
        let elsewhere = ProviderInfo {
            attributes: vec![chain_key("region=us")],
            ..provider(2, GOOD)
        };
        let full = ProviderInfo {
            gpus: vec![GpuState {
                model_key: chain_key(GOOD),
                capacity: 8,
                allocated: 6,
            }],
            ..provider(3, GOOD)
        };
        let leaving = ProviderInfo {
            status: ProviderStatus::Unbonding,
            ..provider(4, GOOD)
        };
        let no_gpus = ProviderInfo {
            gpus: Vec::new(),
            ..provider(5, GOOD)
        };
        let group = run(
            &groups,
            &[wrong_model, elsewhere, full, leaving, no_gpus],
            &HashMap::new(),
            &AuditVerdicts::default(),
        );
        assert!(group.eligible.is_empty());
        assert_eq!(
            reasons(&group),
            [
                (Address::repeat_byte(1), "gpu_model"),
                (Address::repeat_byte(2), "attributes"),
                (Address::repeat_byte(3), "capacity"),
                (Address::repeat_byte(4), "inactive"),
                (Address::repeat_byte(5), "gpu_model"),
            ]
        );
        let message = &group.ineligible[0].reason.message;
        assert!(
            message.contains("amd/mi300x/192Gi/oam") && message.contains("nvidia/rtx4090/*/*"),
            "{message}"
        );
        assert!(
            group.ineligible[1].reason.message.contains("region=eu"),
            "{}",
            group.ineligible[1].reason.message
        );
    }

    #[test]
    fn the_estimate_is_the_rate_times_the_replicas_and_judged_against_the_maximum() {
        let groups = groups("");
        let max = leasehold_contracts::group_order(&groups[0])
            .expect("order")
            .max_price_per_hour;
        let cheap = Address::repeat_byte(1);
        let dear = Address::repeat_byte(2);
        let huge = Address::repeat_byte(3);
        let rates = HashMap::from([
            (cheap, U256::from(1_000_000u64)),
            // Three replicas at a third of the maximum each, plus one: just over it.
            (dear, max / U256::from(3) + U256::from(1)),
            // Times three overflows: no estimate rather than a wrapped one.
            (huge, U256::MAX / U256::from(2)),
        ]);
        let group = run(
            &groups,
            &[provider(1, GOOD), provider(2, GOOD), provider(3, GOOD)],
            &rates,
            &AuditVerdicts::default(),
        );
        let estimates: Vec<(Address, Option<&str>)> = group
            .eligible
            .iter()
            .map(|c| (c.provider, c.estimated_price_per_hour.as_deref()))
            .collect();
        assert_eq!(estimates, [(cheap, Some("3000000")), (huge, None)]);
        assert_eq!(reasons(&group), [(dear, "price")]);
        assert!(
            group.ineligible[0]
                .reason
                .message
                .starts_with("too expensive: its recent bids suggest"),
            "{}",
            group.ineligible[0].reason.message
        );
    }

    #[test]
    fn audit_verdicts_refuse_only_the_providers_they_name() {
        let auditor = Address::repeat_byte(0xa1);
        let groups = groups(&format!(
            "      signedBy:\n        allOf:\n          - \"{auditor}\"\n"
        ));
        let audited = audited_groups(&groups).expect("audited groups");
        assert_eq!(audited.len(), 1);
        assert_eq!(audited[0].0, "eu");
        assert_eq!(audited[0].1.signed_by.all_of, [auditor]);
        assert!(audited_groups(&self::groups("")).expect("plain").is_empty());

        let mut audits = AuditVerdicts::default();
        audits.record("eu", Address::repeat_byte(1), Some(auditor));
        audits.record("eu", Address::repeat_byte(2), None);
        audits.record("eu", Address::repeat_byte(3), Some(Address::ZERO));
        let group = run(
            &groups,
            &[provider(1, GOOD), provider(2, GOOD), provider(3, GOOD)],
            &HashMap::new(),
            &audits,
        );
        assert_eq!(group.eligible.len(), 1);
        assert_eq!(group.eligible[0].provider, Address::repeat_byte(2));
        assert_eq!(
            reasons(&group),
            [
                (Address::repeat_byte(1), "audit"),
                (Address::repeat_byte(3), "audit")
            ]
        );
        assert!(
            group.ineligible[0]
                .reason
                .message
                .contains(&auditor.to_string())
        );
        assert!(group.ineligible[1].reason.message.contains("anyOf"));
    }

    #[test]
    fn the_report_serializes_as_tenant_preflight_prints_it() {
        let groups = groups("");
        let report = preflight(&Inputs {
            groups: &groups,
            providers: &[provider(1, GOOD)],
            rates: &HashMap::new(),
            published: &KeyNames::new(),
            audits: &AuditVerdicts::default(),
        })
        .expect("preflight");
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(
            json.as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["groups".to_owned()]),
            "names are not part of the report: {json}"
        );
        // 5 tokens per replica-hour, three replicas, as a decimal string.
        assert_eq!(json["groups"][0]["max_price_per_hour"], "15000000");
        assert_eq!(
            json["groups"][0]["eligible"][0]["gpu_models"][0]["name"],
            GOOD
        );
    }
}
