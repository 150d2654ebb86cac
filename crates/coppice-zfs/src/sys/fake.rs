//! A recording fake of `zfs` over an in-memory set of datasets and snapshots, with
//! failures injected by subcommand.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{ZfsError, ZfsSys};
use crate::command::ZfsOp;

#[derive(Debug, Default)]
struct State {
    /// Dataset name → (origin snapshot, user properties).
    datasets: BTreeMap<String, (Option<String>, BTreeMap<String, String>)>,
    snapshots: BTreeSet<String>,
    calls: Vec<String>,
    /// Subcommand → stderr of its next run.
    failures: BTreeMap<String, String>,
    /// Subcommand → stderr of its next run, reported after the work was done (as `zfs
    /// clone` does when the clone is made but cannot be mounted).
    failures_after: BTreeMap<String, String>,
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

    /// The next `zfs <subcommand>` does its work, then fails with `stderr`.
    pub(crate) fn fail_after(&self, subcommand: &str, stderr: &str) {
        self.state()
            .failures_after
            .insert(subcommand.to_owned(), stderr.to_owned());
    }

    pub(crate) fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    pub(crate) fn datasets(&self) -> Vec<String> {
        self.state().datasets.keys().cloned().collect()
    }

    pub(crate) fn snapshots(&self) -> Vec<String> {
        self.state().snapshots.iter().cloned().collect()
    }
}

fn failed(call: &str, stderr: &str) -> ZfsError {
    ZfsError::Failed {
        args: call.to_owned(),
        stderr: stderr.to_owned(),
    }
}

fn user_props(
    props: &[(&str, &str)],
    mountpoint: Option<&std::path::Path>,
) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = props
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    if let Some(mountpoint) = mountpoint {
        map.insert("mountpoint".into(), mountpoint.display().to_string());
    }
    map
}

/// Records a new dataset (a clone when it has an origin) unless the name is taken.
fn insert_new(
    state: &mut State,
    call: &str,
    dataset: &str,
    origin: Option<&str>,
    props: &[(&str, &str)],
    mountpoint: Option<&std::path::Path>,
) -> Result<String, ZfsError> {
    if state.datasets.contains_key(dataset) || state.snapshots.contains(dataset) {
        return Err(failed(
            call,
            &format!("cannot create '{dataset}': dataset already exists"),
        ));
    }
    let mut props = user_props(props, mountpoint);
    // A clone is of its origin's type.
    let origin_type = origin
        .and_then(|origin| origin.split('@').next())
        .and_then(|parent| state.datasets.get(parent))
        .and_then(|(_, parent_props)| parent_props.get("type").cloned());
    if let Some(kind) = origin_type {
        props.insert("type".into(), kind);
    }
    state
        .datasets
        .insert(dataset.to_owned(), (origin.map(str::to_owned), props));
    Ok(String::new())
}

impl ZfsSys for FakeZfs {
    fn zfs(&self, op: &ZfsOp<'_>) -> Result<String, ZfsError> {
        let call = op.argv().join(" ");
        let mut state = self.state();
        state.calls.push(call.clone());
        let subcommand = op.argv().first().cloned().unwrap_or_default();
        if let Some(stderr) = state.failures.remove(&subcommand) {
            return Err(failed(&call, &stderr));
        }
        let exists = |state: &State, name: &str| {
            state.datasets.contains_key(name) || state.snapshots.contains(name)
        };
        let done = match *op {
            ZfsOp::Exists { dataset } => {
                if state.datasets.contains_key(dataset.as_str()) {
                    Ok(format!("{dataset}\n"))
                } else {
                    Err(failed(
                        &call,
                        &format!("cannot open '{dataset}': dataset does not exist"),
                    ))
                }
            }
            ZfsOp::List { root } => {
                let root = root.as_str();
                let mut out = String::new();
                for (name, (origin, props)) in &state.datasets {
                    if name != root && !name.starts_with(&format!("{root}/")) {
                        continue;
                    }
                    let prop = |key: &str| props.get(key).cloned().unwrap_or_else(|| "-".into());
                    let kind = props.get("type").map_or("filesystem", String::as_str);
                    out.push_str(&format!(
                        "{name}\t{kind}\t4096\t1764412800\t{}\t{}\t{}\t{}\t{}\t{}\n",
                        prop("mountpoint"),
                        origin.clone().unwrap_or_else(|| "-".into()),
                        prop("coppice:user"),
                        prop("coppice:workdir"),
                        prop("coppice:snapshot_of"),
                        prop("coppice:sandbox"),
                    ));
                }
                if out.is_empty() {
                    return Err(failed(
                        &call,
                        &format!("cannot open '{root}': dataset does not exist"),
                    ));
                }
                Ok(out)
            }
            ZfsOp::Create {
                dataset,
                mountpoint,
                props,
            } => insert_new(
                &mut state,
                &call,
                dataset.as_str(),
                None,
                props,
                Some(mountpoint),
            ),
            ZfsOp::Clone {
                origin,
                dataset,
                mountpoint,
                props,
                ..
            } => {
                if !state.snapshots.contains(origin) {
                    return Err(failed(
                        &call,
                        &format!("cannot open '{origin}': dataset does not exist"),
                    ));
                }
                insert_new(
                    &mut state,
                    &call,
                    dataset.as_str(),
                    Some(origin),
                    props,
                    mountpoint,
                )
            }
            ZfsOp::Snapshot { name } => {
                let dataset = name.split('@').next().unwrap_or_default();
                if !state.datasets.contains_key(dataset) {
                    return Err(failed(
                        &call,
                        &format!("cannot open '{dataset}': dataset does not exist"),
                    ));
                }
                if !state.snapshots.insert(name.to_owned()) {
                    return Err(failed(
                        &call,
                        &format!("cannot create snapshot '{name}': dataset already exists"),
                    ));
                }
                Ok(String::new())
            }
            ZfsOp::Promote { dataset } => {
                // The origin snapshot moves to the promoted clone; its old parent becomes a
                // clone of it.
                let dataset = dataset.as_str();
                let Some((Some(origin), _)) = state.datasets.get(dataset).cloned() else {
                    return Err(failed(&call, "not a cloned filesystem"));
                };
                let (parent, snap) = origin.split_once('@').unwrap_or_default();
                let moved = format!("{dataset}@{snap}");
                state.snapshots.remove(&origin);
                state.snapshots.insert(moved.clone());
                if let Some(entry) = state.datasets.get_mut(dataset) {
                    entry.0 = None;
                }
                if let Some(entry) = state.datasets.get_mut(parent) {
                    entry.0 = Some(moved);
                }
                Ok(String::new())
            }
            ZfsOp::Destroy { name } => {
                if !exists(&state, name) {
                    return Err(failed(
                        &call,
                        &format!("cannot open '{name}': dataset does not exist"),
                    ));
                }
                let prefix_snap = format!("{name}@");
                let dependents = state.datasets.values().any(|(origin, _)| {
                    origin
                        .as_deref()
                        .is_some_and(|o| o == name || o.starts_with(&prefix_snap))
                });
                if dependents {
                    return Err(failed(
                        &call,
                        &format!("cannot destroy '{name}': filesystem has dependent clones"),
                    ));
                }
                state.datasets.remove(name);
                state.snapshots.remove(name);
                state.snapshots.retain(|s| !s.starts_with(&prefix_snap));
                Ok(String::new())
            }
        };
        if let Some(stderr) = state.failures_after.remove(&subcommand) {
            return Err(failed(&call, &stderr));
        }
        done
    }
}
