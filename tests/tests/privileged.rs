//! End-to-end scenarios over the real Linux backends through `SandboxManager`. Root only; run
//! with `COPPICE_PRIVILEGED_TESTS=1 cargo test -p coppice-tests --test privileged -- --ignored`.
#![cfg(target_os = "linux")]
// Test helpers outside `#[test]` functions unwrap too: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use coppice_core::event::{EventKind, Reason};
use coppice_core::exec::{ExecRequest, ExecUser, ExitStatus};
use coppice_core::manager::ListFilter;
use coppice_core::{ErrorKind, SandboxManager, SandboxSpec};
use coppice_tests::harness::{HarnessPaths, ManagerEnv};
use coppice_tests::host::HostResources;

const DAEMON: &str = env!("CARGO_BIN_EXE_coppice-test-daemon");

async fn env() -> ManagerEnv {
    coppice_core::require_privileged!();
    ManagerEnv::start(Path::new(DAEMON), false).await.unwrap()
}

fn base() -> SandboxSpec {
    SandboxSpec::new("base".parse().unwrap())
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest {
        timeout: Some(Duration::from_secs(30)),
        ..ExecRequest::new(["/bin/bash", "-c", script])
    }
}

async fn kill_all(manager: &SandboxManager) {
    for sandbox in manager.list(&ListFilter::default()) {
        manager.kill(&sandbox.id).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "privileged: creates sandboxes with namespaces, overlay mounts and cgroups"]
async fn test_base_template_runs_python_and_knows_user() {
    let env = env().await;
    let sandbox = env.manager.create(base()).await.unwrap();

    let python = env
        .manager
        .exec(
            &sandbox.id,
            ExecRequest::new(["/usr/bin/python3", "-c", "print(6 * 7)"]),
        )
        .await
        .unwrap();
    let user = env
        .manager
        .exec(
            &sandbox.id,
            sh("whoami; echo $HOME; pwd").as_user(ExecUser::User),
        )
        .await
        .unwrap();
    let root = env
        .manager
        .exec(
            &sandbox.id,
            sh("whoami; hostname; ls -ld /home/user | cut -d' ' -f3"),
        )
        .await
        .unwrap();

    assert_eq!(
        String::from_utf8_lossy(&python.stdout),
        "42\n",
        "{python:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&user.stdout),
        "user\n/home/user\n/home/user\n",
        "{user:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&root.stdout),
        format!("root\n{}\nuser\n", sandbox.id),
        "{root:?}"
    );
    kill_all(&env.manager).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "privileged: creates sandboxes with namespaces, overlay mounts and cgroups"]
async fn test_memory_hog_oom_kill_is_recorded_with_reason_oom() {
    let env = env().await;
    let sandbox = env
        .manager
        .create(SandboxSpec {
            memory_mb: 64,
            ..base()
        })
        .await
        .unwrap();
    let hog = ExecRequest::new(["/usr/bin/python3", "-c", "b = bytearray(300 << 20)"]);

    let outcome = env.manager.exec(&sandbox.id, hog).await.unwrap();

    assert_eq!(outcome.status, ExitStatus::Signal(9), "{outcome:?}");
    let events = env.manager.events(&sandbox.id).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == EventKind::OomKill && e.reason == Reason::Oom),
        "{events:?}"
    );
    kill_all(&env.manager).await;
}

/// The host's resources once the warm network pool has refilled (each pooled namespace
/// holds descriptors, and the pool refills in the background after a run of creates).
async fn settled(env: &ManagerEnv) -> HostResources {
    let mut last = HostResources::count(&env.paths.cgroup_groups());
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = HostResources::count(&env.paths.cgroup_groups());
        if now.open_fds == last.open_fds {
            return now;
        }
        last = now;
    }
    last
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "privileged: creates 1000 sandboxes in sequence"]
async fn test_thousand_cycles_leave_no_resource_behind() {
    let env = env().await;
    // Warm up once so lazily created process-wide state (thread pools, the database) is
    // counted in the baseline.
    let warm = env.manager.create(base()).await.unwrap();
    env.manager
        .exec(&warm.id, ExecRequest::new(["/bin/true"]))
        .await
        .unwrap();
    env.manager.kill(&warm.id).await.unwrap();
    let before = settled(&env).await;

    for _ in 0..1000 {
        let sandbox = env.manager.create(base()).await.unwrap();
        let outcome = env
            .manager
            .exec(&sandbox.id, ExecRequest::new(["/bin/true"]))
            .await
            .unwrap();
        assert!(outcome.status.success());
        env.manager.kill(&sandbox.id).await.unwrap();
    }

    let after = settled(&env).await;
    assert_eq!(after.mounts, before.mounts, "mounts");
    assert_eq!(after.cgroups, 0, "cgroups");
    assert_eq!(after.loop_devices, before.loop_devices, "loop devices");
    assert_eq!(after.open_fds, before.open_fds, "fds");
    // Other workloads on the host may start or end processes meanwhile; a leak of one per
    // cycle would be 1000.
    assert!(
        after.processes <= before.processes + 5,
        "processes {before:?} -> {after:?}"
    );
    assert!(
        after.namespaces <= before.namespaces + 10,
        "namespaces {before:?} -> {after:?}"
    );
    let storage = std::fs::read_dir(env.paths.data_dir.join("storage/sandboxes"))
        .unwrap()
        .count();
    let run = std::fs::read_dir(env.paths.data_dir.join("run"))
        .unwrap()
        .count();
    assert_eq!((storage, run), (0, 0), "sandbox directories left behind");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "privileged: creates sandboxes with namespaces, overlay mounts and cgroups"]
