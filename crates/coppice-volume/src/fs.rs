//! The operations of the content API on one volume, each walking from the volume's root
//! descriptor without following a symlink.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use coppice_core::volume::IdMap;
use rustix::fs::{AtFlags, Dir, FileType, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;

use crate::entry::Entry;
use crate::error::VolumeFsError;
use crate::path::VolumePath;

pub use archive::ArchiveSummary;

/// Sandbox uid and gid that new entries get unless the request names others: the templates'
/// `user` (when mapped).
const DEFAULT_OWNER: u32 = 1000;
/// Permission bits of new directories unless the request names others.
const DEFAULT_DIR_MODE: u32 = 0o755;
/// Permission bits of new files unless the request names others.
const DEFAULT_FILE_MODE: u32 = 0o644;
/// The permission bits a request may set: no setuid or setgid.
const ALLOWED_MODE_BITS: u32 = 0o1777;
/// Deepest directory nesting that listing, removal and snapshots walk: each level holds a
/// descriptor, and a hostile sandbox can nest directories cheaply.
pub(crate) const MAX_DEPTH: u32 = 256;
/// Uploads are written under this prefix and renamed into place when complete.
const UPLOAD_PREFIX: &str = ".coppice-upload-";

/// Owner and permission bits asked for, in sandbox ids; `None` keeps the default (or, for an
/// existing entry, what it has).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ownership {
    /// Owner uid.
    pub uid: Option<u32>,
    /// Group gid.
    pub gid: Option<u32>,
    /// Permission bits.
    pub mode: Option<u32>,
}

/// The resolved host owner and mode for one entry.
#[derive(Debug, Clone, Copy)]
struct HostOwnership {
    uid: u32,
    gid: u32,
    mode: u32,
}

/// One volume's directory, open.
#[derive(Debug)]
pub struct VolumeFs {
    root: OwnedFd,
    ids: IdMap,
}

