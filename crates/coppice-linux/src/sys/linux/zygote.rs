//! The init zygote: one long-lived, single-threaded `coppice-init --zygote` process per daemon
//! that forks an outer init for every sandbox start, so a start pays a `fork` of a small
//! process instead of spawning and loading a binary.
//!
//! Protocol, one line per message over the zygote's stdin and stdout:
//! - daemon → zygote: `<init.json path>`;
//! - zygote (its forked outer init, in one atomic `write`) → daemon:
//!   `<init.json path>\t<ReadyMessage JSON>`.
//!
//! The zygote ends when its stdin does, that is when the daemon is gone (a parent-death signal
//! would fire when the daemon *thread* that spawned it ends, and pool threads come and go).
//! It ignores `SIGCHLD`, so the outer
//! inits it forks are reaped by the kernel; each outer restores the default before building a
//! sandbox, because PID 1 reaps its own children. PID 1s outlive their outer init and are
//! adopted by the daemon, a child subreaper.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::syscalls::{Forked, fork, set_sigchld_ignored};
use super::{load_config, outer};
use crate::config::InitCommand;
use crate::protocol::ReadyMessage;

/// The flag that starts the init binary as a zygote.
pub(super) const ZYGOTE_FLAG: &str = "--zygote";

/// Longest report line; under `PIPE_BUF`, so each report is one atomic write.
const MAX_REPORT: usize = 4000;

/// Main loop of the zygote process.
pub(super) fn zygote_main() -> ExitCode {
    if set_sigchld_ignored(true).is_err() {
        return ExitCode::FAILURE;
    }
    for line in io::stdin().lock().lines() {
        let Ok(config_path) = line else { break };
        match fork() {
            Ok(Forked::Child) => build_one(&config_path),
            Ok(Forked::Parent(_)) => {}
            Err(error) => report(
                &config_path,
                &ReadyMessage::Failed {
                    error: format!("fork: {error}"),
                },
            ),
        }
    }
    ExitCode::SUCCESS
}

/// In the forked outer init: builds one sandbox, reports, exits.
fn build_one(config_path: &str) -> ! {
    let message = match set_sigchld_ignored(false) {
        Err(error) => ReadyMessage::Failed {
            error: format!("restore SIGCHLD: {error}"),
        },
        Ok(()) => match load_config(Path::new(config_path)) {
            Ok(config) => outer::run(&config),
            Err(error) => ReadyMessage::Failed { error },
        },
    };
    report(config_path, &message);
    std::process::exit(0)
}

fn report(config_path: &str, message: &ReadyMessage) {
    let mut json = serde_json::to_string(message)
        .unwrap_or_else(|_| "{\"failed\":{\"error\":\"encoding\"}}".into());
    if json.len() + config_path.len() + 2 > MAX_REPORT {
        let short = ReadyMessage::Failed {
            error: "sandbox init failed; its report was too long".into(),
        };
        json = serde_json::to_string(&short).unwrap_or_default();
    }
    let line = format!("{config_path}\t{json}\n");
    // One write of less than PIPE_BUF bytes: reports of concurrent starts never interleave.
    let _ = rustix::io::write(rustix::stdio::stdout(), line.as_bytes());
}

type Waiters = Arc<Mutex<HashMap<PathBuf, Sender<ReadyMessage>>>>;

/// The daemon's handle on its zygote.
#[derive(Debug)]
pub(super) struct Zygote {
    stdin: Mutex<ChildStdin>,
    waiters: Waiters,
    alive: Arc<AtomicBool>,
    child: Mutex<Child>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Zygote {
    /// Starts `command --zygote` and the thread that hands its reports to waiting starts.
    pub(super) fn start(command: &InitCommand) -> io::Result<Self> {
        let mut child = Command::new(&command.program)
            .args(&command.leading_args)
            .arg(ZYGOTE_FLAG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("zygote stdin not captured"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("zygote stdout not captured"))?;
        let waiters: Waiters = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let (reader_waiters, reader_alive) = (Arc::clone(&waiters), Arc::clone(&alive));
        std::thread::Builder::new()
            .name("init-zygote".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let Some((path, json)) = line.split_once('\t') else {
                        continue;
                    };
                    let message =
                        serde_json::from_str(json).unwrap_or_else(|error| ReadyMessage::Failed {
                            error: format!("unreadable report from the sandbox init: {error}"),
                        });
                    if let Some(waiter) = lock(&reader_waiters).remove(Path::new(path)) {
                        let _ = waiter.send(message);
                    }
                }
                // The zygote is gone: fail everyone still waiting; the next start makes a new one.
                reader_alive.store(false, Ordering::SeqCst);
                lock(&reader_waiters).clear();
            })?;
        Ok(Self {
            stdin: Mutex::new(stdin),
            waiters,
            alive,
            child: Mutex::new(child),
        })
    }

    /// Whether the zygote still answers.
    pub(super) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Asks for the sandbox described by `config`; `None` when no report came in `timeout`.
    pub(super) fn request(
        &self,
        config: &Path,
        timeout: Duration,
    ) -> io::Result<Option<ReadyMessage>> {
        let line = config
            .to_str()
            .filter(|path| !path.contains(['\n', '\t']))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "init config path is not plain UTF-8",
                )
            })?;
        let (sender, receiver) = channel();
        lock(&self.waiters).insert(config.to_owned(), sender);
        if let Err(error) = writeln!(lock(&self.stdin), "{line}") {
            lock(&self.waiters).remove(config);
            self.alive.store(false, Ordering::SeqCst);
            return Err(error);
        }
        match receiver.recv_timeout(timeout) {
            Ok(message) => Ok(Some(message)),
            Err(_) => {
                lock(&self.waiters).remove(config);
                Ok(None)
            }
        }
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        let mut child = lock(&self.child);
        let _ = child.kill();
        let _ = child.wait();
    }
}
