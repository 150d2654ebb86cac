//! envd under the sandbox init: its socket is bound and its binary opened on the host side
//! (before `pivot_root` or `jail_attach`); the init executes it from that descriptor with the
//! socket as standard input, and restarts it, with a growing pause, whenever it dies.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::server::{self, Shared};

/// The program name envd runs under.
const ENVD_NAME: &str = "coppice-envd";
/// Pause before the first restart; doubles up to [`MAX_BACKOFF`] while envd keeps dying
/// within [`HEALTHY_RUN`] of its start.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const HEALTHY_RUN: Duration = Duration::from_secs(10);

/// envd's host-side resources, ready to be carried into the sandbox.
#[derive(Debug)]
pub struct PreparedEnvd {
    binary: fs::File,
    /// Its listening socket as standard input; `None` when envd binds its own (in a VM).
    listener: Option<UnixListener>,
    args: Vec<String>,
}

impl PreparedEnvd {
    /// Binds envd's socket at `socket` (owner-only) and opens its `binary`, both on the host.
    ///
    /// # Errors
    /// Either cannot be done; the message names the path.
    pub fn prepare(binary: &Path, socket: &Path, args: Vec<String>) -> Result<Self, String> {
        let binary = fs::File::open(binary)
            .map_err(|e| format!("cannot open envd {}: {e}", binary.display()))?;
        let listener = Some(bind_private(socket)?);
        Ok(Self {
            binary,
            listener,
            args,
        })
    }

    /// envd at `binary` inside a virtual machine, where it binds its own TCP port (`args`
    /// say which) and nothing is passed from a host.
    ///
    /// # Errors
    /// The binary cannot be opened.
    pub fn listening_itself(binary: &Path, args: Vec<String>) -> Result<Self, String> {
        let binary = fs::File::open(binary)
            .map_err(|e| format!("cannot open envd {}: {e}", binary.display()))?;
        Ok(Self {
            binary,
            listener: None,
            args,
        })
    }

    /// envd from descriptors the init inherited: its open `binary` and bound `listener`.
    pub fn from_parts(binary: fs::File, listener: UnixListener, args: Vec<String>) -> Self {
        Self {
            binary,
            listener: Some(listener),
            args,
        }
    }

    /// The descriptors the init must keep open.
    pub fn fds(&self) -> Vec<i32> {
        std::iter::once(self.binary.as_raw_fd())
            .chain(self.listener.as_ref().map(AsRawFd::as_raw_fd))
            .collect()
    }
}

/// Binds a Unix socket at `path` that only its owner may connect to, replacing a stale one.
///
/// # Errors
/// The bind or the permission change failed; the message names the path.
pub fn bind_private(path: &Path) -> Result<UnixListener, String> {
    let _ = fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("cannot bind socket {}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict socket {}: {e}", path.display()))?;
    Ok(listener)
}

/// Starts envd (failing if it cannot be executed at all) and a thread that restarts it.
///
/// # Errors
/// envd cannot be executed, or its supervisor thread cannot start.
pub fn start(
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
    let stdin = match &prepared.listener {
        Some(listener) => Stdio::from(OwnedFd::from(
            listener
                .try_clone()
                .map_err(|e| format!("cannot pass the envd socket: {e}"))?,
        )),
        None => Stdio::null(),
    };
    let mut command = crate::sys::command_from_fd(&prepared.binary, ENVD_NAME, &prepared.args, env)
        .map_err(|e| format!("cannot prepare envd's command: {e}"))?;
    command
        .current_dir("/")
        .stdin(stdin)
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
