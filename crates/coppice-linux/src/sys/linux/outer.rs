//! The outer half of `coppice-init`: runs on the host, forks the builder (see `builder`),
//! moves it into the sandbox's cgroups, writes its user-namespace id map, learns PID 1's pid
//! from it, waits for PID 1 to report, then reports and exits.
//!
//! The builder and PID 1 each get a channel of their own: PID 1 runs code of the sandbox's
//! root once it re-executes, so only the builder (which never does) can name a pid.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use super::builder;
use super::syscalls::{Forked, fork};
use crate::protocol::{InitConfig, ReadyMessage};

/// Sent by the builder once it needs its id map written.
pub(super) const MSG_NEED_ID_MAP: &str = "need-id-map";
/// Sent to the builder unprompted once it sits in the sandbox's cgroups.
pub(super) const MSG_CGROUPS_JOINED: &str = "cgroups-joined";
/// The outer process's answer once the maps are written.
pub(super) const MSG_ID_MAP_DONE: &str = "id-map-done";
/// Prefix of the builder's report of PID 1's host pid.
pub(super) const MSG_PID: &str = "pid ";
/// PID 1 is serving.
pub(super) const MSG_READY: &str = "ready";
/// Prefix of a failure report from the builder or PID 1.
pub(super) const MSG_ERROR: &str = "error ";

/// Builds the sandbox; returns what to report on stdout.
pub(super) fn run(config: &InitConfig) -> ReadyMessage {
    match build(config) {
        Ok(pid) => ReadyMessage::Ready { pid },
        Err(error) => ReadyMessage::Failed { error },
    }
}

fn build(config: &InitConfig) -> Result<i32, String> {
    // Detach from the daemon's session so its terminal signals never reach the sandbox.
    rustix::process::setsid().map_err(|e| format!("setsid: {e}"))?;
    let (outer_end, builder_end) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let (from_pid1, pid1_end) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    match fork().map_err(|e| format!("fork: {e}"))? {
        Forked::Child => {
            drop(outer_end);
            drop(from_pid1);
            builder::run(config, &builder_end, &pid1_end)
        }
        Forked::Parent(builder) => {
            drop(builder_end);
            drop(pid1_end);
            let mut pid1 = None;
            let supervised = supervise_setup(config, builder, outer_end, &mut pid1)
                .and_then(|pid| wait_ready(pid, from_pid1));
            if supervised.is_err() {
                // A half-built sandbox must not outlive its report: once this process exits,
                // its processes would be adopted by the daemon, which never learns their pids.
                discard(builder);
                if let Some(pid1) = pid1 {
                    discard(pid1);
                }
            } else {
                reap(builder);
            }
            supervised
        }
    }
}

/// Kills and reaps a process whose set-up failed (PID 1 is not this process's child; the kill
/// is what matters for it).
fn discard(pid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    reap(pid);
}

fn reap(pid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
    }
}

/// Follows the builder through its set-up: joins the cgroups, writes the id map when asked,
/// learns PID 1's pid.
fn supervise_setup(
    config: &InitConfig,
    builder: i32,
    channel: UnixStream,
    pid1: &mut Option<i32>,
) -> Result<i32, String> {
    let mut writer = channel
        .try_clone()
        .map_err(|e| format!("socketpair: {e}"))?;
    // Moving a task between cgroups waits for an RCU grace period on this kernel; doing it
    // while the builder mounts overlaps the two. The builder runs no sandbox code before it
    // reads this, and everything it forks inherits the cgroups.
    join_cgroups(config, builder)?;
    writer
        .write_all(format!("{MSG_CGROUPS_JOINED}\n").as_bytes())
        .map_err(|e| format!("socketpair: {e}"))?;
    let mut lines = BufReader::new(channel).lines();
    loop {
        let line = match lines.next() {
            Some(Ok(line)) => line,
            Some(Err(error)) => return Err(format!("lost contact with sandbox init: {error}")),
            None => return Err("sandbox init exited during set-up".into()),
        };
        if line == MSG_NEED_ID_MAP {
            write_id_maps(config, builder)?;
            writer
                .write_all(format!("{MSG_ID_MAP_DONE}\n").as_bytes())
                .map_err(|e| format!("socketpair: {e}"))?;
        } else if let Some(pid) = line.strip_prefix(MSG_PID) {
            let pid = pid
                .parse()
                .map_err(|_| format!("bad pid from sandbox init: {pid:?}"))?;
            *pid1 = Some(pid);
            return Ok(pid);
        } else if let Some(error) = line.strip_prefix(MSG_ERROR) {
            return Err(error.to_owned());
        } else {
            return Err(format!("unexpected message from sandbox init: {line:?}"));
        }
    }
}

/// Waits for PID 1's one line: "ready" (then `pid1` is the sandbox's) or why not.
fn wait_ready(pid1: i32, channel: UnixStream) -> Result<i32, String> {
    let mut line = String::new();
    match BufReader::new(channel).read_line(&mut line) {
        Ok(0) => Err("sandbox init exited during set-up".into()),
        Ok(_) if line.trim_end() == MSG_READY => Ok(pid1),
        Ok(_) => match line.trim_end().strip_prefix(MSG_ERROR) {
            Some(error) => Err(error.to_owned()),
            None => Err(format!("unexpected message from sandbox init: {line:?}")),
        },
        Err(error) => Err(format!("lost contact with sandbox init: {error}")),
    }
}

/// Moves the builder into the sandbox's cgroups; everything it starts later inherits them.
fn join_cgroups(config: &InitConfig, builder: i32) -> Result<(), String> {
    let pid = builder.to_string();
    for procs in &config.cgroup_procs {
        fs::write(procs, &pid)
            .map_err(|e| format!("cannot join cgroup {}: {e}", procs.display()))?;
    }
    Ok(())
}

/// Maps sandbox ids `0..count` to host `base..base+count`. Written by this privileged process,
/// so no `setgroups` restriction is needed.
fn write_id_maps(config: &InitConfig, builder: i32) -> Result<(), String> {
    let uid_map = format!("0 {} {}\n", config.host_uid_base, config.id_count);
    let gid_map = format!("0 {} {}\n", config.host_gid_base, config.id_count);
    fs::write(format!("/proc/{builder}/uid_map"), uid_map)
        .map_err(|e| format!("cannot write uid_map: {e}"))?;
    fs::write(format!("/proc/{builder}/gid_map"), gid_map)
        .map_err(|e| format!("cannot write gid_map: {e}"))
}
