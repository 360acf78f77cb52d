//! How an SDL group becomes an on-chain order. Tenants post this encoding and
//! providers rebuild it to match a manifest against its order, so it lives in one
//! place: the group's name, GPU models and attributes as keccak256 of their
//! canonical strings, totals with memory and storage rounded up to MiB.

use alloy::primitives::{Address, B256, U256, keccak256};
use leasehold_manifests::{GpuModelKey, Group, PATTERNS_PER_KEY, SignedBy};

use crate::types::{
    Auditors, GpuBid, MAX_AUDITORS, MAX_LEASED_IPS, OrderRequirements, OrderSpec, Resources,
};

const MIB: u64 = 1024 * 1024;

/// The on-chain key of a canonical string: an attribute (`region=eu-west`) or a
/// GPU model (`nvidia/a100/80Gi/sxm`).
pub fn chain_key(text: &str) -> B256 {
    keccak256(text.as_bytes())
}

/// The on-chain `groupName` of an SDL group (placement) name: the provider deploys the
/// manifest group whose name hashes to the order's.
pub fn group_name_key(name: &str) -> B256 {
    chain_key(name)
}

/// What `placeBid` needs to prove that `model` (a concrete model the provider registered,
/// `nvidia/a100/80Gi/sxm`) is allowed by an order's list: the entry it matches and the
/// wildcard mask that turns it into that entry. The rule is `leasehold_manifests`'
/// (`GpuModelPattern::matches`, the contract's: CONTRACTS.md, "GPU models and patterns"; vectors
/// in `test/vectors/gpu_patterns.json`), seen through the hashes the order holds: the first of
/// the model's 16 masked patterns whose chain key is listed. `None`: no entry matches. An empty
/// list allows any model.
pub fn gpu_bid(model: &GpuModelKey, allowed: &[B256]) -> Option<GpuBid> {
    if allowed.is_empty() {
        return Some(GpuBid::unmatched(model));
    }
    (0..PATTERNS_PER_KEY).find_map(|wildcards| {
        let key = B256::from(model.masked(wildcards).chain_key());
        allowed
            .iter()
            .position(|entry| *entry == key)
            .map(|index| GpuBid {
                pattern_index: u8::try_from(index).unwrap_or(u8::MAX),
                wildcards,
                ..GpuBid::unmatched(model)
            })
    })
}

/// A group that cannot become an order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderEncodingError {
    /// Its totals cannot be computed (a sum overflows); `reason` is the manifests crate's.
    #[error("group `{group}`: {reason}")]
    Totals { group: String, reason: String },
    /// Its totals do not fit the order's fields.
    #[error("group `{group}`: {what} out of range")]
    OutOfRange { group: String, what: &'static str },
    /// A `signedBy` entry that is not a usable auditor address; `field` is its SDL path.
    #[error("{field}: `{value}` {reason}")]
    Auditor {
        field: String,
        value: String,
        reason: &'static str,
    },
    /// More `signedBy` auditors than an order holds.
    #[error(
        "profiles.placement.{group}.signedBy: {count} auditors, at most {max} (allOf and anyOf together)"
    )]
    TooManyAuditors {
        group: String,
        count: usize,
        max: usize,
    },
}

/// Why an Akash SDL's usual `signedBy` entries are refused rather than dropped: auditors attest
/// on this chain, so they are EVM accounts, and a bech32 `akash1…` account cannot be mapped to one.
const AKASH_AUDITOR: &str = "is an Akash (bech32) account; Leasehold auditors attest on chain \
     with an EVM account: write the auditor's 0x address (40 hex digits) instead";
const NOT_AN_ADDRESS: &str = "is not an auditor address: write 0x and 40 hex digits";
const ZERO_AUDITOR: &str = "is the zero address, which cannot attest";
const DUPLICATE_AUDITOR: &str = "is listed twice in signedBy (allOf and anyOf together)";

