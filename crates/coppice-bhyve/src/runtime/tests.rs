//! VmRuntime over the recording fake of the host, with a real guest agent stand-in: the
//! control server behind a token listener on loopback, reached through the runtime's relays.

use std::net::TcpListener;
use std::thread;

use coppice_core::exec::ExitStatus;
use coppice_core::runtime::RootUse;
use coppice_core::storage::BindMount;

use super::*;
use coppice_init::server::ControlListener;

use crate::guest::TokenListener;
use crate::sys::fake::FakeBhyveSys;

const DISK: &str = "/dev/zvol/zroot/coppice/sandboxes/a1";
const ORIGIN: &str = "zroot/coppice/templates/vm@template";

struct Fixture {
    dir: tempfile::TempDir,
    sys: Arc<FakeBhyveSys>,
    runtime: VmRuntime,
    agent: TcpListener,
}

fn config(dir: &Path, agent_port: u16) -> VmRuntimeConfig {
    let mut config = VmRuntimeConfig::new(dir.join("run"));
    config.vars_template = dir.join("vars-template.fd");
    config.agent_port = agent_port;
    config.envd_port = 1;
    config.boot_timeout = Duration::from_secs(5);
    config
}

fn fixture_with(adjust: impl FnOnce(&mut VmRuntimeConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("vars-template.fd"), "vars").unwrap();
    let agent = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = config(dir.path(), agent.local_addr().unwrap().port());
    adjust(&mut config);
    let sys = Arc::new(FakeBhyveSys::default());
    let runtime = VmRuntime::new(Arc::clone(&sys) as Arc<dyn BhyveSys>, config).unwrap();
    Fixture {
        dir,
        sys,
        runtime,
        agent,
    }
}

fn fixture() -> Fixture {
    fixture_with(|_| {})
}

impl Fixture {
    fn run_dir_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.dir.path().join("run"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name != ".pool")
            .collect();
        names.sort();
        names
    }

    /// Serves as the guest agent whose seed is at `seed_disk`: a stand-in init behind the
    /// token listener the real agent uses, with the token the seed names.
    fn boot_guest(&self, seed_disk: &Path) {
        let seed = seed::decode(&fs::read(seed_disk).unwrap()).unwrap();
        let listener = self.agent.try_clone().unwrap();
        let tokens = TokenListener::start(listener, seed.token).unwrap();
        coppice_init::testing::serve(move || tokens.accept_one().map(std::fs::File::from));
    }
}

fn id(text: &str) -> SandboxId {
    text.parse().unwrap()
}

fn disk() -> RootFs {
    RootFs::Disk {
        device: DISK.into(),
    }
}

fn spec() -> RuntimeSpec {
    RuntimeSpec {
        defaults: coppice_core::runtime::ProcessDefaults::default(),
        hostname: "a1".into(),
        vcpus: 1,
        memory_mb: 256,
        max_pids: 128,
        env: vec![("MARK".into(), "seeded".into())],
        network: NetAttachment::Vnet {
            interface: "cpj7".into(),
            mac: "02:c0:ff:ee:00:07".into(),
            addresses: vec![("127.0.0.1".parse().unwrap(), 8)],
            gateways: vec!["127.0.0.1".parse().unwrap()],
            dns: vec![],
        },
        volumes: vec![],
        root_use: RootUse::Fresh,
    }
}

