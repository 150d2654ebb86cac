//! A real `coppiced` for the privileged tests: started on a free port over a data dir (and
//! started again over the same one), its health awaited, its sandboxes listed and killed.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// A running coppiced; killed when dropped. The last daemon on the shared test bridge to go
/// removes that bridge. Its log goes to `coppiced.log` in its data dir (appended across
/// restarts), for a failing test to show.
pub struct Daemon(pub Child, Option<Arc<TestBridge>>, PathBuf);

impl Daemon {
    /// The last `lines` lines of the log of every daemon started over this one's data dir.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.2).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The bridge test daemons use unless a test names its own, so that no test builds or
/// leaves behind the host's default `coppice0`.
pub const TEST_BRIDGE: &str = "cpgwt0";

/// Removes [`TEST_BRIDGE`] and its tables when the last daemon holding it is dropped. A
/// daemon restarted in place is started before the old one is dropped, so its sandboxes keep
/// their links across the restart.
pub struct TestBridge;

/// The test bridge of the daemons alive now, if any.
static SHARED: Mutex<Weak<TestBridge>> = Mutex::new(Weak::new());

impl Drop for TestBridge {
    fn drop(&mut self) {
        // Holding the lock keeps a daemon from starting on the bridge while it is removed;
        // if one already took a new handle, the bridge is its to keep.
        let shared = SHARED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if shared.upgrade().is_some() {
            return;
        }
        for family in ["inet", "bridge"] {
            let _ = Command::new("nft")
                .args(["delete", "table", family, &format!("coppice_{TEST_BRIDGE}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", TEST_BRIDGE])
            .stderr(Stdio::null())
            .status();
    }
}

fn shared_test_bridge() -> Arc<TestBridge> {
    let mut shared = SHARED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    shared.upgrade().unwrap_or_else(|| {
        let bridge = Arc::new(TestBridge);
        *shared = Arc::downgrade(&bridge);
        bridge
    })
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The API key the tests start coppiced with.
pub const API_KEY: &str = "coppice-test-key";

/// Starts coppiced with the test key on `port` over `data_dir`.
pub fn start(data_dir: &Path, port: u16) -> Daemon {
    start_with(data_dir, port, &[])
}

/// [`start`] with more flags.
/// Without `--network` or `--net-bridge` among `flags`, the daemon runs on [`TEST_BRIDGE`].
pub fn start_with(data_dir: &Path, port: u16, flags: &[&str]) -> Daemon {
    let own_network = flags
        .iter()
        .any(|flag| *flag == "--network" || *flag == "--net-bridge");
    let bridge = (!own_network).then(shared_test_bridge);
    let network_flags: &[&str] = if own_network {
        &[]
    } else {
        &[
            "--net-bridge",
            TEST_BRIDGE,
            "--net-ipv4",
            "10.214.0.0/20",
            "--net-ipv6",
            "fd00:c0:214::/64",
        ]
    };
    let log_path = data_dir.join("coppiced.log");
    std::fs::create_dir_all(data_dir).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_coppiced"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .args(network_flags)
        .args(flags)
        .env("COPPICE_API_KEY", API_KEY)
        // No background builds of the shipped templates unless a test asks for them
        // (`--shipped-templates build` wins over this).
        .env("COPPICE_SHIPPED_TEMPLATES", "host")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Daemon(child, bridge, log_path)
}

/// `GET /health`, the whole answer, if anyone answers.
pub fn health(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// Waits up to a minute for `/health`.
pub fn wait_healthy(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(response) = health(port) {
            return response;
        }
        assert!(Instant::now() < deadline, "coppiced did not answer /health");
        sleep(Duration::from_millis(50));
    }
}

/// One request with the test key; the whole answer as text.
pub fn call(port: u16, method: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nX-API-KEY: {API_KEY}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Kills every sandbox the daemon lists (sandboxes outlive the daemon by design).
pub fn kill_all_sandboxes(port: u16) {
    let response = call(port, "GET", "/v2/sandboxes");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("[]");
    let listed: Vec<serde_json::Value> = serde_json::from_str(body).unwrap_or_default();
    for sandbox in listed {
        if let Some(id) = sandbox["sandboxID"].as_str() {
            call(port, "DELETE", &format!("/sandboxes/{id}"));
        }
    }
}

/// The variables that point an unmodified E2B SDK at coppiced.
pub fn sdk_env(url: &str) -> [(&'static str, String); 4] {
    [
        ("E2B_API_KEY", API_KEY.to_owned()),
        ("E2B_API_URL", url.to_owned()),
        ("E2B_SANDBOX_URL", url.to_owned()),
        ("E2B_VOLUME_API_URL", url.to_owned()),
    ]
}

/// The Python that has the pinned e2b SDK (`scripts/test.sh` makes its venv).
pub fn e2b_python() -> std::ffi::OsString {
    std::env::var_os("COPPICE_E2B_PYTHON").expect(
        "COPPICE_E2B_PYTHON must name a Python with the pinned e2b SDK (scripts/test.sh sets it up)",
    )
}

/// An SDK suite's stdout and stderr, once it is checked to have passed whole.
pub fn passed_suite(output: &std::process::Output) -> String {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && text.contains("ALL PASSED"),
        "{text}"
    );
    text
}

/// Ends an SDK suite run against `daemon` on `port`: kills its sandboxes and the daemon, then
/// checks that the suite passed whole, showing the daemon's last log lines when it did not.
pub fn finish_suite(port: u16, daemon: Daemon, output: &std::process::Output) -> String {
    let log = daemon.log_tail(80);
    kill_all_sandboxes(port);
    drop(daemon);
    let passed =
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains("ALL PASSED");
    assert!(
        passed,
        "{}\n{}\n--- the daemon's last log lines ---\n{log}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    passed_suite(output)
}

/// Step `step` of SDK script `script` (with `args`) run to its end against the daemon at `url`.
pub fn run_sdk_step(script: &Path, step: &str, args: &[&str], url: &str) -> std::process::Output {
    Command::new(e2b_python())
        .arg(script)
        .arg(step)
        .args(args)
        .envs(sdk_env(url))
        .output()
        .unwrap()
}

/// Where the SDK suites live.
pub fn sdk_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/sdk")
}

/// The `--criu` flags naming the CRIU the test command installed.
pub fn criu_flags() -> Vec<String> {
    let criu = std::env::var("COPPICE_CRIU").unwrap_or_else(|_| "/usr/local/sbin/criu".into());
    assert!(
        Path::new(&criu).is_file(),
        "{criu} is missing: scripts/test.sh installs CRIU"
    );
    vec!["--criu".into(), criu]
}

/// Waits until the sandbox `id` of the daemon over `data_dir` is on disk: CRIU marked its
/// images complete, and the runtime forgot its ended init.
pub fn wait_for_checkpoint(data_dir: &Path, id: &str) {
    let run_dir = data_dir.join("run").join(id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run_dir.join("checkpoint/complete").is_file() || run_dir.join("state.json").exists() {
        assert!(
            Instant::now() < deadline,
            "the paused sandbox was not written to disk (or its init is still recorded)"
        );
        sleep(Duration::from_millis(100));
    }
}
