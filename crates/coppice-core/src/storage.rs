//! The `Storage` trait: templates and the per-sandbox root filesystems made from them.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::ErrorKind;
use crate::id::{DirSnapshotId, SandboxId, TemplateId, VolumeId};
use crate::volume::{ArchiveInfo, IdMap};

/// A template as storage knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateInfo {
    /// Its id.
    pub id: TemplateId,
    /// When it was built.
    pub created_at: SystemTime,
    /// Bytes on disk of its own layers (shared host directories not counted).
    pub size_bytes: u64,
    /// The user processes run as by default.
    pub default_user: String,
    /// The default working directory.
    pub default_workdir: String,
    /// For a snapshot: the sandbox it was taken of.
    pub snapshot_of: Option<SandboxId>,
    /// The service every sandbox booted from it starts, if any.
    pub start: Option<TemplateStart>,
    /// Environment variables every process of its sandboxes gets (a sandbox's own, asked
    /// for at create, win).
    pub env: Vec<(String, String)>,
    /// For a template coppice ships: a digest of what it was built from (its sources, or
    /// `recipe:<hex>` for a recipe), telling when to build it again. `None` for the templates
    /// users make, which coppice never replaces.
    pub built_from: Option<String>,
}

/// What a derived template sets over the template it is made from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateMeta {
    /// Environment variables of its sandboxes' processes (over the parent's).
    pub env: Vec<(String, String)>,
    /// The service its sandboxes start (`None`: the parent's).
    pub start: Option<TemplateStart>,
    /// The user its sandboxes' processes run as by default (`None`: the parent's).
    pub default_user: Option<String>,
    /// Their default working directory (`None`: the parent's).
    pub default_workdir: Option<String>,
    /// For a template coppice ships, the digest of what it is built from: it then replaces
    /// an earlier build of the same id (one with a digest too) instead of being refused.
    pub built_from: Option<String>,
}

/// A template's service: started in the background once a sandbox from the template boots,
/// and waited for before the sandbox is handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateStart {
    /// A shell command run as the default user in the default working directory.
    pub command: String,
    /// A shell command that exits 0 once the service is ready; `None` waits for nothing.
    pub ready: Option<String>,
    /// Who runs it, `user` or `user:group` of the sandbox (an image's `User`, its group
    /// kept); `None`: the template's default user.
    pub user: Option<String>,
}

/// A host directory mounted into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Host path.
    pub source: PathBuf,
    /// Absolute path inside the sandbox.
    pub target: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

/// A sandbox's root filesystem, in the form the storage backend produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootFs {
    /// An overlay of read-only layers under a per-sandbox writable upper directory.
    Overlay {
        /// Read-only layers, topmost first.
        lower: Vec<PathBuf>,
        /// The sandbox's writable layer.
        upper: PathBuf,
        /// overlayfs's scratch directory, on the same filesystem as `upper`.
        work: PathBuf,
        /// Host directories mounted on top (e.g. a read-only `/usr`).
        binds: Vec<BindMount>,
    },
    /// A plain directory the sandbox owns (e.g. a ZFS clone's mountpoint).
    Directory {
        /// The directory.
        path: PathBuf,
        /// Host directories mounted on top.
        binds: Vec<BindMount>,
    },
    /// A whole disk the sandbox owns (e.g. a zvol clone), for a virtual machine to boot.
    Disk {
        /// Its block device.
        device: PathBuf,
    },
}

