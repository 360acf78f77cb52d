use std::process::Command;

use crate::simulate::openb;

fn scheduler() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scheduler"))
}

#[test]
fn simulate_help_has_an_example() {
    let output = scheduler().args(["simulate", "--help"]).output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("Example:"), "{text}");
    assert!(
        text.contains("--seeds") && text.contains("--scale") && text.contains("--json"),
        "{text}"
    );
}

#[test]
fn bad_arguments_fail_with_a_clear_error() {
    let output = scheduler()
        .args([
            "simulate",
            "--nodes",
            "x.csv",
            "--pods",
            "y.csv",
            "--policy",
            "worst-fit",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8(output.stderr).unwrap();
    assert!(
        error.contains("worst-fit") && error.contains("--policy"),
        "{error}"
    );

    let output = scheduler()
        .args([
            "simulate",
            "--nodes",
            "/nonexistent/nodes.csv",
            "--pods",
            "y.csv",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8(output.stderr).unwrap();
    assert!(
        error.contains("reading --nodes /nonexistent/nodes.csv"),
        "{error}"
    );

    let output = scheduler()
        .args(["simulate", "--nodes", "a", "--pods", "b", "--seeds", "9..3"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("--seeds")
    );
}

#[test]
fn simulate_prints_json() {
    let nodes = openb("openb_node_list_gpu_node.csv");
    let pods = openb("openb_pod_list_default.csv");
    let output = scheduler()
        .args(["simulate", "--nodes"])
        .arg(&nodes)
        .arg("--pods")
        .arg(&pods)
        .args([
            "--policy",
            "first-fit",
            "--seeds",
            "7",
            "--limit",
            "500",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["policy"], "first-fit");
    assert_eq!(report["runs"][0]["arrivals"], 500);
    assert_eq!(report["nodes"], 1213);
}
