//! Sandbox networking through a real `coppiced` on a bridge of its own and the unmodified E2B
//! Python SDK: egress policy, DNS, live updates and exposed ports (`network_sdk.py`), and 200
//! networked sandboxes that leave nothing behind (`network_density_sdk.py`), and durable pause
//! of a networked sandbox across a daemon restart (`network_durable_sdk.py`). The outside is an
//! "upstream" network namespace this test creates and routes to; nothing else is contacted.
//! Root only; run with
//! `COPPICE_PRIVILEGED_TESTS=1 cargo test -p coppice-gateway --test network -- --ignored`.
#![cfg(target_os = "linux")]
// Test helpers outside `#[test]` functions unwrap too: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The suites' PASS lines and timings belong in the test log.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

mod daemon;

use daemon::{
    Daemon, criu_flags, e2b_python, finish_suite, free_port, kill_all_sandboxes, passed_suite,
    sdk_dir, sdk_env, start_with, wait_for_checkpoint, wait_healthy,
};

const UPSTREAM_V4: &str = "10.216.0.2";
const UPSTREAM_V6: &str = "fd00:c0:216::2";
const UPSTREAM_PORT: &str = "8080";
const BRIDGE: &str = "cpsdk0";
const BRIDGE_V4: &str = "10.215.0.1";

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?}");
}

/// A named network namespace with a veth to the host, 10.216.0.0/24 and fd00:c0:216::/64,
/// serving `upstream.py` (a ticking TCP service and a DNS responder); removed on drop.
struct Upstream {
    netns: String,
    link: String,
    servers: Child,
}

