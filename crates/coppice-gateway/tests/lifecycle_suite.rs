//! The lifecycle correctness suite: a seeded random sequence of operations (create, exec,
//! write, pause with and without memory, durable pause, resume, snapshot + fork, kill, and
//! SIGKILL + restart of the daemon) against a real `coppiced` whose memory pauses go to disk
//! after two seconds (CRIU, loopback-only sandboxes), checking after every step that each live
//! sandbox's files, counter and background process are exactly as a model of them says, and
//! that the daemon lists exactly the sandboxes the model holds. It prints its seed; rerun one
//! with `COPPICE_SUITE_SEED=<seed>` (and `COPPICE_SUITE_OPS=<n>`, 300 by default).
//!
//! Also here: a snapshot that runs out of disk is reported and loses nothing.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod daemon;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use coppice_gateway::client::{Client, ClientError, Created, Output};
use daemon::{API_KEY, Daemon, free_port, kill_all_sandboxes, start, start_with, wait_healthy};

/// Most sandboxes alive at once (forks included).
const MAX_LIVE: usize = 6;
/// What written file contents are made of.
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-_";
/// Distinct files each sandbox's writes go to.
const FILE_SLOTS: u64 = 4;

/// splitmix64: small, seedable and good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// An index into a slice of `len` items.
    fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(u64::try_from(len).unwrap_or(u64::MAX))).unwrap_or(0)
    }

    fn text(&mut self) -> String {
        let len = 1 + self.below(48);
        (0..len)
            .map(|_| char::from(ALPHABET[self.index(ALPHABET.len())]))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Paused { memory: bool },
}

/// What one sandbox must look like.
#[derive(Debug, Clone)]
struct Expected {
    handle: Created,
    state: State,
    files: BTreeMap<u64, String>,
    counter: u64,
    /// The background process started at create, while no reboot has ended it.
    holder: Option<u32>,
}

struct Suite {
    client: Client,
    model: BTreeMap<String, Expected>,
    rng: Rng,
    log: String,
}

