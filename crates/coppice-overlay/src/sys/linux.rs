//! `RealOverlaySys`: the host operations of `OverlaySys` on Linux, through safe std calls.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::OverlaySys;

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
