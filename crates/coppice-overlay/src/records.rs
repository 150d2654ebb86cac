//! The persisted metadata files, `templates/<id>.json` and `sandboxes/<id>/rootfs.json`, as
//! versioned records kept apart from the domain types they are converted to.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use coppice_core::storage::{BindMount, TemplateStart};
use coppice_core::{SandboxId, TemplateId};
use serde::{Deserialize, Serialize};

use crate::error::OverlayError;
use crate::fsutil;
use crate::layer::LayerId;

type Result<T> = std::result::Result<T, OverlayError>;

/// Version of the record formats this crate writes and reads.
const RECORD_VERSION: u32 = 1;

/// A host directory mounted into sandboxes, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BindRecord {
    pub(crate) source: PathBuf,
    pub(crate) target: PathBuf,
    pub(crate) read_only: bool,
}

impl BindRecord {
    pub(crate) fn from_bind(bind: &BindMount) -> Self {
        Self {
            source: bind.source.clone(),
            target: bind.target.clone(),
            read_only: bind.read_only,
        }
    }

    pub(crate) fn to_bind(&self) -> BindMount {
        BindMount {
            source: self.source.clone(),
            target: self.target.clone(),
            read_only: self.read_only,
        }
    }
}

/// `templates/<id>.json` as stored.
#[derive(Debug, Serialize, Deserialize)]
struct TemplateFile {
    version: u32,
    id: String,
    /// Topmost first.
    layers: Vec<String>,
    default_user: String,
    default_workdir: String,
    created_unix_ms: u64,
    binds: Vec<BindRecord>,
    /// For a snapshot: the sandbox it was taken of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    snapshot_of: Option<String>,
    /// The service its sandboxes start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<StartRecord>,
    /// For a template coppice builds (from sources, or from a shipped recipe): the digest of
    /// what it was built from, to tell when to build it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source_digest: Option<String>,
    /// Environment variables of its sandboxes' processes (an imported image's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    env: Vec<(String, String)>,
}

/// A template's service, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StartRecord {
    command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ready: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
}

/// A template's metadata, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateRecord {
    pub(crate) id: TemplateId,
    /// Topmost first.
    pub(crate) layers: Vec<LayerId>,
    pub(crate) default_user: String,
    pub(crate) default_workdir: String,
    pub(crate) created_at: SystemTime,
    pub(crate) binds: Vec<BindMount>,
    /// For a snapshot: the sandbox it was taken of.
    pub(crate) snapshot_of: Option<SandboxId>,
    /// The service its sandboxes start.
    pub(crate) start: Option<TemplateStart>,
    /// For a template built from sources: their digest.
    pub(crate) source_digest: Option<String>,
    /// Environment variables of its sandboxes' processes.
    pub(crate) env: Vec<(String, String)>,
}

impl TemplateRecord {
    /// Writes the record atomically to `path`.
    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        let file = TemplateFile {
            version: RECORD_VERSION,
            id: self.id.to_string(),
            layers: self.layers.iter().map(LayerId::to_string).collect(),
            default_user: self.default_user.clone(),
            default_workdir: self.default_workdir.clone(),
            created_unix_ms: fsutil::unix_ms(self.created_at),
            binds: self.binds.iter().map(BindRecord::from_bind).collect(),
            snapshot_of: self.snapshot_of.as_ref().map(ToString::to_string),
            start: self.start.as_ref().map(|start| StartRecord {
                command: start.command.clone(),
                ready: start.ready.clone(),
                user: start.user.clone(),
            }),
            source_digest: self.source_digest.clone(),
            env: self.env.clone(),
        };
        fsutil::write_json(path, &file, fsutil::Durability::HostCrash)
    }

    /// Reads the record of template `expected` from `path`; `None` if the file is missing.
    pub(crate) fn read(path: &Path, expected: &TemplateId) -> Result<Option<Self>> {
        let Some(file) = fsutil::read_json::<TemplateFile>(path)? else {
            return Ok(None);
        };
        check_version(path, file.version)?;
        let id: TemplateId = parse_id(path, &file.id)?;
        if id != *expected {
            return Err(OverlayError::MetadataMismatch {
                path: path.to_owned(),
                found: file.id,
            });
        }
        Ok(Some(Self {
            id,
            layers: file
                .layers
                .iter()
                .map(|layer| parse_id(path, layer))
                .collect::<Result<_>>()?,
            default_user: file.default_user,
            default_workdir: file.default_workdir,
            created_at: fsutil::from_unix_ms(file.created_unix_ms),
            binds: file.binds.iter().map(BindRecord::to_bind).collect(),
            snapshot_of: file
                .snapshot_of
                .as_deref()
                .map(|sandbox| parse_id(path, sandbox))
                .transpose()?,
            start: file.start.map(|start| TemplateStart {
                command: start.command,
                ready: start.ready,
                user: start.user,
            }),
            source_digest: file.source_digest,
            env: file.env,
        }))
    }
}

/// `sandboxes/<id>/rootfs.json` as stored.
#[derive(Debug, Serialize, Deserialize)]
struct RootfsFile {
    version: u32,
    sandbox: String,
    template: String,
    /// Topmost first.
    layers: Vec<String>,
    binds: Vec<BindRecord>,
    disk_mb: u32,
    created_unix_ms: u64,
}

