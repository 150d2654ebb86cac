//! Imports of image layouts and `docker save` tarballs the tests build: layers with
//! whiteouts, opaque directories, symlinks and hard links, and images refused whole.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::*;
use crate::source::hex;

/// One entry of a test layer.
/// The modification time of every entry the tests write.
const ENTRY_MTIME: u64 = 1_600_000_000;

enum Item<'a> {
    Dir(&'a str),
    File(&'a str, &'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    /// A regular file whose name is written into the header as is (no checks).
    RawName(&'a [u8]),
}

/// The ids the test runs as: every entry is owned by them, so writing needs no privilege.
fn own() -> (u64, u64) {
    let me = tempfile::tempfile().unwrap().metadata().unwrap();
    (u64::from(me.uid()), u64::from(me.gid()))
}

fn layer_tar(items: &[Item<'_>]) -> Vec<u8> {
    let (uid, gid) = own();
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        let mut header = tar::Header::new_gnu();
        header.set_uid(uid);
        header.set_gid(gid);
        header.set_mtime(ENTRY_MTIME);
        match item {
            Item::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, path, &[][..]).unwrap();
            }
            Item::File(path, content) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o4755);
                header.set_size(content.len() as u64);
                builder
                    .append_data(&mut header, path, content.as_bytes())
                    .unwrap();
            }
            Item::Symlink(path, target) | Item::Hardlink(path, target) => {
                let kind = if matches!(item, Item::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                header.set_entry_type(kind);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
            Item::RawName(name) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(4);
                header.as_old_mut().name[..name.len()].copy_from_slice(name);
                header.set_cksum();
                builder.append(&header, &b"evil"[..]).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// An OCI image layout under construction.
struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Self {
            dir: dir.to_owned(),
        }
    }

    fn blob(&self, bytes: &[u8]) -> String {
        let digest = hex(&Sha256::digest(bytes));
        std::fs::write(self.dir.join("blobs/sha256").join(&digest), bytes).unwrap();
        format!("sha256:{digest}")
    }

    /// Writes the config, the manifest and the index for `layers` (already blobs).
    fn finish(&self, layers: &[String], config: &serde_json::Value) {
        let config = self.blob(config.to_string().as_bytes());
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .map(|digest| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest, "size": 0
                })
            })
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 0},
            "layers": layers,
        });
        let manifest = self.blob(manifest.to_string().as_bytes());
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest, "size": 0,
                           "platform": {"os": "linux", "architecture": "amd64"}}],
        });
        std::fs::write(self.dir.join("index.json"), index.to_string()).unwrap();
    }
}

fn config() -> serde_json::Value {
    serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "GREETING=a=b"],
            "User": "app", "WorkingDir": "/srv",
            "Entrypoint": ["/bin/serve"], "Cmd": ["--port", "8080"]
        }
    })
}

