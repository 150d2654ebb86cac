//! The only place that knows the OS: creating network namespaces.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

mod fake;
#[cfg(target_os = "linux")]
mod linux;

pub use fake::FakeNetnsSys;
#[cfg(target_os = "linux")]
pub use linux::RealNetnsSys;

/// Creates network namespaces and names them for other processes.
pub trait NetnsSys: Send + Sync + fmt::Debug + 'static {
    /// A new, empty network namespace, kept alive by the returned descriptor.
    ///
    /// # Errors
    /// The kernel refused (e.g. no privilege).
    fn new_namespace(&self) -> io::Result<OwnedFd>;

    /// A path another process can open to join the namespace behind `fd` while this process
    /// holds `fd`.
    fn path_of(&self, fd: &OwnedFd) -> PathBuf;
}