/// The auditors of a group's `signedBy`, as EVM addresses (see [`OrderEncodingError::Auditor`]).
pub fn auditors_for_group(
    group: &str,
    signed_by: &SignedBy,
) -> Result<Auditors, OrderEncodingError> {
    let count = signed_by.all_of.len() + signed_by.any_of.len();
    if count > MAX_AUDITORS {
        return Err(OrderEncodingError::TooManyAuditors {
            group: group.to_owned(),
            count,
            max: MAX_AUDITORS,
        });
    }
    let mut seen = Vec::with_capacity(count);
    let mut parse = |list: &str, entries: &[String]| {
        entries
            .iter()
            .enumerate()
            .map(|(index, value)| {
                let error = |reason| OrderEncodingError::Auditor {
                    field: format!("profiles.placement.{group}.signedBy.{list}[{index}]"),
                    value: value.clone(),
                    reason,
                };
                let auditor = parse_auditor(value).map_err(error)?;
                if seen.contains(&auditor) {
                    return Err(error(DUPLICATE_AUDITOR));
                }
                seen.push(auditor);
                Ok(auditor)
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Auditors {
        all_of: parse("allOf", &signed_by.all_of)?,
        any_of: parse("anyOf", &signed_by.any_of)?,
    })
}

fn parse_auditor(value: &str) -> Result<Address, &'static str> {
    if value.starts_with("akash1") {
        return Err(AKASH_AUDITOR);
    }
    let hex = value.strip_prefix("0x").ok_or(NOT_AN_ADDRESS)?;
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NOT_AN_ADDRESS);
    }
    let auditor: Address = value.parse().map_err(|_| NOT_AN_ADDRESS)?;
    if auditor.is_zero() {
        return Err(ZERO_AUDITOR);
    }
    Ok(auditor)
}

/// The order spec of one SDL group.
pub fn order_spec_for_group(group: &Group) -> Result<OrderSpec, OrderEncodingError> {
    let out_of_range = |what| OrderEncodingError::OutOfRange {
        group: group.name.clone(),
        what,
    };
    let totals = group.totals().map_err(|_| out_of_range("totals"))?;
    let mut models: Vec<B256> = group
        .units
        .iter()
        .flat_map(|unit| unit.resources.gpu.models.iter())
        .map(|model| B256::from(model.chain_key()))
        .collect();
    models.sort();
    models.dedup();
    Ok(OrderSpec {
        group_name: group_name_key(&group.name),
        resources: Resources {
            cpu_milli: totals.cpu_millis,
            memory_mib: totals.memory_bytes.div_ceil(MIB),
            storage_mib: totals.storage_bytes.div_ceil(MIB),
        },
        gpu_count: u32::try_from(totals.gpu_units).map_err(|_| out_of_range("gpu units"))?,
        replicas: u16::try_from(totals.replicas).map_err(|_| out_of_range("replicas"))?,
        leased_ips: u8::try_from(group.leased_ip_count())
            .ok()
            .filter(|count| *count <= MAX_LEASED_IPS)
            .ok_or_else(|| out_of_range("leased IP endpoints"))?,
        requirements: OrderRequirements {
            allowed_gpu_models: models,
            // Placement attributes and those of the persistent storage classes, so that
            // the contract refuses bids from providers without the class.
            required_attributes: group
                .required_attributes()
                .iter()
                .map(|attribute| chain_key(attribute))
                .collect(),
            signed_by: auditors_for_group(&group.name, &group.requirements.signed_by)?,
        },
    })
}

/// The order a group becomes: its [`OrderSpec`] plus the maximum price per hour, the
/// group's total price (per-replica prices summed by the manifests crate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOrder {
    /// The SDL group (placement) name; the spec holds only its hash.
    pub group: String,
    pub spec: OrderSpec,
    pub max_price_per_hour: U256,
    /// Denomination named in the SDL (informational: the deployment fixes the token).
    pub denom: String,
}

