//! The few calls rustix does not wrap safely. The only module of coppice-linux with `unsafe`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use rustix::thread::UnshareFlags;

/// What `fork` returned.
#[derive(Debug)]
pub(super) enum Forked {
    /// In the parent, with the child's pid.
    Parent(i32),
    /// In the child.
    Child,
}

/// `fork(2)`.
///
/// The init is single-threaded when it forks, so the child may run arbitrary code.
pub(super) fn fork() -> io::Result<Forked> {
    // SAFETY: the calling process (the outer init) has exactly one thread, so the child does
    // not inherit locks held by other threads; no Rust state is shared across the fork.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// `unshare(2)`.
pub(super) fn unshare(flags: UnshareFlags) -> io::Result<()> {
    // SAFETY: the flags never include CLONE_FILES, the only flag whose effect on other
    // threads' descriptors `unshare_unsafe` warns about, and the caller is single-threaded.
    let result = unsafe { rustix::thread::unshare_unsafe(flags) };
    Ok(result?)
}

/// Sets `IFF_UP` on the loopback interface of the current network namespace.
pub(super) fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2) with constant arguments; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = libc::c_char::from_ne_bytes([*byte]);
    }
    // SAFETY: `request` is a valid ifreq naming "lo"; SIOCGIFFLAGS writes only into it.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { request.ifr_ifru.ifru_flags };
    request.ifr_ifru.ifru_flags = flags | i16::try_from(libc::IFF_UP).unwrap_or(1);
    // SAFETY: `request` is a valid ifreq; SIOCSIFFLAGS only reads it.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every descriptor from `first` up to and including `last`.
pub(super) fn close_range(first: RawFd, last: RawFd) -> io::Result<()> {
    if first > last {
        return Ok(());
    }
    let (Ok(first), Ok(last)) = (u32::try_from(first), u32::try_from(last)) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: closing descriptors the init does not use; it holds no Rust handle to any of
    // them (the caller keeps only the descriptors outside the range).
    let result = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `dup2(source, target)`: makes descriptor number `target` refer to `source`'s file.
pub(super) fn dup_onto(source: &impl std::os::fd::AsFd, target: RawFd) -> io::Result<()> {
    // SAFETY: `source` is a live descriptor borrowed for the call; `target` is a standard
    // descriptor number that no Rust handle owns exclusively (std's stdio uses the number).
    let result = unsafe { libc::dup2(source.as_fd().as_raw_fd(), target) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes ownership of descriptor `fd`, inherited across `exec` under a number the previous
/// image passed on the command line.
///
/// The caller must only pass a number that no handle in this process owns yet; the init does
/// so once, at start, for the two numbers its previous image named.
pub(super) fn adopt_inherited(fd: RawFd) -> OwnedFd {
    // SAFETY: per the contract above, `fd` is an open descriptor this process owns and no
    // other handle refers to.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `execve(2)` of `program` with `args` after the program name and an environment holding
/// only a default `PATH` (nothing of the daemon's environment may reach a sandbox); returns
/// only on failure.
pub(super) fn exec(program: &std::path::Path, args: &[String]) -> io::Error {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = CString::new(program.as_os_str().as_bytes()) else {
        return io::Error::from(io::ErrorKind::InvalidInput);
    };
    let mut owned = vec![path.clone()];
    for arg in args {
        match CString::new(arg.as_bytes()) {
            Ok(arg) => owned.push(arg),
            Err(_) => return io::Error::from(io::ErrorKind::InvalidInput),
        }
    }
    let mut argv: Vec<*const libc::c_char> = owned.iter().map(|arg| arg.as_ptr()).collect();
    argv.push(std::ptr::null());
    let path_variable = c"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let envp = [path_variable.as_ptr(), std::ptr::null()];
    // SAFETY: `path`, every `argv` entry and the one `envp` entry are NUL-terminated strings
    // kept alive for the call, and both arrays end with a null pointer as execve(2) requires.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// Sets `SIGCHLD` to `SIG_IGN` (children are reaped by the kernel) or back to `SIG_DFL`.
pub(super) fn set_sigchld_ignored(ignored: bool) -> io::Result<()> {
    let disposition = if ignored {
        libc::SIG_IGN
    } else {
        libc::SIG_DFL
    };
    // SAFETY: installs one of the two predefined dispositions, not a handler function, so no
    // code runs in signal context; the caller is single-threaded.
    let previous = unsafe { libc::signal(libc::SIGCHLD, disposition) };
    if previous == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
