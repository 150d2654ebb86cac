//! The FreeBSD host: jail(2) and the init's start (fork, `jail_attach`, `chdir`, fork,
//! `fexecve`) through `libc`, and the base system's `mount`, `umount`, `rctl`, `ifconfig` and
//! `route`. Type-checked from Linux with `--target x86_64-unknown-freebsd`; not yet run on
//! FreeBSD.

use std::ffi::{CString, c_void};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;

use super::JailSys;
use crate::params::{EncodedParam, JailName};

/// The host's jail(2) and commands.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostJailSys;

/// Exit codes of the intermediate child: below 256, the errno of a failed `jail_attach`.
const EXIT_ATTACHED: i32 = 0;
/// Where the init's binary is held in the grandchild, past the standard streams.
const PROGRAM_FD: i32 = 3;
const EXIT_OTHER_STEP: i32 = 255;

/// What the forked children of [`HostJailSys::start_init`] need, all made before the fork.
struct Launch<'a> {
    jid: i32,
    program: i32,
    channel: i32,
    null: i32,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char; 1],
}

impl Launch<'_> {
    /// In the forked child: enter the jail and its root, fork the init, and exit.
    fn in_child(&self) -> ! {
        // SAFETY: jail_attach takes a plain integer; it changes this child's root and jail.
        if unsafe { libc::jail_attach(self.jid) } != 0 {
            let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            exit_now(if errno > 0 && errno < EXIT_OTHER_STEP {
                errno
            } else {
                EXIT_OTHER_STEP
            });
        }
        // SAFETY: a NUL-terminated constant; chdir only reads it.
        if unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
            exit_now(EXIT_OTHER_STEP);
        }
        // SAFETY: as for the first fork: the grandchild makes system calls only, then execs
        // or exits.
        match unsafe { libc::fork() } {
            -1 => exit_now(EXIT_OTHER_STEP),
            0 => self.exec_init(),
            _ => exit_now(EXIT_ATTACHED),
        }
    }

    /// In the grandchild: standard streams in place, every other descriptor of the daemon
    /// closed (one a library opened without close-on-exec would otherwise reach the jail),
    /// then the init.
    fn exec_init(&self) -> ! {
        for (source, target) in [
            (self.channel, 0),
            (self.null, 1),
            (self.null, 2),
            (self.program, PROGRAM_FD),
        ] {
            // SAFETY: both are descriptors this process holds, and each target is free to
            // take (the standard streams, then the first number past them).
            if unsafe { libc::dup2(source, target) } < 0 {
                exit_now(EXIT_OTHER_STEP);
            }
        }
        // SAFETY: closes descriptors above the program's; nothing in this child uses them.
        unsafe { libc::closefrom(PROGRAM_FD + 1) };
        // SAFETY: marks the program's own descriptor close-on-exec, so the init does not
        // inherit it; fexecve still reads the binary through it.
        if unsafe { libc::fcntl(PROGRAM_FD, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            exit_now(EXIT_OTHER_STEP);
        }
        // SAFETY: `argv` and `envp` are NUL-terminated arrays of pointers to NUL-terminated
        // strings that outlive the call; `PROGRAM_FD` is open. It returns only on failure.
        unsafe { libc::fexecve(PROGRAM_FD, self.argv.as_ptr(), self.envp.as_ptr()) };
        exit_now(EXIT_OTHER_STEP)
    }
}

fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process at once, running no handlers or destructors of the
    // parent's state copied into this child.
    unsafe { libc::_exit(code) }
}

/// Collects the intermediate child; its exit code says whether it entered the jail.
fn wait_attached(child: i32) -> io::Result<()> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid, writable int for the call; `child` is our child.
        let result = unsafe { libc::waitpid(child, &mut status, 0) };
        if result >= 0 {
            break;
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
        (true, EXIT_ATTACHED) => Ok(()),
        (true, EXIT_OTHER_STEP) | (false, _) => Err(io::Error::other(
            "the init could not be started inside the jail",
        )),
        (true, errno) => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// One iovec entry over `bytes` (empty for a flag's absent value).
fn entry(bytes: Option<&[u8]>) -> libc::iovec {
    match bytes {
        Some(bytes) => libc::iovec {
            iov_base: bytes.as_ptr().cast_mut().cast::<c_void>(),
            iov_len: bytes.len(),
        },
        None => libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        },
    }
}

fn iovecs(params: &[EncodedParam]) -> Vec<libc::iovec> {
    params
        .iter()
        .flat_map(|(name, value)| [entry(Some(name)), entry(value.as_deref())])
        .collect()
}

fn count(iov: &[libc::iovec]) -> io::Result<libc::c_uint> {
    libc::c_uint::try_from(iov.len()).map_err(|_| io::Error::other("too many jail parameters"))
}

