//! The only place that knows the host: commands (`bhyve`, `bhyveload`, `bhyvectl`, `zfs`,
//! `ngctl`), the bhyve processes, and `/dev/vmm`. Safe code throughout: std runs the
//! processes and rustix signals them.

use std::io;
use std::path::Path;

#[cfg(test)]
pub(crate) mod fake;
mod host;

pub use host::HostBhyveSys;

/// A signal the runtime sends a VM's bhyve process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmSignal {
    /// Stop every vCPU where it is (pause, or hold a pooled VM).
    Stop,
    /// Let them run again.
    Continue,
    /// End the VM at once.
    Kill,
}

/// What running VMs needs of the host.
pub trait BhyveSys: Send + Sync + 'static {
    /// Runs one command (program first) to completion, with `stdin` if given; its standard
    /// output.
    ///
    /// # Errors
    /// It could not start or exited with a failure (its standard error in the message).
    fn run(&self, argv: &[String], stdin: Option<&str>) -> io::Result<String>;

    /// Starts a long-running process (bhyve) in a session of its own, output appended to
    /// `log`, so that it outlives this daemon; its pid.
    ///
    /// # Errors
    /// It could not start.
    fn spawn(&self, argv: &[String], log: &Path) -> io::Result<i32>;

    /// Whether process `pid` is alive and is VM `vm`'s bhyve (a pid recorded before a
    /// restart may belong to another process by now).
    fn runs_vm(&self, pid: i32, vm: &str) -> bool;

    /// Sends `signal` to `pid`; a process already gone is not an error.
    ///
    /// # Errors
    /// Another failure.
    fn signal(&self, pid: i32, signal: VmSignal) -> io::Result<()>;

    /// Whether the kernel holds VM `name` (`/dev/vmm/<name>`).
    fn vm_exists(&self, name: &str) -> bool;
}
