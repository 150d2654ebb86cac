//! `OverlayStorage`: the overlayfs implementation of core's `Storage` trait over the on-disk
//! layout of layers, template metadata and per-sandbox upper directories.
//!
//! # On-disk layout
//! ```text
//! <root>/
//! ├── layers/<layer-id>/{manifest.json,tree/}    # see `layer`
//! ├── templates/<template-id>.json               # layer chain (topmost first), defaults, binds
//! └── sandboxes/<sandbox-id>/
//!     ├── upper/        # the sandbox's writable layer and root directory
//!     ├── work/         # overlayfs's scratch directory
//!     └── rootfs.json   # template, layers and binds it was made from; written last
//! ```
//! Metadata files are written to a temporary file and renamed into place. This backend only
//! prepares directories; the runtime mounts the overlay.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::SystemTime;

use coppice_core::storage::{BindMount, RootFs, Storage, StorageError, TemplateInfo};
use coppice_core::volume::{ArchiveInfo, IdMap};
use coppice_core::{DirSnapshotId, SandboxId, TemplateId, VolumeId};

use crate::base::{self, HostIds};
use crate::config::OverlayConfig;
use crate::error::OverlayError;
use crate::fsutil;
use crate::layer::{LayerId, LayerRegistry};
use crate::records::{RootfsRecord, TemplateRecord};
use crate::sys::{self, OverlaySys};

pub(crate) type Result<T> = std::result::Result<T, OverlayError>;

const LAYERS_DIR: &str = "layers";
const TEMPLATES_DIR: &str = "templates";
const SANDBOXES_DIR: &str = "sandboxes";
const UPPER_DIR: &str = "upper";
const WORK_DIR: &str = "work";
const ROOTFS_FILE: &str = "rootfs.json";
const TEMPLATE_SUFFIX: &str = ".json";

/// Mode of `sandboxes/<id>/`: host root only, so no host user can reach into an upper layer
/// (files there belong to sandbox ids, shared by every sandbox).
const SANDBOX_DIR_MODE: u32 = 0o700;
/// Mode of the upper directory, which is the sandbox's `/`.
const UPPER_MODE: u32 = 0o755;
/// Mode of a sandbox's `/etc`.
const ETC_MODE: u32 = 0o755;
/// Mode of `/etc/machine-id`, as systemd makes it.
const MACHINE_ID_MODE: u32 = 0o444;
/// Mode of overlayfs's work directory, used only by the host's root.
const WORK_MODE: u32 = 0o700;

/// Templates and sandbox root filesystems as overlayfs layers on a plain directory tree.
///
/// Every method blocks on filesystem I/O; `SandboxManager` calls them off the async runtime.
/// Disk quotas are not enforced: see [`Storage::create_rootfs`] below.
#[derive(Debug)]
pub struct OverlayStorage {
    config: OverlayConfig,
    ids: HostIds,
    sys: Arc<dyn OverlaySys>,
    layers: LayerRegistry,
    /// Serialises template builds and layer pruning within this process.
    build_lock: Mutex<()>,
    /// Held shared by a create from reading its template until its record names the layers,
    /// and exclusively by pruning: a layer a create is about to use is never pruned (a
    /// template replaced meanwhile would otherwise lose its old layers under it).
    layers_in_use: RwLock<()>,
}

impl OverlayStorage {
    /// Opens (creating if needed) the storage directory described by `config`.
    ///
    /// # Errors
    /// `Unsupported` on hosts without overlayfs; `RelativePath` or `IdOverflow` for a bad
    /// config; `CreateDir`.
    pub fn new(config: OverlayConfig) -> Result<Self> {
        Self::with_sys(sys::real()?, config)
    }

