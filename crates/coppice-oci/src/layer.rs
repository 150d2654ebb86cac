//! Layers: each read once to check it (digest, names, and what it does to the tree the layers
//! below it made), and only once every layer passed, read again to write it.
//!
//! An entry is refused when it is absolute, has `..`, is not UTF-8, lies below a symlink or a
//! file of the tree made so far (the classic way to write through a link), or is a hard link
//! to anything but a file already in the tree. Whiteouts (`.wh.<name>`) remove what the
//! layers below made; an opaque marker (`.wh..wh..opq`) empties its directory of it; both are
//! applied before the layer's own entries. Devices, FIFOs and sockets are skipped (a sandbox
//! could not make them either). Symlink targets are stored as given, even absolute: only the
//! sandbox resolves them, inside its own root, and writing never follows a link.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read};
use std::time::{Duration, UNIX_EPOCH};

use coppice_core::volume::IdMap;
use coppice_volume::{EntryKind, Ownership, VolumeFs, VolumeFsErrorKind, VolumePath};
use sha2::{Digest, Sha256};

use crate::error::OciError;
use crate::manifest::LayerRef;
use crate::source::{ImageSource, check_digest, hex};

/// Most entries one image may hold, across its layers (and one layer's entries, whiteouts
/// included, while it is read).
const MAX_ENTRIES: usize = 4_000_000;
/// Most bytes of file content one image may write.
const MAX_IMAGE_BYTES: u64 = 64 << 30;
/// Longest path of an entry, in bytes (what the kernel takes).
const MAX_PATH_BYTES: usize = 4096;
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// What a path is, in the tree the layers make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Directory,
    File,
    Symlink,
}

/// What one entry writes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Write {
    Directory,
    File,
    Symlink(String),
    Hardlink(Vec<String>),
}

#[derive(Debug)]
struct PlannedEntry {
    path: Vec<String>,
    write: Write,
}

/// What a layer removes of the layers below it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Removal {
    /// `.wh.<name>`: that path.
    Whiteout(Vec<String>),
    /// `.wh..wh..opq`: everything in that directory.
    Opaque(Vec<String>),
}

/// One layer, checked.
#[derive(Debug)]
pub(crate) struct LayerPlan {
    removals: Vec<Removal>,
    entries: Vec<PlannedEntry>,
    /// Bytes of file content it writes.
    pub(crate) bytes: u64,
}

/// The tree the layers checked so far make, by path.
#[derive(Debug, Default)]
pub(crate) struct Tree {
    nodes: BTreeMap<Vec<String>, Node>,
}

impl Tree {
    fn remove_below(&mut self, path: &[String], including: bool) {
        let doomed: Vec<Vec<String>> = self
            .nodes
            .range(path.to_vec()..)
            .take_while(|(key, _)| key.starts_with(path))
            .filter(|(key, _)| including || key.len() > path.len())
            .map(|(key, _)| key.clone())
            .collect();
        for key in doomed {
            self.nodes.remove(&key);
        }
    }

    /// Refuses `path` when a proper prefix of it is not a directory; makes the missing ones.
    fn enter_parents(&mut self, path: &[String], shown: &str) -> Result<(), OciError> {
        for n in 1..path.len() {
            match self.nodes.get(&path[..n]) {
                Some(Node::Symlink) => {
                    return Err(OciError::invalid(format!(
                        "entry {shown:?} lies below a symlink"
                    )));
                }
                Some(Node::File) => {
                    return Err(OciError::invalid(format!(
                        "entry {shown:?} lies below a file"
                    )));
                }
                Some(Node::Directory) => {}
                None => {
                    self.nodes.insert(path[..n].to_vec(), Node::Directory);
                }
            }
        }
        Ok(())
    }

