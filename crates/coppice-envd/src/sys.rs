//! The platform seam of envd: extended attributes (the only file-system call without a
//! portable safe wrapper; Linux uses rustix, elsewhere file metadata is reported as absent and
//! refused on write until the FreeBSD backends bring `extattr(2)`), and on Linux the
//! vfork-style spawn that starts programs as another user.

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub mod spawn;

/// Extended attributes of a path, never following a final symlink.
pub mod xattr {
    use std::io;
    use std::path::Path;

    /// Names of the attributes of `path`.
    ///
    /// # Errors
    /// I/O errors; `Unsupported` on platforms without this seam.
    #[cfg(target_os = "linux")]
    pub fn list(path: &Path) -> io::Result<Vec<String>> {
        let mut names = vec![0u8; 64 * 1024];
        let len = rustix::fs::llistxattr(path, &mut names)?;
        Ok(names[..len]
            .split(|byte| *byte == 0)
            .filter(|name| !name.is_empty())
            .filter_map(|name| std::str::from_utf8(name).ok().map(str::to_owned))
            .collect())
    }

    /// The value of attribute `name` of `path`.
    ///
    /// # Errors
    /// I/O errors; `Unsupported` on platforms without this seam.
    #[cfg(target_os = "linux")]
    pub fn get(path: &Path, name: &str) -> io::Result<Vec<u8>> {
        let mut value = vec![0u8; 64 * 1024];
        let len = rustix::fs::lgetxattr(path, name, &mut value)?;
        value.truncate(len);
        Ok(value)
    }

    /// Sets attribute `name` of `path`.
    ///
    /// # Errors
    /// I/O errors; `Unsupported` on platforms without this seam.
    #[cfg(target_os = "linux")]
    pub fn set(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
        Ok(rustix::fs::lsetxattr(
            path,
            name,
            value,
            rustix::fs::XattrFlags::empty(),
        )?)
    }

    /// Removes attribute `name` of `path`.
    ///
    /// # Errors
    /// I/O errors; `Unsupported` on platforms without this seam.
    #[cfg(target_os = "linux")]
    pub fn remove(path: &Path, name: &str) -> io::Result<()> {
        Ok(rustix::fs::lremovexattr(path, name)?)
    }

    #[cfg(not(target_os = "linux"))]
    fn unsupported() -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "file metadata (extended attributes) is not supported on this platform yet",
        )
    }

    /// Names of the attributes of `path`.
    ///
    /// # Errors
    /// Always `Unsupported` here.
    #[cfg(not(target_os = "linux"))]
    pub fn list(_path: &Path) -> io::Result<Vec<String>> {
        Err(unsupported())
    }

    /// The value of attribute `name` of `path`.
    ///
    /// # Errors
    /// Always `Unsupported` here.
    #[cfg(not(target_os = "linux"))]
    pub fn get(_path: &Path, _name: &str) -> io::Result<Vec<u8>> {
        Err(unsupported())
    }

    /// Sets attribute `name` of `path`.
    ///
    /// # Errors
    /// Always `Unsupported` here.
    #[cfg(not(target_os = "linux"))]
    pub fn set(_path: &Path, _name: &str, _value: &[u8]) -> io::Result<()> {
        Err(unsupported())
    }

    /// Removes attribute `name` of `path`.
    ///
    /// # Errors
    /// Always `Unsupported` here.
    #[cfg(not(target_os = "linux"))]
    pub fn remove(_path: &Path, _name: &str) -> io::Result<()> {
        Err(unsupported())
    }
}