/// The order `tenant deploy` posts for one group (before any `--max-price` override), and the
/// market API's `sdl/validate` shows: one encoding, so the console posts the CLI's order.
pub fn group_order(group: &Group) -> Result<GroupOrder, OrderEncodingError> {
    let totals = group.totals().map_err(|error| OrderEncodingError::Totals {
        group: group.name.clone(),
        reason: error.to_string(),
    })?;
    Ok(GroupOrder {
        group: group.name.clone(),
        spec: order_spec_for_group(group)?,
        max_price_per_hour: U256::from(totals.price.amount.floor_units()),
        denom: totals.price.denom,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// hello.yaml's order: the totals in MiB, the price in whole base units, no lists.
    #[test]
    fn hello_becomes_its_group_order() {
        let sdl = leasehold_manifests::parse(include_str!("../../manifests/examples/hello.yaml"))
            .unwrap_or_else(|errors| panic!("{errors:?}"));
        let group = &sdl.groups()[0];
        let order = group_order(group).expect("encodes");
        let totals = group.totals().expect("totals");
        assert_eq!(order.group, group.name);
        assert_eq!(order.spec, order_spec_for_group(group).expect("spec"));
        assert_eq!(
            order.max_price_per_hour,
            U256::from(totals.price.amount.floor_units())
        );
        assert!(!order.max_price_per_hour.is_zero());
        assert_eq!(order.spec.group_name, group_name_key(&group.name));
        assert_eq!(order.spec.replicas, 1);
    }

    /// The cases of `test/vectors/gpu_patterns.json`, which the Foundry tests also run.
    #[derive(serde::Deserialize)]
    struct Vectors {
        cases: Vec<Case>,
    }

    #[derive(serde::Deserialize)]
    struct Case {
        pattern: String,
        model: [String; 4],
        matches: bool,
    }

    fn vectors() -> Vectors {
        serde_json::from_str(include_str!("../test/vectors/gpu_patterns.json")).unwrap()
    }

    #[test]
    fn the_shared_vectors_hold_for_the_bid_proof() {
        let vectors = vectors();
        assert!(vectors.cases.len() > 60);
        for case in &vectors.cases {
            let concrete: GpuModelKey = case.model.join("/").parse().unwrap();
            let allowed = [chain_key("nvidia/other/1Gi/x"), chain_key(&case.pattern)];
            let bid = gpu_bid(&concrete, &allowed);
            assert_eq!(
                bid.is_some(),
                case.matches,
                "{} vs {concrete}",
                case.pattern
            );
            if let Some(bid) = bid {
                assert_eq!(bid.pattern_index, 1);
                assert_eq!(bid.parts, case.model);
                assert_eq!(concrete.masked(bid.wildcards).to_string(), case.pattern);
            }
        }
    }

    /// The order asks for one leased IP per distinct IP endpoint of its group: two ports of
    /// one service on `front` and a second service on `back` need two addresses.
    #[test]
    fn leased_ips_count_distinct_ip_endpoints_of_the_group() {
        let hello = include_str!("../../manifests/examples/hello.yaml");
        let yaml = hello
            .replace(
                "        to:\n          - global: true\n",
                "        to:\n          - global: true\n            ip: front\n      - port: 443\n        to:\n          - global: true\n            ip: front\n      - port: 8443\n        to:\n          - global: true\n            ip: back\n",
            )
            .replace(
                "deployment:\n",
                "endpoints:\n  front:\n    kind: ip\n  back:\n    kind: ip\ndeployment:\n",
            );
        let sdl = leasehold_manifests::parse(&yaml).unwrap_or_else(|errors| panic!("{errors:?}"));
        let spec = order_spec_for_group(&sdl.groups()[0]).expect("encodes");
        assert_eq!(spec.leased_ips, 2);
        assert_eq!(
            sdl.manifest().groups[0].leased_ip_names(),
            vec!["back", "front"]
        );
        let plain = leasehold_manifests::parse(hello).unwrap_or_else(|errors| panic!("{errors:?}"));
        assert_eq!(
            order_spec_for_group(&plain.groups()[0]).unwrap().leased_ips,
            0
        );
    }

    /// Persistent volumes make the order require a provider announcing their class, so
    /// the contract refuses bids from providers without it; `ram` and ephemeral volumes
    /// require nothing.
    #[test]
    fn persistent_storage_classes_become_required_attributes() {
        let sdl =
            leasehold_manifests::parse(include_str!("../../manifests/examples/gpu-inference.yaml"))
                .unwrap_or_else(|errors| panic!("{errors:?}"));
        let spec = order_spec_for_group(&sdl.groups()[0]).expect("encodes");
        let required = &spec.requirements.required_attributes;
        for attribute in leasehold_manifests::storage_class_attributes("beta3") {
            assert!(required.contains(&chain_key(&attribute)), "{attribute}");
        }
        let hello = leasehold_manifests::parse(include_str!("../../manifests/examples/hello.yaml"))
            .unwrap_or_else(|errors| panic!("{errors:?}"));
        let spec = order_spec_for_group(&hello.groups()[0]).expect("encodes");
        assert!(spec.requirements.required_attributes.is_empty());
    }

    /// The GPU examples (modelled on real Akash files) each find a provider: a concrete model
    /// a provider could register proves a match against the order's encoded patterns, and a
    /// model of the wrong size or name does not.
    #[test]
    fn gpu_examples_are_matched_by_the_models_they_ask_for() {
        let cases = [
            (
                include_str!("../../manifests/examples/gpu-inference.yaml"),
                "nvidia/h100/80Gi/sxm",
                "nvidia/h100/80Gi/pcie",
            ),
            (
                include_str!("../../manifests/examples/vllm.yaml"),
                "nvidia/a100/80Gi/sxm",
                "nvidia/a100/40Gi/sxm",
            ),
            (
                include_str!("../../manifests/examples/ollama.yaml"),
                "nvidia/t4/16Gi/pcie",
                "amd/mi300x/192Gi/oam",
            ),
            (
                include_str!("../../manifests/examples/stable-diffusion.yaml"),
                "nvidia/rtx4090/24Gi/pcie",
                "nvidia/rtx3090/24Gi/pcie",
            ),
        ];
        for (yaml, fits, does_not) in cases {
            let sdl = leasehold_manifests::parse(yaml).unwrap();
            let spec = order_spec_for_group(&sdl.groups()[0]).unwrap();
            let allowed = &spec.requirements.allowed_gpu_models;
            assert!(!allowed.is_empty(), "{fits}: the order lists its pattern");
            let key = |text: &str| text.parse::<GpuModelKey>().unwrap();
            assert!(gpu_bid(&key(fits), allowed).is_some(), "{fits}");
            assert!(gpu_bid(&key(does_not), allowed).is_none(), "{does_not}");
        }
    }

    #[test]
    fn any_model_list_allows_every_model() {
        let a100: GpuModelKey = "nvidia/a100/80Gi/sxm".parse().unwrap();
        let bid = gpu_bid(&a100, &[]).unwrap();
        assert_eq!((bid.pattern_index, bid.wildcards), (0, 0));
        assert_eq!(bid.parts, ["nvidia", "a100", "80Gi", "sxm"]);
    }

    fn signed_by(all_of: &[&str], any_of: &[&str]) -> SignedBy {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        SignedBy {
            all_of: owned(all_of),
            any_of: owned(any_of),
        }
    }

    #[test]
    fn evm_auditors_become_the_order_lists() {
        let auditor = "0x00000000000000000000000000000000000000a1";
        let other = "0x00000000000000000000000000000000000000A2";
        let auditors = auditors_for_group("dcloud", &signed_by(&[auditor], &[other])).unwrap();
        assert_eq!(auditors.all_of, vec![Address::with_last_byte(0xa1)]);
        assert_eq!(auditors.any_of, vec![Address::with_last_byte(0xa2)]);
        assert!(
            auditors_for_group("dcloud", &SignedBy::default())
                .unwrap()
                .is_empty()
        );
    }

    /// An Akash file's `signedBy` is never dropped: its bech32 auditors are refused with the
    /// field they are in, so the tenant knows what to change.
    #[test]
    fn akash_and_malformed_auditors_are_refused_naming_the_field() {
        let akash = "akash1365yvmc4s7awdyj3n2sav7xfx76adc6dnmlx63";
        let error = auditors_for_group("dcloud", &signed_by(&[], &[akash])).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("profiles.placement.dcloud.signedBy.anyOf[0]: `akash1"),
            "{message}"
        );
        assert!(message.contains("0x address"), "{message}");
        for (bad, reason) in [
            ("0x1234", NOT_AN_ADDRESS),
            ("00000000000000000000000000000000000000a1", NOT_AN_ADDRESS),
            ("0x000000000000000000000000000000000000000g", NOT_AN_ADDRESS),
            ("0x0000000000000000000000000000000000000000", ZERO_AUDITOR),
        ] {
            let error = auditors_for_group("g", &signed_by(&[bad], &[])).unwrap_err();
            assert_eq!(
                error,
                OrderEncodingError::Auditor {
                    field: "profiles.placement.g.signedBy.allOf[0]".to_owned(),
                    value: bad.to_owned(),
                    reason,
                },
                "{bad}"
            );
        }
        let twice = "0x00000000000000000000000000000000000000a1";
        let error = auditors_for_group("g", &signed_by(&[twice], &[twice])).unwrap_err();
        assert!(error.to_string().contains("signedBy.anyOf[0]"), "{error}");
        let many: Vec<String> = (1..=5).map(|i| format!("0x{i:040x}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(matches!(
            auditors_for_group("g", &signed_by(&many, &[])),
            Err(OrderEncodingError::TooManyAuditors { count: 5, .. })
        ));
    }
}

/// Why a new manifest does not fit the lease it is meant to update: the lease bought fixed
/// resources, and an update may use them differently but never need more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseFitError {
    #[error("group `{group}`: {field} {wanted} exceeds the {bought} the lease bought")]
    Exceeds {
        group: String,
        field: &'static str,
        wanted: u64,
        bought: u64,
    },
    #[error(
        "group `{group}`: replicas {wanted} differs from the {bought} the lease bought (an update keeps the replica count)"
    )]
    Replicas {
        group: String,
        wanted: u64,
        bought: u64,
    },
    #[error(
        "the manifest has {wanted} groups, the lease runs {bought}: an update keeps the groups"
    )]
    GroupCount { wanted: usize, bought: usize },
}

