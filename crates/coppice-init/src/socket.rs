//! Connecting the daemon to a socket in a directory the sandbox can write (its port): the
//! last component is opened without following links and must be a socket, and the
//! connection goes through that descriptor, so a link planted in its place can never send
//! the daemon, which runs as host root, to another socket of the host.

use std::io;
use std::path::{Path, PathBuf};

/// A socket file held open; [`PinnedSocket::path`] reaches exactly it.
#[derive(Debug)]
pub struct PinnedSocket {
    #[cfg(target_os = "linux")]
    _held: std::os::fd::OwnedFd,
    path: PathBuf,
}

impl PinnedSocket {
    /// The path to connect to while this is held.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens the socket at `path` (its directory is trusted, its name is not).
///
/// # Errors
/// The directory or the name cannot be opened; `InvalidInput` when the name is a link or
/// anything but a socket.
#[cfg(target_os = "linux")]
pub fn pin(path: &Path) -> io::Result<PinnedSocket> {
    use rustix::fs::{FileType, Mode, OFlags};
    use std::os::fd::AsRawFd;

    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a socket path needs a directory and a name",
        ));
    };
    let dir = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let held = match rustix::fs::openat(
        &dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(held) => held,
        Err(rustix::io::Errno::LOOP) => return Err(not_a_socket(path)),
        Err(error) => return Err(error.into()),
    };
    let stat = rustix::fs::fstat(&held)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Socket {
        return Err(not_a_socket(path));
    }
    Ok(PinnedSocket {
        path: PathBuf::from(format!("/proc/self/fd/{}", held.as_raw_fd())),
        _held: held,
    })
}

/// Elsewhere the runtimes bind their sockets where only the host can write: the path as is.
///
/// # Errors
/// None.
#[cfg(not(target_os = "linux"))]
pub fn pin(path: &Path) -> io::Result<PinnedSocket> {
    Ok(PinnedSocket {
        path: path.to_owned(),
    })
}

#[cfg(target_os = "linux")]
fn not_a_socket(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{} is not a socket", path.display()),
    )
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::net::{UnixListener, UnixStream};

    use super::*;

    #[test]
    fn test_pinned_socket_connects_and_a_link_or_file_in_its_place_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real.sock");
        let _listener = UnixListener::bind(&real).expect("bind");
        let pinned = pin(&real).expect("pin");
        UnixStream::connect(pinned.path()).expect("connect through the descriptor");

        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        assert_eq!(
            pin(&link).expect_err("a link").kind(),
            io::ErrorKind::InvalidInput
        );
        let file = dir.path().join("file.sock");
        std::fs::write(&file, b"").expect("file");
        assert_eq!(
            pin(&file).expect_err("a file").kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
