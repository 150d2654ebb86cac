//! Directory snapshots: one directory of a confined root written as a tar (hashed with
//! SHA-256 as it is written), and a tar checked whole before any of it is written back.
//!
//! A tar is refused before anything is written if any entry is absolute or has `..`, sits
//! below a symlink of the same archive (the classic way to write through a link), is a hard
//! link to anything but an earlier file of the archive, appears twice, or is not a file,
//! directory or link. A symlink's target is stored as it is, even absolute (a Python
//! virtualenv's `bin/python` is one): it is only ever resolved by the sandbox, inside its own
//! root, because restoring never follows a symlink, neither one of the archive nor one the
//! sandbox planted.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use sha2::{Digest, Sha256};

use super::{MAX_DEPTH, Ownership, VolumeFs, child_names, io_error, open_dir_at};
use crate::entry::raw_mode;
use crate::error::VolumeFsError;
use crate::path::VolumePath;

/// Most bytes of file content one snapshot holds (sizes as `stat` reports them, so a sparse
/// file counts in full, as the tar stores it).
const MAX_ARCHIVE_BYTES: u64 = 16 << 30;
/// Most entries one snapshot holds.
const MAX_ARCHIVE_ENTRIES: u64 = 1_000_000;

/// What an archive holds so far, against its limits.
#[derive(Debug, Default)]
struct Tally {
    entries: u64,
    bytes: u64,
}

impl Tally {
    fn count(&mut self, stat: &rustix::fs::Stat, path: &VolumePath) -> Result<(), VolumeFsError> {
        self.bytes = self
            .bytes
            .saturating_add(u64::try_from(stat.st_size).unwrap_or(0));
        if self.bytes > MAX_ARCHIVE_BYTES || self.entries >= MAX_ARCHIVE_ENTRIES {
            return Err(VolumeFsError::Conflict {
                path: path.to_string(),
                reason: "the directory holds more than a snapshot may (16 GiB, 1,000,000 entries)",
            });
        }
        Ok(())
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// SHA-256 of the whole tar, lowercase hex.
    pub sha256: String,
    /// Size of the tar in bytes.
    pub size_bytes: u64,
    /// Entries in it (files, directories, links).
    pub entries: u64,
}

impl VolumeFs {
    /// Writes directory `path` and everything below it to `out` as a tar whose entry names
    /// are relative to `path`. Symlinks are stored as links; FIFOs, sockets and devices are
    /// left out; owners are stored as sandbox ids.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` when `path` is not a directory; `Symlink`; `Io`.
    pub fn archive(
        &self,
        path: &VolumePath,
        out: impl Write,
    ) -> Result<ArchiveSummary, VolumeFsError> {
        let dir = self.walk(path.components(), path, None)?;
        let mut builder = tar::Builder::new(HashingWriter::new(out));
        let mut tally = Tally::default();
        self.append_children(&mut builder, dir.as_fd(), path, "", &mut tally, 0)?;
        let writer = builder
            .into_inner()
            .map_err(|e| archive_error("finish the archive of", path, e))?;
        Ok(writer.summary(tally.entries))
    }

