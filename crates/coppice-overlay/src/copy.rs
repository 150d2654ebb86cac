//! Copying host files into a layer tree. Symlinks are recreated as symlinks and never
//! followed, files are opened with `O_NOFOLLOW`, only world-readable entries are taken, modes
//! are kept, and every copy is owned by the sandbox's root.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::OverlayError;
use crate::fsutil;
use crate::sys::OverlaySys;

type Result<T> = std::result::Result<T, OverlayError>;

/// The "others may read" bit of a file mode.
const OTHER_READ: u32 = 0o004;
/// The "others may read and enter" bits of a directory mode.
const OTHER_READ_EXEC: u32 = 0o005;

/// Who owns the copies, as host ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl Owner {
    /// Gives `path` to this owner, not following a symlink at `path`.
    pub(crate) fn apply(self, sys: &dyn OverlaySys, path: &Path) -> Result<()> {
        sys.lchown(path, self.uid, self.gid)
            .map_err(|source| OverlayError::Chown {
                path: path.to_owned(),
                uid: self.uid,
                gid: self.gid,
                source,
            })
    }
}

/// Copies `src` (a file, symlink or directory tree) to `dst`, which must not exist.
///
/// Entries that others on the host may not read (such as `/etc/ssl/private`) are left out,
/// because the copies belong to the sandbox's root; sockets, FIFOs and devices are left out
/// too. Returns the source paths that were left out. A missing `src` is an error; callers that
/// copy optional files check for it first.
pub(crate) fn copy_tree(
    sys: &dyn OverlaySys,
    src: &Path,
    dst: &Path,
    owner: Owner,
) -> Result<Vec<PathBuf>> {
    let mut skipped = Vec::new();
    copy_entry(sys, src, dst, owner, &mut skipped)?;
    Ok(skipped)
}

fn copy_entry(
    sys: &dyn OverlaySys,
    src: &Path,
    dst: &Path,
    owner: Owner,
    skipped: &mut Vec<PathBuf>,
) -> Result<()> {
    let meta = fs::symlink_metadata(src).map_err(|source| OverlayError::Stat {
        path: src.to_owned(),
        source,
    })?;
    let file_type = meta.file_type();
    let mode = meta.permissions().mode() & 0o7777;
    if file_type.is_symlink() {
        copy_symlink(src, dst)?;
        owner.apply(sys, dst)
    } else if file_type.is_file() && mode & OTHER_READ == OTHER_READ {
        copy_file(src, dst).map_err(|source| OverlayError::Copy {
            from: src.to_owned(),
            to: dst.to_owned(),
            source,
        })?;
        // Owner first: chown clears set-id bits, and the mode is meant to survive.
        owner.apply(sys, dst)?;
        fsutil::set_mode(dst, mode)
    } else if file_type.is_dir() && mode & OTHER_READ_EXEC == OTHER_READ_EXEC {
        fsutil::create_dir(dst)?;
        owner.apply(sys, dst)?;
        for entry in fsutil::read_dir_sorted(src)? {
            let Some(name) = entry.file_name() else {
                continue;
            };
            copy_entry(sys, &entry, &dst.join(name), owner, skipped)?;
        }
        // Last, so that a read-only source directory does not stop its own filling.
        fsutil::set_mode(dst, mode)
    } else {
        tracing::debug!(path = %src.display(), mode = format_args!("{mode:o}"), "not copied");
        skipped.push(src.to_owned());
        Ok(())
    }
}

/// Makes `dst` a symlink with the same target as the symlink `src` (never followed).
pub(crate) fn copy_symlink(src: &Path, dst: &Path) -> Result<()> {
    let target = fs::read_link(src).map_err(|source| OverlayError::Symlink {
        path: src.to_owned(),
        source,
    })?;
    std::os::unix::fs::symlink(&target, dst).map_err(|source| OverlayError::Symlink {
        path: dst.to_owned(),
        source,
    })
}

