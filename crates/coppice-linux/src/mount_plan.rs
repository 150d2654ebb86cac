//! The ordered mount steps that build a sandbox's root filesystem (pure; executed by the
//! init inside the sandbox's fresh mount namespace).
//!
//! `/dev` is a bind of a host directory rather than a tmpfs: a checkpoint then needs none of
//! its contents (device nodes cannot be recreated inside a user namespace), only the mount.

use std::path::{Path, PathBuf};

use coppice_core::storage::{BindMount, RootFs};

use crate::protocol::MountStep;

/// Device nodes bound from the host's `/dev`.
pub const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Why a root filesystem cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// An overlay without layers.
    #[error("overlay root has no lower layer")]
    NoLowerLayer,
    /// A disk is a virtual machine's root, not something to mount.
    #[error("a disk {device} cannot be a namespace sandbox's root")]
    Disk {
        /// The disk.
        device: PathBuf,
    },
    /// A bind target that is not absolute or escapes the root with `..`.
    #[error("bind target {target} must be absolute and must not contain '..'")]
    BadTarget {
        /// The target.
        target: PathBuf,
    },
    /// The overlay option string is over the one-page mount(2) limit.
    #[error("overlay options are {len} bytes, over the {max}-byte mount(2) limit")]
    OptionsTooLong {
        /// Their length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// The mount(2) data limit (one page).
const MOUNT_DATA_MAX: usize = 4095;

/// Plans the mounts for `root` with `volumes` on top of everything. `host_dev` is the host's
/// `/dev`; `dev_dir` the empty host directory that becomes the sandbox's `/dev`; `tmp_size_mb`
/// bounds `/tmp`.
///
/// # Errors
/// [`PlanError`] for a root that cannot be mounted as given.
pub fn plan(
    root: &RootFs,
    volumes: &[BindMount],
    host_dev: &Path,
    dev_dir: &Path,
    tmp_size_mb: u32,
) -> Result<Vec<MountStep>, PlanError> {
    let mut steps = Vec::new();
    let binds = match root {
        RootFs::Overlay {
            lower,
            upper,
            work,
            binds,
        } => {
            if lower.is_empty() {
                return Err(PlanError::NoLowerLayer);
            }
            let len = overlay_data_len(lower, upper, work);
            if len > MOUNT_DATA_MAX {
                return Err(PlanError::OptionsTooLong {
                    len,
                    max: MOUNT_DATA_MAX,
                });
            }
            steps.push(MountStep::Overlay {
                lower: lower.clone(),
                upper: upper.clone(),
                work: work.clone(),
            });
            binds
        }
        RootFs::Disk { device } => {
            return Err(PlanError::Disk {
                device: device.clone(),
            });
        }
        RootFs::Directory { path, binds } => {
            steps.push(MountStep::Bind {
                source: path.clone(),
                target: PathBuf::new(),
                read_only: false,
                create_target: false,
            });
            binds
        }
    };
    for bind in binds {
        let target = relative_target(&bind.target)?;
        steps.push(MountStep::Bind {
            source: bind.source.clone(),
            target,
            read_only: bind.read_only,
            create_target: false,
        });
    }
    steps.push(MountStep::Proc {
        target: "proc".into(),
    });
    steps.push(MountStep::Bind {
        source: dev_dir.to_owned(),
        target: "dev".into(),
        read_only: false,
        create_target: false,
    });
    for node in DEV_NODES {
        steps.push(MountStep::DevNode {
            source: host_dev.join(node),
            target: Path::new("dev").join(node),
        });
    }
    steps.push(MountStep::Devpts {
        target: "dev/pts".into(),
    });
    steps.push(MountStep::Tmpfs {
        target: "dev/shm".into(),
        data: "mode=1777,size=64m".into(),
        noexec: false,
        nodev: true,
    });
    for (link, points_to) in [
        ("dev/ptmx", "pts/ptmx"),
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
    ] {
        steps.push(MountStep::Symlink {
            link: link.into(),
            points_to: points_to.into(),
        });
    }
    steps.push(MountStep::Tmpfs {
        target: "tmp".into(),
        data: format!("mode=1777,size={tmp_size_mb}m"),
        noexec: false,
        nodev: true,
    });
    steps.push(MountStep::Tmpfs {
        target: "run".into(),
        data: "mode=755,size=16m".into(),
        noexec: false,
        nodev: true,
    });
    // Last, so that no file system of the sandbox's own (e.g. `/tmp`) hides a volume.
    for volume in volumes {
        steps.push(MountStep::Bind {
            source: volume.source.clone(),
            target: relative_target(&volume.target)?,
            read_only: volume.read_only,
            create_target: true,
        });
    }
    Ok(steps)
}

/// The overlay mount data: `lowerdir=a:b,upperdir=u,workdir=w`.
pub fn overlay_data(lower: &[PathBuf], upper: &Path, work: &Path) -> String {
    let lowers: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    )
}

fn overlay_data_len(lower: &[PathBuf], upper: &Path, work: &Path) -> usize {
    overlay_data(lower, upper, work).len()
}

fn relative_target(target: &Path) -> Result<PathBuf, PlanError> {
    let bad = || PlanError::BadTarget {
        target: target.to_owned(),
    };
    if !target.is_absolute() {
        return Err(bad());
    }
    let mut relative = PathBuf::new();
    for component in target.components() {
        match component {
            std::path::Component::RootDir => {}
            std::path::Component::Normal(part) => relative.push(part),
            _ => return Err(bad()),
        }
    }
    Ok(relative)
}

