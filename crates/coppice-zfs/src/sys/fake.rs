//! A recording fake of `zfs` over an in-memory set of datasets and snapshots, with
//! failures injected by subcommand.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{ZfsError, ZfsSys};

#[derive(Debug, Default)]
struct State {
    /// Dataset name → (origin snapshot, user properties).
    datasets: BTreeMap<String, (Option<String>, BTreeMap<String, String>)>,
    snapshots: BTreeSet<String>,
    calls: Vec<Vec<String>>,
    /// Subcommand → stderr of its next run.
    failures: BTreeMap<String, String>,
}

/// Records every call and keeps enough state to answer `list` truthfully.
#[derive(Debug, Default)]
pub(crate) struct FakeZfs(Mutex<State>);

impl FakeZfs {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A dataset that exists before the test starts.
    pub(crate) fn with_dataset(self, name: &str, props: &[(&str, &str)]) -> Self {
        let props = props
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.state().datasets.insert(name.to_owned(), (None, props));
        self
    }

    pub(crate) fn with_snapshot(self, name: &str) -> Self {
        self.state().snapshots.insert(name.to_owned());
        self
    }

    /// The next `zfs <subcommand>` fails with `stderr`.
    pub(crate) fn fail_next(&self, subcommand: &str, stderr: &str) {
        self.state()
            .failures
            .insert(subcommand.to_owned(), stderr.to_owned());
    }

    pub(crate) fn calls(&self) -> Vec<String> {
        self.state().calls.iter().map(|c| c.join(" ")).collect()
    }

    pub(crate) fn datasets(&self) -> Vec<String> {
        self.state().datasets.keys().cloned().collect()
    }

    pub(crate) fn snapshots(&self) -> Vec<String> {
        self.state().snapshots.iter().cloned().collect()
    }
}

fn options(args: &[String]) -> BTreeMap<String, String> {
    args.windows(2)
        .filter(|pair| pair[0] == "-o")
        .filter_map(|pair| pair[1].split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn failed(args: &[String], stderr: &str) -> ZfsError {
    ZfsError::Failed {
        args: args.join(" "),
        stderr: stderr.to_owned(),
    }
}

impl ZfsSys for FakeZfs {
    fn zfs(&self, args: &[String]) -> Result<String, ZfsError> {
        let mut state = self.state();
        state.calls.push(args.to_vec());
        let subcommand = args.first().cloned().unwrap_or_default();
        if let Some(stderr) = state.failures.remove(&subcommand) {
            return Err(failed(args, &stderr));
        }
        let last = args.last().cloned().unwrap_or_default();
        let exists = |state: &State, name: &str| {
            state.datasets.contains_key(name) || state.snapshots.contains(name)
        };
        match subcommand.as_str() {
            "list" => {
                let mut out = String::new();
                for (name, (origin, props)) in &state.datasets {
                    if name != &last && !name.starts_with(&format!("{last}/")) {
                        continue;
                    }
                    let prop = |key: &str| props.get(key).cloned().unwrap_or("-".into());
                    out.push_str(&format!(
                        "{name}\t4096\t1764412800\t{}\t{}\t{}\t{}\t{}\n",
                        prop("mountpoint"),
                        origin.clone().unwrap_or("-".into()),
                        prop("coppice:user"),
                        prop("coppice:workdir"),
                        prop("coppice:snapshot_of"),
                    ));
                }
                if out.is_empty() && !state.datasets.contains_key(&last) {
                    return Err(failed(
                        args,
                        &format!("cannot open '{last}': dataset does not exist"),
                    ));
                }
                Ok(out)
            }
            "create" | "clone" => {
                if exists(&state, &last) {
                    return Err(failed(
                        args,
                        &format!("cannot create '{last}': dataset already exists"),
                    ));
                }
                let origin = (subcommand == "clone").then(|| args[args.len() - 2].clone());
                if let Some(origin) = &origin
                    && !state.snapshots.contains(origin)
                {
                    return Err(failed(
                        args,
                        &format!("cannot open '{origin}': dataset does not exist"),
                    ));
                }
                state.datasets.insert(last, (origin, options(args)));
                Ok(String::new())
            }
            "snapshot" => {
                let dataset = last.split('@').next().unwrap_or_default().to_owned();
                if !state.datasets.contains_key(&dataset) {
                    return Err(failed(
                        args,
                        &format!("cannot open '{dataset}': dataset does not exist"),
                    ));
                }
                if !state.snapshots.insert(last.clone()) {
                    return Err(failed(
                        args,
                        &format!("cannot create snapshot '{last}': dataset already exists"),
                    ));
                }
                Ok(String::new())
            }
            "promote" => {
                // The origin snapshot moves to the promoted clone; its old parent
                // becomes a clone of it.
                let Some((Some(origin), _)) = state.datasets.get(&last).cloned() else {
                    return Err(failed(args, "not a cloned filesystem"));
                };
                let (parent, snap) = origin.split_once('@').unwrap_or_default();
                let moved = format!("{last}@{snap}");
                state.snapshots.remove(&origin);
                state.snapshots.insert(moved.clone());
                if let Some(entry) = state.datasets.get_mut(&last) {
                    entry.0 = None;
                }
                if let Some(entry) = state.datasets.get_mut(parent) {
                    entry.0 = Some(moved);
                }
                Ok(String::new())
            }
            "destroy" => {
                if !exists(&state, &last) {
                    return Err(failed(
                        args,
                        &format!(
                            "could not find any snapshots to destroy; check snapshot names. cannot open '{last}': dataset does not exist"
                        ),
                    ));
                }
                let recursive = args.iter().any(|a| a == "-r");
                let prefix_snap = format!("{last}@");
                let dependents = state.datasets.values().any(|(origin, _)| {
                    origin
                        .as_deref()
                        .is_some_and(|o| o == last || o.starts_with(&prefix_snap))
                });
                if dependents {
                    return Err(failed(
                        args,
                        &format!("cannot destroy '{last}': filesystem has dependent clones"),
                    ));
                }
                let has_snaps = state.snapshots.iter().any(|s| s.starts_with(&prefix_snap));
                if has_snaps && !recursive {
                    return Err(failed(
                        args,
                        &format!("cannot destroy '{last}': filesystem has children"),
                    ));
                }
                state.datasets.remove(&last);
                state.snapshots.remove(&last);
                state.snapshots.retain(|s| !s.starts_with(&prefix_snap));
                Ok(String::new())
            }
            other => Err(failed(args, &format!("unrecognized command '{other}'"))),
        }
    }
}
