//! Where coppice keeps its datasets: `<root>/templates/<template>` (with `@template`),
//! `<root>/sandboxes/<sandbox>` and `<root>/volumes/<volume>`.

use std::fmt;
use std::path::{Path, PathBuf};

use coppice_core::{SandboxId, TemplateId, VolumeId};

/// The snapshot of a template dataset that sandboxes are cloned from.
pub const TEMPLATE_SNAPSHOT: &str = "template";

/// Longest dataset name ZFS accepts (`ZFS_MAX_DATASET_NAME_LEN` less the terminator).
const MAX_NAME_LEN: usize = 255;

/// A name ZFS refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a usable ZFS dataset name: {reason}")]
pub struct InvalidDatasetName {
    /// The name given.
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A validated dataset name: `pool/child/...`, each component of the characters ZFS allows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DatasetName(String);

impl DatasetName {
    /// Checks `name` against ZFS's rules for filesystem names.
    ///
    /// # Errors
    /// An empty component, a character outside `[A-Za-z0-9_.:-]`, a pool name that does not
    /// start with a letter, or a name longer than ZFS allows.
    pub fn parse(name: &str) -> Result<Self, InvalidDatasetName> {
        let invalid = |reason| InvalidDatasetName {
            name: name.to_owned(),
            reason,
        };
        if name.len() > MAX_NAME_LEN {
            return Err(invalid("longer than 255 bytes"));
        }
        if !name
            .split('/')
            .next()
            .is_some_and(|pool| pool.bytes().next().is_some_and(|b| b.is_ascii_alphabetic()))
        {
            return Err(invalid("the pool name must start with a letter"));
        }
        for component in name.split('/') {
            if component.is_empty() {
                return Err(invalid("empty component"));
            }
            if component == "." || component == ".." {
                return Err(invalid("'.' and '..' are not components"));
            }
            let allowed =
                |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-');
            if !component.bytes().all(allowed) {
                return Err(invalid(
                    "only letters, digits, '_', '.', ':' and '-' are allowed",
                ));
            }
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as ZFS prints it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The pool the dataset lives in.
    pub fn pool(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }

    /// `self/child`; ids are already restricted to characters ZFS accepts.
    fn child(&self, child: &str) -> Result<Self, InvalidDatasetName> {
        Self::parse(&format!("{}/{child}", self.0))
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The datasets and mountpoints of one coppice installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZfsLayout {
    root: DatasetName,
    mount_base: PathBuf,
}

impl ZfsLayout {
    /// Datasets under `root` (e.g. `zroot/coppice`), mounted under `mount_base`.
    pub fn new(root: DatasetName, mount_base: impl Into<PathBuf>) -> Self {
        Self {
            root,
            mount_base: mount_base.into(),
        }
    }

    /// The root dataset.
    pub fn root(&self) -> &DatasetName {
        &self.root
    }

    /// The parent of every template dataset.
    pub fn templates(&self) -> Result<DatasetName, InvalidDatasetName> {
        self.root.child("templates")
    }

    /// The parent of every sandbox dataset.
    pub fn sandboxes(&self) -> Result<DatasetName, InvalidDatasetName> {
        self.root.child("sandboxes")
    }

    /// The parent of every volume dataset.
    pub fn volumes(&self) -> Result<DatasetName, InvalidDatasetName> {
        self.root.child("volumes")
    }

    /// A template's dataset.
    pub fn template(&self, id: &TemplateId) -> Result<DatasetName, InvalidDatasetName> {
        self.templates()?.child(id.as_str())
    }

    /// The snapshot of a template that sandboxes are cloned from.
    pub fn template_snapshot(&self, id: &TemplateId) -> Result<String, InvalidDatasetName> {
        Ok(format!("{}@{TEMPLATE_SNAPSHOT}", self.template(id)?))
    }

    /// A sandbox's dataset.
    pub fn sandbox(&self, id: &SandboxId) -> Result<DatasetName, InvalidDatasetName> {
        self.sandboxes()?.child(id.as_str())
    }

    /// A volume's dataset.
    pub fn volume(&self, id: &VolumeId) -> Result<DatasetName, InvalidDatasetName> {
        self.volumes()?.child(id.as_str())
    }

    /// The block device of volume `dataset`.
    pub fn device(dataset: &DatasetName) -> PathBuf {
        Path::new("/dev/zvol").join(dataset.as_str())
    }

    /// Where `dataset` (under the root) is mounted: the mount base plus its path below the
    /// root, so that mountpoints never depend on inheritance from the pool.
    pub fn mountpoint(&self, dataset: &DatasetName) -> PathBuf {
        let below = dataset
            .as_str()
            .strip_prefix(self.root.as_str())
            .unwrap_or(dataset.as_str())
            .trim_start_matches('/');
        self.mount_base.join(Path::new(below))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_dataset_names_follow_zfs_rules() {
        for good in ["zroot", "zroot/coppice", "tank/a-b_c.d:e", "p1/x"] {
            assert!(DatasetName::parse(good).is_ok(), "{good}");
        }
        let cases = [
            ("", "the pool name must start with a letter"),
            ("1pool/x", "the pool name must start with a letter"),
            ("zroot//x", "empty component"),
            ("zroot/x/", "empty component"),
            ("zroot/../x", "'.' and '..' are not components"),
            (
                "zroot/a b",
                "only letters, digits, '_', '.', ':' and '-' are allowed",
            ),
            (
                "zroot/a@b",
                "only letters, digits, '_', '.', ':' and '-' are allowed",
            ),
            (
                "zroot/a#b",
                "only letters, digits, '_', '.', ':' and '-' are allowed",
            ),
        ];
        for (bad, reason) in cases {
            assert_eq!(DatasetName::parse(bad).unwrap_err().reason, reason, "{bad}");
        }
        let long = format!("zroot/{}", "a".repeat(250));
        assert_eq!(
            DatasetName::parse(&long).unwrap_err().reason,
            "longer than 255 bytes"
        );
    }

    #[test]
    fn test_layout_names_and_mountpoints() {
        let layout = ZfsLayout::new(
            DatasetName::parse("zroot/coppice").unwrap(),
            "/var/db/coppice",
        );
        let template: TemplateId = "base".parse().unwrap();
        let sandbox: SandboxId = "abc123".parse().unwrap();
        assert_eq!(
            layout.template(&template).unwrap().as_str(),
            "zroot/coppice/templates/base"
        );
        assert_eq!(
            layout.template_snapshot(&template).unwrap(),
            "zroot/coppice/templates/base@template"
        );
        let dataset = layout.sandbox(&sandbox).unwrap();
        assert_eq!(dataset.as_str(), "zroot/coppice/sandboxes/abc123");
        assert_eq!(dataset.pool(), "zroot");
        assert_eq!(
            layout.mountpoint(&dataset),
            PathBuf::from("/var/db/coppice/sandboxes/abc123")
        );
    }
}