#[test]
fn test_a_vm_boots_with_its_seed_and_network_and_runs_commands() {
    let f = fixture();
    let sandbox = id("a1");
    f.runtime.create(&sandbox, &spec(), &disk()).unwrap();
    let home = f.dir.path().join("run/a1");
    let seed = seed::decode(&fs::read(home.join(SEED_FILE)).unwrap()).unwrap();
    assert_eq!(seed.sandbox_id, "a1");
    assert_eq!(seed.env, [("MARK".to_owned(), "seeded".to_owned())]);
    assert_eq!(seed.token.len(), 32);
    assert_eq!(
        seed.network.as_ref().map(|n| n.mac.as_str()),
        Some("02:c0:ff:ee:00:07")
    );
    assert_eq!(fs::read_to_string(home.join(VARS_FILE)).unwrap(), "vars");
    let node = netgraph::node_name("coppice-a1");
    let commands = f.sys.commands();
    assert!(
        commands[0].starts_with(&format!("ngctl -f - <<< mkpeer . bridge {node}b")),
        "{commands:?}"
    );
    assert_eq!(commands[1], "ifconfig cpj7 up");
    assert_eq!(
        commands[2],
        format!(
            "ngctl -f - <<< msg cpj7: setpromisc 1\nmsg cpj7: setautosrc 0\nconnect {node}: cpj7: link1 lower"
        )
    );

    f.boot_guest(&home.join(SEED_FILE));
    let endpoints = f.runtime.start(&sandbox).unwrap();
    assert_eq!(endpoints.control_socket, home.join("control.sock"));
    let bhyve = &f.sys.processes()[&1].argv;
    let argv = bhyve.join(" ");
    assert!(argv.contains(&format!("-s 2,virtio-blk,{DISK}")), "{argv}");
    assert!(
        argv.contains(&format!(
            "-s 3,virtio-net,netgraph,path={node}:,peerhook=link0"
        )),
        "{argv}"
    );
    assert!(
        argv.contains(&format!(
            "-s 6,virtio-blk,{},ro",
            home.join(SEED_FILE).display()
        )),
        "{argv}"
    );
    assert_eq!(bhyve.last().map(String::as_str), Some("coppice-a1"));

    let outcome = f
        .runtime
        .exec(&sandbox, &ExecRequest::new(["echo", "hello"]))
        .unwrap();
    assert_eq!(outcome.status, ExitStatus::Code(0));
    assert_eq!(outcome.stdout, b"echo hello");
    let probe = f.runtime.probe(&sandbox).unwrap();
    assert!(probe.alive);
    assert_eq!(probe.memory_bytes, 256 << 20);

    f.runtime.freeze(&sandbox).unwrap();
    assert!(f.sys.processes()[&1].stopped);
    f.runtime.thaw(&sandbox).unwrap();
    assert!(!f.sys.processes()[&1].stopped);
}

#[test]
fn test_destroy_kills_bhyve_frees_the_vm_and_its_node() {
    let f = fixture();
    let sandbox = id("a1");
    f.runtime.create(&sandbox, &spec(), &disk()).unwrap();
    f.boot_guest(&f.dir.path().join("run/a1").join(SEED_FILE));
    f.runtime.start(&sandbox).unwrap();
    f.runtime.destroy(&sandbox).unwrap();
    let commands = f.sys.commands();
    let tail: Vec<&str> = commands[commands.len() - 3..]
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "kill -Kill 1",
            "bhyvectl --destroy --vm=coppice-a1",
            &format!(
                "ngctl -f - <<< shutdown {}:",
                netgraph::node_name("coppice-a1")
            ),
        ]
    );
    assert!(f.sys.vms().is_empty() && f.sys.processes().is_empty());
    assert!(f.run_dir_entries().is_empty());
    assert!(!f.dir.path().join("run/a1/control.sock").exists());
    f.runtime.destroy(&sandbox).unwrap();
    assert!(matches!(
        f.runtime.probe(&sandbox),
        Err(RuntimeError::NotFound { .. })
    ));
}

#[test]
fn test_a_failure_at_any_create_or_boot_step_leaves_nothing_behind() {
    for (failing, at_start) in [
        ("ngctl -f - <<< mkpeer", false),
        ("ifconfig cpj7 up", false),
        ("ngctl -f - <<< msg cpj7", false),
        ("spawn bhyve", true),
    ] {
        let f = fixture();
        let sandbox = id("a1");
        f.sys.fail_next(failing);
        let result = f
            .runtime
            .create(&sandbox, &spec(), &disk())
            .and_then(|()| f.runtime.start(&sandbox).map(drop));
        assert!(result.is_err(), "{failing}");
        if at_start {
            // The manager destroys a sandbox whose start failed.
            f.runtime.destroy(&sandbox).unwrap();
        }
        assert!(f.run_dir_entries().is_empty(), "{failing}");
        assert!(f.sys.vms().is_empty(), "{failing}");
        let last = f.sys.commands().last().cloned().unwrap_or_default();
        let shutdown = format!(
            "ngctl -f - <<< shutdown {}:",
            netgraph::node_name("coppice-a1")
        );
        assert_eq!(last, shutdown, "{failing}");
    }
}

#[test]
fn test_a_vm_that_never_answers_times_out() {
    let f = fixture_with(|config| config.boot_timeout = Duration::from_millis(300));
    let sandbox = id("a1");
    f.runtime.create(&sandbox, &spec(), &disk()).unwrap();
    // Nothing serves the agent's port with this VM's token.
    let error = f.runtime.start(&sandbox).unwrap_err();
    assert!(matches!(error, RuntimeError::Backend { .. }), "{error:?}");
}

