//! The mount steps of a sandbox's root, run by the builder as host root (and `/proc` by PID 1
//! inside the sandbox's namespaces), never following a link the sandbox may have planted.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use rustix::mount::{MountFlags, mount, mount_bind, mount_remount};

use crate::mount_plan::overlay_data;
use crate::protocol::{InitConfig, MountStep};

/// Runs one step of the plan. The builder runs every step but `/proc`, which PID 1 mounts from
/// inside the sandbox's PID namespace.
pub(super) fn apply(config: &InitConfig, step: &MountStep) -> Result<(), String> {
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
pub(super) fn write_resolv_conf(config: &InitConfig) -> Result<(), String> {
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
pub(super) fn safe_target(root: &Path, relative: &Path) -> Result<PathBuf, String> {
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

pub(super) fn make_dir(root: &Path, relative: &Path) -> Result<PathBuf, String> {
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
pub(super) fn make_dirs(root: &Path, relative: &Path) -> Result<PathBuf, String> {
    let mut partial = PathBuf::new();
    let mut target = safe_target(root, &partial)?;
    for component in relative.components() {
        partial.push(component);
        target = make_dir(root, &partial)?;
    }
    Ok(target)
}

/// mount(2) with string data; empty data passes NULL.
pub(super) fn mount_data(
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
