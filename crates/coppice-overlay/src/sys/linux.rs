//! `RealOverlaySys`: the host operations of `OverlaySys` on Linux, through std and rustix
//! calls, and the one `ioctl` that makes a btrfs subvolume (the crate's only `unsafe`).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::OverlaySys;

/// Largest attribute list or value read (the kernel's own limit is 64 KiB).
const XATTR_BUFFER: usize = 64 * 1024;

/// The kernel's non-blocking entropy source; always present on Linux.
const URANDOM: &str = "/dev/urandom";

/// `statfs` type of btrfs.
const BTRFS_SUPER_MAGIC: rustix::fs::FsWord = 0x9123_683E;
/// Longest subvolume name (`BTRFS_PATH_NAME_MAX`).
const BTRFS_PATH_NAME_MAX: usize = 4087;
/// `_IOW(0x94, 14, struct btrfs_ioctl_vol_args)`: makes a subvolume in the directory the
/// call is made on.
const BTRFS_IOC_SUBVOL_CREATE: libc::Ioctl = 0x5000_940E;

/// `struct btrfs_ioctl_vol_args` of `linux/btrfs.h`: 4096 bytes.
#[repr(C)]
struct BtrfsVolArgs {
    fd: i64,
    name: [u8; BTRFS_PATH_NAME_MAX + 1],
}

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

    fn make_volume_dir(&self, parent: &Path, name: &str) -> io::Result<bool> {
        let dir = rustix::fs::open(
            parent,
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        if rustix::fs::fstatfs(&dir)?.f_type != BTRFS_SUPER_MAGIC {
            std::fs::create_dir(parent.join(name))?;
            return Ok(false);
        }
        let mut args = BtrfsVolArgs {
            fd: 0,
            name: [0; BTRFS_PATH_NAME_MAX + 1],
        };
        let bytes = name.as_bytes();
        if bytes.is_empty()
            || bytes.len() > BTRFS_PATH_NAME_MAX
            || bytes.contains(&0)
            || bytes.contains(&b'/')
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a subvolume name",
            ));
        }
        args.name[..bytes.len()].copy_from_slice(bytes);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
        // `args` is fully initialised and outlives the call; the kernel only reads it.
        // SAFETY: `fd` is an open directory and `args` a live `btrfs_ioctl_vol_args`.
        let result = unsafe { libc::ioctl(fd, BTRFS_IOC_SUBVOL_CREATE, &raw const args) };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(true)
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
