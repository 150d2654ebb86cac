//! JailRuntime over the recording fake: what create, start, exec, probe, destroy and list do
//! on the host, and that a failure at any step leaves nothing behind.

use std::collections::BTreeSet;
use std::os::unix::fs::FileTypeExt;

use coppice_core::exec::ExitStatus;
use coppice_core::runtime::RootUse;
use coppice_core::storage::BindMount;

use super::*;
use crate::sys::fake::FakeJailSys;

struct Fixture {
    dir: tempfile::TempDir,
    sys: Arc<FakeJailSys>,
    runtime: JailRuntime,
}

impl Fixture {
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn root_fs(&self) -> RootFs {
        RootFs::Directory {
            path: self.root(),
            binds: Vec::new(),
        }
    }

    /// Creates `sandbox` with loopback only and no volumes.
    fn create_plain(&self, sandbox: &SandboxId) {
        self.runtime
            .create(
                sandbox,
                &spec(NetAttachment::LoopbackOnly, vec![]),
                &self.root_fs(),
            )
            .unwrap();
    }

    fn run_dir_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.dir.path().join("run"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn restarted(&self) -> JailRuntime {
        JailRuntime::new(
            Arc::clone(&self.sys) as Arc<dyn JailSys>,
            config(self.dir.path()),
        )
        .unwrap()
    }
}

fn config(dir: &Path) -> JailRuntimeConfig {
    let mut config = JailRuntimeConfig::new(
        dir.join("run"),
        JailInitProgram {
            program: dir.join("bin/coppice-jail-init"),
            leading_args: Vec::new(),
        },
    );
    config.envd = Some(EnvdSettings::new(dir.join("bin/coppice-envd")));
    config.start_timeout = Duration::from_secs(5);
    config
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("root/etc")).unwrap();
    fs::create_dir_all(dir.path().join("root/dev")).unwrap();
    fs::create_dir_all(dir.path().join("bin")).unwrap();
    fs::write(dir.path().join("bin/coppice-jail-init"), "").unwrap();
    fs::write(dir.path().join("bin/coppice-envd"), "").unwrap();
    let sys = Arc::new(FakeJailSys::default());
    let runtime =
        JailRuntime::new(Arc::clone(&sys) as Arc<dyn JailSys>, config(dir.path())).unwrap();
    Fixture { dir, sys, runtime }
}

fn id(text: &str) -> SandboxId {
    text.parse().unwrap()
}

fn vnet() -> NetAttachment {
    NetAttachment::Vnet {
        interface: "cpj7".into(),
        mac: "02:c0:00:00:00:07".into(),
        addresses: vec![("10.213.0.9".parse().unwrap(), 20)],
        gateways: vec!["10.213.0.1".parse().unwrap()],
        dns: vec!["10.213.0.1".parse().unwrap()],
    }
}

fn spec(network: NetAttachment, volumes: Vec<BindMount>) -> RuntimeSpec {
    RuntimeSpec {
        defaults: coppice_core::runtime::ProcessDefaults::default(),
        hostname: "a1".into(),
        vcpus: 1,
        memory_mb: 256,
        max_pids: 128,
        env: vec![("LANG".into(), "C.UTF-8".into())],
        network,
        volumes,
        root_use: RootUse::Fresh,
    }
}

fn volume(target: &str) -> BindMount {
    BindMount {
        source: "/pool/volumes/v1".into(),
        target: target.into(),
        read_only: false,
    }
}

fn nothing_held(sys: &FakeJailSys) -> bool {
    sys.held() == (vec![], vec![], vec![])
}

#[test]
fn test_create_makes_the_jail_mounts_volumes_and_hands_over_the_link() {
    let f = fixture();
    let sandbox = id("a1");
    let spec = spec(vnet(), vec![volume("/home/user/data")]);
    f.runtime.create(&sandbox, &spec, &f.root_fs()).unwrap();

    let calls = f.sys.calls();
    let root = f.root();
    let expected = [
        "jail_create coppice-a1 (14 params)".to_owned(),
        "rctl -a jail:coppice-a1:memoryuse:deny=268435456".to_owned(),
        format!(
            "mount nullfs rw /pool/volumes/v1 {}",
            root.join("home/user/data").display()
        ),
        "ifconfig -j coppice-a1 lo0 inet 127.0.0.1/8 up".to_owned(),
        "ifconfig cpj7 vnet coppice-a1".to_owned(),
        "ifconfig -j coppice-a1 eth0 inet 10.213.0.9/20".to_owned(),
        "route -j coppice-a1 add -inet default 10.213.0.1".to_owned(),
    ];
    let mut position = 0;
    for call in expected {
        let found = calls[position..]
            .iter()
            .position(|c| *c == call)
            .unwrap_or_else(|| panic!("{call:?} missing, or out of order, in {calls:#?}"));
        position += found + 1;
    }
    let (jails, mounts, rules) = f.sys.held();
    assert_eq!(jails, ["coppice-a1"]);
    assert_eq!(
        mounts.into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([root.join("dev"), root.join("home/user/data")])
    );
    assert_eq!(rules.len(), 3);
    assert_eq!(
        fs::read_to_string(root.join("etc/resolv.conf")).unwrap(),
        "nameserver 10.213.0.1\n"
    );
    assert!(matches!(
        f.runtime.create(&sandbox, &spec, &f.root_fs()),
        Err(RuntimeError::AlreadyExists { .. })
    ));
}