    /// Like [`OverlayStorage::new`], with the host operations supplied by the caller.
    pub(crate) fn with_sys(sys: Arc<dyn OverlaySys>, config: OverlayConfig) -> Result<Self> {
        config.validate()?;
        let ids = HostIds {
            root: config.root_owner(),
            user: config.user_owner()?,
        };
        let layers = LayerRegistry::open(config.root.join(LAYERS_DIR))?;
        fsutil::create_dir_all(&config.root.join(TEMPLATES_DIR))?;
        fsutil::create_dir_all(&config.root.join(SANDBOXES_DIR))?;
        Ok(Self {
            config,
            ids,
            sys,
            layers,
            build_lock: Mutex::new(()),
            layers_in_use: RwLock::new(()),
        })
    }

    /// The configuration this storage was opened with.
    pub fn config(&self) -> &OverlayConfig {
        &self.config
    }

    /// The layer registry under `<root>/layers`.
    pub fn layers(&self) -> &LayerRegistry {
        &self.layers
    }

    /// Makes sure the `base` template exists and is complete, building it if not; returns it.
    ///
    /// Idempotent: if `templates/base.json` exists and its layer is complete, nothing is
    /// written. Otherwise leftovers of a crashed build are removed, a new layer is built in a
    /// staging directory and renamed into place, the template file is written, and layers no
    /// template or sandbox uses any more are removed. Nothing is downloaded: the layer holds
    /// links, mount points and a generated `/etc`, and sandboxes get the host's `/usr`
    /// read-only.
    ///
    /// Blocks for the duration of the build (a few milliseconds to a second, depending on the
    /// size of the copied host `/etc` entries).
    ///
    /// # Errors
    /// I/O failures while building (nothing is left behind); a template file written by an
    /// incompatible version.
    pub fn ensure_base_template(&self) -> Result<TemplateInfo> {
        let _guard = self.lock_builds();
        let id = base_template_id(&self.template_path_str(base::BASE_TEMPLATE))?;
        let path = self.template_path(&id);
        match self.existing_template(&path, &id) {
            Ok(Some(info)) => return Ok(info),
            Ok(None) => {}
            Err(err) if is_damage(&err) => {
                tracing::warn!(error = %err, "base template is damaged; rebuilding it");
            }
            Err(err) => return Err(err),
        }
        self.layers.remove_incomplete()?;
        let created_at = fsutil::truncate_to_ms(SystemTime::now());
        let layer = LayerId::generate(base::BASE_TEMPLATE, created_at, self.random_u32()?);
        let pending = self.layers.begin(layer, None)?;
        let mut random = [0u8; 16];
        self.sys
            .fill_random(&mut random)
            .map_err(|source| OverlayError::Random { source })?;
        let entries = base::plan(
            |name| self.config.host_usr.join(name).exists(),
            &base::machine_id(&random),
        );
        base::apply(
            &*self.sys,
            &pending.tree(),
            &entries,
            self.ids,
            &self.config.host_etc,
        )?;
        let manifest = self
            .layers
            .commit(pending, base::LAYER_DESCRIPTION, created_at)?;
        let record = TemplateRecord {
            id,
            layers: vec![manifest.id.clone()],
            default_user: base::DEFAULT_USER.to_owned(),
            default_workdir: base::DEFAULT_WORKDIR.to_owned(),
            created_at: manifest.created_at,
            binds: vec![BindMount {
                source: self.config.host_usr.clone(),
                target: PathBuf::from(base::USR_TARGET),
                read_only: true,
            }],
            snapshot_of: None,
            start: None,
            source_digest: None,
            env: Vec::new(),
        };
        record.write(&path)?;
        tracing::info!(
            template = %record.id,
            layer = %manifest.id,
            size_bytes = manifest.size_bytes,
            "base template built"
        );
        // The template is usable now; a failed cleanup only wastes space until the next build.
        if let Err(err) = self.prune_layers_locked() {
            tracing::warn!(error = %err, "cannot remove unused layers");
        }
        self.template_info(&record)
    }

    /// Removes every layer that no template and no sandbox root filesystem uses (directly or
    /// as an ancestor), for example one orphaned by a crash between committing a layer and
    /// writing its template. Returns the removed layers.
    ///
    /// # Errors
    /// A metadata file that cannot be read (then nothing is removed); I/O failures.
    pub fn prune_layers(&self) -> Result<Vec<LayerId>> {
        let _guard = self.lock_builds();
        self.prune_layers_locked()
    }

