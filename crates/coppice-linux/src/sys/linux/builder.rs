//! The builder: a child of the outer init that assembles the sandbox's root as host root,
//! then enters the sandbox's user namespace and, from inside it, creates every other
//! namespace and forks PID 1.
//!
//! The order is what makes a sandbox checkpointable: every namespace of the sandbox belongs to
//! its user namespace (CRIU enters each one from there), while the mounts made before it —
//! the overlay with trusted xattrs, the binds of host paths, the device nodes — are copied
//! into the sandbox's mount namespace locked, so sandbox root can neither unmount nor remount
//! them.

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use rustix::mount::{MountFlags, MountPropagationFlags, mount_bind, mount_change, mount_remount};
use rustix::thread::{
    Gid, LinkNameSpaceType, Uid, UnshareFlags, move_into_link_name_space, set_thread_groups,
    set_thread_res_gid, set_thread_res_uid,
};

use super::mounts::{apply, make_dir, make_dirs, safe_target, write_resolv_conf};
use super::outer::{MSG_CGROUPS_JOINED, MSG_ERROR, MSG_ID_MAP_DONE, MSG_NEED_ID_MAP, MSG_PID};
use super::pid1;
use super::syscalls::{Forked, fork, loopback_up, unshare};
use crate::protocol::{
    ENVD_BINARY, INIT_BINARY, InitConfig, MountStep, NetworkSetup, PORT_IN_ROOT,
};

/// Where the old root is parked during `pivot_root`, relative to the new root.
pub(super) const OLD_ROOT: &str = ".oldroot";

/// Runs the builder; never returns.
pub(super) fn run(config: &InitConfig, channel: &UnixStream, pid1_channel: &UnixStream) -> ! {
    match build(config, channel, pid1_channel) {
        Ok(()) => std::process::exit(0),
        Err(error) => {
            let mut writer = channel;
            let _ = writer.write_all(format!("{MSG_ERROR}{error}\n").as_bytes());
            std::process::exit(1)
        }
    }
}

fn build(
    config: &InitConfig,
    channel: &UnixStream,
    pid1_channel: &UnixStream,
) -> Result<(), String> {
    // The config travels to PID 1 in an anonymous memory file: after `pivot_root` no host
    // path is reachable, and PID 1 runs a fresh image.
    let config_file = config_memfd(config)?;
    assemble_root(config)?;
    let mut joined_user = None;
    if let NetworkSetup::Join { path, user, .. } = &config.network {
        // A prepared namespace is joined (and its loopback brought up) while this process
        // is still host root, whichever user namespace it belongs to.
        joined_user = user
            .as_ref()
            .map(|user| {
                fs::File::open(user)
                    .map_err(|e| format!("cannot open user namespace {}: {e}", user.display()))
            })
            .transpose()?;
        let namespace = fs::File::open(path)
            .map_err(|e| format!("cannot open netns {}: {e}", path.display()))?;
        move_into_link_name_space(namespace.as_fd(), Some(LinkNameSpaceType::Network))
            .map_err(|e| format!("cannot join netns {}: {e}", path.display()))?;
        loopback_up().map_err(|e| format!("loopback up: {e}"))?;
    }
    expect_line(channel, MSG_CGROUPS_JOINED)?;
    match joined_user {
        // The network namespace's own user namespace, made with the sandbox's id map.
        Some(user) => {
            move_into_link_name_space(user.as_fd(), Some(LinkNameSpaceType::User))
                .map_err(|e| format!("cannot join the user namespace: {e}"))?;
            become_root()?;
        }
        None => enter_user_namespace(channel)?,
    }
    let mut flags = UnshareFlags::NEWNS
        | UnshareFlags::NEWPID
        | UnshareFlags::NEWUTS
        | UnshareFlags::NEWIPC
        | UnshareFlags::NEWCGROUP;
    if matches!(config.network, NetworkSetup::Loopback) {
        flags |= UnshareFlags::NEWNET;
    }
    unshare(flags).map_err(|e| format!("unshare: {e}"))?;
    match fork().map_err(|e| format!("fork: {e}"))? {
        Forked::Child => pid1::enter(config, pid1_channel, &config_file),
        Forked::Parent(pid1) => {
            let mut writer = channel;
            writer
                .write_all(format!("{MSG_PID}{pid1}\n").as_bytes())
                .map_err(|e| format!("socketpair: {e}"))
        }
    }
}

