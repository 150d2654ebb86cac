//! `filesystem.Filesystem` and the file helpers `/files` shares with it.

pub mod entry;
pub mod service;
pub mod watch;

use std::path::Path;

use crate::error::EnvdError;
use crate::users::User;

/// Creates `dir` and any missing parents, giving each new directory to `user` (existing ones
/// are left as they are).
///
/// # Errors
/// [`EnvdError::InvalidArgument`] when a path component is not a directory; I/O errors.
pub fn ensure_dirs(dir: &Path, user: &User) -> Result<(), EnvdError> {
    let mut missing = Vec::new();
    let mut cursor = Some(dir);
    while let Some(current) = cursor {
        match std::fs::metadata(current) {
            Ok(metadata) if metadata.is_dir() => break,
            Ok(_) => {
                return Err(EnvdError::InvalidArgument(format!(
                    "path '{}' is not a directory",
                    current.display()
                )));
            }
            Err(_) => missing.push(current),
        }
        cursor = current.parent();
    }
    for path in missing.into_iter().rev() {
        match std::fs::create_dir(path) {
            Ok(()) => give_to(path, user)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(e) => return Err(EnvdError::io(&format!("create '{}'", path.display()), &e)),
        }
    }
    Ok(())
}

/// Makes `user` the owner of `path` (a no-op when envd already runs as that user).
///
/// # Errors
/// I/O errors from `lchown`.
pub fn give_to(path: &Path, user: &User) -> Result<(), EnvdError> {
    if rustix::process::geteuid().as_raw() == user.uid {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))
        .map_err(|e| EnvdError::io(&format!("chown '{}'", path.display()), &e))
}
