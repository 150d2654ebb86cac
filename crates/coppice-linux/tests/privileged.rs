//! Tests that create real namespaces, mounts and cgroups. Linux only, root only; run with
//! `COPPICE_PRIVILEGED_TESTS=1 cargo test -p coppice-linux --test privileged -- --ignored`.
#![cfg(target_os = "linux")]
// Test helpers outside `#[test]` functions unwrap too: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use coppice_core::SandboxId;
use coppice_core::exec::{ExecOutcome, ExecRequest, ExecUser, ExitStatus};
use coppice_core::net::NetAttachment;
use coppice_core::runtime::{RootUse, Runtime, RuntimeSpec};
use coppice_core::storage::{BindMount, RootFs};
use coppice_linux::cgroup::CgroupConfig;
use coppice_linux::{IdMap, InitCommand, NamespaceRuntime, NamespaceRuntimeConfig, RealNsSys};

const ROOT_UID: u32 = 200_000;

struct Host {
    dir: tempfile::TempDir,
    runtime: NamespaceRuntime<RealNsSys>,
    lower: PathBuf,
    group: String,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Host {
    fn new() -> Self {
        coppice_core::require_privileged!();
        let dir = tempfile::tempdir().unwrap();
        let lower = dir.path().join("lower");
        build_template(&lower);
        let group = format!(
            "coppice-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut config = NamespaceRuntimeConfig::new(
            dir.path().join("run"),
            InitCommand::binary(env!("CARGO_BIN_EXE_coppice-init").into()),
        );
        config.cgroup = CgroupConfig {
            group: group.clone(),
            ..CgroupConfig::default()
        };
        config.id_map = IdMap {
            host_uid_base: ROOT_UID,
            host_gid_base: ROOT_UID,
            count: 65_536,
        };
        config.criu = Some(criu());
        let runtime = NamespaceRuntime::new(config).unwrap();
        Self {
            dir,
            runtime,
            lower,
            group,
        }
    }

    fn sandbox(&self, memory_mb: u32, max_pids: u32) -> SandboxId {
        let id: SandboxId = format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed))
            .parse()
            .unwrap();
        let base = self.dir.path().join("sandboxes").join(id.as_str());
        let (upper, work) = (base.join("upper"), base.join("work"));
        fs::create_dir_all(&upper).unwrap();
        fs::create_dir_all(&work).unwrap();
        chown(&upper, Some(ROOT_UID), Some(ROOT_UID)).unwrap();
        let root = RootFs::Overlay {
            lower: vec![self.lower.clone()],
            upper,
            work,
            binds: vec![BindMount {
                source: "/usr".into(),
                target: "/usr".into(),
                read_only: true,
            }],
        };
        let spec = RuntimeSpec {
            defaults: coppice_core::runtime::ProcessDefaults::default(),
            hostname: id.to_string(),
            vcpus: 1,
            memory_mb,
            max_pids,
            env: vec![("SANDBOX_VAR".into(), "present".into())],
            network: NetAttachment::LoopbackOnly,
            volumes: Vec::new(),
            root_use: RootUse::Fresh,
        };
        self.runtime.create(&id, &spec, &root).unwrap();
        self.runtime.start(&id).unwrap();
        id
    }

    fn sh(&self, id: &SandboxId, script: &str) -> ExecOutcome {
        let request = ExecRequest {
            timeout: Some(Duration::from_secs(20)),
            ..ExecRequest::new(["/bin/sh", "-c", script])
        };
        self.runtime.exec(id, &request).unwrap()
    }

    /// Removes the (empty) cgroups of sandbox `id`, as a restart of the host would.
    fn remove_cgroups(&self, id: &SandboxId) {
        for controller in ["memory", "pids", "cpu", "freezer"] {
            let dir = Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(own_cgroup(controller).trim_start_matches('/'))
                .join(&self.group)
                .join(id.as_str());
            fs::remove_dir(&dir).unwrap_or_else(|e| panic!("rmdir {}: {e}", dir.display()));
        }
        let unified = Path::new("/sys/fs/cgroup/unified")
            .join(&self.group)
            .join(id.as_str());
        let _ = fs::remove_dir(unified);
    }

    fn group_dirs_exist(&self) -> bool {
        fs::read_dir("/sys/fs/cgroup/pids")
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy() == self.group)
            && fs::read_dir(format!("/sys/fs/cgroup/pids/{}", self.group))
                .unwrap()
                .flatten()
                .any(|e| e.path().is_dir())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Ok(found) = self.runtime.list() {
            for sandbox in found {
                let _ = self.runtime.destroy(&sandbox.id);
            }
        }
        for controller in ["memory", "pids", "cpu", "freezer"] {
            let own = own_cgroup(controller);
            let _ = fs::remove_dir(
                Path::new("/sys/fs/cgroup")
                    .join(controller)
                    .join(own.trim_start_matches('/'))
                    .join(&self.group),
            );
        }
        let _ = fs::remove_dir(Path::new("/sys/fs/cgroup/unified").join(&self.group));
    }
}