    /// Applies `plan` to the tree, refusing what would escape it.
    pub(crate) fn check(&mut self, plan: &LayerPlan) -> Result<(), OciError> {
        for removal in &plan.removals {
            let (Removal::Whiteout(path) | Removal::Opaque(path)) = removal;
            let shown = path.join("/");
            // Removing walks the parents: none may be a link.
            if path.len() > 1 {
                self.enter_parents(path, &shown)?;
            }
            match removal {
                Removal::Whiteout(path) => self.remove_below(path, true),
                // Below a file or a symlink there is nothing to hide: the layer's own entry
                // for the directory replaces it (overlayfs writes this for `rm f; mkdir f`).
                Removal::Opaque(path) => {
                    if !matches!(self.nodes.get(path), Some(Node::Symlink | Node::File)) {
                        self.remove_below(path, false);
                    }
                }
            }
        }
        for entry in &plan.entries {
            let shown = entry.path.join("/");
            self.enter_parents(&entry.path, &shown)?;
            let node = match &entry.write {
                Write::Directory => Node::Directory,
                Write::File => Node::File,
                Write::Symlink(_) => Node::Symlink,
                Write::Hardlink(target) => {
                    if self.nodes.get(target) != Some(&Node::File) {
                        return Err(OciError::invalid(format!(
                            "hard link {shown:?} names {:?}, which is not a file of the image",
                            target.join("/")
                        )));
                    }
                    Node::File
                }
            };
            if node != Node::Directory || self.nodes.get(&entry.path) != Some(&Node::Directory) {
                self.remove_below(&entry.path, true);
            }
            self.nodes.insert(entry.path.clone(), node);
        }
        if self.nodes.len() > MAX_ENTRIES {
            return Err(OciError::invalid(format!(
                "the image holds more than {MAX_ENTRIES} entries"
            )));
        }
        Ok(())
    }
}

/// The components of an entry's path; `Ok(empty)` for the root itself.
fn components(raw: &[u8]) -> Result<Vec<String>, String> {
    if raw.len() > MAX_PATH_BYTES {
        return Err(format!("its path is longer than {MAX_PATH_BYTES} bytes"));
    }
    if raw.contains(&0) {
        return Err("its path has a NUL byte".into());
    }
    let text = std::str::from_utf8(raw).map_err(|_| "its name is not UTF-8".to_owned())?;
    if text.starts_with('/') {
        return Err("its path is absolute".into());
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("its path has '..'".into()),
            part if part.len() > 255 => return Err("a name is longer than 255 bytes".into()),
            part => parts.push(part.to_owned()),
        }
    }
    Ok(parts)
}

/// Opens a layer's bytes, hashing them as they are read, and decompresses them.
fn open_layer(
    source: &ImageSource,
    layer: &LayerRef,
) -> Result<(tar::Archive<Box<dyn Read>>, HashHandle), OciError> {
    let hasher = HashHandle::default();
    let raw = HashingReader {
        inner: source.open_file(&layer.member)?,
        hash: hasher.clone(),
    };
    let mut buffered = BufReader::new(raw);
    let magic = buffered
        .fill_buf()
        .map_err(|e| OciError::read(format!("read layer {}", layer.member), e))?;
    let stream: Box<dyn Read> = match magic {
        [0x1f, 0x8b, ..] => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        // A zstd frame, or a skippable frame (`pzstd` starts with one).
        [0x28, 0xb5, 0x2f, 0xfd, ..] | [0x50..=0x5f, 0x2a, 0x4d, 0x18, ..] => {
            Box::new(crate::zstd::ZstdFrames::new(buffered))
        }
        _ => Box::new(buffered),
    };
    Ok((tar::Archive::new(stream), hasher))
}

