//! Starting a program as a sandbox user without copying envd's address space.
//!
//! `posix_spawn` shares the parent's memory with the child until `execve` (no page tables are
//! copied, no copy-on-write faults follow), but it cannot change credentials; `fork` can, at
//! the price of duplicating envd. This does what `posix_spawn` does — a
//! `clone(CLONE_VM | CLONE_VFORK)` child on its own stack, all signals blocked around it — and
//! also sets the groups, gid and uid with raw system calls (the libc wrappers would try to
//! broadcast the change to envd's threads). The child only makes async-signal-safe calls on
//! data the parent prepared; it reports a failure through shared memory before `_exit(127)`.
//! A pidfd of the child comes back with its pid, so waiting needs no `SIGCHLD` bookkeeping.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// The stack the child runs on until `execve`; it calls nothing deep.
const CHILD_STACK_BYTES: usize = 64 * 1024;
/// Highest signal number whose disposition the child resets.
const LAST_SIGNAL: c_int = 64;

/// The identity the program runs as.
#[derive(Debug, Clone, Copy)]
pub struct Credentials {
    /// User id (real, effective and saved).
    pub uid: u32,
    /// Group id (real, effective and saved); the supplementary groups are cleared.
    pub gid: u32,
}

/// Everything the child needs, prepared before it exists.
#[derive(Debug)]
pub struct Request<'a> {
    /// Paths to try in order, as `execvp` does through `PATH`.
    pub candidates: &'a [CString],
    /// `argv`, program name first.
    pub argv: &'a [CString],
    /// The whole environment as `NAME=value`.
    pub envp: &'a [CString],
    /// Working directory.
    pub cwd: &'a CStr,
    /// Whom to run as; `None` keeps envd's identity.
    pub credentials: Option<Credentials>,
    /// Standard input, output and error; each must be above 2.
    pub stdio: [BorrowedFd<'a>; 3],
}

/// A started child.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid.
    pub pid: u32,
    /// A pidfd: readable once it has exited, and what to reap it through.
    pub pidfd: OwnedFd,
}

/// The step of the child's set-up that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Running = 0,
    ProcessGroup = 1,
    Stdio = 2,
    Groups = 3,
    GroupId = 4,
    UserId = 5,
    WorkingDirectory = 6,
    Exec = 7,
}

impl Stage {
    fn from_raw(raw: i32) -> Self {
        match raw {
            1 => Self::ProcessGroup,
            2 => Self::Stdio,
            3 => Self::Groups,
            4 => Self::GroupId,
            5 => Self::UserId,
            6 => Self::WorkingDirectory,
            7 => Self::Exec,
            _ => Self::Running,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Running => "start",
            Self::ProcessGroup => "make a process group",
            Self::Stdio => "set up standard streams",
            Self::Groups => "clear supplementary groups",
            Self::GroupId => "switch group",
            Self::UserId => "switch user",
            Self::WorkingDirectory => "enter the working directory",
            Self::Exec => "execute",
        }
    }
}

/// What the parent hands the child: raw pointers into data that outlives the child's set-up
/// (the parent is suspended until the child execs or exits), and the failure slots.
struct ChildArgs {
    candidates: Vec<*const c_char>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    cwd: *const c_char,
    credentials: Option<Credentials>,
    stdio: [RawFd; 3],
    empty_mask: libc::sigset_t,
    failed_stage: AtomicI32,
    failed_errno: AtomicI32,
}

/// Starts the program in its own process group.
///
/// # Errors
/// The set-up step that failed, with the child's `errno` (so `NotFound` and
/// `PermissionDenied` mean the program could not be run).
pub fn spawn(request: &Request<'_>) -> io::Result<Spawned> {
    if request.candidates.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no such program"));
    }
    if request.stdio.iter().any(|fd| fd.as_raw_fd() <= 2) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "standard stream descriptors must be above 2",
        ));
    }
    let pointers = |strings: &[CString]| -> Vec<*const c_char> {
        strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let mut args = ChildArgs {
        candidates: pointers(request.candidates),
        argv: pointers(request.argv),
        envp: pointers(request.envp),
        cwd: request.cwd.as_ptr(),
        credentials: request.credentials,
        stdio: request.stdio.map(|fd| fd.as_raw_fd()),
        empty_mask: empty_signal_set(),
        failed_stage: AtomicI32::new(Stage::Running as i32),
        failed_errno: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; CHILD_STACK_BYTES];
    // The stack grows down; its top must be 16-byte aligned.
    let top = stack.as_mut_ptr_range().end as usize & !15;

    let all = full_signal_set();
    let mut previous = empty_signal_set();
    // Blocking every signal in this thread keeps a handler from running on the child's stack
    // before the child resets the dispositions.
    // SAFETY: `all` and `previous` are valid, initialised sigsets.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &raw const all, &raw mut previous) };
    let mut pidfd: c_int = -1;
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    // `top` is the aligned end of a live 64 KiB buffer used by nothing else. The child only
    // reads `args` and writes its atomics, and CLONE_VFORK suspends this thread until the
    // child has exec'd or exited. CLONE_PIDFD stores the pidfd into `pidfd`.
    // SAFETY: the stack, `args`, its strings and `pidfd` outlive the child's use of them.
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut c_void,
            flags,
            (&raw mut args).cast::<c_void>(),
            &raw mut pidfd,
        )
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &raw const previous, std::ptr::null_mut()) };
    drop(stack);
    if pid < 0 {
        return Err(clone_error);
    }
    // SAFETY: CLONE_PIDFD succeeded, so `pidfd` is a fresh descriptor owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let stage = Stage::from_raw(args.failed_stage.load(Ordering::Acquire));
    if stage != Stage::Running {
        let errno = args.failed_errno.load(Ordering::Acquire);
        // The child has already exited; reap it so it leaves no zombie.
        let _ = rustix::process::waitid(
            rustix::process::WaitId::PidFd(pidfd.as_fd()),
            rustix::process::WaitIdOptions::EXITED,
        );
        let cause = io::Error::from_raw_os_error(errno);
        return Err(io::Error::new(
            cause.kind(),
            format!("{}: {cause}", stage.describe()),
        ));
    }
    let pid = u32::try_from(pid).map_err(|_| io::Error::other("clone returned a bad pid"))?;
    Ok(Spawned { pid, pidfd })
}

