//! The argument lists coppice passes to `zfs`, one function per operation.

use std::path::Path;

use crate::layout::DatasetName;
use crate::list::LIST_COLUMNS;

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|&arg| arg.to_owned()).collect()
}

/// `zfs list -Hp -o <columns> -t filesystem -r <root>`: every filesystem under `root`.
pub(crate) fn list(root: &DatasetName) -> Vec<String> {
    strings(&[
        "list",
        "-Hp",
        "-o",
        LIST_COLUMNS,
        "-t",
        "filesystem",
        "-r",
        root.as_str(),
    ])
}

/// `zfs create -p -o mountpoint=<path> [-o <prop>=<value>]… <dataset>`.
pub(crate) fn create(
    dataset: &DatasetName,
    mountpoint: &Path,
    props: &[(&str, &str)],
) -> Vec<String> {
    let mut args = strings(&["create", "-p", "-o"]);
    args.push(format!("mountpoint={}", mountpoint.display()));
    for (key, value) in props {
        args.push("-o".into());
        args.push(format!("{key}={value}"));
    }
    args.push(dataset.as_str().to_owned());
    args
}

/// `zfs clone -o mountpoint=<path> [-o quota=<N>M] [-o <prop>=<value>]… <snapshot> <dataset>`.
pub(crate) fn clone(
    snapshot: &str,
    dataset: &DatasetName,
    mountpoint: &Path,
    quota_mb: Option<u32>,
    props: &[(&str, &str)],
) -> Vec<String> {
    let mut args = strings(&["clone", "-o"]);
    args.push(format!("mountpoint={}", mountpoint.display()));
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
pub(crate) fn snapshot(snapshot: &str) -> Vec<String> {
    strings(&["snapshot", snapshot])
}

/// `zfs promote <dataset>`: the clone takes over its origin snapshot, so the dataset it was
/// cloned from can be destroyed while the clone lives on.
pub(crate) fn promote(dataset: &DatasetName) -> Vec<String> {
    strings(&["promote", dataset.as_str()])
}

/// `zfs destroy -r <dataset or snapshot>`: the dataset and its snapshots.
pub(crate) fn destroy(name: &str) -> Vec<String> {
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
                "list -Hp -o name,used,creation,mountpoint,origin,coppice:user,coppice:workdir,coppice:snapshot_of -t filesystem -r zroot/coppice",
            ),
            (
                create(&dataset, &mountpoint, &[("coppice:user", "user")]),
                "create -p -o mountpoint=/var/db/coppice/sandboxes/abc -o coppice:user=user zroot/coppice/sandboxes/abc",
            ),
            (
                clone(
                    "zroot/coppice/templates/base@template",
                    &dataset,
                    &mountpoint,
                    Some(2048),
                    &[],
                ),
                "clone -o mountpoint=/var/db/coppice/sandboxes/abc -o quota=2048M zroot/coppice/templates/base@template zroot/coppice/sandboxes/abc",
            ),
            (
                clone(
                    "zroot/coppice/templates/base@template",
                    &dataset,
                    &mountpoint,
                    Some(0),
                    &[],
                ),
                "clone -o mountpoint=/var/db/coppice/sandboxes/abc zroot/coppice/templates/base@template zroot/coppice/sandboxes/abc",
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
