//! The restore helper, `coppice-init --restore <init.json> <images dir> <criu>`: joins the
//! sandbox's cgroups, mounts the sandbox's root again in a private mount namespace, and runs
//! `criu restore` onto it; prints one `ReadyMessage` line with the restored PID 1's host pid.
//!
//! The restored tree gets its own mount namespace from CRIU, so the root mounted here
//! vanishes with this process: nothing is left mounted on the host.
//!
//! CRIU opens the external mounts' sources and the root from inside the sandbox's user
//! namespace, where the daemon's private directories cannot be walked; in this process's
//! mount namespace they are bound again under a tmpfs of its own, on a directory in `/tmp`
//! removed afterwards.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::{Command, Stdio};

use rustix::mount::{
    MountFlags, MountPropagationFlags, UnmountFlags, mount, mount_bind, mount_change, unmount,
};
use rustix::thread::UnshareFlags;

use super::mounts::apply;
use super::syscalls::unshare;
use crate::checkpoint::{
    ExternalMount, RESTORE_LOG, external_mounts, log_errors, restore_args, restore_device,
};
use crate::protocol::{CONTROL_SOCKET, ENVD_SOCKET, InitConfig, ReadyMessage};

/// The flag that starts the init binary as the restore helper.
pub(super) const RESTORE_FLAG: &str = "--restore";
/// Where CRIU writes the restored PID 1's pid, in the images directory.
const PIDFILE: &str = "restored.pid";
/// Where the root and the external mounts' sources are bound for CRIU (a prefix of a
/// directory in `/tmp`, completed with this process's pid).
const STAGING: &str = ".coppice-restore-";

/// Restores the sandbox `config` describes from `images` with the CRIU at `criu`.
pub(super) fn run(config: &InitConfig, images: &Path, criu: &Path) -> ReadyMessage {
    match restore(config, images, criu) {
        Ok(pid) => ReadyMessage::Ready { pid },
        Err(error) => ReadyMessage::Failed { error },
    }
}

fn restore(config: &InitConfig, images: &Path, criu: &Path) -> Result<i32, String> {
    rustix::process::setsid().map_err(|e| format!("setsid: {e}"))?;
    // The restored processes are forked by CRIU, which forks from here: they start in the
    // sandbox's cgroups.
    let pid = std::process::id().to_string();
    for procs in &config.cgroup_procs {
        fs::write(procs, &pid)
            .map_err(|e| format!("cannot join cgroup {}: {e}", procs.display()))?;
    }
    unshare(UnshareFlags::NEWNS).map_err(|e| format!("unshare mount namespace: {e}"))?;
    mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| format!("make / private: {e}"))?;
    // Unpredictable, so that nobody can take the name first.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    let staging = Path::new("/tmp").join(format!("{STAGING}{}-{nonce:09}", std::process::id()));
    let staged = stage(config, &staging);
    let restored = staged
        .and_then(|(staged, externals)| criu_restore(config, &staged, &externals, images, criu));
    // Only this namespace sees the tmpfs; once it is gone the directory is empty.
    let _ = unmount(&staging, UnmountFlags::DETACH);
    let _ = fs::remove_dir_all(&staging);
    restored
}

/// Mounts a tmpfs on `staging`, binds every external mount's source and the root there, and
/// returns the config and externals that point at them.
fn stage(config: &InitConfig, staging: &Path) -> Result<(InitConfig, Vec<ExternalMount>), String> {
    // Searchable by all, writable by root only: sandbox root must walk it.
    fs::DirBuilder::new()
        .mode(0o755)
        .create(staging)
        .map_err(|e| format!("create {}: {e}", staging.display()))?;
    mount(
        "tmpfs",
        staging,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(c"mode=0755"),
    )
    .map_err(|e| format!("mount staging tmpfs: {e}"))?;
    let mut externals = external_mounts(config);
    for external in &mut externals {
        let target = staging.join(&external.key);
        if external.source.is_dir() {
            fs::create_dir(&target)
        } else {
            fs::File::create(&target).map(drop)
        }
        .map_err(|e| format!("create {}: {e}", target.display()))?;
        mount_bind(&external.source, &target)
            .map_err(|e| format!("bind {}: {e}", external.source.display()))?;
        external.source = target;
    }
    let mut staged = config.clone();
    staged.rootfs = staging.join("root");
    fs::create_dir(&staged.rootfs).map_err(|e| format!("create staging root: {e}"))?;
    let root = staged
        .mounts
        .first()
        .ok_or_else(|| "the sandbox has no root mount".to_owned())?;
    apply(&staged, root)?;
    Ok((staged, externals))
}

fn criu_restore(
    config: &InitConfig,
    staged: &InitConfig,
    externals: &[ExternalMount],
    images: &Path,
    criu: &Path,
) -> Result<i32, String> {
    // CRIU binds the listening sockets again at their names; the files the dumped ones left
    // would be in the way.
    for name in [CONTROL_SOCKET, ENVD_SOCKET] {
        let _ = fs::remove_file(config.port_dir.join(name));
    }
    let pidfile = images.join(PIDFILE);
    let _ = fs::remove_file(&pidfile);
    let args = restore_args(
        images,
        &staged.rootfs,
        &pidfile,
        externals,
        restore_device(config),
    );
    let status = Command::new(criu)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", criu.display()))?;
    if !status.success() {
        return Err(format!(
            "criu restore failed ({status}): {}",
            log_errors(&images.join(RESTORE_LOG))
        ));
    }
    let pid =
        fs::read_to_string(&pidfile).map_err(|e| format!("read {}: {e}", pidfile.display()))?;
    pid.trim()
        .parse()
        .map_err(|_| format!("bad pid {pid:?} in {}", pidfile.display()))
}