async fn test_bad_input_gets_typed_errors_and_leaves_nothing() {
    let env = env().await;
    let cases = [
        (
            SandboxSpec::new("no-such-template".parse().unwrap()),
            ErrorKind::NotFound,
            "template no-such-template not found",
        ),
        (
            SandboxSpec {
                memory_mb: 0,
                ..base()
            },
            ErrorKind::Invalid,
            "invalid sandbox spec",
        ),
        (
            SandboxSpec {
                memory_mb: u32::MAX,
                ..base()
            },
            ErrorKind::Invalid,
            "invalid sandbox spec",
        ),
        (
            SandboxSpec { vcpus: 0, ..base() },
            ErrorKind::Invalid,
            "invalid sandbox spec",
        ),
        (
            SandboxSpec {
                vcpus: 4096,
                ..base()
            },
            ErrorKind::Invalid,
            "invalid sandbox spec",
        ),
    ];
    for (spec, kind, message) in cases {
        let err = env.manager.create(spec).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{err:?}");
        assert!(err.to_string().contains(message), "{err}");
    }
    assert!("../etc".parse::<coppice_core::SandboxId>().is_err());
    let unknown: coppice_core::SandboxId = "doesnotexist".parse().unwrap();
    assert_eq!(
        env.manager.kill(&unknown).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    let storage = std::fs::read_dir(env.paths.data_dir.join("storage/sandboxes"))
        .unwrap()
        .count();
    let run = std::fs::read_dir(env.paths.data_dir.join("run"))
        .unwrap()
        .count();
    assert_eq!((storage, run), (0, 0));
    assert_eq!(HostResources::count(&env.paths.cgroup_groups()).cgroups, 0);
}

struct Daemon {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Daemon {
    fn start(paths: &HarnessPaths) -> Self {
        let mut child = Command::new(DAEMON)
            .arg(&paths.data_dir)
            .arg(&paths.group)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn ask(&mut self, command: &str) -> serde_json::Value {
        writeln!(self.stdin, "{command}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }
}

/// Kills whatever sandboxes a daemon left in `paths`, even when the test failed half-way.
struct KillLeftovers(HarnessPaths);

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        let mut daemon = Daemon::start(&self.0);
        let listed = daemon.ask("list");
        for id in listed["ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
        {
            daemon.ask(&format!("kill {id}"));
        }
        drop(daemon.stdin);
        let _ = daemon.child.wait();
        self.0.remove_groups();
    }
}

#[test]
#[ignore = "privileged: creates sandboxes and SIGKILLs a manager process"]
fn test_sigkill_of_daemon_loses_no_running_sandbox() {
    coppice_core::require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let paths = HarnessPaths::new(dir.path());
    let _cleanup = KillLeftovers(paths.clone());
    let mut daemon = Daemon::start(&paths);
    let ids: Vec<String> = (0..3)
        .map(|_| daemon.ask("create")["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &ids {
        let answer = daemon.ask(&format!(
            "exec {id} echo data-{id} > /root/file; sleep 600 >/dev/null 2>&1 &"
        ));
        assert_eq!(answer["ok"], true, "{answer}");
    }

    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    let mut restarted = Daemon::start(&paths);

    let listed = restarted.ask("list");
    let mut listed: Vec<String> = listed["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(listed, expected);
    for id in &ids {
        let answer = restarted.ask(&format!("exec {id} cat /root/file; pgrep -c sleep"));
        assert_eq!(answer["stdout"], format!("data-{id}\n1\n"), "{answer}");
    }
    drop(restarted.stdin);
    restarted.child.wait().unwrap();
}