#[test]
fn test_what_a_vm_cannot_use_is_refused_before_anything_is_made() {
    let f = fixture();
    let directory = RootFs::Directory {
        path: "/var/db/coppice/sandboxes/a1".into(),
        binds: vec![],
    };
    let loopback = RuntimeSpec {
        network: NetAttachment::LoopbackOnly,
        ..spec()
    };
    let volumes = RuntimeSpec {
        volumes: vec![BindMount {
            source: "/v".into(),
            target: "/data".into(),
            read_only: false,
        }],
        ..spec()
    };
    for (spec, root) in [(spec(), directory), (loopback, disk()), (volumes, disk())] {
        assert!(matches!(
            f.runtime.create(&id("a1"), &spec, &root),
            Err(RuntimeError::Unsupported { .. })
        ));
    }
    assert!(f.sys.commands().is_empty());
    assert!(f.run_dir_entries().is_empty());
}

#[test]
fn test_a_restarted_runtime_finds_its_vms_and_reaches_them_again() {
    let f = fixture();
    let sandbox = id("a1");
    f.runtime.create(&sandbox, &spec(), &disk()).unwrap();
    f.boot_guest(&f.dir.path().join("run/a1").join(SEED_FILE));
    f.runtime.start(&sandbox).unwrap();
    drop(f.runtime);

    let agent_port = f.agent.local_addr().unwrap().port();
    let restarted = VmRuntime::new(
        Arc::clone(&f.sys) as Arc<dyn BhyveSys>,
        config(f.dir.path(), agent_port),
    )
    .unwrap();
    assert_eq!(
        restarted.list().unwrap(),
        [RuntimeSandbox {
            id: sandbox.clone(),
            alive: true
        }]
    );
    let outcome = restarted
        .exec(&sandbox, &ExecRequest::new(["true"]))
        .unwrap();
    assert_eq!(outcome.status, ExitStatus::Code(0));

    // The host lost the VM (a reboot): listed as dead, still destroyable.
    f.sys.lose(1);
    assert!(!restarted.list().unwrap()[0].alive);
    restarted.destroy(&sandbox).unwrap();
}

/// A pool of one 256 MiB VM of `vcpus` from the test template, held as soon as booted.
fn pool_of(vcpus: u32) -> warm::VmPoolConfig {
    warm::VmPoolConfig {
        origin: ORIGIN.into(),
        dataset: "zroot/coppice/vmpool".into(),
        target: 1,
        vcpus,
        memory_mb: 256,
        settle: Duration::ZERO,
    }
}

fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "{what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn test_a_pooled_vm_takes_over_the_sandboxs_disk_and_only_wakes_at_start() {
    let f = fixture_with(|config| {
        config.pool = Some(pool_of(1));
    });
    let held = || {
        f.sys
            .processes()
            .values()
            .filter(|process| process.stopped)
            .count()
    };
    wait_for("a pooled VM is held", || held() == 1);
    assert!(
        f.runtime.list().unwrap().is_empty(),
        "pooled VMs are no sandboxes"
    );
    let pooled: Vec<String> = f
        .sys
        .datasets()
        .into_keys()
        .filter(|name| name.starts_with("zroot/coppice/vmpool/coppice-pool-"))
        .collect();
    assert_eq!(pooled.len(), 1, "{pooled:?}");
    let pooled_disk = pooled[0].clone();
    let pooled_vm = pooled_disk.rsplit('/').next().unwrap().to_owned();
    // Storage made the sandbox's clone of the same template.
    f.sys.add_dataset("zroot/coppice/sandboxes/a1", ORIGIN);
    let sandbox = id("a1");
    f.runtime.create(&sandbox, &spec(), &disk()).unwrap();
    let commands = f.sys.commands();
    assert!(commands.contains(&"zfs destroy zroot/coppice/sandboxes/a1".to_owned()));
    assert!(
        commands.contains(&format!("zfs set coppice:sandbox=a1 {pooled_disk}")),
        "the pooled disk becomes the sandbox's, by property: {commands:#?}"
    );
    assert!(
        !commands
            .iter()
            .any(|command| command.starts_with("zfs rename"))
    );
    assert!(commands.contains(&format!(
        "ngctl -f - <<< msg cpj7: setpromisc 1\nmsg cpj7: setautosrc 0\nconnect {}: cpj7: link1 lower",
        netgraph::node_name(&pooled_vm)
    )));
    assert!(!f.sys.datasets().contains_key("zroot/coppice/sandboxes/a1"));

    // The taken VM's files moved out of the pool's dir (which a restart clears) into the
    // sandbox's run dir.
    let home = f.dir.path().join("run/a1/vm");
    assert!(home.join(SEED_FILE).is_file());
    assert!(!f.dir.path().join("run/.pool").join(&pooled_vm).exists());
    f.boot_guest(&home.join(SEED_FILE));
    let spawned = |commands: &[String]| {
        commands
            .iter()
            .filter(|command| command.starts_with("spawn bhyve"))
            .count()
    };
    let before = spawned(&f.sys.commands());
    f.runtime.start(&sandbox).unwrap();
    assert!(!f.sys.processes()[&1].stopped, "woken");
    assert!(f.sys.commands().contains(&"kill -Continue 1".to_owned()));
    // The pool refills, but nothing was booted for the sandbox itself.
    wait_for("the pool refills", || held() == 1);
    assert!(spawned(&f.sys.commands()) <= before + 1);
    assert!(
        !f.sys
            .commands()
            .iter()
            .any(|command| command.starts_with("spawn") && command.ends_with("coppice-a1"))
    );

    // A restart clears the pool's own VMs but not the one the sandbox took.
    let refilled: Vec<String> = f
        .sys
        .datasets()
        .into_keys()
        .filter(|name| name.starts_with("zroot/coppice/vmpool/") && *name != pooled_disk)
        .collect();
    assert_eq!(refilled.len(), 1, "{refilled:?}");
    let agent_port = f.agent.local_addr().unwrap().port();
    drop(f.runtime);
    let mut restarted_config = config(f.dir.path(), agent_port);
    restarted_config.pool = Some(pool_of(1));
    let restarted =
        VmRuntime::new(Arc::clone(&f.sys) as Arc<dyn BhyveSys>, restarted_config).unwrap();
    assert!(
        restarted.probe(&sandbox).unwrap().alive,
        "the taken VM lives on"
    );
    assert!(f.sys.datasets().contains_key(&pooled_disk), "and its disk");
    assert!(
        !f.sys.datasets().contains_key(&refilled[0]),
        "the earlier run's ready VM went"
    );
    restarted.destroy(&sandbox).unwrap();
    assert!(
        f.sys.datasets().contains_key(&pooled_disk),
        "storage, not the runtime, removes a sandbox's disk"
    );
    assert!(!f.dir.path().join("run/a1").exists());
}