    fn prune_layers_locked(&self) -> Result<Vec<LayerId>> {
        let _pruning = self
            .layers_in_use
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut referenced = BTreeSet::new();
        for record in self.template_records()? {
            referenced.extend(record.layers);
        }
        for sandbox in self.list_sandboxes()? {
            let path = self.sandbox_dir(&sandbox).join(ROOTFS_FILE);
            if let Some(record) = RootfsRecord::read(&path, &sandbox)? {
                referenced.extend(record.layers);
            }
        }
        let removed = self.layers.remove_unreferenced(&referenced)?;
        if !removed.is_empty() {
            tracing::info!(count = removed.len(), "removed unused layers");
        }
        Ok(removed)
    }

    /// The template stored at `path`, if it exists and all its layers are complete.
    fn existing_template(&self, path: &Path, id: &TemplateId) -> Result<Option<TemplateInfo>> {
        match TemplateRecord::read(path, id)? {
            Some(record) => self.template_info(&record).map(Some),
            None => Ok(None),
        }
    }

    fn lock_builds(&self) -> MutexGuard<'_, ()> {
        self.build_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn random_u32(&self) -> Result<u32> {
        let mut bytes = [0u8; 4];
        self.sys
            .fill_random(&mut bytes)
            .map_err(|source| OverlayError::Random { source })?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn templates_dir(&self) -> PathBuf {
        self.config.root.join(TEMPLATES_DIR)
    }

    fn template_path(&self, id: &TemplateId) -> PathBuf {
        self.template_path_str(id.as_str())
    }

    fn template_path_str(&self, id: &str) -> PathBuf {
        self.templates_dir().join(format!("{id}{TEMPLATE_SUFFIX}"))
    }

    fn sandboxes_dir(&self) -> PathBuf {
        self.config.root.join(SANDBOXES_DIR)
    }

    fn sandbox_dir(&self, id: &SandboxId) -> PathBuf {
        self.sandboxes_dir().join(id.as_str())
    }

    fn read_template(&self, id: &TemplateId) -> Result<TemplateRecord> {
        TemplateRecord::read(&self.template_path(id), id)?.ok_or_else(|| {
            OverlayError::TemplateNotFound {
                template: id.clone(),
            }
        })
    }

    /// Every template record, sorted by id.
    fn template_records(&self) -> Result<Vec<TemplateRecord>> {
        let mut records = Vec::new();
        for path in fsutil::read_dir_sorted(&self.templates_dir())? {
            let Some(id) = template_id_of_file(&path) else {
                continue;
            };
            if let Some(record) = TemplateRecord::read(&path, &id)? {
                records.push(record);
            }
        }
        Ok(records)
    }

    fn template_info(&self, record: &TemplateRecord) -> Result<TemplateInfo> {
        let mut size_bytes = 0u64;
        for layer in &record.layers {
            size_bytes = size_bytes.saturating_add(self.layers.get(layer)?.size_bytes);
        }
        Ok(TemplateInfo {
            id: record.id.clone(),
            created_at: record.created_at,
            size_bytes,
            default_user: record.default_user.clone(),
            default_workdir: record.default_workdir.clone(),
            snapshot_of: record.snapshot_of.clone(),
            start: record.start.clone(),
            env: record.env.clone(),
            built_from: record.source_digest.clone(),
        })
    }

    fn all_templates(&self) -> Result<Vec<TemplateInfo>> {
        let mut infos = Vec::new();
        for record in self.template_records()? {
            match self.template_info(&record) {
                Ok(info) => infos.push(info),
                Err(OverlayError::LayerNotFound { layer }) => {
                    // Listed templates must be usable; this one is not, and says why once here.
                    tracing::warn!(template = %record.id, %layer, "template skipped: layer missing");
                }
                Err(err) => return Err(err),
            }
        }
        Ok(infos)
    }

    fn create(&self, id: &SandboxId, template: &TemplateId, disk_mb: u32) -> Result<RootFs> {
        let _in_use = self
            .layers_in_use
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let record = self.read_template(template)?;
        for layer in &record.layers {
            self.layers.get(layer)?;
        }
        let dir = self.sandbox_dir(id);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(source) if source.kind() == io::ErrorKind::AlreadyExists => {
                return Err(OverlayError::SandboxExists {
                    sandbox: id.clone(),
                });
            }
            Err(source) => return Err(OverlayError::CreateDir { path: dir, source }),
        }
        let filled = self.fill_sandbox_dir(&dir, id, record, disk_mb);
        if filled.is_err()
            && let Err(cleanup) = fsutil::remove_tree(&dir)
        {
            // The create error is what the caller sees; the leftover is listed by
            // `list_rootfs`, so reconciliation removes it later.
            tracing::warn!(sandbox_id = %id, error = %cleanup, "cannot remove failed rootfs");
        }
        filled
    }

