//! Counters of host resources, to prove that sandboxes leave nothing behind.

use std::collections::BTreeSet;
use std::fs;

/// A snapshot of host resources a sandbox could leak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostResources {
    /// Lines of this process's mount table.
    pub mounts: usize,
    /// Distinct namespaces referenced by any process.
    pub namespaces: usize,
    /// User-space processes on the host (kernel workers come and go with load, so they are
    /// not counted).
    pub processes: usize,
    /// Loop devices with a backing file.
    pub loop_devices: usize,
    /// Open descriptors of this process.
    pub open_fds: usize,
    /// cgroup directories under the given group names.
    pub cgroups: usize,
}

impl HostResources {
    /// Counts everything now; `cgroup_groups` are directories whose subdirectories are counted.
    pub fn count(cgroup_groups: &[std::path::PathBuf]) -> Self {
        Self {
            mounts: fs::read_to_string("/proc/self/mountinfo")
                .map(|t| t.lines().count())
                .unwrap_or(0),
            namespaces: namespaces(),
            processes: pids()
                .into_iter()
                .filter(|pid| !is_kernel_thread(*pid))
                .count(),
            loop_devices: loop_devices(),
            open_fds: fs::read_dir("/proc/self/fd")
                .map(|d| d.count())
                .unwrap_or(0),
            cgroups: cgroup_groups
                .iter()
                .filter_map(|group| fs::read_dir(group).ok())
                .map(|dir| dir.flatten().filter(|e| e.path().is_dir()).count())
                .sum(),
        }
    }
}

fn pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `PF_KTHREAD` in the flags field of `/proc/<pid>/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

fn is_kernel_thread(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Fields after the parenthesised command name: state, ppid, pgrp, session, tty, tpgid,
    // flags.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(6)?.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

fn namespaces() -> usize {
    let mut seen = BTreeSet::new();
    for pid in pids() {
        let Ok(entries) = fs::read_dir(format!("/proc/{pid}/ns")) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Ok(target) = fs::read_link(entry.path()) {
                seen.insert(target);
            }
        }
    }
    seen.len()
}

fn loop_devices() -> usize {
    fs::read_dir("/sys/block")
        .map(|dir| {
            dir.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
                .filter(|e| e.path().join("loop/backing_file").exists())
                .count()
        })
        .unwrap_or(0)
}
