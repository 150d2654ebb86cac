//! envd under PID 1: its socket is bound and its binary opened on the host side (before
//! `pivot_root`); PID 1 executes it from that descriptor with the socket as standard input,
//! and restarts it, with a growing pause, whenever it dies.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::server::{self, Shared};
use crate::protocol::EnvdLaunch;

/// The program name envd runs under.
const ENVD_NAME: &str = "coppice-envd";
/// Pause before the first restart; doubles up to [`MAX_BACKOFF`] while envd keeps dying
/// within [`HEALTHY_RUN`] of its start.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const HEALTHY_RUN: Duration = Duration::from_secs(10);

/// envd's host-side resources, ready to be carried into the sandbox.
#[derive(Debug)]
pub(super) struct PreparedEnvd {
    binary: fs::File,
    listener: UnixListener,
    args: Vec<String>,
}

impl PreparedEnvd {
    /// The descriptors PID 1 must keep open.
    pub(super) fn fds(&self) -> [i32; 2] {
        [self.binary.as_raw_fd(), self.listener.as_raw_fd()]
    }
}

/// Binds envd's socket (owner-only) and opens its binary, both on the host.
pub(super) fn prepare(launch: &EnvdLaunch) -> Result<PreparedEnvd, String> {
    let binary = fs::File::open(&launch.binary)
        .map_err(|e| format!("cannot open envd {}: {e}", launch.binary.display()))?;
    let _ = fs::remove_file(&launch.socket);
    let listener = UnixListener::bind(&launch.socket)
        .map_err(|e| format!("cannot bind envd socket {}: {e}", launch.socket.display()))?;
    fs::set_permissions(&launch.socket, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict envd socket: {e}"))?;
    Ok(PreparedEnvd {
        binary,
        listener,
        args: launch.args.clone(),
    })
}

/// Starts envd (failing if it cannot be executed at all) and a thread that restarts it.
pub(super) fn start(
    shared: &Arc<Shared>,
    prepared: PreparedEnvd,
    env: Vec<(String, String)>,
) -> Result<(), String> {
    let first = spawn(shared, &prepared, &env)?;
    let supervisor = Arc::clone(shared);
    thread::Builder::new()
        .name("envd".into())
        .spawn(move || supervise(&supervisor, &prepared, &env, first))
        .map_err(|e| format!("cannot start the envd supervisor: {e}"))?;
    Ok(())
}

fn spawn(
    shared: &Shared,
    prepared: &PreparedEnvd,
    env: &[(String, String)],
) -> Result<i32, String> {
    let listener: OwnedFd = prepared
        .listener
        .try_clone()
        .map_err(|e| format!("cannot pass the envd socket: {e}"))?
        .into();
    // `/proc/self/fd/N` resolves in the child before exec closes the descriptor, so the
    // binary runs although no path inside the sandbox leads to it.
    let mut command = Command::new(format!("/proc/self/fd/{}", prepared.binary.as_raw_fd()));
    command
        .arg0(ENVD_NAME)
        .args(&prepared.args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::from(listener))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    server::spawn_registered(shared, &mut command).map_err(|e| format!("cannot start envd: {e}"))
}

fn supervise(shared: &Shared, prepared: &PreparedEnvd, env: &[(String, String)], first: i32) {
    let mut pid = first;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let _ = server::wait_for(shared, pid, None);
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
        loop {
            match spawn(shared, prepared, env) {
                Ok(next) => {
                    pid = next;
                    break;
                }
                Err(_) => {
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