    fn append_children<W: Write>(
        &self,
        builder: &mut tar::Builder<W>,
        dir: BorrowedFd<'_>,
        path: &VolumePath,
        prefix: &str,
        tally: &mut Tally,
        depth: u32,
    ) -> Result<(), VolumeFsError> {
        if depth >= MAX_DEPTH {
            return Err(super::too_deep(path));
        }
        for name in child_names(dir, path, false)? {
            let Some(text) = name.to_str() else {
                // Tar names are stored as they are, but restore works on UTF-8 paths only.
                continue;
            };
            let child_path = path.join(text);
            let relative = format!("{prefix}{text}");
            let stat = match rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                // Gone since the directory was read.
                Err(rustix::io::Errno::NOENT) => continue,
                Err(errno) => return Err(io_error("stat", &child_path, errno)),
            };
            tally.count(&stat, &child_path)?;
            let mut header = tar::Header::new_gnu();
            header.set_mode(raw_mode(&stat) & 0o7777);
            header.set_uid(u64::from(
                self.ids.sandbox_uid(stat.st_uid).unwrap_or(65_534),
            ));
            header.set_gid(u64::from(
                self.ids.sandbox_gid(stat.st_gid).unwrap_or(65_534),
            ));
            header.set_mtime(u64::try_from(stat.st_mtime).unwrap_or(0));
            let written = match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, format!("{relative}/"), io::empty())
                        .map_err(|e| archive_error("archive", &child_path, e))?;
                    let child = open_dir_at(dir, &name, &child_path)?;
                    self.append_children(
                        builder,
                        child.as_fd(),
                        &child_path,
                        &format!("{relative}/"),
                        tally,
                        depth + 1,
                    )?;
                    true
                }
                FileType::RegularFile => {
                    let flags =
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
                    let file = rustix::fs::openat(dir, &name, flags, Mode::empty())
                        .map_err(|e| io_error("open", &child_path, e))?;
                    let size = u64::try_from(stat.st_size).unwrap_or(0);
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(size);
                    // Exactly `size` bytes, whatever the file does meanwhile: a tar entry
                    // shorter or longer than its header would break the archive.
                    let content = ExactLength::new(std::fs::File::from(file), size);
                    builder
                        .append_data(&mut header, &relative, content)
                        .map_err(|e| archive_error("archive", &child_path, e))?;
                    true
                }
                FileType::Symlink => {
                    let target = rustix::fs::readlinkat(dir, &name, Vec::new())
                        .map_err(|e| io_error("read the symlink", &child_path, e))?;
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    let target = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                        target.as_bytes(),
                    );
                    builder
                        .append_link(&mut header, &relative, target)
                        .map_err(|e| archive_error("archive", &child_path, e))?;
                    true
                }
                _ => false,
            };
            if written {
                tally.entries += 1;
            }
        }
        Ok(())
    }

    /// Checks every entry of `archive`, then (only if all pass) writes them below directory
    /// `into`, made if missing. Files are written whole and renamed into place; what is
    /// already there is replaced, directories are merged. Returns how many entries were
    /// written.
    ///
    /// # Errors
    /// `InvalidArchive` for a refused tar (nothing written); `Conflict`; `Symlink`; `Io`.
    pub fn extract<R: Read + Seek>(
        &self,
        archive: &mut R,
        into: &VolumePath,
    ) -> Result<u64, VolumeFsError> {
        let plan = plan(archive)?;
        archive
            .seek(SeekFrom::Start(0))
            .map_err(|e| archive_error("rewind", into, e))?;
        if self.stat(into).is_err() {
            self.make_dir(into, &Ownership::default(), true)?;
        }
        let mut reader = tar::Archive::new(archive);
        let mut written = 0u64;
        let mut index = 0usize;
        for entry in reader
            .entries()
            .map_err(|e| archive_error("read", into, e))?
        {
            let mut entry = entry.map_err(|e| archive_error("read", into, e))?;
            if skipped(entry.header().entry_type()) {
                continue;
            }
            // The same entries `plan` kept, in the same order, or the file changed under us.
            let components = entry_components(&entry.path_bytes()).unwrap_or_default();
            if components.is_empty() {
                continue;
            }
            let Some(planned) = plan.get(index).filter(|p| p.components == components) else {
                return Err(VolumeFsError::Conflict {
                    path: into.to_string(),
                    reason: "the snapshot's file changed while it was restored",
                });
            };
            index += 1;
            let target = join(into, &planned.components);
            let ownership = self.archived_ownership(entry.header());
            match &planned.kind {
                PlannedKind::Directory => {
                    if self
                        .stat(&target)
                        .is_ok_and(|e| e.kind == crate::EntryKind::Directory)
                    {
                        self.set_attributes(&target, &ownership)?;
                    } else {
                        self.make_dir(&target, &ownership, true)?;
                    }
                }
                PlannedKind::File => {
                    self.clear_special(&target)?;
                    let mut pending = self.begin_write(&target, &ownership, true)?;
                    let mut file = pending.take_file().ok_or(VolumeFsError::Conflict {
                        path: target.to_string(),
                        reason: "the file being restored was taken twice",
                    })?;
                    io::copy(&mut entry, &mut file)
                        .map_err(|e| archive_error("restore", &target, e))?;
                    pending.commit(file)?;
                }
                PlannedKind::Symlink(link) => self.make_symlink(&target, link, &ownership)?,
                PlannedKind::Hardlink(existing) => {
                    self.make_hardlink(&target, &join(into, existing))?
                }
            }
            written += 1;
        }
        Ok(written)
    }

    /// The owner and mode an archived entry gets back: its own when they are sandbox ids this
    /// volume maps, the defaults otherwise; never setuid or setgid.
    fn archived_ownership(&self, header: &tar::Header) -> Ownership {
        let id = |value: io::Result<u64>| value.ok().and_then(|v| u32::try_from(v).ok());
        let uid = id(header.uid()).filter(|uid| self.ids.host_uid(*uid).is_some());
        let gid = id(header.gid()).filter(|gid| self.ids.host_gid(*gid).is_some());
        Ownership {
            uid,
            gid,
            mode: header.mode().ok().map(|mode| mode & 0o1777),
        }
    }
}

/// What a path of the archive is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Directory,
    File,
    Symlink,
}

/// One checked entry.
#[derive(Debug)]
struct Planned {
    components: Vec<String>,
    kind: PlannedKind,
}

#[derive(Debug)]
enum PlannedKind {
    Directory,
    File,
    Symlink(String),
    Hardlink(Vec<String>),
}

