//! Templates a recipe build makes: a Debian root from the archive (`mmdebstrap` in a user
//! namespace, its tar applied through `coppice-oci`'s checked extraction with the sandbox id
//! map), and
//! templates derived from another one's layers with their own environment and service.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::SystemTime;

use coppice_core::TemplateId;
use coppice_core::recipe::DebianBase;
use coppice_core::storage::{StorageError, TemplateInfo, TemplateMeta};
use coppice_core::volume::IdMap;

use super::OverlayStorage;
use super::imported::{image_error, is_real_dir};
use crate::error::OverlayError;
use crate::fsutil;
use crate::records::TemplateRecord;

/// The archive used when the host names none.
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Lines of the tool's output kept for an error message.
const TAIL_LINES: usize = 8;

impl OverlayStorage {
    pub(super) fn bootstrap_debian_impl(
        &self,
        id: &TemplateId,
        base: &DebianBase,
        ids: IdMap,
        log: &mut dyn FnMut(&str),
    ) -> Result<TemplateInfo, StorageError> {
        let overlay = |error: OverlayError| error.into_storage("bootstrap Debian");
        if TemplateRecord::read(&self.template_path(id), id)
            .map_err(overlay)?
            .is_some()
        {
            return Err(StorageError::TemplateExists { id: id.clone() });
        }
        // The download runs without the build lock: it takes tens of seconds.
        let scratch = self.config.root.join("tmp");
        fsutil::create_dir_all(&scratch).map_err(overlay)?;
        let work = tempfile::Builder::new()
            .prefix("bootstrap-")
            .tempdir_in(&scratch)
            .map_err(|source| {
                overlay(OverlayError::WriteFile {
                    path: scratch.clone(),
                    source,
                })
            })?;
        let tar = work.path().join("rootfs.tar");
        run_mmdebstrap(base, &tar, log)?;

        let _guard = self.lock_builds();
        let (pending, tree, created_at) = self.begin_root_layer(id)?;
        coppice_oci::import_rootfs_tar(&tar, &tree, ids).map_err(image_error)?;
        self.add_mount_points(&tree).map_err(overlay)?;
        self.add_default_user(&tree).map_err(overlay)?;
        let manifest = self
            .layers
            .commit(
                pending,
                &format!("debian {} with {}", base.release, base.packages.join(" ")),
                created_at,
            )
            .map_err(overlay)?;
        let record = TemplateRecord {
            id: id.clone(),
            layers: vec![manifest.id.clone()],
            default_user: crate::base::DEFAULT_USER.to_owned(),
            default_workdir: crate::base::DEFAULT_WORKDIR.to_owned(),
            created_at: manifest.created_at,
            binds: Vec::new(),
            snapshot_of: None,
            start: None,
            source_digest: None,
            env: Vec::new(),
        };
        record.write(&self.template_path(id)).map_err(overlay)?;
        tracing::info!(template = %id, release = %base.release, size_bytes = manifest.size_bytes, "Debian root built");
        self.template_info(&record).map_err(overlay)
    }

    /// Adds the base template's unprivileged `user` (uid and gid 1000, home `/home/user`)
    /// to a Debian root, unless it has one.
    fn add_default_user(&self, tree: &Path) -> Result<(), OverlayError> {
        // Only through the tree's own directories, never through a link in it.
        if !is_real_dir(&tree.join("etc")) || !is_real_dir(&tree.join("home")) {
            return Err(OverlayError::WriteFile {
                path: tree.join("etc"),
                source: std::io::Error::other("the Debian root has no plain /etc and /home"),
            });
        }
        let passwd = tree.join("etc/passwd");
        let existing = std::fs::read_to_string(&passwd).unwrap_or_default();
        if existing.lines().any(|line| line.starts_with("user:")) {
            return Ok(());
        }
        let append = |name: &str, line: &str| -> Result<(), OverlayError> {
            let path = tree.join("etc").join(name);
            // A Debian root's account files are plain files; anything else is left alone.
            if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.file_type().is_file()) {
                return Ok(());
            }
            let mut text = std::fs::read_to_string(&path).unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(line);
            std::fs::write(&path, text).map_err(|source| OverlayError::WriteFile { path, source })
        };
        append("passwd", "user:x:1000:1000::/home/user:/bin/bash\n")?;
        append("group", "user:x:1000:\n")?;
        let home = tree.join("home/user");
        match std::fs::symlink_metadata(&home) {
            Err(_) => fsutil::create_dir(&home)?,
            Ok(metadata) if metadata.file_type().is_dir() => {}
            // Something else there (a link a package made): left alone, never followed.
            Ok(_) => return Ok(()),
        }
        self.ids.user.apply(&*self.sys, &home)?;
        fsutil::set_mode(&home, 0o755)
    }

    pub(super) fn derive_template_impl(
        &self,
        id: &TemplateId,
        from: &TemplateId,
        meta: &TemplateMeta,
    ) -> Result<TemplateInfo, StorageError> {
        let overlay = |error: OverlayError| error.into_storage("derive template");
        let _guard = self.lock_builds();
        let path = self.template_path(id);
        let existing = TemplateRecord::read(&path, id).map_err(overlay)?;
        // Only a template coppice built gives way, and only to another such build.
        if existing
            .as_ref()
            .is_some_and(|record| record.source_digest.is_none() || meta.built_from.is_none())
        {
            return Err(StorageError::TemplateExists { id: id.clone() });
        }
        let parent = self.read_template(from).map_err(overlay)?;
        let mut env = parent.env.clone();
        for (name, value) in &meta.env {
            env.retain(|(existing, _)| existing != name);
            env.push((name.clone(), value.clone()));
        }
        let record = TemplateRecord {
            id: id.clone(),
            created_at: fsutil::truncate_to_ms(SystemTime::now()),
            snapshot_of: None,
            source_digest: meta.built_from.clone(),
            start: meta.start.clone().or_else(|| parent.start.clone()),
            env,
            default_user: meta
                .default_user
                .clone()
                .unwrap_or_else(|| parent.default_user.clone()),
            default_workdir: meta
                .default_workdir
                .clone()
                .unwrap_or_else(|| parent.default_workdir.clone()),
            ..parent
        };
        record.write(&path).map_err(overlay)?;
        if existing.is_some() {
            tracing::info!(template = %id, "template replaced by a new build");
            // The replaced build's layers go unless a sandbox or the build cache holds them.
            if let Err(error) = self.prune_layers_locked() {
                tracing::warn!(error = %error, "cannot remove unused layers");
            }
        }
        self.template_info(&record).map_err(overlay)
    }
}