/// Copies a regular file's bytes, refusing to follow a symlink swapped in at `src` and to
/// overwrite anything at `dst`. Between files `io::copy` uses `copy_file_range`, so the data
/// is shared where the filesystem can (a reflink on btrfs and XFS).
pub(crate) fn copy_file(src: &Path, dst: &Path) -> io::Result<()> {
    let mut from = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(src)?;
    let mut to: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)?;
    io::copy(&mut from, &mut to)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::sys::FakeOverlaySys;

    const OWNER: Owner = Owner {
        uid: 200_000,
        gid: 200_000,
    };

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn test_copy_tree_copies_files_dirs_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/file"), b"hello").unwrap();
        fsutil::set_mode(&src.join("sub/file"), 0o640 | OTHER_READ).unwrap();
        let sys = FakeOverlaySys::default();

        copy_tree(&sys, &src, &dir.path().join("dst"), OWNER).unwrap();

        let copied = dir.path().join("dst/sub/file");
        assert_eq!(fs::read(&copied).unwrap(), b"hello");
        assert_eq!(mode_of(&copied), 0o644);
        assert_eq!(sys.owner(&copied), Some((200_000, 200_000)));
    }

    #[test]
    fn test_copy_tree_symlink_out_of_source_stays_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        fs::create_dir(&secret).unwrap();
        fs::write(secret.join("key"), b"do not copy").unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        symlink(&secret, src.join("escape")).unwrap();
        symlink(secret.join("key"), src.join("key-link")).unwrap();
        let dst = dir.path().join("dst");
        let sys = FakeOverlaySys::default();

        copy_tree(&sys, &src, &dst, OWNER).unwrap();

        assert!(
            fs::symlink_metadata(dst.join("escape"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_link(dst.join("escape")).unwrap(), secret);
        assert!(
            fs::symlink_metadata(dst.join("key-link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fsutil::tree_size(&dst).unwrap(), 0);
    }

    #[test]
    fn test_copy_tree_top_level_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("real"), b"zone data").unwrap();
        let src = dir.path().join("localtime");
        symlink(dir.path().join("real"), &src).unwrap();
        let dst = dir.path().join("copy");
        let sys = FakeOverlaySys::default();

        copy_tree(&sys, &src, &dst, OWNER).unwrap();

        assert_eq!(fs::read_link(&dst).unwrap(), dir.path().join("real"));
        assert_eq!(sys.owner(&dst), Some((200_000, 200_000)));
    }

    #[test]
    fn test_copy_tree_private_entries_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("ssl");
        fs::create_dir_all(src.join("private")).unwrap();
        fs::write(src.join("private/host.key"), b"secret").unwrap();
        fsutil::set_mode(&src.join("private"), 0o700).unwrap();
        fs::write(src.join("openssl.cnf"), b"conf").unwrap();
        fsutil::set_mode(&src.join("openssl.cnf"), 0o644).unwrap();
        fs::write(src.join("shadowish"), b"secret").unwrap();
        fsutil::set_mode(&src.join("shadowish"), 0o640).unwrap();
        let dst = dir.path().join("dst");
        let sys = FakeOverlaySys::default();

        let skipped = copy_tree(&sys, &src, &dst, OWNER).unwrap();

        assert_eq!(skipped, vec![src.join("private"), src.join("shadowish")]);
        assert!(dst.join("openssl.cnf").is_file());
        assert!(!dst.join("private").exists());
        assert!(!dst.join("shadowish").exists());
    }

    #[test]
    fn test_copy_tree_read_only_dir_keeps_mode_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("file"), b"x").unwrap();
        fsutil::set_mode(&src.join("file"), 0o444).unwrap();
        fsutil::set_mode(&src, 0o555).unwrap();
        let dst = dir.path().join("dst");
        let sys = FakeOverlaySys::default();

        copy_tree(&sys, &src, &dst, OWNER).unwrap();

        assert_eq!(mode_of(&dst), 0o555);
        assert!(dst.join("file").is_file());
        fsutil::set_mode(&dst, 0o755).unwrap();
        fsutil::set_mode(&src, 0o755).unwrap();
    }
}
