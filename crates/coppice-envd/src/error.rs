//! envd's errors, classified by the Connect code (and HTTP status) a client receives.

use connectrpc::{ConnectError, ErrorCode};

/// What went wrong, in the terms the SDKs map to their exceptions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvdError {
    /// A path, process or watcher that does not exist (`not_found`, 404).
    #[error("{0}")]
    NotFound(String),
    /// A directory that already exists (`already_exists`, 409).
    #[error("{0}")]
    AlreadyExists(String),
    /// A request that cannot be carried out as given (`invalid_argument`, 400).
    #[error("{0}")]
    InvalidArgument(String),
    /// An unknown user or a wrong token (`unauthenticated`, 401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this (`permission_denied`, 403).
    #[error("{0}")]
    PermissionDenied(String),
    /// Out of disk space or another resource (`resource_exhausted`, 507 on `/files`).
    #[error("{0}")]
    ResourceExhausted(String),
    /// The process is not in a state that allows this (`failed_precondition`, 400).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Anything else (`internal`, 500).
    #[error("{0}")]
    Internal(String),
}

impl EnvdError {
    /// Classifies an I/O error about `what` (a path or an action).
    #[must_use]
    pub fn io(what: &str, error: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        let message = format!("{what}: {error}");
        match error.kind() {
            ErrorKind::NotFound => Self::NotFound(message),
            ErrorKind::AlreadyExists => Self::AlreadyExists(message),
            ErrorKind::PermissionDenied => Self::PermissionDenied(message),
            ErrorKind::InvalidInput
            | ErrorKind::InvalidFilename
            | ErrorKind::NotADirectory
            | ErrorKind::IsADirectory
            | ErrorKind::DirectoryNotEmpty => Self::InvalidArgument(message),
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge => {
                Self::ResourceExhausted(message)
            }
            _ => Self::Internal(message),
        }
    }

    /// The HTTP status used by the plain routes (`/files`).
    #[must_use]
    pub fn http_status(&self) -> u16 {
        match self {
            Self::NotFound(_) => 404,
            Self::AlreadyExists(_) => 409,
            Self::InvalidArgument(_) | Self::FailedPrecondition(_) => 400,
            Self::Unauthenticated(_) => 401,
            Self::PermissionDenied(_) => 403,
            Self::ResourceExhausted(_) => 507,
            Self::Internal(_) => 500,
        }
    }
}

impl From<EnvdError> for ConnectError {
    fn from(error: EnvdError) -> Self {
        let code = match &error {
            EnvdError::NotFound(_) => ErrorCode::NotFound,
            EnvdError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            EnvdError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            EnvdError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            EnvdError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            EnvdError::ResourceExhausted(_) => ErrorCode::ResourceExhausted,
            EnvdError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            EnvdError::Internal(_) => ErrorCode::Internal,
        };
        ConnectError::new(code, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_io_errors_keep_their_kind_and_context() {
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let error = EnvdError::io("stat /x", &missing);
        assert!(matches!(error, EnvdError::NotFound(ref m) if m.starts_with("stat /x")));
        assert_eq!(error.http_status(), 404);
        let connect = ConnectError::from(error);
        assert_eq!(connect.code, ErrorCode::NotFound);
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert_eq!(EnvdError::io("write", &full).http_status(), 507);
    }
}
