//! Collecting children without reaping them, and running a program from an open descriptor.

use std::fs::File;
use std::io;
use std::process::Command;

/// Waits until some child has exited and returns its pid, leaving it unreaped (`WNOWAIT`), so
/// the caller decides under its own lock whether to collect it.
pub(crate) fn wait_exited_child() -> io::Result<i32> {
    // SAFETY: siginfo_t is plain old data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t for the duration of the call.
    let result = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid succeeded with WEXITED, so the kernel filled the child fields of `info`.
    Ok(unsafe { info.si_pid() })
}

/// A command that runs `binary` (an open file) as `name` with `args` and exactly `env`.
///
/// Linux: `/proc/self/fd/N` resolves in the child before exec closes the descriptor, so the
/// binary runs although no path inside the sandbox leads to it.
///
/// # Errors
/// None on Linux.
#[cfg(target_os = "linux")]
pub(crate) fn command_from_fd(
    binary: &File,
    name: &str,
    args: &[String],
    env: &[(String, String)],
) -> io::Result<Command> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    let mut command = Command::new(format!("/proc/self/fd/{}", binary.as_raw_fd()));
    command
        .arg0(name)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)));
    Ok(command)
}

/// `fexecve`'s argument and environment vectors, built before the fork: the child of a
/// threaded process may not allocate.
#[cfg(target_os = "freebsd")]
struct ExecVectors {
    _strings: Vec<std::ffi::CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

#[cfg(target_os = "freebsd")]
impl ExecVectors {
    /// Runs the program open at `fd`; returns only on failure. A method, so that a closure
    /// calling it captures the whole struct (with its Send and Sync), not its raw fields.
    fn fexecve(&self, fd: std::os::fd::RawFd) -> io::Error {
        // SAFETY: `fd` stays open in the child until exec; both vectors are NUL-terminated
        // arrays of pointers to NUL-terminated strings owned by `self`. On success the call
        // does not return; on failure it changed nothing.
        unsafe { libc::fexecve(fd, self.argv.as_ptr(), self.envp.as_ptr()) };
        io::Error::last_os_error()
    }
}

// SAFETY: the pointers point into `_strings`, which the struct owns and never changes; the
// vectors are only read, by the forked child.
#[cfg(target_os = "freebsd")]
unsafe impl Send for ExecVectors {}
// SAFETY: as for Send: nothing is ever written through the struct after it is built.
#[cfg(target_os = "freebsd")]
unsafe impl Sync for ExecVectors {}

/// A command that runs `binary` (an open file) as `name` with `args` and exactly `env`.
///
/// FreeBSD: jails have no `/proc` or fdescfs, so the child calls `fexecve(2)` on the
/// descriptor once std has set up its standard streams and working directory.
///
/// # Errors
/// An argument or variable holds a NUL byte.
#[cfg(target_os = "freebsd")]
pub(crate) fn command_from_fd(
    binary: &File,
    name: &str,
    args: &[String],
    env: &[(String, String)],
) -> io::Result<Command> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    let nul = |_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in envd's command");
    let arguments: Vec<CString> = std::iter::once(name.to_owned())
        .chain(args.iter().cloned())
        .map(|arg| CString::new(arg).map_err(nul))
        .collect::<io::Result<_>>()?;
    let variables: Vec<CString> = env
        .iter()
        .map(|(key, value)| CString::new(format!("{key}={value}")).map_err(nul))
        .collect::<io::Result<_>>()?;
    let terminated = |strings: &[CString]| -> Vec<*const libc::c_char> {
        strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let argv = terminated(&arguments);
    let envp = terminated(&variables);
    let vectors = ExecVectors {
        _strings: arguments.into_iter().chain(variables).collect(),
        argv,
        envp,
    };
    let fd = binary.as_raw_fd();
    let mut command = Command::new(name);
    let exec = move || Err(vectors.fexecve(fd));
    // SAFETY: the closure only calls fexecve and reads errno, both async-signal-safe; it
    // allocates nothing.
    unsafe { command.pre_exec(exec) };
    Ok(command)
}
