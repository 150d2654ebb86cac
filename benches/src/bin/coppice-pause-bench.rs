//! `coppice-pause-bench`: pause and resume through the manager. Prints p50/p95 of the
//! in-memory pause and resume of a sandbox running envd and a process holding memory, beside
//! the kernel's floor in the same run (a plain process in its own freezer cgroup, frozen and
//! thawed directly), then the filesystem pause and its resume (a fresh boot on the kept
//! root), then the durable pause (memory written to disk with CRIU) and its restore beside
//! CRIU dumping and restoring a plain process holding the same memory, for the sandbox's
//! size and for a larger one (with MB/s), and for a sandbox on a bridge network of its own
//! (whose restore also gets a new veth pair on its port), then forks of the running sandbox
//! (one, and twenty in one call) beside a plain create. Ends with one JSON line (`RESULT {...}`). Root only.
//! Also acts as the sandbox init and as envd.
//!
//! Usage: `coppice-pause-bench [--iterations N] [--resident-mib N] [--large-mib N]`.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    coppice_benches::harness_main("coppice-pause-bench", linux::run)
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    eprintln!("coppice-pause-bench needs Linux");
    std::process::ExitCode::FAILURE
}

#[cfg(target_os = "linux")]
mod linux {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use coppice_core::exec::ExecRequest;
    use coppice_core::manager::{ResumeOptions, ResumeOutcome};
    use coppice_core::{PauseMode, SandboxSpec};
    use coppice_tests::harness::ManagerEnv;

    const FREEZER_ROOT: &str = "/sys/fs/cgroup/freezer";

    struct Options {
        iterations: usize,
        resident_mib: usize,
        large_mib: usize,
    }

    fn options() -> anyhow::Result<Options> {
        let mut options = Options {
            iterations: 200,
            resident_mib: 50,
            large_mib: 400,
        };
        coppice_benches::read_counts(&mut [
            ("iterations", &mut options.iterations, 1),
            ("resident-mib", &mut options.resident_mib, 0),
            ("large-mib", &mut options.large_mib, 0),
        ])?;
        Ok(options)
    }

    fn report(label: &str, samples: &mut [Duration]) -> (f64, f64) {
        coppice_benches::report(label, 44, samples)
    }

    /// The floor: a plain `sleep` in a freezer cgroup of its own, toggled by hand.
    struct FreezerFloor {
        dir: PathBuf,
        child: std::process::Child,
    }

    impl FreezerFloor {
        fn new() -> anyhow::Result<Self> {
            let dir = Path::new(FREEZER_ROOT).join(format!("coppice-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            let child = std::process::Command::new("sleep").arg("100000").spawn()?;
            std::fs::write(dir.join("cgroup.procs"), child.id().to_string())?;
            Ok(Self { dir, child })
        }

        fn set(&self, state: &str) -> anyhow::Result<()> {
            let file = self.dir.join("freezer.state");
            std::fs::write(&file, state)?;
            while std::fs::read_to_string(&file)?.trim() != state {
                std::thread::sleep(Duration::from_micros(20));
            }
            Ok(())
        }
    }

    impl Drop for FreezerFloor {
        fn drop(&mut self) {
            let _ = self.set("THAWED");
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir(&self.dir);
        }
    }

    /// The python line that holds `mib` MiB, touched so it is resident, until killed.
    fn holder_script(mib: usize) -> String {
        format!(
            "import os, time; os.setsid(); b = bytearray({mib} << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1e6)"
        )
    }

    /// Starts a process in the sandbox that holds `mib` MiB, and waits until it does.
    async fn hold_memory(
        manager: &coppice_core::manager::SandboxManager,
        id: &coppice_core::SandboxId,
        mib: usize,
    ) -> anyhow::Result<()> {
        let hold = format!(
            "python3 -c \"{}\" >/dev/null 2>&1 < /dev/null &",
            holder_script(mib)
        );
        let started = manager
            .exec(id, ExecRequest::new(["sh", "-c", &hold]))
            .await?;
        anyhow::ensure!(started.status.success(), "start the holder: {started:?}");
        // The holder is found by its command line once its memory is touched.
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let found = manager
                .exec(
                    id,
                    ExecRequest::new(["sh", "-c", "grep -l bytearray /proc/[0-9]*/cmdline"]),
                )
                .await?;
            if found.status.success() {
                // Touching takes a moment after the process shows.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Ok(());
            }
        }
        anyhow::bail!("the memory holder did not start")
    }

