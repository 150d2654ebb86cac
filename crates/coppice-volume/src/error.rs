//! What can go wrong inside a volume, classified for the API's status codes.

use std::io;

/// The class of a [`VolumeFsError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeFsErrorKind {
    /// The path or an owner is not acceptable.
    Invalid,
    /// Nothing at that path.
    NotFound,
    /// Something is there that does not fit (a file where a directory is needed, an
    /// existing directory).
    Conflict,
    /// The disk is full or a quota is reached.
    OutOfSpace,
    /// A failure of the host.
    Internal,
}

/// A volume file operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeFsError {
    /// A path that cannot name anything inside a volume.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given (truncated).
        path: String,
        /// Why.
        reason: String,
    },
    /// A symlink where a directory was to be walked through.
    #[error("{path} passes through a symlink, which volume paths may not follow")]
    Symlink {
        /// The path.
        path: String,
    },
    /// An owner or mode out of range.
    #[error("{what} {value} is not allowed: {reason}")]
    Attribute {
        /// `uid`, `gid` or `mode`.
        what: &'static str,
        /// The value.
        value: u32,
        /// Why.
        reason: &'static str,
    },
    /// Nothing at that path.
    #[error("{path} does not exist")]
    NotFound {
        /// The path.
        path: String,
    },
    /// The path names something of the wrong kind, or something already there.
    #[error("{path}: {reason}")]
    Conflict {
        /// The path.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// A tar that cannot be restored; nothing of it was written.
    #[error("the archive is refused: {reason}")]
    InvalidArchive {
        /// Why.
        reason: String,
    },
    /// A system call failed.
    #[error("cannot {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl VolumeFsError {
    /// The class of the error.
    pub fn kind(&self) -> VolumeFsErrorKind {
        match self {
            Self::InvalidPath { .. }
            | Self::Symlink { .. }
            | Self::Attribute { .. }
            | Self::InvalidArchive { .. } => VolumeFsErrorKind::Invalid,
            Self::NotFound { .. } => VolumeFsErrorKind::NotFound,
            Self::Conflict { .. } => VolumeFsErrorKind::Conflict,
            Self::Io { source, .. } => {
                use rustix::io::Errno;
                match source.raw_os_error().map(Errno::from_raw_os_error) {
                    Some(Errno::NOSPC | Errno::DQUOT) => VolumeFsErrorKind::OutOfSpace,
                    // What a sandbox changed under the call: something is in the way.
                    Some(Errno::NOTEMPTY | Errno::ISDIR | Errno::NOTDIR | Errno::EXIST) => {
                        VolumeFsErrorKind::Conflict
                    }
                    Some(Errno::NAMETOOLONG) => VolumeFsErrorKind::Invalid,
                    _ => VolumeFsErrorKind::Internal,
                }
            }
        }
    }
}
