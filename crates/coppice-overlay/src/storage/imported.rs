//! Templates imported from OCI images: the image's layers applied, in order, into one layer
//! of the template's own (no host directories bound over it), and the image's environment,
//! user, working directory and entrypoint kept in the template's record.

use std::path::Path;
use std::time::SystemTime;

use coppice_core::TemplateId;
use coppice_core::storage::{StorageError, TemplateInfo, TemplateStart};
use coppice_core::volume::IdMap;
use coppice_oci::{ImageConfig, OciError, OciErrorKind};

use super::OverlayStorage;
use crate::error::OverlayError;
use crate::fsutil;
use crate::layer::LayerId;
use crate::records::TemplateRecord;

/// The user of an image that names none.
const IMAGE_DEFAULT_USER: &str = "root";
/// The working directory of an image that names none.
const IMAGE_DEFAULT_WORKDIR: &str = "/";

impl OverlayStorage {
    pub(super) fn import_image_impl(
        &self,
        id: &TemplateId,
        image: &Path,
        ids: IdMap,
    ) -> Result<TemplateInfo, StorageError> {
        let _guard = self.lock_builds();
        let overlay = |error: OverlayError| error.into_storage("import image");
        let path = self.template_path(id);
        if TemplateRecord::read(&path, id).map_err(overlay)?.is_some() {
            return Err(StorageError::TemplateExists { id: id.clone() });
        }
        let created_at = fsutil::truncate_to_ms(SystemTime::now());
        let layer = LayerId::generate(id.as_str(), created_at, self.random_u32().map_err(overlay)?);
        // Dropped unfinished, the pending layer is removed: a refused or failed import
        // leaves nothing behind, and no template is listed.
        let pending = self.layers.begin(layer, None).map_err(overlay)?;
        let tree = pending.tree();
        self.ids.root.apply(&*self.sys, &tree).map_err(overlay)?;
        fsutil::set_mode(&tree, 0o755).map_err(overlay)?;
        let imported = coppice_oci::import(image, &tree, ids).map_err(image_error)?;
        self.add_mount_points(&tree).map_err(overlay)?;
        let manifest = self
            .layers
            .commit(
                pending,
                &format!("image {} ({} layers)", image.display(), imported.layers),
                created_at,
            )
            .map_err(overlay)?;
        let record = image_record(
            id,
            manifest.id.clone(),
            manifest.created_at,
            imported.config,
        );
        record.write(&path).map_err(overlay)?;
        tracing::info!(template = %id, image = %image.display(), layer = %manifest.id, size_bytes = manifest.size_bytes, "template imported from an image");
        self.template_info(&record).map_err(overlay)
    }
}

impl OverlayStorage {
    /// Makes the top-level directories a sandbox mounts onto, where the image has nothing
    /// of that name (a minimal image may lack them; one that has something there keeps it).
    fn add_mount_points(&self, tree: &Path) -> Result<(), OverlayError> {
        for (name, mode) in MOUNT_POINTS {
            let path = tree.join(name);
            if std::fs::symlink_metadata(&path).is_ok() {
                continue;
            }
            fsutil::create_dir(&path)?;
            self.ids.root.apply(&*self.sys, &path)?;
            fsutil::set_mode(&path, mode)?;
        }
        Ok(())
    }
}

/// The directories every sandbox root needs, for the runtime's mounts and the files PID 1
/// writes (`/etc/resolv.conf`, `/etc/hostname`).
const MOUNT_POINTS: [(&str, u32); 5] = [
    ("proc", 0o555),
    ("dev", 0o755),
    ("tmp", 0o1777),
    ("run", 0o755),
    ("etc", 0o755),
];

/// The record of a template made from an image with `config`.
fn image_record(
    id: &TemplateId,
    layer: LayerId,
    created_at: SystemTime,
    config: ImageConfig,
) -> TemplateRecord {
    let process: Vec<&String> = config.entrypoint.iter().chain(&config.cmd).collect();
    TemplateRecord {
        id: id.clone(),
        layers: vec![layer],
        default_user: config.user.unwrap_or_else(|| IMAGE_DEFAULT_USER.to_owned()),
        default_workdir: config
            .workdir
            .unwrap_or_else(|| IMAGE_DEFAULT_WORKDIR.to_owned()),
        created_at,
        binds: Vec::new(),
        snapshot_of: None,
        // The image's main process runs in the background of every sandbox, as its
        // container would; nothing waits for it.
        start: (!process.is_empty()).then(|| TemplateStart {
            command: process
                .iter()
                .map(|word| shell_quote(word))
                .collect::<Vec<_>>()
                .join(" "),
            ready: None,
        }),
        source_digest: None,
        env: config.env,
    }
}

/// `word` as one word of a POSIX shell command line.
fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What a failed import means to the caller.
fn image_error(error: OciError) -> StorageError {
    match error.kind() {
        OciErrorKind::Invalid | OciErrorKind::NotFound | OciErrorKind::Unsupported => {
            StorageError::Invalid {
                reason: error.to_string(),
            }
        }
        OciErrorKind::Io => {
            let exhausted = std::error::Error::source(&error)
                .and_then(|source| source.downcast_ref::<std::io::Error>())
                .and_then(std::io::Error::raw_os_error)
                .is_some_and(|errno| errno == libc::ENOSPC || errno == libc::EDQUOT);
            if exhausted {
                StorageError::Exhausted {
                    op: "import image",
                    source: Box::new(error),
                }
            } else {
                StorageError::Backend {
                    op: "import image",
                    source: Box::new(error),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_the_entrypoint_and_command_become_the_start_command() {
        let config = ImageConfig {
            env: vec![("A".into(), "1".into())],
            user: None,
            workdir: None,
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo 'hi there' > /tmp/x".into()],
        };
        let record = image_record(
            &"img".parse().unwrap(),
            "l1".parse().unwrap(),
            SystemTime::UNIX_EPOCH,
            config,
        );
        assert_eq!(
            record.start.unwrap().command,
            r"/bin/sh -c 'echo '\''hi there'\'' > /tmp/x'"
        );
        assert_eq!(record.default_user, "root");
        assert_eq!(record.default_workdir, "/");
        assert!(record.binds.is_empty(), "an image brings its own /usr");
        assert_eq!(record.env, vec![("A".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn test_an_image_without_a_process_starts_nothing() {
        let record = image_record(
            &"img".parse().unwrap(),
            "l1".parse().unwrap(),
            SystemTime::UNIX_EPOCH,
            ImageConfig {
                user: Some("app".into()),
                workdir: Some("/srv".into()),
                ..ImageConfig::default()
            },
        );
        assert!(record.start.is_none());
        assert_eq!(
            (
                record.default_user.as_str(),
                record.default_workdir.as_str()
            ),
            ("app", "/srv")
        );
    }
}