    fn fill_sandbox_dir(
        &self,
        dir: &Path,
        id: &SandboxId,
        template: TemplateRecord,
        disk_mb: u32,
    ) -> Result<RootFs> {
        fsutil::set_mode(dir, SANDBOX_DIR_MODE)?;
        let upper = dir.join(UPPER_DIR);
        fsutil::create_dir(&upper)?;
        self.ids.root.apply(&*self.sys, &upper)?;
        fsutil::set_mode(&upper, UPPER_MODE)?;
        self.give_machine_id(&upper)?;
        let work = dir.join(WORK_DIR);
        fsutil::create_dir(&work)?;
        fsutil::set_mode(&work, WORK_MODE)?;
        let record = RootfsRecord {
            sandbox: id.clone(),
            template: template.id,
            layers: template.layers,
            binds: template.binds,
            disk_mb,
            created_at: SystemTime::now(),
        };
        record.write(&dir.join(ROOTFS_FILE))?;
        tracing::debug!(sandbox_id = %id, template = %record.template, "rootfs created");
        Ok(self.rootfs_of(&record))
    }

    /// Every sandbox gets its own `/etc/machine-id` in its upper directory, shadowing the
    /// template's: sandboxes made from one template or snapshot never share one.
    fn give_machine_id(&self, upper: &Path) -> Result<()> {
        let etc = upper.join("etc");
        fsutil::create_dir(&etc)?;
        self.ids.root.apply(&*self.sys, &etc)?;
        fsutil::set_mode(&etc, ETC_MODE)?;
        let mut random = [0u8; 16];
        self.sys
            .fill_random(&mut random)
            .map_err(|source| OverlayError::Random { source })?;
        let path = etc.join("machine-id");
        let contents = format!("{}\n", base::machine_id(&random));
        // Per-sandbox, like rootfs.json: no fsync on every create.
        fsutil::write_atomic(&path, contents.as_bytes(), fsutil::Durability::DaemonCrash)?;
        self.ids.root.apply(&*self.sys, &path)?;
        fsutil::set_mode(&path, MACHINE_ID_MODE)
    }

    fn rootfs_of(&self, record: &RootfsRecord) -> RootFs {
        let dir = self.sandbox_dir(&record.sandbox);
        RootFs::Overlay {
            lower: record
                .layers
                .iter()
                .map(|layer| self.layers.tree_dir(layer))
                .collect(),
            upper: dir.join(UPPER_DIR),
            work: dir.join(WORK_DIR),
            binds: record.binds.clone(),
        }
    }

    fn read_rootfs(&self, id: &SandboxId) -> Result<RootFs> {
        let path = self.sandbox_dir(id).join(ROOTFS_FILE);
        let record =
            RootfsRecord::read(&path, id)?.ok_or_else(|| OverlayError::SandboxNotFound {
                sandbox: id.clone(),
            })?;
        Ok(self.rootfs_of(&record))
    }