/// What a sandbox's root filesystem was made from, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RootfsRecord {
    pub(crate) sandbox: SandboxId,
    pub(crate) template: TemplateId,
    /// Topmost first.
    pub(crate) layers: Vec<LayerId>,
    pub(crate) binds: Vec<BindMount>,
    /// Requested, not enforced (see `OverlayStorage::create_rootfs`).
    pub(crate) disk_mb: u32,
    pub(crate) created_at: SystemTime,
}

impl RootfsRecord {
    /// Writes the record atomically to `path`.
    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        let file = RootfsFile {
            version: RECORD_VERSION,
            sandbox: self.sandbox.to_string(),
            template: self.template.to_string(),
            layers: self.layers.iter().map(LayerId::to_string).collect(),
            binds: self.binds.iter().map(BindRecord::from_bind).collect(),
            disk_mb: self.disk_mb,
            created_unix_ms: fsutil::unix_ms(self.created_at),
        };
        fsutil::write_json(path, &file, fsutil::Durability::DaemonCrash)
    }

    /// Reads the record of sandbox `expected` from `path`; `None` if the file is missing.
    pub(crate) fn read(path: &Path, expected: &SandboxId) -> Result<Option<Self>> {
        let Some(file) = fsutil::read_json::<RootfsFile>(path)? else {
            return Ok(None);
        };
        check_version(path, file.version)?;
        let sandbox: SandboxId = parse_id(path, &file.sandbox)?;
        if sandbox != *expected {
            return Err(OverlayError::MetadataMismatch {
                path: path.to_owned(),
                found: file.sandbox,
            });
        }
        Ok(Some(Self {
            sandbox,
            template: parse_id(path, &file.template)?,
            layers: file
                .layers
                .iter()
                .map(|layer| parse_id(path, layer))
                .collect::<Result<_>>()?,
            binds: file.binds.iter().map(BindRecord::to_bind).collect(),
            disk_mb: file.disk_mb,
            created_at: fsutil::from_unix_ms(file.created_unix_ms),
        }))
    }
}

fn check_version(path: &Path, version: u32) -> Result<()> {
    if version == RECORD_VERSION {
        Ok(())
    } else {
        Err(OverlayError::MetadataVersion {
            path: path.to_owned(),
            version,
        })
    }
}

fn parse_id<T>(path: &Path, value: &str) -> Result<T>
where
    T: std::str::FromStr<Err = coppice_core::ParseIdError>,
{
    value.parse().map_err(|source| OverlayError::MetadataId {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn template_record() -> TemplateRecord {
        TemplateRecord {
            id: "base".parse().unwrap(),
            layers: vec!["top".parse().unwrap(), "bottom".parse().unwrap()],
            default_user: "user".to_owned(),
            default_workdir: "/home/user".to_owned(),
            created_at: UNIX_EPOCH + Duration::from_millis(42),
            binds: vec![BindMount {
                source: PathBuf::from("/usr"),
                target: PathBuf::from("/usr"),
                read_only: true,
            }],
            snapshot_of: Some("sbx1".parse().unwrap()),
            start: Some(TemplateStart {
                command: "serve".to_owned(),
                ready: Some("probe".to_owned()),
                user: Some("app:staff".to_owned()),
            }),
            source_digest: Some("abc".to_owned()),
            env: vec![("LANG".to_owned(), "C.UTF-8".to_owned())],
        }
    }

    #[test]
    fn test_template_record_write_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base.json");
        let record = template_record();
        record.write(&path).unwrap();

        let read = TemplateRecord::read(&path, &record.id).unwrap();

        assert_eq!(read, Some(record));
    }

    #[test]
    fn test_template_record_other_id_is_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.json");
        template_record().write(&path).unwrap();

        let err = TemplateRecord::read(&path, &"other".parse().unwrap()).unwrap_err();

        assert!(matches!(err, OverlayError::MetadataMismatch { found, .. } if found == "base"));
    }

    #[test]
    fn test_template_record_future_version_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base.json");
        let json = r#"{"version":2,"id":"base","layers":[],"default_user":"u",
            "default_workdir":"/","created_unix_ms":0,"binds":[]}"#;
        std::fs::write(&path, json).unwrap();

        let err = TemplateRecord::read(&path, &"base".parse().unwrap()).unwrap_err();

        assert!(matches!(
            err,
            OverlayError::MetadataVersion { version: 2, .. }
        ));
    }

    #[test]
    fn test_rootfs_record_write_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rootfs.json");
        let record = RootfsRecord {
            sandbox: "abc123".parse().unwrap(),
            template: "base".parse().unwrap(),
            layers: vec!["bottom".parse().unwrap()],
            binds: Vec::new(),
            disk_mb: 512,
            created_at: UNIX_EPOCH + Duration::from_millis(7),
        };
        record.write(&path).unwrap();

        let read = RootfsRecord::read(&path, &record.sandbox).unwrap();

        assert_eq!(read, Some(record));
    }

    #[test]
    fn test_rootfs_record_bad_layer_id_is_metadata_id_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rootfs.json");
        let json = r#"{"version":1,"sandbox":"abc","template":"base","layers":["../x"],
            "binds":[],"disk_mb":1,"created_unix_ms":0}"#;
        std::fs::write(&path, json).unwrap();

        let err = RootfsRecord::read(&path, &"abc".parse().unwrap()).unwrap_err();

        assert!(matches!(err, OverlayError::MetadataId { .. }));
    }
}