impl Upstream {
    fn start() -> Self {
        let netns = format!("coppice-up-{}", std::process::id());
        let link = "cpsdkup".to_owned();
        let _ = Command::new("ip")
            .args(["link", "del", &link])
            .stderr(Stdio::null())
            .status();
        run("ip", &["netns", "add", &netns]);
        run(
            "ip",
            &[
                "link", "add", &link, "type", "veth", "peer", "name", "up0", "netns", &netns,
            ],
        );
        run("ip", &["addr", "add", "10.216.0.1/24", "dev", &link]);
        run(
            "ip",
            &["addr", "add", "fd00:c0:216::1/64", "dev", &link, "nodad"],
        );
        run("ip", &["link", "set", &link, "up"]);
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", "10.216.0.2/24", "dev", "up0"],
            vec!["addr", "add", "fd00:c0:216::2/64", "dev", "up0", "nodad"],
            vec!["link", "set", "up0", "up"],
        ] {
            let mut full = vec!["netns", "exec", &netns, "ip"];
            full.extend(args);
            run("ip", &full);
        }
        let mut servers = Command::new("ip")
            .args(["netns", "exec", &netns, "python3"])
            .arg(sdk_dir().join("upstream.py"))
            .args([UPSTREAM_V4, UPSTREAM_V6, UPSTREAM_PORT])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        BufReader::new(servers.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready");
        // A veth that has just come up may hold its first packets until the kernel activates
        // its queue, which can take longer than the scripts' first probe; wait that out here.
        for address in [UPSTREAM_V4, UPSTREAM_V6] {
            let target =
                std::net::SocketAddr::new(address.parse().unwrap(), UPSTREAM_PORT.parse().unwrap());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::net::TcpStream::connect_timeout(
                &target,
                std::time::Duration::from_millis(500),
            )
            .is_err()
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the upstream {target} did not answer the host within 10 s"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        Self {
            netns,
            link,
            servers,
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.servers.kill();
        let _ = self.servers.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// Starts a coppiced on bridge `cpsdk0`, whose resolver asks the upstream, with `extra`
/// flags besides.
fn start_on_bridge(data_dir: &std::path::Path, port: u16, extra: &[String]) -> Daemon {
    let upstream_dns = format!("{UPSTREAM_V4}:53");
    let mut flags = vec![
        "--net-bridge",
        BRIDGE,
        "--net-ipv4",
        "10.215.0.0/22",
        "--net-ipv6",
        "fd00:c0:215::/64",
        "--net-dns-upstream",
        &upstream_dns,
    ];
    flags.extend(extra.iter().map(String::as_str));
    let daemon = start_with(data_dir, port, &flags);
    wait_healthy(port);
    daemon
}

/// Runs a step of an SDK suite with the upstream's and the bridge's addresses.
fn run_suite_step(
    script: &str,
    args: &[&str],
    url: &str,
    extra_env: &[(&str, &str)],
) -> std::process::Output {
    Command::new(e2b_python())
        .arg(sdk_dir().join(script))
        .args(args)
        .envs(sdk_env(url))
        .env("UPSTREAM_V4", UPSTREAM_V4)
        .env("UPSTREAM_V6", UPSTREAM_V6)
        .env("UPSTREAM_PORT", UPSTREAM_PORT)
        .env("BRIDGE_V4", BRIDGE_V4)
        .env("NFT_TABLE", format!("coppice_{BRIDGE}"))
        .envs(extra_env.iter().copied())
        .env_remove("E2B_DEBUG")
        .output()
        .unwrap()
}

/// Removes the bridge and its tables once the daemon is gone.
fn remove_bridge() {
    for family in ["inet", "bridge"] {
        let _ = Command::new("nft")
            .args(["delete", "table", family, &format!("coppice_{BRIDGE}")])
            .status();
    }
    let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
}

/// Runs `script` against a coppiced on bridge `cpsdk0` whose resolver asks the upstream.
fn run_network_suite(script: &str, extra_env: &[(&str, &str)]) {
    let _upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let daemon = start_on_bridge(dir.path(), port, &[]);
    let url = format!("http://127.0.0.1:{port}");
    let output = run_suite_step(script, &[], &url, extra_env);
    kill_all_sandboxes(port);
    drop(daemon);
    remove_bridge();
    println!("{}", passed_suite(&output));
}

#[test]
#[ignore = "privileged: starts coppiced with a bridge network and a test upstream namespace; needs the E2B SDK venv"]
fn test_e2b_python_sdk_networking() {
    coppice_core::require_privileged!();
    run_network_suite("network_sdk.py", &[]);
}

#[test]
#[ignore = "privileged: starts 200 networked sandboxes; needs the E2B SDK venv"]
fn test_two_hundred_networked_sandboxes_leave_nothing_behind() {
    coppice_core::require_privileged!();
    run_network_suite("network_density_sdk.py", &[("COUNT", "200")]);
}

#[test]
#[ignore = "privileged: checkpoints a networked sandbox with CRIU under a real coppiced on a bridge; needs the E2B SDK venv"]
fn test_durable_pause_of_a_networked_sandbox_outlives_the_daemon() {
    coppice_core::require_privileged!();
    let _upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut flags = vec!["--durable-pause-after".to_owned(), "1".to_owned()];
    flags.extend(criu_flags());
    let mut daemon = start_on_bridge(dir.path(), port, &flags);
    let url = format!("http://127.0.0.1:{port}");
    let script = "network_durable_sdk.py";
    let setup = run_suite_step(script, &["setup"], &url, &[]);
    let printed = String::from_utf8_lossy(&setup.stdout).into_owned();
    let Some(state) = printed.lines().find_map(|line| line.strip_prefix("STATE ")) else {
        let log = daemon.log_tail(60);
        drop(daemon);
        remove_bridge();
        panic!(
            "setup printed {printed:?}; stderr {}\ndaemon log:\n{log}",
            String::from_utf8_lossy(&setup.stderr)
        );
    };
    let state: Vec<String> = state.split_whitespace().map(str::to_owned).collect();
    assert_eq!(state.len(), 2, "setup printed {printed:?}");

    // On disk, then a crash of the daemon: the namespace it held for the sandbox goes too,
    // and the restore makes it again.
    wait_for_checkpoint(dir.path(), &state[0]);
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    drop(daemon);
    let restarted = start_on_bridge(dir.path(), port, &flags);
    let args: Vec<&str> = std::iter::once("verify")
        .chain(state.iter().map(String::as_str))
        .collect();
    let output = run_suite_step(script, &args, &url, &[]);
    let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        finish_suite(port, restarted, &output)
    }));
    remove_bridge();
    match report {
        Ok(report) => println!("{report}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
