//! Starting a process as a sandbox user: environment, working directory, pipes or a terminal,
//! output readers, and the waiter that records its end (and enforces its lifetime).

use std::os::unix::process::ExitStatusExt;
#[cfg(not(target_os = "linux"))]
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;

use super::child::{Child, Piped};
use super::table::{CommandLine, Event, Exit, Input, ProcessHandle};
use crate::error::EnvdError;
use crate::paths;
use crate::state::{Envd, Settings};
use crate::users::User;

/// `PATH` of every process unless the request sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Largest output chunk read at once (and sent as one event).
const CHUNK: usize = 32 * 1024;

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct StartSpec {
    /// The program.
    pub cmd: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment; wins over the sandbox's.
    pub envs: Vec<(String, String)>,
    /// Working directory as requested.
    pub cwd: Option<String>,
    /// A terminal of this many columns and rows instead of pipes.
    pub pty: Option<(u16, u16)>,
    /// Whether stdin stays open for input.
    pub stdin: bool,
    /// A tag to find it by.
    pub tag: Option<String>,
    /// Its lifetime; it is killed when this runs out.
    pub timeout: Option<Duration>,
}

/// Starts `spec` as `user`, registers it, and returns its handle.
///
/// # Errors
/// [`EnvdError::InvalidArgument`] for a missing working directory or a program that cannot be
/// run; other spawn failures as [`EnvdError::Internal`].
pub fn start(
    envd: &Arc<Envd>,
    user: &User,
    spec: &StartSpec,
) -> Result<Arc<ProcessHandle>, EnvdError> {
    // One snapshot of the settings serves the whole start.
    let settings = envd.settings();
    let fallback = settings.default_dir(user);
    let cwd = match spec.cwd.as_deref() {
        Some(raw) if !raw.is_empty() => paths::resolve(raw, &user.home, &fallback)?,
        _ => fallback,
    };
    if !cwd.is_dir() {
        return Err(EnvdError::InvalidArgument(format!(
            "cwd '{}' does not exist",
            cwd.display()
        )));
    }
    let env = environment(settings, user, &spec.envs);
    let switch_to =
        (rustix::process::geteuid().as_raw() != user.uid).then_some((user.uid, user.gid));
    let command_line = CommandLine {
        cmd: spec.cmd.clone(),
        args: spec.args.clone(),
        envs: spec.envs.clone(),
        cwd: Some(cwd.display().to_string()),
    };
    let spawn_error = |error: std::io::Error| match error.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
            EnvdError::InvalidArgument(format!("cannot run '{}': {error}", spec.cmd))
        }
        _ => EnvdError::Internal(format!("cannot start '{}': {error}", spec.cmd)),
    };
    let history = envd.config.output_history_bytes;
    let (child, handle, readers) = if let Some((cols, rows)) = spec.pty {
        let (pty, pts) = pty_process::open()
            .map_err(|e| EnvdError::Internal(format!("open a terminal: {e}")))?;
        pty.resize(pty_process::Size::new(rows, cols))
            .map_err(|e| EnvdError::Internal(format!("size the terminal: {e}")))?;
        let child = pty_process::Command::from(tokio_command(spec, &env, &cwd, switch_to))
            .spawn(pts)
            .map_err(|e| match e {
                pty_process::Error::Io(io) => spawn_error(io),
                other => EnvdError::Internal(format!("start on a terminal: {other}")),
            })?;
        let pid = child.id().unwrap_or_default();
        let child = Child::Tokio(child);
        let (read, write) = pty.into_split();
        let handle = Arc::new(ProcessHandle::new(
            pid,
            spec.tag.clone(),
            command_line,
            Some(Input::Pty(write)),
            history,
        ));
        let readers = vec![spawn_reader(&handle, read, Event::Pty)];
        (child, handle, readers)
    } else {
        let piped = spawn_with_pipes(spec, &env, &cwd, switch_to).map_err(spawn_error)?;
        let handle = Arc::new(ProcessHandle::new(
            piped.pid,
            spec.tag.clone(),
            command_line,
            piped.stdin.map(Input::Pipe),
            history,
        ));
        let readers = vec![
            spawn_reader(&handle, piped.stdout, Event::Stdout),
            spawn_reader(&handle, piped.stderr, Event::Stderr),
        ];
        (piped.child, handle, readers)
    };
    envd.processes.insert(Arc::clone(&handle));
    spawn_waiter(envd, &handle, child, readers, spec.timeout);
    Ok(handle)
}

