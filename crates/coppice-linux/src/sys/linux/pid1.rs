//! The sandbox's PID 1: assembles the root, enters the user namespace, locks itself down,
//! then serves the control socket and reaps zombies until the sandbox is killed.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Component, Path, PathBuf};

use coppice_init::envd::{self, PreparedEnvd};
use coppice_init::server;
use rustix::mount::{
    MountFlags, MountPropagationFlags, UnmountFlags, mount, mount_bind, mount_change,
    mount_remount, unmount,
};
use rustix::process::{DumpableBehavior, chdir, pivot_root, set_dumpable_behavior};
use rustix::thread::{
    Gid, Uid, UnshareFlags, set_thread_groups, set_thread_res_gid, set_thread_res_uid,
};

use super::outer::{MSG_CGROUPS_JOINED, MSG_ERROR, MSG_ID_MAP_DONE, MSG_NEED_ID_MAP, MSG_READY};
use super::security;
use super::syscalls::{close_range, dup_onto, loopback_up, unshare};
use crate::mount_plan::overlay_data;
use crate::protocol::{InitConfig, MountStep};

/// Where the old root is parked during `pivot_root`, relative to the new root.
const OLD_ROOT: &str = ".oldroot";

/// Runs as PID 1 of the new PID namespace; never returns.
pub(super) fn run(
    config: &InitConfig,
    listener: UnixListener,
    envd: Option<PreparedEnvd>,
    channel: UnixStream,
) -> ! {
    let envd_fds = envd.as_ref().map(PreparedEnvd::fds);
    match set_up(config, &listener, envd_fds, &channel) {
        Ok(()) => match server::start(config.env.clone(), config.exec_output_limit, listener)
            .and_then(|shared| {
                if let Some(envd) = envd {
                    envd::start(&shared, envd, config.env.clone())?;
                }
                Ok(shared)
            }) {
            Ok(shared) => {
                let mut writer = &channel;
                if writer
                    .write_all(format!("{MSG_READY}\n").as_bytes())
                    .is_err()
                {
                    std::process::exit(1);
                }
                drop(channel);
                server::reap_forever(&shared)
            }
            Err(error) => {
                let mut writer = &channel;
                let _ = writer.write_all(format!("{MSG_ERROR}{error}\n").as_bytes());
                std::process::exit(1)
            }
        },
        Err(error) => {
            let mut writer = &channel;
            let _ = writer.write_all(format!("{MSG_ERROR}{error}\n").as_bytes());
            std::process::exit(1)
        }
    }
}

fn set_up(
    config: &InitConfig,
    listener: &UnixListener,
    envd_fds: Option<Vec<i32>>,
    channel: &UnixStream,
) -> Result<(), String> {
    unshare(UnshareFlags::NEWNS).map_err(|e| format!("unshare mount namespace: {e}"))?;
    mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| format!("make / private: {e}"))?;
    for step in &config.mounts {
        apply(config, step)?;
    }
    write_resolv_conf(config)?;
    rustix::system::sethostname(config.hostname.as_bytes())
        .map_err(|e| format!("sethostname: {e}"))?;
    // Joined namespaces come from a pool that only creates them; loopback is brought up here
    // in both cases (PID 1 is still host root, owner of the namespace).
    loopback_up().map_err(|e| format!("loopback up: {e}"))?;
    enter_root(&config.rootfs)?;
    enter_user_namespace(channel)?;
    redirect_stdio()?;
    let mut keep = vec![listener.as_raw_fd(), channel.as_raw_fd()];
    keep.extend(envd_fds.into_iter().flatten());
    close_all_but(&keep)?;
    rustix::process::setsid().map_err(|e| format!("setsid: {e}"))?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)
        .map_err(|e| format!("set not dumpable: {e}"))?;
    security::lock_down()
}

fn apply(config: &InitConfig, step: &MountStep) -> Result<(), String> {
    let root = &config.rootfs;
    match step {
        MountStep::Overlay { lower, upper, work } => {
            let data = overlay_data(lower, upper, work);
            mount_data("overlay", root, "overlay", MountFlags::empty(), &data)
                .map_err(|e| format!("mount overlay root ({data}): {e}"))
        }
        MountStep::Bind {
            source,
            target,
            read_only,
            create_target,
        } => {
            let target = if *create_target {
                make_dirs(root, target)?
            } else {
                safe_target(root, target)?
            };
            mount_bind(source, &target)
                .map_err(|e| format!("bind {} on {}: {e}", source.display(), target.display()))?;
            if *read_only {
                let flags =
                    MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
                mount_remount(&target, flags, "")
                    .map_err(|e| format!("read-only {}: {e}", target.display()))?;
            }
            Ok(())
        }
        MountStep::DevNode { source, target } => {
            let target = safe_target(root, target)?;
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o666)
                .open(&target)
                .map_err(|e| format!("create {}: {e}", target.display()))?;
            mount_bind(source, &target)
                .map_err(|e| format!("bind {} on {}: {e}", source.display(), target.display()))
        }
        MountStep::Proc { target } => {
            let target = safe_target(root, target)?;
            let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
            mount_data("proc", &target, "proc", flags, "").map_err(|e| format!("mount proc: {e}"))
        }
        MountStep::Devpts { target } => {
            let target = make_dir(root, target)?;
            let flags = MountFlags::NOSUID | MountFlags::NOEXEC;
            let data = format!(
                "newinstance,ptmxmode=0666,mode=0620,uid={},gid={}",
                config.host_uid_base, config.host_gid_base
            );
            mount_data("devpts", &target, "devpts", flags, &data)
                .map_err(|e| format!("mount devpts: {e}"))
        }
        MountStep::Tmpfs {
            target,
            data,
            noexec,
            nodev,
        } => {
            let target = make_dir(root, target)?;
            let mut flags = MountFlags::NOSUID;
            if *noexec {
                flags |= MountFlags::NOEXEC;
            }
            if *nodev {
                flags |= MountFlags::NODEV;
            }
            // Owned by sandbox root, not by the unmapped host root that mounts it.
            let data = format!(
                "{data},uid={},gid={}",
                config.host_uid_base, config.host_gid_base
            );
            mount_data("tmpfs", &target, "tmpfs", flags, &data)
                .map_err(|e| format!("mount tmpfs on {}: {e}", target.display()))
        }
        MountStep::Symlink { link, points_to } => {
            let link = safe_target(root, link)?;
            std::os::unix::fs::symlink(points_to, &link)
                .map_err(|e| format!("symlink {}: {e}", link.display()))
        }
    }
}

