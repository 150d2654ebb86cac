//! Persistent volumes (named directories that outlive sandboxes, mounted into them at create
//! and reached from outside through a per-volume token) and directory snapshots (one
//! directory of a sandbox kept as a tar, restorable into any sandbox).

use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use crate::id::{DirSnapshotId, SandboxId, VolumeId, VolumeName};
use crate::sandbox::AccessToken;

/// Most volumes one sandbox mounts.
pub const MAX_MOUNTS: usize = 16;

/// A persistent volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Its id.
    pub id: VolumeId,
    /// Its unique name, by which sandboxes mount it.
    pub name: VolumeName,
    /// The bearer token of its content API.
    pub token: AccessToken,
    /// When it was created.
    pub created_at: SystemTime,
}

/// One directory of a sandbox, kept as a tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSnapshot {
    /// Its id.
    pub id: DirSnapshotId,
    /// The sandbox it was taken of.
    pub sandbox: SandboxId,
    /// The directory, as an absolute path inside that sandbox.
    pub path: String,
    /// SHA-256 of the tar, lowercase hex.
    pub sha256: String,
    /// Size of the tar in bytes.
    pub size_bytes: u64,
    /// Files, directories and links in it.
    pub entries: u64,
    /// When it was taken.
    pub created_at: SystemTime,
}

/// What storage reports about a directory snapshot it has written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// SHA-256 of the tar, lowercase hex.
    pub sha256: String,
    /// Size of the tar in bytes.
    pub size_bytes: u64,
    /// Files, directories and links in it.
    pub entries: u64,
}

/// A volume mounted into a sandbox, as asked for at create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    /// The volume, by name.
    pub name: VolumeName,
    /// The absolute path inside the sandbox.
    pub path: PathBuf,
}

/// How sandbox user and group ids map to host ids: sandbox id `n` is host id `base + n`
/// for `n < count`. Files in a volume are owned by host ids; its content API speaks sandbox
/// ids, so that `uid 1000` means the sandbox's `user` both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// Host uid of sandbox uid 0.
    pub uid_base: u32,
    /// Host gid of sandbox gid 0.
    pub gid_base: u32,
    /// How many ids are mapped.
    pub count: u32,
}

impl IdMap {
    /// No translation (a sandbox that shares the host's ids).
    pub const IDENTITY: Self = Self {
        uid_base: 0,
        gid_base: 0,
        count: u32::MAX,
    };

    /// The host uid of sandbox uid `uid`, if it is mapped.
    pub fn host_uid(&self, uid: u32) -> Option<u32> {
        (uid < self.count)
            .then(|| self.uid_base.checked_add(uid))
            .flatten()
    }

    /// The host gid of sandbox gid `gid`, if it is mapped.
    pub fn host_gid(&self, gid: u32) -> Option<u32> {
        (gid < self.count)
            .then(|| self.gid_base.checked_add(gid))
            .flatten()
    }

    /// The sandbox uid of host uid `uid`, if it is mapped.
    pub fn sandbox_uid(&self, uid: u32) -> Option<u32> {
        uid.checked_sub(self.uid_base).filter(|id| *id < self.count)
    }

    /// The sandbox gid of host gid `gid`, if it is mapped.
    pub fn sandbox_gid(&self, gid: u32) -> Option<u32> {
        gid.checked_sub(self.gid_base).filter(|id| *id < self.count)
    }
}

/// Why a path is refused as a volume's mount point or a directory snapshot's directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountPathError {
    /// Not absolute, or holding `.`, `..` or an empty component.
    #[error("path {path:?} must be absolute and normalised (no '.' or '..')")]
    NotNormal {
        /// The path.
        path: String,
    },
    /// `/` itself or a directory the sandbox's own file systems occupy.
    #[error("path {path:?} is reserved (/, /proc, /dev, /sys, /run)")]
    Reserved {
        /// The path.
        path: String,
    },
}

/// Checks that `path` is an absolute, normalised path outside the directories the sandbox's
/// own file systems occupy.
///
/// # Errors
/// [`MountPathError`].
pub fn check_mount_path(path: &Path) -> Result<(), MountPathError> {
    let text = path.to_string_lossy().into_owned();
    // Checked on the text: `Path::components` would quietly drop `.` and doubled slashes.
    let normal = text == "/"
        || (text.starts_with('/')
            && text[1..]
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != ".."));
    if !normal {
        return Err(MountPathError::NotNormal { path: text });
    }
    let top = path.components().nth(1);
    let reserved = match top {
        None => true,
        Some(Component::Normal(first)) => ["proc", "dev", "sys", "run"]
            .iter()
            .any(|name| first == *name),
        Some(_) => true,
    };
    if reserved {
        return Err(MountPathError::Reserved { path: text });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_mount_paths_must_be_normal_and_outside_system_dirs() {
        for good in ["/mnt/data", "/home/user/work", "/tmp/cache", "/data"] {
            assert_eq!(check_mount_path(Path::new(good)), Ok(()), "{good}");
        }
        for bad in [
            "relative",
            "/mnt/../etc",
            "/mnt/./x",
            "/mnt//x",
            "/mnt/x/",
            "",
        ] {
            assert!(
                matches!(
                    check_mount_path(Path::new(bad)),
                    Err(MountPathError::NotNormal { .. })
                ),
                "{bad}"
            );
        }
        for reserved in ["/", "/proc", "/proc/x", "/dev/shm", "/sys", "/run/x"] {
            assert!(
                matches!(
                    check_mount_path(Path::new(reserved)),
                    Err(MountPathError::Reserved { .. })
                ),
                "{reserved}"
            );
        }
    }

    #[test]
    fn test_id_map_translates_both_ways_within_its_range() {
        let map = IdMap {
            uid_base: 200_000,
            gid_base: 300_000,
            count: 65_536,
        };
        assert_eq!(map.host_uid(1000), Some(201_000));
        assert_eq!(map.host_gid(1000), Some(301_000));
        assert_eq!(map.sandbox_uid(201_000), Some(1000));
        assert_eq!(map.sandbox_gid(301_000), Some(1000));
        assert_eq!(map.host_uid(65_536), None);
        assert_eq!(map.sandbox_uid(0), None);
        assert_eq!(IdMap::IDENTITY.host_uid(5), Some(5));
    }
}
