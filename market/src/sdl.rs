//! `POST /api/v1/sdl/validate`: the checks `tenant validate` runs (the manifests crate's parser
//! and the contracts crate's auditor encoding), reported as JSON.

use leasehold_manifests::{ManifestError, ManifestWarning};
use serde_json::{Value, json};

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

/// `{ok, errors, warnings, groups, manifest_hash}` for an SDL text.
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
            });
        }
    };
    let mut errors = Vec::new();
    let mut groups = Vec::new();
    for group in sdl.groups() {
        if let Err(error) =
            leasehold_contracts::auditors_for_group(&group.name, &group.requirements.signed_by)
        {
            errors.push(json!({
                "field": format!("profiles.placement.{}.signedBy", group.name),
                "line": null,
                "column": null,
                "message": error.to_string(),
            }));
        }
        match group.totals() {
            Ok(totals) => groups.push(json!({
                "name": group.name,
                "count": totals.replicas,
                "resources": totals,
            })),
            Err(error) => errors.push(json!({
                "field": format!("profiles.placement.{}", group.name),
                "line": null,
                "column": null,
                "message": error.to_string(),
            })),
        }
    }
    json!({
        "ok": errors.is_empty(),
        "errors": errors,
        "warnings": sdl.warnings().iter().map(warning_json).collect::<Vec<_>>(),
        "groups": groups,
        "manifest_hash": sdl.manifest().hash_hex(),
    })
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

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let report = validate("\u{0}: [");
        assert_eq!(report["ok"], json!(false), "{report}");
    }
}
