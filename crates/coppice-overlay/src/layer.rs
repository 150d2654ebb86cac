//! Layers, the read-only directory trees stacked as overlayfs lower directories, and the
//! [`LayerRegistry`] that allocates, commits, looks up and removes them.
//!
//! # On-disk layout
//! ```text
//! layers/
//! ├── <layer-id>/
//! │   ├── manifest.json     # id, parent, created (unix ms), size in bytes, description
//! │   └── tree/             # the directory overlayfs uses as a lower dir
//! └── .staging-<layer-id>/  # a layer being built; renamed to <layer-id>/ when complete
//! ```
//! A layer directory exists only once it is complete: it is built under a staging name, its
//! manifest is written last, and the whole directory is renamed into place. Staging leftovers
//! from a crash are found and removed by [`LayerRegistry::remove_incomplete`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::SystemTime;

use coppice_core::ParseIdError;
use serde::{Deserialize, Serialize};

use crate::error::OverlayError;
use crate::fsutil;

type Result<T> = std::result::Result<T, OverlayError>;

/// Version of the manifest format this crate writes and reads.
const MANIFEST_VERSION: u32 = 1;
/// File name of a layer's manifest.
const MANIFEST_FILE: &str = "manifest.json";
/// Directory name of a layer's tree.
const TREE_DIR: &str = "tree";
/// Name prefix of a layer under construction. Layer ids never start with a dot.
const STAGING_PREFIX: &str = ".staging-";
/// Longest prefix kept by [`LayerId::generate`], so generated ids stay under the limit.
const GENERATED_PREFIX_MAX_LEN: usize = 40;

/// The identity of a layer: lowercase ASCII letters, digits and `-`, starting with a letter
/// or digit, so that it is safe as a file name and short in overlayfs mount options.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerId(String);

impl LayerId {
    /// Longest accepted layer id.
    pub const MAX_LEN: usize = 80;

    /// A fresh id of the form `<prefix>-<created ms, hex>-<entropy, hex>`.
    ///
    /// The prefix is sanitised (lowercased; characters outside the allowed set become `-`;
    /// cut to 40 characters); an empty result becomes `layer`. Pass random `entropy` so that
    /// two layers created in the same millisecond still differ.
    pub fn generate(prefix: &str, created_at: SystemTime, entropy: u32) -> Self {
        let mut clean: String = prefix
            .chars()
            .take(GENERATED_PREFIX_MAX_LEN)
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_lowercase() || c.is_ascii_digit() {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let trimmed_len = clean.trim_start_matches('-').len();
        clean.drain(..clean.len() - trimmed_len);
        if clean.is_empty() {
            clean.push_str("layer");
        }
        let ms = fsutil::unix_ms(created_at);
        Self(format!("{clean}-{ms:x}-{entropy:08x}"))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for LayerId {
    type Err = ParseIdError;

    fn from_str(value: &str) -> std::result::Result<Self, Self::Err> {
        const KIND: &str = "layer";
        if value.is_empty() {
            return Err(ParseIdError::Empty { kind: KIND });
        }
        if value.len() > Self::MAX_LEN {
            return Err(ParseIdError::TooLong {
                kind: KIND,
                len: value.len(),
                max: Self::MAX_LEN,
            });
        }
        let first_ok = value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let all_ok = value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !first_ok || !all_ok {
            return Err(ParseIdError::BadCharacter {
                kind: KIND,
                value: value.chars().take(Self::MAX_LEN).collect(),
                allowed: "lowercase letters, digits and '-', starting with a letter or digit",
            });
        }
        Ok(Self(value.to_owned()))
    }
}

impl fmt::Display for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LayerId({})", self.0)
    }
}

/// What the registry records about a committed layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerManifest {
    /// The layer.
    pub id: LayerId,
    /// The layer directly below this one, if it is stacked on another.
    pub parent: Option<LayerId>,
    /// When the layer was committed (millisecond precision).
    pub created_at: SystemTime,
    /// Summed size of the regular files in the layer's tree.
    pub size_bytes: u64,
    /// A human description of where the layer came from.
    pub description: String,
}

