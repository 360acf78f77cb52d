//! Tests of the `tenant` binary: the built executable against a real anvil with the real
//! contracts deployed per test.

mod audit;
mod deploy;
mod gateway;
mod help;
mod market;
mod names;
mod support;
mod wallet;

use std::path::PathBuf;
use std::process::{Command, Output};

fn tenant(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tenant"))
        .args(args)
        .output()
        .expect("run tenant")
}

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn valid_example_prints_groups_as_json() {
    let output = tenant(&[
        "validate",
        &example("multi-service.yaml"),
        "--output",
        "json",
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    assert_eq!(json["valid"], true);
    let hash = json["manifest_hash"].as_str().expect("hash");
    assert_eq!(hash.len(), 66);
    let group = &json["groups"][0];
    assert_eq!(group["name"], "eu");
    let units = group["units"].as_array().expect("units");
    assert_eq!(units.len(), 2);
    // Akash orders units by service name: db first, then web.
    assert_eq!(units[0]["cpu_millis"], 1000);
    assert_eq!(units[0]["storage"][1]["bytes"], 20u64 << 30);
    assert_eq!(units[0]["storage"][1]["class"], "beta2");
    assert_eq!(units[1]["cpu_millis"], 500);
    assert_eq!(units[1]["count"], 2);
    assert_eq!(units[1]["price"]["amount"], "500");
    assert_eq!(group["totals"]["cpu_millis"], 2000);
    assert_eq!(group["totals"]["replicas"], 3);
    assert_eq!(group["totals"]["price"]["amount"], "2500");
}

#[test]
fn valid_example_prints_a_table_and_the_hash() {
    let output = tenant(&["validate", &example("gpu-inference.yaml")]);
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("GROUP"), "{text}");
    assert!(
        text.contains("nvidia/a100/80Gi/sxm|nvidia/h100/80Gi/sxm"),
        "{text}"
    );
    assert!(text.contains("8000m"), "{text}");
    assert!(text.contains("manifest hash: 0x"), "{text}");
}

#[test]
fn invalid_manifest_exits_1_with_every_error_and_its_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bad.yaml");
    let yaml = std::fs::read_to_string(example("hello.yaml"))
        .expect("example")
        .replace("size: 64Mi", "size: 64Qi")
        .replace("count: 1", "count: 0");
    std::fs::write(&file, yaml).expect("write");
    let path = file.to_string_lossy().into_owned();

    let output = tenant(&["validate", &path]);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("profiles.compute.web.resources.memory.size"),
        "{text}"
    );
    assert!(text.contains("deployment.web.anywhere.count"), "{text}");

    let output = tenant(&["validate", &path, "--output", "json"]);
    assert_eq!(output.status.code(), Some(1));
    let errors: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON errors");
    let errors = errors.as_array().expect("array of errors");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        errors[0]["path"],
        "profiles.compute.web.resources.memory.size"
    );
    assert!(errors[0]["line"].as_u64().unwrap() > 0);
    assert!(errors[0]["column"].as_u64().unwrap() > 0);
    assert!(errors[0]["message"].as_str().unwrap().contains("Mi"));
}

#[test]
fn missing_file_exits_2() {
    let output = tenant(&["validate", "/nonexistent/leasehold.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));
}

#[test]
fn help_has_an_example_and_exit_codes() {
    let output = tenant(&["validate", "--help"]);
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("Example") && text.contains("Exit codes:"),
        "{text}"
    );
}

/// hello.yaml as an Akash user writes it: compose keys, Console-style sizes, Akash's denom.
fn akash_style_hello(dir: &std::path::Path) -> String {
    let yaml = std::fs::read_to_string(example("hello.yaml"))
        .expect("example")
        .replace(
            "    image: leasehold/busybox:test\n",
            "    image: leasehold/busybox:test\n    depends_on:\n      - db\n",
        )
        .replace("size: 64Mi", "size: 64mi")
        .replace("denom: usdc", "denom: uakt");
    let file = dir.join("akash.yaml");
    std::fs::write(&file, yaml).expect("write");
    file.to_string_lossy().into_owned()
}

#[test]
fn validate_prints_warnings_and_how_prices_are_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = akash_style_hello(dir.path());

    let output = tenant(&["validate", &path]);
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(
            "warning: services.web.depends_on (line 6, column 5): unknown key `depends_on`"
        ),
        "{text}"
    );
    assert!(text.contains("start independently"), "{text}");
    assert!(text.contains("pricing `denom`"), "{text}");
    assert!(
        text.contains("pricing: group `anywhere`: 1 x 1000 uakt per replica per hour"),
        "{text}"
    );

    let output = tenant(&["validate", &path, "--output", "json"]);
    assert_eq!(output.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    let warnings = json["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert_eq!(warnings[0]["kind"], "unknown_key");
    assert_eq!(warnings[0]["key"], "depends_on");
    assert_eq!(warnings[0]["path"], "services.web.depends_on");
    assert_eq!(warnings[0]["line"], 6);
    assert_eq!(warnings[0]["column"], 5);
    assert!(
        warnings[0]["instead"]
            .as_str()
            .unwrap()
            .contains("independently")
    );
    assert_eq!(warnings[1]["kind"], "pricing");
    assert_eq!(json["groups"][0]["units"][0]["memory_bytes"], 64u64 << 20);
    assert!(json["pricing"][0].as_str().unwrap().contains("per block"));
}

#[test]
fn validate_strict_turns_warnings_into_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = akash_style_hello(dir.path());

    let output = tenant(&["validate", &path, "--strict"]);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("2 error(s)"), "{text}");
    assert!(
        text.contains("services.web.depends_on (line 6, column 5)"),
        "{text}"
    );

    let output = tenant(&["validate", &path, "--strict", "--output", "json"]);
    assert_eq!(output.status.code(), Some(1));
    let errors: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON errors");
    assert_eq!(errors[0]["path"], "services.web.depends_on");

    let clean = tenant(&["validate", &example("hello.yaml"), "--strict"]);
    assert_eq!(clean.status.code(), Some(0));
}
