//! Where an image's files come from: an OCI image layout directory, or a tarball of one (or
//! of `docker save`'s layout), read in place by seeking to its members.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::OciError;

/// Largest JSON document (index, manifest, config) read into memory.
const MAX_JSON_BYTES: u64 = 16 << 20;

/// An opened image.
#[derive(Debug)]
pub(crate) enum ImageSource {
    /// A directory holding `index.json`, `blobs/`, or `manifest.json`.
    Directory(PathBuf),
    /// A tarball of such a directory: each member's offset and size.
    Tarball {
        path: PathBuf,
        members: BTreeMap<String, (u64, u64)>,
    },
}

impl ImageSource {
    /// Opens the image at `path`, a directory or a tarball.
    pub(crate) fn open(path: &Path) -> Result<Self, OciError> {
        let metadata = std::fs::metadata(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => OciError::NotFound {
                what: format!("{}", path.display()),
            },
            _ => OciError::read(format!("stat {}", path.display()), e),
        })?;
        if metadata.is_dir() {
            return Ok(Self::Directory(path.to_owned()));
        }
        let file = File::open(path).map_err(|e| OciError::read("open the tarball", e))?;
        let mut archive = tar::Archive::new(file);
        let mut members = BTreeMap::new();
        // `docker save` writes a layer shared by two images once, and a symlink to it.
        let mut links = Vec::new();
        let entries = archive
            .entries()
            .map_err(|e| OciError::invalid(format!("not a tar archive: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| OciError::invalid(format!("unreadable tarball: {e}")))?;
            let Some(name) = member_name(&entry.path_bytes()) else {
                continue;
            };
            match entry.header().entry_type() {
                tar::EntryType::Regular => {
                    members.insert(name, (entry.raw_file_position(), entry.size()));
                }
                tar::EntryType::Symlink => {
                    if let Some(target) = entry.link_name_bytes() {
                        links.push((name, target.into_owned()));
                    }
                }
                _ => {}
            }
        }
        for (name, target) in links {
            let parent = name.rsplit_once('/').map_or("", |(dir, _)| dir);
            let joined = format!("{parent}/{}", String::from_utf8_lossy(&target));
            if let Some(found) = resolve_member(&joined).and_then(|t| members.get(&t).copied()) {
                members.entry(name).or_insert(found);
            }
        }
        Ok(Self::Tarball {
            path: path.to_owned(),
            members,
        })
    }

    /// Whether the image has the file `name` (relative to its root).
    pub(crate) fn has(&self, name: &str) -> bool {
        match self {
            Self::Directory(dir) => safe_join(dir, name).is_some_and(|path| path.is_file()),
            Self::Tarball { members, .. } => members.contains_key(name),
        }
    }

    /// Reads the file `name`.
    pub(crate) fn open_file(&self, name: &str) -> Result<Box<dyn Read>, OciError> {
        let missing = || OciError::NotFound {
            what: name.to_owned(),
        };
        match self {
            Self::Directory(dir) => {
                let path = safe_join(dir, name).ok_or_else(missing)?;
                let file = File::open(&path).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => missing(),
                    _ => OciError::read(format!("open {name}"), e),
                })?;
                Ok(Box::new(file))
            }
            Self::Tarball { path, members } => {
                let (offset, size) = *members.get(name).ok_or_else(missing)?;
                let mut file =
                    File::open(path).map_err(|e| OciError::read("open the tarball", e))?;
                file.seek(SeekFrom::Start(offset))
                    .map_err(|e| OciError::read(format!("seek to {name}"), e))?;
                Ok(Box::new(file.take(size)))
            }
        }
    }

    /// Reads JSON document `name`.
    pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<T, OciError> {
        let mut text = Vec::new();
        self.open_file(name)?
            .take(MAX_JSON_BYTES)
            .read_to_end(&mut text)
            .map_err(|e| OciError::read(format!("read {name}"), e))?;
        serde_json::from_slice(&text).map_err(|e| OciError::invalid(format!("{name}: {e}")))
    }

    /// Reads the blob with `digest` whole (a JSON document), checking the digest.
    pub(crate) fn read_blob_json<T: serde::de::DeserializeOwned>(
        &self,
        digest: &str,
    ) -> Result<T, OciError> {
        let name = blob_path(digest)?;
        let mut bytes = Vec::new();
        self.open_file(&name)?
            .take(MAX_JSON_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| OciError::read(format!("read {name}"), e))?;
        check_digest(digest, &hex(&Sha256::digest(&bytes)))?;
        serde_json::from_slice(&bytes).map_err(|e| OciError::invalid(format!("{name}: {e}")))
    }
}

/// Where a blob lives in a layout: `blobs/<algorithm>/<hex>`. Only sha256 is read.
pub(crate) fn blob_path(digest: &str) -> Result<String, OciError> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        return Err(OciError::Unsupported {
            what: format!("digest {digest:?} (only sha256 is read)"),
        });
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(OciError::invalid(format!("malformed digest {digest:?}")));
    }
    Ok(format!("blobs/sha256/{hex}"))
}

/// Refuses content whose SHA-256 (`actual`, lowercase hex) is not `digest`'s.
pub(crate) fn check_digest(digest: &str, actual: &str) -> Result<(), OciError> {
    if digest.strip_prefix("sha256:") == Some(actual) {
        Ok(())
    } else {
        Err(OciError::invalid(format!(
            "blob {digest} has the digest sha256:{actual}"
        )))
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

/// A tarball member's name, normalised (`./` dropped); `None` for names with `..`.
fn member_name(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let parts: Vec<&str> = text
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return None;
    }
    Some(parts.join("/"))
}

/// A link target inside the tarball (`a/../b/layer.tar`), normalised; `None` when it would
/// leave the tarball.
fn resolve_member(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// `dir` joined with relative `name`, which may not leave it.
fn safe_join(dir: &Path, name: &str) -> Option<PathBuf> {
    let relative = Path::new(name);
    relative
        .components()
        .all(|component| matches!(component, Component::Normal(_)))
        .then(|| dir.join(relative))
}