#[cfg(test)]
mod tests {
    use coppice_core::storage::BindMount;

    use super::*;

    fn overlay(binds: Vec<BindMount>) -> RootFs {
        RootFs::Overlay {
            lower: vec!["/l".into()],
            upper: "/u".into(),
            work: "/w".into(),
            binds,
        }
    }

    #[test]
    fn test_plan_overlay_then_binds_then_pseudo_filesystems() {
        let usr = BindMount {
            source: "/usr".into(),
            target: "/usr".into(),
            read_only: true,
        };
        let steps = plan(
            &overlay(vec![usr]),
            &[],
            Path::new("/dev"),
            Path::new("/run/a/dev"),
            64,
        )
        .unwrap();
        assert!(matches!(&steps[0], MountStep::Overlay { .. }));
        assert_eq!(
            steps[1],
            MountStep::Bind {
                source: "/usr".into(),
                target: "usr".into(),
                read_only: true,
                create_target: false,
            }
        );
        assert_eq!(
            steps[2],
            MountStep::Proc {
                target: "proc".into()
            }
        );
        let dev_nodes = steps
            .iter()
            .filter(|s| matches!(s, MountStep::DevNode { .. }))
            .count();
        assert_eq!(dev_nodes, DEV_NODES.len());
        assert!(steps.contains(&MountStep::Bind {
            source: "/run/a/dev".into(),
            target: "dev".into(),
            read_only: false,
            create_target: false,
        }));
        assert!(steps.contains(&MountStep::Symlink {
            link: "dev/ptmx".into(),
            points_to: "pts/ptmx".into()
        }));
        assert!(steps.iter().any(|s| matches!(s, MountStep::Tmpfs { target, data, .. } if target == Path::new("tmp") && data.contains("size=64m"))));
    }

    #[test]
    fn test_plan_mounts_volumes_last_creating_their_targets() {
        let volume = BindMount {
            source: "/data/volumes/v1".into(),
            target: "/tmp/cache".into(),
            read_only: false,
        };
        let steps = plan(
            &overlay(Vec::new()),
            &[volume],
            Path::new("/dev"),
            Path::new("/run/a/dev"),
            64,
        )
        .unwrap();
        assert_eq!(
            steps.last(),
            Some(&MountStep::Bind {
                source: "/data/volumes/v1".into(),
                target: "tmp/cache".into(),
                read_only: false,
                create_target: true,
            })
        );
        let escaping = BindMount {
            source: "/x".into(),
            target: "/mnt/../../etc".into(),
            read_only: false,
        };
        assert!(
            plan(
                &overlay(Vec::new()),
                &[escaping],
                Path::new("/dev"),
                Path::new("/run/a/dev"),
                64
            )
            .is_err()
        );
    }

    #[test]
    fn test_plan_devpts_comes_before_ptmx_link() {
        let steps = plan(
            &overlay(Vec::new()),
            &[],
            Path::new("/dev"),
            Path::new("/run/a/dev"),
            64,
        )
        .unwrap();
        let devpts = steps
            .iter()
            .position(|s| matches!(s, MountStep::Devpts { .. }))
            .unwrap();
        let ptmx = steps
            .iter()
            .position(
                |s| matches!(s, MountStep::Symlink { link, .. } if link == Path::new("dev/ptmx")),
            )
            .unwrap();
        assert!(devpts < ptmx);
    }

    #[test]
    fn test_plan_rejects_relative_and_dotdot_bind_targets() {
        for target in ["usr", "/usr/../etc"] {
            let bind = BindMount {
                source: "/x".into(),
                target: target.into(),
                read_only: true,
            };
            assert!(matches!(
                plan(
                    &overlay(vec![bind]),
                    &[],
                    Path::new("/dev"),
                    Path::new("/run/a/dev"),
                    64
                ),
                Err(PlanError::BadTarget { .. })
            ));
        }
    }

    #[test]
    fn test_plan_rejects_empty_lower() {
        let root = RootFs::Overlay {
            lower: Vec::new(),
            upper: "/u".into(),
            work: "/w".into(),
            binds: Vec::new(),
        };
        assert_eq!(
            plan(&root, &[], Path::new("/dev"), Path::new("/run/a/dev"), 64),
            Err(PlanError::NoLowerLayer)
        );
    }

    #[test]
    fn test_plan_rejects_overlong_overlay_options() {
        let lower = (0..400)
            .map(|n| PathBuf::from(format!("/very/long/layer/path/{n}")))
            .collect();
        let root = RootFs::Overlay {
            lower,
            upper: "/u".into(),
            work: "/w".into(),
            binds: Vec::new(),
        };
        assert!(matches!(
            plan(&root, &[], Path::new("/dev"), Path::new("/run/a/dev"), 64),
            Err(PlanError::OptionsTooLong { .. })
        ));
    }

    #[test]
    fn test_overlay_data_joins_lowers_topmost_first() {
        let data = overlay_data(
            &["/a".into(), "/b".into()],
            Path::new("/u"),
            Path::new("/w"),
        );
        assert_eq!(data, "lowerdir=/a:/b,upperdir=/u,workdir=/w");
    }
}