/// Writes the sandbox's resolver configuration into its root, owned by sandbox root. A
/// sandbox that replaced the file with a link (or any of `/etc` with one), or with anything
/// but a regular file, keeps what it made: nothing is ever written through a link, and a
/// FIFO planted there cannot block the open.
fn write_resolv_conf(config: &InitConfig) -> Result<(), String> {
    let Some(text) = &config.resolv_conf else {
        return Ok(());
    };
    let Ok(path) = safe_target(&config.rootfs, Path::new("etc/resolv.conf")) else {
        return Ok(());
    };
    let opened = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(
            (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK)
                .bits()
                .cast_signed(),
        )
        .open(&path);
    // A link (ELOOP), a directory, a FIFO without a reader (ENXIO) or anything else the
    // sandbox left there that cannot be opened is its own business, never a failed boot.
    let Ok(mut file) = opened else {
        return Ok(());
    };
    if !file.metadata().is_ok_and(|metadata| metadata.is_file()) {
        return Ok(());
    }
    file.write_all(text.as_bytes())
        .map_err(|e| format!("write {}: {e}", path.display()))?;
    std::os::unix::fs::fchown(
        &file,
        Some(config.host_uid_base),
        Some(config.host_gid_base),
    )
    .map_err(|e| format!("chown {}: {e}", path.display()))
}

/// Resolves `relative` under `root`, refusing `..` and any symlink on the way: the upper layer
/// may hold links a previous run of the sandbox planted, and a mount must never follow one
/// out of the root.
fn safe_target(root: &Path, relative: &Path) -> Result<PathBuf, String> {
    let mut path = root.to_path_buf();
    for component in relative.components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "mount target {} leaves the root",
                    relative.display()
                ));
            }
        }
        if let Ok(metadata) = fs::symlink_metadata(&path)
            && metadata.file_type().is_symlink()
        {
            return Err(format!("mount target {} is a symlink", path.display()));
        }
    }
    Ok(path)
}

fn make_dir(root: &Path, relative: &Path) -> Result<PathBuf, String> {
    let target = safe_target(root, relative)?;
    match fs::DirBuilder::new().mode(0o755).create(&target) {
        Ok(()) => Ok(target),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && target.is_dir() => {
            Ok(target)
        }
        Err(error) => Err(format!("create {}: {error}", target.display())),
    }
}

/// `make_dir` for every component of `relative` in turn, so that no component is a symlink.
fn make_dirs(root: &Path, relative: &Path) -> Result<PathBuf, String> {
    let mut partial = PathBuf::new();
    let mut target = safe_target(root, &partial)?;
    for component in relative.components() {
        partial.push(component);
        target = make_dir(root, &partial)?;
    }
    Ok(target)
}

/// mount(2) with string data; empty data passes NULL.
fn mount_data(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MountFlags,
    data: &str,
) -> std::io::Result<()> {
    let data =
        CString::new(data).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let data = if data.is_empty() {
        None
    } else {
        Some(data.as_c_str())
    };
    Ok(mount(source, target, fstype, flags, data)?)
}

fn enter_root(rootfs: &Path) -> Result<(), String> {
    chdir(rootfs).map_err(|e| format!("chdir root: {e}"))?;
    make_dir(rootfs, Path::new(OLD_ROOT))?;
    pivot_root(".", OLD_ROOT).map_err(|e| format!("pivot_root: {e}"))?;
    unmount(format!("/{OLD_ROOT}").as_str(), UnmountFlags::DETACH)
        .map_err(|e| format!("detach old root: {e}"))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))
}

/// Unshares a user namespace, has the outer process map its ids, and becomes its root.
/// Every other namespace stays owned by the host's user namespace, so sandbox root holds
/// no capability over the mounts, network, hostname or cgroups.
fn enter_user_namespace(channel: &UnixStream) -> Result<(), String> {
    expect_line(channel, MSG_CGROUPS_JOINED)?;
    unshare(UnshareFlags::NEWCGROUP).map_err(|e| format!("unshare cgroup namespace: {e}"))?;
    unshare(UnshareFlags::NEWUSER).map_err(|e| format!("unshare user namespace: {e}"))?;
    let mut writer = channel;
    writer
        .write_all(format!("{MSG_NEED_ID_MAP}\n").as_bytes())
        .map_err(|e| format!("socketpair: {e}"))?;
    expect_line(channel, MSG_ID_MAP_DONE)?;
    set_thread_groups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    set_thread_res_gid(Gid::ROOT, Gid::ROOT, Gid::ROOT).map_err(|e| format!("setresgid: {e}"))?;
    set_thread_res_uid(Uid::ROOT, Uid::ROOT, Uid::ROOT).map_err(|e| format!("setresuid: {e}"))
}

/// Reads one line from the outer process and checks it is `expected`. Reads byte by byte so
/// that nothing after the line is consumed.
fn expect_line(channel: &UnixStream, expected: &str) -> Result<(), String> {
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