#[test]
fn test_start_hands_the_init_its_sockets_and_exec_reaches_it() {
    let f = fixture();
    let sandbox = id("a1");
    f.create_plain(&sandbox);
    let endpoints = f.runtime.start(&sandbox).unwrap();
    assert_eq!(
        endpoints.control_socket,
        f.dir.path().join("run/a1/control.sock")
    );
    assert!(
        f.sys
            .calls()
            .contains(&"start_init 1 coppice-jail-init".to_owned())
    );
    let init = f
        .sys
        .init_config(1)
        .expect("the init got its launch message");
    assert_eq!(init.sandbox_id, "a1");
    assert_eq!(init.env, [("LANG".to_owned(), "C.UTF-8".to_owned())]);
    let envd_args = init.envd_args.expect("envd runs");
    assert!(
        envd_args
            .windows(2)
            .any(|pair| pair == ["--sandbox-id", "a1"]),
        "{envd_args:?}"
    );

    let outcome = f
        .runtime
        .exec(&sandbox, &ExecRequest::new(["echo", "hello"]))
        .unwrap();
    assert_eq!(outcome.status, ExitStatus::Code(0));
    assert_eq!(outcome.stdout, b"echo hello");

    f.sys
        .set_usage("coppice-a1", "memoryuse=52428800\nmaxproc=3\n");
    let probe = f.runtime.probe(&sandbox).unwrap();
    assert!(probe.alive);
    assert_eq!((probe.memory_bytes, probe.pids), (52_428_800, 3));
    assert_eq!(
        f.runtime.root_dir(&sandbox).unwrap().path(),
        f.root().as_path()
    );
}

#[test]
fn test_envd_gets_the_templates_default_user_and_directory() {
    let f = fixture();
    let sandbox = id("a1");
    let mut with_defaults = spec(NetAttachment::LoopbackOnly, vec![]);
    with_defaults.defaults = coppice_core::runtime::ProcessDefaults {
        user: Some("app".into()),
        workdir: Some("/srv".into()),
    };
    f.runtime
        .create(&sandbox, &with_defaults, &f.root_fs())
        .unwrap();
    f.runtime.start(&sandbox).unwrap();
    let envd_args = f.sys.init_config(1).unwrap().envd_args.unwrap();
    assert!(
        envd_args
            .windows(2)
            .any(|pair| pair == ["--default-user", "app"])
            && envd_args
                .windows(2)
                .any(|pair| pair == ["--default-workdir", "/srv"]),
        "{envd_args:?}"
    );
}

#[test]
fn test_an_init_that_fails_is_reported_with_its_message() {
    let f = fixture();
    let sandbox = id("a1");
    f.create_plain(&sandbox);
    f.sys.init_fails("cannot start envd: no such file");
    let error = f.runtime.start(&sandbox).unwrap_err();
    let chain = coppice_core::manager::error_chain(&error);
    assert!(chain.contains("cannot start envd"), "{chain}");
}

#[test]
fn test_a_failure_at_any_create_step_leaves_nothing_behind() {
    let steps = [
        ("mount_devfs", 0),
        ("jail_create", 0),
        ("rctl_add", 1),
        ("mount_nullfs", 0),
        ("run", 0),
        ("run", 1),
        ("run", 3),
    ];
    for (operation, after) in steps {
        let f = fixture();
        let sandbox = id("a1");
        let spec = spec(vnet(), vec![volume("/data")]);
        f.sys.fail(operation, after);
        let error = f.runtime.create(&sandbox, &spec, &f.root_fs()).unwrap_err();
        assert!(
            matches!(error, RuntimeError::Backend { .. }),
            "{operation} #{after}: {error:?}"
        );
        assert!(
            nothing_held(&f.sys),
            "{operation} #{after} left {:?}",
            f.sys.held()
        );
        assert!(f.run_dir_entries().is_empty(), "{operation} #{after}");
        f.runtime.create(&sandbox, &spec, &f.root_fs()).unwrap();
    }
}