    /// Bytes as (decimal) megabytes.
    #[allow(clippy::cast_precision_loss)]
    fn mb(bytes: u64) -> f64 {
        bytes as f64 / 1e6
    }

    /// Bytes under `dir`.
    fn size_of(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.metadata().ok())
            .filter(|metadata| metadata.is_file())
            .map(|metadata| metadata.len())
            .sum()
    }

    const BRIDGE: &str = "cppause0";

    /// Durable pause and restore of a sandbox holding `mib` MiB on a bridge network of its
    /// own, `iterations` times.
    async fn bridged_durable(
        exe: &Path,
        mib: usize,
        iterations: usize,
    ) -> anyhow::Result<(Vec<Duration>, Vec<Duration>, u64)> {
        use std::sync::Arc;

        use coppice_net::{BridgeConfig, BridgeNetwork, RealNetnsSys};

        let state = tempfile::tempdir()?;
        let mut config = BridgeConfig::new(BRIDGE, state.path().join("net"));
        config.ipv4 = "10.219.0.0/24".parse()?;
        config.ipv6 = "fd00:c0:219::/64".parse()?;
        config.pool_size = 2;
        config.sandbox_ids = Some(coppice_tests::harness::sandbox_id_map());
        let bridge = Arc::new(
            BridgeNetwork::start(config, Arc::new(RealNetnsSys))
                .context("starting the bridge network")?,
        );
        let measured = async {
            let env = ManagerEnv::start_with_net(exe, true, bridge.clone()).await?;
            let mut spec = SandboxSpec::new("base".parse()?);
            spec.memory_mb = u32::try_from(mib + 256).unwrap_or(u32::MAX);
            let sandbox = env.manager.create(spec).await?;
            hold_memory(&env.manager, &sandbox.id, mib).await?;
            let cycles = durable_cycles(&env, &sandbox.id, iterations).await;
            env.manager.kill(&sandbox.id).await?;
            cycles
        }
        .await;
        drop(bridge);
        for family in ["inet", "bridge"] {
            let _ = std::process::Command::new("nft")
                .args(["delete", "table", family, &format!("coppice_{BRIDGE}")])
                .status();
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", BRIDGE])
            .status();
        measured
    }

    /// Durable pause and restore of `id` `iterations` times; the images' size of the last.
    async fn durable_cycles(
        env: &ManagerEnv,
        id: &coppice_core::SandboxId,
        iterations: usize,
    ) -> anyhow::Result<(Vec<Duration>, Vec<Duration>, u64)> {
        let manager = &env.manager;
        let resume = ResumeOptions {
            timeout: Duration::from_secs(600),
            keep_memory: None,
        };
        let images = env
            .dir
            .path()
            .join("run")
            .join(id.as_str())
            .join("checkpoint");
        let (mut pauses, mut resumes, mut bytes) = (Vec::new(), Vec::new(), 0);
        for _ in 0..iterations {
            let began = Instant::now();
            let paused = manager.pause(id, PauseMode::Durable).await?;
            pauses.push(began.elapsed());
            anyhow::ensure!(
                paused.pause_mode == Some(PauseMode::Durable),
                "not written to disk: {paused:?}"
            );
            bytes = size_of(&images);
            let began = Instant::now();
            let resumed = manager.resume(id, resume).await?;
            resumes.push(began.elapsed());
            anyhow::ensure!(resumed.outcome == ResumeOutcome::Restored, "{resumed:?}");
        }
        Ok((pauses, resumes, bytes))
    }

    /// The floor: CRIU dumping and restoring a plain host process holding `mib` MiB.
    fn criu_floor(mib: usize, iterations: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
        let criu = coppice_tests::harness::criu_binary().context("no CRIU")?;
        let dir = tempfile::tempdir()?;
        let images = dir.path().join("images");
        let pidfile = dir.path().join("pid");
        let mut child = std::process::Command::new("python3")
            .args(["-c", &holder_script(mib)])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(800));
        let mut pid = child.id().to_string();
        let criu_run = |args: &[&str]| -> anyhow::Result<()> {
            let status = std::process::Command::new(&criu)
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()?;
            anyhow::ensure!(status.success(), "criu {args:?}: {status}");
            Ok(())
        };
        let (mut dumps, mut restores) = (Vec::new(), Vec::new());
        let images_arg = images.to_string_lossy().into_owned();
        let pidfile_arg = pidfile.to_string_lossy().into_owned();
        for _ in 0..iterations {
            let _ = std::fs::remove_dir_all(&images);
            let _ = std::fs::remove_file(&pidfile);
            std::fs::create_dir_all(&images)?;
            let began = Instant::now();
            criu_run(&[
                "dump",
                "-t",
                &pid,
                "-D",
                &images_arg,
                "--network-lock",
                "nftables",
            ])?;
            dumps.push(began.elapsed());
            // CRIU ended the process; it is this process's child (the first) or, this process
            // being a subreaper, its adoptee: reaped, so a restore can take its pid again.
            if let Some(dumped) = pid.parse().ok().and_then(rustix::process::Pid::from_raw) {
                let _ =
                    rustix::process::waitpid(Some(dumped), rustix::process::WaitOptions::empty());
            }
            let began = Instant::now();
            criu_run(&[
                "restore",
                "-D",
                &images_arg,
                "--restore-detached",
                "--pidfile",
                &pidfile_arg,
            ])?;
            restores.push(began.elapsed());
            pid = std::fs::read_to_string(&pidfile)?.trim().to_owned();
        }
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid])
            .status();
        let _ = child.kill();
        let _ = child.wait();
        Ok((dumps, restores))
    }

    pub async fn run() -> anyhow::Result<()> {
        let options = options()?;
        let exe = std::env::current_exe()?;
        let env = ManagerEnv::start(&exe, true).await?;
        let manager = &env.manager;
        let mut spec = SandboxSpec::new("base".parse()?);
        spec.memory_mb = u32::try_from(options.resident_mib + 256).unwrap_or(u32::MAX);
        let sandbox = manager.create(spec).await?;
        hold_memory(manager, &sandbox.id, options.resident_mib).await?;
        println!(
            "in-memory pause/resume of one sandbox (envd + {} MiB resident), {} iterations",
            options.resident_mib, options.iterations
        );

        let resume = ResumeOptions {
            timeout: Duration::from_secs(600),
            keep_memory: None,
        };
        let mut pauses = Vec::with_capacity(options.iterations);
        let mut resumes = Vec::with_capacity(options.iterations);
        for _ in 0..options.iterations {
            let began = Instant::now();
            manager.pause(&sandbox.id, PauseMode::Memory).await?;
            pauses.push(began.elapsed());
            let began = Instant::now();
            let resumed = manager.resume(&sandbox.id, resume).await?;
            resumes.push(began.elapsed());
            anyhow::ensure!(resumed.outcome == ResumeOutcome::Thawed, "{resumed:?}");
        }

        let floor = FreezerFloor::new()?;
        let mut floor_freeze = Vec::with_capacity(options.iterations);
        let mut floor_thaw = Vec::with_capacity(options.iterations);
        for _ in 0..options.iterations {
            let began = Instant::now();
            floor.set("FROZEN")?;
            floor_freeze.push(began.elapsed());
            let began = Instant::now();
            floor.set("THAWED")?;
            floor_thaw.push(began.elapsed());
        }
        drop(floor);

        let cold_iterations = (options.iterations / 10).max(5);
        let mut cold_pauses = Vec::with_capacity(cold_iterations);
        let mut cold_resumes = Vec::with_capacity(cold_iterations);
        for _ in 0..cold_iterations {
            let began = Instant::now();
            manager.pause(&sandbox.id, PauseMode::Filesystem).await?;
            cold_pauses.push(began.elapsed());
            let began = Instant::now();
            let resumed = manager.resume(&sandbox.id, resume).await?;
            cold_resumes.push(began.elapsed());
            anyhow::ensure!(resumed.outcome == ResumeOutcome::Rebooted, "{resumed:?}");
        }
        // Durable pause: the reboots above ended the holder, so it starts again.
        hold_memory(manager, &sandbox.id, options.resident_mib).await?;
        let durable_iterations = (options.iterations / 10).max(5);
        let (mut durable_pauses, mut durable_resumes, image_bytes) =
            durable_cycles(&env, &sandbox.id, durable_iterations).await?;
        let (mut floor_dumps, mut floor_restores) =
            criu_floor(options.resident_mib, durable_iterations)?;
        let mut large_spec = SandboxSpec::new("base".parse()?);
        large_spec.memory_mb = u32::try_from(options.large_mib + 256).unwrap_or(u32::MAX);
        let large = manager.create(large_spec).await?;
        hold_memory(manager, &large.id, options.large_mib).await?;
        let (mut large_pauses, mut large_resumes, large_bytes) =
            durable_cycles(&env, &large.id, 3).await?;
        manager.kill(&large.id).await?;
        let (mut bridged_pauses, mut bridged_resumes, bridged_bytes) =
            bridged_durable(&exe, options.resident_mib, durable_iterations).await?;
        // Forks of the running sandbox, with some files written, beside a plain create.
        let files = "mkdir -p /home/user/data && for i in $(seq 1 100); do head -c 4096 /dev/urandom > /home/user/data/f$i; done && head -c 10485760 /dev/urandom > /home/user/data/big";
        let wrote = manager
            .exec(&sandbox.id, ExecRequest::new(["sh", "-c", files]))
            .await?;
        anyhow::ensure!(wrote.status.success(), "write files: {wrote:?}");
        let fork_iterations = (options.iterations / 10).max(5);
        let mut single_forks = Vec::with_capacity(fork_iterations);
        let mut creates = Vec::with_capacity(fork_iterations);
        for _ in 0..fork_iterations {
            let began = Instant::now();
            let forks = manager.fork(&sandbox.id, 1, None).await?;
            single_forks.push(began.elapsed());
            for fork in forks {
                manager.kill(&fork?.id).await?;
            }
            let began = Instant::now();
            let created = manager.create(SandboxSpec::new("base".parse()?)).await?;
            creates.push(began.elapsed());
            manager.kill(&created.id).await?;
        }
        let mut wide_forks = Vec::new();
        for _ in 0..3 {
            let began = Instant::now();
            let forks = manager
                .fork(&sandbox.id, coppice_core::manager::MAX_FORKS, None)
                .await?;
            wide_forks.push(began.elapsed());
            for fork in forks {
                manager.kill(&fork?.id).await?;
            }
        }
        manager.kill(&sandbox.id).await?;

        let pause = report("pause, memory kept (manager)", &mut pauses);
        let resume = report("resume from memory (manager)", &mut resumes);
        let freeze = report("freezer FROZEN, plain process (floor)", &mut floor_freeze);
        let thaw = report("freezer THAWED, plain process (floor)", &mut floor_thaw);
        println!(
            "ratio pause/floor p50 {:.2}, resume/floor p50 {:.2}",
            pause.0 / freeze.0.max(0.001),
            resume.0 / thaw.0.max(0.001)
        );
        println!("filesystem pause and reboot, {cold_iterations} iterations");
        let cold_pause = report("pause, filesystem kept (manager)", &mut cold_pauses);
        let cold_resume = report("resume by reboot on the kept root", &mut cold_resumes);
        println!(
            "durable pause (memory to disk with CRIU) and restore, envd + {} MiB resident, {durable_iterations} iterations; images {:.1} MB",
            options.resident_mib,
            mb(image_bytes)
        );
        let durable_pause = report("durable pause (manager)", &mut durable_pauses);
        let durable_resume = report("resume from disk (manager)", &mut durable_resumes);
        let dump_floor = report("criu dump, plain process (floor)", &mut floor_dumps);
        let restore_floor = report("criu restore, plain process (floor)", &mut floor_restores);
        println!(
            "ratio durable pause/floor p50 {:.2}, resume/floor p50 {:.2}",
            durable_pause.0 / dump_floor.0.max(0.001),
            durable_resume.0 / restore_floor.0.max(0.001)
        );
        println!(
            "durable pause of a larger sandbox ({} MiB resident), 3 iterations; images {:.1} MB",
            options.large_mib,
            mb(large_bytes)
        );
        println!(
            "durable pause of a bridge-networked sandbox (envd + {} MiB resident), {durable_iterations} iterations; images {:.1} MB",
            options.resident_mib,
            mb(bridged_bytes)
        );
        let bridged_pause = report("durable pause, bridge (manager)", &mut bridged_pauses);
        let bridged_resume = report("resume from disk, bridge (manager)", &mut bridged_resumes);
        println!(
            "ratio bridge/loopback p50: pause {:.2}, resume {:.2}",
            bridged_pause.0 / durable_pause.0.max(0.001),
            bridged_resume.0 / durable_resume.0.max(0.001)
        );
        let large_pause = report("durable pause, large (manager)", &mut large_pauses);
        let large_resume = report("resume from disk, large (manager)", &mut large_resumes);
        let (pause_rate, resume_rate) = (
            mb(large_bytes) / (large_pause.0 / 1000.0).max(0.000_001),
            mb(large_bytes) / (large_resume.0 / 1000.0).max(0.000_001),
        );
        println!("large: pause {pause_rate:.0} MB/s, restore {resume_rate:.0} MB/s (p50)");
        println!(
            "forks of the running sandbox (10 MiB + 100 files written), {fork_iterations} iterations"
        );
        let fork = report("fork, 1 sandbox (snapshot + start)", &mut single_forks);
        let create = report("create from the template (peer)", &mut creates);
        let wide = report("fork, 20 sandboxes in one call (wall)", &mut wide_forks);
        println!("ratio fork/create p50 {:.2}", fork.0 / create.0.max(0.001));
        let result = serde_json::json!({
            "fork_p50_ms": fork.0,
            "fork_p95_ms": fork.1,
            "create_p50_ms": create.0,
            "fork20_wall_p50_ms": wide.0,
            "pause_memory_p50_ms": pause.0,
            "pause_memory_p95_ms": pause.1,
            "resume_memory_p50_ms": resume.0,
            "resume_memory_p95_ms": resume.1,
            "floor_freeze_p50_ms": freeze.0,
            "floor_thaw_p50_ms": thaw.0,
            "pause_filesystem_p50_ms": cold_pause.0,
            "resume_reboot_p50_ms": cold_resume.0,
            "pause_durable_p50_ms": durable_pause.0,
            "pause_durable_p95_ms": durable_pause.1,
            "resume_durable_p50_ms": durable_resume.0,
            "resume_durable_p95_ms": durable_resume.1,
            "criu_dump_floor_p50_ms": dump_floor.0,
            "criu_restore_floor_p50_ms": restore_floor.0,
            "durable_image_mb": mb(image_bytes),
            "pause_durable_bridge_p50_ms": bridged_pause.0,
            "pause_durable_bridge_p95_ms": bridged_pause.1,
            "resume_durable_bridge_p50_ms": bridged_resume.0,
            "resume_durable_bridge_p95_ms": bridged_resume.1,
            "large_image_mb": mb(large_bytes),
            "large_pause_mb_per_s": pause_rate,
            "large_restore_mb_per_s": resume_rate,
            "resident_mib": options.resident_mib,
        });
        println!("RESULT {result}");
        Ok(())
    }
}
