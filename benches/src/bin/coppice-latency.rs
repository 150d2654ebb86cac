//! `coppice-latency`: the latency and density harness. Prints p50/p95 of sandbox
//! create → exec `/bin/true` → destroy, in process, side by side with `bwrap /bin/true` in the
//! same run, their ratio, and the host memory per idle sandbox for N concurrent sandboxes.
//! Also prints one JSON line (`RESULT {...}`) for comparison across commits. Root only.
//!
//! Usage: `coppice-latency [--iterations N] [--density N]`.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some(coppice_tests::harness::INIT_SUBCOMMAND) {
        return coppice_linux::init_main(std::env::args_os().skip(2));
    }
    match linux::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("coppice-latency: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    eprintln!("coppice-latency needs Linux");
    std::process::ExitCode::FAILURE
}

#[cfg(target_os = "linux")]
mod linux {
    use std::fs;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use coppice_benches::{bwrap_true, create_exec_true_kill, millis, percentiles};
    use coppice_core::SandboxSpec;
    use coppice_core::exec::ExecRequest;
    use coppice_core::runtime::{Runtime, RuntimeSpec};
    use coppice_core::storage::Storage;
    use coppice_core::{SandboxId, SandboxManager};
    use coppice_linux::InitCommand;
    use coppice_tests::harness::{HarnessPaths, INIT_SUBCOMMAND, workspace_binary};

    struct Options {
        iterations: usize,
        density: usize,
    }

    fn options() -> anyhow::Result<Options> {
        let mut options = Options {
            iterations: 300,
            density: 200,
        };
        coppice_benches::read_counts(&mut [
            ("iterations", &mut options.iterations, 0),
            ("density", &mut options.density, 0),
        ])?;
        Ok(options)
    }

    fn init_command() -> anyhow::Result<InitCommand> {
        let sibling = workspace_binary("coppice-init");
        if sibling.is_file() {
            return Ok(InitCommand::binary(sibling));
        }
        let exe = std::env::current_exe()?;
        Ok(InitCommand {
            program: exe,
            leading_args: vec![INIT_SUBCOMMAND.to_owned()],
        })
    }

    pub(super) fn run() -> anyhow::Result<()> {
        let options = options()?;
        let dir = tempfile::tempdir()?;
        let paths = HarnessPaths::new(dir.path());
        let init = init_command()?;
        println!("init: {}", init.program.display());
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let result = tokio.block_on(measure(&options, &paths, &init));
        paths.remove_groups();
        result
    }

    async fn measure(
        options: &Options,
        paths: &HarnessPaths,
        init: &InitCommand,
    ) -> anyhow::Result<()> {
        let manager = paths.manager(init).await?;
        let (backends, runtime) = paths.backends(init)?;
        let spec = SandboxSpec::new("base".parse()?);
        for _ in 0..10 {
            manager_cycle(&manager, &spec).await?;
        }

        let mut coppice_manager = Vec::with_capacity(options.iterations);
        let mut coppice_runtime = Vec::with_capacity(options.iterations);
        let mut bwrap = Vec::with_capacity(options.iterations);
        let mut phases = Vec::with_capacity(options.iterations);
        for iteration in 0..options.iterations {
            // Interleaved, so all three see the same machine load; each starts after the
            // kernel finished the previous one's asynchronous teardown (network namespaces are
            // destroyed by a kernel worker), which otherwise lands on whoever runs next.
            settle().await;
            coppice_manager.push(manager_cycle(&manager, &spec).await?);
            settle().await;
            coppice_runtime.push(runtime_cycle(
                &*runtime,
                &*backends.storage,
                iteration,
                &mut phases,
            )?);
            settle().await;
            let started = Instant::now();
            let status = bwrap_true()
                .status()
                .context("running bwrap (apt-get install bubblewrap)")?;
            anyhow::ensure!(status.success(), "bwrap failed: {status}");
            bwrap.push(started.elapsed());
        }
        let (manager_p50, manager_p95) = percentiles(&mut coppice_manager);
        let (runtime_p50, runtime_p95) = percentiles(&mut coppice_runtime);
        let (bwrap_p50, bwrap_p95) = percentiles(&mut bwrap);
        println!(
            "create -> exec /bin/true -> destroy, n = {}",
            options.iterations
        );
        println!(
            "  coppice (manager, persisted)  p50 {:7.3} ms  p95 {:7.3} ms",
            millis(manager_p50),
            millis(manager_p95)
        );
        println!(
            "  coppice (runtime + storage)   p50 {:7.3} ms  p95 {:7.3} ms",
            millis(runtime_p50),
            millis(runtime_p95)
        );
        println!(
            "  bwrap /bin/true (peer)        p50 {:7.3} ms  p95 {:7.3} ms",
            millis(bwrap_p50),
            millis(bwrap_p95)
        );
        print_phases(&phases);
        let ratio = manager_p50.as_secs_f64() / bwrap_p50.as_secs_f64().max(f64::EPSILON);
        println!("  ratio coppice/bwrap at p50: {ratio:.2}");

        let density = density(&manager, &spec, options.density).await?;
        println!(
            "density: {} idle sandboxes started in {:.0} ms ({:.2} ms each), host memory {:.0} KiB per sandbox",
            options.density,
            millis(density.start_total),
            millis(density.start_total) / options.density as f64,
            density.kib_per_sandbox
        );
        let result = serde_json::json!({
            "iterations": options.iterations,
            "manager_p50_ms": millis(manager_p50), "manager_p95_ms": millis(manager_p95),
            "runtime_p50_ms": millis(runtime_p50), "runtime_p95_ms": millis(runtime_p95),
            "bwrap_p50_ms": millis(bwrap_p50), "bwrap_p95_ms": millis(bwrap_p95),
            "ratio_p50": ratio,
            "density": options.density,
            "density_start_ms": millis(density.start_total),
            "density_kib_per_sandbox": density.kib_per_sandbox,
        });
        println!("RESULT {result}");
        Ok(())
    }