fn argv(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

impl Suite {
    async fn run(&self, sandbox: &Created, script: &str) -> (i32, String) {
        let mut stdout = Vec::new();
        let code = self
            .client
            .run(sandbox, &argv(script), None, None, |output| {
                if let Output::Stdout(bytes) = output {
                    stdout.extend(bytes);
                }
            })
            .await
            .unwrap_or_else(|e| panic!("run in {}: {e}\n{}", sandbox.sandbox_id, self.log));
        (code, String::from_utf8_lossy(&stdout).into_owned())
    }

    fn running(&self) -> Vec<String> {
        self.model
            .iter()
            .filter(|(_, e)| e.state == State::Running)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn paused(&self) -> Vec<String> {
        self.model
            .iter()
            .filter(|(_, e)| e.state != State::Running)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn pick(&mut self, ids: &[String]) -> Option<String> {
        (!ids.is_empty()).then(|| ids[self.rng.index(ids.len())].clone())
    }

    async fn create(&mut self) {
        let handle = self
            .client
            .create("base", Some(3600), &BTreeMap::new())
            .await
            .unwrap();
        let (code, out) = self
            .run(
                &handle,
                "setsid sleep 100000 >/dev/null 2>&1 < /dev/null & echo $!",
            )
            .await;
        assert_eq!(code, 0);
        let holder = out.trim().parse().ok();
        assert!(holder.is_some(), "holder pid {out:?}");
        self.model.insert(
            handle.sandbox_id.clone(),
            Expected {
                handle,
                state: State::Running,
                files: BTreeMap::new(),
                counter: 0,
                holder,
            },
        );
    }

    async fn exec(&mut self, id: &str) {
        let handle = self.model[id].handle.clone();
        let (code, _) = self
            .run(
                &handle,
                "n=$(cat /home/user/counter 2>/dev/null || echo 0); echo $((n+1)) > /home/user/counter",
            )
            .await;
        assert_eq!(code, 0);
        self.model.get_mut(id).unwrap().counter += 1;
    }

    async fn write(&mut self, id: &str) {
        let slot = self.rng.below(FILE_SLOTS);
        let text = self.rng.text();
        let handle = self.model[id].handle.clone();
        self.client
            .write_file(
                &handle,
                &format!("/home/user/f{slot}.txt"),
                text.clone().into(),
            )
            .await
            .unwrap();
        self.model.get_mut(id).unwrap().files.insert(slot, text);
    }

    async fn pause(&mut self, id: &str, memory: bool) {
        self.client.pause(id, memory).await.unwrap();
        self.paused_again(id, memory).await;
    }

    /// A pause written to disk at once keeps what a memory pause keeps.
    async fn pause_durably(&mut self, id: &str) {
        self.client.pause_durably(id).await.unwrap();
        self.paused_again(id, true).await;
    }

    async fn paused_again(&mut self, id: &str, memory: bool) {
        self.model.get_mut(id).unwrap().state = State::Paused { memory };
        // Pausing again is a conflict and changes nothing.
        match self.client.pause(id, memory).await {
            Err(ClientError::Status { status: 409, .. }) => {}
            other => panic!("second pause of {id}: {other:?}\n{}", self.log),
        }
    }

    async fn resume(&mut self, id: &str) {
        assert!(
            self.client.connect(id, Some(3600)).await.unwrap(),
            "{id} was paused"
        );
        let expected = self.model.get_mut(id).unwrap();
        if expected.state == (State::Paused { memory: false }) {
            expected.holder = None;
        }
        expected.state = State::Running;
    }

    async fn fork(&mut self, id: &str) {
        let count = 1 + u32::try_from(self.rng.below(2)).unwrap_or(0);
        let forks = self.client.fork(id, count, Some(3600)).await.unwrap();
        let source = self.model[id].clone();
        for fork in forks {
            let handle = fork.unwrap_or_else(|e| panic!("fork of {id}: {e}\n{}", self.log));
            self.model.insert(
                handle.sandbox_id.clone(),
                Expected {
                    handle,
                    state: State::Running,
                    files: source.files.clone(),
                    counter: source.counter,
                    holder: None,
                },
            );
        }
    }

    async fn kill(&mut self, id: &str) {
        self.client.kill(id).await.unwrap();
        self.model.remove(id);
        match self.client.connect(id, None).await {
            Err(ClientError::Status { status: 404, .. }) => {}
            other => panic!("connect to killed {id}: {other:?}\n{}", self.log),
        }
    }

    /// Every live sandbox is listed in its state; every running one holds exactly its files,
    /// its counter and (while no reboot intervened) its background process.
    async fn check(&self) {
        let mut listed: Vec<(String, String)> = self
            .client
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.sandbox_id, s.state))
            .collect();
        listed.sort();
        let expected: Vec<(String, String)> = self
            .model
            .iter()
            .map(|(id, e)| {
                let state = if e.state == State::Running {
                    "running"
                } else {
                    "paused"
                };
                (id.clone(), state.to_owned())
            })
            .collect();
        assert_eq!(listed, expected, "{}", self.log);
        for (id, sandbox) in &self.model {
            if sandbox.state != State::Running {
                continue;
            }
            let holder = sandbox.holder.map_or(String::new(), |pid| {
                format!("; kill -0 {pid} && echo holder")
            });
            let script = format!(
                "cat /home/user/counter 2>/dev/null || echo 0; \
                 for f in /home/user/f*.txt; do [ -e \"$f\" ] && echo \"$f=$(cat \"$f\")\"; done{holder}"
            );
            let (_, out) = self.run(&sandbox.handle, &script).await;
            let mut wanted = format!("{}\n", sandbox.counter);
            for (slot, text) in &sandbox.files {
                let _ = writeln!(wanted, "/home/user/f{slot}.txt={text}");
            }
            if sandbox.holder.is_some() {
                wanted.push_str("holder\n");
            }
            assert_eq!(out, wanted, "sandbox {id}\n{}", self.log);
        }
    }
}

fn seed() -> u64 {
    std::env::var("COPPICE_SUITE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| {
                    u64::try_from(d.as_nanos() % u128::from(u64::MAX)).unwrap_or(1)
                })
        })
}

/// The suite's daemon: loopback-only sandboxes (which can be written to disk), and memory
/// pauses written to disk after two seconds, with the CRIU the test command installs.
fn start_suite_daemon(dir: &Path, port: u16) -> Daemon {
    let criu = std::env::var("COPPICE_CRIU").unwrap_or_else(|_| "/usr/local/sbin/criu".into());
    assert!(
        Path::new(&criu).is_file(),
        "{criu} is missing: scripts/test.sh installs CRIU"
    );
    start_with(
        dir,
        port,
        &[
            "--network",
            "loopback",
            "--durable-pause-after",
            "2",
            "--criu",
            &criu,
        ],
    )
}

fn restart(daemon: &mut Daemon, dir: &Path, port: u16) {
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    *daemon = start_suite_daemon(dir, port);
    wait_healthy(port);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "privileged: starts coppiced and many sandboxes; SIGKILLs the daemon"]
