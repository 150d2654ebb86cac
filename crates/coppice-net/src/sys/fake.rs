//! A fake `NetnsSys`: "namespaces" are descriptors of `/dev/null`, counted.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::NetnsSys;

/// Counts the namespaces it pretends to create; can be told to fail.
#[derive(Debug, Default)]
pub struct FakeNetnsSys {
    created: AtomicUsize,
    failing: std::sync::atomic::AtomicBool,
}

impl FakeNetnsSys {
    /// How many namespaces were created.
    pub fn created(&self) -> usize {
        self.created.load(Ordering::SeqCst)
    }

    /// Makes every further creation fail.
    pub fn fail(&self) {
        self.failing.store(true, Ordering::SeqCst);
    }
}

impl NetnsSys for FakeNetnsSys {
    fn new_namespace(&self) -> io::Result<OwnedFd> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        self.created.fetch_add(1, Ordering::SeqCst);
        Ok(OwnedFd::from(File::open("/dev/null")?))
    }

    fn path_of(&self, fd: &OwnedFd) -> PathBuf {
        PathBuf::from(format!("/fake/fd/{}", fd.as_raw_fd()))
    }
}
