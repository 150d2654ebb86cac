//! Why an image cannot be imported, classified by kind.

use std::io::ErrorKind;

use coppice_volume::{VolumeFsError, VolumeFsErrorKind};

/// What kind of failure an [`OciError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OciErrorKind {
    /// The image is malformed or refused (an escaping entry, a wrong digest): nothing of it
    /// was written.
    Invalid,
    /// The image, or a blob it names, is not there.
    NotFound,
    /// The image uses something this importer does not read (e.g. a digest other than
    /// sha256).
    Unsupported,
    /// The disk is full or a quota is reached while writing the tree.
    OutOfSpace,
    /// Reading the image or writing the tree failed.
    Io,
}

/// An image import failure.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The image is malformed, or an entry of it is refused.
    #[error("invalid image: {reason}")]
    Invalid {
        /// Why.
        reason: String,
    },
    /// The image or one of its parts is missing.
    #[error("{what} not found in the image")]
    NotFound {
        /// What.
        what: String,
    },
    /// Something the importer does not read.
    #[error("unsupported image: {what}")]
    Unsupported {
        /// What.
        what: String,
    },
    /// Reading the image failed.
    #[error("cannot read the image ({op})")]
    Read {
        /// What was being read.
        op: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the tree failed.
    #[error("cannot write the image's files")]
    Write(#[from] VolumeFsError),
    /// Writing a file's contents failed.
    #[error("cannot write {path}")]
    WriteContents {
        /// The file, inside the tree.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl OciError {
    /// The kind of failure.
    pub fn kind(&self) -> OciErrorKind {
        match self {
            Self::Invalid { .. } => OciErrorKind::Invalid,
            Self::NotFound { .. } => OciErrorKind::NotFound,
            Self::Unsupported { .. } => OciErrorKind::Unsupported,
            Self::Write(error) => match error.kind() {
                // A tree the image makes that the file system cannot hold as written.
                VolumeFsErrorKind::Invalid | VolumeFsErrorKind::Conflict => OciErrorKind::Invalid,
                VolumeFsErrorKind::OutOfSpace => OciErrorKind::OutOfSpace,
                VolumeFsErrorKind::NotFound | VolumeFsErrorKind::Internal => OciErrorKind::Io,
            },
            Self::WriteContents { source, .. }
                if matches!(
                    source.kind(),
                    ErrorKind::StorageFull | ErrorKind::QuotaExceeded
                ) =>
            {
                OciErrorKind::OutOfSpace
            }
            // A stream that does not decode (corrupt gzip or zstd, a truncated tar) is the
            // image's fault, not the host's.
            Self::Read { source, .. }
                if matches!(
                    source.kind(),
                    ErrorKind::InvalidData | ErrorKind::UnexpectedEof
                ) =>
            {
                OciErrorKind::Invalid
            }
            Self::Read { .. } | Self::WriteContents { .. } => OciErrorKind::Io,
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Self::Invalid {
            reason: reason.into(),
        }
    }

    pub(crate) fn read(op: impl Into<String>, source: std::io::Error) -> Self {
        Self::Read {
            op: op.into(),
            source,
        }
    }
}