/// The program as `tokio::process` starts it.
fn tokio_command(
    spec: &StartSpec,
    env: &[(String, String)],
    cwd: &std::path::Path,
    switch_to: Option<(u32, u32)>,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(&spec.cmd);
    command
        .args(&spec.args)
        .env_clear()
        .envs(env.iter().cloned())
        .current_dir(cwd)
        .kill_on_drop(false);
    if let Some((uid, gid)) = switch_to {
        command.uid(uid).gid(gid);
    }
    command
}

/// Starts a program whose stdin (when asked for), stdout and stderr are pipes: the
/// vfork-style spawn on Linux, `tokio::process` elsewhere.
#[cfg(target_os = "linux")]
fn spawn_with_pipes(
    spec: &StartSpec,
    env: &[(String, String)],
    cwd: &std::path::Path,
    switch_to: Option<(u32, u32)>,
) -> std::io::Result<Piped> {
    super::child::spawn_piped(&super::child::PipedSpec {
        cmd: &spec.cmd,
        args: &spec.args,
        env,
        cwd,
        switch_to,
        stdin: spec.stdin,
    })
}

#[cfg(not(target_os = "linux"))]
fn spawn_with_pipes(
    spec: &StartSpec,
    env: &[(String, String)],
    cwd: &std::path::Path,
    switch_to: Option<(u32, u32)>,
) -> std::io::Result<Piped> {
    use tokio::net::unix::pipe;

    let mut command = tokio_command(spec, env, cwd, switch_to);
    command
        .process_group(0)
        .stdin(if spec.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn()?;
    let pid = child.id().unwrap_or_default();
    let stdin = child
        .stdin
        .take()
        .map(|stdin| pipe::Sender::from_owned_fd(stdin.into_owned_fd()?))
        .transpose()?;
    let taken = |stream: Option<std::os::fd::OwnedFd>| {
        stream.ok_or_else(|| std::io::Error::other("a piped stream is missing"))
    };
    let stdout = pipe::Receiver::from_owned_fd(taken(
        child.stdout.take().map(|s| s.into_owned_fd()).transpose()?,
    )?)?;
    let stderr = pipe::Receiver::from_owned_fd(taken(
        child.stderr.take().map(|s| s.into_owned_fd()).transpose()?,
    )?)?;
    Ok(Piped {
        pid,
        child: Child::Tokio(child),
        stdin,
        stdout,
        stderr,
    })
}

/// `PATH`, `HOME`, `USER`, `LOGNAME` and `SHELL`, then the sandbox's variables, then the
/// request's (later ones win).
fn environment(
    settings: Settings,
    user: &User,
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env = std::collections::BTreeMap::new();
    env.insert("PATH".to_owned(), DEFAULT_PATH.to_owned());
    env.insert("HOME".to_owned(), user.home.display().to_string());
    env.insert("USER".to_owned(), user.name.clone());
    env.insert("LOGNAME".to_owned(), user.name.clone());
    env.insert("SHELL".to_owned(), user.shell.clone());
    env.extend(settings.env);
    env.extend(extra.iter().cloned());
    env.into_iter().collect()
}

fn spawn_reader<R>(
    handle: &Arc<ProcessHandle>,
    mut source: R,
    wrap: fn(Bytes) -> Event,
) -> JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let handle = Arc::clone(handle);
    tokio::spawn(async move {
        let mut buffer = BytesMut::with_capacity(CHUNK);
        loop {
            buffer.reserve(CHUNK);
            // A terminal reports EIO once every holder of its other end has gone: that is
            // its end-of-file.
            match source.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => handle.publish(wrap(buffer.split().freeze())).await,
            }
        }
    })
}

