//! Linux: network namespaces made on a throw-away thread.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use rustix::thread::UnshareFlags;

use super::NetnsSys;

/// Creates namespaces with `unshare(CLONE_NEWNET)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealNetnsSys;

impl NetnsSys for RealNetnsSys {
    fn new_namespace(&self) -> io::Result<OwnedFd> {
        // unshare moves only the calling thread; a thread made for it takes the namespace
        // with it when it ends, leaving the descriptor as the only reference.
        std::thread::Builder::new()
            .name("netns".into())
            .spawn(|| {
                // SAFETY: CLONE_NEWNET is not CLONE_FILES, the flag whose effect on other
                // threads' descriptor tables `unshare_unsafe` warns about; this thread ends
                // right after and shares nothing that depends on its network namespace.
                unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }?;
                Ok(OwnedFd::from(File::open("/proc/thread-self/ns/net")?))
            })?
            .join()
            .map_err(|_| io::Error::other("network namespace thread panicked"))?
    }

    fn path_of(&self, fd: &OwnedFd) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            fd.as_raw_fd()
        ))
    }
}
