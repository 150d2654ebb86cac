//! Directory snapshots: one directory of a sandbox captured as a tar (a running sandbox is
//! frozen only for the capture), listed, downloaded, restored into any sandbox and deleted.

use std::path::PathBuf;
use std::sync::Arc;

use super::{Inner, ManagerError, SandboxManager, blocking};
use crate::id::{DirSnapshotId, SandboxId};
use crate::runtime::RootDir;
use crate::sandbox::Sandbox;
use crate::state::{PauseMode, SandboxState};
use crate::volume::{DirSnapshot, check_mount_path};

impl SandboxManager {
    /// Captures directory `path` of sandbox `id`.
    ///
    /// # Errors
    /// `SandboxNotFound`; `BadDirectory` for a path outside what can be captured; `NotRunning`
    /// for a filesystem-paused sandbox; storage failures (nothing is kept of a failed capture).
    #[tracing::instrument(skip(self), fields(sandbox_id = %id))]
    pub async fn create_dir_snapshot(
        &self,
        id: &SandboxId,
        path: &str,
    ) -> Result<DirSnapshot, ManagerError> {
        check_directory(path)?;
        let (sandbox_id, path) = (id.clone(), path.to_owned());
        self.locked_blocking("directory snapshot", id, move |inner| {
            inner.create_dir_snapshot_blocking(&sandbox_id, &path)
        })
        .await
    }

    /// Every directory snapshot, oldest first.
    ///
    /// # Errors
    /// Store failures.
    pub async fn dir_snapshots(&self) -> Result<Vec<DirSnapshot>, ManagerError> {
        let inner = Arc::clone(&self.inner);
        Ok(blocking("list directory snapshots", move || {
            inner.store.dir_snapshots()
        })
        .await??)
    }

    /// Directory snapshot `id`.
    ///
    /// # Errors
    /// `DirSnapshotNotFound`.
    pub async fn dir_snapshot(&self, id: &DirSnapshotId) -> Result<DirSnapshot, ManagerError> {
        let inner = Arc::clone(&self.inner);
        let wanted = id.clone();
        blocking("get directory snapshot", move || {
            inner.store.dir_snapshot(&wanted)
        })
        .await??
        .ok_or_else(|| ManagerError::DirSnapshotNotFound { id: id.clone() })
    }

    /// Directory snapshot `id` and the host file holding its tar.
    ///
    /// # Errors
    /// `DirSnapshotNotFound`.
    pub async fn dir_snapshot_file(
        &self,
        id: &DirSnapshotId,
    ) -> Result<(DirSnapshot, PathBuf), ManagerError> {
        let snapshot = self.dir_snapshot(id).await?;
        let storage = Arc::clone(&self.inner.backends.storage);
        let wanted = id.clone();
        let file = blocking("find directory snapshot", move || {
            storage.dir_snapshot_file(&wanted)
        })
        .await?
        .map_err(|source| ManagerError::from_storage("find directory snapshot", source))?;
        Ok((snapshot, file))
    }

    /// Writes directory snapshot `id` into sandbox `sandbox` at `path` (else where it was
    /// taken). The whole tar is checked first: one entry that would land outside `path`
    /// refuses all of it. Returns how many entries were written.
    ///
    /// # Errors
    /// `DirSnapshotNotFound`; `SandboxNotFound`; `BadDirectory`; `NotRunning`; storage
    /// failures (`Invalid` for a refused archive).
    #[tracing::instrument(skip(self), fields(sandbox_id = %sandbox))]
    pub async fn restore_dir_snapshot(
        &self,
        id: &DirSnapshotId,
        sandbox: &SandboxId,
        path: Option<&str>,
    ) -> Result<u64, ManagerError> {
        let snapshot = self.dir_snapshot(id).await?;
        let path = path.unwrap_or(&snapshot.path).to_owned();
        check_directory(&path)?;
        let sandbox_id = sandbox.clone();
        self.locked_blocking("restore directory snapshot", sandbox, move |inner| {
            let target = inner.reachable_sandbox(&sandbox_id)?;
            let root = inner.root_dir(&target.id)?;
            let ids = inner.backends.runtime.id_map();
            inner
                .backends
                .storage
                .restore_dir_snapshot(&snapshot.id, root.path(), &path, ids)
                .map_err(|source| ManagerError::from_storage("restore directory snapshot", source))
        })
        .await
    }

    /// Deletes directory snapshot `id`.
    ///
    /// # Errors
    /// `DirSnapshotNotFound`; storage failures.
    pub async fn delete_dir_snapshot(&self, id: &DirSnapshotId) -> Result<(), ManagerError> {
        self.dir_snapshot(id).await?;
        let inner = Arc::clone(&self.inner);
        let id = id.clone();
        blocking("delete directory snapshot", move || {
            inner.store.delete_dir_snapshot(&id)?;
            inner
                .backends
                .storage
                .delete_dir_snapshot(&id)
                .map_err(|source| ManagerError::from_storage("delete directory snapshot", source))
        })
        .await?
    }
}

impl Inner {
    fn create_dir_snapshot_blocking(
        &self,
        id: &SandboxId,
        path: &str,
    ) -> Result<DirSnapshot, ManagerError> {
        let sandbox = self.reachable_sandbox(id)?;
        let root = self.root_dir(id)?;
        let snapshot_id =
            DirSnapshotId::generate().map_err(|source| ManagerError::Entropy { source })?;
        let captured = self.still_while(&sandbox, || {
            self.backends.storage.create_dir_snapshot(
                &snapshot_id,
                root.path(),
                path,
                self.backends.runtime.id_map(),
            )
        })?;
        let info =
            captured.map_err(|source| ManagerError::from_storage("directory snapshot", source))?;
        let snapshot = DirSnapshot {
            id: snapshot_id,
            sandbox: id.clone(),
            path: path.to_owned(),
            sha256: info.sha256,
            size_bytes: info.size_bytes,
            entries: info.entries,
            created_at: self.clock.now(),
        };
        if let Err(error) = self.store.put_dir_snapshot(&snapshot) {
            // Not recorded means not kept: the tar goes too.
            let _ = self.backends.storage.delete_dir_snapshot(&snapshot.id);
            return Err(error.into());
        }
        Ok(snapshot)
    }

    /// A live sandbox whose processes exist (running, or paused with its memory).
    fn reachable_sandbox(&self, id: &SandboxId) -> Result<Sandbox, ManagerError> {
        let sandbox = self.live_sandbox(id)?;
        let reachable = sandbox.state == SandboxState::Running
            || (sandbox.state == SandboxState::Paused
                && sandbox.pause_mode == Some(PauseMode::Memory));
        if !reachable {
            return Err(ManagerError::NotRunning {
                id: id.clone(),
                state: sandbox.state,
            });
        }
        Ok(sandbox)
    }

    fn root_dir(&self, id: &SandboxId) -> Result<RootDir, ManagerError> {
        self.backends
            .runtime
            .root_dir(id)
            .map_err(|source| ManagerError::from_runtime("find the root of", source))
    }
}

/// Directory snapshots take and restore real directories of the sandbox, never `/` or the
/// kernel's and the init's own file systems.
fn check_directory(path: &str) -> Result<(), ManagerError> {
    check_mount_path(std::path::Path::new(path)).map_err(|source| ManagerError::BadDirectory {
        path: path.to_owned(),
        reason: source.to_string(),
    })
}
