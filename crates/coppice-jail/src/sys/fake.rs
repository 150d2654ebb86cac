//! A recording fake of the host: live jails, mounts and rctl rules kept in memory, every call
//! recorded, and failures injected by operation. Its jail init is a thread that reads the
//! real launch message and answers the control socket in the real protocol: pings, and execs
//! with `argv` echoed as standard output.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::JailSys;
use crate::launch::{InitReport, JailInitConfig, receive_config, send_report};
use crate::params::{EncodedParam, JailName};

#[derive(Debug, Default)]
struct State {
    jails: BTreeMap<String, i32>,
    next_jid: i32,
    mounts: BTreeSet<PathBuf>,
    rulesets: BTreeSet<u16>,
    rules: BTreeSet<String>,
    /// Each started init's launch config, by jail id.
    inits: BTreeMap<i32, JailInitConfig>,
    /// The next init reports this failure instead of serving.
    init_failure: Option<String>,
    /// `rctl -u` output per jail name.
    usage: BTreeMap<String, String>,
    calls: Vec<String>,
    /// Operation → how many more calls succeed before one fails.
    failures: BTreeMap<&'static str, usize>,
}

/// The fake host.
#[derive(Debug, Default)]
pub(crate) struct FakeJailSys(Arc<Mutex<State>>);

impl FakeJailSys {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The call of `operation` after `succeed` more successful ones fails.
    pub(crate) fn fail(&self, operation: &'static str, succeed: usize) {
        self.state().failures.insert(operation, succeed);
    }

    /// The next init started reports `error` instead of serving.
    pub(crate) fn init_fails(&self, error: &str) {
        self.state().init_failure = Some(error.to_owned());
    }

    /// What `rctl -u jail:<name>` prints for jail `name`.
    pub(crate) fn set_usage(&self, name: &str, output: &str) {
        self.state()
            .usage
            .insert(name.to_owned(), output.to_owned());
    }

    /// The launch config the init of jail `jid` received.
    pub(crate) fn init_config(&self, jid: i32) -> Option<JailInitConfig> {
        self.state().inits.get(&jid).cloned()
    }

    pub(crate) fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    /// Everything the fake host holds: jails, mounts, rules.
    pub(crate) fn held(&self) -> (Vec<String>, Vec<PathBuf>, Vec<String>) {
        let state = self.state();
        (
            state.jails.keys().cloned().collect(),
            state.mounts.iter().cloned().collect(),
            state.rules.iter().cloned().collect(),
        )
    }

    /// Records `call`; an error if `operation` is due to fail.
    fn enter(&self, operation: &'static str, call: String) -> io::Result<MutexGuard<'_, State>> {
        let mut state = self.state();
        state.calls.push(call);
        if let Some(left) = state.failures.get_mut(operation) {
            if *left == 0 {
                state.failures.remove(operation);
                return Err(io::Error::other(format!("injected failure of {operation}")));
            }
            *left -= 1;
        }
        Ok(state)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes.strip_suffix(b"\0").unwrap_or(bytes)).into_owned()
}

impl JailSys for FakeJailSys {
    fn jail_create(&self, params: &[EncodedParam]) -> io::Result<i32> {
        let name = params
            .iter()
            .find(|(key, _)| key == b"name\0")
            .and_then(|(_, value)| value.as_deref())
            .map(text)
            .unwrap_or_default();
        let mut state = self.enter(
            "jail_create",
            format!("jail_create {name} ({} params)", params.len()),
        )?;
        if state.jails.contains_key(&name) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        state.next_jid += 1;
        let jid = state.next_jid;
        state.jails.insert(name, jid);
        Ok(jid)
    }

    fn jail_id(&self, name: &JailName) -> io::Result<Option<i32>> {
        let state = self.enter("jail_id", format!("jail_id {}", name.as_str()))?;
        Ok(state.jails.get(name.as_str()).copied())
    }