/// Holds templates and makes root filesystems from them.
///
/// Implementations block; `SandboxManager` calls them off the async runtime.
pub trait Storage: Send + Sync + 'static {
    /// Every template.
    ///
    /// # Errors
    /// A backend failure.
    fn templates(&self) -> Result<Vec<TemplateInfo>, StorageError>;

    /// One template.
    ///
    /// # Errors
    /// `TemplateNotFound`.
    fn template(&self, id: &TemplateId) -> Result<TemplateInfo, StorageError>;

    /// Makes the root filesystem of a new sandbox from `template`.
    ///
    /// # Errors
    /// `TemplateNotFound`, `AlreadyExists`, or a backend failure; nothing stays behind.
    fn create_rootfs(
        &self,
        id: &SandboxId,
        template: &TemplateId,
        disk_mb: u32,
    ) -> Result<RootFs, StorageError>;

    /// The root filesystem of an existing sandbox, e.g. after a restart of the daemon.
    ///
    /// # Errors
    /// `NotFound`.
    fn rootfs(&self, id: &SandboxId) -> Result<RootFs, StorageError>;

    /// Deletes a sandbox's root filesystem. Deleting an unknown one succeeds.
    ///
    /// # Errors
    /// A backend failure; the call can be retried.
    fn destroy_rootfs(&self, id: &SandboxId) -> Result<(), StorageError>;

    /// Every sandbox that has a root filesystem.
    ///
    /// # Errors
    /// A backend failure.
    fn list_rootfs(&self) -> Result<Vec<SandboxId>, StorageError>;

    /// Captures sandbox `id`'s writes as a new, immutable template `snapshot`: the sandbox's
    /// own layers with its writable layer, copied, on top. The caller keeps the sandbox's
    /// processes still for the duration of the call.
    ///
    /// # Errors
    /// `NotFound` for an unknown sandbox; `TemplateExists`; `Exhausted` when space runs out
    /// (nothing stays behind); `Unsupported` where the backend cannot.
    fn snapshot_rootfs(
        &self,
        id: &SandboxId,
        snapshot: &TemplateId,
    ) -> Result<TemplateInfo, StorageError> {
        let _ = (id, snapshot);
        Err(StorageError::Unsupported { what: "snapshots" })
    }

    /// Makes template `id` from the OCI image at `image` on the host (an image layout
    /// directory, or a tarball of one such as `docker save` writes), keeping the image's
    /// environment, user, working directory and entrypoint (started by every sandbox). The
    /// image's owners are sandbox ids, mapped to host ids by `ids`.
    ///
    /// # Errors
    /// `TemplateExists`; `Invalid` for an image that is missing, malformed, unsupported or
    /// refused (nothing is kept); `Exhausted`; `Unsupported` where the backend cannot.
    fn import_image(
        &self,
        id: &TemplateId,
        image: &Path,
        ids: IdMap,
    ) -> Result<TemplateInfo, StorageError> {
        let _ = (id, image, ids);
        Err(StorageError::Unsupported {
            what: "importing images",
        })
    }

    /// Makes template `id` a Debian root of `base` from the archive, owners mapped by `ids`,
    /// with the base template's `user` account; `log` gets the tool's output, line by line.
    ///
    /// # Errors
    /// `TemplateExists`; `Invalid` when the archive refuses (an unknown package: the log
    /// says which); `Exhausted`; `Unsupported` where the backend cannot.
    fn bootstrap_debian(
        &self,
        id: &TemplateId,
        base: &crate::recipe::DebianBase,
        ids: IdMap,
        log: &mut dyn FnMut(&str),
    ) -> Result<TemplateInfo, StorageError> {
        let _ = (id, base, ids, log);
        Err(StorageError::Unsupported {
            what: "building templates from Debian packages",
        })
    }

    /// Makes template `id` of `from`'s layers (nothing copied) with `meta` for its
    /// environment and service. With `meta.built_from`, an existing template `id` that
    /// coppice built (one with `built_from` too) is replaced; sandboxes made from it keep
    /// their files.
    ///
    /// # Errors
    /// `TemplateNotFound` for `from`; `TemplateExists`; `Unsupported`.
    fn derive_template(
        &self,
        id: &TemplateId,
        from: &TemplateId,
        meta: &TemplateMeta,
    ) -> Result<TemplateInfo, StorageError> {
        let _ = (id, from, meta);
        Err(StorageError::Unsupported {
            what: "deriving templates",
        })
    }

    /// Deletes a template. Sandboxes made from it keep their root filesystems.
    ///
    /// # Errors
    /// `TemplateNotFound`; `Invalid` for a built-in template; `Unsupported`.
    fn delete_template(&self, id: &TemplateId) -> Result<(), StorageError> {
        let _ = id;
        Err(StorageError::Unsupported {
            what: "deleting templates",
        })
    }

    /// Makes the empty directory of volume `id`, its root owned by the sandboxes' default
    /// user, so that their processes can write to it.
    ///
    /// # Errors
    /// `VolumeExists`; `Exhausted`; `Unsupported` where the backend has no volumes.
    fn create_volume(&self, id: &VolumeId) -> Result<PathBuf, StorageError> {
        let _ = id;
        Err(StorageError::Unsupported { what: "volumes" })
    }

    /// The host directory of volume `id`.
    ///
    /// # Errors
    /// `VolumeNotFound`; `Unsupported`.
    fn volume_path(&self, id: &VolumeId) -> Result<PathBuf, StorageError> {
        let _ = id;
        Err(StorageError::Unsupported { what: "volumes" })
    }

    /// Writes directory `path` (absolute, inside the sandbox) of the sandbox whose root
    /// directory is `root` as directory snapshot `id`. Nothing below `root` is followed.
    ///
    /// # Errors
    /// `Invalid` for a path that is not a directory; `Exhausted`; `Unsupported`.
    fn create_dir_snapshot(
        &self,
        id: &DirSnapshotId,
        root: &Path,
        path: &str,
        ids: IdMap,
    ) -> Result<ArchiveInfo, StorageError> {
        let _ = (id, root, path, ids);
        Err(StorageError::Unsupported {
            what: "directory snapshots",
        })
    }

    /// Writes directory snapshot `id` back below directory `path` of the sandbox whose root
    /// directory is `root`, after checking all of it.
    ///
    /// # Errors
    /// `Invalid` for an archive that would leave the directory (nothing is written);
    /// `DirSnapshotNotFound`; `Exhausted`; `Unsupported`.
    fn restore_dir_snapshot(
        &self,
        id: &DirSnapshotId,
        root: &Path,
        path: &str,
        ids: IdMap,
    ) -> Result<u64, StorageError> {
        let _ = (id, root, path, ids);
        Err(StorageError::Unsupported {
            what: "directory snapshots",
        })
    }

    /// The tar of directory snapshot `id`.
    ///
    /// # Errors
    /// `DirSnapshotNotFound`; `Unsupported`.
    fn dir_snapshot_file(&self, id: &DirSnapshotId) -> Result<PathBuf, StorageError> {
        let _ = id;
        Err(StorageError::Unsupported {
            what: "directory snapshots",
        })
    }

    /// Deletes directory snapshot `id`; deleting an absent one succeeds.
    ///
    /// # Errors
    /// A backend failure; `Unsupported`.
    fn delete_dir_snapshot(&self, id: &DirSnapshotId) -> Result<(), StorageError> {
        let _ = id;
        Err(StorageError::Unsupported {
            what: "directory snapshots",
        })
    }

    /// Deletes volume `id` and everything in it. Deleting an absent volume succeeds, so that
    /// a deletion can be retried.
    ///
    /// # Errors
    /// A backend failure; `Unsupported`.
    fn delete_volume(&self, id: &VolumeId) -> Result<(), StorageError> {
        let _ = id;
        Err(StorageError::Unsupported { what: "volumes" })
    }
}