/// Runs `mmdebstrap` for `base` into the tarball `tar`, its output to `log`.
fn run_mmdebstrap(
    base: &DebianBase,
    tar: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<(), StorageError> {
    let mut command = Command::new("mmdebstrap");
    // Inside a user namespace of its own: the packages' maintainer scripts never run as the
    // host's root.
    command.args([
        "--variant=apt",
        "--mode=unshare",
        "--format=tar",
        "--aptopt=Acquire::Languages \"none\"",
    ]);
    if !base.packages.is_empty() {
        command.arg(format!("--include={}", base.packages.join(",")));
    }
    command
        .arg(&base.release)
        .arg(tar)
        .args(sources(&base.release, &host_mirror()));
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            StorageError::Unsupported {
                what: "building Debian templates without mmdebstrap (install the mmdebstrap package)",
            }
        } else {
            StorageError::Backend {
                op: "run mmdebstrap",
                source: Box::new(error),
            }
        }
    })?;
    let mut tail = std::collections::VecDeque::with_capacity(TAIL_LINES);
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log(&line);
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
    let status = child.wait().map_err(|error| StorageError::Backend {
        op: "run mmdebstrap",
        source: Box::new(error),
    })?;
    if status.success() {
        return Ok(());
    }
    let said: Vec<String> = tail
        .into_iter()
        .filter(|line| line.starts_with("E:") || line.contains("rror"))
        .collect();
    let reason = format!(
        "mmdebstrap {} failed ({status}): {}",
        base.release,
        if said.is_empty() {
            "see the build log".to_owned()
        } else {
            said.join("; ")
        }
    );
    // Only a recipe the archive cannot satisfy is the caller's mistake; an unreachable
    // mirror or a full disk is the host's.
    let recipe_error = said.iter().any(|line| {
        line.contains("Unable to locate package") || line.contains("has no installation candidate")
    });
    if recipe_error {
        Err(StorageError::Invalid { reason })
    } else {
        Err(StorageError::Backend {
            op: "run mmdebstrap",
            source: Box::new(std::io::Error::other(reason)),
        })
    }
}

/// The archive lines for `release` from `mirror`: the release, and its updates and security
/// suites where the release has them (a stable one), so a root gets Debian's fixes.
fn sources(release: &str, mirror: &str) -> Vec<String> {
    let mut lines = vec![format!("deb {mirror} {release} main")];
    if !matches!(release, "sid" | "unstable" | "experimental") {
        lines.push(format!("deb {mirror} {release}-updates main"));
        let security = mirror.strip_suffix("/debian").map_or_else(
            || "http://deb.debian.org/debian-security".to_owned(),
            |host| format!("{host}/debian-security"),
        );
        lines.push(format!("deb {security} {release}-security main"));
    }
    lines
}

/// The Debian archive the host's own apt uses.
fn host_mirror() -> String {
    let deb822 =
        std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let from_deb822 = deb822
        .lines()
        .find_map(|line| line.strip_prefix("URIs:"))
        .and_then(|uris| uris.split_whitespace().next().map(str::to_owned));
    let legacy = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    let from_legacy = legacy.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("deb"))
            .then(|| words.find(|word| word.contains("://")).map(str::to_owned))
            .flatten()
    });
    // A host on another distribution (Ubuntu's archive has no Debian releases) uses Debian's.
    from_deb822
        .or(from_legacy)
        .filter(|mirror| mirror.contains("debian"))
        .unwrap_or_else(|| DEFAULT_MIRROR.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_stable_release_gets_its_updates_and_security_suites() {
        assert_eq!(
            sources("bookworm", "http://deb.debian.org/debian"),
            [
                "deb http://deb.debian.org/debian bookworm main",
                "deb http://deb.debian.org/debian bookworm-updates main",
                "deb http://deb.debian.org/debian-security bookworm-security main",
            ]
        );
        assert_eq!(
            sources("sid", "http://mirror.example/debian"),
            ["deb http://mirror.example/debian sid main"]
        );
    }
}
