//! A recording fake of `NsSys`, compiled on every OS, for the runtime's unit tests.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::NsSys;
use crate::config::InitCommand;
use crate::protocol::ReadyMessage;

/// One call received by [`FakeNsSys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeNsCall {
    /// `spawn_init` with the config path.
    SpawnInit(PathBuf),
    /// `kill`.
    Kill(i32),
    /// `reap`.
    Reap(i32),
    /// `run_criu` with its arguments.
    Criu(Vec<std::ffi::OsString>),
    /// `restore_init` with the images directory.
    Restore(PathBuf),
}

/// Pretends to start inits: each gets the next pid and stays alive until killed.
#[derive(Debug, Default)]
pub struct FakeNsSys {
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    next_pid: i32,
    alive: BTreeMap<i32, u64>,
    calls: Vec<FakeNsCall>,
    fail_spawn: Option<String>,
    fail_criu: bool,
}

impl FakeState {
    /// What an init started (or restored) reports: the failure asked for, or a new pid
    /// whose process has `start_time`.
    fn report(&mut self, start_time: u64) -> ReadyMessage {
        if let Some(error) = self.fail_spawn.take() {
            return ReadyMessage::Failed { error };
        }
        self.next_pid += 1;
        let pid = 1000 + self.next_pid;
        self.alive.insert(pid, start_time);
        ReadyMessage::Ready { pid }
    }
}

impl FakeNsSys {
    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<FakeNsCall> {
        self.state().calls.clone()
    }

    /// Makes the next init (or restore helper) report this failure.
    pub fn fail_next_spawn(&self, error: &str) {
        self.state().fail_spawn = Some(error.to_owned());
    }

    /// Makes the next `run_criu` fail.
    pub fn fail_next_criu(&self) {
        self.state().fail_criu = true;
    }

    /// Whether a pid is alive.
    pub fn is_alive(&self, pid: i32) -> bool {
        self.state().alive.contains_key(&pid)
    }
}

impl NsSys for FakeNsSys {
    fn spawn_init(
        &self,
        _command: &InitCommand,
        config: &Path,
        _timeout: Duration,
    ) -> io::Result<Option<ReadyMessage>> {
        let mut state = self.state();
        state.calls.push(FakeNsCall::SpawnInit(config.to_owned()));
        Ok(Some(state.report(42)))
    }

    fn process_start_time(&self, pid: i32) -> io::Result<Option<u64>> {
        Ok(self.state().alive.get(&pid).copied())
    }

    fn kill(&self, pid: i32) -> io::Result<()> {
        let mut state = self.state();
        state.calls.push(FakeNsCall::Kill(pid));
        state.alive.remove(&pid);
        Ok(())
    }

    fn wait_exit(&self, _pid: i32, _timeout: Duration) -> io::Result<()> {
        Ok(())
    }

    fn reap(&self, pid: i32) {
        self.state().calls.push(FakeNsCall::Reap(pid));
    }

    fn favor_dynamic_cgroups(&self, _unified: &Path) -> io::Result<bool> {
        Ok(false)
    }

    fn remove_cgroup(&self, dir: &Path) -> io::Result<()> {
        // The stand-in tree holds the limit files as ordinary files.
        std::fs::remove_dir_all(dir)
    }

    fn become_subreaper(&self) -> io::Result<()> {
        Ok(())
    }

    fn run_criu(&self, _criu: &Path, args: &[std::ffi::OsString]) -> io::Result<()> {
        let mut state = self.state();
        state.calls.push(FakeNsCall::Criu(args.to_vec()));
        if std::mem::take(&mut state.fail_criu) {
            return Err(io::Error::other("criu exited with status 1"));
        }
        // A dump ends the tree it wrote.
        if args.first().is_some_and(|verb| verb == "dump")
            && let Some(pid) = args.get(2).and_then(|pid| pid.to_str()?.parse().ok())
        {
            state.alive.remove(&pid);
        }
        Ok(())
    }

    fn restore_init(
        &self,
        _command: &InitCommand,
        _config: &Path,
        images: &Path,
        _criu: &Path,
        _timeout: Duration,
    ) -> io::Result<Option<ReadyMessage>> {
        let mut state = self.state();
        state.calls.push(FakeNsCall::Restore(images.to_owned()));
        Ok(Some(state.report(43)))
    }

    fn open_root(&self, pid: i32) -> io::Result<std::os::fd::OwnedFd> {
        if !self.state().alive.contains_key(&pid) {
            return Err(io::ErrorKind::NotFound.into());
        }
        // Any directory stands in for a process's root here.
        Ok(std::fs::File::open("/")?.into())
    }
}
