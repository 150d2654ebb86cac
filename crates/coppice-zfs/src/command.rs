//! The operations coppice asks of ZFS, and the argument lists that carry them to `zfs`.

use std::path::Path;

use crate::layout::DatasetName;
use crate::list::LIST_COLUMNS;

/// One ZFS operation, as the storage plans it. [`ZfsOp::argv`] is its `zfs` command line;
/// other implementations of the seam may carry it out another way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZfsOp<'a> {
    /// Whether one dataset exists (its name, or a "does not exist" failure).
    Exists {
        /// The dataset.
        dataset: &'a DatasetName,
    },
    /// Every filesystem under `root`, in [`LIST_COLUMNS`] order.
    List {
        /// The root dataset.
        root: &'a DatasetName,
    },
    /// A new filesystem (and its missing parents).
    Create {
        /// The dataset.
        dataset: &'a DatasetName,
        /// Where it is mounted.
        mountpoint: &'a Path,
        /// User properties to set.
        props: &'a [(&'a str, &'a str)],
    },
    /// A clone of a snapshot.
    Clone {
        /// The snapshot (`dataset@name`).
        origin: &'a str,
        /// The new dataset.
        dataset: &'a DatasetName,
        /// Where it is mounted; `None` for a volume's clone (a volume is no file system).
        mountpoint: Option<&'a Path>,
        /// Its quota in MiB; none for `None` or 0.
        quota_mb: Option<u32>,
        /// User properties to set.
        props: &'a [(&'a str, &'a str)],
    },
    /// A snapshot (`dataset@name`).
    Snapshot {
        /// Its full name.
        name: &'a str,
    },
    /// Makes a clone independent of its origin.
    Promote {
        /// The clone.
        dataset: &'a DatasetName,
    },
    /// Destroys a dataset with its snapshots, or one snapshot.
    Destroy {
        /// The dataset or snapshot.
        name: &'a str,
    },
}

impl ZfsOp<'_> {
    /// The `zfs` command line (without the program name).
    pub fn argv(&self) -> Vec<String> {
        match *self {
            Self::Exists { dataset } => strings(&["list", "-H", "-o", "name", dataset.as_str()]),
            Self::List { root } => list(root),
            Self::Create {
                dataset,
                mountpoint,
                props,
            } => create(dataset, mountpoint, props),
            Self::Clone {
                origin,
                dataset,
                mountpoint,
                quota_mb,
                props,
            } => clone(origin, dataset, mountpoint, quota_mb, props),
            Self::Snapshot { name } => snapshot(name),
            Self::Promote { dataset } => promote(dataset),
            Self::Destroy { name } => destroy(name),
        }
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|&arg| arg.to_owned()).collect()
}

/// `zfs list -Hp -o <columns> -t filesystem,volume -r <root>`: every dataset under `root`.
fn list(root: &DatasetName) -> Vec<String> {
    strings(&[
        "list",
        "-Hp",
        "-o",
        LIST_COLUMNS,
        "-t",
        "filesystem,volume",
        "-r",
        root.as_str(),
    ])
}

/// `zfs create -p -o mountpoint=<path> [-o <prop>=<value>]… <dataset>`.
fn create(dataset: &DatasetName, mountpoint: &Path, props: &[(&str, &str)]) -> Vec<String> {
    let mut args = strings(&["create", "-p", "-o"]);
    args.push(format!("mountpoint={}", mountpoint.display()));
    for (key, value) in props {
        args.push("-o".into());
        args.push(format!("{key}={value}"));
    }
    args.push(dataset.as_str().to_owned());
    args
}

/// `zfs clone [-o mountpoint=<path>] [-o quota=<N>M] [-o <prop>=<value>]… <snapshot> <dataset>`.
fn clone(
    snapshot: &str,
    dataset: &DatasetName,
    mountpoint: Option<&Path>,
    quota_mb: Option<u32>,
    props: &[(&str, &str)],
) -> Vec<String> {
    let mut args = strings(&["clone"]);
    if let Some(mountpoint) = mountpoint {
        args.push("-o".into());
        args.push(format!("mountpoint={}", mountpoint.display()));
    }
    if let Some(quota) = quota_mb.filter(|mb| *mb > 0) {
        args.push("-o".into());
        args.push(format!("quota={quota}M"));
    }
    for (key, value) in props {
        args.push("-o".into());
        args.push(format!("{key}={value}"));
    }
    args.push(snapshot.to_owned());
    args.push(dataset.as_str().to_owned());
    args
}

/// `zfs snapshot <dataset>@<name>`.
fn snapshot(snapshot: &str) -> Vec<String> {
    strings(&["snapshot", snapshot])
}

/// `zfs promote <dataset>`: the clone takes over its origin snapshot, so the dataset it was
/// cloned from can be destroyed while the clone lives on.
fn promote(dataset: &DatasetName) -> Vec<String> {
    strings(&["promote", dataset.as_str()])
}

/// `zfs destroy -r <dataset or snapshot>`: the dataset and its snapshots.
fn destroy(name: &str) -> Vec<String> {
    strings(&["destroy", "-r", name])
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn test_argument_lists() {
        let dataset = DatasetName::parse("zroot/coppice/sandboxes/abc").unwrap();
        let mountpoint = PathBuf::from("/var/db/coppice/sandboxes/abc");
        let cases: Vec<(Vec<String>, &str)> = vec![
            (
                list(&DatasetName::parse("zroot/coppice").unwrap()),
                "list -Hp -o name,type,used,creation,mountpoint,origin,coppice:user,coppice:workdir,coppice:snapshot_of,coppice:sandbox -t filesystem,volume -r zroot/coppice",
            ),
            (
                create(&dataset, &mountpoint, &[("coppice:user", "user")]),
                "create -p -o mountpoint=/var/db/coppice/sandboxes/abc -o coppice:user=user zroot/coppice/sandboxes/abc",
            ),
            (
                clone(
                    "zroot/coppice/templates/base@template",
                    &dataset,
                    Some(&mountpoint),
                    Some(2048),
                    &[],
                ),
                "clone -o mountpoint=/var/db/coppice/sandboxes/abc -o quota=2048M zroot/coppice/templates/base@template zroot/coppice/sandboxes/abc",
            ),
            (
                clone(
                    "zroot/coppice/templates/base@template",
                    &dataset,
                    Some(&mountpoint),
                    Some(0),
                    &[],
                ),
                "clone -o mountpoint=/var/db/coppice/sandboxes/abc zroot/coppice/templates/base@template zroot/coppice/sandboxes/abc",
            ),
            (
                clone(
                    "zroot/coppice/templates/debian-vm@template",
                    &dataset,
                    None,
                    None,
                    &[],
                ),
                "clone zroot/coppice/templates/debian-vm@template zroot/coppice/sandboxes/abc",
            ),
            (
                snapshot("zroot/coppice/sandboxes/abc@s1"),
                "snapshot zroot/coppice/sandboxes/abc@s1",
            ),
            (promote(&dataset), "promote zroot/coppice/sandboxes/abc"),
            (
                destroy("zroot/coppice/sandboxes/abc"),
                "destroy -r zroot/coppice/sandboxes/abc",
            ),
        ];
        for (args, expected) in cases {
            assert_eq!(args.join(" "), expected);
        }
    }
}