/// Reads and checks one layer's entries (nothing is written) and its digest.
pub(crate) fn plan(source: &ImageSource, layer: &LayerRef) -> Result<LayerPlan, OciError> {
    let shown_layer = &layer.member;
    let (mut archive, hash) = open_layer(source, layer)?;
    let mut plan = LayerPlan {
        removals: Vec::new(),
        entries: Vec::new(),
        bytes: 0,
    };
    let refuse = |what: &str, why: &str| {
        OciError::invalid(format!("layer {shown_layer}: entry {what:?}: {why}"))
    };
    let mut bytes = 0u64;
    {
        let entries = archive
            .entries()
            .map_err(|e| OciError::invalid(format!("layer {shown_layer} is not a tar: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| {
                OciError::invalid(format!("layer {shown_layer} has an unreadable entry: {e}"))
            })?;
            if plan.entries.len() + plan.removals.len() >= MAX_ENTRIES {
                return Err(OciError::invalid(format!(
                    "layer {shown_layer} holds more than {MAX_ENTRIES} entries"
                )));
            }
            bytes = bytes.saturating_add(entry.size());
            if bytes > MAX_IMAGE_BYTES {
                return Err(OciError::invalid(format!(
                    "layer {shown_layer} holds more than {} GiB",
                    MAX_IMAGE_BYTES >> 30
                )));
            }
            let raw = entry.path_bytes();
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let path = components(&raw).map_err(|why| refuse(&shown, &why))?;
            let Some(name) = path.last() else {
                continue;
            };
            if name == OPAQUE_MARKER {
                plan.removals
                    .push(Removal::Opaque(path[..path.len() - 1].to_vec()));
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                if hidden.is_empty() || hidden.starts_with(WHITEOUT_PREFIX) {
                    return Err(refuse(&shown, "a malformed whiteout"));
                }
                let mut target = path[..path.len() - 1].to_vec();
                target.push(hidden.to_owned());
                plan.removals.push(Removal::Whiteout(target));
                continue;
            }
            let write = match entry.header().entry_type() {
                tar::EntryType::Directory => Write::Directory,
                tar::EntryType::Regular | tar::EntryType::Continuous => Write::File,
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .ok_or_else(|| refuse(&shown, "a symlink without a target"))?;
                    let target = String::from_utf8(target.into_owned())
                        .map_err(|_| refuse(&shown, "its target is not UTF-8"))?;
                    Write::Symlink(target)
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .ok_or_else(|| refuse(&shown, "a hard link without a target"))?;
                    let target = components(&target)
                        .map_err(|why| refuse(&shown, &format!("its link target: {why}")))?;
                    if target.is_empty() {
                        return Err(refuse(&shown, "a hard link to the root"));
                    }
                    Write::Hardlink(target)
                }
                // Devices, FIFOs and sockets: not made (no sandbox could either).
                _ => continue,
            };
            if path.is_empty() {
                continue;
            }
            plan.entries.push(PlannedEntry { path, write });
        }
    }
    // The digest covers every byte of the blob, after the archive's end too.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())
        .map_err(|e| OciError::read(format!("read layer {shown_layer}"), e))?;
    if let Some(digest) = &layer.digest {
        check_digest(digest, &hash.finish())?;
    }
    plan.bytes = bytes;
    Ok(plan)
}

