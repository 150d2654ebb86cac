//! Runtime tests over `FakeNsSys` and a fake cgroup tree; no root needed.

use std::path::Path;

use coppice_core::net::NetAttachment;
use coppice_core::runtime::RootUse;
use coppice_core::storage::BindMount;

use super::*;
use crate::cgroup::{CgroupConfig, V1_CONTROLLERS};
use crate::sys::FakeNsSys;

struct Fixture {
    _dir: tempfile::TempDir,
    sys: Arc<FakeNsSys>,
    runtime: NamespaceRuntime<FakeNsSys>,
    root: PathBuf,
}

fn fixture() -> Fixture {
    fixture_with(|_| {})
}

fn fixture_with(adjust: impl FnOnce(&mut NamespaceRuntimeConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    for controller in V1_CONTROLLERS {
        fs::create_dir_all(root.join("cg").join(controller)).unwrap();
    }
    fs::write(root.join("self-cgroup"), "4:memory:/own\n0::/\n").unwrap();
    let mut config = NamespaceRuntimeConfig::new(
        root.join("run"),
        crate::config::InitCommand::binary("/bin/coppice-init".into()),
    );
    config.cgroup = CgroupConfig {
        v1_root: root.join("cg"),
        unified_root: None,
        proc_self_cgroup: root.join("self-cgroup"),
        group: "coppice".into(),
    };
    adjust(&mut config);
    let sys = Arc::new(FakeNsSys::default());
    let runtime = NamespaceRuntime::with_sys(Arc::clone(&sys), config).unwrap();
    Fixture {
        _dir: dir,
        sys,
        runtime,
        root,
    }
}

fn spec() -> RuntimeSpec {
    RuntimeSpec {
        defaults: coppice_core::runtime::ProcessDefaults::default(),
        hostname: "h".into(),
        vcpus: 1,
        memory_mb: 128,
        max_pids: 64,
        env: vec![("A".into(), "1".into())],
        network: NetAttachment::LoopbackOnly,
        volumes: Vec::new(),
        root_use: RootUse::Fresh,
    }
}

fn rootfs() -> RootFs {
    RootFs::Overlay {
        lower: vec!["/layers/base".into()],
        upper: "/s/upper".into(),
        work: "/s/work".into(),
        binds: vec![BindMount {
            source: "/usr".into(),
            target: "/usr".into(),
            read_only: true,
        }],
    }
}

fn id(name: &str) -> SandboxId {
    name.parse().unwrap()
}

/// Creates and starts sandbox `name`.
fn started(fixture: &Fixture, name: &str) {
    fixture
        .runtime
        .create(&id(name), &spec(), &rootfs())
        .unwrap();
    fixture.runtime.start(&id(name)).unwrap();
}

fn read_init(fixture: &Fixture, id: &SandboxId) -> InitConfig {
    let bytes = fs::read(fixture.root.join("run").join(id.as_str()).join(INIT_CONFIG)).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn test_create_writes_limits_and_init_config() {
    let fixture = fixture();
    fixture
        .runtime
        .create(&id("a"), &spec(), &rootfs())
        .unwrap();

    let memory = fixture.root.join("cg/memory/own/coppice/a");
    assert_eq!(
        fs::read_to_string(memory.join("memory.limit_in_bytes")).unwrap(),
        "134217728"
    );
    assert_eq!(
        fs::read_to_string(fixture.root.join("cg/pids/coppice/a/pids.max")).unwrap(),
        "64"
    );
    let init = read_init(&fixture, &id("a"));
    assert_eq!(init.hostname, "h");
    assert_eq!(init.network, NetworkSetup::Loopback);
    assert_eq!(init.cgroup_procs.len(), V1_CONTROLLERS.len());
    assert!(init.mounts.iter().any(|m| matches!(m, crate::protocol::MountStep::Tmpfs { target, data, .. } if target == Path::new("tmp") && data.contains("size=128m"))));
}

#[test]
fn test_envd_is_launched_with_its_socket_in_the_port_and_the_sandbox_id() {
    let without = fixture();
    without
        .runtime
        .create(&id("a"), &spec(), &rootfs())
        .unwrap();
    assert_eq!(read_init(&without, &id("a")).envd, None);

    let fixture = fixture_with(|config| {
        let mut envd = crate::config::EnvdSettings::new("/bin/coppiced".into());
        envd.leading_args = vec!["__envd".into()];
        config.envd = Some(envd);
    });
    fixture
        .runtime
        .create(&id("a"), &spec(), &rootfs())
        .unwrap();
    let launch = read_init(&fixture, &id("a")).envd.unwrap();
    assert_eq!(launch.binary, PathBuf::from("/bin/coppiced"));
    assert_eq!(
        launch.args,
        [
            "__envd",
            "--listen-stdin",
            "--port",
            "49983",
            "--default-user",
            "user",
            "--sandbox-id",
            "a",
            "--state-file",
            "/run/coppice-envd/settings.json"
        ]
    );
    assert_eq!(
        fixture.runtime.endpoints(&id("a")).envd_socket,
        fixture.root.join("run/a/port").join(ENVD_SOCKET)
    );
}

#[test]
fn test_create_twice_is_already_exists() {
    let fixture = fixture();
    fixture
        .runtime
        .create(&id("a"), &spec(), &rootfs())
        .unwrap();
    let err = fixture
        .runtime
        .create(&id("a"), &spec(), &rootfs())
        .unwrap_err();
    assert!(matches!(err, RuntimeError::AlreadyExists { .. }));
}

#[test]
fn test_create_bad_root_is_invalid_and_leaves_nothing() {
    let fixture = fixture();
    let bad = RootFs::Overlay {
        lower: Vec::new(),
        upper: "/u".into(),
        work: "/w".into(),
        binds: Vec::new(),
    };
    let err = fixture.runtime.create(&id("a"), &spec(), &bad).unwrap_err();
    assert!(matches!(err, RuntimeError::Invalid { .. }), "{err:?}");
    assert!(!fixture.root.join("run/a").exists());
    assert!(!fixture.root.join("cg/memory/own/coppice/a").exists());
}

#[test]
fn test_a_vnet_interface_is_refused_and_leaves_nothing() {
    let fixture = fixture();
    let spec = RuntimeSpec {
        network: NetAttachment::Vnet {
            interface: "cpj1".into(),
            mac: "02:c0:ff:ee:00:01".into(),
            addresses: Vec::new(),
            gateways: Vec::new(),
            dns: Vec::new(),
        },
        ..spec()
    };
    let err = fixture
        .runtime
        .create(&id("a"), &spec, &rootfs())
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Unsupported { .. }), "{err:?}");
    assert!(!fixture.root.join("run/a").exists());
    assert!(!fixture.root.join("cg/memory/own/coppice/a").exists());
}

