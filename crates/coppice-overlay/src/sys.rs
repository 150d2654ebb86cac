//! The syscall seam: the few host operations that need privilege or real entropy, behind
//! `OverlaySys`, with the real implementation for Linux and a recording fake for tests.
//!
//! This is the only file that selects modules by `target_os`. Everything else in the crate is
//! portable Unix code that runs (and is tested) on any host.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::error::OverlayError;

#[cfg(test)]
mod fake;
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod linux;

#[cfg(test)]
pub(crate) use fake::{FakeOverlaySys, SysCall, SysOp};

/// The host operations overlay storage needs beyond plain file I/O.
pub(crate) trait OverlaySys: Send + Sync + fmt::Debug + 'static {
    /// Changes the owner of `path`, not following a symlink at `path` itself.
    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;

    /// Fills `buf` with random bytes from the operating system.
    fn fill_random(&self, buf: &mut [u8]) -> io::Result<()>;

    /// Makes an overlayfs whiteout (a character device 0/0) at `path`.
    fn make_whiteout(&self, path: &Path) -> io::Result<()>;

    /// Copies every extended attribute of `src` to `dst` (overlayfs keeps its opaque and
    /// redirect marks there), following neither if it is a symlink.
    fn copy_xattrs(&self, src: &Path, dst: &Path) -> io::Result<()>;

    /// Makes directory `name` in `parent`: a btrfs subvolume where `parent` is on btrfs (so
    /// that it can be snapshotted and given a quota on its own), a plain directory elsewhere.
    /// Returns whether it is a subvolume. Either is removed like a directory.
    fn make_volume_dir(&self, parent: &Path, name: &str) -> io::Result<bool>;
}

/// The real implementation for this host.
///
/// # Errors
/// `Unsupported` where overlayfs does not exist (anything but Linux).
pub(crate) fn real() -> Result<Arc<dyn OverlaySys>, OverlayError> {
    #[cfg(target_os = "linux")]
    {
        Ok(Arc::new(linux::RealOverlaySys))
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(OverlayError::Unsupported)
    }
}
