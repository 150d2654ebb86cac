//! Directory snapshots: tars under `<root>/dir-snapshots`, written through `coppice-volume`
//! from a sandbox's root without following anything in it.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use coppice_core::DirSnapshotId;
use coppice_core::storage::StorageError;
use coppice_core::volume::{ArchiveInfo, IdMap};
use coppice_volume::{VolumeFs, VolumeFsError, VolumeFsErrorKind, VolumePath};

use super::OverlayStorage;
use crate::error::OverlayError;
use crate::fsutil;

/// The directory under the storage root that holds the tars.
const DIR_SNAPSHOTS_DIR: &str = "dir-snapshots";
/// Suffix of a tar still being written.
const PARTIAL_SUFFIX: &str = ".partial";

impl OverlayStorage {
    fn dir_snapshot_tar(&self, id: &DirSnapshotId) -> PathBuf {
        self.config
            .root
            .join(DIR_SNAPSHOTS_DIR)
            .join(format!("{id}.tar"))
    }

    /// Writes directory `path` below `root` as snapshot `id`: to a partial file first, renamed
    /// once complete and on disk.
    pub(crate) fn write_dir_snapshot(
        &self,
        id: &DirSnapshotId,
        root: &Path,
        path: &str,
        ids: IdMap,
    ) -> Result<ArchiveInfo, StorageError> {
        let op = "directory snapshot";
        let dir = self.config.root.join(DIR_SNAPSHOTS_DIR);
        fsutil::create_dir_all(&dir).map_err(|e| e.into_storage(op))?;
        let tar = self.dir_snapshot_tar(id);
        let partial = tar.with_extension(format!("tar{PARTIAL_SUFFIX}"));
        let written = (|| {
            let source = VolumeFs::open(root, ids).map_err(|e| fs_error(op, e))?;
            let path = VolumePath::parse(path).map_err(|e| fs_error(op, e))?;
            let write_error = |source| {
                OverlayError::WriteFile {
                    path: partial.clone(),
                    source,
                }
                .into_storage(op)
            };
            let file = File::create_new(&partial).map_err(write_error)?;
            let mut out = BufWriter::new(file);
            let summary = source
                .archive(&path, &mut out)
                .map_err(|e| fs_error(op, e))?;
            let file = out.into_inner().map_err(|e| write_error(e.into_error()))?;
            file.sync_all().map_err(write_error)?;
            std::fs::rename(&partial, &tar).map_err(|source| {
                OverlayError::Rename {
                    from: partial.clone(),
                    to: tar.clone(),
                    source,
                }
                .into_storage(op)
            })?;
            Ok(summary)
        })();
        match written {
            Ok(summary) => Ok(ArchiveInfo {
                sha256: summary.sha256,
                size_bytes: summary.size_bytes,
                entries: summary.entries,
            }),
            Err(error) => {
                let _ = std::fs::remove_file(&partial);
                Err(error)
            }
        }
    }

    /// Restores snapshot `id` below directory `path` of `root`.
    pub(crate) fn read_dir_snapshot(
        &self,
        id: &DirSnapshotId,
        root: &Path,
        path: &str,
        ids: IdMap,
    ) -> Result<u64, StorageError> {
        let op = "restore directory snapshot";
        let tar_path = self.dir_snapshot_tar(id);
        let mut tar = File::open(&tar_path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => StorageError::DirSnapshotNotFound { id: id.clone() },
            _ => OverlayError::ReadFile {
                path: tar_path.clone(),
                source,
            }
            .into_storage(op),
        })?;
        let target = VolumeFs::open(root, ids).map_err(|e| fs_error(op, e))?;
        let path = VolumePath::parse(path).map_err(|e| fs_error(op, e))?;
        target.extract(&mut tar, &path).map_err(|e| fs_error(op, e))
    }

    /// The tar of snapshot `id`, if it exists.
    pub(crate) fn existing_dir_snapshot(
        &self,
        id: &DirSnapshotId,
    ) -> Result<PathBuf, StorageError> {
        let tar = self.dir_snapshot_tar(id);
        if tar.is_file() {
            Ok(tar)
        } else {
            Err(StorageError::DirSnapshotNotFound { id: id.clone() })
        }
    }

    /// Removes snapshot `id`'s tar; an absent one is fine.
    pub(crate) fn remove_dir_snapshot(&self, id: &DirSnapshotId) -> Result<(), StorageError> {
        fsutil::remove_tree(&self.dir_snapshot_tar(id))
            .map(drop)
            .map_err(|err| err.into_storage("delete directory snapshot"))
    }
}

fn fs_error(op: &'static str, error: VolumeFsError) -> StorageError {
    match error.kind() {
        VolumeFsErrorKind::Invalid | VolumeFsErrorKind::NotFound | VolumeFsErrorKind::Conflict => {
            StorageError::Invalid {
                reason: error.to_string(),
            }
        }
        VolumeFsErrorKind::OutOfSpace => StorageError::Exhausted {
            op,
            source: Box::new(error),
        },
        VolumeFsErrorKind::Internal => StorageError::Backend {
            op,
            source: Box::new(error),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_dir_snapshot_is_written_whole_restored_and_deleted() {
        let harness = super::super::tests::harness();
        let (dir, storage) = (harness.dir.path(), &harness.storage);
        let source = dir.join("source-root");
        std::fs::create_dir_all(source.join("home/user/work/sub")).unwrap();
        std::fs::write(source.join("home/user/work/sub/a.txt"), "kept").unwrap();
        let ids = IdMap {
            uid_base: rustix::process::geteuid().as_raw(),
            gid_base: rustix::process::getegid().as_raw(),
            count: 1,
        };
        let id = DirSnapshotId::generate().unwrap();
        let info = storage
            .write_dir_snapshot(&id, &source, "/home/user/work", ids)
            .unwrap();
        assert_eq!((info.entries, info.sha256.len()), (2, 64));
        let tar = storage.existing_dir_snapshot(&id).unwrap();
        assert_eq!(std::fs::metadata(&tar).unwrap().len(), info.size_bytes);

        let target = dir.join("target-root");
        std::fs::create_dir(&target).unwrap();
        assert_eq!(
            storage
                .read_dir_snapshot(&id, &target, "/restored", ids)
                .unwrap(),
            2
        );
        assert_eq!(
            std::fs::read_to_string(target.join("restored/sub/a.txt")).unwrap(),
            "kept"
        );

        let missing = storage
            .write_dir_snapshot(&DirSnapshotId::generate().unwrap(), &source, "/nope", ids)
            .unwrap_err();
        assert!(matches!(missing, StorageError::Invalid { .. }), "{missing}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.join("storage").join(DIR_SNAPSHOTS_DIR))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "a failed capture leaves nothing: {leftovers:?}"
        );

        storage.remove_dir_snapshot(&id).unwrap();
        storage.remove_dir_snapshot(&id).unwrap();
        assert!(matches!(
            storage.existing_dir_snapshot(&id),
            Err(StorageError::DirSnapshotNotFound { .. })
        ));
    }
}