    fn jail_remove(&self, jid: i32) -> io::Result<()> {
        let mut state = self.enter("jail_remove", format!("jail_remove {jid}"))?;
        let before = state.jails.len();
        state.jails.retain(|_, id| *id != jid);
        if state.jails.len() == before {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(())
    }

    fn load_devfs_ruleset(&self, number: u16, commands: &[Vec<String>]) -> io::Result<()> {
        let mut state = self.enter(
            "load_devfs_ruleset",
            format!("devfs ruleset {number} ({} commands)", commands.len()),
        )?;
        state.rulesets.insert(number);
        Ok(())
    }

    fn mount_devfs(&self, target: &Path, ruleset: u16) -> io::Result<()> {
        let mut state = self.enter(
            "mount_devfs",
            format!("mount devfs ruleset={ruleset} {}", target.display()),
        )?;
        // The kernel would make an empty ruleset, which hides nothing.
        if !state.rulesets.contains(&ruleset) {
            return Err(io::Error::other(format!(
                "devfs ruleset {ruleset} was never loaded"
            )));
        }
        state.mounts.insert(target.to_owned());
        Ok(())
    }

    fn unmount(&self, target: &Path) -> io::Result<bool> {
        let mut state = self.enter("unmount", format!("umount {}", target.display()))?;
        Ok(state.mounts.remove(target))
    }

    fn rctl_add(&self, rule: &str) -> io::Result<()> {
        let mut state = self.enter("rctl_add", format!("rctl -a {rule}"))?;
        state.rules.insert(rule.to_owned());
        Ok(())
    }

    fn rctl_remove(&self, filter: &str) -> io::Result<()> {
        let mut state = self.enter("rctl_remove", format!("rctl -r {filter}"))?;
        let prefix = format!("{filter}:");
        state.rules.retain(|rule| !rule.starts_with(&prefix));
        Ok(())
    }

    fn mount_nullfs(&self, source: &Path, target: &Path, read_only: bool) -> io::Result<()> {
        let mode = if read_only { "ro" } else { "rw" };
        let mut state = self.enter(
            "mount_nullfs",
            format!(
                "mount nullfs {mode} {} {}",
                source.display(),
                target.display()
            ),
        )?;
        state.mounts.insert(target.to_owned());
        Ok(())
    }

    fn run(&self, argv: &[String]) -> io::Result<String> {
        let line = argv.join(" ");
        let state = self.enter("run", line.clone())?;
        Ok(match argv {
            [rctl, flag, filter] if rctl == "rctl" && flag == "-u" => filter
                .strip_prefix("jail:")
                .and_then(|name| state.usage.get(name).cloned())
                .unwrap_or_default(),
            _ => String::new(),
        })
    }

    fn start_init(
        &self,
        jid: i32,
        program: &File,
        argv: &[String],
        channel: OwnedFd,
    ) -> io::Result<()> {
        let mut state = self.enter("start_init", format!("start_init {jid} {}", argv.join(" ")))?;
        if !state.jails.values().any(|&live| live == jid) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        program.metadata()?;
        let failure = state.init_failure.take();
        drop(state);
        let shared = Arc::clone(&self.0);
        std::thread::spawn(move || emulate_init(&shared, jid, &channel, failure));
        Ok(())
    }
}

/// The fake init: reads its launch message, then reports and serves, or reports `failure`.
fn emulate_init(state: &Mutex<State>, jid: i32, channel: &OwnedFd, failure: Option<String>) {
    let Ok((config, mut fds)) = receive_config(channel) else {
        return;
    };
    if let Some(error) = failure {
        let _ = send_report(channel, &InitReport::Failed { error });
        return;
    }
    state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .inits
        .insert(jid, config);
    if fds.is_empty() {
        return;
    }
    let listener = UnixListener::from(fds.remove(0));
    coppice_init::testing::serve(move || listener.accept().map(|(stream, _)| stream));
    let _ = send_report(channel, &InitReport::Ready);
}
