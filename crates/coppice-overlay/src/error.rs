//! `OverlayError`, the crate's error type, and its classification into core's `StorageError`.

use std::io;
use std::path::PathBuf;

use coppice_core::storage::StorageError;
use coppice_core::{ParseIdError, SandboxId, TemplateId};

use crate::layer::LayerId;

/// A failure of the overlay storage backend.
///
/// Each variant names what failed and carries the path, template, layer or sandbox involved;
/// the underlying cause is the `#[source]` and is never repeated in the message.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// A configured path is relative.
    #[error("configured {field} path {path} is not absolute")]
    RelativePath {
        /// Which configuration field.
        field: &'static str,
        /// The path as configured.
        path: PathBuf,
    },
    /// The sandbox root uid or gid is so large that the sandbox user's id would overflow.
    #[error("sandbox root id {id} leaves no room for the sandbox user")]
    IdOverflow {
        /// The configured uid or gid.
        id: u32,
    },
    /// Overlay storage cannot run on this operating system.
    #[error("overlay storage is only supported on linux")]
    Unsupported,
    /// No metadata file for this template.
    #[error("template {template} not found")]
    TemplateNotFound {
        /// The template.
        template: TemplateId,
    },
    /// A layer a template or sandbox needs is missing or incomplete.
    #[error("layer {layer} not found")]
    LayerNotFound {
        /// The layer.
        layer: LayerId,
    },
    /// A layer, or its staging directory, already exists.
    #[error("layer {layer} already exists")]
    LayerExists {
        /// The layer.
        layer: LayerId,
    },
    /// No root filesystem for this sandbox.
    #[error("no root filesystem for sandbox {sandbox}")]
    SandboxNotFound {
        /// The sandbox.
        sandbox: SandboxId,
    },
    /// A template with that id already exists.
    #[error("a template named {template} already exists")]
    TemplateExists {
        /// The template.
        template: TemplateId,
    },
    /// A template source's file path is not a plain relative path.
    #[error("template source path {path:?} must be relative, without `.` or `..`")]
    SourcePath {
        /// The path.
        path: String,
    },
    /// The template is part of coppice and cannot be deleted.
    #[error("template {template} is built in and cannot be deleted")]
    BuiltinTemplate {
        /// The template.
        template: TemplateId,
    },
    /// A root filesystem for this sandbox already exists.
    #[error("a root filesystem for sandbox {sandbox} already exists")]
    SandboxExists {
        /// The sandbox.
        sandbox: SandboxId,
    },
    /// Creating a directory failed.
    #[error("cannot create directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Listing a directory failed.
    #[error("cannot read directory {path}")]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Removing a file or directory tree failed.
    #[error("cannot remove {path}")]
    Remove {
        /// What was being removed.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading a file's metadata failed.
    #[error("cannot inspect {path}")]
    Stat {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading a file failed.
    #[error("cannot read {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing a file failed.
    #[error("cannot write {path}")]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Renaming a file or directory into place failed.
    #[error("cannot rename {from} to {to}")]
    Rename {
        /// The old name.
        from: PathBuf,
        /// The new name.
        to: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Copying a file from the host failed.
    #[error("cannot copy {from} to {to}")]
    Copy {
        /// The source file.
        from: PathBuf,
        /// The destination.
        to: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading or creating a symbolic link failed.
    #[error("cannot create or read symbolic link {path}")]
    Symlink {
        /// The link.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Changing a file's mode failed.
    #[error("cannot set the mode of {path} to {mode:o}")]
    SetMode {
        /// The file.
        path: PathBuf,
        /// The requested mode.
        mode: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Changing a file's owner failed.
    #[error("cannot change the owner of {path} to {uid}:{gid}")]
    Chown {
        /// The file.
        path: PathBuf,
        /// The requested owner.
        uid: u32,
        /// The requested group.
        gid: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading random bytes from the operating system failed.
    #[error("cannot read random bytes")]
    Random {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A metadata file is not valid JSON of the expected shape.
    #[error("malformed metadata file {path}")]
    ParseMetadata {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Encoding a metadata record failed.
    #[error("cannot encode metadata file {path}")]
    EncodeMetadata {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A metadata file was written by an incompatible version.
    #[error("metadata file {path} has unsupported version {version}")]
    MetadataVersion {
        /// The file.
        path: PathBuf,
        /// The version it declares.
        version: u32,
    },
    /// A metadata file holds an identifier that does not parse.
    #[error("metadata file {path} holds an invalid identifier")]
    MetadataId {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ParseIdError,
    },
    /// A metadata file names another object than the one it describes.
    #[error("metadata file {path} describes {found} instead")]
    MetadataMismatch {
        /// The file.
        path: PathBuf,
        /// The identifier found in the file.
        found: String,
    },
}

impl OverlayError {
    /// The I/O error at the root of this failure, if there is one.
    pub fn io_source(&self) -> Option<&io::Error> {
        match self {
            Self::CreateDir { source, .. }
            | Self::ReadDir { source, .. }
            | Self::Remove { source, .. }
            | Self::Stat { source, .. }
            | Self::ReadFile { source, .. }
            | Self::WriteFile { source, .. }
            | Self::Rename { source, .. }
            | Self::Copy { source, .. }
            | Self::Symlink { source, .. }
            | Self::SetMode { source, .. }
            | Self::Chown { source, .. }
            | Self::Random { source } => Some(source),
            _ => None,
        }
    }

    /// Whether the failure is the filesystem running out of space or hitting a quota.
    pub fn is_exhausted(&self) -> bool {
        self.io_source()
            .and_then(io::Error::raw_os_error)
            .is_some_and(|errno| errno == libc::ENOSPC || errno == libc::EDQUOT)
    }

    /// Classifies this failure as a core `StorageError` of the operation `op`.
    pub fn into_storage(self, op: &'static str) -> StorageError {
        match self {
            Self::TemplateNotFound { template } => StorageError::TemplateNotFound { id: template },
            Self::SandboxNotFound { sandbox } => StorageError::NotFound { id: sandbox },
            Self::SandboxExists { sandbox } => StorageError::AlreadyExists { id: sandbox },
            Self::TemplateExists { template } => StorageError::TemplateExists { id: template },
            err @ Self::BuiltinTemplate { .. } => StorageError::Invalid {
                reason: err.to_string(),
            },
            err if err.is_exhausted() => StorageError::Exhausted {
                op,
                source: Box::new(err),
            },
            err => StorageError::Backend {
                op,
                source: Box::new(err),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use coppice_core::ErrorKind;

    use super::*;

    fn write_error(errno: i32) -> OverlayError {
        OverlayError::WriteFile {
            path: PathBuf::from("/x"),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    #[test]
    fn test_into_storage_enospc_is_exhausted() {
        let err = write_error(libc::ENOSPC);

        let mapped = err.into_storage("create rootfs");

        assert_eq!(mapped.kind(), ErrorKind::OutOfSpace);
    }

    #[test]
    fn test_into_storage_edquot_is_exhausted() {
        let err = write_error(libc::EDQUOT);

        let mapped = err.into_storage("create rootfs");

        assert_eq!(mapped.kind(), ErrorKind::OutOfSpace);
    }

    #[test]
    fn test_into_storage_other_io_error_is_backend_with_source() {
        let err = write_error(libc::EIO);

        let mapped = err.into_storage("create rootfs");

        assert!(matches!(
            mapped,
            StorageError::Backend {
                op: "create rootfs",
                ..
            }
        ));
        assert!(mapped.source().is_some());
    }

    #[test]
    fn test_into_storage_template_not_found_keeps_kind() {
        let template: TemplateId = "nope".parse().unwrap();
        let err = OverlayError::TemplateNotFound {
            template: template.clone(),
        };

        let mapped = err.into_storage("create rootfs");

        assert!(matches!(mapped, StorageError::TemplateNotFound { id } if id == template));
    }

    #[test]
    fn test_display_io_error_omits_source() {
        let err = write_error(libc::EIO);

        let message = err.to_string();

        assert_eq!(message, "cannot write /x");
    }
}