/// `manifest.json` as stored.
#[derive(Debug, Serialize, Deserialize)]
struct ManifestRecord {
    version: u32,
    id: String,
    parent: Option<String>,
    created_unix_ms: u64,
    size_bytes: u64,
    description: String,
}

impl ManifestRecord {
    fn from_manifest(manifest: &LayerManifest) -> Self {
        Self {
            version: MANIFEST_VERSION,
            id: manifest.id.to_string(),
            parent: manifest.parent.as_ref().map(LayerId::to_string),
            created_unix_ms: fsutil::unix_ms(manifest.created_at),
            size_bytes: manifest.size_bytes,
            description: manifest.description.clone(),
        }
    }

    fn into_manifest(self, path: &Path) -> Result<LayerManifest> {
        if self.version != MANIFEST_VERSION {
            return Err(OverlayError::MetadataVersion {
                path: path.to_owned(),
                version: self.version,
            });
        }
        let parse = |value: &str| {
            value
                .parse::<LayerId>()
                .map_err(|source| OverlayError::MetadataId {
                    path: path.to_owned(),
                    source,
                })
        };
        Ok(LayerManifest {
            id: parse(&self.id)?,
            parent: self.parent.as_deref().map(parse).transpose()?,
            created_at: fsutil::from_unix_ms(self.created_unix_ms),
            size_bytes: self.size_bytes,
            description: self.description,
        })
    }
}

/// A layer being built. Fill [`PendingLayer::tree`], then hand it to
/// [`LayerRegistry::commit`]; dropping it uncommitted removes everything written so far.
#[derive(Debug)]
pub struct PendingLayer {
    id: LayerId,
    parent: Option<LayerId>,
    staging: PathBuf,
    committed: bool,
}

impl PendingLayer {
    /// The id the layer will have once committed.
    pub fn id(&self) -> &LayerId {
        &self.id
    }

    /// The layer below this one, if any.
    pub fn parent(&self) -> Option<&LayerId> {
        self.parent.as_ref()
    }

    /// The directory to fill; it becomes the layer's tree.
    pub fn tree(&self) -> PathBuf {
        self.staging.join(TREE_DIR)
    }
}

impl Drop for PendingLayer {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Err(err) = fsutil::remove_tree(&self.staging) {
            // Nothing can be returned from a drop; `remove_incomplete` retries at the next
            // start, so this is handled and logged once here.
            tracing::warn!(layer = %self.id, error = %err, "cannot remove abandoned layer");
        }
    }
}

/// Allocates layer directories, records their manifests and looks them up.
///
/// All methods block on filesystem I/O.
#[derive(Debug, Clone)]
pub struct LayerRegistry {
    dir: PathBuf,
}

impl LayerRegistry {
    /// Opens the registry in `dir`, creating the directory if needed.
    ///
    /// # Errors
    /// `CreateDir`.
    pub fn open(dir: PathBuf) -> Result<Self> {
        fsutil::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// The directory holding the layers.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tree directory of layer `id` (whether or not it exists).
    pub fn tree_dir(&self, id: &LayerId) -> PathBuf {
        self.layer_dir(id).join(TREE_DIR)
    }

    fn layer_dir(&self, id: &LayerId) -> PathBuf {
        self.dir.join(id.as_str())
    }

    fn staging_dir(&self, id: &LayerId) -> PathBuf {
        self.dir.join(format!("{STAGING_PREFIX}{id}"))
    }

    /// Starts a new layer `id` stacked on `parent`, with an empty tree.
    ///
    /// # Errors
    /// `LayerExists` if the id is taken or being built; `LayerNotFound` if the parent does not
    /// exist; `CreateDir`.
    pub fn begin(&self, id: LayerId, parent: Option<LayerId>) -> Result<PendingLayer> {
        if self.layer_dir(&id).exists() {
            return Err(OverlayError::LayerExists { layer: id });
        }
        if let Some(parent) = &parent {
            self.get(parent)?;
        }
        let staging = self.staging_dir(&id);
        if let Err(err) = fsutil::create_dir(&staging) {
            if err
                .io_source()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::AlreadyExists)
            {
                return Err(OverlayError::LayerExists { layer: id });
            }
            return Err(err);
        }
        let pending = PendingLayer {
            id,
            parent,
            staging,
            committed: false,
        };
        fsutil::create_dir(&pending.tree())?;
        Ok(pending)
    }

