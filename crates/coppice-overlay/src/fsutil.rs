//! Small portable filesystem helpers: atomic metadata writes, tree sizes and removal of trees
//! that overlayfs left unreadable.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::OverlayError;

type Result<T> = std::result::Result<T, OverlayError>;

/// Distinguishes temporary files of concurrent writers in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Milliseconds since the Unix epoch; instants before it count as 0.
pub(crate) fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    })
}

/// The instant `ms` milliseconds after the Unix epoch.
pub(crate) fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// `time` cut to the millisecond precision metadata files store.
pub(crate) fn truncate_to_ms(time: SystemTime) -> SystemTime {
    from_unix_ms(unix_ms(time))
}

/// Creates one directory (its parent must exist).
pub(crate) fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir(path).map_err(|source| OverlayError::CreateDir {
        path: path.to_owned(),
        source,
    })
}

/// Creates a directory and its missing parents.
pub(crate) fn create_dir_all(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|source| OverlayError::CreateDir {
        path: path.to_owned(),
        source,
    })
}

/// Sets the permission bits of `path` exactly, independent of the umask. Follows symlinks, so
/// only call it on paths this crate created.
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| {
        OverlayError::SetMode {
            path: path.to_owned(),
            mode,
            source,
        }
    })
}

/// How much of a crash a metadata file must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Synced to disk (templates, layers: expensive to rebuild, outlive a host crash).
    HostCrash,
    /// Only atomic: survives a crash of the daemon, not of the host. For per-sandbox records,
    /// whose sandboxes do not survive a host crash either; an fsync here would sit on every
    /// create.
    DaemonCrash,
}

/// Writes `contents` to `path` through a temporary file in the same directory and a rename,
/// so that readers see either the old or the new file, never a torn one.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], durability: Durability) -> Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let counter = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!(".{name}.tmp-{}-{counter}", std::process::id()));
    let written = write_new(&temp, contents, durability)
        .map_err(|source| OverlayError::WriteFile {
            path: temp.clone(),
            source,
        })
        .and_then(|()| {
            fs::rename(&temp, path).map_err(|source| OverlayError::Rename {
                from: temp.clone(),
                to: path.to_owned(),
                source,
            })
        });
    if written.is_err() {
        // The temporary file is garbage either way; the original error is the one to report.
        let _ = fs::remove_file(&temp);
        return written;
    }
    // Persist the rename itself. Not every filesystem can sync a directory, and the data is
    // already safe in the renamed file, so a failure here is not an error.
    if durability == Durability::HostCrash
        && let Ok(dir) = File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn write_new(path: &Path, contents: &[u8], durability: Durability) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(contents)?;
    match durability {
        Durability::HostCrash => file.sync_all(),
        Durability::DaemonCrash => Ok(()),
    }
}

/// Serialises `record` as pretty JSON and writes it atomically to `path`.
pub(crate) fn write_json<T: Serialize>(
    path: &Path,
    record: &T,
    durability: Durability,
) -> Result<()> {
    let mut bytes =
        serde_json::to_vec_pretty(record).map_err(|source| OverlayError::EncodeMetadata {
            path: path.to_owned(),
            source,
        })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes, durability)
}

/// Reads and parses the JSON file at `path`; `None` if it does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(source) if source.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(OverlayError::ReadFile {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| OverlayError::ParseMetadata {
            path: path.to_owned(),
            source,
        })
}

/// The entries of a directory, as full paths, sorted by name.
pub(crate) fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let read_err = |source| OverlayError::ReadDir {
        path: dir.to_owned(),
        source,
    };
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_err)? {
        entries.push(entry.map_err(read_err)?.path());
    }
    entries.sort();
    Ok(entries)
}

/// The summed size of the regular files under `root`, without following symlinks.
pub(crate) fn tree_size(root: &Path) -> Result<u64> {
    let meta = fs::symlink_metadata(root).map_err(|source| OverlayError::Stat {
        path: root.to_owned(),
        source,
    })?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    if !meta.is_dir() {
        return Ok(0);
    }
    let mut total = 0u64;
    for entry in read_dir_sorted(root)? {
        total = total.saturating_add(tree_size(&entry)?);
    }
    Ok(total)
}