/// The CRIU the test command installs (`COPPICE_CRIU` overrides it).
fn criu() -> PathBuf {
    std::env::var_os("COPPICE_CRIU")
        .map_or_else(|| PathBuf::from("/usr/local/sbin/criu"), PathBuf::from)
}

fn own_cgroup(controller: &str) -> String {
    fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_owned())
        })
        .unwrap_or_else(|| "/".into())
}

/// A minimal template: usr-merge links, mount points and an /etc, owned by sandbox root.
fn build_template(lower: &Path) {
    for dir in [
        "usr",
        "proc",
        "dev",
        "tmp",
        "run",
        "root",
        "home/user",
        "etc",
        ".oldroot",
        "mnt",
    ] {
        fs::create_dir_all(lower.join(dir)).unwrap();
        chown(lower.join(dir), Some(ROOT_UID), Some(ROOT_UID)).unwrap();
    }
    chown(lower, Some(ROOT_UID), Some(ROOT_UID)).unwrap();
    chown(
        lower.join("home/user"),
        Some(ROOT_UID + 1000),
        Some(ROOT_UID + 1000),
    )
    .unwrap();
    fs::set_permissions(lower.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    for link in ["bin", "lib", "lib64", "sbin"] {
        if Path::new("/usr").join(link).exists() {
            symlink(format!("usr/{link}"), lower.join(link)).unwrap();
        }
    }
    fs::write(
        lower.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\n",
    )
    .unwrap();
    fs::write(lower.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
    for file in ["etc/passwd", "etc/group"] {
        chown(lower.join(file), Some(ROOT_UID), Some(ROOT_UID)).unwrap();
    }
}

fn stdout(outcome: &ExecOutcome) -> String {
    String::from_utf8_lossy(&outcome.stdout).into_owned()
}

#[test]
#[ignore = "privileged: creates namespaces, an overlay root and cgroups"]
fn test_exec_runs_command_as_sandbox_root_with_env() {
    let host = Host::new();
    let id = host.sandbox(128, 128);

    let outcome = host.sh(&id, "id -u; hostname; echo $SANDBOX_VAR; pwd");

    assert_eq!(outcome.status, ExitStatus::Code(0), "{outcome:?}");
    assert_eq!(stdout(&outcome), format!("0\n{id}\npresent\n/root\n"));
}

#[test]
#[ignore = "privileged: creates namespaces, an overlay root and cgroups"]
fn test_exec_as_user_runs_as_uid_1000_in_home() {
    let host = Host::new();
    let id = host.sandbox(128, 128);
    let request = ExecRequest::new(["/bin/sh", "-c", "id -u; pwd; touch ~/f && echo ok"])
        .as_user(ExecUser::User);

    let outcome = host.runtime.exec(&id, &request).unwrap();

    assert_eq!(stdout(&outcome), "1000\n/home/user\nok\n", "{outcome:?}");
}

#[test]
#[ignore = "privileged: creates namespaces, an overlay root and cgroups"]
fn test_isolation_host_processes_are_invisible() {
    let host = Host::new();
    let id = host.sandbox(128, 128);

    let outcome = host.sh(&id, "ls /proc | grep -c '^[0-9]*$'; cat /proc/1/comm");

    let lines: Vec<String> = stdout(&outcome).lines().map(str::to_owned).collect();
    let visible: usize = lines[0].parse().unwrap();
    assert!(visible <= 4, "sandbox sees {visible} processes");
    assert_eq!(lines[1], "coppice-init");
}

#[test]
#[ignore = "privileged: creates namespaces, an overlay root and cgroups"]
fn test_isolation_host_marker_file_is_unreadable() {
    let host = Host::new();
    let marker = host.dir.path().join("host-marker");
    fs::write(&marker, "host-secret-7731").unwrap();
    let id = host.sandbox(128, 128);

    let script = format!(
        "cat {m} /.oldroot{m} /proc/1/root{m} 2>/dev/null; cat /proc/1/cwd{m} 2>/dev/null; ls /.oldroot 2>/dev/null | wc -l",
        m = marker.display()
    );
    let outcome = host.sh(&id, &script);

    assert!(
        !stdout(&outcome).contains("host-secret-7731"),
        "{outcome:?}"
    );
}

#[test]
#[ignore = "privileged: creates namespaces, an overlay root and cgroups"]
fn test_isolation_usr_is_read_only() {
    let host = Host::new();
    let id = host.sandbox(128, 128);

    let outcome = host.sh(&id, "touch /usr/coppice-probe 2>&1");

    assert_ne!(outcome.status, ExitStatus::Code(0));
    assert!(
        stdout(&outcome).contains("Read-only file system"),
        "{outcome:?}"
    );
}

#[test]
#[ignore = "privileged: creates namespaces, an overlay root and cgroups"]
fn test_isolation_mount_unshare_rawsocket_module_cgroup_fail() {
    let host = Host::new();
    let id = host.sandbox(256, 128);
    let checks = [
        ("mount", "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m"),
        ("unshare", "unshare -U -r true"),
        ("unshare-mount", "unshare -m true"),
        (
            "raw socket",
            "/usr/bin/python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)'",
        ),
        (
            "module load",
            "/usr/bin/python3 -c 'import ctypes,sys; l=ctypes.CDLL(None, use_errno=True); sys.exit(0 if l.syscall(175, None, 0, b\"\") == 0 else 1)'",
        ),
        ("host cgroups", "ls /sys/fs/cgroup/memory"),
        (
            "cgroup mount",
            "mkdir -p /tmp/cg && mount -t cgroup -o memory none /tmp/cg",
        ),
        ("sysctl", "echo 1 > /proc/sys/net/ipv4/ip_forward"),
        ("hostname", "hostname evil"),
    ];
    for (name, script) in checks {
        let outcome = host.sh(&id, script);
        assert_ne!(
            outcome.status,
            ExitStatus::Code(0),
            "{name} succeeded inside the sandbox: {outcome:?}"
        );
    }
}

#[test]
#[ignore = "privileged: creates namespaces, an overlay root and cgroups"]
fn test_isolation_sandbox_root_is_unprivileged_on_host() {
    let host = Host::new();
    let id = host.sandbox(128, 128);
    host.sh(&id, "sleep 30 >/dev/null 2>&1 &");

    let pids = fs::read_to_string(format!(
        "/sys/fs/cgroup/pids/{}/{id}/cgroup.procs",
        host.group
    ))
    .unwrap();
    let uids: Vec<u32> = pids
        .lines()
        .map(|pid| {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
            line.split_whitespace().nth(2).unwrap().parse().unwrap()
        })
        .collect();

    assert!(uids.len() >= 2, "{uids:?}");
    assert!(uids.iter().all(|uid| *uid >= ROOT_UID), "{uids:?}");
}

#[test]
#[ignore = "privileged: creates namespaces, an overlay root and cgroups"]
fn test_isolation_two_sandboxes_cannot_see_each_others_files() {
    let host = Host::new();
    let a = host.sandbox(128, 128);
    let b = host.sandbox(128, 128);
    host.sh(&a, "echo a-secret > /root/secret; echo a-tmp > /tmp/secret");

    let outcome = host.sh(
        &b,
        "cat /root/secret /tmp/secret 2>&1; find / -xdev -name secret 2>/dev/null",
    );

    assert!(
        !stdout(&outcome).contains("a-secret") && !stdout(&outcome).contains("a-tmp"),
        "{outcome:?}"
    );
    assert_eq!(stdout(&host.sh(&a, "cat /root/secret")), "a-secret\n");
}

#[test]
#[ignore = "privileged: creates namespaces, an overlay root and cgroups"]
fn test_limits_memory_hog_is_oom_killed() {
    let host = Host::new();
    let id = host.sandbox(64, 128);

    let hog = ExecRequest::new([
        "/usr/bin/python3",
        "-c",
        "b = bytearray(256 << 20); print(len(b))",
    ]);
    let outcome = host.runtime.exec(&id, &hog).unwrap();

    assert_eq!(outcome.status, ExitStatus::Signal(9), "{outcome:?}");
    assert!(host.runtime.probe(&id).unwrap().oom_kills >= 1);
    assert_eq!(host.sh(&id, "echo alive").status, ExitStatus::Code(0));
}

#[test]
#[ignore = "privileged: creates namespaces, an overlay root and cgroups"]
fn test_limits_fork_bomb_is_contained_by_pids_limit() {
    let host = Host::new();
    let id = host.sandbox(256, 64);
    let other = host.sandbox(128, 64);
    let bomb = ExecRequest {
        timeout: Some(Duration::from_secs(3)),
        ..ExecRequest::new(["/bin/bash", "-c", "f(){ f | f & }; f; sleep 10"])
    };

    let outcome = host.runtime.exec(&id, &bomb).unwrap();
    let probe = host.runtime.probe(&id).unwrap();
    let healthy = host.sh(&other, "echo responsive");

    assert!(
        outcome.timed_out || outcome.status != ExitStatus::Code(0),
        "{outcome:?}"
    );
    assert!(probe.pids <= 64, "{probe:?}");
    assert_eq!(stdout(&healthy), "responsive\n");
    host.runtime.destroy(&id).unwrap();
    assert!(!host.runtime.list().unwrap().iter().any(|s| s.id == id));
}

#[test]
#[ignore = "privileged: creates namespaces, an overlay root and cgroups"]
fn test_destroy_removes_cgroups_run_dir_and_processes() {
    let host = Host::new();
    let id = host.sandbox(128, 128);
    host.sh(&id, "sleep 100 >/dev/null 2>&1 &");

    host.runtime.destroy(&id).unwrap();

    assert!(!host.group_dirs_exist());
    assert!(!host.dir.path().join("run").join(id.as_str()).exists());
    assert!(host.runtime.list().unwrap().is_empty());
}

#[test]
#[ignore = "privileged: creates namespaces, an overlay root and cgroups"]
fn test_exec_missing_program_is_refused_and_sandbox_keeps_serving() {
    let host = Host::new();
    let id = host.sandbox(128, 128);

    let err = host
        .runtime
        .exec(&id, &ExecRequest::new(["/nonexistent"]))
        .unwrap_err();

    assert!(err.to_string().contains("invalid command"), "{err}");
    assert_eq!(stdout(&host.sh(&id, "echo still")), "still\n");
}

#[test]
#[ignore = "privileged: creates namespaces, an overlay root and cgroups"]
fn test_exec_timeout_kills_command_and_reports_it() {
    let host = Host::new();
    let id = host.sandbox(128, 128);
    let request = ExecRequest {
        timeout: Some(Duration::from_millis(300)),
        ..ExecRequest::new(["/bin/sleep", "30"])
    };

    let outcome = host.runtime.exec(&id, &request).unwrap();

    assert!(outcome.timed_out, "{outcome:?}");
    assert_eq!(outcome.status, ExitStatus::Signal(9));
}

#[test]
#[ignore = "privileged: creates namespaces, an overlay root and cgroups"]
fn test_exec_caller_hanging_up_kills_the_command() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use coppice_linux::protocol::{ControlRequest, ExecIdentity, write_frame};

    let host = Host::new();
    let id = host.sandbox(128, 128);
    let socket = host
        .dir
        .path()
        .join("run")
        .join(id.as_str())
        .join("port")
        .join("control.sock");
    let mut stream = UnixStream::connect(&socket).unwrap();
    let request = ControlRequest::Exec {
        argv: vec!["/bin/sleep".into(), "300".into()],
        env: Vec::new(),
        cwd: None,
        identity: ExecIdentity {
            look_up: false,
            uid: 0,
            gid: 0,
            home: "/root".into(),
            name: "root".into(),
        },
        timeout_ms: None,
        stdin_len: 0,
    };
    write_frame(&mut stream, &request, &[]).unwrap();
    stream.flush().unwrap();
    assert!(eventually(
        || stdout(&host.sh(&id, "pgrep -c -x sleep")) == "1\n"
    ));

    drop(stream);

    assert!(eventually(
        || stdout(&host.sh(&id, "pgrep -c -x sleep")) == "0\n"
    ));
}

/// Polls `condition` for up to five seconds.
fn eventually(condition: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Pids of this process's children that are init zygotes.
fn zygotes() -> Vec<i32> {
    let own = std::process::id().to_string();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let parent = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1));
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            // Sandbox inits are forks of the zygote too, adopted by this process; they run as
            // the sandbox's root, the zygote as host root.
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let host_root = status
                .lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
            parent == Some(own.as_str())
                && host_root
                && cmdline.split(|b| *b == 0).any(|arg| arg == b"--zygote")
        })
        .collect()
}

