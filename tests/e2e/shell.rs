//! Issue #13: `tenant shell` against a real daemon, chain and Docker engine: one-shot
//! commands (exit code, stdout, stderr, JSON), another account refused, an interactive
//! session through a real pseudo-terminal, and the session ending when the lease closes.

use std::process::Command;
use std::time::Duration;

use leasehold_e2e::eventually;
use leasehold_e2e::process::Guard;
use leasehold_e2e::scenario::{OTHER_TENANT, QUICK_DEPLOY, Scenario, TENANT};

use crate::flows::{PRICE_A, TICKER, deploy_ok, manifest, wait_for_teardown};

const MINUTE: Duration = Duration::from_secs(60);

/// A `python3 shell_pty.py tenant ...` command with the tenant's environment.
fn through_a_pty(scenario: &Scenario, args: &[&str]) -> (Command, std::path::PathBuf) {
    let script = scenario.dir.path().join("shell_pty.py");
    std::fs::write(&script, include_str!("shell_pty.py")).expect("writing the pty driver");
    let tenant = scenario.tenant_command(TENANT, args);
    let mut command = Command::new("python3");
    command
        .arg(&script)
        .arg(tenant.get_program())
        .args(tenant.get_args());
    command.env_clear();
    for (key, value) in tenant.get_envs() {
        if let Some(value) = value {
            command.env(key, value);
        }
    }
    let stty = scenario.dir.path().join("stty");
    command
        .env("STTY_BEFORE", stty.with_extension("before"))
        .env("STTY_AFTER", stty.with_extension("after"));
    (command, stty)
}

#[test]
fn shell_runs_commands_interactively_and_one_shot_for_the_tenant_only() {
    let scenario = Scenario::with_provider(PRICE_A);
    let ticker = manifest(&scenario, "ticker.yaml", TICKER);
    let (_, lease) = deploy_ok(&scenario, &ticker, QUICK_DEPLOY);
    let lease_arg = lease.to_string();

    // One-shot: the command's exit code is the CLI's; stdout and stderr stay apart.
    let script = "echo to-stdout; echo to-stderr >&2; exit 3";
    let run = scenario.tenant(
        TENANT,
        &["shell", &lease_arg, "--", "sh", "-c", script],
        MINUTE,
    );
    assert_eq!(run.code, Some(3), "{run:?}\n{}", scenario.provider_logs());
    assert_eq!(run.stdout, "to-stdout\n", "{run:?}");
    assert_eq!(run.stderr, "to-stderr\n", "{run:?}");

    let run = scenario.tenant(
        TENANT,
        &[
            "shell",
            &lease_arg,
            "--output",
            "json",
            "--",
            "sh",
            "-c",
            "echo hi; exit 0",
        ],
        MINUTE,
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let document = run.json();
    assert_eq!(document["exit_code"], 0, "{document}");
    assert_eq!(document["stdout"], "hi\n", "{document}");
    assert_eq!(document["service"], "ticker", "{document}");

    // Another account: refused by the provider, nothing runs.
    let stranger = scenario.tenant(
        OTHER_TENANT,
        &[
            "shell",
            &lease_arg,
            "--service",
            "ticker",
            "--",
            "sh",
            "-c",
            "echo ran",
        ],
        MINUTE,
    );
    assert_eq!(stranger.code, Some(1), "{stranger:?}");
    assert!(!stranger.stdout.contains("ran"), "{stranger:?}");
    assert!(
        stranger
            .stderr
            .contains(&format!("is not the tenant of lease {lease}")),
        "unclear refusal: {}",
        stranger.stderr
    );

    // Interactive: a real terminal, typed text echoed (by the remote terminal), a resize
    // seen by `stty size`, Ctrl-D ends it, and the local terminal is as it was. The remote
    // loop stands in for `sh`, whose busybox line editor queries the terminal after each
    // resize and drops typed-ahead input: the same session, without those races.
    let repl = "while printf 'ready> ' && read -r line; do eval \"$line\"; done";
    let (command, stty) = through_a_pty(
        &scenario,
        &["shell", &lease_arg, "--tty", "--", "sh", "-c", repl],
    );
    let run = leasehold_e2e::process::run_bounded(command, Duration::from_secs(120));
    assert_eq!(run.code, Some(0), "pty driver failed: {run:?}");
    let document = run.json();
    assert_eq!(document["exit"], 0, "{document}");
    let shown = document["shown"].as_str().unwrap_or_default();
    assert!(
        shown.contains("echo typed-''-text"),
        "typing not echoed: {shown:?}"
    );
    assert!(shown.contains("50 132"), "resize not seen: {shown:?}");
    let before = std::fs::read_to_string(stty.with_extension("before")).expect("stty before");
    let after = std::fs::read_to_string(stty.with_extension("after")).expect("stty after");
    assert_eq!(before, after, "the terminal was not restored");

    // Closing the lease ends an open session.
    let (mut sleeping, log) = Guard::spawn_logged(
        scenario.tenant_command(TENANT, &["shell", &lease_arg, "--", "sleep", "600"]),
        "sleeping-shell",
        scenario.dir.path(),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !sleeping.exited(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let close = scenario.tenant(TENANT, &["close", &lease_arg], MINUTE);
    assert_eq!(close.code, Some(0), "{close:?}");
    eventually("the shell to end after close", MINUTE, || {
        sleeping.exited().then_some(())
    });
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        said.contains("stopped while the command ran") || said.contains("the shell session ended"),
        "the shell did not say why it ended: {said:?}"
    );
    wait_for_teardown(lease);
}
