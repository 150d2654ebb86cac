//! `RealOverlaySys`: the host operations of `OverlaySys` on Linux, through safe std and
//! rustix calls.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::OverlaySys;

/// Largest attribute list or value read (the kernel's own limit is 64 KiB).
const XATTR_BUFFER: usize = 64 * 1024;

/// The kernel's non-blocking entropy source; always present on Linux.
const URANDOM: &str = "/dev/urandom";

/// Calls the host kernel. `lchown` needs root (CAP_CHOWN) for other owners than the caller.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RealOverlaySys;

impl OverlaySys for RealOverlaySys {
    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
    }

    fn fill_random(&self, buf: &mut [u8]) -> io::Result<()> {
        File::open(URANDOM)?.read_exact(buf)
    }

    fn make_whiteout(&self, path: &Path) -> io::Result<()> {
        Ok(rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            rustix::fs::makedev(0, 0),
        )?)
    }

    fn copy_xattrs(&self, src: &Path, dst: &Path) -> io::Result<()> {
        let mut names = vec![0u8; XATTR_BUFFER];
        let len = rustix::fs::llistxattr(src, &mut names)?;
        let mut value = vec![0u8; XATTR_BUFFER];
        for name in names[..len]
            .split(|byte| *byte == 0)
            .filter(|n| !n.is_empty())
        {
            let name = std::ffi::OsStr::from_bytes(name);
            let size = rustix::fs::lgetxattr(src, name, &mut value)?;
            rustix::fs::lsetxattr(dst, name, &value[..size], rustix::fs::XattrFlags::empty())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_fill_random_two_reads_differ() {
        let mut first = [0u8; 16];
        let mut second = [0u8; 16];

        RealOverlaySys.fill_random(&mut first).unwrap();
        RealOverlaySys.fill_random(&mut second).unwrap();

        assert_ne!(first, second);
    }
}
