//! Tests of directory snapshots: a round trip between two roots, and tars refused whole.

use std::io::{Cursor, Write};
use std::os::unix::fs::{PermissionsExt, symlink};

use sha2::{Digest, Sha256};

use super::super::tests_support::{own_ids, path};
use super::*;

fn root() -> (tempfile::TempDir, VolumeFs) {
    let dir = tempfile::tempdir().unwrap();
    let fs = VolumeFs::open(dir.path(), own_ids()).unwrap();
    (dir, fs)
}

#[test]
fn test_a_directory_round_trips_with_links_modes_and_hash() {
    let (source_dir, source) = root();
    let tree = source_dir.path().join("work");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::write(tree.join("sub/deeper/data.bin"), vec![7u8; 100_000]).unwrap();
    std::fs::write(tree.join("script.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        tree.join("script.sh"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    symlink("sub/deeper/data.bin", tree.join("link")).unwrap();
    std::fs::write(source_dir.path().join("outside.txt"), "not in the snapshot").unwrap();

    let mut tar = Vec::new();
    let summary = source.archive(&path("/work"), &mut tar).unwrap();
    assert_eq!(summary.size_bytes, tar.len() as u64);
    let expected: String = Sha256::digest(&tar)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(summary.sha256, expected);
    assert_eq!(
        summary.entries, 5,
        "sub, sub/deeper, data.bin, script.sh, link"
    );

    let (target_dir, target) = root();
    let written = target
        .extract(&mut Cursor::new(&tar), &path("/restored/here"))
        .unwrap();
    assert_eq!(written, 5);
    let restored = target_dir.path().join("restored/here");
    assert_eq!(
        std::fs::read(restored.join("sub/deeper/data.bin")).unwrap(),
        vec![7u8; 100_000]
    );
    let mode = std::fs::metadata(restored.join("script.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o750);
    assert_eq!(
        std::fs::read_link(restored.join("link")).unwrap(),
        std::path::Path::new("sub/deeper/data.bin")
    );
    assert!(!restored.join("outside.txt").exists());
    // Restoring again over the same place replaces files and keeps directories.
    assert_eq!(
        target
            .extract(&mut Cursor::new(&tar), &path("/restored/here"))
            .unwrap(),
        5
    );
}

/// A raw tar entry: name, type, link target, content.
type RawEntry<'a> = (&'a str, tar::EntryType, &'a str, &'a [u8]);

/// A tar with the given raw entries: (name, type, link target, content).
fn crafted(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        let mut header = tar::Header::new_old();
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

#[test]
fn test_escaping_archives_are_refused_whole() {
    use tar::EntryType::{Block, Directory, Link, Regular, Symlink};
    let good: RawEntry<'_> = ("good.txt", Regular, "", b"fine");
    let cases: Vec<(&str, Vec<RawEntry<'_>>)> = vec![
        ("dot-dot", vec![good, ("../evil", Regular, "", b"x")]),
        (
            "nested dot-dot",
            vec![good, ("a/../../evil", Regular, "", b"x")],
        ),
        ("absolute", vec![good, ("/etc/evil", Regular, "", b"x")]),
        (
            "written through its own absolute symlink",
            vec![
                good,
                ("etc", Symlink, "/etc", b""),
                ("etc/passwd", Regular, "", b"x"),
            ],
        ),
        (
            "a directory below its own symlink",
            vec![
                good,
                ("up", Symlink, "../..", b""),
                ("up/d", Directory, "", b""),
            ],
        ),
        (
            "below one of its files",
            vec![good, ("a", Regular, "", b"x"), ("a/b", Regular, "", b"y")],
        ),
        (
            "a file over one of its directories",
            vec![good, ("a/b", Regular, "", b"y"), ("a", Regular, "", b"x")],
        ),
        (
            "through its own symlink",
            vec![
                good,
                ("a", Symlink, "b", b""),
                ("a/passwd", Regular, "", b"x"),
            ],
        ),
        (
            "hard link outside",
            vec![good, ("h", Link, "/etc/passwd", b"")],
        ),
        (
            "hard link to a later entry",
            vec![
                good,
                ("h", Link, "later", b""),
                ("later", Regular, "", b"x"),
            ],
        ),
        ("device", vec![good, ("dev", Block, "", b"")]),
        ("duplicate", vec![good, ("good.txt", Regular, "", b"again")]),
    ];
    for (why, entries) in cases {
        let (dir, fs) = root();
        let tar = crafted(&entries);
        let error = fs
            .extract(&mut Cursor::new(&tar), &path("/into"))
            .unwrap_err();
        assert!(
            matches!(error, VolumeFsError::InvalidArchive { .. }),
            "{why}: {error}"
        );
        assert!(
            !dir.path().join("into").exists(),
            "{why}: something was written"
        );
    }
    // Symlinks are stored as they are, never followed; hard links to earlier files are fine.
    let (dir, fs) = root();
    let tar = crafted(&[
        good,
        ("d", Directory, "", b""),
        ("d/up", Symlink, "../good.txt", b""),
        ("python", Symlink, "/usr/bin/python3", b""),
        ("same", Link, "good.txt", b""),
    ]);
    assert_eq!(
        fs.extract(&mut Cursor::new(&tar), &path("/into")).unwrap(),
        5
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("into/same")).unwrap(),
        "fine"
    );
    assert_eq!(
        std::fs::read_link(dir.path().join("into/python")).unwrap(),
        std::path::Path::new("/usr/bin/python3")
    );
    // A symlink the destination already has is not followed either.
    std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
    symlink(dir.path().join("elsewhere"), dir.path().join("into/d2")).unwrap();
    let through_planted = crafted(&[("d2/x", Regular, "", b"x")]);
    assert!(
        fs.extract(&mut Cursor::new(&through_planted), &path("/into"))
            .is_err()
    );
    assert!(!dir.path().join("elsewhere/x").exists());
    let mut garbage = Cursor::new(b"not a tar at all".repeat(100));
    garbage.write_all(b"").unwrap();
    assert!(fs.extract(&mut garbage, &path("/other")).is_err());
}

#[test]
fn test_dot_entries_and_special_files_in_the_way_are_handled() {
    use tar::EntryType::{Directory, Regular};
    let (dir, fs) = root();
    std::fs::create_dir_all(dir.path().join("into")).unwrap();
    symlink("/etc/passwd", dir.path().join("into/f")).unwrap();
    let tar = crafted(&[
        ("./", Directory, "", b""),
        ("./f", Regular, "", b"mine"),
        ("./d/g", Regular, "", b"implied parent"),
    ]);
    assert_eq!(
        fs.extract(&mut Cursor::new(&tar), &path("/into")).unwrap(),
        2
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("into/f")).unwrap(),
        "mine"
    );
    assert!(
        !std::fs::symlink_metadata(dir.path().join("into/f"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("into/d/g")).unwrap(),
        "implied parent"
    );
}

#[test]
fn test_too_deep_a_directory_is_refused_not_overflowed() {
    let (dir, fs) = root();
    let mut deep = dir.path().join("top");
    for _ in 0..=super::super::MAX_DEPTH {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    let error = fs.archive(&path("/top"), std::io::sink()).unwrap_err();
    assert!(matches!(error, VolumeFsError::Conflict { .. }), "{error}");
    let error = fs.remove(&path("/top")).unwrap_err();
    assert!(matches!(error, VolumeFsError::Conflict { .. }), "{error}");
    assert_eq!(
        fs.list(&path("/top"), u32::MAX).unwrap().len(),
        super::super::MAX_DEPTH as usize
    );
}
