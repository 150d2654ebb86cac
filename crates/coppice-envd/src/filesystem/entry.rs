//! `EntryInfo` for a path: type (a link reports its target's type and `is_symlink`), size,
//! Go-style mode and permission string, owner and group names, modification time, link
//! target, and the `user.e2b.*` extended attributes as metadata.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::EnvdError;
use crate::proto::filesystem::{EntryInfo, FileType};
use crate::sys::xattr;
use crate::users::Names;

/// Prefix of the extended attributes that carry file metadata.
pub const METADATA_XATTR_PREFIX: &str = "user.e2b.";

/// Describes `path` without following it if it is a link.
///
/// # Errors
/// [`EnvdError::NotFound`] for a missing path; other I/O errors by kind.
pub fn entry_info(path: &Path, names: &Names) -> Result<EntryInfo, EnvdError> {
    let metadata = std::fs::symlink_metadata(path).map_err(|e| not_found_or(path, &e))?;
    Ok(from_metadata(path, &metadata, names))
}

fn not_found_or(path: &Path, error: &std::io::Error) -> EnvdError {
    if error.kind() == std::io::ErrorKind::NotFound {
        EnvdError::NotFound(format!("path '{}' does not exist", path.display()))
    } else {
        EnvdError::io(&path.display().to_string(), error)
    }
}

/// Describes `path` from metadata already read with `lstat`.
#[must_use]
pub fn from_metadata(path: &Path, metadata: &Metadata, names: &Names) -> EntryInfo {
    let file_type = metadata.file_type();
    let is_symlink = file_type.is_symlink();
    let (kind, symlink_target) = if is_symlink {
        let target = std::fs::read_link(path).ok().map(|target| {
            let absolute = path
                .parent()
                .map_or(target.clone(), |dir| dir.join(&target));
            crate::paths::normalize(&absolute).display().to_string()
        });
        let kind = match std::fs::metadata(path) {
            Ok(target) if target.is_dir() => FileType::FILE_TYPE_DIRECTORY,
            Ok(_) => FileType::FILE_TYPE_FILE,
            Err(_) => FileType::FILE_TYPE_SYMLINK,
        };
        (kind, target)
    } else if file_type.is_dir() {
        (FileType::FILE_TYPE_DIRECTORY, None)
    } else {
        (FileType::FILE_TYPE_FILE, None)
    };
    let mode = go_mode(metadata.mode());
    EntryInfo {
        name: path.file_name().map_or_else(
            || "/".to_owned(),
            |name| name.to_string_lossy().into_owned(),
        ),
        r#type: kind.into(),
        path: path.display().to_string(),
        size: i64::try_from(metadata.len()).unwrap_or(i64::MAX),
        mode,
        permissions: go_mode_string(mode),
        owner: names.user(metadata.uid()),
        group: names.group(metadata.gid()),
        modified_time: buffa::MessageField::some(buffa_types::google::protobuf::Timestamp {
            seconds: metadata.mtime(),
            nanos: i32::try_from(metadata.mtime_nsec()).unwrap_or_default(),
            ..Default::default()
        }),
        symlink_target,
        metadata: read_metadata(path).into_iter().collect(),
        is_symlink,
        ..Default::default()
    }
}

/// Go's `os.FileMode` bits for a Unix `st_mode` (what E2B's envd reports as `mode`).
#[must_use]
pub fn go_mode(st_mode: u32) -> u32 {
    const DIR: u32 = 1 << 31;
    const SYMLINK: u32 = 1 << 27;
    const DEVICE: u32 = 1 << 26;
    const NAMED_PIPE: u32 = 1 << 25;
    const SOCKET: u32 = 1 << 24;
    const SETUID: u32 = 1 << 23;
    const SETGID: u32 = 1 << 22;
    const CHAR_DEVICE: u32 = 1 << 21;
    const STICKY: u32 = 1 << 20;
    let mut mode = st_mode & 0o777;
    mode |= match st_mode & libc_mode::S_IFMT {
        libc_mode::S_IFDIR => DIR,
        libc_mode::S_IFLNK => SYMLINK,
        libc_mode::S_IFBLK => DEVICE,
        libc_mode::S_IFCHR => DEVICE | CHAR_DEVICE,
        libc_mode::S_IFIFO => NAMED_PIPE,
        libc_mode::S_IFSOCK => SOCKET,
        _ => 0,
    };
    if st_mode & 0o4000 != 0 {
        mode |= SETUID;
    }
    if st_mode & 0o2000 != 0 {
        mode |= SETGID;
    }
    if st_mode & 0o1000 != 0 {
        mode |= STICKY;
    }
    mode
}

