//! The only place that knows the OS: the `NsSys` seam the runtime calls through, its real
//! implementation on Linux, and a recording fake on every OS.

use std::fmt;
use std::io;
use std::path::Path;
use std::time::Duration;

use crate::config::InitCommand;
use crate::protocol::ReadyMessage;

mod fake;
#[cfg(target_os = "linux")]
mod linux;

pub use fake::{FakeNsCall, FakeNsSys};
#[cfg(target_os = "linux")]
pub use linux::{RealNsSys, init_main};

/// The host-side process operations the runtime needs.
pub trait NsSys: Send + Sync + fmt::Debug + 'static {
    /// Has the sandbox described by `config` built by an init started with `command`, and
    /// waits up to `timeout` for its report (`None` when none came).
    ///
    /// # Errors
    /// The init could not be started or asked.
    fn spawn_init(
        &self,
        command: &InitCommand,
        config: &Path,
        timeout: Duration,
    ) -> io::Result<Option<ReadyMessage>>;

    /// The start time (clock ticks since boot) of a live, non-zombie process; `None` when gone.
    ///
    /// # Errors
    /// An unexpected read failure.
    fn process_start_time(&self, pid: i32) -> io::Result<Option<u64>>;

    /// Sends SIGKILL; a process that is already gone is not an error.
    ///
    /// # Errors
    /// A failure other than `ESRCH`.
    fn kill(&self, pid: i32) -> io::Result<()>;

    /// Waits until `pid` has exited (or `timeout` passes); a process already gone returns at once.
    ///
    /// # Errors
    /// A failure to watch the process.
    fn wait_exit(&self, pid: i32, timeout: Duration) -> io::Result<()>;

    /// Collects the exit status of `pid` if it is a child of this process and has exited.
    fn reap(&self, pid: i32);

    /// Sets `favordynmods` on the cgroup2 mount at `unified`: task migrations stop waiting for
    /// an RCU grace period (milliseconds per sandbox start after an idle spell), at a small
    /// cost to every fork and exit on the host. Returns false where the kernel lacks it.
    ///
    /// # Errors
    /// A failure other than the option being unknown.
    fn favor_dynamic_cgroups(&self, unified: &Path) -> io::Result<bool>;

    /// Removes one empty cgroup directory.
    ///
    /// # Errors
    /// `EBUSY` while tasks remain; any other removal failure.
    fn remove_cgroup(&self, dir: &Path) -> io::Result<()>;

    /// Makes this process adopt orphaned descendants, so exited sandbox inits can be reaped.
    ///
    /// # Errors
    /// The `prctl` failure.
    fn become_subreaper(&self) -> io::Result<()>;

    /// Opens the root directory of process `pid` (its `/proc/<pid>/root`) as a path-only
    /// descriptor.
    ///
    /// # Errors
    /// `NotFound` when the process is gone; permission failures.
    fn open_root(&self, pid: i32) -> io::Result<std::os::fd::OwnedFd>;

    /// Runs `criu` with `args` to the end; an exit other than success is an error saying so.
    ///
    /// # Errors
    /// CRIU cannot be run, or it failed.
    fn run_criu(&self, criu: &Path, args: &[std::ffi::OsString]) -> io::Result<()>;

    /// Has the init started with `command` restore the sandbox described by `config` from the
    /// checkpoint in `images` with `criu`, and waits up to `timeout` for its report (`None`
    /// when none came).
    ///
    /// # Errors
    /// The init could not be started or read.
    fn restore_init(
        &self,
        command: &InitCommand,
        config: &Path,
        images: &Path,
        criu: &Path,
        timeout: Duration,
    ) -> io::Result<Option<ReadyMessage>>;
}