/// Checks that `wanted` (the totals of the new manifest's group `group`) fits `bought` (the
/// lease's order): the same replica count, and cpu, memory, storage and GPUs each at most
/// what was bought. The first field that does not fit is named.
pub fn check_within_lease(
    group: &str,
    wanted: &OrderSpec,
    bought: &OrderSpec,
) -> Result<(), LeaseFitError> {
    if wanted.replicas != bought.replicas {
        return Err(LeaseFitError::Replicas {
            group: group.to_owned(),
            wanted: u64::from(wanted.replicas),
            bought: u64::from(bought.replicas),
        });
    }
    let fields = [
        (
            "cpu (millicores)",
            wanted.resources.cpu_milli,
            bought.resources.cpu_milli,
        ),
        (
            "memory (MiB)",
            wanted.resources.memory_mib,
            bought.resources.memory_mib,
        ),
        (
            "storage (MiB)",
            wanted.resources.storage_mib,
            bought.resources.storage_mib,
        ),
        (
            "gpu count",
            u64::from(wanted.gpu_count),
            u64::from(bought.gpu_count),
        ),
    ];
    match fields
        .into_iter()
        .find(|(_, wanted, bought)| wanted > bought)
    {
        Some((field, wanted, bought)) => Err(LeaseFitError::Exceeds {
            group: group.to_owned(),
            field,
            wanted,
            bought,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod lease_fit_tests {
    use super::*;
    use crate::types::{OrderRequirements, Resources};

    fn spec(cpu_milli: u64, memory_mib: u64, gpu_count: u32, replicas: u16) -> OrderSpec {
        OrderSpec {
            group_name: group_name_key("dcloud"),
            resources: Resources {
                cpu_milli,
                memory_mib,
                storage_mib: 512,
            },
            gpu_count,
            replicas,
            leased_ips: 0,
            requirements: OrderRequirements::default(),
        }
    }

    #[test]
    fn an_update_fits_when_every_field_is_at_most_what_was_bought() {
        let bought = spec(1000, 512, 1, 2);
        assert_eq!(
            check_within_lease("dcloud", &spec(500, 512, 0, 2), &bought),
            Ok(())
        );
        assert_eq!(check_within_lease("dcloud", &bought, &bought), Ok(()));
    }

    #[test]
    fn the_first_field_over_the_lease_is_named() {
        let bought = spec(1000, 512, 1, 2);
        let error = check_within_lease("dcloud", &spec(1000, 1024, 1, 2), &bought).unwrap_err();
        assert_eq!(
            error.to_string(),
            "group `dcloud`: memory (MiB) 1024 exceeds the 512 the lease bought"
        );
        let error = check_within_lease("dcloud", &spec(2000, 512, 2, 2), &bought).unwrap_err();
        assert!(
            error.to_string().contains("cpu (millicores) 2000"),
            "{error}"
        );
        let error = check_within_lease("dcloud", &spec(1000, 512, 2, 2), &bought).unwrap_err();
        assert!(
            error.to_string().contains("gpu count 2 exceeds the 1"),
            "{error}"
        );
        let error = check_within_lease("dcloud", &spec(100, 64, 0, 3), &bought).unwrap_err();
        assert!(
            error.to_string().contains("replicas 3 differs from the 2"),
            "{error}"
        );
    }
}