/// Mounts everything host root must mount (all but `/proc`), binds the port with the init and
/// envd binaries, writes the resolver configuration, and makes the old root's parking place.
fn assemble_root(config: &InitConfig) -> Result<(), String> {
    unshare(UnshareFlags::NEWNS).map_err(|e| format!("unshare mount namespace: {e}"))?;
    mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| format!("make / private: {e}"))?;
    let mut steps = config.mounts.iter();
    // The root itself first: the port and the resolver file go into it, under the volumes.
    if let Some(first) = steps.next() {
        apply(config, first)?;
    }
    bind_port(config)?;
    for step in steps.filter(|step| !matches!(step, MountStep::Proc { .. })) {
        apply(config, step)?;
    }
    write_resolv_conf(config)?;
    make_dir(&config.rootfs, Path::new(OLD_ROOT))?;
    // Past the user namespace no host path can be walked (the run dir is root-only); the
    // working directory is how PID 1 finds the root. Unsharing the mount namespace carries it
    // over to the same place in the copy.
    rustix::process::chdir(&config.rootfs).map_err(|e| format!("chdir root: {e}"))
}

/// Binds the run dir's port at `/.coppice`, and the init and envd binaries read-only inside
/// it, so PID 1 and envd run from files within the root.
fn bind_port(config: &InitConfig) -> Result<(), String> {
    let port = make_dirs(&config.rootfs, Path::new(PORT_IN_ROOT))?;
    let mut binaries = vec![(INIT_BINARY, config.init_program.as_path())];
    if let Some(envd) = &config.envd {
        binaries.push((ENVD_BINARY, envd.binary.as_path()));
    }
    for (name, _) in &binaries {
        let mount_point = config.port_dir.join(name);
        fs::File::create(&mount_point)
            .map_err(|e| format!("create {}: {e}", mount_point.display()))?;
    }
    mount_bind(&config.port_dir, &port).map_err(|e| {
        format!(
            "bind {} on {}: {e}",
            config.port_dir.display(),
            port.display()
        )
    })?;
    for (name, source) in binaries {
        let target = safe_target(&port, Path::new(name))?;
        mount_bind(source, &target)
            .map_err(|e| format!("bind {} on {}: {e}", source.display(), target.display()))?;
        let flags = MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
        mount_remount(&target, flags, "")
            .map_err(|e| format!("read-only {}: {e}", target.display()))?;
    }
    Ok(())
}

/// Unshares the sandbox's user namespace, has the outer process map its ids, and becomes its
/// root. From here on this process holds no capability over the host.
fn enter_user_namespace(channel: &UnixStream) -> Result<(), String> {
    unshare(UnshareFlags::NEWUSER).map_err(|e| format!("unshare user namespace: {e}"))?;
    let mut writer = channel;
    writer
        .write_all(format!("{MSG_NEED_ID_MAP}\n").as_bytes())
        .map_err(|e| format!("socketpair: {e}"))?;
    expect_line(channel, MSG_ID_MAP_DONE)?;
    become_root()
}

/// Takes the ids of root of the user namespace this process is in.
fn become_root() -> Result<(), String> {
    set_thread_groups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    set_thread_res_gid(Gid::ROOT, Gid::ROOT, Gid::ROOT).map_err(|e| format!("setresgid: {e}"))?;
    set_thread_res_uid(Uid::ROOT, Uid::ROOT, Uid::ROOT).map_err(|e| format!("setresuid: {e}"))
}

/// The config as JSON in an anonymous memory file that survives `exec` (no close-on-exec).
fn config_memfd(config: &InitConfig) -> Result<OwnedFd, String> {
    let json = serde_json::to_vec(config).map_err(|e| format!("encode init config: {e}"))?;
    let fd = rustix::fs::memfd_create("coppice-init-config", rustix::fs::MemfdFlags::empty())
        .map_err(|e| format!("memfd_create: {e}"))?;
    let mut file = fs::File::from(fd);
    file.write_all(&json)
        .map_err(|e| format!("write init config: {e}"))?;
    Ok(OwnedFd::from(file))
}

/// Reads one line from the outer process and checks it is `expected`. Reads byte by byte so
/// that nothing after the line is consumed.
pub(super) fn expect_line(channel: &UnixStream, expected: &str) -> Result<(), String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let mut reader = channel;
    while byte[0] != b'\n' {
        match std::io::Read::read(&mut reader, &mut byte) {
            Ok(0) => return Err(format!("outer init went away while waiting for {expected}")),
            Ok(_) => line.push(byte[0]),
            Err(e) => return Err(format!("socketpair: {e}")),
        }
    }
    if line.strip_suffix(b"\n") != Some(expected.as_bytes()) {
        return Err(format!(
            "expected {expected}, got {:?}",
            String::from_utf8_lossy(&line)
        ));
    }
    Ok(())
}
