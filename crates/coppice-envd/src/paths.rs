//! How envd turns a path from a request into an absolute path: `~` is the user's home and a
//! relative path is relative to it, as E2B's envd resolves them.

use std::path::{Path, PathBuf};

use crate::error::EnvdError;

/// Resolves `raw` for a user whose home is `home`; an empty path is `fallback`.
///
/// # Errors
/// [`EnvdError::InvalidArgument`] for a path with a NUL byte.
pub fn resolve(raw: &str, home: &Path, fallback: &Path) -> Result<PathBuf, EnvdError> {
    if raw.contains('\0') {
        return Err(EnvdError::InvalidArgument(format!(
            "path {raw:?} contains a NUL byte"
        )));
    }
    let expanded = if raw.is_empty() {
        fallback.to_path_buf()
    } else if raw == "~" {
        home.to_path_buf()
    } else if let Some(rest) = raw.strip_prefix("~/") {
        home.join(rest)
    } else {
        let path = Path::new(raw);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            home.join(path)
        }
    };
    Ok(normalize(&expanded))
}

/// Removes `.` and `..` lexically, as Go's `filepath.Clean` does (no symlinks are read).
#[must_use]
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_resolve_expands_home_and_relative_paths() {
        let home = Path::new("/home/user");
        let fallback = Path::new("/work");
        let cases = [
            ("/tmp/a", "/tmp/a"),
            ("a/b", "/home/user/a/b"),
            ("~", "/home/user"),
            ("~/x", "/home/user/x"),
            ("", "/work"),
            ("/a/../b/./c", "/b/c"),
            ("../../..", "/"),
        ];
        for (raw, want) in cases {
            assert_eq!(
                resolve(raw, home, fallback).unwrap(),
                PathBuf::from(want),
                "{raw}"
            );
        }
        assert!(matches!(
            resolve("a\0b", home, fallback),
            Err(EnvdError::InvalidArgument(_))
        ));
    }
}