#[test]
fn test_a_disk_root_is_refused_and_leaves_nothing() {
    let fixture = fixture();
    let disk = RootFs::Disk {
        device: "/dev/zvol/zroot/coppice/sandboxes/a".into(),
    };
    let err = fixture
        .runtime
        .create(&id("a"), &spec(), &disk)
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Unsupported { .. }), "{err:?}");
    assert!(!fixture.root.join("run/a").exists());
    assert!(!fixture.root.join("cg/memory/own/coppice/a").exists());
}

#[test]
fn test_start_records_pid_and_probe_sees_it_alive() {
    let fixture = fixture();
    fixture
        .runtime
        .create(&id("a"), &spec(), &rootfs())
        .unwrap();

    let endpoints = fixture.runtime.start(&id("a")).unwrap();

    assert!(endpoints.control_socket.ends_with("a/port/control.sock"));
    fs::write(
        fixture
            .root
            .join("cg/memory/own/coppice/a/memory.oom_control"),
        "oom_kill 2\n",
    )
    .unwrap();
    fs::write(
        fixture
            .root
            .join("cg/memory/own/coppice/a/memory.usage_in_bytes"),
        "4096\n",
    )
    .unwrap();
    fs::write(fixture.root.join("cg/pids/coppice/a/pids.current"), "3\n").unwrap();
    let probe = fixture.runtime.probe(&id("a")).unwrap();
    assert_eq!(
        probe,
        Probe {
            alive: true,
            oom_kills: 2,
            memory_bytes: 4096,
            pids: 3
        }
    );
}

#[test]
fn test_start_unknown_sandbox_is_not_found() {
    let fixture = fixture();
    assert!(matches!(
        fixture.runtime.start(&id("x")),
        Err(RuntimeError::NotFound { .. })
    ));
}

#[test]
fn test_start_init_failure_is_reported_with_its_message() {
    let fixture = fixture();
    fixture
        .runtime
        .create(&id("a"), &spec(), &rootfs())
        .unwrap();
    fixture.sys.fail_next_spawn("mount overlay root: EINVAL");

    let err = fixture.runtime.start(&id("a")).unwrap_err();

    assert!(
        coppice_core::manager::error_chain(&err).contains("mount overlay root"),
        "{err:?}"
    );
}

