//! A path inside a volume, parsed once: its normal components, never `..`.

use std::ffi::OsStr;
use std::fmt;

use crate::error::VolumeFsError;

/// Longest accepted path, in bytes.
const MAX_PATH_BYTES: usize = 4096;
/// Longest accepted component, in bytes (what file systems take).
const MAX_NAME_BYTES: usize = 255;

/// A path inside a volume: `/` is its root; `.` and empty components are dropped; `..` and
/// NUL are refused.
#[derive(Clone, PartialEq, Eq)]
pub struct VolumePath {
    components: Vec<String>,
}

impl VolumePath {
    /// Parses `raw` (absolute or relative to the volume's root).
    ///
    /// # Errors
    /// [`VolumeFsError::InvalidPath`].
    pub fn parse(raw: &str) -> Result<Self, VolumeFsError> {
        let invalid = |reason: &str| VolumeFsError::InvalidPath {
            path: raw.chars().take(200).collect(),
            reason: reason.to_owned(),
        };
        if raw.len() > MAX_PATH_BYTES {
            return Err(invalid("it is too long"));
        }
        if raw.contains('\0') {
            return Err(invalid("it contains a NUL byte"));
        }
        let mut components = Vec::new();
        for part in raw.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(invalid("'..' is not allowed")),
                name if name.len() > MAX_NAME_BYTES => {
                    return Err(invalid("a component is longer than 255 bytes"));
                }
                name => components.push(name.to_owned()),
            }
        }
        Ok(Self { components })
    }

    /// Whether this is the volume's root.
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The parent's components and the last one; `None` for the root.
    pub(crate) fn split_last(&self) -> Option<(&[String], &OsStr)> {
        let (last, parent) = self.components.split_last()?;
        Some((parent, OsStr::new(last.as_str())))
    }

    /// Its components.
    pub(crate) fn components(&self) -> &[String] {
        &self.components
    }

    /// This path with `name` appended.
    pub(crate) fn join(&self, name: &str) -> Self {
        let mut components = self.components.clone();
        components.push(name.to_owned());
        Self { components }
    }

    /// The last component, `""` for the root.
    pub fn name(&self) -> &str {
        self.components.last().map_or("", String::as_str)
    }
}

impl fmt::Display for VolumePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.components.is_empty() {
            return f.write_str("/");
        }
        for component in &self.components {
            write!(f, "/{component}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for VolumePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VolumePath({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_paths_are_normalised_and_dotdot_is_refused() {
        let display = |raw: &str| VolumePath::parse(raw).map(|p| p.to_string());
        assert_eq!(display("/a/./b//c/").unwrap(), "/a/b/c");
        assert_eq!(display("a/b").unwrap(), "/a/b");
        assert_eq!(display("/").unwrap(), "/");
        assert_eq!(display("").unwrap(), "/");
        for bad in ["/a/../b", "..", "/a/..", "a\0b"] {
            assert!(
                matches!(
                    VolumePath::parse(bad),
                    Err(VolumeFsError::InvalidPath { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(VolumePath::parse(&"a/".repeat(3000)).is_err());
        assert!(VolumePath::parse(&"x".repeat(256)).is_err());
    }
}