fn command(program: &str, args: &[&str]) -> io::Result<std::process::Output> {
    let output = Command::new(program).args(args).output()?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(io::Error::other(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

impl JailSys for HostJailSys {
    fn jail_create(&self, params: &[EncodedParam]) -> io::Result<i32> {
        let mut iov = iovecs(params);
        let niov = count(&iov)?;
        // SAFETY: every iovec points into `params`, which outlives the call; with JAIL_CREATE
        // and no `errmsg` parameter jail_set only reads through them.
        let jid = unsafe { libc::jail_set(iov.as_mut_ptr(), niov, libc::JAIL_CREATE) };
        if jid < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(jid)
        }
    }

    fn jail_id(&self, name: &JailName) -> io::Result<Option<i32>> {
        // jail_get copies every parameter's value back, so both buffers are writable.
        let mut key = b"name\0".to_vec();
        let mut value = format!("{}\0", name.as_str()).into_bytes();
        let mut iov = [
            libc::iovec {
                iov_base: key.as_mut_ptr().cast::<c_void>(),
                iov_len: key.len(),
            },
            libc::iovec {
                iov_base: value.as_mut_ptr().cast::<c_void>(),
                iov_len: value.len(),
            },
        ];
        let niov = count(&iov)?;
        // SAFETY: both iovecs point into vectors we own, alive and writable for the call, of
        // the lengths given; jail_get writes at most that many bytes back into each.
        let jid = unsafe { libc::jail_get(iov.as_mut_ptr(), niov, 0) };
        if jid >= 0 {
            return Ok(Some(jid));
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ENOENT) {
            Ok(None)
        } else {
            Err(error)
        }
    }

    fn jail_remove(&self, jid: i32) -> io::Result<()> {
        // SAFETY: jail_remove takes a plain integer and touches no memory of ours.
        if unsafe { libc::jail_remove(jid) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn load_devfs_ruleset(&self, _number: u16, commands: &[Vec<String>]) -> io::Result<()> {
        for command_line in commands {
            let (program, args) = command_line
                .split_first()
                .ok_or_else(|| io::Error::other("empty devfs command"))?;
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            command(program, &args)?;
        }
        Ok(())
    }

    fn mount_devfs(&self, target: &Path, ruleset: u16) -> io::Result<()> {
        // mount(8) resolves links: a sandbox's `dev -> ../../etc` would put devfs on a host
        // directory. No process runs in a new jail yet, so this check is not raced.
        if !std::fs::symlink_metadata(target)?.file_type().is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a plain directory", target.display()),
            ));
        }
        let target = target.to_string_lossy();
        let options = format!("ruleset={ruleset}");
        command("mount", &["-t", "devfs", "-o", &options, "devfs", &target]).map(drop)
    }

    fn unmount(&self, target: &Path) -> io::Result<bool> {
        let target = target.to_string_lossy();
        match command("umount", &["-f", &target]) {
            Ok(_) => Ok(true),
            // umount(8) says so for a directory that is no mount point, or is gone.
            Err(error)
                if error
                    .to_string()
                    .contains("not a file system root directory")
                    || error.to_string().contains("No such file or directory") =>
            {
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    fn rctl_add(&self, rule: &str) -> io::Result<()> {
        command("rctl", &["-a", rule]).map(drop)
    }

    fn mount_nullfs(&self, source: &Path, target: &Path, read_only: bool) -> io::Result<()> {
        let (source, target) = (source.to_string_lossy(), target.to_string_lossy());
        let options = if read_only { "ro,nosuid" } else { "rw,nosuid" };
        command("mount", &["-t", "nullfs", "-o", options, &source, &target]).map(drop)
    }

    fn run(&self, argv: &[String]) -> io::Result<String> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::other("empty command"))?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = command(program, &args)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn start_init(
        &self,
        jid: i32,
        program: &File,
        argv: &[String],
        channel: OwnedFd,
    ) -> io::Result<()> {
        // Everything the children use is made before the fork: a child of this threaded
        // process may only make system calls.
        let null = File::options().read(true).write(true).open("/dev/null")?;
        let arguments: Vec<CString> = argv
            .iter()
            .map(|arg| CString::new(arg.as_str()))
            .collect::<Result<_, _>>()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the argv"))?;
        let mut argv_pointers: Vec<*const libc::c_char> =
            arguments.iter().map(|arg| arg.as_ptr()).collect();
        argv_pointers.push(std::ptr::null());
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        let launch = Launch {
            jid,
            program: program.as_raw_fd(),
            channel: channel.as_raw_fd(),
            null: null.as_raw_fd(),
            argv: &argv_pointers,
            envp: &envp,
        };
        // SAFETY: the child runs only `launch.in_child`, which makes system calls on data
        // built above and ends in `_exit`; it never returns into Rust code of this process.
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => Err(io::Error::last_os_error()),
            0 => launch.in_child(),
            child => wait_attached(child),
        }
    }

    fn rctl_remove(&self, filter: &str) -> io::Result<()> {
        match command("rctl", &["-r", filter]) {
            Ok(_) => Ok(()),
            // The kernel answers ESRCH when no rule matched: nothing was left to remove.
            Err(error) if error.to_string().contains("No such process") => Ok(()),
            Err(error) => Err(error),
        }
    }
}