    fn destroy(&self, id: &SandboxId) -> Result<()> {
        let dir = self.sandbox_dir(id);
        let record = RootfsRecord::read(&dir.join(ROOTFS_FILE), id)
            .ok()
            .flatten();
        if fsutil::remove_tree(&dir)? {
            tracing::debug!(sandbox_id = %id, "rootfs destroyed");
        }
        // A fork stands on a snapshot layer no template keeps; the last fork to go takes it.
        // Sandboxes made from a plain template skip the look (it would sit on every kill).
        if let Some(top) = record
            .and_then(|record| record.layers.into_iter().next())
            .filter(|top| top.as_str().starts_with(snapshot::LAYER_PREFIX))
        {
            let _guard = self.lock_builds();
            let kept_by_template = self
                .template_records()?
                .iter()
                .any(|template| template.layers.contains(&top));
            if !kept_by_template && let Err(error) = self.prune_layers_locked() {
                tracing::warn!(sandbox_id = %id, error = %error, "cannot remove unused layers");
            }
        }
        Ok(())
    }

    /// Every directory under `sandboxes/` named like a sandbox, including ones whose creation
    /// was interrupted, so that reconciliation can destroy those too.
    fn list_sandboxes(&self) -> Result<Vec<SandboxId>> {
        Ok(fsutil::read_dir_sorted(&self.sandboxes_dir())?
            .iter()
            .filter(|path| path.is_dir())
            .filter_map(|path| path.file_name()?.to_str()?.parse().ok())
            .collect())
    }
}

impl Storage for OverlayStorage {
    fn templates(&self) -> std::result::Result<Vec<TemplateInfo>, StorageError> {
        self.all_templates()
            .map_err(|err| err.into_storage("list templates"))
    }

    fn template(&self, id: &TemplateId) -> std::result::Result<TemplateInfo, StorageError> {
        self.read_template(id)
            .and_then(|record| self.template_info(&record))
            .map_err(|err| err.into_storage("look up template"))
    }

    fn import_image(
        &self,
        id: &TemplateId,
        image: &Path,
        ids: IdMap,
    ) -> std::result::Result<TemplateInfo, StorageError> {
        self.import_image_impl(id, image, ids)
    }

    fn bootstrap_debian(
        &self,
        id: &TemplateId,
        base: &coppice_core::recipe::DebianBase,
        ids: IdMap,
        log: &mut dyn FnMut(&str),
    ) -> std::result::Result<TemplateInfo, StorageError> {
        self.bootstrap_debian_impl(id, base, ids, log)
    }

    fn derive_template(
        &self,
        id: &TemplateId,
        from: &TemplateId,
        meta: &coppice_core::storage::TemplateMeta,
    ) -> std::result::Result<TemplateInfo, StorageError> {
        self.derive_template_impl(id, from, meta)
    }

    /// Makes `sandboxes/<id>/{upper,work}` and records the template's layers in
    /// `rootfs.json`. The upper directory becomes the sandbox's `/`, so it is owned by the
    /// sandbox's root (`sandbox_root_uid:sandbox_root_gid`) with mode 0755.
    ///
    /// `disk_mb` is recorded but **not enforced**: an upper directory on plain ext4 cannot
    /// carry a size limit (that needs project quotas, XFS, or a loop-mounted image per
    /// sandbox).
    ///
    /// # Errors
    /// `TemplateNotFound`, `AlreadyExists`, `Exhausted` on ENOSPC/EDQUOT, or `Backend`
    /// (including a template whose layer is missing). Nothing is left behind on error.
    fn create_rootfs(
        &self,
        id: &SandboxId,
        template: &TemplateId,
        disk_mb: u32,
    ) -> std::result::Result<RootFs, StorageError> {
        self.create(id, template, disk_mb)
            .map_err(|err| err.into_storage("create rootfs"))
    }

    fn rootfs(&self, id: &SandboxId) -> std::result::Result<RootFs, StorageError> {
        self.read_rootfs(id)
            .map_err(|err| err.into_storage("read rootfs"))
    }

