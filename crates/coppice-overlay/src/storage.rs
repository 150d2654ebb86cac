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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use coppice_core::storage::{BindMount, RootFs, Storage, StorageError, TemplateInfo};
use coppice_core::{SandboxId, TemplateId};

use crate::base::{self, HostIds};
use crate::config::OverlayConfig;
use crate::error::OverlayError;
use crate::fsutil;
use crate::layer::{LayerId, LayerRegistry};
use crate::records::{RootfsRecord, TemplateRecord};
use crate::sys::{self, OverlaySys};

type Result<T> = std::result::Result<T, OverlayError>;

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
        if fsutil::remove_tree(&self.sandbox_dir(id))? {
            tracing::debug!(sandbox_id = %id, "rootfs destroyed");
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use coppice_core::ErrorKind;
    use tempfile::TempDir;

    use super::*;
    use crate::sys::{FakeOverlaySys, SysOp};

    const ROOT_ID: u32 = 200_000;

    struct Harness {
        dir: TempDir,
        sys: Arc<FakeOverlaySys>,
        storage: OverlayStorage,
    }

    impl Harness {
        fn root(&self) -> PathBuf {
            self.dir.path().join("storage")
        }

        fn reopen(&self) -> OverlayStorage {
            OverlayStorage::with_sys(self.sys.clone(), self.storage.config().clone()).unwrap()
        }

        fn base_layer(&self) -> LayerId {
            let record = self.storage.read_template(&template_id("base")).unwrap();
            record.layers[0].clone()
        }

        fn base_tree(&self) -> PathBuf {
            self.storage.layers().tree_dir(&self.base_layer())
        }

        /// Where `relative` was while the base layer was being built, the path the fake saw.
        fn staged(&self, relative: &str) -> PathBuf {
            let staging = format!(".staging-{}", self.base_layer());
            self.root()
                .join("layers")
                .join(staging)
                .join("tree")
                .join(relative)
        }

        /// The owner the fake gave to `relative` in the base layer's tree.
        fn base_owner(&self, relative: &str) -> Option<(u32, u32)> {
            self.sys.owner(&self.staged(relative))
        }
    }

    /// A storage over a tempdir, with a fake host `/usr` (bin, lib, sbin; no lib64) and a fake
    /// host `/etc`.
    fn harness() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let host_usr = dir.path().join("host/usr");
        for sub in ["bin", "lib", "sbin"] {
            fs::create_dir_all(host_usr.join(sub)).unwrap();
        }
        let host_etc = dir.path().join("host/etc");
        fs::create_dir_all(host_etc.join("ssl/certs")).unwrap();
        fs::create_dir_all(host_etc.join("ssl/private")).unwrap();
        fs::create_dir_all(host_etc.join("ld.so.conf.d")).unwrap();
        fs::write(host_etc.join("ssl/certs/ca.pem"), b"CERT").unwrap();
        fs::write(host_etc.join("ssl/private/host.key"), b"KEY").unwrap();
        fsutil::set_mode(&host_etc.join("ssl/private"), 0o700).unwrap();
        fs::write(host_etc.join("ld.so.conf.d/libc.conf"), b"/usr/local/lib\n").unwrap();
        fs::write(host_etc.join("debian_version"), b"12.0\n").unwrap();
        fs::write(host_etc.join("shadow"), b"root:*:1::::::\n").unwrap();
        symlink("../usr/lib/os-release", host_etc.join("os-release")).unwrap();
        let config = OverlayConfig {
            root: dir.path().join("storage"),
            sandbox_root_uid: ROOT_ID,
            sandbox_root_gid: ROOT_ID,
            host_usr,
            host_etc,
        };
        let sys = Arc::new(FakeOverlaySys::default());
        let storage = OverlayStorage::with_sys(sys.clone(), config).unwrap();
        Harness { dir, sys, storage }
    }

    /// A harness whose base template is built.
    fn harness_with_base() -> Harness {
        let harness = harness();
        harness.storage.ensure_base_template().unwrap();
        harness
    }

    fn template_id(value: &str) -> TemplateId {
        value.parse().unwrap()
    }

    fn sandbox_id(value: &str) -> SandboxId {
        value.parse().unwrap()
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn test_ensure_base_template_creates_usr_merge_links_for_present_dirs() {
        let harness = harness_with_base();

        let tree = harness.base_tree();

        assert_eq!(
            fs::read_link(tree.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        assert_eq!(
            fs::read_link(tree.join("lib")).unwrap(),
            Path::new("usr/lib")
        );
        assert_eq!(
            fs::read_link(tree.join("sbin")).unwrap(),
            Path::new("usr/sbin")
        );
        assert!(fs::symlink_metadata(tree.join("lib64")).is_err());
    }

    #[test]
    fn test_ensure_base_template_creates_mount_points() {
        let harness = harness_with_base();

        let tree = harness.base_tree();

        let dirs = [
            "usr",
            "proc",
            "dev",
            "tmp",
            "sys",
            "run",
            "root",
            "home/user",
            "var/tmp",
            "var/log",
            "workspace",
            ".oldroot",
            "etc",
            "mnt",
            "opt",
            "srv",
        ];
        let missing: Vec<&str> = dirs
            .into_iter()
            .filter(|dir| !tree.join(dir).is_dir())
            .collect();
        assert!(missing.is_empty(), "{missing:?}");
        assert_eq!(mode_of(&tree.join("tmp")), 0o1777);
        assert_eq!(mode_of(&tree.join("root")), 0o700);
    }

    #[test]
    fn test_ensure_base_template_gives_home_to_the_sandbox_user() {
        let harness = harness_with_base();

        let home = harness.base_owner("home/user");

        assert_eq!(home, Some((ROOT_ID + 1000, ROOT_ID + 1000)));
        assert_eq!(harness.base_owner("home"), Some((ROOT_ID, ROOT_ID)));
        assert_eq!(harness.base_owner("etc/passwd"), Some((ROOT_ID, ROOT_ID)));
        assert_eq!(harness.base_owner("bin"), Some((ROOT_ID, ROOT_ID)));
    }

    #[test]
    fn test_ensure_base_template_generates_etc_files() {
        let harness = harness_with_base();

        let etc = harness.base_tree().join("etc");

        let passwd = fs::read_to_string(etc.join("passwd")).unwrap();
        assert!(
            passwd.contains("root:x:0:0:root:/root:/bin/bash\n"),
            "{passwd}"
        );
        assert!(
            passwd.contains("user:x:1000:1000::/home/user:/bin/bash\n"),
            "{passwd}"
        );
        assert!(passwd.contains("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"));
        let group = fs::read_to_string(etc.join("group")).unwrap();
        assert_eq!(group, "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n");
        assert_eq!(
            fs::read_to_string(etc.join("hostname")).unwrap(),
            "sandbox\n"
        );
        let hosts = fs::read_to_string(etc.join("hosts")).unwrap();
        assert!(hosts.contains("127.0.0.1\tlocalhost\n"), "{hosts}");
        assert!(
            hosts.contains("::1\tlocalhost ip6-localhost ip6-loopback\n"),
            "{hosts}"
        );
        let nsswitch = fs::read_to_string(etc.join("nsswitch.conf")).unwrap();
        assert!(nsswitch.contains("passwd: files\n") && nsswitch.contains("hosts: files dns\n"));
    }

    #[test]
    fn test_ensure_base_template_resolv_conf_has_only_comments() {
        let harness = harness_with_base();

        let resolv = fs::read_to_string(harness.base_tree().join("etc/resolv.conf")).unwrap();

        assert!(resolv.lines().all(|line| line.starts_with('#')), "{resolv}");
    }

    #[test]
    fn test_ensure_base_template_machine_id_is_32_hex_digits() {
        let harness = harness_with_base();

        let id = fs::read_to_string(harness.base_tree().join("etc/machine-id")).unwrap();

        let id = id.strip_suffix('\n').unwrap();
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{id}"
        );
    }

    #[test]
    fn test_ensure_base_template_profile_sets_path_and_sources_profile_d() {
        let harness = harness_with_base();

        let profile = fs::read_to_string(harness.base_tree().join("etc/profile")).unwrap();

        assert!(
            profile
                .contains("PATH=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"")
        );
        assert!(profile.contains("/etc/profile.d/*.sh"));
    }

    #[test]
    fn test_ensure_base_template_copies_host_etc_entries() {
        let harness = harness_with_base();

        let etc = harness.base_tree().join("etc");

        assert_eq!(fs::read(etc.join("ssl/certs/ca.pem")).unwrap(), b"CERT");
        assert_eq!(
            fs::read(etc.join("ld.so.conf.d/libc.conf")).unwrap(),
            b"/usr/local/lib\n"
        );
        assert_eq!(fs::read(etc.join("debian_version")).unwrap(), b"12.0\n");
        assert_eq!(
            fs::read_link(etc.join("os-release")).unwrap(),
            Path::new("../usr/lib/os-release")
        );
        assert_eq!(
            harness.base_owner("etc/ssl/certs/ca.pem"),
            Some((ROOT_ID, ROOT_ID))
        );
    }

    #[test]
    fn test_ensure_base_template_leaves_out_shadow_and_private_keys() {
        let harness = harness_with_base();

        let etc = harness.base_tree().join("etc");

        assert!(!etc.join("shadow").exists());
        assert!(!etc.join("ssl/private").exists());
    }

    #[test]
    fn test_ensure_base_template_records_defaults_and_size() {
        let harness = harness();

        let info = harness.storage.ensure_base_template().unwrap();

        assert_eq!(info.id, template_id("base"));
        assert_eq!(info.default_user, "user");
        assert_eq!(info.default_workdir, "/home/user");
        assert_eq!(
            info.size_bytes,
            fsutil::tree_size(&harness.base_tree()).unwrap()
        );
        assert!(info.size_bytes > 0);
    }

    #[test]
    fn test_ensure_base_template_second_call_changes_nothing() {
        let harness = harness();
        let first = harness.storage.ensure_base_template().unwrap();
        let calls_before = harness.sys.calls().len();

        let second = harness.storage.ensure_base_template().unwrap();

        assert_eq!(second, first);
        assert_eq!(harness.sys.calls().len(), calls_before);
        assert_eq!(harness.storage.layers().list().unwrap().len(), 1);
    }

    #[test]
    fn test_ensure_base_template_half_built_leftovers_are_removed() {
        let harness = harness();
        let layers = harness.root().join("layers");
        fs::create_dir_all(layers.join(".staging-base-1-00000000/tree/etc")).unwrap();
        fs::write(
            layers.join(".staging-base-1-00000000/tree/etc/passwd"),
            b"partial",
        )
        .unwrap();
        fs::create_dir_all(layers.join("base-2-00000000/tree")).unwrap();

        harness.storage.ensure_base_template().unwrap();

        let entries = fsutil::read_dir_sorted(&layers).unwrap();
        assert_eq!(entries, vec![layers.join(harness.base_layer().as_str())]);
    }

    #[test]
    fn test_ensure_base_template_missing_layer_is_rebuilt() {
        let harness = harness_with_base();
        let old = harness.base_layer();
        fs::remove_dir_all(harness.root().join("layers").join(old.as_str())).unwrap();

        harness.storage.ensure_base_template().unwrap();

        assert_ne!(harness.base_layer(), old);
        assert!(harness.base_tree().join("etc/passwd").is_file());
    }

    #[test]
    fn test_ensure_base_template_corrupt_metadata_is_rebuilt() {
        let harness = harness_with_base();
        let old = harness.base_layer();
        fs::write(harness.root().join("templates/base.json"), b"{truncated").unwrap();

        harness.storage.ensure_base_template().unwrap();

        assert_ne!(harness.base_layer(), old);
        assert_eq!(harness.storage.layers().list().unwrap().len(), 1);
    }

    #[test]
    fn test_ensure_base_template_failure_leaves_nothing_behind() {
        let harness = harness();
        harness.sys.fail_next(SysOp::Lchown, libc::EPERM);

        let err = harness.storage.ensure_base_template().unwrap_err();

        assert!(matches!(err, OverlayError::Chown { .. }), "{err:?}");
        assert!(
            fsutil::read_dir_sorted(&harness.root().join("layers"))
                .unwrap()
                .is_empty()
        );
        assert!(
            fsutil::read_dir_sorted(&harness.root().join("templates"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn test_prune_layers_removes_orphans_and_keeps_used_layers() {
        let harness = harness_with_base();
        let pending = harness
            .storage
            .layers()
            .begin("orphan".parse().unwrap(), None)
            .unwrap();
        harness
            .storage
            .layers()
            .commit(pending, "orphan", SystemTime::now())
            .unwrap();

        let removed = harness.storage.prune_layers().unwrap();

        assert_eq!(removed, vec!["orphan".parse::<LayerId>().unwrap()]);
        assert!(harness.storage.layers().get(&harness.base_layer()).is_ok());
    }

    #[test]
    fn test_prune_layers_keeps_layer_used_only_by_a_sandbox() {
        let harness = harness_with_base();
        let old = harness.base_layer();
        harness
            .storage
            .create_rootfs(&sandbox_id("sbx1"), &template_id("base"), 512)
            .unwrap();
        fs::remove_file(harness.root().join("templates/base.json")).unwrap();
        harness.storage.ensure_base_template().unwrap();

        let removed = harness.storage.prune_layers().unwrap();

        assert!(removed.is_empty());
        assert!(harness.storage.layers().get(&old).is_ok());
    }

    #[test]
    fn test_create_rootfs_returns_overlay_of_template_layers() {
        let harness = harness_with_base();
        let id = sandbox_id("sbx1");

        let rootfs = harness
            .storage
            .create_rootfs(&id, &template_id("base"), 512)
            .unwrap();

        let dir = harness.root().join("sandboxes/sbx1");
        let expected = RootFs::Overlay {
            lower: vec![harness.base_tree()],
            upper: dir.join("upper"),
            work: dir.join("work"),
            binds: vec![BindMount {
                source: harness.storage.config().host_usr.clone(),
                target: PathBuf::from("/usr"),
                read_only: true,
            }],
        };
        assert_eq!(rootfs, expected);
    }

    #[test]
    fn test_create_rootfs_upper_is_owned_by_sandbox_root_with_mode_0755() {
        let harness = harness_with_base();

        harness
            .storage
            .create_rootfs(&sandbox_id("sbx1"), &template_id("base"), 512)
            .unwrap();

        let upper = harness.root().join("sandboxes/sbx1/upper");
        assert_eq!(mode_of(&upper), 0o755);
        assert_eq!(harness.sys.owner(&upper), Some((ROOT_ID, ROOT_ID)));
        assert!(harness.root().join("sandboxes/sbx1/work").is_dir());
    }

    #[test]
    fn test_create_rootfs_records_disk_mb() {
        let harness = harness_with_base();
        let id = sandbox_id("sbx1");

        harness
            .storage
            .create_rootfs(&id, &template_id("base"), 2048)
            .unwrap();

        let path = harness.root().join("sandboxes/sbx1/rootfs.json");
        let record = RootfsRecord::read(&path, &id).unwrap().unwrap();
        assert_eq!(record.disk_mb, 2048);
        assert_eq!(record.template, template_id("base"));
    }

    #[test]
    fn test_create_rootfs_then_rootfs_and_list_agree() {
        let harness = harness_with_base();
        let id = sandbox_id("sbx1");

        let created = harness
            .storage
            .create_rootfs(&id, &template_id("base"), 512)
            .unwrap();

        assert_eq!(harness.storage.rootfs(&id).unwrap(), created);
        assert_eq!(harness.storage.list_rootfs().unwrap(), vec![id]);
    }

    #[test]
    fn test_create_rootfs_existing_sandbox_is_already_exists() {
        let harness = harness_with_base();
        let id = sandbox_id("sbx1");
        harness
            .storage
            .create_rootfs(&id, &template_id("base"), 512)
            .unwrap();

        let err = harness
            .storage
            .create_rootfs(&id, &template_id("base"), 512)
            .unwrap_err();

        assert!(
            matches!(err, StorageError::AlreadyExists { id: ref got } if *got == id),
            "{err:?}"
        );
        assert!(harness.storage.rootfs(&id).is_ok());
    }

    #[test]
    fn test_create_rootfs_unknown_template_is_template_not_found_and_leaves_nothing() {
        let harness = harness_with_base();

        let err = harness
            .storage
            .create_rootfs(&sandbox_id("sbx1"), &template_id("nope"), 512)
            .unwrap_err();

        assert!(matches!(err, StorageError::TemplateNotFound { ref id } if id.as_str() == "nope"));
        assert!(
            fsutil::read_dir_sorted(&harness.root().join("sandboxes"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn test_create_rootfs_chown_failure_leaves_nothing() {
        let harness = harness_with_base();
        harness.sys.fail_next(SysOp::Lchown, libc::EPERM);

        let err = harness
            .storage
            .create_rootfs(&sandbox_id("sbx1"), &template_id("base"), 512)
            .unwrap_err();

        assert_eq!(err.kind(), ErrorKind::Internal);
        assert!(
            fsutil::read_dir_sorted(&harness.root().join("sandboxes"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn test_create_rootfs_template_without_layer_is_backend_error() {
        let harness = harness_with_base();
        fs::remove_dir_all(
            harness
                .root()
                .join("layers")
                .join(harness.base_layer().as_str()),
        )
        .unwrap();

        let err = harness
            .storage
            .create_rootfs(&sandbox_id("sbx1"), &template_id("base"), 512)
            .unwrap_err();

        assert!(
            matches!(
                err,
                StorageError::Backend {
                    op: "create rootfs",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            fsutil::read_dir_sorted(&harness.root().join("sandboxes"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn test_destroy_rootfs_removes_overlay_work_leftovers() {
        let harness = harness_with_base();
        let id = sandbox_id("sbx1");
        harness
            .storage
            .create_rootfs(&id, &template_id("base"), 512)
            .unwrap();
        let kernel_work = harness.root().join("sandboxes/sbx1/work/work");
        fs::create_dir_all(kernel_work.join("index")).unwrap();
        fsutil::set_mode(&kernel_work, 0).unwrap();

        harness.storage.destroy_rootfs(&id).unwrap();

        assert!(!harness.root().join("sandboxes/sbx1").exists());
        assert!(harness.storage.list_rootfs().unwrap().is_empty());
    }

    #[test]
    fn test_destroy_rootfs_unknown_sandbox_is_ok() {
        let harness = harness();

        let result = harness.storage.destroy_rootfs(&sandbox_id("ghost"));

        assert!(result.is_ok());
    }

    #[test]
    fn test_rootfs_unknown_sandbox_is_not_found() {
        let harness = harness();

        let err = harness.storage.rootfs(&sandbox_id("ghost")).unwrap_err();

        assert!(matches!(err, StorageError::NotFound { .. }), "{err:?}");
    }

    #[test]
    fn test_list_rootfs_includes_interrupted_create() {
        let harness = harness();
        fs::create_dir(harness.root().join("sandboxes/half")).unwrap();
        fs::create_dir(harness.root().join("sandboxes/.tmp")).unwrap();

        let listed = harness.storage.list_rootfs().unwrap();

        assert_eq!(listed, vec![sandbox_id("half")]);
        assert!(matches!(
            harness.storage.rootfs(&sandbox_id("half")),
            Err(StorageError::NotFound { .. })
        ));
    }

    #[test]
    fn test_templates_lists_base_after_build() {
        let harness = harness();
        let info = harness.storage.ensure_base_template().unwrap();

        let templates = harness.storage.templates().unwrap();

        assert_eq!(templates, vec![info]);
    }

    #[test]
    fn test_template_unknown_is_template_not_found() {
        let harness = harness();

        let err = harness.storage.template(&template_id("base")).unwrap_err();

        assert!(
            matches!(err, StorageError::TemplateNotFound { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn test_reopened_storage_sees_templates_layers_and_rootfs() {
        let harness = harness_with_base();
        let id = sandbox_id("sbx1");
        let created = harness
            .storage
            .create_rootfs(&id, &template_id("base"), 512)
            .unwrap();
        let template = harness.storage.template(&template_id("base")).unwrap();

        let reopened = harness.reopen();

        assert_eq!(reopened.templates().unwrap(), vec![template]);
        assert_eq!(
            reopened.layers().list().unwrap(),
            harness.storage.layers().list().unwrap()
        );
        assert_eq!(reopened.rootfs(&id).unwrap(), created);
        assert_eq!(reopened.list_rootfs().unwrap(), vec![id]);
    }

    #[test]
    fn test_with_sys_relative_root_is_rejected() {
        let config = OverlayConfig::new(PathBuf::from("relative"), ROOT_ID, ROOT_ID);

        let err =
            OverlayStorage::with_sys(Arc::new(FakeOverlaySys::default()), config).unwrap_err();

        assert!(matches!(
            err,
            OverlayError::RelativePath { field: "root", .. }
        ));
    }
}