#[test]
#[ignore = "privileged: creates namespaces, an overlay root and cgroups"]
fn test_start_after_the_init_zygote_died_makes_a_new_one() {
    let host = Host::new();
    let first = host.sandbox(128, 128);
    let before = zygotes();
    assert_eq!(before.len(), 1, "{before:?}");
    std::process::Command::new("kill")
        .args(["-9", &before[0].to_string()])
        .status()
        .unwrap();
    assert!(eventually(|| !zygotes().contains(&before[0])
        || fs::read_to_string(format!("/proc/{}/stat", before[0]))
            .unwrap_or_default()
            .contains(") Z")));

    let second = host.sandbox(128, 128);

    assert_eq!(stdout(&host.sh(&second, "echo new")), "new\n");
    assert_eq!(stdout(&host.sh(&first, "echo old")), "old\n");
}

/// The in-sandbox pid of a background loop that counts in a shell variable (memory only) and
/// writes each value to `/tmp/count`, plus a file on the root.
fn start_counter(host: &Host, id: &SandboxId) -> String {
    let started = host.sh(
        id,
        "echo kept > /root/file; \
         (i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.02; done) >/dev/null 2>&1 & \
         echo $!",
    );
    let pid = stdout(&started).trim().to_owned();
    assert!(eventually(|| count(host, id) >= 3), "the counter never ran");
    pid
}