/// The `st_mode` file-type values (the same on Linux and FreeBSD).
mod libc_mode {
    pub const S_IFMT: u32 = 0o170_000;
    pub const S_IFDIR: u32 = 0o040_000;
    pub const S_IFLNK: u32 = 0o120_000;
    pub const S_IFBLK: u32 = 0o060_000;
    pub const S_IFCHR: u32 = 0o020_000;
    pub const S_IFIFO: u32 = 0o010_000;
    pub const S_IFSOCK: u32 = 0o140_000;
}

/// Go's `FileMode.String()`: type letters (or `-`), then `rwxrwxrwx`.
#[must_use]
pub fn go_mode_string(mode: u32) -> String {
    const TYPE_LETTERS: &[u8] = b"dalTLDpSugct?";
    let mut text = String::with_capacity(12);
    for (index, letter) in TYPE_LETTERS.iter().enumerate() {
        if mode & (1 << (31 - index)) != 0 {
            text.push(char::from(*letter));
        }
    }
    if text.is_empty() {
        text.push('-');
    }
    for (index, letter) in "rwxrwxrwx".chars().enumerate() {
        text.push(if mode & (1 << (8 - index)) != 0 {
            letter
        } else {
            '-'
        });
    }
    text
}

/// The `user.e2b.*` attributes of `path` (not followed), prefix stripped.
#[must_use]
pub fn read_metadata(path: &Path) -> HashMap<String, String> {
    let Ok(names) = xattr::list(path) else {
        return HashMap::new();
    };
    names
        .iter()
        .filter_map(|name| {
            let key = name.strip_prefix(METADATA_XATTR_PREFIX)?;
            let value = xattr::get(path, name).ok()?;
            Some((key.to_owned(), String::from_utf8_lossy(&value).into_owned()))
        })
        .collect()
}

/// Replaces the `user.e2b.*` attributes of `path` with `metadata`.
///
/// # Errors
/// I/O errors (for instance a file system without user attributes).
pub fn write_metadata(path: &Path, metadata: &[(String, String)]) -> Result<(), EnvdError> {
    for key in read_metadata(path).keys() {
        let _ = xattr::remove(path, &format!("{METADATA_XATTR_PREFIX}{key}"));
    }
    for (key, value) in metadata {
        xattr::set(
            path,
            &format!("{METADATA_XATTR_PREFIX}{key}"),
            value.as_bytes(),
        )
        .map_err(|e| EnvdError::io(&format!("set metadata {key} on {}", path.display()), &e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_go_mode_strings_match_go() {
        assert_eq!(go_mode_string(go_mode(0o100_644)), "-rw-r--r--");
        assert_eq!(go_mode_string(go_mode(0o040_755)), "drwxr-xr-x");
        assert_eq!(go_mode_string(go_mode(0o120_777)), "Lrwxrwxrwx");
        assert_eq!(go_mode_string(go_mode(0o041_777)), "dtrwxrwxrwx");
        assert_eq!(go_mode(0o040_755), (1 << 31) | 0o755);
    }

    #[test]
    fn test_entry_info_reports_links_as_their_target_type() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"hello").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        let names = Names::default();
        let file = entry_info(&dir.path().join("f"), &names).unwrap();
        assert_eq!((file.name.as_str(), file.size), ("f", 5));
        assert_eq!(file.r#type, FileType::FILE_TYPE_FILE);
        let link = entry_info(&dir.path().join("l"), &names).unwrap();
        assert!(link.is_symlink);
        assert_eq!(link.r#type, FileType::FILE_TYPE_FILE);
        assert_eq!(
            link.symlink_target.as_deref(),
            Some(dir.path().join("f").to_str().unwrap())
        );
        assert!(matches!(
            entry_info(&dir.path().join("missing"), &names),
            Err(EnvdError::NotFound(_))
        ));
    }
}