/// Removes `path` and everything below it; a missing path is not an error. Returns whether
/// something was removed.
///
/// overlayfs leaves `work/work` with mode 000, and a sandbox may create directories its owner
/// cannot read. Root removes those regardless; otherwise, on a permission error, the directories
/// in the tree are made accessible to their owner and the removal is retried. Call this only when
/// nothing inside the sandbox runs any more: the retry walks paths, so a process still renaming
/// things in the tree could race it.
pub(crate) fn remove_tree(path: &Path) -> Result<bool> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(source) if source.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(OverlayError::Stat {
                path: path.to_owned(),
                source,
            });
        }
    };
    if !meta.is_dir() {
        fs::remove_file(path).map_err(|source| OverlayError::Remove {
            path: path.to_owned(),
            source,
        })?;
        return Ok(true);
    }
    match fs::remove_dir_all(path) {
        Ok(()) => return Ok(true),
        Err(source) if source.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(source) if source.kind() == io::ErrorKind::PermissionDenied => {
            tracing::debug!(path = %path.display(), "opening up directories before removal");
            open_up_dirs(path)?;
        }
        Err(source) => {
            return Err(OverlayError::Remove {
                path: path.to_owned(),
                source,
            });
        }
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(true),
        Err(source) if source.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(source) => Err(OverlayError::Remove {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Gives the owner full access to every directory under (and including) `dir`, never following
/// a symlink.
fn open_up_dirs(dir: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(source) if source.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(OverlayError::Stat {
                path: dir.to_owned(),
                source,
            });
        }
    };
    if !meta.is_dir() {
        return Ok(());
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o700 != 0o700 {
        set_mode(dir, mode | 0o700)?;
    }
    for entry in read_dir_sorted(dir)? {
        open_up_dirs(&entry)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_write_atomic_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.json");
        write_atomic(&path, b"old", Durability::HostCrash).unwrap();

        write_atomic(&path, b"new", Durability::DaemonCrash).unwrap();

        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(read_dir_sorted(dir.path()).unwrap(), vec![path]);
    }

    #[test]
    fn test_read_json_missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();

        let value: Option<u32> = read_json(&dir.path().join("absent.json")).unwrap();

        assert_eq!(value, None);
    }

    #[test]
    fn test_read_json_garbage_is_parse_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        fs::write(&path, b"{not json").unwrap();

        let err = read_json::<u32>(&path).unwrap_err();

        assert!(matches!(err, OverlayError::ParseMetadata { .. }));
    }

    #[test]
    fn test_tree_size_counts_regular_files_only() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("a"), [0u8; 10]).unwrap();
        fs::write(dir.path().join("sub/b"), [0u8; 5]).unwrap();
        std::os::unix::fs::symlink("/usr/bin", dir.path().join("link")).unwrap();

        let size = tree_size(dir.path()).unwrap();

        assert_eq!(size, 15);
    }

    #[test]
    fn test_remove_tree_mode_000_dirs_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("sandbox");
        fs::create_dir_all(victim.join("work/work/inner")).unwrap();
        set_mode(&victim.join("work/work/inner"), 0).unwrap();
        set_mode(&victim.join("work/work"), 0).unwrap();

        let removed = remove_tree(&victim).unwrap();

        assert!(removed);
        assert!(!victim.exists());
    }

    #[test]
    fn test_open_up_dirs_mode_000_dirs_get_owner_access() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        fs::create_dir_all(work.join("work")).unwrap();
        set_mode(&work.join("work"), 0).unwrap();

        open_up_dirs(&work).unwrap();

        let mode = fs::symlink_metadata(work.join("work"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn test_remove_tree_missing_path_is_ok() {
        let dir = tempfile::tempdir().unwrap();

        let removed = remove_tree(&dir.path().join("absent")).unwrap();

        assert!(!removed);
    }

    #[test]
    fn test_remove_tree_does_not_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"x").unwrap();
        let victim = dir.path().join("victim");
        fs::create_dir(&victim).unwrap();
        std::os::unix::fs::symlink(&outside, victim.join("link")).unwrap();

        remove_tree(&victim).unwrap();

        assert!(outside.join("keep").exists());
    }

    #[test]
    fn test_unix_ms_of_from_unix_ms_round_trips() {
        let time = from_unix_ms(1_700_000_000_123);

        let ms = unix_ms(time);

        assert_eq!(ms, 1_700_000_000_123);
    }
}