    /// Completes `pending`: measures its tree, writes its manifest and renames it into place.
    /// `created_at` is kept with millisecond precision.
    ///
    /// # Errors
    /// `LayerExists` if a layer with the same id appeared meanwhile; I/O failures. On error the
    /// staging directory is removed.
    pub fn commit(
        &self,
        mut pending: PendingLayer,
        description: &str,
        created_at: SystemTime,
    ) -> Result<LayerManifest> {
        let size_bytes = fsutil::tree_size(&pending.tree())?;
        let manifest = LayerManifest {
            id: pending.id.clone(),
            parent: pending.parent.clone(),
            created_at: fsutil::truncate_to_ms(created_at),
            size_bytes,
            description: description.to_owned(),
        };
        let manifest_path = pending.staging.join(MANIFEST_FILE);
        fsutil::write_json(
            &manifest_path,
            &ManifestRecord::from_manifest(&manifest),
            fsutil::Durability::HostCrash,
        )?;
        let target = self.layer_dir(&pending.id);
        // rename(2) would silently replace an empty directory, so check first.
        if target.exists() {
            return Err(OverlayError::LayerExists {
                layer: pending.id.clone(),
            });
        }
        std::fs::rename(&pending.staging, &target).map_err(|source| OverlayError::Rename {
            from: pending.staging.clone(),
            to: target.clone(),
            source,
        })?;
        pending.committed = true;
        tracing::debug!(layer = %manifest.id, size_bytes, "layer committed");
        Ok(manifest)
    }

    /// The manifest of a committed layer.
    ///
    /// # Errors
    /// `LayerNotFound` if the layer or its tree is missing; a malformed manifest.
    pub fn get(&self, id: &LayerId) -> Result<LayerManifest> {
        let path = self.layer_dir(id).join(MANIFEST_FILE);
        let record: ManifestRecord = fsutil::read_json(&path)?
            .ok_or_else(|| OverlayError::LayerNotFound { layer: id.clone() })?;
        let manifest = record.into_manifest(&path)?;
        if manifest.id != *id {
            return Err(OverlayError::MetadataMismatch {
                path,
                found: manifest.id.to_string(),
            });
        }
        if !self.tree_dir(id).is_dir() {
            return Err(OverlayError::LayerNotFound { layer: id.clone() });
        }
        Ok(manifest)
    }

