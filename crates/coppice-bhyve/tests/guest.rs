//! The real `coppice-guest` binary on this host, without a VM: it waits on an unassigned
//! seed as a pooled VM does, takes the sandbox once the seed names one, and serves commands
//! to connections that present the seed's token (here through the runtime's relay).
//! `--no-configure` keeps it off this host's hostname and network.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coppice_bhyve::relay::Relay;
use coppice_bhyve::seed::{GuestSeed, SEED_VERSION, encode};
use coppice_core::exec::{ExecRequest, ExitStatus};

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

fn seed(sandbox_id: &str, token: &str, agent_port: u16) -> GuestSeed {
    GuestSeed {
        version: SEED_VERSION,
        sandbox_id: sandbox_id.into(),
        hostname: "a1".into(),
        token: token.into(),
        env: vec![("MARK".into(), "from-the-seed".into())],
        network: None,
        agent_port,
        envd_port: 0,
    }
}

#[test]
fn test_a_pooled_agent_serves_once_its_seed_names_a_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("seed.img");
    let port = free_port();
    // Caught mid-rewrite: nothing that reads as a seed yet.
    fs::write(&device, b"").unwrap();
    let mut agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_coppice-guest"))
            .args(["--no-configure", "--seed"])
            .arg(&device)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        agent.0.try_wait().unwrap().is_none(),
        "an agent that cannot read its seed yet waits"
    );
    fs::write(&device, encode(&seed("", "", port)).unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        std::net::TcpStream::connect(target).is_err(),
        "an unassigned agent listens on nothing"
    );

    // Rewritten in place, as the runtime rewrites a pooled VM's seed.
    coppice_bhyve::seed::write(&device, &seed("a1", "t0k", port)).unwrap();
    let control = dir.path().join("control.sock");
    let _relay = Relay::start(&control, target, b"t0k\n".to_vec()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while coppice_init::client::ping(&control, Duration::from_secs(1)).is_err() {
        assert!(Instant::now() < deadline, "the agent never served");
        std::thread::sleep(Duration::from_millis(50));
    }
    let outcome = coppice_init::client::exec(
        &control,
        &ExecRequest::new(["sh", "-c", "echo $MARK; exit 4"]),
        1024,
    )
    .unwrap();
    assert_eq!(outcome.status, ExitStatus::Code(4));
    assert_eq!(outcome.stdout, b"from-the-seed\n");

    let wrong = dir.path().join("wrong.sock");
    let _wrong = Relay::start(&wrong, target, b"guess\n".to_vec()).unwrap();
    assert!(coppice_init::client::ping(&wrong, Duration::from_secs(5)).is_err());
}
