//! The sandbox's PID 1, in two images. First, forked by the builder inside the sandbox's
//! namespaces, it mounts `/proc`, `pivot_root`s, sets the hostname, brings up loopback, locks
//! itself down (capabilities, `no_new_privs`, seccomp, all kept across `exec`) and re-executes
//! the init binary from the port inside the root (so no mapping of a host file remains). The
//! exec loads the dynamic loader and libraries of the sandbox's own root, which sandbox root
//! can change: that is why everything privileged happens before it, and why PID 1's channel
//! to the outer init can say no more than "ready" or why not. Then, as `--pid1`, it binds its
//! sockets in the port, serves the control socket and reaps zombies until the sandbox is
//! killed.

use std::fs;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use coppice_init::envd::{self, PreparedEnvd};
use coppice_init::server;
use rustix::fs::CWD;
use rustix::io::{FdFlags, fcntl_setfd};
use rustix::mount::{
    MountFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags, move_mount, open_tree, unmount,
};
use rustix::process::{chdir, fchdir, pivot_root};

use super::builder::OLD_ROOT;
use super::mounts::{mount_data, safe_target};
use super::outer::{MSG_ERROR, MSG_READY};
use super::security;
use super::syscalls::{adopt_inherited, close_range, dup_onto, exec, loopback_up};
use crate::protocol::{
    CONTROL_SOCKET, ENVD_BINARY, ENVD_SOCKET, INIT_BINARY, InitConfig, MountStep, NetworkSetup,
    PORT_IN_ROOT,
};

/// The flag that starts the init binary as PID 1, followed by the channel's and the config's
/// descriptor numbers.
pub(super) const PID1_FLAG: &str = "--pid1";

/// In the child the builder forked: enters the root and re-executes the init from inside it.
/// Never returns.
pub(super) fn enter(config: &InitConfig, channel: &UnixStream, config_file: &OwnedFd) -> ! {
    let prepared = enter_root(config).and_then(|()| lock_down(config));
    let error = match prepared.and_then(|()| exec_from_port(config, channel, config_file)) {
        Ok(never) => match never {},
        Err(error) => error,
    };
    let mut writer = channel;
    let _ = writer.write_all(format!("{MSG_ERROR}{error}\n").as_bytes());
    std::process::exit(1)
}

/// Mounts `/proc` from inside the sandbox's PID namespace and makes the root the root. The
/// working directory, set by the builder, is the assembled root.
fn enter_root(config: &InitConfig) -> Result<(), String> {
    // The root mount was made by host root, so in this mount namespace it is locked, and
    // `pivot_root` refuses a locked new root; a recursive copy of it, put on top of it, is
    // not. The copy's descriptor is how to step onto it.
    let copy = open_tree(
        CWD,
        ".",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .map_err(|e| format!("copy root: {e}"))?;
    move_mount(&copy, "", CWD, ".", MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| format!("put copy of root on root: {e}"))?;
    fchdir(&copy).map_err(|e| format!("enter copy of root: {e}"))?;
    drop(copy);
    for step in &config.mounts {
        if let MountStep::Proc { target } = step {
            let target = safe_target(Path::new("."), target)?;
            let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
            mount_data("proc", &target, "proc", flags, "")
                .map_err(|e| format!("mount proc: {e}"))?;
        }
    }
    pivot_root(".", OLD_ROOT).map_err(|e| format!("pivot_root: {e}"))?;
    unmount(format!("/{OLD_ROOT}").as_str(), UnmountFlags::DETACH)
        .map_err(|e| format!("detach old root: {e}"))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))
}

/// Everything PID 1 needs privileges for, then the lock-down that ends them.
fn lock_down(config: &InitConfig) -> Result<(), String> {
    rustix::system::sethostname(config.hostname.as_bytes())
        .map_err(|e| format!("sethostname: {e}"))?;
    if matches!(config.network, NetworkSetup::Loopback) {
        // A fresh namespace, made inside the sandbox's user namespace; a joined one had its
        // loopback brought up by the builder.
        loopback_up().map_err(|e| format!("loopback up: {e}"))?;
    }
    rustix::process::setsid().map_err(|e| format!("setsid: {e}"))?;
    security::lock_down()
}

