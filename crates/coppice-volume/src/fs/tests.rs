//! Tests of the volume operations on a temporary directory, with the caller's own ids as
//! sandbox id 0 so that they run unprivileged too.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

use super::*;
use crate::{EntryKind, VolumeFsErrorKind};

use super::tests_support::{own_ids, path};

fn own() -> Ownership {
    Ownership {
        uid: Some(0),
        gid: Some(0),
        mode: None,
    }
}

fn volume() -> (tempfile::TempDir, VolumeFs) {
    let dir = tempfile::tempdir().unwrap();
    let volume_dir = dir.path().join("volume");
    std::fs::create_dir(&volume_dir).unwrap();
    std::fs::write(dir.path().join("secret"), b"outside").unwrap();
    let fs = VolumeFs::open(&volume_dir, own_ids()).unwrap();
    (dir, fs)
}

fn write(fs: &VolumeFs, at: &str, content: &[u8], ownership: &Ownership, parents: bool) -> Entry {
    let mut pending = fs.begin_write(&path(at), ownership, parents).unwrap();
    let mut file = pending.take_file().unwrap();
    file.write_all(content).unwrap();
    pending.commit(file).unwrap()
}

fn read(fs: &VolumeFs, at: &str) -> Vec<u8> {
    let (mut file, _) = fs.open_file(&path(at)).unwrap();
    let mut content = Vec::new();
    file.read_to_end(&mut content).unwrap();
    content
}

#[test]
fn test_write_read_list_stat_and_remove() {
    let (_dir, fs) = volume();
    let made = fs
        .make_dir(
            &path("/a"),
            &Ownership {
                mode: Some(0o750),
                ..own()
            },
            false,
        )
        .unwrap();
    assert_eq!(
        (made.kind, made.mode, made.path.as_str()),
        (EntryKind::Directory, 0o750, "/a")
    );
    let written = write(&fs, "/a/b/c.txt", b"hello", &own(), true);
    assert_eq!(
        (written.kind, written.size, written.mode),
        (EntryKind::File, 5, 0o644)
    );
    assert_eq!((written.uid, written.gid), (0, 0));
    assert_eq!(read(&fs, "a/b/c.txt"), b"hello");

    let top: Vec<String> = fs
        .list(&path("/"), 1)
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(top, ["/a"]);
    let deep: Vec<String> = fs
        .list(&path("/"), 3)
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(deep, ["/a", "/a/b", "/a/b/c.txt"]);
    assert_eq!(fs.stat(&path("/a/b")).unwrap().kind, EntryKind::Directory);
    assert_eq!(fs.stat(&path("/")).unwrap().path, "/");

    fs.remove(&path("/a")).unwrap();
    assert_eq!(
        fs.stat(&path("/a")).unwrap_err().kind(),
        VolumeFsErrorKind::NotFound
    );
    assert_eq!(
        fs.remove(&path("/")).unwrap_err().kind(),
        VolumeFsErrorKind::Conflict
    );
}