impl VolumeFs {
    /// Opens the volume whose directory is `root`; `ids` maps sandbox ids to host ids.
    /// `root` itself is the host's choice and may be a symlink (a sandbox's
    /// `/proc/<pid>/root`); nothing below it is followed.
    ///
    /// # Errors
    /// [`VolumeFsError::Io`] when the directory cannot be opened.
    pub fn open(root: &Path, ids: IdMap) -> Result<Self, VolumeFsError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let root_fd =
            rustix::fs::open(root, flags, Mode::empty()).map_err(|errno| VolumeFsError::Io {
                op: "open the volume at",
                path: root.display().to_string(),
                source: errno.into(),
            })?;
        Ok(Self { root: root_fd, ids })
    }

    /// What is at `path`.
    ///
    /// # Errors
    /// `NotFound`, `Symlink`, `Io`.
    pub fn stat(&self, path: &VolumePath) -> Result<Entry, VolumeFsError> {
        let Some((parent, name)) = path.split_last() else {
            let stat = rustix::fs::fstat(&self.root).map_err(|e| io_error("stat", path, e))?;
            return Ok(Entry::from_stat(
                path.to_string(),
                String::new(),
                &stat,
                &self.ids,
                None,
            ));
        };
        let parent = self.walk(parent, path, None)?;
        self.entry_at(parent.as_fd(), name, path)
    }

    /// The entries under directory `path`, sorted by path, down to `depth` levels (1: its
    /// children only). Symlinks are listed, not followed.
    ///
    /// # Errors
    /// `NotFound`, `Conflict` when `path` is not a directory, `Symlink`, `Io`.
    pub fn list(&self, path: &VolumePath, depth: u32) -> Result<Vec<Entry>, VolumeFsError> {
        let dir = self.walk(path.components(), path, None)?;
        let mut entries = Vec::new();
        self.list_into(dir.as_fd(), path, depth.clamp(1, MAX_DEPTH), &mut entries)?;
        Ok(entries)
    }

    fn list_into(
        &self,
        dir: BorrowedFd<'_>,
        path: &VolumePath,
        depth: u32,
        entries: &mut Vec<Entry>,
    ) -> Result<(), VolumeFsError> {
        for name in child_names(dir, path, false)? {
            let child_path = path.join(&name.to_string_lossy());
            let entry = match self.entry_at(dir, &name, &child_path) {
                // Gone since the directory was read: not an error of the listing.
                Err(VolumeFsError::NotFound { .. }) => continue,
                other => other?,
            };
            let descend = depth > 1 && entry.kind == crate::EntryKind::Directory;
            entries.push(entry);
            if descend {
                // Opened without following: if it was swapped for a symlink meanwhile, the
                // walk stops with an error instead of leaving the volume.
                let child = match open_dir_at(dir, &name, &child_path) {
                    Err(VolumeFsError::NotFound { .. }) => continue,
                    other => other?,
                };
                self.list_into(child.as_fd(), &child_path, depth - 1, entries)?;
            }
        }
        Ok(())
    }

    /// Creates directory `path` (and, with `parents`, its missing parents, which get the same
    /// owner and the default mode).
    ///
    /// # Errors
    /// `Conflict` when something exists at `path`; `NotFound` for a missing parent without
    /// `parents`; `Attribute`; `Symlink`; `Io`.
    pub fn make_dir(
        &self,
        path: &VolumePath,
        ownership: &Ownership,
        parents: bool,
    ) -> Result<Entry, VolumeFsError> {
        let owner = self.host_ownership(ownership, DEFAULT_DIR_MODE, None)?;
        let Some((parent_components, name)) = path.split_last() else {
            return Err(conflict(path, "the volume's root already exists"));
        };
        let parent_owner = HostOwnership {
            mode: DEFAULT_DIR_MODE,
            ..owner
        };
        let parent = self.walk(parent_components, path, parents.then_some(parent_owner))?;
        match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => return Err(conflict(path, "it already exists")),
            Err(errno) => return Err(io_error("create directory", path, errno)),
        }
        let dir = open_dir_at(parent.as_fd(), name, path)?;
        apply(dir.as_fd(), owner, path)?;
        self.entry_at(parent.as_fd(), name, path)
    }

    /// Opens regular file `path` for reading, with what it is.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` when it is not a regular file; `Symlink`; `Io`.
    pub fn open_file(&self, path: &VolumePath) -> Result<(File, Entry), VolumeFsError> {
        let Some((parent_components, name)) = path.split_last() else {
            return Err(conflict(path, "it is a directory"));
        };
        let parent = self.walk(parent_components, path, None)?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let file = match rustix::fs::openat(&parent, name, flags, Mode::empty()) {
            Ok(file) => file,
            Err(Errno::LOOP) => return Err(conflict(path, "it is a symlink")),
            Err(Errno::NOENT) => return Err(not_found(path)),
            Err(Errno::NXIO) => return Err(conflict(path, "it is not a regular file")),
            Err(errno) => return Err(io_error("open", path, errno)),
        };
        let stat = rustix::fs::fstat(&file).map_err(|e| io_error("stat", path, e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(conflict(path, "it is not a regular file"));
        }
        let entry = Entry::from_stat(
            path.to_string(),
            path.name().to_owned(),
            &stat,
            &self.ids,
            None,
        );
        Ok((File::from(file), entry))
    }

    /// Starts writing file `path`: the content goes to a hidden file beside it, which
    /// [`PendingWrite::commit`] renames into place, so readers never see half a file and a
    /// failed upload leaves the old one. An existing file keeps its owner and mode unless
    /// `ownership` names others.
    ///
    /// # Errors
    /// `Conflict` when `path` is a directory; `NotFound` for a missing parent without
    /// `parents`; `Attribute`; `Symlink`; `Io`.
    pub fn begin_write(
        &self,
        path: &VolumePath,
        ownership: &Ownership,
        parents: bool,
    ) -> Result<PendingWrite, VolumeFsError> {
        let Some((parent_components, name)) = path.split_last() else {
            return Err(conflict(path, "it is a directory"));
        };
        let parent_owner = if parents {
            Some(self.parent_ownership(ownership)?)
        } else {
            None
        };
        let parent = self.walk(parent_components, path, parent_owner)?;
        let existing = match rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
                FileType::RegularFile => Some(stat),
                FileType::Directory => return Err(conflict(path, "it is a directory")),
                _ => return Err(conflict(path, "it is not a regular file")),
            },
            Err(Errno::NOENT) => None,
            Err(errno) => return Err(io_error("stat", path, errno)),
        };
        let owner = self.host_ownership(ownership, DEFAULT_FILE_MODE, existing.as_ref())?;
        let temp = temp_name(path)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let file = rustix::fs::openat(&parent, &temp, flags, Mode::from_raw_mode(0o600))
            .map_err(|e| io_error("create", path, e))?;
        Ok(PendingWrite {
            parent,
            temp,
            name: name.to_owned(),
            path: path.clone(),
            owner,
            ids: self.ids,
            file: Some(File::from(file)),
        })
    }

    /// Changes the owner and permission bits of `path`. A symlink's owner can change, its
    /// mode cannot.
    ///
    /// # Errors
    /// `NotFound`; `Attribute`; `Symlink`; `Io`.
    pub fn set_attributes(
        &self,
        path: &VolumePath,
        ownership: &Ownership,
    ) -> Result<Entry, VolumeFsError> {
        let (uid, gid) = (
            ownership.uid.map(|uid| self.host_uid(uid)).transpose()?,
            ownership.gid.map(|gid| self.host_gid(gid)).transpose()?,
        );
        if let Some(mode) = ownership.mode {
            check_mode(mode)?;
        }
        let Some((parent_components, name)) = path.split_last() else {
            apply_parts(self.root.as_fd(), uid, gid, ownership.mode, path)?;
            return self.stat(path);
        };
        let parent = self.walk(parent_components, path, None)?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        match rustix::fs::openat(&parent, name, flags, Mode::empty()) {
            Ok(entry) => apply_parts(entry.as_fd(), uid, gid, ownership.mode, path)?,
            Err(Errno::NOENT) => return Err(not_found(path)),
            // A symlink (or a socket): only its owner can change, without following it.
            Err(Errno::LOOP | Errno::NXIO) => {
                if ownership.mode.is_some() {
                    return Err(conflict(path, "the mode of a symlink cannot be set"));
                }
                rustix::fs::chownat(
                    &parent,
                    name,
                    uid.map(Uid::from_raw),
                    gid.map(Gid::from_raw),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| io_error("change the owner of", path, e))?;
            }
            Err(errno) => return Err(io_error("open", path, errno)),
        }
        self.entry_at(parent.as_fd(), name, path)
    }

    /// Removes `path`; a directory goes with everything in it. Symlinks are removed, never
    /// followed.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` for the volume's root; `Symlink`; `Io`.
    pub fn remove(&self, path: &VolumePath) -> Result<(), VolumeFsError> {
        let Some((parent_components, name)) = path.split_last() else {
            return Err(conflict(path, "the volume's root cannot be removed"));
        };
        let parent = self.walk(parent_components, path, None)?;
        remove_at(parent.as_fd(), name, path, 0)
    }

    /// Opens directory `components` (of `shown`, for messages) from the root, one component
    /// at a time; with `create`, missing directories are made with that owner and mode.
    fn walk(
        &self,
        components: &[String],
        shown: &VolumePath,
        create: Option<HostOwnership>,
    ) -> Result<OwnedFd, VolumeFsError> {
        let mut dir = rustix::fs::openat(&self.root, ".", dir_flags(), Mode::empty())
            .map_err(|e| io_error("open", shown, e))?;
        let mut walked = VolumePath::parse("")?;
        for component in components {
            walked = walked.join(component);
            let name = OsStr::new(component.as_str());
            dir = match open_dir_at(dir.as_fd(), name, &walked) {
                Err(VolumeFsError::NotFound { .. }) if create.is_some() => {
                    // Someone else's directory (made meanwhile) keeps its owner and mode.
                    let made_here =
                        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)) {
                            Ok(()) => true,
                            Err(Errno::EXIST) => false,
                            Err(errno) => return Err(io_error("create directory", &walked, errno)),
                        };
                    let made = open_dir_at(dir.as_fd(), name, &walked)?;
                    if let (true, Some(owner)) = (made_here, create) {
                        apply(made.as_fd(), owner, &walked)?;
                    }
                    made
                }
                other => other?,
            };
        }
        Ok(dir)
    }

    fn entry_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &VolumePath,
    ) -> Result<Entry, VolumeFsError> {
        let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::NOENT) => return Err(not_found(path)),
            Err(errno) => return Err(io_error("stat", path, errno)),
        };
        let target = if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
            rustix::fs::readlinkat(dir, name, Vec::new())
                .ok()
                .map(|target| target.to_string_lossy().into_owned())
        } else {
            None
        };
        Ok(Entry::from_stat(
            path.to_string(),
            name.to_string_lossy().into_owned(),
            &stat,
            &self.ids,
            target,
        ))
    }

    /// The owner and mode of parent directories made on the way to an entry: the entry's
    /// owner, the default directory mode (the entry's own mode is no directory's).
    fn parent_ownership(&self, ownership: &Ownership) -> Result<HostOwnership, VolumeFsError> {
        let owner = self.host_ownership(ownership, DEFAULT_DIR_MODE, None)?;
        Ok(HostOwnership {
            mode: DEFAULT_DIR_MODE,
            ..owner
        })
    }

    /// The sandbox id new entries get by default: the templates' `user` when the id map has
    /// it, else the map's first id.
    fn default_owner(&self) -> u32 {
        if self.ids.host_uid(DEFAULT_OWNER).is_some() && self.ids.host_gid(DEFAULT_OWNER).is_some()
        {
            DEFAULT_OWNER
        } else {
            0
        }
    }

    fn host_uid(&self, uid: u32) -> Result<u32, VolumeFsError> {
        self.ids.host_uid(uid).ok_or(VolumeFsError::Attribute {
            what: "uid",
            value: uid,
            reason: "it is outside the sandboxes' id range",
        })
    }

    fn host_gid(&self, gid: u32) -> Result<u32, VolumeFsError> {
        self.ids.host_gid(gid).ok_or(VolumeFsError::Attribute {
            what: "gid",
            value: gid,
            reason: "it is outside the sandboxes' id range",
        })
    }

    /// The host owner and mode for a new or rewritten entry: what was asked, else what the
    /// existing entry has, else the defaults.
    fn host_ownership(
        &self,
        ownership: &Ownership,
        default_mode: u32,
        existing: Option<&rustix::fs::Stat>,
    ) -> Result<HostOwnership, VolumeFsError> {
        let uid = match (ownership.uid, existing) {
            (Some(uid), _) => self.host_uid(uid)?,
            (None, Some(stat)) => stat.st_uid,
            (None, None) => self.host_uid(self.default_owner())?,
        };
        let gid = match (ownership.gid, existing) {
            (Some(gid), _) => self.host_gid(gid)?,
            (None, Some(stat)) => stat.st_gid,
            (None, None) => self.host_gid(self.default_owner())?,
        };
        let mode = match (ownership.mode, existing) {
            (Some(mode), _) => check_mode(mode)?,
            (None, Some(stat)) => crate::entry::raw_mode(stat) & ALLOWED_MODE_BITS,
            (None, None) => default_mode,
        };
        Ok(HostOwnership { uid, gid, mode })
    }
}