    /// Every committed layer, sorted by id. Incomplete directories are skipped.
    ///
    /// # Errors
    /// `ReadDir`; a malformed manifest.
    pub fn list(&self) -> Result<Vec<LayerManifest>> {
        let mut layers = Vec::new();
        for id in self.layer_ids()? {
            match self.get(&id) {
                Ok(manifest) => layers.push(manifest),
                Err(OverlayError::LayerNotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(layers)
    }

    /// Ids of the directories named like layers, complete or not.
    fn layer_ids(&self) -> Result<Vec<LayerId>> {
        Ok(fsutil::read_dir_sorted(&self.dir)?
            .iter()
            .filter(|path| path.is_dir())
            .filter_map(|path| path.file_name()?.to_str()?.parse().ok())
            .collect())
    }

    /// Removes a layer. Removing a missing layer succeeds. The caller makes sure that no
    /// template, sandbox or other layer still uses it.
    ///
    /// # Errors
    /// `Remove`.
    pub fn remove(&self, id: &LayerId) -> Result<()> {
        if fsutil::remove_tree(&self.layer_dir(id))? {
            tracing::debug!(layer = %id, "layer removed");
        }
        Ok(())
    }

    /// Removes staging directories and layer directories without a manifest, the leftovers of
    /// a build that crashed. Returns what was removed. Call it when no layer is being built.
    ///
    /// # Errors
    /// `ReadDir`, `Remove`.
    pub fn remove_incomplete(&self) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for path in fsutil::read_dir_sorted(&self.dir)? {
            let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
                continue;
            };
            let staging = name.starts_with(STAGING_PREFIX);
            let incomplete = name.parse::<LayerId>().is_ok()
                && path.is_dir()
                && !path.join(MANIFEST_FILE).exists();
            if staging || incomplete {
                fsutil::remove_tree(&path)?;
                removed.push(path);
            }
        }
        if !removed.is_empty() {
            tracing::info!(count = removed.len(), "removed incomplete layers");
        }
        Ok(removed)
    }

    /// Removes every committed layer that is neither in `referenced` nor an ancestor of one.
    /// Returns the removed ids. Call it when no layer is being built.
    ///
    /// # Errors
    /// `ReadDir`, `Remove`, a malformed manifest.
    pub fn remove_unreferenced(&self, referenced: &BTreeSet<LayerId>) -> Result<Vec<LayerId>> {
        let parents: BTreeMap<LayerId, Option<LayerId>> = self
            .list()?
            .into_iter()
            .map(|manifest| (manifest.id, manifest.parent))
            .collect();
        let mut keep = BTreeSet::new();
        for id in referenced {
            let mut next = Some(id.clone());
            while let Some(id) = next {
                if !keep.insert(id.clone()) {
                    break;
                }
                next = parents.get(&id).cloned().flatten();
            }
        }
        let mut removed = Vec::new();
        for id in parents.into_keys().filter(|id| !keep.contains(id)) {
            self.remove(&id)?;
            removed.push(id);
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn layer_id(value: &str) -> LayerId {
        value.parse().unwrap()
    }

    fn created() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_700_000_000_000)
    }

    fn commit_layer(registry: &LayerRegistry, id: &str, parent: Option<&str>) -> LayerManifest {
        let pending = registry.begin(layer_id(id), parent.map(layer_id)).unwrap();
        fs::write(pending.tree().join("file"), b"12345").unwrap();
        registry.commit(pending, "test layer", created()).unwrap()
    }

    #[test]
    fn test_layer_id_parse_table() {
        let cases: &[(&str, bool)] = &[
            ("base-1", true),
            ("0abc", true),
            ("", false),
            ("-base", false),
            (".staging-x", false),
            ("Base", false),
            ("a_b", false),
            ("a/b", false),
            (&"a".repeat(80), true),
            (&"a".repeat(81), false),
        ];
        for (input, ok) in cases {
            assert_eq!(input.parse::<LayerId>().is_ok(), *ok, "{input:?}");
        }
    }

    #[test]
    fn test_layer_id_generate_sanitises_prefix() {
        let id = LayerId::generate("_Py3.11", created(), 0xab);

        assert_eq!(id.as_str(), "py3-11-18bcfe56800-000000ab");
    }

    #[test]
    fn test_layer_id_generate_long_prefix_parses() {
        let id = LayerId::generate(&"t".repeat(64), created(), u32::MAX);

        assert_eq!(id.as_str().parse::<LayerId>().unwrap(), id);
    }

    #[test]
    fn test_registry_commit_then_get_returns_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let registry = LayerRegistry::open(dir.path().join("layers")).unwrap();

        let committed = commit_layer(&registry, "one", None);

        let fetched = registry.get(&layer_id("one")).unwrap();
        assert_eq!(fetched, committed);
        assert_eq!(fetched.size_bytes, 5);
        assert_eq!(fetched.created_at, created());
        assert!(registry.tree_dir(&layer_id("one")).join("file").is_file());
    }