fn empty_signal_set() -> libc::sigset_t {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the whole set it is given.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    // SAFETY: initialised just above.
    unsafe { set.assume_init() }
}

fn full_signal_set() -> libc::sigset_t {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initialises the whole set it is given.
    unsafe { libc::sigfillset(set.as_mut_ptr()) };
    // SAFETY: initialised just above.
    unsafe { set.assume_init() }
}

/// Records the failed step and leaves without running any of envd's exit handlers.
fn fail(args: &ChildArgs, stage: Stage, errno: i32) -> c_int {
    args.failed_errno.store(errno, Ordering::Release);
    args.failed_stage.store(stage as i32, Ordering::Release);
    // SAFETY: _exit ends the child at once; it shares envd's memory, so nothing else may run.
    unsafe { libc::_exit(127) }
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL)
}

/// The child: runs on its own stack inside envd's memory until `execve`.
extern "C" fn child_main(raw: *mut c_void) -> c_int {
    // The parent is suspended until this child execs or exits.
    // SAFETY: `raw` is the `ChildArgs` the parent passed to clone, alive for this whole call.
    let args = unsafe { &*raw.cast::<ChildArgs>() };
    reset_signal_dispositions();
    // SAFETY: setpgid on this process with constant arguments.
    if unsafe { libc::setpgid(0, 0) } != 0 {
        return fail(args, Stage::ProcessGroup, errno());
    }
    for (target, source) in (0..).zip(args.stdio) {
        // dup2 onto a standard stream also clears close-on-exec on the copy.
        // SAFETY: `source` is a descriptor the parent keeps open across the call.
        if unsafe { libc::dup2(source, target) } < 0 {
            return fail(args, Stage::Stdio, errno());
        }
    }
    if let Some(credentials) = args.credentials {
        // SAFETY: raw setgroups with an empty list; the raw call changes only this process.
        if unsafe { libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) } != 0 {
            return fail(args, Stage::Groups, errno());
        }
        let gid = credentials.gid;
        // SAFETY: raw setresgid with plain integers.
        if unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) } != 0 {
            return fail(args, Stage::GroupId, errno());
        }
        let uid = credentials.uid;
        // SAFETY: raw setresuid with plain integers.
        if unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) } != 0 {
            return fail(args, Stage::UserId, errno());
        }
    }
    // SAFETY: `cwd` points to a NUL-terminated string owned by the suspended parent.
    if unsafe { libc::chdir(args.cwd) } != 0 {
        return fail(args, Stage::WorkingDirectory, errno());
    }
    // SAFETY: `empty_mask` is an initialised sigset; the program starts with nothing blocked.
    unsafe {
        libc::sigprocmask(
            libc::SIG_SETMASK,
            &raw const args.empty_mask,
            std::ptr::null_mut(),
        )
    };
    let mut reported = libc::ENOENT;
    for candidate in args.candidates.iter().take_while(|p| !p.is_null()) {
        // execve returns only on failure.
        // SAFETY: all three are NUL-terminated and owned by the suspended parent.
        unsafe { libc::execve(*candidate, args.argv.as_ptr(), args.envp.as_ptr()) };
        match errno() {
            // As execvp: a miss in one PATH entry moves on; a denial is remembered.
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => reported = libc::EACCES,
            other => return fail(args, Stage::Exec, other),
        }
    }
    fail(args, Stage::Exec, reported)
}

/// Handlers installed by envd would run in the child (it shares envd's memory), and the
/// program must not inherit envd's ignored `SIGPIPE`: both go back to the default.
fn reset_signal_dispositions() {
    for signal in 1..=LAST_SIGNAL {
        let mut current = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
        // SAFETY: queries the disposition into a zeroed, writable sigaction.
        if unsafe { libc::sigaction(signal, std::ptr::null(), current.as_mut_ptr()) } != 0 {
            continue;
        }
        // SAFETY: sigaction succeeded and filled `current`.
        let handler = unsafe { current.assume_init() }.sa_sigaction;
        if handler == libc::SIG_DFL || (handler == libc::SIG_IGN && signal != libc::SIGPIPE) {
            continue;
        }
        // SAFETY: SIG_DFL is a predefined disposition, not a handler function.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
}

/// Registers a child's pidfd with the async runtime, to await its exit.
///
/// # Errors
/// Registration errors.
///
/// # Panics
/// Outside a tokio runtime with I/O enabled.
pub fn watch_pidfd(pidfd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // The OwnedFd is dropped only with the AsyncFd that owns it.
    // SAFETY: an OwnedFd keeps its descriptor open and unchanged until it is dropped.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    }
    .map_err(io::Error::from)
}
