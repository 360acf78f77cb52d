//! Every command documents an example, `--output` and the exit codes.

use crate::support::{run_tenant, stdout};

const COMMANDS: &[&[&str]] = &[
    &[],
    &["validate"],
    &["wallet"],
    &["wallet", "new"],
    &["wallet", "import"],
    &["wallet", "address"],
    &["wallet", "balance"],
    &["wallet", "faucet"],
    &["providers"],
    &["preflight"],
    &["deploy"],
    &["status"],
    &["logs"],
    &["events"],
    &["close"],
    &["topup"],
    &["bids"],
    &["leases"],
    &["update"],
    &["audit"],
    &["audit", "attest"],
    &["audit", "revoke"],
    &["audit", "list"],
];

#[test]
fn every_command_has_an_example_output_flag_and_exit_codes() {
    let home = tempfile::tempdir().expect("temp dir");
    for command in COMMANDS {
        let mut args = command.to_vec();
        args.push("--help");
        let output = run_tenant(home.path(), &[], &args);
        let text = stdout(&output);
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        assert!(text.contains("Example"), "{args:?} has no example:\n{text}");
        assert!(text.contains("tenant "), "{args:?} example:\n{text}");
        assert!(
            text.contains("--output"),
            "{args:?} lacks --output:\n{text}"
        );
        assert!(
            text.contains("Exit codes:") && text.contains("4  timeout"),
            "{args:?}:\n{text}"
        );
    }
}

#[test]
fn unknown_flags_are_usage_errors() {
    let home = tempfile::tempdir().expect("temp dir");
    let output = run_tenant(home.path(), &[], &["deploy", "--no-such-flag"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn missing_deployment_config_is_exit_2_naming_the_variable() {
    let home = tempfile::tempdir().expect("temp dir");
    let output = run_tenant(home.path(), &[], &["providers"]);
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("LEASEHOLD_DEPLOYMENT"), "{text}");

    // A config file that does not parse names itself.
    let config = home.path().join("bad.toml");
    std::fs::write(&config, "rpc = [").expect("write");
    let output = run_tenant(
        home.path(),
        &[],
        &[
            "providers",
            "--config",
            &config.to_string_lossy(),
            "--output",
            "json",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON error");
    assert_eq!(json["error"]["exit_code"], 2);
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("bad.toml")
    );
}