#[test]
fn test_a_create_that_stopped_while_taking_a_pooled_vm_is_cleaned_up() {
    let f = fixture();
    let vm = "coppice-pool-0123456789ab-1";
    let disk = format!("zroot/coppice/vmpool/{vm}");
    f.sys.add_dataset(&disk, ORIGIN);
    let pid = f
        .sys
        .spawn(&["bhyve".to_owned(), vm.to_owned()], Path::new("/dev/null"))
        .unwrap();
    let home = f.dir.path().join("run/a1/vm");
    fs::create_dir_all(&home).unwrap();
    write_json(
        &home.join(warm::POOL_RECORD),
        &warm::PoolRecord {
            vm: vm.into(),
            pid: Some(pid),
            disk: disk.clone(),
        },
    )
    .unwrap();
    f.runtime.destroy(&id("a1")).unwrap();
    assert!(f.sys.processes().is_empty(), "the VM is stopped");
    assert!(f.sys.vms().is_empty());
    assert!(
        !f.sys.datasets().contains_key(&disk),
        "its unclaimed disk goes"
    );
    assert!(f.run_dir_entries().is_empty());
}

#[test]
fn test_a_resumed_sandbox_boots_on_its_own_disk_never_a_pooled_one() {
    let f = fixture_with(|config| {
        config.pool = Some(pool_of(1));
    });
    wait_for("a pooled VM is held", || {
        f.sys.processes().values().any(|process| process.stopped)
    });
    f.sys.add_dataset("zroot/coppice/sandboxes/a1", ORIGIN);
    let resumed = RuntimeSpec {
        root_use: RootUse::Used,
        ..spec()
    };
    f.runtime.create(&id("a1"), &resumed, &disk()).unwrap();
    assert!(
        f.sys.datasets().contains_key("zroot/coppice/sandboxes/a1"),
        "the sandbox's data stays"
    );
    assert!(
        !f.sys
            .commands()
            .iter()
            .any(|command| command.starts_with("zfs destroy") || command.starts_with("zfs set"))
    );
}

#[test]
fn test_a_create_of_another_template_or_size_boots_its_own_vm() {
    let f = fixture_with(|config| {
        config.pool = Some(pool_of(2));
    });
    f.sys.add_dataset("zroot/coppice/sandboxes/a1", ORIGIN);
    f.runtime.create(&id("a1"), &spec(), &disk()).unwrap();
    assert!(
        !f.sys
            .commands()
            .iter()
            .any(|command| command.starts_with("zfs set")),
        "a 1-vCPU create must not take a 2-vCPU pooled VM"
    );
}
