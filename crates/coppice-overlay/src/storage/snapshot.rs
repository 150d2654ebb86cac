//! Snapshots as templates: a sandbox's upper directory copied into a new layer on top of the
//! sandbox's own layers, recorded as a template that new sandboxes start from, and template
//! deletion (the layers stay while any sandbox still stands on them).

use std::fs;
use std::io;
use std::time::SystemTime;

use coppice_core::storage::TemplateInfo;
use coppice_core::{SandboxId, TemplateId};

use super::{OverlayStorage, ROOTFS_FILE, Result, UPPER_DIR};
use crate::base;
use crate::clone;
use crate::error::OverlayError;
use crate::fsutil;
use crate::layer::LayerId;
use crate::records::{RootfsRecord, TemplateRecord};

/// How the ids of snapshot layers begin (`LayerId::generate` adds the dash).
pub(super) const LAYER_PREFIX: &str = "snap";

impl OverlayStorage {
    /// Copies sandbox `id`'s upper directory into a new layer and records template
    /// `snapshot` as that layer over the sandbox's own. The caller keeps the sandbox still.
    pub(super) fn snapshot(&self, id: &SandboxId, snapshot: &TemplateId) -> Result<TemplateInfo> {
        let _guard = self.lock_builds();
        let path = self.template_path(snapshot);
        if path.exists() {
            return Err(OverlayError::TemplateExists {
                template: snapshot.clone(),
            });
        }
        let dir = self.sandbox_dir(id);
        let rootfs = RootfsRecord::read(&dir.join(ROOTFS_FILE), id)?.ok_or_else(|| {
            OverlayError::SandboxNotFound {
                sandbox: id.clone(),
            }
        })?;
        // The template the sandbox came from gives the defaults; it may be gone by now.
        let source = TemplateRecord::read(&self.template_path(&rootfs.template), &rootfs.template)
            .ok()
            .flatten();
        let created_at = fsutil::truncate_to_ms(SystemTime::now());
        let layer = LayerId::generate(LAYER_PREFIX, created_at, self.random_u32()?);
        let pending = self.layers.begin(layer, rootfs.layers.first().cloned())?;
        clone::clone_into(&*self.sys, &dir.join(UPPER_DIR), &pending.tree())?;
        let manifest =
            self.layers
                .commit(pending, &format!("snapshot of sandbox {id}"), created_at)?;
        let record = TemplateRecord {
            id: snapshot.clone(),
            layers: std::iter::once(manifest.id.clone())
                .chain(rootfs.layers.iter().cloned())
                .collect(),
            default_user: source
                .as_ref()
                .map_or_else(|| base::DEFAULT_USER.to_owned(), |t| t.default_user.clone()),
            default_workdir: source.as_ref().map_or_else(
                || base::DEFAULT_WORKDIR.to_owned(),
                |t| t.default_workdir.clone(),
            ),
            created_at: manifest.created_at,
            binds: rootfs.binds.clone(),
            snapshot_of: Some(id.clone()),
            // Its sandboxes boot afresh, so they start the source template's service too.
            start: source.as_ref().and_then(|t| t.start.clone()),
            source_digest: None,
            env: source.as_ref().map(|t| t.env.clone()).unwrap_or_default(),
        };
        if let Err(error) = record.write(&path) {
            // Nothing refers to the new layer yet: take it away again.
            if let Err(cleanup) = self.prune_layers_locked() {
                tracing::warn!(error = %cleanup, "cannot remove the layer of a failed snapshot");
            }
            return Err(error);
        }
        tracing::info!(sandbox_id = %id, template = %snapshot, layer = %manifest.id, size_bytes = manifest.size_bytes, "snapshot taken");
        self.template_info(&record)
    }