#[test]
fn test_destroy_kills_init_and_removes_everything() {
    let fixture = fixture();
    started(&fixture, "a");

    fixture.runtime.destroy(&id("a")).unwrap();

    assert!(!fixture.sys.is_alive(1001));
    assert!(!fixture.root.join("run/a").exists());
    assert!(!fixture.root.join("cg/memory/own/coppice/a").exists());
    assert!(fixture.runtime.list().unwrap().is_empty());
}

#[test]
fn test_destroy_unknown_sandbox_succeeds() {
    let fixture = fixture();
    fixture.runtime.destroy(&id("nothing")).unwrap();
}

#[test]
fn test_list_reports_alive_and_dead_inits() {
    let fixture = fixture();
    for name in ["a", "b"] {
        started(&fixture, name);
    }
    fixture.sys.kill(1002).unwrap();

    let found = fixture.runtime.list().unwrap();

    let alive: Vec<(String, bool)> = found
        .into_iter()
        .map(|s| (s.id.to_string(), s.alive))
        .collect();
    assert_eq!(alive, [("a".to_owned(), true), ("b".to_owned(), false)]);
}

#[test]
fn test_exec_on_dead_sandbox_is_not_found() {
    let fixture = fixture();
    started(&fixture, "a");
    fixture.sys.kill(1001).unwrap();

    let err = fixture
        .runtime
        .exec(&id("a"), &ExecRequest::new(["true"]))
        .unwrap_err();

    assert!(matches!(err, RuntimeError::NotFound { .. }));
}

fn with_criu() -> Fixture {
    fixture_with(|config| config.criu = Some("/bin/criu".into()))
}

/// Starts sandbox `a`; its PID 1's pid.
fn started_a(fixture: &Fixture) -> i32 {
    started(fixture, "a");
    fixture.runtime.read_state(&id("a")).unwrap().unwrap().pid
}

#[test]
fn test_checkpoint_without_criu_is_unsupported_and_changes_nothing() {
    let fixture = fixture();
    let pid = started_a(&fixture);
    assert!(matches!(
        fixture.runtime.checkpoint(&id("a")),
        Err(RuntimeError::Unsupported { .. })
    ));
    assert!(fixture.sys.is_alive(pid));
    assert!(!fixture.runtime.has_checkpoint(&id("a")));
}

#[test]
fn test_checkpoint_dumps_pid_1_with_the_external_mounts_and_ends_the_run() {
    let fixture = with_criu();
    let pid = started_a(&fixture);

    fixture.runtime.checkpoint(&id("a")).unwrap();

    assert!(fixture.runtime.has_checkpoint(&id("a")));
    assert!(!fixture.sys.is_alive(pid));
    assert!(fixture.runtime.read_state(&id("a")).unwrap().is_none());
    let dump = fixture
        .sys
        .calls()
        .into_iter()
        .find_map(|call| match call {
            crate::sys::FakeNsCall::Criu(args) => Some(args),
            _ => None,
        })
        .unwrap();
    assert_eq!(dump[..3], ["dump", "--tree", pid.to_string().as_str()]);
    assert!(dump.iter().any(|arg| arg == "mnt[/.coppice]:m0"));
    assert!(dump.iter().any(|arg| arg == "mnt[/usr]:m2"));
    assert!(fixture.root.join("run/a/checkpoint/post-dump.sh").is_file());
}

#[test]
fn test_a_failed_dump_leaves_the_sandbox_running_without_a_checkpoint() {
    let fixture = with_criu();
    let pid = started_a(&fixture);
    fixture.sys.fail_next_criu();

    assert!(fixture.runtime.checkpoint(&id("a")).is_err());

    assert!(fixture.sys.is_alive(pid));
    assert!(!fixture.runtime.has_checkpoint(&id("a")));
    assert_eq!(
        fixture.runtime.read_state(&id("a")).unwrap().unwrap().pid,
        pid
    );
}

#[test]
fn test_restore_consumes_the_checkpoint_and_a_failed_one_keeps_it() {
    let fixture = with_criu();
    started_a(&fixture);
    fixture.runtime.checkpoint(&id("a")).unwrap();

    fixture.sys.fail_next_spawn("criu restore failed");
    assert!(fixture.runtime.restore(&id("a")).is_err());
    assert!(
        fixture.runtime.has_checkpoint(&id("a")),
        "kept after a failure"
    );

    let endpoints = fixture.runtime.restore(&id("a")).unwrap();
    assert!(endpoints.control_socket.ends_with("a/port/control.sock"));
    assert!(!fixture.runtime.has_checkpoint(&id("a")));
    let restored = fixture.runtime.read_state(&id("a")).unwrap().unwrap().pid;
    assert!(fixture.sys.is_alive(restored));
    assert!(matches!(
        fixture.runtime.restore(&id("a")),
        Err(RuntimeError::NotFound { .. })
    ));
}