fn spawn_waiter(
    envd: &Arc<Envd>,
    handle: &Arc<ProcessHandle>,
    mut child: Child,
    readers: Vec<JoinHandle<()>>,
    timeout: Option<Duration>,
) {
    let table = Arc::clone(&envd.processes);
    let retention = envd.config.exited_retention;
    let grace = envd.config.output_grace;
    let handle = Arc::clone(handle);
    tokio::spawn(async move {
        let status = match timeout {
            Some(limit) => {
                tokio::select! {
                    status = child.wait() => status,
                    () = tokio::time::sleep(limit) => {
                        kill_group(handle.pid, rustix::process::Signal::KILL);
                        child.wait().await
                    }
                }
            }
            None => child.wait().await,
        };
        let aborts: Vec<_> = readers.iter().map(JoinHandle::abort_handle).collect();
        if tokio::time::timeout(grace, futures_util::future::join_all(readers))
            .await
            .is_err()
        {
            for abort in aborts {
                abort.abort();
            }
        }
        let exit = match status {
            Ok(status) => describe(status),
            Err(error) => Exit {
                exit_code: -1,
                exited: false,
                status: "unknown".into(),
                error: Some(format!("wait: {error}")),
            },
        };
        handle.finish(exit).await;
        table.forget_later(&handle, retention);
    });
}

/// Sends `signal` to the process group led by `pid` (every process envd starts leads one),
/// falling back to the process alone.
///
/// # Errors
/// [`EnvdError::NotFound`] when no such process exists any more.
pub fn signal(pid: u32, signal: rustix::process::Signal) -> Result<(), EnvdError> {
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| EnvdError::InvalidArgument(format!("bad pid {pid}")))?;
    rustix::process::kill_process_group(target, signal)
        .or_else(|_| rustix::process::kill_process(target, signal))
        .map_err(|e| EnvdError::NotFound(format!("process with pid {pid} not found: {e}")))
}

fn kill_group(pid: u32, signal_to_send: rustix::process::Signal) {
    let _ = signal(pid, signal_to_send);
}

/// The end event of a finished process, worded as Go's `ProcessState.String()`.
#[must_use]
pub fn describe(status: std::process::ExitStatus) -> Exit {
    if let Some(code) = status.code() {
        let text = format!("exit status {code}");
        return Exit {
            exit_code: code,
            exited: true,
            error: (code != 0).then(|| text.clone()),
            status: text,
        };
    }
    let signal = status.signal().unwrap_or_default();
    let mut text = format!("signal: {}", signal_name(signal));
    if status.core_dumped() {
        text.push_str(" (core dumped)");
    }
    Exit {
        exit_code: -1,
        exited: false,
        error: Some(text.clone()),
        status: text,
    }
}

fn signal_name(signal: i32) -> String {
    let name = match signal {
        1 => "hangup",
        2 => "interrupt",
        3 => "quit",
        4 => "illegal instruction",
        6 => "aborted",
        7 => "bus error",
        8 => "floating point exception",
        9 => "killed",
        10 => "user defined signal 1",
        11 => "segmentation fault",
        12 => "user defined signal 2",
        13 => "broken pipe",
        14 => "alarm clock",
        15 => "terminated",
        _ => return format!("signal {signal}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_describe_words_exits_like_go() {
        let ok = describe(std::process::ExitStatus::from_raw(0));
        assert_eq!(
            (ok.exit_code, ok.exited, ok.status.as_str()),
            (0, true, "exit status 0")
        );
        assert_eq!(ok.error, None);
        let three = describe(std::process::ExitStatus::from_raw(3 << 8));
        assert_eq!(three.error.as_deref(), Some("exit status 3"));
        let killed = describe(std::process::ExitStatus::from_raw(9));
        assert_eq!(
            (killed.exit_code, killed.exited, killed.status.as_str()),
            (-1, false, "signal: killed")
        );
    }
}
