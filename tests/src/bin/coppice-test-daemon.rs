//! `coppice-test-daemon`: a sandbox manager over the real backends, driven line by line on
//! stdin, so tests can SIGKILL a "daemon" mid-flight and check what a restart recovers.
//! Also acts as the sandbox init (`__sandbox-init --config …`) and as envd (`__envd …`), so
//! tests need no other binary.
//!
//! Commands: `create`, `exec <id> <shell script>`, `kill <id>`, `list`; one JSON line answers each.
#![forbid(unsafe_code)]

use std::io::{BufRead, Write};
use std::process::ExitCode;

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    use coppice_tests::harness::{
        ENVD_SUBCOMMAND, HarnessPaths, INIT_SUBCOMMAND, test_daemon_init,
    };

    let mut args = std::env::args_os().skip(1);
    let first = args.next();
    if first.as_deref() == Some(std::ffi::OsStr::new(INIT_SUBCOMMAND)) {
        return coppice_linux::init_main(args);
    }
    if first.as_deref() == Some(std::ffi::OsStr::new(ENVD_SUBCOMMAND)) {
        return coppice_envd::cli::main(std::iter::once("coppice-envd".into()).chain(args));
    }
    let (Some(data_dir), Some(group)) = (first, args.next()) else {
        return ExitCode::FAILURE;
    };
    let Ok(exe) = std::env::current_exe() else {
        return ExitCode::FAILURE;
    };
    let paths = HarnessPaths::with_group(
        std::path::Path::new(&data_dir),
        group.to_string_lossy().into_owned(),
    );
    let Ok(runtime) = tokio::runtime::Runtime::new() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(serve(paths, test_daemon_init(&exe))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("coppice-test-daemon: {error:#}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(target_os = "linux")]
async fn serve(
    paths: coppice_tests::harness::HarnessPaths,
    init: coppice_linux::InitCommand,
) -> anyhow::Result<()> {
    use coppice_core::SandboxSpec;
    use coppice_core::exec::ExecRequest;
    use coppice_core::manager::ListFilter;

    let manager = paths.manager(&init).await?;
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line?;
        let mut words = line.splitn(3, ' ');
        let answer = match (words.next(), words.next(), words.next()) {
            (Some("create"), None, None) => {
                let sandbox = manager.create(SandboxSpec::new("base".parse()?)).await?;
                serde_json::json!({ "id": sandbox.id.to_string() })
            }
            (Some("exec"), Some(id), Some(script)) => {
                let outcome = manager
                    .exec(&id.parse()?, ExecRequest::new(["/bin/sh", "-c", script]))
                    .await?;
                serde_json::json!({ "ok": outcome.status.success(), "stdout": String::from_utf8_lossy(&outcome.stdout) })
            }
            (Some("kill"), Some(id), None) => {
                manager.kill(&id.parse()?).await?;
                serde_json::json!({ "killed": id })
            }
            (Some("list"), None, None) => {
                let ids: Vec<String> = manager
                    .list(&ListFilter::default())
                    .into_iter()
                    .map(|s| s.id.to_string())
                    .collect();
                serde_json::json!({ "ids": ids })
            }
            _ => serde_json::json!({ "error": format!("unknown command {line:?}") }),
        };
        writeln!(stdout, "{answer}")?;
        stdout.flush()?;
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    let _ = (
        std::io::stdin().lock().lines().next(),
        std::io::stdout().flush(),
    );
    ExitCode::FAILURE
}