/// A file being uploaded: write its content to [`PendingWrite::file`], then
/// [`commit`](PendingWrite::commit). Dropped uncommitted, it leaves nothing behind.
#[derive(Debug)]
pub struct PendingWrite {
    parent: OwnedFd,
    temp: OsString,
    name: OsString,
    path: VolumePath,
    owner: HostOwnership,
    ids: IdMap,
    file: Option<File>,
}

impl PendingWrite {
    /// The file to write the content to (once; later calls return `None`).
    pub fn take_file(&mut self) -> Option<File> {
        self.file.take()
    }

    /// Makes the written content durable, gives it its owner and mode, and renames it into
    /// place; `file` is what [`take_file`](Self::take_file) returned, after writing.
    ///
    /// # Errors
    /// `Io` (`OutOfSpace` when the disk is full); the old file, if any, is kept.
    pub fn commit(self, file: File) -> Result<Entry, VolumeFsError> {
        let path = self.path.clone();
        rustix::fs::fsync(&file).map_err(|e| io_error("write", &path, e))?;
        apply(file.as_fd(), self.owner, &path)?;
        rustix::fs::renameat(&self.parent, &self.temp, &self.parent, &self.name)
            .map_err(|e| io_error("rename into place", &path, e))?;
        let stat = rustix::fs::fstat(&file).map_err(|e| io_error("stat", &path, e))?;
        drop(file);
        // Renamed: nothing is left for `drop` to remove.
        let mut this = self;
        this.temp.clear();
        Ok(Entry::from_stat(
            path.to_string(),
            path.name().to_owned(),
            &stat,
            &this.ids,
            None,
        ))
    }
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        if !self.temp.is_empty() {
            let _ = rustix::fs::unlinkat(&self.parent, &self.temp, AtFlags::empty());
        }
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn open_dir_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    path: &VolumePath,
) -> Result<OwnedFd, VolumeFsError> {
    match rustix::fs::openat(dir, name, dir_flags(), Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOENT) => Err(not_found(path)),
        Err(Errno::LOOP) => Err(VolumeFsError::Symlink {
            path: path.to_string(),
        }),
        // With O_DIRECTORY, a symlink may fail as "not a directory" rather than as a loop.
        Err(Errno::NOTDIR) => match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink => {
                Err(VolumeFsError::Symlink {
                    path: path.to_string(),
                })
            }
            _ => Err(conflict(path, "it is not a directory")),
        },
        Err(errno) => Err(io_error("open", path, errno)),
    }
}