    /// Removes template `id`; layers no other template or sandbox uses go with it.
    pub(super) fn delete_template(&self, id: &TemplateId) -> Result<()> {
        let _guard = self.lock_builds();
        // A stand-in made from sources is coppice's; a recipe's build may go (a shipped one
        // comes back at the next start).
        let built_from_sources = TemplateRecord::read(&self.template_path(id), id)
            .ok()
            .flatten()
            .and_then(|record| record.source_digest)
            .is_some_and(|digest| !digest.starts_with(coppice_core::recipe::RECIPE_DIGEST_PREFIX));
        if id.as_str() == base::BASE_TEMPLATE || built_from_sources {
            return Err(OverlayError::BuiltinTemplate {
                template: id.clone(),
            });
        }
        let path = self.template_path(id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(OverlayError::TemplateNotFound {
                    template: id.clone(),
                });
            }
            Err(source) => return Err(OverlayError::Remove { path, source }),
        }
        if let Err(error) = self.prune_layers_locked() {
            tracing::warn!(template = %id, error = %error, "cannot remove unused layers");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use coppice_core::ErrorKind;
    use coppice_core::storage::{RootFs, Storage};

    use super::super::tests::{Harness, harness_with_base, sandbox_id, template_id};

    /// Storage with the base template and one sandbox, `src1`, made from it.
    fn with_source() -> (Harness, coppice_core::SandboxId) {
        let harness = harness_with_base();
        let source = sandbox_id("src1");
        harness
            .storage
            .create_rootfs(&source, &template_id("base"), 512)
            .unwrap();
        (harness, source)
    }

    fn upper(rootfs: &RootFs) -> std::path::PathBuf {
        match rootfs {
            RootFs::Overlay { upper, .. } => upper.clone(),
            RootFs::Directory { path, .. } => path.clone(),
            RootFs::Disk { device } => device.clone(),
        }
    }

    fn lower(rootfs: &RootFs) -> Vec<std::path::PathBuf> {
        match rootfs {
            RootFs::Overlay { lower, .. } => lower.clone(),
            RootFs::Directory { .. } | RootFs::Disk { .. } => Vec::new(),
        }
    }

    #[test]
    fn test_snapshot_is_a_template_of_the_upper_over_the_sandbox_layers() {
        let harness = harness_with_base();
        let source = sandbox_id("src1");
        let rootfs = harness
            .storage
            .create_rootfs(&source, &template_id("base"), 512)
            .unwrap();
        fs::create_dir_all(upper(&rootfs).join("home/user")).unwrap();
        fs::write(upper(&rootfs).join("home/user/work.txt"), "written").unwrap();

        let snapshot = harness
            .storage
            .snapshot_rootfs(&source, &template_id("snap1"))
            .unwrap();

        assert_eq!(snapshot.snapshot_of, Some(source.clone()));
        assert_eq!(snapshot.default_user, "user");
        let fork = harness
            .storage
            .create_rootfs(&sandbox_id("fork1"), &snapshot.id, 512)
            .unwrap();
        let layers = lower(&fork);
        assert_eq!(layers.len(), 2, "{layers:?}");
        assert_eq!(
            layers[1],
            harness.storage.layers().tree_dir(&harness.base_layer())
        );
        assert_eq!(
            fs::read_to_string(layers[0].join("home/user/work.txt")).unwrap(),
            "written"
        );
        // The source writes on; the snapshot does not change.
        fs::write(upper(&rootfs).join("home/user/work.txt"), "later").unwrap();
        assert_eq!(
            fs::read_to_string(layers[0].join("home/user/work.txt")).unwrap(),
            "written"
        );
        assert!(
            fs::read_dir(upper(&fork))
                .unwrap()
                .all(|e| e.unwrap().file_name() == "etc")
        );
    }

    #[test]
    fn test_every_rootfs_gets_its_own_machine_id() {
        let harness = harness_with_base();
        let read = |id: &str| {
            let rootfs = harness
                .storage
                .create_rootfs(&sandbox_id(id), &template_id("base"), 512)
                .unwrap();
            fs::read_to_string(upper(&rootfs).join("etc/machine-id")).unwrap()
        };
        let (first, second) = (read("one"), read("two"));
        assert_eq!(first.trim().len(), 32);
        assert_ne!(first, second);
    }

    #[test]
    fn test_snapshot_refuses_taken_names_and_unknown_sandboxes() {
        let (harness, source) = with_source();
        let taken = harness
            .storage
            .snapshot_rootfs(&source, &template_id("base"))
            .unwrap_err();
        assert_eq!(taken.kind(), ErrorKind::AlreadyExists);
        let unknown = harness
            .storage
            .snapshot_rootfs(&sandbox_id("nobody"), &template_id("snap1"))
            .unwrap_err();
        assert_eq!(unknown.kind(), ErrorKind::NotFound);
        let failed = harness.storage.layers().list().unwrap().len();
        assert_eq!(failed, 1, "no layer is left by a refused snapshot");
    }

    #[test]
    fn test_deleting_a_snapshot_keeps_layers_its_sandboxes_use() {
        let (harness, source) = with_source();
        let unused = harness
            .storage
            .snapshot_rootfs(&source, &template_id("unused"))
            .unwrap();
        let used = harness
            .storage
            .snapshot_rootfs(&source, &template_id("used"))
            .unwrap();
        let fork = harness
            .storage
            .create_rootfs(&sandbox_id("fork1"), &used.id, 512)
            .unwrap();

        Storage::delete_template(&harness.storage, &unused.id).unwrap();
        Storage::delete_template(&harness.storage, &used.id).unwrap();

        assert_eq!(
            harness.storage.layers().list().unwrap().len(),
            2,
            "base and the used layer"
        );
        assert!(lower(&fork).iter().all(|layer| layer.is_dir()));
        Storage::destroy_rootfs(&harness.storage, &sandbox_id("fork1")).unwrap();
        assert_eq!(
            harness.storage.layers().list().unwrap().len(),
            1,
            "the last fork takes the snapshot's layer with it"
        );
        let again = Storage::delete_template(&harness.storage, &used.id).unwrap_err();
        assert_eq!(again.kind(), ErrorKind::NotFound);
        let base = Storage::delete_template(&harness.storage, &template_id("base")).unwrap_err();
        assert_eq!(base.kind(), ErrorKind::Invalid);
    }
}
