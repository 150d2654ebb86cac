//! What the content API reports about one file, directory or symlink.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coppice_core::volume::IdMap;
use rustix::fs::{FileType, Stat};

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link (never followed).
    Symlink,
    /// Anything else (a FIFO, a socket, a device node).
    Unknown,
}

/// One entry of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its name (`""` for the root).
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
    /// Its path inside the volume, starting with `/`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// Owner, as a sandbox uid (65534, `nobody`, when unmapped).
    pub uid: u32,
    /// Group, as a sandbox gid (65534, `nogroup`, when unmapped).
    pub gid: u32,
    /// Last access.
    pub atime: SystemTime,
    /// Last modification.
    pub mtime: SystemTime,
    /// Last status change.
    pub ctime: SystemTime,
    /// Where a symlink points, as stored.
    pub target: Option<String>,
}

/// The id reported for a host id no sandbox id maps to.
const UNMAPPED_ID: u32 = 65_534;

impl Entry {
    pub(crate) fn from_stat(
        path: String,
        name: String,
        stat: &Stat,
        ids: &IdMap,
        target: Option<String>,
    ) -> Self {
        let kind = match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => EntryKind::File,
            FileType::Directory => EntryKind::Directory,
            FileType::Symlink => EntryKind::Symlink,
            _ => EntryKind::Unknown,
        };
        Self {
            name,
            kind,
            path,
            size: u64::try_from(stat.st_size).unwrap_or(0),
            mode: raw_mode(stat) & 0o7777,
            uid: ids.sandbox_uid(stat.st_uid).unwrap_or(UNMAPPED_ID),
            gid: ids.sandbox_gid(stat.st_gid).unwrap_or(UNMAPPED_ID),
            atime: time(stat.st_atime, stat.st_atime_nsec),
            mtime: time(stat.st_mtime, stat.st_mtime_nsec),
            ctime: time(stat.st_ctime, stat.st_ctime_nsec),
            target,
        }
    }
}

/// `st_mode` as a `u32`: it is one on Linux, a `u16` on FreeBSD.
#[allow(clippy::useless_conversion)]
pub(crate) fn raw_mode(stat: &Stat) -> u32 {
    u32::from(stat.st_mode)
}

fn time(secs: i64, nanos: impl TryInto<u32>) -> SystemTime {
    let nanos = nanos.try_into().unwrap_or(0);
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH + Duration::new(secs, nanos),
        Err(_) => UNIX_EPOCH,
    }
}
