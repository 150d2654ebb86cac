//! `coppice-net-bench`: what sandbox networking costs. Prints p50/p95 of sandbox create
//! (manager over the real runtime) with loopback-only networking and with the bridge network
//! side by side, interleaved in the same run, and their difference; then the air-gap flip:
//! how long `update` takes until new flows from a sandbox are refused (checked with a
//! connection attempt after every flip) and how long opening it again takes. The only
//! address contacted is a server in a namespace this harness creates. Also prints one JSON
//! line (`RESULT {...}`). Root only.
//!
//! Usage: `coppice-net-bench [--iterations N]`.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    coppice_benches::harness_main("coppice-net-bench", linux::run)
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    eprintln!("coppice-net-bench needs Linux");
    std::process::ExitCode::FAILURE
}

#[cfg(target_os = "linux")]
mod linux {
    use std::fs::File;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
    use std::os::fd::{AsFd, OwnedFd};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use coppice_benches::report;
    use coppice_core::net::{NetAttachment, NetPolicy};
    use coppice_core::spec::NetworkSpec;
    use coppice_core::{SandboxManager, SandboxSpec};
    use coppice_net::{BridgeConfig, BridgeNetwork, NetnsSys, RealNetnsSys};
    use coppice_tests::harness::{HarnessPaths, INIT_SUBCOMMAND, workspace_binary};
    use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

    const BRIDGE: &str = "cpbench0";
    const UPSTREAM_LINK: &str = "cpbenchup";
    const UPSTREAM: Ipv4Addr = Ipv4Addr::new(10, 218, 0, 2);
    const PORT: u16 = 8080;

    fn init_command() -> anyhow::Result<coppice_linux::InitCommand> {
        let sibling = workspace_binary("coppice-init");
        if sibling.is_file() {
            return Ok(coppice_linux::InitCommand::binary(sibling));
        }
        Ok(coppice_linux::InitCommand {
            program: std::env::current_exe()?,
            leading_args: vec![INIT_SUBCOMMAND.to_owned()],
        })
    }

    pub(super) async fn run() -> anyhow::Result<()> {
        let mut iterations = 200;
        coppice_benches::read_counts(&mut [("iterations", &mut iterations, 10)])?;
        let loopback_dir = tempfile::tempdir()?;
        let bridge_dir = tempfile::tempdir()?;
        let mut config = BridgeConfig::new(BRIDGE, bridge_dir.path().join("net"));
        config.ipv4 = "10.217.0.0/22".parse()?;
        config.ipv6 = "fd00:c0:217::/64".parse()?;
        config.pool_size = 32;
        config.dns_upstream = Some(SocketAddr::new(UPSTREAM.into(), 53));
        config.sandbox_ids = Some(coppice_tests::harness::sandbox_id_map());
        let bridge = Arc::new(
            BridgeNetwork::start(config, Arc::new(RealNetnsSys))
                .context("starting the bridge network")?,
        );
        let init = init_command()?;
        let loopback_paths = HarnessPaths::new(loopback_dir.path());
        let bridge_paths = HarnessPaths::new(bridge_dir.path())
            .with_net(Arc::clone(&bridge) as Arc<dyn NetPolicy>);
        let result = async {
            let loopback = loopback_paths.manager(&init).await?;
            let bridged = bridge_paths.manager(&init).await?;
            let create = measure_create(&loopback, &bridged, iterations).await?;
            let flip = measure_flip(&bridge, iterations)?;
            let result = serde_json::json!({
                "iterations": iterations,
                "create_loopback_p50_ms": create[0].0, "create_loopback_p95_ms": create[0].1,
                "create_bridge_p50_ms": create[1].0, "create_bridge_p95_ms": create[1].1,
                "network_setup_p50_ms": create[1].0 - create[0].0,
                "airgap_flip_p50_ms": flip[0].0, "airgap_flip_p95_ms": flip[0].1,
                "open_flip_p50_ms": flip[1].0, "open_flip_p95_ms": flip[1].1,
            });
            println!("RESULT {result}");
            anyhow::Ok(())
        }
        .await;
        drop(bridge);
        loopback_paths.remove_groups();
        bridge_paths.remove_groups();
        for family in ["inet", "bridge"] {
            let _ = Command::new("nft")
                .args(["delete", "table", family, &format!("coppice_{BRIDGE}")])
                .status();
        }
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
        result
    }

    /// Create with loopback-only and with bridge networking, interleaved; kills untimed.
    async fn measure_create(
        loopback: &SandboxManager,
        bridged: &SandboxManager,
        iterations: usize,
    ) -> anyhow::Result<[(f64, f64); 2]> {
        let spec = SandboxSpec::new("base".parse()?);
        let mut samples = [Vec::new(), Vec::new()];
        for iteration in 0..iterations + 5 {
            // Alternating which goes first, so neither always follows the other's teardown.
            let order = if iteration % 2 == 0 { [0, 1] } else { [1, 0] };
            for which in order {
                let manager = [loopback, bridged][which];
                // Lets the previous teardown (veth, conntrack) finish and the pool refill.
                tokio::time::sleep(Duration::from_millis(60)).await;
                let started = Instant::now();
                let sandbox = manager.create(spec.clone()).await?;
                let elapsed = started.elapsed();
                manager.kill(&sandbox.id).await?;
                if iteration >= 5 {
                    samples[which].push(elapsed);
                }
            }
        }
        println!("sandbox create (manager, real runtime), n = {iterations}, interleaved");
        let loopback = report("  loopback-only network", 34, &mut samples[0]);
        let bridge = report("  bridge network (warm pool)", 34, &mut samples[1]);
        println!(
            "  network setup adds {:.3} ms at p50 (ratio {:.2})",
            bridge.0 - loopback.0,
            bridge.0 / loopback.0.max(f64::EPSILON)
        );
        Ok([loopback, bridge])
    }

