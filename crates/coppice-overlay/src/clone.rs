//! Copying a sandbox's upper directory into a layer exactly as it is: ownership, modes,
//! modification times, extended attributes (overlayfs's opaque and redirect marks among
//! them), whiteouts and symlinks. Unlike `copy`, nothing is left out and no owner is
//! imposed: the copy must read the same as the original once stacked under another sandbox.
//! File data goes through `copy::copy_file`, which shares extents where the filesystem can
//! (`copy_file_range`: a reflink on btrfs and XFS).

use std::fs::{self, File, FileTimes};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::copy;
use crate::error::OverlayError;
use crate::fsutil;
use crate::sys::OverlaySys;

type Result<T> = std::result::Result<T, OverlayError>;

/// Copies everything inside `src` into the existing directory `dst`, then gives `dst` the
/// metadata of `src`.
///
/// Sockets, FIFOs and device nodes other than whiteouts are not copied: nothing in a
/// sandbox's writable layer needs them, and the runtime gives every sandbox its own `/dev`.
///
/// # Errors
/// The first failure, with its path (`ENOSPC` classifies as exhausted storage).
pub(crate) fn clone_into(sys: &dyn OverlaySys, src: &Path, dst: &Path) -> Result<()> {
    let entries = fs::read_dir(src).map_err(|source| OverlayError::ReadDir {
        path: src.to_owned(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| OverlayError::ReadDir {
            path: src.to_owned(),
            source,
        })?;
        clone_entry(sys, &entry.path(), &dst.join(entry.file_name()))?;
    }
    let metadata = stat(src)?;
    copy_metadata(sys, src, dst, &metadata)
}

fn stat(path: &Path) -> Result<fs::Metadata> {
    fs::symlink_metadata(path).map_err(|source| OverlayError::Stat {
        path: path.to_owned(),
        source,
    })
}

fn clone_entry(sys: &dyn OverlaySys, src: &Path, dst: &Path) -> Result<()> {
    let metadata = stat(src)?;
    let kind = metadata.file_type();
    if kind.is_dir() {
        fsutil::create_dir(dst)?;
        return clone_into(sys, src, dst);
    }
    if kind.is_symlink() {
        copy::copy_symlink(src, dst)?;
        return chown(sys, dst, &metadata);
    }
    if kind.is_file() {
        copy::copy_file(src, dst).map_err(|source| OverlayError::Copy {
            from: src.to_owned(),
            to: dst.to_owned(),
            source,
        })?;
        return copy_metadata(sys, src, dst, &metadata);
    }
    if kind.is_char_device() && metadata.rdev() == 0 {
        sys.make_whiteout(dst)
            .map_err(|source| OverlayError::WriteFile {
                path: dst.to_owned(),
                source,
            })?;
        return chown(sys, dst, &metadata);
    }
    tracing::debug!(path = %src.display(), "special file left out of a snapshot");
    Ok(())
}

fn chown(sys: &dyn OverlaySys, dst: &Path, metadata: &fs::Metadata) -> Result<()> {
    sys.lchown(dst, metadata.uid(), metadata.gid())
        .map_err(|source| OverlayError::Chown {
            path: dst.to_owned(),
            uid: metadata.uid(),
            gid: metadata.gid(),
            source,
        })
}

/// Owner first (a change of owner clears set-id bits), then mode, attributes and time.
fn copy_metadata(
    sys: &dyn OverlaySys,
    src: &Path,
    dst: &Path,
    metadata: &fs::Metadata,
) -> Result<()> {
    chown(sys, dst, metadata)?;
    fsutil::set_mode(dst, metadata.mode() & 0o7777)?;
    sys.copy_xattrs(src, dst)
        .map_err(|source| OverlayError::WriteFile {
            path: dst.to_owned(),
            source,
        })?;
    let modified = metadata.modified().map_err(|source| OverlayError::Stat {
        path: src.to_owned(),
        source,
    })?;
    File::open(dst)
        .and_then(|file| file.set_times(FileTimes::new().set_modified(modified)))
        .map_err(|source| OverlayError::WriteFile {
            path: dst.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::fs::Permissions;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::sys::{FakeOverlaySys, SysCall};

    #[test]
    fn test_clone_into_copies_contents_modes_times_and_owners() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("upper");
        let dst = dir.path().join("tree");
        fs::create_dir_all(src.join("home/user")).unwrap();
        fs::create_dir(&dst).unwrap();
        fs::write(src.join("home/user/notes.txt"), "kept").unwrap();
        fs::set_permissions(
            src.join("home/user/notes.txt"),
            Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink("/nowhere", src.join("home/user/link")).unwrap();
        let old = UNIX_EPOCH + Duration::from_secs(1_000_000);
        File::open(src.join("home/user/notes.txt"))
            .unwrap()
            .set_times(FileTimes::new().set_modified(old))
            .unwrap();
        let sys = FakeOverlaySys::default();

        clone_into(&sys, &src, &dst).unwrap();

        let copy = dst.join("home/user/notes.txt");
        assert_eq!(fs::read_to_string(&copy).unwrap(), "kept");
        let metadata = fs::metadata(&copy).unwrap();
        assert_eq!(metadata.mode() & 0o7777, 0o640);
        assert_eq!(metadata.modified().unwrap(), old);
        assert_eq!(
            fs::read_link(dst.join("home/user/link")).unwrap(),
            Path::new("/nowhere")
        );
        let original = fs::metadata(src.join("home/user/notes.txt")).unwrap();
        assert_eq!(sys.owner(&copy), Some((original.uid(), original.gid())));
        assert!(sys.owner(&dst.join("home/user/link")).is_some());
        assert!(sys.calls().contains(&SysCall::CopyXattrs {
            src: src.join("home/user/notes.txt"),
            dst: copy,
        }));
    }

    #[test]
    fn test_clone_into_stops_at_the_first_failure() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("upper");
        let dst = dir.path().join("tree");
        fs::create_dir_all(&src).unwrap();
        fs::create_dir(&dst).unwrap();
        fs::write(src.join("a"), "a").unwrap();
        let sys = FakeOverlaySys::default();
        sys.fail_next(crate::sys::SysOp::CopyXattrs, libc::ENOSPC);

        let error = clone_into(&sys, &src, &dst).unwrap_err();

        assert!(error.is_exhausted(), "{error}");
    }
}