    /// Time for the kernel's asynchronous clean-up of the previous measurement.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    async fn manager_cycle(
        manager: &SandboxManager,
        spec: &SandboxSpec,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        create_exec_true_kill(manager, spec).await?;
        Ok(started.elapsed())
    }

    fn runtime_cycle(
        runtime: &dyn Runtime,
        storage: &dyn Storage,
        iteration: usize,
        phases: &mut Vec<[Duration; 6]>,
    ) -> anyhow::Result<Duration> {
        let id: SandboxId = format!("bench{iteration}").parse()?;
        let spec = RuntimeSpec {
            defaults: coppice_core::runtime::ProcessDefaults::default(),
            hostname: id.to_string(),
            vcpus: 1,
            memory_mb: 512,
            max_pids: 1024,
            env: Vec::new(),
            network: coppice_core::net::NetAttachment::LoopbackOnly,
            volumes: Vec::new(),
            root_use: coppice_core::runtime::RootUse::Fresh,
        };
        let started = Instant::now();
        let mut marks = [Duration::ZERO; 6];
        let root = storage.create_rootfs(&id, &"base".parse()?, 1024)?;
        marks[0] = started.elapsed();
        runtime.create(&id, &spec, &root)?;
        marks[1] = started.elapsed();
        runtime.start(&id)?;
        marks[2] = started.elapsed();
        let outcome = runtime.exec(&id, &ExecRequest::new(["/bin/true"]))?;
        marks[3] = started.elapsed();
        runtime.destroy(&id)?;
        marks[4] = started.elapsed();
        storage.destroy_rootfs(&id)?;
        marks[5] = started.elapsed();
        let elapsed = started.elapsed();
        phases.push(marks);
        anyhow::ensure!(outcome.status.success(), "/bin/true failed: {outcome:?}");
        Ok(elapsed)
    }

    /// Median time spent in each step of the runtime-level cycle.
    fn print_phases(phases: &[[Duration; 6]]) {
        const NAMES: [&str; 6] = [
            "create rootfs",
            "runtime create",
            "start (init ready)",
            "exec /bin/true",
            "destroy",
            "destroy rootfs",
        ];
        let mut line = String::from("  runtime steps (p50):");
        for (step, name) in NAMES.iter().enumerate() {
            let mut spans: Vec<Duration> = phases
                .iter()
                .map(|marks| {
                    marks[step]
                        - if step == 0 {
                            Duration::ZERO
                        } else {
                            marks[step - 1]
                        }
                })
                .collect();
            let (p50, _) = percentiles(&mut spans);
            line.push_str(&format!(" {name} {:.3} ms;", millis(p50)));
        }
        println!("{line}");
    }

    struct Density {
        start_total: Duration,
        kib_per_sandbox: f64,
    }

    fn mem_available_kib() -> anyhow::Result<f64> {
        let meminfo = fs::read_to_string("/proc/meminfo")?;
        let line = meminfo
            .lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .context("no MemAvailable")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("bad MemAvailable")?
            .parse()?)
    }

    async fn density(
        manager: &SandboxManager,
        spec: &SandboxSpec,
        count: usize,
    ) -> anyhow::Result<Density> {
        let _ = fs::write("/proc/sys/vm/drop_caches", "3");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = mem_available_kib()?;
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let manager = Arc::new(manager.clone());
        for _ in 0..count {
            let manager = Arc::clone(&manager);
            let spec = spec.clone();
            tasks.spawn(async move { manager.create(spec).await });
        }
        let mut ids = Vec::with_capacity(count);
        while let Some(created) = tasks.join_next().await {
            ids.push(created??.id);
        }
        let start_total = started.elapsed();
        let _ = fs::write("/proc/sys/vm/drop_caches", "3");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = mem_available_kib()?;
        for id in &ids {
            manager.kill(id).await?;
        }
        Ok(Density {
            start_total,
            kib_per_sandbox: (before - after) / count as f64,
        })
    }
}