    /// An upstream namespace with a server on `UPSTREAM:PORT`, routed from the host.
    struct Upstream {
        _netns: OwnedFd,
    }

    impl Upstream {
        fn start() -> anyhow::Result<Self> {
            let netns = RealNetnsSys.new_namespace()?;
            let path = RealNetnsSys.path_of(&netns);
            let _ = Command::new("ip")
                .args(["link", "del", UPSTREAM_LINK])
                .stderr(Stdio::null())
                .status();
            ip(&format!(
                "link add {UPSTREAM_LINK} type veth peer name up0 netns {}",
                path.display()
            ))?;
            ip(&format!("addr add 10.218.0.1/24 dev {UPSTREAM_LINK}"))?;
            ip(&format!("link set {UPSTREAM_LINK} up"))?;
            let inside = netns.try_clone()?;
            let (ready, wait) = std::sync::mpsc::channel();
            std::thread::spawn(move || -> anyhow::Result<()> {
                move_into_link_name_space(inside.as_fd(), Some(LinkNameSpaceType::Network))?;
                let status = Command::new("ip")
                    .args(["-batch", "-"])
                    .stdin(Stdio::piped())
                    .spawn()
                    .and_then(|mut child| {
                        if let Some(mut stdin) = child.stdin.take() {
                            stdin.write_all(
                                format!("link set lo up\naddr add {UPSTREAM}/24 dev up0\nlink set up0 up\n")
                                    .as_bytes(),
                            )?;
                        }
                        child.wait()
                    })?;
                anyhow::ensure!(status.success(), "configuring the upstream failed");
                let listener = TcpListener::bind((UPSTREAM, PORT))?;
                let _ = ready.send(());
                for stream in listener.incoming() {
                    let _ = stream.and_then(|mut s| s.write_all(b"."));
                }
                Ok(())
            });
            wait.recv_timeout(Duration::from_secs(10))
                .context("the upstream server did not start")?;
            // A veth that has just come up may drop or hold its first packets until the
            // kernel activates its queue, which can take a second, longer than one probe.
            let deadline = Instant::now() + Duration::from_secs(10);
            let target = SocketAddr::new(UPSTREAM.into(), PORT);
            while TcpStream::connect_timeout(&target, Duration::from_millis(500)).is_err() {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the upstream did not answer the host within 10 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(Self { _netns: netns })
        }
    }

    impl Drop for Upstream {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["link", "del", UPSTREAM_LINK])
                .status();
        }
    }

    fn ip(args: &str) -> anyhow::Result<()> {
        let status = Command::new("ip").args(args.split_whitespace()).status()?;
        anyhow::ensure!(status.success(), "ip {args} failed");
        Ok(())
    }

    /// Whether a new connection from inside the namespace at `path` gets the server's byte.
    fn reaches(path: &Path) -> anyhow::Result<bool> {
        let netns = File::open(path)?;
        std::thread::spawn(move || -> anyhow::Result<bool> {
            move_into_link_name_space(netns.as_fd(), Some(LinkNameSpaceType::Network))?;
            let target = SocketAddr::new(UPSTREAM.into(), PORT);
            let Ok(mut stream) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
                return Ok(false);
            };
            stream.set_read_timeout(Some(Duration::from_secs(1)))?;
            let mut byte = [0u8; 1];
            Ok(matches!(stream.read(&mut byte), Ok(1)))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("probe thread panicked"))?
    }

    /// Air-gap on, checked, and off again, `iterations` times on one attached namespace.
    fn measure_flip(bridge: &BridgeNetwork, iterations: usize) -> anyhow::Result<[(f64, f64); 2]> {
        let _upstream = Upstream::start()?;
        let id = "netbenchflip".parse()?;
        let NetAttachment::Namespace { path, .. } = bridge.attach(&id, &NetworkSpec::default())?
        else {
            anyhow::bail!("the bridge network gave no namespace");
        };
        let path: PathBuf = path;
        let air_gapped = NetworkSpec {
            allow_internet: false,
            ..NetworkSpec::default()
        };
        let mut close = Vec::with_capacity(iterations);
        let mut open = Vec::with_capacity(iterations);
        // The first flow also resolves the sandbox's gateway, so it gets a few tries.
        let mut ready = false;
        for _ in 0..5 {
            ready = reaches(&path)?;
            if ready {
                break;
            }
        }
        anyhow::ensure!(ready, "the upstream is not reachable before the flip");
        for _ in 0..iterations {
            let started = Instant::now();
            bridge.update(&id, &air_gapped)?;
            close.push(started.elapsed());
            anyhow::ensure!(!reaches(&path)?, "a new flow got through the air gap");
            let started = Instant::now();
            bridge.update(&id, &NetworkSpec::default())?;
            open.push(started.elapsed());
            anyhow::ensure!(reaches(&path)?, "the upstream stayed closed after opening");
        }
        bridge.detach(&id)?;
        println!("air-gap flip until new flows are refused (each checked), n = {iterations}");
        let closed = report("  air-gap on", 34, &mut close);
        let opened = report("  air-gap off", 34, &mut open);
        println!(
            "  {:.1}x inside the 10 ms target at p50",
            10.0 / closed.0.max(f64::EPSILON)
        );
        Ok([closed, opened])
    }
}