/// Writes one checked layer into `fs`, its removals first. The layer must read as it did
/// when it was planned.
pub(crate) fn apply(
    source: &ImageSource,
    layer: &LayerRef,
    plan: &LayerPlan,
    fs: &VolumeFs,
    ids: IdMap,
) -> Result<(), OciError> {
    for removal in &plan.removals {
        match removal {
            Removal::Whiteout(path) => remove_if_there(fs, &volume_path(path)?)?,
            Removal::Opaque(path) => {
                let dir = volume_path(path)?;
                let is_dir = dir.is_root()
                    || fs
                        .stat(&dir)
                        .is_ok_and(|entry| entry.kind == EntryKind::Directory);
                if !is_dir {
                    continue;
                }
                match fs.list(&dir, 1) {
                    Ok(children) => {
                        for child in children {
                            remove_if_there(fs, &VolumePath::parse(&child.path)?)?;
                        }
                    }
                    Err(error) if error.kind() == VolumeFsErrorKind::NotFound => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
    }
    let (mut archive, hash) = open_layer(source, layer)?;
    let changed = || {
        OciError::invalid(format!(
            "layer {} changed while it was imported",
            layer.member
        ))
    };
    let mut planned = plan.entries.iter();
    let entries = archive
        .entries()
        .map_err(|e| OciError::read(format!("read layer {}", layer.member), e))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| OciError::read(format!("read layer {}", layer.member), e))?;
        let path = components(&entry.path_bytes()).map_err(|_| changed())?;
        let Some(name) = path.last() else {
            continue;
        };
        let kept = matches!(
            entry.header().entry_type(),
            tar::EntryType::Directory
                | tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::Symlink
                | tar::EntryType::Link
        );
        if name.starts_with(WHITEOUT_PREFIX) || !kept {
            continue;
        }
        let next = planned
            .next()
            .filter(|p| p.path == path)
            .ok_or_else(changed)?;
        let target = volume_path(&next.path)?;
        let ownership = ownership(entry.header(), ids);
        let existing = fs.stat(&target).ok().map(|e| e.kind);
        match &next.write {
            Write::Directory => match existing {
                Some(EntryKind::Directory) => {
                    fs.set_attributes(&target, &ownership)?;
                }
                other => {
                    if other.is_some() {
                        fs.remove(&target)?;
                    }
                    fs.make_dir(&target, &ownership, true)?;
                }
            },
            write => {
                if existing == Some(EntryKind::Directory) {
                    fs.remove(&target)?;
                }
                match write {
                    Write::File => {
                        // A symlink (or anything else) of a lower layer gives way to a file.
                        if existing.is_some_and(|kind| {
                            !matches!(kind, EntryKind::File | EntryKind::Directory)
                        }) {
                            fs.remove(&target)?;
                        }
                        let mut pending = fs.begin_write(&target, &ownership, true)?;
                        let mut file = pending.take_file().ok_or_else(changed)?;
                        io::copy(&mut entry, &mut file).map_err(|source| {
                            OciError::WriteContents {
                                path: next.path.join("/"),
                                source,
                            }
                        })?;
                        // The image's time, not the import's: Python's bytecode caches (and
                        // make-like tools) compare it.
                        let mtime = entry.header().mtime().unwrap_or(0);
                        file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime))
                            .map_err(|source| OciError::WriteContents {
                                path: next.path.join("/"),
                                source,
                            })?;
                        pending.commit(file)?;
                    }
                    Write::Symlink(link) => fs.make_symlink(&target, link, &ownership)?,
                    Write::Hardlink(existing) => {
                        fs.make_hardlink(&target, &volume_path(existing)?)?;
                    }
                    Write::Directory => {}
                }
            }
        }
    }
    if planned.next().is_some() {
        return Err(changed());
    }
    // What was written must be what was checked: the blob is hashed again as it is read.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())
        .map_err(|e| OciError::read(format!("read layer {}", layer.member), e))?;
    if let Some(digest) = &layer.digest {
        check_digest(digest, &hash.finish()).map_err(|_| changed())?;
    }
    Ok(())
}

fn remove_if_there(fs: &VolumeFs, path: &VolumePath) -> Result<(), OciError> {
    match fs.remove(path) {
        Err(error) if error.kind() != VolumeFsErrorKind::NotFound => Err(error.into()),
        _ => Ok(()),
    }
}

fn volume_path(components: &[String]) -> Result<VolumePath, OciError> {
    Ok(VolumePath::parse(&components.join("/"))?)
}

/// An entry's owner (sandbox root when the sandbox ids do not reach its ids) and mode,
/// never setuid or setgid: no sandbox process could gain privileges from them anyway
/// (`no_new_privs`).
fn ownership(header: &tar::Header, ids: IdMap) -> Ownership {
    let id = |value: io::Result<u64>| value.ok().and_then(|v| u32::try_from(v).ok());
    Ownership {
        uid: Some(
            id(header.uid())
                .filter(|uid| ids.host_uid(*uid).is_some())
                .unwrap_or(0),
        ),
        gid: Some(
            id(header.gid())
                .filter(|gid| ids.host_gid(*gid).is_some())
                .unwrap_or(0),
        ),
        mode: header.mode().ok().map(|mode| mode & 0o1777),
    }
}

/// A running SHA-256 shared between a reader and whoever checks it at the end.
#[derive(Debug, Clone, Default)]
struct HashHandle(std::rc::Rc<std::cell::RefCell<Sha256>>);

impl HashHandle {
    fn finish(&self) -> String {
        hex(&self.0.borrow().clone().finalize())
    }
}

struct HashingReader {
    inner: Box<dyn Read>,
    hash: HashHandle,
}

impl Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hash.0.borrow_mut().update(&buf[..read]);
        Ok(read)
    }
}