fn count(host: &Host, id: &SandboxId) -> u64 {
    stdout(&host.sh(id, "cat /tmp/count 2>/dev/null"))
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
#[ignore = "privileged: checkpoints a real sandbox with CRIU"]
fn test_checkpoint_and_restore_keep_memory_files_and_processes_three_times() {
    let host = Host::new();
    assert!(
        criu().is_file(),
        "{} is missing: scripts/test.sh installs CRIU",
        criu().display()
    );
    let id = host.sandbox(256, 128);
    let counter = start_counter(&host, &id);

    for round in 0..3 {
        let before = count(&host, &id);
        host.runtime.checkpoint(&id).unwrap();
        assert!(host.runtime.has_checkpoint(&id));
        let alive = host.runtime.list().unwrap();
        assert!(
            alive
                .iter()
                .all(|sandbox| sandbox.id != id || !sandbox.alive),
            "round {round}: the checkpointed tree still runs: {alive:?}"
        );
        assert!(
            host.runtime
                .exec(&id, &ExecRequest::new(["/bin/true"]))
                .is_err()
        );
        if round == 1 {
            // As after a restart of the host: the sandbox's cgroups are gone.
            host.remove_cgroups(&id);
        }

        host.runtime.restore(&id).unwrap();

        assert!(
            !host.runtime.has_checkpoint(&id),
            "a restored checkpoint is consumed"
        );
        // The same process, counting on from its value in memory (a restarted loop would
        // start again at 1).
        assert!(
            eventually(|| count(&host, &id) > before),
            "round {round}: the counter did not go on from {before}"
        );
        let state = host.sh(
            &id,
            &format!(
                "test -d /proc/{counter} && echo same; cat /root/file; grep -cE ':(freezer|pids|memory):(/|.*/{id})$' /proc/self/cgroup"
            ),
        );
        // The restored tree is in the sandbox's own cgroups (its limits hold): seen from the
        // sandbox's cgroup namespace, whose root CRIU may place higher than the sandbox's.
        assert_eq!(stdout(&state), "same\nkept\n3\n", "round {round}");
    }
    host.runtime.destroy(&id).unwrap();
}

#[test]
#[ignore = "privileged: checkpoints a real sandbox with CRIU"]
fn test_checkpoint_refused_leaves_the_sandbox_running() {
    let host = Host::new();
    let id = host.sandbox(128, 128);
    // A process with a connection to a peer outside the sandbox (the control channel held
    // open from the host): CRIU refuses the dump, and the sandbox must go on untouched.
    let control = host
        .dir
        .path()
        .join("run")
        .join(id.as_str())
        .join("port/control.sock");
    let held = std::os::unix::net::UnixStream::connect(&control).unwrap();
    let error = host.runtime.checkpoint(&id).unwrap_err();
    assert!(error.to_string().contains("checkpoint"), "{error}");
    assert!(!host.runtime.has_checkpoint(&id));
    drop(held);
    assert_eq!(stdout(&host.sh(&id, "echo alive")), "alive\n");
}