    #[test]
    fn test_registry_reopened_lists_committed_layers() {
        let dir = tempfile::tempdir().unwrap();
        let registry = LayerRegistry::open(dir.path().join("layers")).unwrap();
        commit_layer(&registry, "one", None);
        commit_layer(&registry, "two", Some("one"));

        let reopened = LayerRegistry::open(dir.path().join("layers")).unwrap();

        let listed = reopened.list().unwrap();
        let ids: Vec<&str> = listed.iter().map(|manifest| manifest.id.as_str()).collect();
        assert_eq!(ids, ["one", "two"]);
        assert_eq!(listed[1].parent, Some(layer_id("one")));
    }

    #[test]
    fn test_registry_dropped_pending_layer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let registry = LayerRegistry::open(dir.path().join("layers")).unwrap();
        let pending = registry.begin(layer_id("gone"), None).unwrap();
        fs::write(pending.tree().join("file"), b"x").unwrap();

        drop(pending);

        assert!(fsutil::read_dir_sorted(registry.dir()).unwrap().is_empty());
    }

    #[test]
    fn test_registry_begin_existing_id_is_layer_exists() {
        let dir = tempfile::tempdir().unwrap();
        let registry = LayerRegistry::open(dir.path().join("layers")).unwrap();
        commit_layer(&registry, "one", None);

        let err = registry.begin(layer_id("one"), None).unwrap_err();

        assert!(matches!(err, OverlayError::LayerExists { .. }));
    }

    #[test]
    fn test_registry_begin_missing_parent_is_layer_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let registry = LayerRegistry::open(dir.path().join("layers")).unwrap();

        let err = registry
            .begin(layer_id("child"), Some(layer_id("absent")))
            .unwrap_err();

        assert!(matches!(err, OverlayError::LayerNotFound { layer } if layer.as_str() == "absent"));
    }

    #[test]
    fn test_registry_get_missing_layer_is_layer_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let registry = LayerRegistry::open(dir.path().join("layers")).unwrap();

        let err = registry.get(&layer_id("absent")).unwrap_err();

        assert!(matches!(err, OverlayError::LayerNotFound { .. }));
    }

    #[test]
    fn test_registry_remove_incomplete_removes_staging_and_manifestless_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let registry = LayerRegistry::open(dir.path().join("layers")).unwrap();
        commit_layer(&registry, "kept", None);
        fs::create_dir_all(registry.dir().join(".staging-crashed/tree/etc")).unwrap();
        fs::create_dir_all(registry.dir().join("half/tree")).unwrap();

        let removed = registry.remove_incomplete().unwrap();

        assert_eq!(removed.len(), 2);
        let left = fsutil::read_dir_sorted(registry.dir()).unwrap();
        assert_eq!(left, vec![registry.dir().join("kept")]);
    }

    #[test]
    fn test_registry_remove_unreferenced_keeps_referenced_and_ancestors() {
        let dir = tempfile::tempdir().unwrap();
        let registry = LayerRegistry::open(dir.path().join("layers")).unwrap();
        commit_layer(&registry, "bottom", None);
        commit_layer(&registry, "top", Some("bottom"));
        commit_layer(&registry, "orphan", None);

        let removed = registry
            .remove_unreferenced(&BTreeSet::from([layer_id("top")]))
            .unwrap();

        assert_eq!(removed, vec![layer_id("orphan")]);
        let ids: Vec<LayerId> = registry.list().unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![layer_id("bottom"), layer_id("top")]);
    }

    #[test]
    fn test_registry_manifest_of_other_layer_is_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let registry = LayerRegistry::open(dir.path().join("layers")).unwrap();
        commit_layer(&registry, "one", None);
        fs::rename(registry.dir().join("one"), registry.dir().join("two")).unwrap();

        let err = registry.get(&layer_id("two")).unwrap_err();

        assert!(matches!(err, OverlayError::MetadataMismatch { .. }));
    }
}