/// The names in `dir`, sorted, without `.` and `..`; unfinished uploads only with
/// `with_uploads`.
fn child_names(
    dir: BorrowedFd<'_>,
    path: &VolumePath,
    with_uploads: bool,
) -> Result<Vec<OsString>, VolumeFsError> {
    let reader = Dir::read_from(dir).map_err(|e| io_error("list", path, e))?;
    let mut names = Vec::new();
    for item in reader {
        let item = item.map_err(|e| io_error("list", path, e))?;
        let name = item.file_name().to_bytes();
        let upload = name.starts_with(UPLOAD_PREFIX.as_bytes());
        if name == b"." || name == b".." || (upload && !with_uploads) {
            continue;
        }
        names.push(OsStr::from_bytes(name).to_owned());
    }
    names.sort();
    Ok(names)
}

fn remove_at(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    path: &VolumePath,
    depth: u32,
) -> Result<(), VolumeFsError> {
    let stat = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::NOENT) => return Err(not_found(path)),
        Err(errno) => return Err(io_error("stat", path, errno)),
    };
    if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
        if depth >= MAX_DEPTH {
            return Err(too_deep(path));
        }
        let dir = open_dir_at(parent, name, path)?;
        for child in child_names(dir.as_fd(), path, true)? {
            let child_path = path.join(&child.to_string_lossy());
            match remove_at(dir.as_fd(), &child, &child_path, depth + 1) {
                // Removed meanwhile by someone else: just as good.
                Err(VolumeFsError::NotFound { .. }) | Ok(()) => {}
                Err(error) => return Err(error),
            }
        }
        rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)
            .map_err(|e| io_error("remove", path, e))
    } else {
        rustix::fs::unlinkat(parent, name, AtFlags::empty())
            .map_err(|e| io_error("remove", path, e))
    }
}