    /// Removes `sandboxes/<id>` entirely, including overlayfs's unreadable `work/work`.
    /// Call it only after the sandbox's overlay is unmounted and its processes are gone.
    fn destroy_rootfs(&self, id: &SandboxId) -> std::result::Result<(), StorageError> {
        self.destroy(id)
            .map_err(|err| err.into_storage("destroy rootfs"))
    }

    /// Every sandbox directory, including ones left by an interrupted create (for which
    /// [`Storage::rootfs`] answers `NotFound`), so that reconciliation removes them.
    fn list_rootfs(&self) -> std::result::Result<Vec<SandboxId>, StorageError> {
        self.list_sandboxes()
            .map_err(|err| err.into_storage("list rootfs"))
    }

    /// Copies the upper directory (see `storage/snapshot.rs`); a full copy whose data is
    /// shared where the filesystem can (btrfs, XFS).
    fn snapshot_rootfs(
        &self,
        id: &SandboxId,
        snapshot: &TemplateId,
    ) -> std::result::Result<TemplateInfo, StorageError> {
        self.snapshot(id, snapshot)
            .map_err(|err| err.into_storage("snapshot rootfs"))
    }

    fn delete_template(&self, id: &TemplateId) -> std::result::Result<(), StorageError> {
        OverlayStorage::delete_template(self, id).map_err(|err| err.into_storage("delete template"))
    }

    fn create_volume(&self, id: &VolumeId) -> std::result::Result<PathBuf, StorageError> {
        self.create_volume_dir(id)
    }

    fn volume_path(&self, id: &VolumeId) -> std::result::Result<PathBuf, StorageError> {
        self.existing_volume_dir(id)
    }

    fn delete_volume(&self, id: &VolumeId) -> std::result::Result<(), StorageError> {
        self.remove_volume_dir(id)
    }

    fn create_dir_snapshot(
        &self,
        id: &DirSnapshotId,
        root: &Path,
        path: &str,
        ids: IdMap,
    ) -> std::result::Result<ArchiveInfo, StorageError> {
        self.write_dir_snapshot(id, root, path, ids)
    }

    fn restore_dir_snapshot(
        &self,
        id: &DirSnapshotId,
        root: &Path,
        path: &str,
        ids: IdMap,
    ) -> std::result::Result<u64, StorageError> {
        self.read_dir_snapshot(id, root, path, ids)
    }

    fn dir_snapshot_file(&self, id: &DirSnapshotId) -> std::result::Result<PathBuf, StorageError> {
        self.existing_dir_snapshot(id)
    }

    fn delete_dir_snapshot(&self, id: &DirSnapshotId) -> std::result::Result<(), StorageError> {
        self.remove_dir_snapshot(id)
    }
}

/// The id of the base template, parsed; `path` is where its metadata lives, for the error.
fn base_template_id(path: &Path) -> Result<TemplateId> {
    base::BASE_TEMPLATE
        .parse()
        .map_err(|source| OverlayError::MetadataId {
            path: path.to_owned(),
            source,
        })
}

/// The template id of a `templates/<id>.json` path; `None` for temporary and foreign files.
fn template_id_of_file(path: &Path) -> Option<TemplateId> {
    path.file_name()?
        .to_str()?
        .strip_suffix(TEMPLATE_SUFFIX)?
        .parse()
        .ok()
}

/// Whether `err` means that stored state is damaged (and may be rebuilt), rather than that
/// the host failed or the files come from an incompatible version.
fn is_damage(err: &OverlayError) -> bool {
    matches!(
        err,
        OverlayError::LayerNotFound { .. }
            | OverlayError::ParseMetadata { .. }
            | OverlayError::MetadataId { .. }
            | OverlayError::MetadataMismatch { .. }
    )
}

mod built;
mod derived;
#[cfg(test)]
mod derived_tests;
mod dir_snapshots;
mod imported;
mod snapshot;

pub use derived::{SourceFile, TemplateSource};
#[cfg(test)]
mod tests;
mod volumes;
