//! Durable pause through a real `coppiced` and the unmodified E2B Python SDK
//! (`durable_sdk.py`): a paused sandbox is written to disk, the daemon is killed and started
//! again, and the resume restores the same processes. Root only, and CRIU is needed (the test
//! command installs it); run with
//! `COPPICE_PRIVILEGED_TESTS=1 cargo test -p coppice-gateway --test durable -- --ignored`.
#![cfg(target_os = "linux")]
// Test helpers outside `#[test]` functions unwrap too: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

mod daemon;

use daemon::{finish_suite, free_port, run_sdk_step, sdk_dir, start_with, wait_healthy};

/// Durable pause needs a loopback-only sandbox; it is written to disk after one second.
const FLAGS: &[&str] = &["--network", "loopback", "--durable-pause-after", "1"];

fn criu_flags() -> Vec<String> {
    let criu = std::env::var("COPPICE_CRIU").unwrap_or_else(|_| "/usr/local/sbin/criu".into());
    assert!(
        Path::new(&criu).is_file(),
        "{criu} is missing: scripts/test.sh installs CRIU"
    );
    vec!["--criu".into(), criu]
}

#[test]
#[ignore = "privileged: checkpoints sandboxes with CRIU under a real coppiced; needs the E2B SDK venv"]
fn test_durable_pause_outlives_the_daemon_and_restores_the_same_processes() {
    coppice_core::require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let criu = criu_flags();
    let mut flags: Vec<&str> = FLAGS.to_vec();
    flags.extend(criu.iter().map(String::as_str));
    let mut daemon = start_with(dir.path(), port, &flags);
    wait_healthy(port);
    let url = format!("http://127.0.0.1:{port}");
    let script = sdk_dir().join("durable_sdk.py");
    let setup = run_sdk_step(&script, "setup", &[], &url);
    let printed = String::from_utf8_lossy(&setup.stdout).into_owned();
    let state: Vec<&str> = printed
        .lines()
        .find(|line| line.starts_with("STATE "))
        .unwrap_or_else(|| {
            panic!(
                "setup printed {printed:?}; stderr {}",
                String::from_utf8_lossy(&setup.stderr)
            )
        })
        .split_whitespace()
        .collect();
    assert_eq!(state.len(), 5, "setup printed {printed:?}");

    // The memory goes to disk, and the sandbox's processes are gone.
    let run_dir = dir.path().join("run").join(state[1]);
    let deadline = Instant::now() + Duration::from_secs(30);
    // CRIU marks the images complete; the runtime then forgets the ended init.
    while !run_dir.join("checkpoint/complete").is_file() || run_dir.join("state.json").exists() {
        assert!(
            Instant::now() < deadline,
            "the paused sandbox was not written to disk (or its init is still recorded)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A crash of the daemon; the sandbox has no process left to lose.
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    let restarted = start_with(dir.path(), port, &flags);
    wait_healthy(port);
    let output = run_sdk_step(&script, "verify", &state[1..], &url);
    finish_suite(port, restarted, &output);
}