#[test]
fn test_destroy_reclaims_the_link_and_removes_everything() {
    let f = fixture();
    let sandbox = id("a1");
    f.runtime
        .create(&sandbox, &spec(vnet(), vec![volume("/data")]), &f.root_fs())
        .unwrap();
    f.runtime.start(&sandbox).unwrap();
    f.runtime.destroy(&sandbox).unwrap();

    let calls = f.sys.calls();
    let reclaim = calls
        .iter()
        .position(|c| c == "ifconfig -j coppice-a1 eth0 name cpj7")
        .expect("eth0 renamed back");
    let remove = calls
        .iter()
        .position(|c| c.starts_with("jail_remove"))
        .expect("jail removed");
    assert!(reclaim < remove, "{calls:#?}");
    assert!(nothing_held(&f.sys), "{:?}", f.sys.held());
    assert!(f.run_dir_entries().is_empty());
    f.runtime.destroy(&sandbox).unwrap();
    assert!(matches!(
        f.runtime.probe(&sandbox),
        Err(RuntimeError::NotFound { .. })
    ));
    assert!(matches!(
        f.runtime.exec(&sandbox, &ExecRequest::new(["true"])),
        Err(RuntimeError::NotFound { .. })
    ));
}

#[test]
fn test_a_restarted_runtime_lists_its_sandboxes_and_sees_dead_jails() {
    let f = fixture();
    for name in ["a1", "b2"] {
        f.create_plain(&id(name));
    }
    let restarted = f.restarted();
    assert_eq!(
        restarted.list().unwrap(),
        [
            RuntimeSandbox {
                id: id("a1"),
                alive: true
            },
            RuntimeSandbox {
                id: id("b2"),
                alive: true
            },
        ]
    );
    // The jail vanished behind the daemon's back (e.g. a host reboot): listed as dead,
    // probed as dead, and still destroyable.
    f.sys.jail_remove(2).unwrap();
    assert!(!restarted.list().unwrap()[1].alive);
    assert!(!restarted.probe(&id("b2")).unwrap().alive);
    restarted.destroy(&id("b2")).unwrap();
    assert_eq!(f.run_dir_entries(), ["a1"]);
}

#[test]
fn test_roots_and_networks_a_jail_cannot_use_are_refused_before_anything_is_made() {
    let f = fixture();
    let overlay = RootFs::Overlay {
        lower: vec![],
        upper: "/u".into(),
        work: "/w".into(),
        binds: vec![],
    };
    let loopback = spec(NetAttachment::LoopbackOnly, vec![]);
    assert!(matches!(
        f.runtime.create(&id("a1"), &loopback, &overlay),
        Err(RuntimeError::Unsupported { .. })
    ));
    let disk = RootFs::Disk {
        device: "/dev/zvol/zroot/coppice/sandboxes/a1".into(),
    };
    assert!(matches!(
        f.runtime.create(&id("a1"), &loopback, &disk),
        Err(RuntimeError::Unsupported { .. })
    ));
    let namespace = spec(
        NetAttachment::Namespace {
            user: None,
            path: "/run/netns/x".into(),
            addresses: vec![],
            dns: vec![],
            restore_device: None,
        },
        vec![],
    );
    assert!(matches!(
        f.runtime.create(&id("a1"), &namespace, &f.root_fs()),
        Err(RuntimeError::Unsupported { .. })
    ));
    assert!(nothing_held(&f.sys));
    assert!(f.run_dir_entries().is_empty());
}

#[test]
fn test_a_volume_target_through_a_link_is_refused_and_nothing_stays() {
    let f = fixture();
    let outside = f.dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, f.root().join("home")).unwrap();
    let error = f
        .runtime
        .create(
            &id("a1"),
            &spec(NetAttachment::LoopbackOnly, vec![volume("/home/user")]),
            &f.root_fs(),
        )
        .unwrap_err();
    let chain = coppice_core::manager::error_chain(&error);
    assert!(chain.contains("is a link"), "{chain}");
    assert!(nothing_held(&f.sys));
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "nothing made outside"
    );

    for bad in ["relative", "/a/../../etc"] {
        assert!(volume_target(&f.root(), Path::new(bad)).is_err(), "{bad}");
    }
    assert_eq!(
        volume_target(&f.root(), Path::new("/x/./y")).unwrap(),
        f.root().join("x/y")
    );
}

#[test]
fn test_resolv_conf_is_never_written_through_a_link() {
    let f = fixture();
    let outside = f.dir.path().join("host-resolv.conf");
    fs::write(&outside, "host\n").unwrap();
    std::os::unix::fs::symlink(&outside, f.root().join("etc/resolv.conf")).unwrap();
    f.runtime
        .create(&id("a1"), &spec(vnet(), vec![]), &f.root_fs())
        .unwrap();
    assert_eq!(fs::read_to_string(&outside).unwrap(), "host\n");
}

#[test]
fn test_a_fifo_in_place_of_resolv_conf_does_not_hold_up_create() {
    let f = fixture();
    let fifo = f.root().join("etc/resolv.conf");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    f.runtime
        .create(&id("a1"), &spec(vnet(), vec![]), &f.root_fs())
        .unwrap();
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
}
