//! `POST /api/v1/sdl/validate`: the checks `tenant validate` runs (the manifests crate's parser
//! and the contracts crate's order encoding), reported as JSON with the orders `tenant deploy`
//! would post, so the console posts exactly those.

use alloy::primitives::B256;
use leasehold_contracts::{GroupOrder, OrderEncodingError};
use leasehold_manifests::{Group, ManifestError, ManifestWarning};
use serde_json::{Value, json};

use crate::apply::{address, hash};

fn position(value: u64) -> Value {
    // 0 means "unknown" in the manifests crate.
    if value == 0 {
        Value::Null
    } else {
        json!(value)
    }
}

fn error_json(error: &ManifestError) -> Value {
    json!({
        "field": error.path,
        "line": position(error.line),
        "column": position(error.column),
        "message": error.message,
    })
}

fn warning_json(warning: &ManifestWarning) -> Value {
    json!({
        "field": warning.path,
        "line": position(warning.line),
        "column": position(warning.column),
        "message": warning.to_string(),
        "kind": warning.kind,
    })
}

/// A group's order as the API shows it: the contract's `OrderSpec` fields flattened, u64
/// amounts and the price as decimal strings (JavaScript numbers lose precision above 2^53).
pub fn order_json(order: &GroupOrder, manifest_hash: B256) -> Value {
    let spec = &order.spec;
    let requirements = &spec.requirements;
    json!({
        "group_name": hash(spec.group_name),
        "resources": {
            "cpu_milli": spec.resources.cpu_milli.to_string(),
            "memory_mib": spec.resources.memory_mib.to_string(),
            "storage_mib": spec.resources.storage_mib.to_string(),
        },
        "gpu_count": spec.gpu_count,
        "replicas": spec.replicas,
        "leased_ips": spec.leased_ips,
        "allowed_gpu_models": requirements.allowed_gpu_models.iter().copied().map(hash).collect::<Vec<_>>(),
        "required_attributes": requirements.required_attributes.iter().copied().map(hash).collect::<Vec<_>>(),
        "signed_by_all_of": requirements.signed_by.all_of.iter().copied().map(address).collect::<Vec<_>>(),
        "signed_by_any_of": requirements.signed_by.any_of.iter().copied().map(address).collect::<Vec<_>>(),
        "max_price_per_hour": order.max_price_per_hour.to_string(),
        "denom": order.denom,
        "manifest_hash": hash(manifest_hash),
    })
}

/// The SDL path an encoding error is about.
fn encoding_field(group: &str, error: &OrderEncodingError) -> String {
    match error {
        OrderEncodingError::Auditor { field, .. } => field.clone(),
        OrderEncodingError::TooManyAuditors { .. } => {
            format!("profiles.placement.{group}.signedBy")
        }
        OrderEncodingError::Totals { .. } | OrderEncodingError::OutOfRange { .. } => {
            format!("profiles.placement.{group}")
        }
    }
}

/// `{ok, errors, warnings, groups, manifest_hash, manifest_json}` for an SDL text; each group
/// carries its `order` (null when the group cannot be encoded, with the reason in `errors`).
pub fn validate(yaml: &str) -> Value {
    let sdl = match leasehold_manifests::parse(yaml) {
        Ok(sdl) => sdl,
        Err(errors) => {
            return json!({
                "ok": false,
                "errors": errors.errors().iter().map(error_json).collect::<Vec<_>>(),
                "warnings": [],
                "groups": [],
                "manifest_hash": null,
                "manifest_json": null,
            });
        }
    };
    let manifest = sdl.manifest();
    let manifest_hash = B256::from(manifest.hash());
    let mut errors = Vec::new();
    let mut groups = Vec::new();
    for group in sdl.groups() {
        let order = match leasehold_contracts::group_order(&group) {
            Ok(order) => order_json(&order, manifest_hash),
            Err(error) => {
                errors.push(json!({
                    "field": encoding_field(&group.name, &error),
                    "line": null,
                    "column": null,
                    "message": error.to_string(),
                }));
                Value::Null
            }
        };
        // The summary stays when only the encoding fails (an auditor list), so the page
        // can still show the group.
        if let Ok(totals) = group.totals() {
            groups.push(json!({
                "name": group.name,
                "count": totals.replicas,
                "resources": totals,
                "order": order,
            }));
        }
    }
    json!({
        "ok": errors.is_empty(),
        "errors": errors,
        "warnings": sdl.warnings().iter().map(warning_json).collect::<Vec<_>>(),
        "groups": groups,
        "manifest_hash": hash(manifest_hash),
        "manifest_json": manifest.canonical_json(),
    })
}

/// The groups of an SDL that validates (as [`validate`] judges it, so the two routes agree),
/// or [`validate`]'s errors.
pub fn validated_groups(yaml: &str) -> Result<Vec<Group>, Vec<Value>> {
    let report = validate(yaml);
    if report["ok"] != json!(true) {
        return Err(report["errors"].as_array().cloned().unwrap_or_default());
    }
    leasehold_manifests::parse(yaml)
        .map(|sdl| sdl.groups())
        .map_err(|errors| errors.errors().iter().map(error_json).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_sdl_names_the_field() {
        let report = validate("version: \"2.0\"\nservices: {}\n");
        assert_eq!(report["ok"], json!(false), "{report}");
        let errors = report["errors"].as_array().expect("errors");
        assert!(!errors.is_empty(), "{report}");
        assert!(errors.iter().all(|e| e["message"].is_string()), "{report}");
    }

    /// An Akash auditor is refused with its own field; the group stays listed, without an order.
    #[test]
    fn an_unencodable_group_names_its_field_and_has_no_order() {
        let hello = include_str!("../../manifests/examples/hello.yaml");
        let yaml = hello.replace(
            "    anywhere:\n      pricing:",
            "    anywhere:\n      signedBy:\n        anyOf:\n          - akash1365yvmc4s7awdyj3n2sav7xfx76adc6dnmlx63\n      pricing:",
        );
        assert_ne!(yaml, hello, "the SDL was changed");
        let report = validate(&yaml);
        assert_eq!(report["ok"], json!(false), "{report}");
        assert_eq!(
            report["errors"][0]["field"], "profiles.placement.anywhere.signedBy.anyOf[0]",
            "{report}"
        );
        assert_eq!(report["groups"][0]["order"], Value::Null, "{report}");
        assert!(report["manifest_json"].is_string(), "{report}");
    }

    /// Preflight takes an SDL exactly when validate calls it ok, and refuses it with
    /// validate's errors.
    #[test]
    fn validated_groups_agree_with_validate() {
        let hello = include_str!("../../manifests/examples/hello.yaml");
        let groups = validated_groups(hello).expect("hello validates");
        assert_eq!(
            groups.len(),
            validate(hello)["groups"]
                .as_array()
                .map(Vec::len)
                .unwrap_or(0)
        );
        for bad in ["version: \"2.0\"\nservices: {}\n", "\u{0}: ["] {
            let errors = validated_groups(bad).expect_err(bad);
            assert!(!errors.is_empty(), "{bad}");
            assert_eq!(json!(errors), validate(bad)["errors"], "{bad}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let report = validate("\u{0}: [");
        assert_eq!(report["ok"], json!(false), "{report}");
    }
}
