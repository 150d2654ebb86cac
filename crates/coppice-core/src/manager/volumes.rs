//! Persistent volumes: create, list, look up and delete them, resolve a sandbox's volume
//! mounts to host directories, and grant the content API access by token.

use std::path::PathBuf;
use std::sync::{Arc, MutexGuard, PoisonError};

use subtle::ConstantTimeEq;

use super::{Inner, ManagerError, SandboxManager, blocking};
use crate::id::{VolumeId, VolumeName};
use crate::sandbox::AccessToken;
use crate::spec::SandboxSpec;
use crate::storage::BindMount;
use crate::volume::{IdMap, Volume};

/// What the content API needs to serve one volume.
#[derive(Debug, Clone)]
pub struct VolumeAccess {
    /// The volume.
    pub volume: Volume,
    /// Its host directory.
    pub root: PathBuf,
    /// How sandbox ids map to host ids for files in it.
    pub ids: IdMap,
}

impl SandboxManager {
    /// Creates an empty volume named `name`, owned by the sandboxes' default user.
    ///
    /// # Errors
    /// `VolumeNameTaken`; storage failures (`Unsupported` where the backend has no volumes).
    pub async fn create_volume(&self, name: VolumeName) -> Result<Volume, ManagerError> {
        let inner = Arc::clone(&self.inner);
        blocking("create volume", move || inner.create_volume_blocking(name)).await?
    }

    /// Every volume, by name.
    ///
    /// # Errors
    /// Store failures.
    pub async fn volumes(&self) -> Result<Vec<Volume>, ManagerError> {
        let inner = Arc::clone(&self.inner);
        Ok(blocking("list volumes", move || inner.store.volumes()).await??)
    }

    /// The volume with id `id`.
    ///
    /// # Errors
    /// `VolumeNotFound`.
    pub async fn volume(&self, id: &VolumeId) -> Result<Volume, ManagerError> {
        let inner = Arc::clone(&self.inner);
        let wanted = id.clone();
        blocking("get volume", move || inner.store.volume(&wanted))
            .await??
            .ok_or_else(|| ManagerError::VolumeNotFound {
                volume: id.to_string(),
            })
    }

    /// Deletes a volume and its files. A volume mounted by a sandbox that is not yet killed
    /// (running or paused) is refused.
    ///
    /// # Errors
    /// `VolumeNotFound`; `VolumeInUse`; storage failures.
    pub async fn delete_volume(&self, id: &VolumeId) -> Result<(), ManagerError> {
        let inner = Arc::clone(&self.inner);
        let id = id.clone();
        blocking("delete volume", move || inner.delete_volume_blocking(&id)).await?
    }

    /// Access to volume `id`'s files for a caller presenting `token`.
    ///
    /// # Errors
    /// `VolumeNotFound`; `VolumeToken` for a wrong token.
    pub async fn volume_access(
        &self,
        id: &VolumeId,
        token: &str,
    ) -> Result<VolumeAccess, ManagerError> {
        let volume = self.volume(id).await?;
        if !bool::from(volume.token.expose().as_bytes().ct_eq(token.as_bytes())) {
            return Err(ManagerError::VolumeToken { id: id.clone() });
        }
        let inner = Arc::clone(&self.inner);
        let volume_id = id.clone();
        let root = blocking("find volume", move || {
            inner.backends.storage.volume_path(&volume_id)
        })
        .await?
        .map_err(|source| ManagerError::from_storage("find volume", source))?;
        Ok(VolumeAccess {
            volume,
            root,
            ids: self.inner.backends.runtime.id_map(),
        })
    }
}

impl Inner {
    pub(super) fn lock_volume_mounts(&self) -> MutexGuard<'_, ()> {
        self.volume_mounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn create_volume_blocking(&self, name: VolumeName) -> Result<Volume, ManagerError> {
        let entropy = |source| ManagerError::Entropy { source };
        let volume = Volume {
            id: VolumeId::generate().map_err(entropy)?,
            name,
            token: AccessToken::generate().map_err(entropy)?,
            created_at: self.clock.now(),
        };
        if self.store.volume_by_name(&volume.name)?.is_some() {
            return Err(ManagerError::VolumeNameTaken {
                name: volume.name.to_string(),
            });
        }
        // The directory first: a record never names a volume that has no directory.
        self.backends
            .storage
            .create_volume(&volume.id)
            .map_err(|source| ManagerError::from_storage("create volume", source))?;
        let inserted = self.store.insert_volume(&volume);
        if !matches!(inserted, Ok(true)) {
            if let Err(error) = self.backends.storage.delete_volume(&volume.id) {
                tracing::warn!(volume_id = %volume.id, error = %super::error_chain(&error), "cannot remove the directory of a volume that was not recorded");
            }
            inserted?;
            return Err(ManagerError::VolumeNameTaken {
                name: volume.name.to_string(),
            });
        }
        tracing::info!(volume_id = %volume.id, name = %volume.name, "volume created");
        Ok(volume)
    }

    fn delete_volume_blocking(&self, id: &VolumeId) -> Result<(), ManagerError> {
        {
            let _mounts = self.lock_volume_mounts();
            let volume = self
                .store
                .volume(id)?
                .ok_or_else(|| ManagerError::VolumeNotFound {
                    volume: id.to_string(),
                })?;
            let user = self.sandboxes().values().find_map(|sandbox| {
                let mounts_it = sandbox.state.holds_resources()
                    && sandbox
                        .spec
                        .volume_mounts
                        .iter()
                        .any(|mount| mount.name == volume.name);
                mounts_it.then(|| sandbox.id.clone())
            });
            if let Some(sandbox) = user {
                return Err(ManagerError::VolumeInUse {
                    id: id.clone(),
                    sandbox,
                });
            }
            self.store.delete_volume(id)?;
        }
        // Outside the lock: removing a large volume takes a while, and nothing can mount it
        // any more.
        self.backends
            .storage
            .delete_volume(id)
            .map_err(|source| ManagerError::from_storage("delete volume", source))?;
        tracing::info!(volume_id = %id, "volume deleted");
        Ok(())
    }

    /// The host directories of `spec`'s volume mounts, in order.
    pub(super) fn volume_binds(&self, spec: &SandboxSpec) -> Result<Vec<BindMount>, ManagerError> {
        spec.volume_mounts
            .iter()
            .map(|mount| {
                let volume = self.store.volume_by_name(&mount.name)?.ok_or_else(|| {
                    ManagerError::VolumeNotFound {
                        volume: mount.name.to_string(),
                    }
                })?;
                let source = self
                    .backends
                    .storage
                    .volume_path(&volume.id)
                    .map_err(|source| ManagerError::from_storage("find volume", source))?;
                Ok(BindMount {
                    source,
                    target: mount.path.clone(),
                    read_only: false,
                })
            })
            .collect()
    }
}
