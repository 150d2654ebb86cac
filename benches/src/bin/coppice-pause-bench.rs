//! `coppice-pause-bench`: pause and resume through the manager. Prints p50/p95 of the
//! in-memory pause and resume of a sandbox running envd and a process holding memory, beside
//! the kernel's floor in the same run (a plain process in its own freezer cgroup, frozen and
//! thawed directly), then the filesystem pause and its resume (a fresh boot on the kept
//! root), then forks of the running sandbox (one, and twenty in one call) beside a plain
//! create. Ends with one JSON line (`RESULT {...}`). Root only. Also acts as the sandbox init
//! and as envd.
//!
//! Usage: `coppice-pause-bench [--iterations N] [--resident-mib N]`.
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
    }

    fn options() -> anyhow::Result<Options> {
        let mut options = Options {
            iterations: 200,
            resident_mib: 50,
        };
        coppice_benches::read_counts(&mut [
            ("iterations", &mut options.iterations, 1),
            ("resident-mib", &mut options.resident_mib, 0),
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

    pub async fn run() -> anyhow::Result<()> {
        let options = options()?;
        let exe = std::env::current_exe()?;
        let env = ManagerEnv::start(&exe, true).await?;
        let manager = &env.manager;
        let mut spec = SandboxSpec::new("base".parse()?);
        spec.memory_mb = u32::try_from(options.resident_mib + 256).unwrap_or(u32::MAX);
        let sandbox = manager.create(spec).await?;
        // A process that holds its memory (touched, so resident) for the whole run.
        let hold = format!(
            "setsid python3 -c 'import time; b = bytearray({} << 20); b[::4096] = b\"x\" * len(b[::4096]); time.sleep(1e6)' >/dev/null 2>&1 < /dev/null &",
            options.resident_mib
        );
        let started = manager
            .exec(&sandbox.id, ExecRequest::new(["sh", "-c", &hold]))
            .await?;
        anyhow::ensure!(started.status.success(), "start the holder: {started:?}");
        // The holder is found by its command line once its memory is touched.
        let mut held = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let found = manager
                .exec(
                    &sandbox.id,
                    ExecRequest::new(["sh", "-c", "grep -l bytearray /proc/[0-9]*/cmdline"]),
                )
                .await?;
            if found.status.success() {
                held = true;
                break;
            }
        }
        anyhow::ensure!(held, "the memory holder did not start");
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
            "resident_mib": options.resident_mib,
        });
        println!("RESULT {result}");
        Ok(())
    }
}
