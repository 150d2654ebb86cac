//! The outer half of `coppice-init`: runs on the host, creates the namespaces, forks the
//! sandbox's PID 1, moves it into its cgroups, writes its user-namespace id map, reports,
//! exits.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};

use rustix::thread::{LinkNameSpaceType, UnshareFlags, move_into_link_name_space};

use super::syscalls::{Forked, fork, unshare};
use coppice_init::envd::PreparedEnvd;

use super::pid1;
use crate::protocol::{InitConfig, NetworkSetup, ReadyMessage};

/// Messages PID 1 sends to the outer process over their socket pair, one per line.
pub(super) const MSG_NEED_ID_MAP: &str = "need-id-map";
/// Sent to PID 1 unprompted once it sits in the sandbox's cgroups.
pub(super) const MSG_CGROUPS_JOINED: &str = "cgroups-joined";
/// The outer process's answer once the maps are written.
pub(super) const MSG_ID_MAP_DONE: &str = "id-map-done";
/// PID 1 is serving.
pub(super) const MSG_READY: &str = "ready";
/// Prefix of a failure report from PID 1.
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

    let _ = fs::remove_file(&config.control_socket);
    let listener = UnixListener::bind(&config.control_socket).map_err(|e| {
        format!(
            "cannot bind control socket {}: {e}",
            config.control_socket.display()
        )
    })?;
    fs::set_permissions(&config.control_socket, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict control socket: {e}"))?;

    // The mount namespace is unshared by PID 1 itself: its `pivot_root` moves the root of
    // every process in its mount namespace, and this process must keep the host's `/proc` to
    // write PID 1's id map.
    // The cgroup namespace is unshared by PID 1 too, once it sits in its own cgroups, so that
    // its view of cgroups starts at the sandbox's directory.
    let mut flags = UnshareFlags::NEWPID | UnshareFlags::NEWUTS | UnshareFlags::NEWIPC;
    match &config.network {
        NetworkSetup::Loopback => flags |= UnshareFlags::NEWNET,
        NetworkSetup::Join { path } => {
            let namespace = fs::File::open(path)
                .map_err(|e| format!("cannot open netns {}: {e}", path.display()))?;
            move_into_link_name_space(namespace.as_fd(), Some(LinkNameSpaceType::Network))
                .map_err(|e| format!("cannot join netns {}: {e}", path.display()))?;
        }
    }
    unshare(flags).map_err(|e| format!("unshare: {e}"))?;

    let envd = match &config.envd {
        Some(launch) => Some(PreparedEnvd::prepare(
            &launch.binary,
            &launch.socket,
            launch.args.clone(),
        )?),
        None => None,
    };

    let (outer_end, pid1_end) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    match fork().map_err(|e| format!("fork: {e}"))? {
        Forked::Child => {
            drop(outer_end);
            pid1::run(config, listener, envd, pid1_end)
        }
        Forked::Parent(child) => {
            drop(pid1_end);
            drop(listener);
            drop(envd);
            let supervised = supervise_setup(config, child, outer_end);
            if supervised.is_err() {
                // A half-built PID 1 must not outlive its report: once this process exits it
                // would be adopted, as a zombie, by the daemon, which never learns its pid.
                discard(child);
            }
            supervised
        }
    }
}

/// Kills and reaps a PID 1 whose set-up failed.
fn discard(child: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(child) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
    }
}

/// Follows PID 1 through its set-up: writes its id map when asked, waits for "ready".
fn supervise_setup(config: &InitConfig, child: i32, channel: UnixStream) -> Result<i32, String> {
    let mut writer = channel
        .try_clone()
        .map_err(|e| format!("socketpair: {e}"))?;
    // Moving a task between cgroups waits for an RCU grace period on this kernel; doing it
    // while PID 1 mounts overlaps the two. PID 1 runs no sandbox code before it reads this.
    join_cgroups(config, child)?;
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
            write_id_maps(config, child)?;
            writer
                .write_all(format!("{MSG_ID_MAP_DONE}\n").as_bytes())
                .map_err(|e| format!("socketpair: {e}"))?;
        } else if line == MSG_READY {
            return Ok(child);
        } else if let Some(error) = line.strip_prefix(MSG_ERROR) {
            return Err(error.to_owned());
        } else {
            return Err(format!("unexpected message from sandbox init: {line:?}"));
        }
    }
}

/// Moves PID 1 into the sandbox's cgroups; everything it starts later inherits them.
fn join_cgroups(config: &InitConfig, child: i32) -> Result<(), String> {
    let pid = child.to_string();
    for procs in &config.cgroup_procs {
        fs::write(procs, &pid)
            .map_err(|e| format!("cannot join cgroup {}: {e}", procs.display()))?;
    }
    Ok(())
}

/// Maps sandbox ids `0..count` to host `base..base+count`. Written by this privileged process,
/// so no `setgroups` restriction is needed.
fn write_id_maps(config: &InitConfig, child: i32) -> Result<(), String> {
    let uid_map = format!("0 {} {}\n", config.host_uid_base, config.id_count);
    let gid_map = format!("0 {} {}\n", config.host_gid_base, config.id_count);
    fs::write(format!("/proc/{child}/uid_map"), uid_map)
        .map_err(|e| format!("cannot write uid_map: {e}"))?;
    fs::write(format!("/proc/{child}/gid_map"), gid_map)
        .map_err(|e| format!("cannot write gid_map: {e}"))
}