/// A storage failure, classified by kind.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No such template.
    #[error("template {id} not found")]
    TemplateNotFound {
        /// The template.
        id: TemplateId,
    },
    /// No root filesystem for that sandbox.
    #[error("no root filesystem for sandbox {id}")]
    NotFound {
        /// The sandbox.
        id: SandboxId,
    },
    /// A root filesystem for that sandbox already exists.
    #[error("a root filesystem for sandbox {id} already exists")]
    AlreadyExists {
        /// The sandbox.
        id: SandboxId,
    },
    /// No such volume.
    #[error("volume {id} not found in storage")]
    VolumeNotFound {
        /// The volume.
        id: VolumeId,
    },
    /// No such directory snapshot.
    #[error("directory snapshot {id} not found in storage")]
    DirSnapshotNotFound {
        /// The snapshot.
        id: DirSnapshotId,
    },
    /// A volume with that id already exists.
    #[error("volume {id} already exists in storage")]
    VolumeExists {
        /// The volume.
        id: VolumeId,
    },
    /// A template with that id already exists.
    #[error("a template named {id} already exists")]
    TemplateExists {
        /// The template.
        id: TemplateId,
    },
    /// The request cannot be carried out as given.
    #[error("{reason}")]
    Invalid {
        /// Why.
        reason: String,
    },
    /// This backend cannot do it.
    #[error("{what} are not supported by this storage backend")]
    Unsupported {
        /// The capability.
        what: &'static str,
    },
    /// Out of space or a quota.
    #[error("storage exhausted while {op}")]
    Exhausted {
        /// The operation.
        op: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A failure inside the backend.
    #[error("storage operation {op} failed")]
    Backend {
        /// The operation.
        op: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StorageError {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::TemplateNotFound { .. }
            | Self::NotFound { .. }
            | Self::VolumeNotFound { .. }
            | Self::DirSnapshotNotFound { .. } => ErrorKind::NotFound,
            Self::AlreadyExists { .. }
            | Self::TemplateExists { .. }
            | Self::VolumeExists { .. } => ErrorKind::AlreadyExists,
            Self::Invalid { .. } => ErrorKind::Invalid,
            Self::Unsupported { .. } => ErrorKind::Unsupported,
            Self::Exhausted { .. } => ErrorKind::OutOfSpace,
            Self::Backend { .. } => ErrorKind::Internal,
        }
    }
}
