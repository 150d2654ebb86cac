//! Symbolic and hard links, made without following anything (for restoring directory
//! snapshots).

use std::os::fd::AsFd;

use rustix::fs::{AtFlags, FileType, Gid, Uid};
use rustix::io::Errno;

use super::{HostOwnership, VolumeFs, conflict, io_error};
use crate::error::VolumeFsError;
use crate::path::VolumePath;

impl VolumeFs {
    /// Makes `path` a symlink to `target` (stored as given, never followed here), replacing
    /// a file or link already there; missing parents are made.
    ///
    /// # Errors
    /// `Conflict` when a directory is at `path`; `Attribute`; `Symlink`; `Io`.
    pub fn make_symlink(
        &self,
        path: &VolumePath,
        target: &str,
        ownership: &super::Ownership,
    ) -> Result<(), VolumeFsError> {
        let Some((parent_components, name)) = path.split_last() else {
            return Err(conflict(path, "the root cannot be a symlink"));
        };
        let owner = self.host_ownership(ownership, super::DEFAULT_DIR_MODE, None)?;
        let parent = self.walk(
            parent_components,
            path,
            Some(self.parent_ownership(ownership)?),
        )?;
        self.clear_non_directory(parent.as_fd(), name, path)?;
        rustix::fs::symlinkat(target, &parent, name)
            .map_err(|e| io_error("create symlink", path, e))?;
        chown_link(parent.as_fd(), name, owner, path)
    }

    /// Makes `path` a second name of the file at `existing`, replacing a file or link already
    /// there; missing parents are made. A symlink at `existing` is linked, not followed.
    ///
    /// # Errors
    /// `NotFound` for a missing `existing`; `Conflict` when a directory is at `path`;
    /// `Symlink`; `Io`.
    pub fn make_hardlink(
        &self,
        path: &VolumePath,
        existing: &VolumePath,
    ) -> Result<(), VolumeFsError> {
        let (Some((parent_components, name)), Some((source_components, source_name))) =
            (path.split_last(), existing.split_last())
        else {
            return Err(conflict(path, "the root cannot be a hard link"));
        };
        let owner = self.parent_ownership(&super::Ownership::default())?;
        let source_parent = self.walk(source_components, existing, None)?;
        let parent = self.walk(parent_components, path, Some(owner))?;
        self.clear_non_directory(parent.as_fd(), name, path)?;
        match rustix::fs::linkat(&source_parent, source_name, &parent, name, AtFlags::empty()) {
            Ok(()) => Ok(()),
            Err(Errno::NOENT) => Err(super::not_found(existing)),
            Err(errno) => Err(io_error("create hard link", path, errno)),
        }
    }

    /// Removes a symlink, FIFO, socket or device at `path` so that a file can take its
    /// place; a file, a directory or nothing is left alone.
    pub(crate) fn clear_special(&self, path: &VolumePath) -> Result<(), VolumeFsError> {
        let Some((parent_components, name)) = path.split_last() else {
            return Ok(());
        };
        let parent = match self.walk(parent_components, path, None) {
            Err(VolumeFsError::NotFound { .. }) => return Ok(()),
            other => other?,
        };
        match rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat)
                if !matches!(
                    FileType::from_raw_mode(stat.st_mode),
                    FileType::RegularFile | FileType::Directory
                ) =>
            {
                rustix::fs::unlinkat(&parent, name, AtFlags::empty())
                    .map_err(|e| io_error("replace", path, e))
            }
            Ok(_) | Err(Errno::NOENT) => Ok(()),
            Err(errno) => Err(io_error("stat", path, errno)),
        }
    }

    /// Removes what is at `name` in `parent` unless it is a directory (an error) or nothing.
    fn clear_non_directory(
        &self,
        parent: std::os::fd::BorrowedFd<'_>,
        name: &std::ffi::OsStr,
        path: &VolumePath,
    ) -> Result<(), VolumeFsError> {
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                Err(conflict(path, "a directory is in the way"))
            }
            Ok(_) => rustix::fs::unlinkat(parent, name, AtFlags::empty())
                .map_err(|e| io_error("replace", path, e)),
            Err(Errno::NOENT) => Ok(()),
            Err(errno) => Err(io_error("stat", path, errno)),
        }
    }
}

fn chown_link(
    parent: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    owner: HostOwnership,
    path: &VolumePath,
) -> Result<(), VolumeFsError> {
    rustix::fs::chownat(
        parent,
        name,
        Some(Uid::from_raw(owner.uid)),
        Some(Gid::from_raw(owner.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| io_error("change the owner of", path, e))
}