/// A two-layer image: the second hides a file, empties a directory, replaces a file.
fn two_layers(dir: &Path) {
    let layout = Layout::new(dir);
    let first = layout.blob(&gzip(&layer_tar(&[
        Item::Dir("etc"),
        Item::File("etc/a", "old a"),
        Item::File("etc/b", "b"),
        Item::Dir("d"),
        Item::File("d/x", "x"),
        Item::Dir("usr/lib"),
        Item::File("usr/lib/libz", "z"),
        Item::Symlink("lib", "usr/lib"),
        Item::Symlink("etc/abs", "/etc/passwd"),
        Item::Hardlink("etc/a2", "etc/a"),
    ])));
    let second = layout.blob(&layer_tar(&[
        Item::File("etc/.wh.b", ""),
        Item::Dir("d"),
        Item::File("d/.wh..wh..opq", ""),
        Item::File("d/y", "y"),
        Item::File("etc/a", "new a"),
    ]));
    layout.finish(&[first, second], &config());
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn test_layout_imports_with_whiteouts_opaque_dirs_and_links() {
    let image = tempfile::tempdir().unwrap();
    two_layers(image.path());
    let into = tempfile::tempdir().unwrap();

    let imported = import(image.path(), into.path(), IdMap::IDENTITY).unwrap();

    let root = into.path();
    assert_eq!(imported.layers, 2);
    assert_eq!(read(&root.join("etc/a")), "new a");
    assert_eq!(
        read(&root.join("etc/a2")),
        "old a",
        "the hard link kept the first file"
    );
    assert!(!root.join("etc/b").exists(), "whited out");
    assert!(!root.join("d/x").exists(), "hidden by the opaque marker");
    assert_eq!(read(&root.join("d/y")), "y");
    assert!(!root.join("d/.wh..wh..opq").exists());
    assert_eq!(
        std::fs::read_link(root.join("lib")).unwrap(),
        Path::new("usr/lib")
    );
    // Stored as given, and never followed while writing.
    assert_eq!(
        std::fs::read_link(root.join("etc/abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    let metadata = std::fs::metadata(root.join("etc/a")).unwrap();
    assert_eq!(metadata.mode() & 0o7777, 0o755, "setuid dropped");
    assert_eq!(
        metadata.modified().unwrap(),
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(ENTRY_MTIME),
        "the image's time, which bytecode caches compare"
    );
    assert_eq!(
        imported.config,
        ImageConfig {
            env: vec![
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                ("GREETING".into(), "a=b".into())
            ],
            user: Some("app".into()),
            workdir: Some("/srv".into()),
            entrypoint: vec!["/bin/serve".into()],
            cmd: vec!["--port".into(), "8080".into()],
        }
    );
}

/// A tarball of `dir`'s files, as `docker save` writes one.
fn tarball(dir: &Path, out: &Path) {
    let mut builder = tar::Builder::new(std::fs::File::create(out).unwrap());
    builder.follow_symlinks(false);
    builder.append_dir_all(".", dir).unwrap();
    builder.finish().unwrap();
}

#[test]
fn test_docker_save_tarball_imports() {
    let staging = tempfile::tempdir().unwrap();
    let layer = layer_tar(&[Item::Dir("bin"), Item::File("bin/tool", "#!/bin/sh\n")]);
    std::fs::create_dir(staging.path().join("0123abcd")).unwrap();
    std::fs::write(staging.path().join("0123abcd/layer.tar"), &layer).unwrap();
    std::fs::write(staging.path().join("cafe.json"), config().to_string()).unwrap();
    std::fs::write(
        staging.path().join("manifest.json"),
        r#"[{"Config":"cafe.json","RepoTags":["tool:1"],"Layers":["0123abcd/layer.tar"]}]"#,
    )
    .unwrap();
    let archive = tempfile::tempdir().unwrap();
    let saved = archive.path().join("image.tar");
    tarball(staging.path(), &saved);
    let into = tempfile::tempdir().unwrap();

    let imported = import(&saved, into.path(), IdMap::IDENTITY).unwrap();

    assert_eq!(read(&into.path().join("bin/tool")), "#!/bin/sh\n");
    assert_eq!(imported.config.workdir.as_deref(), Some("/srv"));
}

#[test]
fn test_layout_tarball_imports() {
    let image = tempfile::tempdir().unwrap();
    two_layers(image.path());
    let archive = tempfile::tempdir().unwrap();
    let saved = archive.path().join("layout.tar");
    tarball(image.path(), &saved);
    let into = tempfile::tempdir().unwrap();

    import(&saved, into.path(), IdMap::IDENTITY).unwrap();

    assert_eq!(read(&into.path().join("d/y")), "y");
}

/// Imports an image whose first layer is fine and whose second is `bad`; the import must be
/// refused whole, with nothing written.
fn assert_refused_whole(bad: &[Item<'_>], why: &str) {
    let image = tempfile::tempdir().unwrap();
    let layout = Layout::new(image.path());
    let good = layout.blob(&gzip(&layer_tar(&[
        Item::Dir("etc"),
        Item::File("etc/hosts", "h"),
        Item::Symlink("lib", "/etc"),
    ])));
    let bad = layout.blob(&gzip(&layer_tar(bad)));
    layout.finish(&[good, bad], &config());
    let into = tempfile::tempdir().unwrap();

    let error = import(image.path(), into.path(), IdMap::IDENTITY).unwrap_err();

    assert_eq!(error.kind(), OciErrorKind::Invalid, "{error}");
    assert!(
        error.to_string().contains(why),
        "{error} should say {why:?}"
    );
    assert_eq!(
        std::fs::read_dir(into.path()).unwrap().count(),
        0,
        "nothing of a refused image is written"
    );
}

#[test]
fn test_escaping_entries_are_refused_whole() {
    assert_refused_whole(&[Item::RawName(b"../escaped")], "'..'");
    assert_refused_whole(&[Item::RawName(b"/etc/escaped")], "absolute");
    assert_refused_whole(&[Item::File("lib/shadow", "x")], "below a symlink");
    assert_refused_whole(&[Item::File("etc/hosts/x", "x")], "below a file");
    assert_refused_whole(
        &[Item::Hardlink("etc/pw", "../../etc/passwd")],
        "link target",
    );
    assert_refused_whole(
        &[Item::Hardlink("etc/pw", "lib")],
        "not a file of the image",
    );
    assert_refused_whole(&[Item::File("lib/.wh.passwd", "")], "below a symlink");
}

#[test]
fn test_a_blob_that_does_not_match_its_digest_is_refused() {
    let image = tempfile::tempdir().unwrap();
    two_layers(image.path());
    // Swap the bytes of the first layer for others.
    let blobs = image.path().join("blobs/sha256");
    let mut tampered = false;
    for entry in std::fs::read_dir(&blobs).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if bytes.starts_with(&[0x1f, 0x8b]) {
            std::fs::write(&path, gzip(&layer_tar(&[Item::File("evil", "x")]))).unwrap();
            tampered = true;
        }
    }
    assert!(tampered);
    let into = tempfile::tempdir().unwrap();

    let error = import(image.path(), into.path(), IdMap::IDENTITY).unwrap_err();

    assert_eq!(error.kind(), OciErrorKind::Invalid, "{error}");
    assert!(error.to_string().contains("digest"), "{error}");
    assert_eq!(std::fs::read_dir(into.path()).unwrap().count(), 0);
}

#[test]
fn test_zstd_layers_are_applied_and_a_corrupt_one_refused() {
    use ruzstd::encoding::{CompressionLevel, compress_to_vec};
    let image = tempfile::tempdir().unwrap();
    let layout = Layout::new(image.path());
    let tar = layer_tar(&[Item::Dir("etc"), Item::File("etc/zstd", "decoded\n")]);
    // Two frames, as `zstd` writes a stream compressed in parts.
    let (head, tail) = tar.split_at(tar.len() / 2);
    let mut zstd = compress_to_vec(head, CompressionLevel::Fastest);
    zstd.extend(compress_to_vec(tail, CompressionLevel::Fastest));
    let blob = layout.blob(&zstd);
    layout.finish(&[blob], &config());
    let into = tempfile::tempdir().unwrap();
    import(image.path(), into.path(), IdMap::IDENTITY).unwrap();
    assert_eq!(
        std::fs::read_to_string(into.path().join("etc/zstd")).unwrap(),
        "decoded\n"
    );

    let corrupt = tempfile::tempdir().unwrap();
    let layout = Layout::new(corrupt.path());
    let blob = layout.blob(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]);
    layout.finish(&[blob], &config());
    let into = tempfile::tempdir().unwrap();
    let error = import(corrupt.path(), into.path(), IdMap::IDENTITY).unwrap_err();
    assert_eq!(error.kind(), OciErrorKind::Invalid, "{error}");
    assert_eq!(
        std::fs::read_dir(into.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn test_missing_images_are_reported() {
    let into = tempfile::tempdir().unwrap();

    let empty = tempfile::tempdir().unwrap();
    let error = import(empty.path(), into.path(), IdMap::IDENTITY).unwrap_err();
    assert_eq!(error.kind(), OciErrorKind::NotFound, "{error}");
    let error = import(&empty.path().join("nothing"), into.path(), IdMap::IDENTITY).unwrap_err();
    assert_eq!(error.kind(), OciErrorKind::NotFound, "{error}");
}

#[test]
fn test_a_rootfs_tarball_imports_and_an_escaping_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("rootfs.tar");
    std::fs::write(
        &good,
        layer_tar(&[
            Item::Dir("etc"),
            Item::File("etc/os-release", "ID=debian\n"),
        ]),
    )
    .unwrap();
    let into = tempfile::tempdir().unwrap();
    import_rootfs_tar(&good, into.path(), IdMap::IDENTITY).unwrap();
    assert_eq!(read(&into.path().join("etc/os-release")), "ID=debian\n");

    let bad = dir.path().join("bad.tar");
    std::fs::write(
        &bad,
        gzip(&layer_tar(&[
            Item::File("ok", "x"),
            Item::RawName(b"../escaped"),
        ])),
    )
    .unwrap();
    let empty = tempfile::tempdir().unwrap();
    let error = import_rootfs_tar(&bad, empty.path(), IdMap::IDENTITY).unwrap_err();
    assert_eq!(error.kind(), OciErrorKind::Invalid, "{error}");
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}

/// An image of `layers`, each a list of items, imported into a fresh directory.
fn import_layers(layers: &[&[Item<'_>]]) -> (tempfile::TempDir, Result<Imported, OciError>) {
    let image = tempfile::tempdir().unwrap();
    let layout = Layout::new(image.path());
    let blobs: Vec<String> = layers
        .iter()
        .map(|items| layout.blob(&gzip(&layer_tar(items))))
        .collect();
    layout.finish(&blobs, &config());
    let into = tempfile::tempdir().unwrap();
    let result = import(image.path(), into.path(), IdMap::IDENTITY);
    (into, result)
}

#[test]
fn test_later_layers_replace_links_files_and_directories_as_overlayfs_does() {
    let (into, result) = import_layers(&[
        &[
            Item::Symlink("sh", "dash"),
            Item::File("f", "file"),
            Item::Dir("tree"),
            Item::Dir("tree/sub"),
            Item::File("tree/sub/leaf", "leaf"),
        ],
        &[
            // A file where a symlink was; a directory (made opaque) where a file was; a
            // whited-out directory with everything in it.
            Item::File("sh", "a real shell"),
            Item::Dir("f"),
            Item::File("f/.wh..wh..opq", ""),
            Item::File("f/inside", "in"),
            Item::File(".wh.tree", ""),
        ],
    ]);
    result.unwrap();
    let root = into.path();
    assert_eq!(read(&root.join("sh")), "a real shell");
    assert!(
        !std::fs::symlink_metadata(root.join("sh"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(read(&root.join("f/inside")), "in");
    assert!(!root.join("tree").exists());
}

#[test]
fn test_over_long_paths_are_refused() {
    let long = "d/".repeat(2100) + "f";
    let (into, result) = import_layers(&[&[Item::File(&long, "x")]]);
    let error = result.unwrap_err();
    assert_eq!(error.kind(), OciErrorKind::Invalid, "{error}");
    assert!(error.to_string().contains("longer than"), "{error}");
    assert_eq!(std::fs::read_dir(into.path()).unwrap().count(), 0);
}