fn apply(fd: BorrowedFd<'_>, owner: HostOwnership, path: &VolumePath) -> Result<(), VolumeFsError> {
    apply_parts(fd, Some(owner.uid), Some(owner.gid), Some(owner.mode), path)
}

fn apply_parts(
    fd: BorrowedFd<'_>,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
    path: &VolumePath,
) -> Result<(), VolumeFsError> {
    if uid.is_some() || gid.is_some() {
        rustix::fs::fchown(fd, uid.map(Uid::from_raw), gid.map(Gid::from_raw))
            .map_err(|e| io_error("change the owner of", path, e))?;
    }
    // After the owner: changing the owner clears setgid-like bits.
    if let Some(mode) = mode {
        rustix::fs::fchmod(fd, Mode::from_raw_mode(raw_mode(mode)))
            .map_err(|e| io_error("change the mode of", path, e))?;
    }
    Ok(())
}

/// `mode` (permission bits, checked by `check_mode`) as the platform's mode type: `u32` on
/// Linux, `u16` on FreeBSD.
#[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
fn raw_mode(mode: u32) -> rustix::fs::RawMode {
    rustix::fs::RawMode::try_from(mode & 0o7777).unwrap_or(0)
}

fn check_mode(mode: u32) -> Result<u32, VolumeFsError> {
    if mode & !ALLOWED_MODE_BITS != 0 {
        return Err(VolumeFsError::Attribute {
            what: "mode",
            value: mode,
            reason: "only permission bits and the sticky bit may be set (no setuid or setgid)",
        });
    }
    Ok(mode)
}

fn temp_name(path: &VolumePath) -> Result<OsString, VolumeFsError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| VolumeFsError::Io {
        op: "pick a temporary name for",
        path: path.to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(OsString::from(format!("{UPLOAD_PREFIX}{suffix}")))
}

fn too_deep(path: &VolumePath) -> VolumeFsError {
    conflict(path, "directories are nested too deep (256 levels at most)")
}

fn not_found(path: &VolumePath) -> VolumeFsError {
    VolumeFsError::NotFound {
        path: path.to_string(),
    }
}

fn conflict(path: &VolumePath, reason: &'static str) -> VolumeFsError {
    VolumeFsError::Conflict {
        path: path.to_string(),
        reason,
    }
}

fn io_error(op: &'static str, path: &VolumePath, errno: Errno) -> VolumeFsError {
    VolumeFsError::Io {
        op,
        path: path.to_string(),
        source: errno.into(),
    }
}

mod archive;
mod links;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_support {
    //! Helpers shared by the tests of this module and its children.
    use coppice_core::volume::IdMap;

    use crate::path::VolumePath;

    /// The caller's ids as sandbox ids 0..1 (so "uid 0" is whoever runs the test).
    pub fn own_ids() -> IdMap {
        IdMap {
            uid_base: rustix::process::geteuid().as_raw(),
            gid_base: rustix::process::getegid().as_raw(),
            count: 1,
        }
    }

    pub fn path(raw: &str) -> VolumePath {
        VolumePath::parse(raw).unwrap()
    }
}