/// Reads the whole archive and checks every entry; nothing is written.
fn plan<R: Read>(archive: &mut R) -> Result<Vec<Planned>, VolumeFsError> {
    let mut reader = tar::Archive::new(archive);
    let mut planned = Vec::new();
    // What each path is, for entries and for the directories they imply.
    let mut kinds: BTreeMap<Vec<String>, Kind> = BTreeMap::new();
    let mut named = BTreeSet::new();
    let mut files = BTreeSet::new();
    let entries = reader
        .entries()
        .map_err(|e| refused(&format!("not a tar archive: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| refused(&format!("unreadable entry: {e}")))?;
        let entry_type = entry.header().entry_type();
        if skipped(entry_type) {
            continue;
        }
        let raw = entry.path_bytes();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let components = entry_components(&raw)
            .map_err(|reason| refused(&format!("entry {shown:?}: {reason}")))?;
        if components.is_empty() {
            // `./`, the extraction directory itself.
            continue;
        }
        if !named.insert(components.clone()) {
            return Err(refused(&format!("entry {shown:?} appears twice")));
        }
        for n in 1..components.len() {
            match kinds.get(&components[..n]) {
                Some(Kind::Symlink) => {
                    return Err(refused(&format!(
                        "entry {shown:?} lies below a symlink of the archive"
                    )));
                }
                Some(Kind::File) => {
                    return Err(refused(&format!(
                        "entry {shown:?} lies below a file of the archive"
                    )));
                }
                Some(Kind::Directory) => {}
                None => {
                    kinds.insert(components[..n].to_vec(), Kind::Directory);
                }
            }
        }
        let kind = match entry_type {
            tar::EntryType::Directory => PlannedKind::Directory,
            tar::EntryType::Regular | tar::EntryType::Continuous => PlannedKind::File,
            tar::EntryType::Symlink => PlannedKind::Symlink(link_text(&entry, &shown)?),
            tar::EntryType::Link => {
                let target = link_text(&entry, &shown)?;
                let existing = entry_components(target.as_bytes()).map_err(|reason| {
                    refused(&format!("hard link {shown:?} to {target:?}: {reason}"))
                })?;
                if !files.contains(&existing) {
                    return Err(refused(&format!(
                        "hard link {shown:?} names {target:?}, which is not an earlier file of the archive"
                    )));
                }
                PlannedKind::Hardlink(existing)
            }
            other => {
                return Err(refused(&format!(
                    "entry {shown:?} is a {other:?}; only files, directories and links are restored"
                )));
            }
        };
        let this = match kind {
            PlannedKind::Directory => Kind::Directory,
            PlannedKind::Symlink(_) => Kind::Symlink,
            PlannedKind::File | PlannedKind::Hardlink(_) => Kind::File,
        };
        if this != Kind::Directory && kinds.get(&components) == Some(&Kind::Directory) {
            return Err(refused(&format!(
                "entry {shown:?} would replace a directory of the archive"
            )));
        }
        kinds.insert(components.clone(), this);
        if matches!(kind, PlannedKind::File) {
            files.insert(components.clone());
        }
        planned.push(Planned { components, kind });
    }
    Ok(planned)
}

/// Header-only entries the reader has already applied.
fn skipped(entry_type: tar::EntryType) -> bool {
    matches!(
        entry_type,
        tar::EntryType::XHeader
            | tar::EntryType::XGlobalHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink
    )
}

/// The normal components of an entry name: relative, UTF-8, no `..`.
fn entry_components(raw: &[u8]) -> Result<Vec<String>, &'static str> {
    let text = std::str::from_utf8(raw).map_err(|_| "its name is not UTF-8")?;
    if text.starts_with('/') {
        return Err("its name is absolute");
    }
    if text.contains('\0') {
        return Err("its name contains NUL");
    }
    let mut components = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("its name contains '..'"),
            name => components.push(name.to_owned()),
        }
    }
    Ok(components)
}

fn link_text<R: Read>(entry: &tar::Entry<'_, R>, shown: &str) -> Result<String, VolumeFsError> {
    let target = entry
        .link_name_bytes()
        .ok_or_else(|| refused(&format!("link {shown:?} has no target")))?;
    String::from_utf8(target.into_owned())
        .map_err(|_| refused(&format!("the target of link {shown:?} is not UTF-8")))
}

fn join(base: &VolumePath, components: &[String]) -> VolumePath {
    components
        .iter()
        .fold(base.clone(), |path, part| path.join(part))
}

fn refused(reason: &str) -> VolumeFsError {
    VolumeFsError::InvalidArchive {
        reason: reason.to_owned(),
    }
}

fn archive_error(op: &'static str, path: &VolumePath, source: io::Error) -> VolumeFsError {
    VolumeFsError::Io {
        op,
        path: path.to_string(),
        source,
    }
}

/// A writer that hashes and counts what goes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn summary(self, entries: u64) -> ArchiveSummary {
        let digest = self.hasher.finalize();
        ArchiveSummary {
            sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
            size_bytes: self.bytes,
            entries,
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Exactly `remaining` bytes of `inner`: cut when it has more, padded with zeros when less.
struct ExactLength<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> ExactLength<R> {
    fn new(inner: R, remaining: u64) -> Self {
        Self { inner, remaining }
    }
}

impl<R: Read> Read for ExactLength<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let read = match self.inner.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                want
            }
            read => read,
        };
        self.remaining -= read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests;