fn exec_from_port(
    config: &InitConfig,
    channel: &UnixStream,
    config_file: &OwnedFd,
) -> Result<std::convert::Infallible, String> {
    for fd in [channel.as_fd(), config_file.as_fd()] {
        fcntl_setfd(fd, FdFlags::empty()).map_err(|e| format!("keep descriptor: {e}"))?;
    }
    let program = Path::new("/").join(PORT_IN_ROOT).join(INIT_BINARY);
    let mut args = config.init_leading_args.clone();
    args.extend([
        PID1_FLAG.to_owned(),
        channel.as_raw_fd().to_string(),
        config_file.as_raw_fd().to_string(),
    ]);
    Err(format!(
        "exec {}: {}",
        program.display(),
        exec(&program, &args)
    ))
}

/// PID 1's second image: `channel` and `config` are the descriptor numbers `enter` passed.
/// Never returns while the sandbox lives.
pub(super) fn main(channel: &str, config: &str) -> std::process::ExitCode {
    let (Ok(channel), Ok(config)) = (channel.parse::<RawFd>(), config.parse::<RawFd>()) else {
        return std::process::ExitCode::FAILURE;
    };
    if channel < 3 || config < 3 || channel == config {
        return std::process::ExitCode::FAILURE;
    }
    // The numbers came from `enter`, which left exactly these two descriptors open across
    // `exec`; nothing else in this fresh image owns them.
    let channel = UnixStream::from(adopt_inherited(channel));
    // Inherited across `exec` on purpose; nothing PID 1 starts (envd, commands) may inherit it.
    if fcntl_setfd(&channel, FdFlags::CLOEXEC).is_err() {
        return std::process::ExitCode::FAILURE;
    }
    let shared = read_config(adopt_inherited(config)).and_then(|config| serve(&config, &channel));
    let mut writer = &channel;
    match shared {
        Ok(shared) => {
            if writer
                .write_all(format!("{MSG_READY}\n").as_bytes())
                .is_err()
            {
                return std::process::ExitCode::FAILURE;
            }
            // Nothing of the outer init may stay open: a checkpoint takes every descriptor.
            drop(channel);
            server::reap_forever(&shared)
        }
        Err(error) => {
            let _ = writer.write_all(format!("{MSG_ERROR}{error}\n").as_bytes());
            std::process::ExitCode::FAILURE
        }
    }
}

fn read_config(file: OwnedFd) -> Result<InitConfig, String> {
    let mut file = fs::File::from(file);
    let mut json = Vec::new();
    file.rewind()
        .and_then(|()| file.read_to_end(&mut json))
        .map_err(|e| format!("read init config: {e}"))?;
    serde_json::from_slice(&json).map_err(|e| format!("decode init config: {e}"))
}

/// Finishes PID 1's set-up and starts serving; returns what `reap_forever` needs.
fn serve(
    config: &InitConfig,
    channel: &UnixStream,
) -> Result<std::sync::Arc<server::Shared>, String> {
    let port = Path::new("/").join(PORT_IN_ROOT);
    let listener = envd::bind_private(&port.join(CONTROL_SOCKET))?;
    let envd = match &config.envd {
        Some(launch) => Some(PreparedEnvd::prepare(
            &port.join(ENVD_BINARY),
            &port.join(ENVD_SOCKET),
            launch.args.clone(),
        )?),
        None => None,
    };
    redirect_stdio()?;
    let mut keep = vec![listener.as_raw_fd(), channel.as_raw_fd()];
    keep.extend(envd.as_ref().map(PreparedEnvd::fds).into_iter().flatten());
    close_all_but(&keep)?;
    // PID 1 stays dumpable: a checkpoint enters its namespaces from inside the sandbox's user
    // namespace, which a non-dumpable process refuses once restored. It holds no more than
    // sandbox root has anyway (same credentials, same seccomp filter, and its sockets sit in
    // the port sandbox root can reach).
    let shared = server::start(config.env.clone(), config.exec_output_limit, listener)?;
    if let Some(envd) = envd {
        envd::start(&shared, envd, config.env.clone())?;
    }
    Ok(shared)
}

/// Points stdin, stdout and stderr at the sandbox's own `/dev/null`, so PID 1 holds no
/// descriptor of a host file.
fn redirect_stdio() -> Result<(), String> {
    let null = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("open /dev/null: {e}"))?;
    for target in 0..=2 {
        dup_onto(&null, target).map_err(|e| format!("dup2 onto {target}: {e}"))?;
    }
    Ok(())
}

fn close_all_but(keep: &[i32]) -> Result<(), String> {
    let mut keep = keep.to_vec();
    keep.sort_unstable();
    let mut first = 3;
    for fd in keep {
        close_range(first, fd - 1).map_err(|e| format!("close_range: {e}"))?;
        first = fd + 1;
    }
    close_range(first, i32::MAX).map_err(|e| format!("close_range: {e}"))
}
