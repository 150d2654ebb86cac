//! The sandbox init's steady state: the main thread reaps every child, and a thread per
//! control connection runs one command and answers with its output.
//!
//! A command's exit status must reach the thread that started it even though the reaper
//! collects it: starters register their pid under the registry lock *while spawning*, and the
//! reaper records statuses only for registered pids, so no status is lost and orphans that
//! end up reaped by the init leave nothing behind.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use std::os::fd::OwnedFd;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{
    Pid, Signal, WaitOptions, WaitStatus, kill_process, kill_process_group, waitpid,
};

use crate::control::{
    ControlRequest, ControlResponse, ExecIdentity, WireExit, read_header, read_payload, write_frame,
};
use crate::sys::wait_exited_child;

/// Default `PATH` of commands.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long output readers may lag behind the exit (a background grandchild can keep a pipe).
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

#[derive(Debug, Default)]
struct Registry {
    /// Registered pids, with their status once reaped.
    waiting: HashMap<i32, Option<WaitStatus>>,
}

/// What the control threads, the envd supervisor and the reaper share.
#[derive(Debug)]
pub struct Shared {
    registry: Mutex<Registry>,
    changed: Condvar,
    env: Vec<(String, String)>,
    output_limit: usize,
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts serving the control socket on its own thread; the caller then reports ready and
/// calls [`reap_forever`].
///
/// # Errors
/// The thread cannot be started (the init must then not report ready).
pub fn start(
    env: Vec<(String, String)>,
    output_limit: usize,
    listener: impl ControlListener,
) -> Result<Arc<Shared>, String> {
    let shared = Arc::new(Shared {
        registry: Mutex::new(Registry::default()),
        changed: Condvar::new(),
        env,
        output_limit,
    });
    let acceptor = Arc::clone(&shared);
    thread::Builder::new()
        .name("control".into())
        .spawn(move || accept_loop(&acceptor, &listener))
        .map_err(|e| format!("cannot start the control thread: {e}"))?;
    Ok(shared)
}

/// The init's main loop: collects every child, hands registered statuses to their starters.
pub fn reap_forever(shared: &Shared) -> ! {
    loop {
        match wait_exited_child() {
            Ok(raw) => {
                // Taking the lock waits out any spawn in progress: a command that failed to
                // exec is collected by its spawner, one that started is registered by now.
                let mut registry = shared.registry();
                let Some(pid) = Pid::from_raw(raw) else {
                    continue;
                };
                if let Ok(Some((_, status))) = waitpid(Some(pid), WaitOptions::NOHANG)
                    && let Some(slot) = registry.waiting.get_mut(&raw)
                {
                    *slot = Some(status);
                    shared.changed.notify_all();
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                // No children right now: sleep until a command is started, unless one was
                // registered after `waitid` looked (its wake-up came before this wait).
                let registry = shared.registry();
                if registry.waiting.values().all(Option::is_some) {
                    let _ = shared
                        .changed
                        .wait_timeout(registry, Duration::from_secs(1));
                }
            }
        }
    }
}

/// Where control connections come from: the host-side Unix socket of a namespace sandbox or
/// a jail, or a TCP port inside a virtual machine.
pub trait ControlListener: Send + 'static {
    /// Waits for the next connection.
    ///
    /// # Errors
    /// The accept failed (the loop goes on).
    fn accept_one(&self) -> std::io::Result<OwnedFd>;
}

impl ControlListener for UnixListener {
    fn accept_one(&self) -> std::io::Result<OwnedFd> {
        self.accept().map(|(stream, _)| stream.into())
    }
}

impl ControlListener for TcpListener {
    fn accept_one(&self) -> std::io::Result<OwnedFd> {
        self.accept().map(|(stream, _)| stream.into())
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &impl ControlListener) {
    loop {
        let Ok(connection) = listener.accept_one() else {
            continue;
        };
        // Read and written through the file API: the same calls on a Unix or TCP socket.
        let stream = std::fs::File::from(connection);
        let shared = Arc::clone(shared);
        let _ = thread::Builder::new().name("exec".into()).spawn(move || {
            // A client that vanished mid-answer is not the init's problem.
            let _ = handle(&shared, &stream);
        });
    }
}

fn handle(shared: &Shared, stream: &std::fs::File) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let request: ControlRequest = match read_header(&mut reader) {
        Ok(request) => request,
        Err(error) => {
            let refusal = ControlResponse::Refused {
                message: format!("bad request: {error}"),
            };
            return write_frame(&mut &*stream, &refusal, &[]);
        }
    };
    match request {
        ControlRequest::Ping => write_frame(&mut &*stream, &ControlResponse::Pong, &[]),
        ControlRequest::Exec {
            argv,
            env,
            cwd,
            identity,
            timeout_ms,
            stdin_len,
        } => {
            let stdin = read_payload(&mut reader, stdin_len)?;
            let command = ExecCommand {
                argv,
                env,
                cwd,
                identity,
                timeout: timeout_ms.map(Duration::from_millis),
                stdin,
            };
            match run(shared, command, stream) {
                Ok(finished) => {
                    let header = ControlResponse::Exited {
                        status: finished.status,
                        stdout_len: finished.stdout.len(),
                        stderr_len: finished.stderr.len(),
                        truncated: finished.truncated,
                        timed_out: finished.timed_out,
                    };
                    write_frame(
                        &mut &*stream,
                        &header,
                        &[&finished.stdout, &finished.stderr],
                    )
                }
                Err(message) => {
                    write_frame(&mut &*stream, &ControlResponse::Refused { message }, &[])
                }
            }
        }
    }
}

/// Spawns `command` with its pid registered for the reaper while the lock is held, so its
/// status is kept for [`wait_for`].
fn spawn_child(shared: &Shared, command: &mut Command) -> std::io::Result<std::process::Child> {
    let mut registry = shared.registry();
    let child = command.spawn()?;
    let pid = i32::try_from(child.id()).map_err(|_| std::io::Error::other("pid out of range"))?;
    registry.waiting.insert(pid, None);
    shared.changed.notify_all();
    Ok(child)
}

/// Spawns a long-lived child of the init and returns its pid; collect it with [`wait_for`].
///
/// # Errors
/// The command could not be started.
pub fn spawn_registered(shared: &Shared, command: &mut Command) -> std::io::Result<i32> {
    let child = spawn_child(shared, command)?;
    i32::try_from(child.id()).map_err(|_| std::io::Error::other("pid out of range"))
}

struct ExecCommand {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: Option<String>,
    identity: ExecIdentity,
    timeout: Option<Duration>,
    stdin: Vec<u8>,
}

struct Finished {
    status: WireExit,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    truncated: bool,
    timed_out: bool,
}

fn run(shared: &Shared, mut request: ExecCommand, client: &impl AsFd) -> Result<Finished, String> {
    let Some((program, args)) = request.argv.split_first() else {
        return Err("argv is empty".into());
    };
    if request.identity.look_up {
        // Read now, from the sandbox's own files: its users may change.
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        request.identity = crate::passwd::resolve(
            &request.identity.name,
            &read("/etc/passwd"),
            &read("/etc/group"),
        )?;
    }
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .env("HOME", &request.identity.home)
        .env("USER", &request.identity.name)
        .env("LOGNAME", &request.identity.name)
        .envs(shared.env.iter().map(|(k, v)| (k, v)))
        .envs(request.env.iter().map(|(k, v)| (k, v)))
        .current_dir(request.cwd.as_deref().unwrap_or(&request.identity.home))
        .process_group(0)
        .stdin(if request.stdin.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The init already is uid 0 / gid 0 with no supplementary groups; naming them anyway would
    // push std off its vfork-based posix_spawn path onto a full fork.
    if request.identity.uid != 0 || request.identity.gid != 0 {
        command.uid(request.identity.uid).gid(request.identity.gid);
    }

    let mut child =
        spawn_child(shared, &mut command).map_err(|e| format!("cannot run {program:?}: {e}"))?;
    let pid = i32::try_from(child.id()).map_err(|_| "pid out of range".to_owned())?;
    if let Some(mut stdin) = child.stdin.take() {
        let bytes = request.stdin;
        thread::spawn(move || {
            // The command may exit without reading; a broken pipe is fine.
            let _ = stdin.write_all(&bytes);
        });
    }
    let mut output = Output::new(shared.output_limit);
    let pipes = [
        child.stdout.take().map(OwnedFd::from),
        child.stderr.take().map(OwnedFd::from),
    ];
    // The reaper collects the status; dropping `child` neither waits nor kills.
    drop(child);

    let deadline = request.timeout.map(|t| Instant::now() + t);
    let (status, timed_out) = match output.pump(shared, pid, pipes, deadline, client) {
        (Some(status), killed) => (status, killed),
        (None, killed) => {
            let (status, late_kill) = wait_for(
                shared,
                pid,
                deadline.map(|d| d.saturating_duration_since(Instant::now())),
            );
            (status, killed || late_kill)
        }
    };
    Ok(Finished {
        status: wire_exit(status),
        stdout: output.streams[0].clone(),
        stderr: output.streams[1].clone(),
        truncated: output.truncated,
        timed_out,
    })
}

/// Captured stdout and stderr of one command.
struct Output {
    streams: [Vec<u8>; 2],
    limit: usize,
    truncated: bool,
}

impl Output {
    fn new(limit: usize) -> Self {
        Self {
            streams: [Vec::new(), Vec::new()],
            limit,
            truncated: false,
        }
    }

    /// Reads both pipes on this thread until they close, killing the command's process group
    /// at `deadline`. Returns the exit status if the command exited while a descendant still
    /// held a pipe open (reading then stops after [`OUTPUT_GRACE`]), `None` when both pipes
    /// closed first; and whether the deadline struck.
    fn pump(
        &mut self,
        shared: &Shared,
        pid: i32,
        mut pipes: [Option<OwnedFd>; 2],
        deadline: Option<Instant>,
        client: &impl AsFd,
    ) -> (Option<WaitStatus>, bool) {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut exited: Option<(WaitStatus, Instant)> = None;
        let mut killed = false;
        while pipes.iter().any(Option::is_some) {
            let now = Instant::now();
            if let Some((status, at)) = exited {
                if now >= at + OUTPUT_GRACE {
                    self.truncated = true;
                    return (Some(status), killed);
                }
            } else if let Some(status) = take_status(shared, pid) {
                exited = Some((status, now));
            }
            if !killed && deadline.is_some_and(|d| now >= d) {
                killed = true;
                kill_command(pid);
            }
            let mut fds: Vec<PollFd<'_>> = pipes
                .iter()
                .flatten()
                .map(|fd| PollFd::new(fd, PollFlags::IN))
                .collect();
            // The caller hanging up means nobody wants the result: the command is killed
            // rather than left running with no one to report to.
            let watch_client = !killed;
            if watch_client {
                fds.push(PollFd::new(client, PollFlags::RDHUP));
            }
            let tick = Timespec {
                tv_sec: 0,
                tv_nsec: 20_000_000,
            };
            match poll(&mut fds, Some(&tick)) {
                Ok(0) | Err(_) => continue,
                Ok(_) => {}
            }
            let mut ready: Vec<bool> = fds.iter().map(|fd| !fd.revents().is_empty()).collect();
            drop(fds);
            if watch_client && ready.pop() == Some(true) {
                killed = true;
                kill_command(pid);
            }
            let mut ready = ready.into_iter();
            for (index, slot) in pipes.iter_mut().enumerate() {
                let Some(fd) = slot else { continue };
                if !ready.next().unwrap_or(false) {
                    continue;
                }
                match rustix::io::read(&*fd, &mut buffer) {
                    Ok(0) => *slot = None,
                    Ok(n) => self.keep(index, &buffer[..n]),
                    Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
                    Err(_) => *slot = None,
                }
            }
        }
        (
            exited
                .map(|(status, _)| status)
                .or_else(|| take_status(shared, pid)),
            killed,
        )
    }

    fn keep(&mut self, index: usize, bytes: &[u8]) {
        let stream = &mut self.streams[index];
        let room = self.limit.saturating_sub(stream.len());
        stream.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.truncated |= bytes.len() > room;
    }
}

/// The status of `pid` if the reaper has recorded it (and forgets the registration).
fn take_status(shared: &Shared, pid: i32) -> Option<WaitStatus> {
    let mut registry = shared.registry();
    match registry.waiting.get(&pid) {
        Some(Some(status)) => {
            let status = *status;
            registry.waiting.remove(&pid);
            Some(status)
        }
        _ => None,
    }
}

/// Waits for the reaper to record `pid`'s status; kills its process group at the timeout.
/// Returns the status and whether the timeout struck.
pub fn wait_for(shared: &Shared, pid: i32, timeout: Option<Duration>) -> (WaitStatus, bool) {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut timed_out = false;
    let mut registry = shared.registry();
    loop {
        if let Some(Some(status)) = registry.waiting.get(&pid) {
            let status = *status;
            registry.waiting.remove(&pid);
            return (status, timed_out);
        }
        let wait = match deadline {
            Some(deadline) if !timed_out => deadline.saturating_duration_since(Instant::now()),
            _ => Duration::from_secs(1),
        };
        if wait.is_zero() && !timed_out {
            timed_out = true;
            kill_command(pid);
            continue;
        }
        registry = shared
            .changed
            .wait_timeout(registry, wait)
            .map(|(guard, _)| guard)
            .unwrap_or_else(|e| e.into_inner().0);
    }
}

/// SIGKILLs a command and its process group (a command that left its group still dies).
fn kill_command(pid: i32) {
    if let Some(pid) = Pid::from_raw(pid) {
        let _ = kill_process_group(pid, Signal::KILL);
        let _ = kill_process(pid, Signal::KILL);
    }
}

fn wire_exit(status: WaitStatus) -> WireExit {
    if let Some(code) = status.exit_status() {
        WireExit::Code(code)
    } else if let Some(signal) = status.terminating_signal() {
        WireExit::Signal(signal)
    } else {
        WireExit::Code(-1)
    }
}
