//! Shared pieces of the coppice benches: percentiles, the peer (`bwrap`) invocation, the
//! entry point of the harnesses that are also a sandbox's init and envd, and the
//! `Process/Start` request they time.
#![forbid(unsafe_code)]

use std::process::{Command, Stdio};
use std::time::Duration;

/// One measured cycle: create a sandbox, run `/bin/true` in it, kill it.
///
/// # Errors
/// Any step failing, or `/bin/true` not succeeding.
pub async fn create_exec_true_kill(
    manager: &coppice_core::SandboxManager,
    spec: &coppice_core::SandboxSpec,
) -> anyhow::Result<()> {
    let sandbox = manager.create(spec.clone()).await?;
    let outcome = manager
        .exec(
            &sandbox.id,
            coppice_core::exec::ExecRequest::new(["/bin/true"]),
        )
        .await?;
    manager.kill(&sandbox.id).await?;
    anyhow::ensure!(outcome.status.success(), "/bin/true failed: {outcome:?}");
    Ok(())
}

/// Reads `--name N` pairs from the command line into `counts`: each entry is a flag name,
/// the number it sets, and the least value accepted (smaller ones are raised to it).
///
/// # Errors
/// A flag without a value, a value that is not a number, or an unknown flag.
pub fn read_counts(counts: &mut [(&str, &mut usize, usize)]) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value: usize = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?
            .parse()
            .with_context(|| format!("{flag} needs a number"))?;
        let (_, count, least) = counts
            .iter_mut()
            .find(|(name, _, _)| flag.strip_prefix("--") == Some(*name))
            .with_context(|| format!("unknown flag {flag}"))?;
        **count = value.max(*least);
    }
    Ok(())
}

/// Prints `label` padded to `width`, then p50 and p95 of `samples` (which it sorts); returns
/// them in milliseconds.
pub fn report(label: &str, width: usize, samples: &mut [Duration]) -> (f64, f64) {
    let (p50, p95) = percentiles(samples);
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{label:<width$} p50 {:>8.3} ms   p95 {:>8.3} ms",
            millis(p50),
            millis(p95)
        );
    }
    (millis(p50), millis(p95))
}

/// p50 and p95 (nearest rank) of `samples`, which it sorts.
pub fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort_unstable();
    let rank = |p: usize| {
        let index = (samples.len() * p).div_ceil(100).saturating_sub(1);
        samples.get(index).copied().unwrap_or_default()
    };
    (rank(50), rank(95))
}

/// Milliseconds with three decimals.
pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// `bwrap` running `/bin/true` in the same set of namespaces as a coppice sandbox, with a
/// read-only host `/usr`, fresh `/proc`, `/dev` and `/tmp` (the reference peer).
pub fn bwrap_true() -> Command {
    let mut command = Command::new("bwrap");
    command
        .args(["--unshare-all", "--die-with-parent", "--new-session"])
        .args(["--ro-bind", "/usr", "/usr"])
        .args([
            "--symlink",
            "usr/bin",
            "/bin",
            "--symlink",
            "usr/lib",
            "/lib",
        ])
        .args([
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--symlink",
            "usr/sbin",
            "/sbin",
        ])
        .args([
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--hostname",
            "sandbox",
        ])
        .args(["--cap-drop", "ALL", "/bin/true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// The entry point of a harness binary that is also the init and envd of its sandboxes:
/// dispatches those modes, else runs `run` on a tokio runtime and reports its error.
#[cfg(target_os = "linux")]
pub fn harness_main<F, Fut>(name: &str, run: F) -> std::process::ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use coppice_tests::harness::{ENVD_SUBCOMMAND, INIT_SUBCOMMAND};
    match std::env::args().nth(1).as_deref() {
        Some(INIT_SUBCOMMAND) => return coppice_linux::init_main(std::env::args_os().skip(2)),
        Some(ENVD_SUBCOMMAND) => {
            return coppice_envd::cli::main(
                std::iter::once("coppice-envd".into()).chain(std::env::args_os().skip(2)),
            );
        }
        _ => {}
    }
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run()));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("{name}: {error:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// A `process.Process/Start` request body for `/bin/true` (one Connect JSON envelope).
pub fn start_true_envelope() -> bytes::Bytes {
    let message = br#"{"process":{"cmd":"/bin/true"},"stdin":false}"#;
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap_or(0).to_be_bytes());
    framed.extend_from_slice(message);
    bytes::Bytes::from(framed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_percentiles_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(
            percentiles(&mut samples),
            (Duration::from_millis(50), Duration::from_millis(95))
        );
    }

    #[test]
    fn test_percentiles_of_empty_is_zero() {
        assert_eq!(percentiles(&mut []), (Duration::ZERO, Duration::ZERO));
    }
}
