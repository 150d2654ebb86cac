//! Templates imported from OCI images: the image's layers applied, in order, into one layer
//! of the template's own (no host directories bound over it), and the image's environment,
//! user, working directory and entrypoint kept in the template's record.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use coppice_core::TemplateId;
use coppice_core::storage::{StorageError, TemplateInfo, TemplateStart};
use coppice_core::volume::IdMap;
use coppice_oci::{ImageConfig, OciError, OciErrorKind};

use super::OverlayStorage;
use crate::error::OverlayError;
use crate::fsutil;
use crate::layer::{LayerId, PendingLayer};
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
        // Dropped unfinished, the pending layer is removed: a refused or failed import
        // leaves nothing behind, and no template is listed.
        let (pending, tree, created_at) = self.begin_root_layer(id)?;
        let mut imported = coppice_oci::import(image, &tree, ids).map_err(image_error)?;
        self.add_mount_points(&tree).map_err(overlay)?;
        let asked = imported.config.user.take();
        let user = self.image_user(&tree, asked.as_deref())?;
        // The group an image's `User` names is kept for its main process (envd's users are
        // names, run with their own groups).
        let group = asked
            .as_deref()
            .and_then(|spec| spec.split_once(':'))
            .map(|(_, group)| group.to_owned())
            .filter(|group| !group.is_empty());
        let service_user = group.map(|group| format!("{user}:{group}"));
        imported.config.user = Some(user);
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
            service_user,
        );
        record.write(&path).map_err(overlay)?;
        tracing::info!(template = %id, image = %image.display(), layer = %manifest.id, size_bytes = manifest.size_bytes, "template imported from an image");
        self.template_info(&record).map_err(overlay)
    }
}

impl OverlayStorage {
    /// A new bottom layer for template `id` (whose name must be free: checked here, under
    /// the build lock the caller holds), its root owned by sandbox root, and its time.
    pub(super) fn begin_root_layer(
        &self,
        id: &TemplateId,
    ) -> Result<(PendingLayer, PathBuf, SystemTime), StorageError> {
        let overlay = |error: OverlayError| error.into_storage("make template layer");
        if TemplateRecord::read(&self.template_path(id), id)
            .map_err(overlay)?
            .is_some()
        {
            return Err(StorageError::TemplateExists { id: id.clone() });
        }
        let created_at = fsutil::truncate_to_ms(SystemTime::now());
        let layer = LayerId::generate(id.as_str(), created_at, self.random_u32().map_err(overlay)?);
        let pending = self.layers.begin(layer, None).map_err(overlay)?;
        let tree = pending.tree();
        self.ids.root.apply(&*self.sys, &tree).map_err(overlay)?;
        fsutil::set_mode(&tree, 0o755).map_err(overlay)?;
        Ok((pending, tree, created_at))
    }

    /// Makes the top-level directories a sandbox mounts onto, where the image has nothing
    /// of that name (a minimal image may lack them; one that has something there keeps it).
    pub(super) fn add_mount_points(&self, tree: &Path) -> Result<(), OverlayError> {
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

impl OverlayStorage {
    /// The name, in the image's own `/etc/passwd`, of the user the image's configuration
    /// names (`name`, `uid`, `name:group`, `uid:gid`; none is root), which envd and the init
    /// look up by name. An image without `/etc/passwd` gets one with root; a uid it has no
    /// entry for gets one (`u<uid>`, group 0, home `/`).
    ///
    /// # Errors
    /// `Invalid` for a name the image does not have (as a container runtime refuses it).
    fn image_user(&self, tree: &Path, spec: Option<&str>) -> Result<String, StorageError> {
        let overlay = |error: OverlayError| error.into_storage("import image");
        // Everything below is reached through `etc`: it must be the tree's own directory, not
        // a link the image made (which the host would follow).
        if !is_real_dir(&tree.join("etc")) {
            return Err(StorageError::Invalid {
                reason: "the image's /etc is not a directory".into(),
            });
        }
        let passwd = tree.join("etc/passwd");
        let present = std::fs::symlink_metadata(&passwd).is_ok();
        if !present {
            self.write_account_file(tree, "passwd", "root:x:0:0:root:/root:/bin/sh\n")
                .and_then(|()| self.write_account_file(tree, "group", "root:x:0:\n"))
                .map_err(overlay)?;
        }
        let user = spec
            .map(|spec| spec.split_once(':').map_or(spec, |(user, _)| user))
            .filter(|user| !user.is_empty())
            .unwrap_or("root");
        // Read only when it is a plain file: the image's own, never followed out of the tree.
        let text = match std::fs::symlink_metadata(&passwd) {
            Ok(metadata) if metadata.file_type().is_file() => {
                std::fs::read_to_string(&passwd).unwrap_or_default()
            }
            _ => String::new(),
        };
        let entries: Vec<(&str, Option<u32>)> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let uid = fields.nth(1).and_then(|uid| uid.parse().ok());
                Some((name, uid))
            })
            .collect();
        if let Some((name, _)) = entries.iter().find(|(name, _)| *name == user) {
            return Ok((*name).to_owned());
        }
        let Ok(uid) = user.parse::<u32>() else {
            return Err(StorageError::Invalid {
                reason: format!("the image's user {user:?} is not in its /etc/passwd"),
            });
        };
        if let Some((name, _)) = entries.iter().find(|(_, found)| *found == Some(uid)) {
            return Ok((*name).to_owned());
        }
        let name = format!("u{uid}");
        let mut with_entry = text.clone();
        if !with_entry.is_empty() && !with_entry.ends_with('\n') {
            with_entry.push('\n');
        }
        with_entry.push_str(&format!("{name}:x:{uid}:0::/:/bin/sh\n"));
        self.write_account_file(tree, "passwd", &with_entry)
            .map_err(overlay)?;
        Ok(name)
    }

    /// Writes `etc/<name>` of the tree, owned by sandbox root, replacing a plain file only.
    fn write_account_file(&self, tree: &Path, name: &str, text: &str) -> Result<(), OverlayError> {
        let etc = tree.join("etc");
        let path = etc.join(name);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.file_type().is_file()) {
            return Ok(());
        }
        std::fs::write(&path, text).map_err(|source| OverlayError::WriteFile {
            path: path.clone(),
            source,
        })?;
        self.ids.root.apply(&*self.sys, &path)?;
        fsutil::set_mode(&path, 0o644)
    }
}

/// Whether `path` is a directory itself (not a symlink to one).
pub(super) fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|metadata| metadata.file_type().is_dir())
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
    service_user: Option<String>,
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
            user: service_user,
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
pub(super) fn image_error(error: OciError) -> StorageError {
    match error.kind() {
        OciErrorKind::Invalid | OciErrorKind::NotFound | OciErrorKind::Unsupported => {
            StorageError::Invalid {
                reason: error.to_string(),
            }
        }
        OciErrorKind::OutOfSpace => StorageError::Exhausted {
            op: "import image",
            source: Box::new(error),
        },
        OciErrorKind::Io => StorageError::Backend {
            op: "import image",
            source: Box::new(error),
        },
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
            Some("app:staff".into()),
        );
        let start = record.start.unwrap();
        assert_eq!(
            start.command,
            r"/bin/sh -c 'echo '\''hi there'\'' > /tmp/x'"
        );
        assert_eq!(
            start.user.as_deref(),
            Some("app:staff"),
            "the group is kept"
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
            None,
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