#[test]
fn test_overwrite_is_atomic_and_keeps_owner_and_mode() {
    let (dir, fs) = volume();
    write(
        &fs,
        "/f",
        b"one",
        &Ownership {
            mode: Some(0o600),
            ..own()
        },
        false,
    );
    // An upload that is never committed leaves the old content and no temporary file.
    let mut abandoned = fs
        .begin_write(&path("/f"), &Ownership::default(), false)
        .unwrap();
    abandoned.take_file().unwrap().write_all(b"half").unwrap();
    drop(abandoned);
    assert_eq!(read(&fs, "/f"), b"one");
    let names: Vec<_> = std::fs::read_dir(dir.path().join("volume"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["f"]);

    let rewritten = write(&fs, "/f", b"two!", &Ownership::default(), false);
    assert_eq!((rewritten.mode, rewritten.size), (0o600, 4));
    assert_eq!(read(&fs, "/f"), b"two!");
}

#[test]
fn test_nothing_leads_outside_the_volume() {
    let (dir, fs) = volume();
    let root = dir.path().join("volume");
    symlink(dir.path(), root.join("out")).unwrap();
    symlink(dir.path().join("secret"), root.join("secret-link")).unwrap();

    assert_eq!(
        VolumePath::parse("/../secret").unwrap_err().kind(),
        VolumeFsErrorKind::Invalid
    );
    // Through a symlinked directory: refused for every operation.
    let through = path("/out/secret");
    assert!(matches!(
        fs.open_file(&through),
        Err(VolumeFsError::Symlink { .. })
    ));
    assert!(matches!(
        fs.stat(&through),
        Err(VolumeFsError::Symlink { .. })
    ));
    assert!(matches!(
        fs.remove(&through),
        Err(VolumeFsError::Symlink { .. })
    ));
    assert!(matches!(
        fs.begin_write(&path("/out/new"), &own(), true),
        Err(VolumeFsError::Symlink { .. })
    ));
    assert!(matches!(
        fs.make_dir(&path("/out/d"), &own(), true),
        Err(VolumeFsError::Symlink { .. })
    ));
    assert!(matches!(
        fs.list(&path("/out"), 1),
        Err(VolumeFsError::Symlink { .. })
    ));
    // A symlink as the last component is reported, not followed.
    let link = fs.stat(&path("/secret-link")).unwrap();
    assert_eq!(link.kind, EntryKind::Symlink);
    assert_eq!(
        link.target.as_deref(),
        Some(dir.path().join("secret").to_str().unwrap())
    );
    assert_eq!(
        fs.open_file(&path("/secret-link")).unwrap_err().kind(),
        VolumeFsErrorKind::Conflict
    );
    assert_eq!(
        fs.begin_write(&path("/secret-link"), &own(), false)
            .unwrap_err()
            .kind(),
        VolumeFsErrorKind::Conflict
    );
    assert!(
        fs.set_attributes(
            &path("/secret-link"),
            &Ownership {
                mode: Some(0o777),
                ..Ownership::default()
            }
        )
        .is_err()
    );
    // Removing the link removes the link only.
    fs.remove(&path("/secret-link")).unwrap();
    fs.remove(&path("/out")).unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("secret")).unwrap(),
        b"outside"
    );
}

#[test]
fn test_owners_and_modes_are_checked_and_applied() {
    let (dir, fs) = volume();
    write(&fs, "/f", b"x", &own(), false);
    let out_of_range = Ownership {
        uid: Some(5),
        ..Ownership::default()
    };
    assert!(matches!(
        fs.set_attributes(&path("/f"), &out_of_range),
        Err(VolumeFsError::Attribute { what: "uid", .. })
    ));
    let setuid = Ownership {
        mode: Some(0o4755),
        ..Ownership::default()
    };
    assert!(matches!(
        fs.set_attributes(&path("/f"), &setuid),
        Err(VolumeFsError::Attribute { what: "mode", .. })
    ));
    let changed = fs
        .set_attributes(
            &path("/f"),
            &Ownership {
                mode: Some(0o640),
                ..own()
            },
        )
        .unwrap();
    assert_eq!(changed.mode, 0o640);
    let meta = std::fs::metadata(dir.path().join("volume/f")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
}

#[test]
fn test_missing_parents_and_wrong_kinds_are_clear_errors() {
    let (_dir, fs) = volume();
    assert_eq!(
        fs.make_dir(&path("/x/y"), &own(), false)
            .unwrap_err()
            .kind(),
        VolumeFsErrorKind::NotFound
    );
    assert_eq!(
        fs.begin_write(&path("/x/f"), &own(), false)
            .unwrap_err()
            .kind(),
        VolumeFsErrorKind::NotFound
    );
    fs.make_dir(&path("/x"), &own(), false).unwrap();
    assert_eq!(
        fs.make_dir(&path("/x"), &own(), false).unwrap_err().kind(),
        VolumeFsErrorKind::Conflict
    );
    assert_eq!(
        fs.open_file(&path("/x")).unwrap_err().kind(),
        VolumeFsErrorKind::Conflict
    );
    assert_eq!(
        fs.begin_write(&path("/x"), &own(), false)
            .unwrap_err()
            .kind(),
        VolumeFsErrorKind::Conflict
    );
    write(&fs, "/file", b"", &own(), false);
    assert_eq!(
        fs.list(&path("/file"), 1).unwrap_err().kind(),
        VolumeFsErrorKind::Conflict
    );
    assert_eq!(
        fs.make_dir(&path("/file/sub"), &own(), true)
            .unwrap_err()
            .kind(),
        VolumeFsErrorKind::Conflict
    );
}
