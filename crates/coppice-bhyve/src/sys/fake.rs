//! A recording fake of the host: commands recorded (with their standard input), `zfs get
//! origin` and `bhyvectl --destroy` answered from an in-memory model of VMs and datasets,
//! bhyve processes as entries with a state, and failures injected by command prefix.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{BhyveSys, VmSignal};

/// A fake bhyve process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FakeProcess {
    pub(crate) argv: Vec<String>,
    pub(crate) stopped: bool,
}

#[derive(Debug, Default)]
struct State {
    commands: Vec<String>,
    processes: BTreeMap<i32, FakeProcess>,
    next_pid: i32,
    vms: BTreeSet<String>,
    /// Dataset → origin snapshot.
    datasets: BTreeMap<String, String>,
    /// (dataset, property) → value, as `zfs set` left it.
    props: BTreeMap<(String, String), String>,
    fail_prefixes: Vec<String>,
}

/// The fake host.
#[derive(Debug, Default)]
pub(crate) struct FakeBhyveSys(Mutex<State>);

impl FakeBhyveSys {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next command starting with `prefix` fails.
    pub(crate) fn fail_next(&self, prefix: &str) {
        self.state().fail_prefixes.push(prefix.to_owned());
    }

    /// A dataset cloned from `origin`, as storage made it.
    pub(crate) fn add_dataset(&self, dataset: &str, origin: &str) {
        self.state()
            .datasets
            .insert(dataset.to_owned(), origin.to_owned());
    }

    pub(crate) fn datasets(&self) -> BTreeMap<String, String> {
        self.state().datasets.clone()
    }

    pub(crate) fn commands(&self) -> Vec<String> {
        self.state().commands.clone()
    }

    pub(crate) fn processes(&self) -> BTreeMap<i32, FakeProcess> {
        self.state().processes.clone()
    }

    pub(crate) fn vms(&self) -> Vec<String> {
        self.state().vms.iter().cloned().collect()
    }

    /// The host lost a VM (e.g. it rebooted): its process and kernel state are gone.
    pub(crate) fn lose(&self, pid: i32) {
        let mut state = self.state();
        if let Some(process) = state.processes.remove(&pid)
            && let Some(name) = process.argv.last()
        {
            let name = name.clone();
            state.vms.remove(&name);
        }
    }
}

impl State {
    /// Records `command`; an injected failure if one is due for it.
    fn record(&mut self, command: String) -> io::Result<()> {
        let due = self
            .fail_prefixes
            .iter()
            .position(|prefix| command.starts_with(prefix.as_str()));
        self.commands.push(command);
        match due {
            Some(at) => {
                self.fail_prefixes.remove(at);
                let command = self.commands.last().map_or("", String::as_str);
                Err(io::Error::other(format!("injected failure of {command}")))
            }
            None => Ok(()),
        }
    }
}

impl BhyveSys for FakeBhyveSys {
    fn run(&self, argv: &[String], stdin: Option<&str>) -> io::Result<String> {
        let mut state = self.state();
        let mut command = argv.join(" ");
        if let Some(text) = stdin {
            command.push_str(" <<< ");
            command.push_str(text.trim_end());
        }
        state.record(command.clone())?;
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        match args.as_slice() {
            ["zfs", "get", "-H", "-o", "value", "origin", dataset] => state
                .datasets
                .get(*dataset)
                .map(|origin| format!("{origin}\n"))
                .ok_or_else(|| io::Error::other(format!("cannot open '{dataset}'"))),
            ["zfs", "get", "-H", "-o", "value", property, dataset] => {
                if !state.datasets.contains_key(*dataset) {
                    return Err(io::Error::other(format!("cannot open '{dataset}'")));
                }
                let key = ((*dataset).to_owned(), (*property).to_owned());
                Ok(format!(
                    "{}\n",
                    state.props.get(&key).map_or("-", String::as_str)
                ))
            }
            ["zfs", "set", assignment, dataset] => {
                if !state.datasets.contains_key(*dataset) {
                    return Err(io::Error::other(format!("cannot open '{dataset}'")));
                }
                let (property, value) = assignment.split_once('=').unwrap_or_default();
                state.props.insert(
                    ((*dataset).to_owned(), property.to_owned()),
                    value.to_owned(),
                );
                Ok(String::new())
            }
            ["zfs", "clone", .., origin, dataset] => {
                state
                    .datasets
                    .insert((*dataset).to_owned(), (*origin).to_owned());
                Ok(String::new())
            }
            ["zfs", "destroy", dataset] | ["zfs", "destroy", "-r", dataset] => {
                let dataset = (*dataset).to_owned();
                state.props.retain(|(name, _), _| *name != dataset);
                state
                    .datasets
                    .remove(&dataset)
                    .map(|_| String::new())
                    .ok_or_else(|| io::Error::other(format!("cannot open '{dataset}'")))
            }
            ["bhyvectl", "--destroy", vm] => {
                let name = vm.trim_start_matches("--vm=");
                if state.vms.remove(name) {
                    Ok(String::new())
                } else {
                    Err(io::Error::other(format!("vm_open: {name} failed")))
                }
            }
            _ => Ok(String::new()),
        }
    }

    fn spawn(&self, argv: &[String], _log: &Path) -> io::Result<i32> {
        let mut state = self.state();
        let command = format!("spawn {}", argv.join(" "));
        state.record(command.clone())?;
        if let Some(name) = argv.last() {
            let name = name.clone();
            state.vms.insert(name);
        }
        state.next_pid += 1;
        let pid = state.next_pid;
        state.processes.insert(
            pid,
            FakeProcess {
                argv: argv.to_vec(),
                stopped: false,
            },
        );
        Ok(pid)
    }

    fn runs_vm(&self, pid: i32, vm: &str) -> bool {
        self.state()
            .processes
            .get(&pid)
            .is_some_and(|process| process.argv.last().map(String::as_str) == Some(vm))
    }

    fn signal(&self, pid: i32, signal: VmSignal) -> io::Result<()> {
        let mut state = self.state();
        state.commands.push(format!("kill -{signal:?} {pid}"));
        match signal {
            // The kernel keeps the VM until bhyvectl --destroy.
            VmSignal::Kill => {
                state.processes.remove(&pid);
            }
            VmSignal::Stop | VmSignal::Continue => {
                if let Some(process) = state.processes.get_mut(&pid) {
                    process.stopped = signal == VmSignal::Stop;
                }
            }
        }
        Ok(())
    }

    fn vm_exists(&self, name: &str) -> bool {
        self.state().vms.contains(name)
    }
}