async fn test_lifecycle_suite_random_operations_keep_every_sandbox_exact() {
    coppice_core::require_privileged!();
    let seed = seed();
    let operations: usize = std::env::var("COPPICE_SUITE_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    println!("lifecycle suite: seed {seed}, {operations} operations (COPPICE_SUITE_SEED={seed})");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut daemon = start_suite_daemon(dir.path(), port);
    wait_healthy(port);
    let url = format!("http://127.0.0.1:{port}");
    let mut suite = Suite {
        client: Client::new(&url, Some(&url), API_KEY),
        model: BTreeMap::new(),
        rng: Rng(seed),
        log: format!("seed {seed}\n"),
    };
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for step in 0..operations {
        let running = suite.running();
        let paused = suite.paused();
        let live = suite.model.len();
        let roll = suite.rng.below(100);
        let op = match roll {
            _ if live == 0 => "create",
            0..=9 if live < MAX_LIVE => "create",
            0..=29 if !running.is_empty() => "exec",
            30..=49 if !running.is_empty() => "write",
            50..=55 if !running.is_empty() => "pause-memory",
            56..=58 if !running.is_empty() => "pause-durable",
            59..=62 if !running.is_empty() => "pause-filesystem",
            63..=77 if !paused.is_empty() => "resume",
            78..=84 if live < MAX_LIVE - 1 => "fork",
            85..=92 => "kill",
            93..=95 => "restart",
            _ => "check",
        };
        let target = match op {
            "exec" | "write" | "pause-memory" | "pause-durable" | "pause-filesystem" => {
                suite.pick(&running)
            }
            "resume" => suite.pick(&paused),
            "fork" | "kill" => {
                let all: Vec<String> = suite.model.keys().cloned().collect();
                suite.pick(&all)
            }
            _ => None,
        };
        let _ = writeln!(
            suite.log,
            "{step}: {op} {}",
            target.as_deref().unwrap_or("")
        );
        match (op, target.as_deref()) {
            ("create", _) => suite.create().await,
            ("exec", Some(id)) => suite.exec(id).await,
            ("write", Some(id)) => suite.write(id).await,
            ("pause-memory", Some(id)) => suite.pause(id, true).await,
            ("pause-durable", Some(id)) => suite.pause_durably(id).await,
            ("pause-filesystem", Some(id)) => suite.pause(id, false).await,
            ("resume", Some(id)) => suite.resume(id).await,
            ("fork", Some(id)) => suite.fork(id).await,
            ("kill", Some(id)) => suite.kill(id).await,
            ("restart", _) => restart(&mut daemon, dir.path(), port),
            _ => {}
        }
        *counts.entry(op).or_default() += 1;
        suite.check().await;
    }
    // Every paused sandbox comes back with everything it had.
    for id in suite.paused() {
        suite.resume(&id).await;
    }
    suite.check().await;
    println!("lifecycle suite passed: {counts:?}");
    kill_all_sandboxes(port);
    drop(daemon);
}

/// Bytes free on the filesystem holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let output = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .and_then(|line| line.trim().parse().ok())
        .expect("df answers")
}

/// A tmpfs of `mib` MiB at `path`, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(path: &Path, mib: u32) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "coppice-test"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs at {}", path.display());
        Self(path.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "privileged: mounts a small tmpfs as the data dir and fills it"]
async fn test_snapshot_on_a_full_disk_is_reported_and_loses_nothing() {
    coppice_core::require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let disk = SmallDisk::mount(&data, 64);
    let port = free_port();
    let daemon = start(&data, port);
    wait_healthy(port);
    let url = format!("http://127.0.0.1:{port}");
    let client = Client::new(&url, Some(&url), API_KEY);
    let sandbox = client
        .create("base", Some(600), &BTreeMap::new())
        .await
        .unwrap();
    // More than half of what is left: the sandbox holds it, a copy cannot fit.
    let big = free_bytes(&data) * 6 / 10;
    let script = format!(
        "head -c {big} /dev/urandom > /home/user/big && sha256sum /home/user/big | cut -d' ' -f1"
    );
    let mut before = Vec::new();
    let code = client
        .run(&sandbox, &argv(&script), None, None, |output| {
            if let Output::Stdout(bytes) = output {
                before.extend(bytes);
            }
        })
        .await
        .unwrap();
    assert_eq!(code, 0, "write {big} bytes");

    let refused = client
        .snapshot(&sandbox.sandbox_id, Some("too-big"))
        .await
        .unwrap_err();

    match &refused {
        ClientError::Status {
            status: 507,
            message,
        } => {
            assert!(message.contains("snapshot"), "{message}");
        }
        other => panic!("a full disk must be a 507: {other:?}"),
    }
    assert!(client.snapshots(None).await.unwrap().is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(data.join("storage/layers"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "half-written layers left: {leftovers:?}"
    );
    let mut after = Vec::new();
    client
        .run(
            &sandbox,
            &argv("sha256sum /home/user/big | cut -d' ' -f1"),
            None,
            None,
            |output| {
                if let Output::Stdout(bytes) = output {
                    after.extend(bytes);
                }
            },
        )
        .await
        .unwrap();
    assert_eq!(after, before, "the sandbox's data is intact");
    // With room again, the same snapshot succeeds.
    client
        .run(&sandbox, &argv("rm /home/user/big"), None, None, |_| {})
        .await
        .unwrap();
    assert_eq!(
        client
            .snapshot(&sandbox.sandbox_id, Some("too-big"))
            .await
            .unwrap(),
        "too-big"
    );
    kill_all_sandboxes(port);
    drop(daemon);
    drop(disk);
}
