//! Templates built from sources: files laid over the base template in a layer of their own,
//! and the service their sandboxes start (the code interpreter's template is one). Built when
//! missing or when the sources changed, and never deleted by hand: coppice builds them.

use std::path::{Component, Path};
use std::time::SystemTime;

use coppice_core::TemplateId;
use coppice_core::storage::{TemplateInfo, TemplateStart};
use sha2::{Digest, Sha256};

use super::{OverlayStorage, Result};
use crate::base;
use crate::error::OverlayError;
use crate::fsutil;
use crate::layer::LayerId;
use crate::records::TemplateRecord;

/// A template built from `files` over the base template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSource {
    /// Its id.
    pub id: TemplateId,
    /// What its layer holds, for the layer's manifest.
    pub description: String,
    /// The files, owned by sandbox root.
    pub files: Vec<SourceFile>,
    /// The service its sandboxes start, if any.
    pub start: Option<TemplateStart>,
}

/// One file of a [`TemplateSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Its path inside the sandbox, relative to the root (`opt/...`).
    pub path: String,
    /// Its contents.
    pub contents: Vec<u8>,
    /// Its permission bits.
    pub mode: u32,
}

impl TemplateSource {
    /// SHA-256 of everything the template is built from, lowercase hex.
    pub fn digest(&self) -> String {
        let mut hash = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        };
        for file in &self.files {
            field(file.path.as_bytes());
            field(&file.contents);
            field(&file.mode.to_le_bytes());
        }
        if let Some(start) = &self.start {
            field(start.command.as_bytes());
            field(start.ready.as_deref().unwrap_or("").as_bytes());
        }
        hash.finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

impl OverlayStorage {
    /// Makes sure template `source.id` exists and was built from exactly `source`, building
    /// it (and the base template under it) if not; returns it. Sandboxes made from an earlier
    /// build keep its layer until they are gone.
    ///
    /// # Errors
    /// A source path that is not a plain relative path; I/O failures while building (the
    /// previous build, if any, stays in place).
    pub fn ensure_template(&self, source: &TemplateSource) -> Result<TemplateInfo> {
        let base_info = self.ensure_base_template()?;
        let _guard = self.lock_builds();
        let digest = source.digest();
        let path = self.template_path(&source.id);
        if let Some(record) = TemplateRecord::read(&path, &source.id)? {
            // A template of that name not built from sources is someone's (a snapshot named
            // so): it is never replaced.
            let Some(built_from) = record.source_digest.as_deref() else {
                return Err(OverlayError::TemplateExists {
                    template: source.id.clone(),
                });
            };
            // A build from the template's shipped recipe supersedes the sources, which
            // stand in for it until it is built.
            let superseded = built_from.starts_with(coppice_core::recipe::RECIPE_DIGEST_PREFIX);
            if (built_from == digest || superseded)
                && let Ok(info) = self.template_info(&record)
            {
                return Ok(info);
            }
        }
        let base_record = TemplateRecord::read(&self.template_path(&base_info.id), &base_info.id)?
            .ok_or_else(|| OverlayError::TemplateNotFound {
                template: base_info.id.clone(),
            })?;
        let created_at = fsutil::truncate_to_ms(SystemTime::now());
        let layer = LayerId::generate(source.id.as_str(), created_at, self.random_u32()?);
        let pending = self
            .layers
            .begin(layer, base_record.layers.first().cloned())?;
        let tree = pending.tree();
        self.ids.root.apply(&*self.sys, &tree)?;
        fsutil::set_mode(&tree, 0o755)?;
        for file in &source.files {
            self.write_source_file(&tree, file)?;
        }
        let manifest = self
            .layers
            .commit(pending, &source.description, created_at)?;
        let record = TemplateRecord {
            id: source.id.clone(),
            layers: std::iter::once(manifest.id.clone())
                .chain(base_record.layers.iter().cloned())
                .collect(),
            default_user: base_record.default_user.clone(),
            default_workdir: base_record.default_workdir.clone(),
            created_at: manifest.created_at,
            binds: base_record.binds.clone(),
            snapshot_of: None,
            start: source.start.clone(),
            source_digest: Some(digest),
            env: base_record.env.clone(),
        };
        record.write(&path)?;
        tracing::info!(template = %source.id, layer = %manifest.id, size_bytes = manifest.size_bytes, "template built from its sources");
        // The previous build's layer goes unless a sandbox still stands on it.
        if let Err(error) = self.prune_layers_locked() {
            tracing::warn!(error = %error, "cannot remove unused layers");
        }
        self.template_info(&record)
    }

    fn write_source_file(&self, tree: &Path, file: &SourceFile) -> Result<()> {
        let relative = Path::new(&file.path);
        if relative.as_os_str().is_empty()
            || !relative
                .components()
                .all(|component| matches!(component, Component::Normal(_)))
        {
            return Err(OverlayError::SourcePath {
                path: file.path.clone(),
            });
        }
        let mut dir = tree.to_path_buf();
        if let Some(parent) = relative.parent() {
            for component in parent.components() {
                dir.push(component);
                if !dir.is_dir() {
                    fsutil::create_dir(&dir)?;
                    self.ids.root.apply(&*self.sys, &dir)?;
                    fsutil::set_mode(&dir, 0o755)?;
                }
            }
        }
        let target = tree.join(relative);
        base::write_new(&target, &file.contents).map_err(|source| OverlayError::WriteFile {
            path: target.clone(),
            source,
        })?;
        self.ids.root.apply(&*self.sys, &target)?;
        fsutil::set_mode(&target, file.mode & 0o755)
    }
}
