//! Akash's own SDL fixtures: valid files must derive the same groups (and manifest
//! services) as Akash; invalid files must be rejected for the right reason.

use std::fs;
use std::path::{Path, PathBuf};

use leasehold_manifests::{
    EndpointKind, Group, Manifest, ManifestErrors, WarningKind, parse, parse_strict,
};
use serde_json::Value;

fn fixtures_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/akash-sdl");
    assert!(
        root.join("input").is_dir(),
        "Akash SDL fixtures not found at {}; they are required for the conformance test",
        root.display()
    );
    root
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    files.retain(|path| path.is_dir() || path.extension().is_some_and(|ext| ext == "yaml"));
    files.sort();
    files
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| items.iter().map(text).collect())
        .unwrap_or_default()
}

fn attribute_pairs(value: &Value) -> Vec<(String, String)> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| (text(&item["key"]), text(&item["value"])))
                .collect()
        })
        .unwrap_or_default()
}

fn kind_number(kind: EndpointKind) -> u64 {
    match kind {
        EndpointKind::SharedHttp => 0,
        EndpointKind::RandomPort => 1,
        EndpointKind::LeasedIp => 2,
    }
}

fn compare_resources(case: &str, ours: &leasehold_manifests::Resources, theirs: &Value) {
    assert_eq!(
        u64::from(ours.id),
        theirs["id"].as_u64().unwrap(),
        "{case}: id"
    );
    assert_eq!(
        ours.cpu_millis.to_string(),
        text(&theirs["cpu"]["units"]["val"]),
        "{case}: cpu"
    );
    assert_eq!(
        ours.memory_bytes.to_string(),
        text(&theirs["memory"]["size"]["val"]),
        "{case}: memory"
    );
    let storage = theirs["storage"].as_array().expect("storage list");
    assert_eq!(ours.storage.len(), storage.len(), "{case}: storage volumes");
    for (volume, expected) in ours.storage.iter().zip(storage) {
        assert_eq!(volume.name, text(&expected["name"]), "{case}: storage name");
        assert_eq!(
            volume.bytes.to_string(),
            text(&expected["size"]["val"]),
            "{case}: storage {}",
            volume.name
        );
        let attributes: Vec<_> = volume
            .attributes
            .iter()
            .map(|a| (a.key.clone(), a.value.clone()))
            .collect();
        assert_eq!(
            attributes,
            attribute_pairs(&expected["attributes"]),
            "{case}: storage attributes"
        );
    }
    assert_eq!(
        ours.gpu.units.to_string(),
        text(&theirs["gpu"]["units"]["val"]),
        "{case}: gpu units"
    );
    let gpu_attributes: Vec<_> = ours
        .gpu
        .attributes
        .iter()
        .map(|a| (a.key.clone(), a.value.clone()))
        .collect();
    assert_eq!(
        gpu_attributes,
        attribute_pairs(&theirs["gpu"]["attributes"]),
        "{case}: gpu attributes"
    );
    let endpoints: Vec<(u64, u64)> = ours
        .endpoints
        .iter()
        .map(|endpoint| {
            (
                kind_number(endpoint.kind),
                u64::from(endpoint.sequence_number),
            )
        })
        .collect();
    let expected: Vec<(u64, u64)> = theirs["endpoints"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    (
                        item["kind"].as_u64().unwrap_or(0),
                        item["sequence_number"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(endpoints, expected, "{case}: endpoints");
}

fn compare_groups(case: &str, groups: &[Group], expected: &Value) {
    let expected = expected.as_array().expect("group-specs is a list");
    assert_eq!(groups.len(), expected.len(), "{case}: number of groups");
    for (group, spec) in groups.iter().zip(expected) {
        let case = format!("{case} group {}", group.name);
        assert_eq!(group.name, text(&spec["name"]), "{case}: name");
        let requirements = &spec["requirements"];
        assert_eq!(
            group.requirements.signed_by.all_of,
            strings(&requirements["signed_by"]["all_of"]),
            "{case}: allOf"
        );
        assert_eq!(
            group.requirements.signed_by.any_of,
            strings(&requirements["signed_by"]["any_of"]),
            "{case}: anyOf"
        );
        let attributes: Vec<_> = group
            .requirements
            .attributes
            .iter()
            .map(|a| (a.key.clone(), a.value.clone()))
            .collect();
        assert_eq!(
            attributes,
            attribute_pairs(&requirements["attributes"]),
            "{case}: attributes"
        );
        let units = spec["resources"].as_array().expect("resources list");
        assert_eq!(
            group.units.len(),
            units.len(),
            "{case}: number of resource units"
        );
        for (unit, expected) in group.units.iter().zip(units) {
            compare_resources(&case, &unit.resources, &expected["resource"]);
            assert_eq!(
                u64::from(unit.count),
                expected["count"].as_u64().unwrap(),
                "{case}: count"
            );
            assert_eq!(
                unit.price.denom,
                text(&expected["price"]["denom"]),
                "{case}: denom"
            );
            assert_eq!(
                unit.price.amount.to_dec_coin_string(),
                text(&expected["price"]["amount"]),
                "{case}: amount"
            );
        }
    }
}

fn compare_manifest(case: &str, manifest: &Manifest, expected: &Value) {
    let expected = expected.as_array().expect("manifest is a list");
    assert_eq!(
        manifest.groups.len(),
        expected.len(),
        "{case}: manifest groups"
    );
    for (group, theirs) in manifest.groups.iter().zip(expected) {
        assert_eq!(group.name, text(&theirs["name"]));
        let services = theirs["services"].as_array().expect("services");
        assert_eq!(group.services.len(), services.len(), "{case}: services");
        for (service, theirs) in group.services.iter().zip(services) {
            let case = format!("{case} service {}", service.name);
            assert_eq!(service.name, text(&theirs["name"]), "{case}");
            assert_eq!(service.image, text(&theirs["image"]), "{case}: image");
            assert_eq!(
                u64::from(service.count),
                theirs["count"].as_u64().unwrap(),
                "{case}: count"
            );
            assert_eq!(
                service.env.clone().unwrap_or_default(),
                strings(&theirs["env"]),
                "{case}: env"
            );
            assert_eq!(
                service.command.clone().unwrap_or_default(),
                strings(&theirs["command"]),
                "{case}: command"
            );
            assert_eq!(
                service.args.clone().unwrap_or_default(),
                strings(&theirs["args"]),
                "{case}: args"
            );
            compare_resources(&case, &service.resources, &theirs["resources"]);
            let exposes = theirs["expose"].as_array().expect("expose");
            assert_eq!(service.expose.len(), exposes.len(), "{case}: exposes");
            for (expose, theirs) in service.expose.iter().zip(exposes) {
                assert_eq!(
                    u64::from(expose.port),
                    theirs["port"].as_u64().unwrap(),
                    "{case}: port"
                );
                assert_eq!(
                    u64::from(expose.external_port),
                    theirs["externalPort"].as_u64().unwrap(),
                    "{case}: as"
                );
                assert_eq!(
                    serde_json::to_value(expose.proto).unwrap(),
                    theirs["proto"],
                    "{case}: proto"
                );
                assert_eq!(
                    expose.service,
                    text(&theirs["service"]),
                    "{case}: to.service"
                );
                assert_eq!(
                    Some(expose.global),
                    theirs["global"].as_bool(),
                    "{case}: global"
                );
                assert_eq!(expose.hosts, strings(&theirs["hosts"]), "{case}: hosts");
                assert_eq!(expose.ip, text(&theirs["ip"]), "{case}: ip");
                assert_eq!(
                    u64::from(expose.endpoint_sequence_number),
                    theirs["endpointSequenceNumber"].as_u64().unwrap(),
                    "{case}: seq"
                );
                let http = &theirs["httpOptions"];
                let options = &expose.http_options;
                assert_eq!(
                    u64::from(options.max_body_size),
                    http["maxBodySize"].as_u64().unwrap(),
                    "{case}"
                );
                assert_eq!(
                    u64::from(options.read_timeout),
                    http["readTimeout"].as_u64().unwrap(),
                    "{case}"
                );
                assert_eq!(
                    u64::from(options.send_timeout),
                    http["sendTimeout"].as_u64().unwrap(),
                    "{case}"
                );
                assert_eq!(
                    u64::from(options.next_tries),
                    http["nextTries"].as_u64().unwrap(),
                    "{case}"
                );
                assert_eq!(
                    u64::from(options.next_timeout),
                    http["nextTimeout"].as_u64().unwrap(),
                    "{case}"
                );
                assert_eq!(options.next_cases, strings(&http["nextCases"]), "{case}");
            }
            match (&service.credentials, theirs["credentials"].as_object()) {
                (None, None) => {}
                (Some(ours), Some(theirs)) => {
                    assert_eq!(ours.host, text(&theirs["host"]), "{case}: credentials host");
                    assert_eq!(
                        ours.username,
                        text(&theirs["username"]),
                        "{case}: credentials username"
                    );
                    assert_eq!(
                        ours.password,
                        text(&theirs["password"]),
                        "{case}: credentials password"
                    );
                    let email = theirs.get("email").map(text).unwrap_or_default();
                    assert_eq!(ours.email, email, "{case}: credentials email");
                }
                (ours, theirs) => panic!("{case}: credentials differ: {ours:?} vs {theirs:?}"),
            }
            let tee = service
                .params
                .as_ref()
                .and_then(|params| params.tee.as_ref());
            assert_eq!(
                tee.map(|tee| tee.kind.clone()),
                theirs["params"]["tee"]["type"].as_str().map(str::to_owned),
                "{case}: tee"
            );
        }
    }
}

#[test]
fn every_valid_fixture_derives_akash_groups_and_manifest() {
    let root = fixtures_root();
    let mut checked = 0;
    for version in ["v2.0", "v2.1"] {
        for case_dir in yaml_files(&root.join("input").join(version)) {
            let case = format!(
                "{version}/{}",
                case_dir.file_name().unwrap().to_string_lossy()
            );
            let yaml = fs::read_to_string(case_dir.join("input.yaml")).expect("input.yaml");
            let sdl = parse(&yaml).unwrap_or_else(|errors| panic!("{case} rejected: {errors}"));
            let outputs = root
                .join("output-fixtures")
                .join(version)
                .join(case_dir.file_name().unwrap());
            let group_specs: Value = serde_json::from_str(
                &fs::read_to_string(outputs.join("group-specs.json")).expect("group-specs.json"),
            )
            .expect("group-specs.json is JSON");
            compare_groups(&case, &sdl.groups(), &group_specs);
            let manifest: Value = serde_json::from_str(
                &fs::read_to_string(outputs.join("manifest.json")).expect("manifest.json"),
            )
            .expect("manifest.json is JSON");
            compare_manifest(&case, &sdl.manifest(), &manifest);
            checked += 1;
        }
    }
    assert!(
        checked >= 15,
        "expected at least 15 valid fixtures, found {checked}"
    );
}

/// The word each known invalid fixture's rejection must mention (in path or message).
const EXPECTED_CAUSES: &[(&str, &str)] = &[
    ("count-zero", "count"),
    ("credentials-missing-host", "host"),
    ("empty-image", "image"),
    ("endpoint-not-used", "never used"),
    ("invalid-endpoint-name", "endpoint name"),
    ("invalid-port", "port"),
    ("invalid-protocol", "proto"),
    ("ip-without-global", "global"),
    ("missing-deployment", "deployment"),
    ("missing-image", "image"),
    ("missing-memory-size", "size"),
    ("missing-pricing", "pricing"),
    ("missing-version", "version"),
    ("negative-cpu", "negative"),
    ("persistent-without-mount", "mount"),
    ("port-too-high", "port"),
    ("port-zero", "port"),
    ("ram-persistent-true", "ram"),
    ("unknown-field", "unknown field"),
    ("v2.1-reclamation-bad-window", "min_window"),
    ("v2.1-tee-cpu-gpu-no-gpu", "gpu"),
    ("email-too-short", "email"),
    ("invalid-denom", "denom"),
    ("invalid-gpu-vendor", "vendor"),
    ("invalid-version", "version"),
    ("password-too-short", "password"),
    ("reclamation-compound-window", "min_window"),
];

/// Invalid fixtures that Akash's lenient Go parser accepts because it ignores unknown keys:
/// Leasehold accepts them with a warning naming the key, and rejects them in strict mode.
const REJECTED_ONLY_WHEN_STRICT: &[(&str, &str)] = &[("unknown-field", "unknown_field")];

/// The rejection by strict validation (Akash's `ReadFileStrict`, which these fixtures target).
fn rejection(path: &Path) -> ManifestErrors {
    let yaml = fs::read_to_string(path).expect("fixture");
    match parse_strict(&yaml) {
        Ok(_) => panic!("{} was accepted but must be rejected", path.display()),
        Err(errors) => errors,
    }
}

#[test]
fn invalid_fixtures_are_rejected_leniently_unless_only_an_unknown_key_is_wrong() {
    let root = fixtures_root();
    for folder in ["invalid", "schema-only-invalid"] {
        for file in yaml_files(&root.join("input").join(folder)) {
            let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
            let yaml = fs::read_to_string(&file).expect("fixture");
            match REJECTED_ONLY_WHEN_STRICT
                .iter()
                .find(|(name, _)| *name == stem)
            {
                Some((_, key)) => {
                    let sdl = parse(&yaml).unwrap_or_else(|errors| {
                        panic!("{folder}/{stem} must be accepted leniently: {errors}")
                    });
                    assert!(
                        sdl.warnings()
                            .iter()
                            .any(|w| w.kind == WarningKind::UnknownKey && w.key == *key),
                        "{folder}/{stem}: no warning about `{key}`: {:?}",
                        sdl.warnings()
                    );
                }
                None => assert!(
                    parse(&yaml).is_err(),
                    "{folder}/{stem} must be rejected even leniently"
                ),
            }
        }
    }
}

#[test]
fn every_invalid_fixture_is_rejected_for_its_cause() {
    let root = fixtures_root();
    let mut checked = 0;
    for folder in ["invalid", "schema-only-invalid"] {
        for file in yaml_files(&root.join("input").join(folder)) {
            let errors = rejection(&file);
            assert!(!errors.errors().is_empty());
            for error in errors.errors() {
                assert!(
                    !error.message.is_empty(),
                    "{}: empty message",
                    file.display()
                );
            }
            let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
            if let Some((_, cause)) = EXPECTED_CAUSES.iter().find(|(name, _)| *name == stem) {
                let found = errors.errors().iter().any(|error| {
                    error.message.to_lowercase().contains(cause) || error.path.contains(cause)
                });
                assert!(
                    found,
                    "{folder}/{stem}: expected a rejection mentioning `{cause}`, got:\n{errors}"
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 27,
        "expected at least 27 invalid fixtures, found {checked}"
    );
}

#[test]
fn errors_name_the_line_of_the_offending_value() {
    let root = fixtures_root();
    let errors = rejection(&root.join("input/invalid/port-zero.yaml"));
    let port = errors
        .errors()
        .iter()
        .find(|error| error.path == "services.web.expose[0].port")
        .unwrap_or_else(|| panic!("no error at the port: {errors}"));
    assert_eq!((port.line, port.column), (8, 15));
}
