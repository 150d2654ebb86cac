//! Persistent volumes: one directory each under `<root>/volumes`, outside every layer and
//! sandbox directory, so that nothing a sandbox's life cycle removes can reach them.

use std::path::PathBuf;

use coppice_core::VolumeId;
use coppice_core::storage::StorageError;

use super::OverlayStorage;
use crate::error::OverlayError;
use crate::fsutil;

/// The directory under the storage root that holds every volume.
pub(crate) const VOLUMES_DIR: &str = "volumes";

impl OverlayStorage {
    fn volume_dir(&self, id: &VolumeId) -> PathBuf {
        self.config.root.join(VOLUMES_DIR).join(id.as_str())
    }

    /// Makes volume `id`'s empty directory, mode 0755, owned by the sandbox user.
    pub(crate) fn create_volume_dir(&self, id: &VolumeId) -> Result<PathBuf, StorageError> {
        let dir = self.volume_dir(id);
        let op = "create volume";
        fsutil::create_dir_all(&self.config.root.join(VOLUMES_DIR))
            .map_err(|err| err.into_storage(op))?;
        match self
            .sys
            .make_volume_dir(&self.config.root.join(VOLUMES_DIR), id.as_str())
        {
            Ok(subvolume) => {
                tracing::debug!(volume_id = %id, subvolume, "volume directory made");
            }
            Err(source) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StorageError::VolumeExists { id: id.clone() });
            }
            Err(source) => {
                return Err(OverlayError::CreateDir { path: dir, source }.into_storage(op));
            }
        }
        let finish = fsutil::set_mode(&dir, 0o755)
            .and_then(|()| self.ids.user.apply(self.sys.as_ref(), &dir));
        if let Err(err) = finish {
            let _ = fsutil::remove_tree(&dir);
            return Err(err.into_storage(op));
        }
        Ok(dir)
    }

    /// Volume `id`'s directory, if it exists.
    pub(crate) fn existing_volume_dir(&self, id: &VolumeId) -> Result<PathBuf, StorageError> {
        let dir = self.volume_dir(id);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(StorageError::VolumeNotFound { id: id.clone() })
        }
    }

    /// Removes volume `id`'s directory and everything in it; an absent one is fine.
    pub(crate) fn remove_volume_dir(&self, id: &VolumeId) -> Result<(), StorageError> {
        fsutil::remove_tree(&self.volume_dir(id))
            .map(|_| ())
            .map_err(|err| err.into_storage("delete volume"))
    }
}
