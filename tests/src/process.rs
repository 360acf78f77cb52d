//! Child processes with bounded runs and guaranteed teardown.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What a finished (or timed-out) command produced.
#[derive(Debug, Clone)]
pub struct Run {
    /// `None` when killed at the time limit or by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// stdout as one JSON document, failing the test with both streams when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|error| {
            panic!(
                "stdout is not JSON ({error}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Fails the test unless the exit code is `expected`.
    pub fn expect_code(&self, expected: i32, what: &str) -> &Self {
        assert_eq!(
            self.code,
            Some(expected),
            "{what}: exit code {:?}, expected {expected}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `command` to completion, killing it after `limit`.
pub fn run_bounded(mut command: Command, limit: Duration) -> Run {
    let started = Instant::now();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("spawning {command:?}: {error}"));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let code = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code(),
            Ok(None) if started.elapsed() >= limit => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(error) => panic!("waiting for {command:?}: {error}"),
        }
    };
    Run {
        code,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    }
}

fn drain(stream: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut stream) = stream {
            let mut bytes = Vec::new();
            let _ = stream.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// Spawns `command` and collects stdout lines until `enough` says so or `limit` passes, then
/// kills it. Returns the lines seen.
pub fn stream_lines(
    mut command: Command,
    limit: Duration,
    mut enough: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = Guard::spawn(command, "streaming command");
    let (sender, receiver) = mpsc::channel();
    if let Some(stdout) = child.child.as_mut().and_then(|c| c.stdout.take()) {
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let deadline = Instant::now() + limit;
    let mut lines = Vec::new();
    while !enough(&lines) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match receiver.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    drop(child);
    lines
}

/// A long-running child, stopped with SIGTERM (then SIGKILL after 5 s) when dropped.
pub struct Guard {
    child: Option<Child>,
    pub name: String,
}

impl Guard {
    pub fn spawn(mut command: Command, name: &str) -> Self {
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("spawning {name} ({command:?}): {error}"));
        Self {
            child: Some(child),
            name: name.to_owned(),
        }
    }

    /// Spawns with stdout and stderr going to `<dir>/<name>.log`.
    pub fn spawn_logged(mut command: Command, name: &str, dir: &Path) -> (Self, PathBuf) {
        let path = dir.join(format!("{name}.log"));
        let log = File::create(&path)
            .unwrap_or_else(|error| panic!("creating {}: {error}", path.display()));
        let copy = log
            .try_clone()
            .unwrap_or_else(|error| panic!("cloning the log handle: {error}"));
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(copy));
        (Self::spawn(command, name), path)
    }

    /// Whether the child already exited.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| !matches!(child.try_wait(), Ok(None)))
    }

    /// Stops the child: SIGTERM, then SIGKILL when it has not exited within 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}
