//! Durable pause through a real `coppiced` and the unmodified E2B Python SDK
//! (`durable_sdk.py`): a paused sandbox is written to disk, the daemon is killed and started
//! again, and the resume restores the same processes. Root only, and CRIU is needed (the test
//! command installs it); run with
//! `COPPICE_PRIVILEGED_TESTS=1 cargo test -p coppice-gateway --test durable -- --ignored`.
#![cfg(target_os = "linux")]
// Test helpers outside `#[test]` functions unwrap too: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod daemon;

use daemon::{
    criu_flags, finish_suite, free_port, run_sdk_step, sdk_dir, start_with, wait_for_checkpoint,
    wait_healthy,
};

/// Durable pause needs a loopback-only sandbox; it is written to disk after one second.
const FLAGS: &[&str] = &["--network", "loopback", "--durable-pause-after", "1"];

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
    wait_for_checkpoint(dir.path(), state[1]);

    // A crash of the daemon; the sandbox has no process left to lose.
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    let restarted = start_with(dir.path(), port, &flags);
    wait_healthy(port);
    let output = run_sdk_step(&script, "verify", &state[1..], &url);
    finish_suite(port, restarted, &output);
}
