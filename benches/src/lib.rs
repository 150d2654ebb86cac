//! Shared pieces of the coppice benches: percentiles and the peer (`bwrap`) invocation.
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
