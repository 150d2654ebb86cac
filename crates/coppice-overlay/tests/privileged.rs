//! Privileged tests of overlay storage: the base template and a sandbox root filesystem made
//! for real, as root, from the host's `/etc` and `/usr`. Linux only, root only.
#![cfg(target_os = "linux")]
// Test helpers outside `#[test]` functions unwrap too: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use coppice_core::storage::{RootFs, Storage};
use coppice_core::{SandboxId, TemplateId};
use coppice_overlay::{OverlayConfig, OverlayStorage};

/// Host uid and gid that sandbox root maps to in these tests.
const SANDBOX_ROOT: u32 = 200_000;

fn open_storage(dir: &Path) -> OverlayStorage {
    OverlayStorage::new(OverlayConfig::new(
        dir.join("storage"),
        SANDBOX_ROOT,
        SANDBOX_ROOT,
    ))
    .expect("open overlay storage")
}

/// Builds the base template and returns the tree of its only layer.
fn build_base(storage: &OverlayStorage) -> PathBuf {
    storage
        .ensure_base_template()
        .expect("build the base template");
    let layers = storage.layers().list().expect("list layers");
    storage.layers().tree_dir(&layers[0].id)
}

fn owner(path: &Path) -> (u32, u32) {
    let meta = fs::symlink_metadata(path).expect("stat");
    (meta.uid(), meta.gid())
}

fn sandbox_dir(dir: &Path, id: &str) -> PathBuf {
    dir.join("storage/sandboxes").join(id)
}

fn base() -> TemplateId {
    "base".parse().expect("valid template id")
}

fn sandbox(value: &str) -> SandboxId {
    value.parse().expect("valid sandbox id")
}

#[test]
#[ignore = "privileged: chowns files to the sandbox id range"]
fn test_ensure_base_template_as_root_etc_passwd_is_owned_by_sandbox_root() {
    coppice_core::require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let storage = open_storage(dir.path());

    let tree = build_base(&storage);

    assert_eq!(
        owner(&tree.join("etc/passwd")),
        (SANDBOX_ROOT, SANDBOX_ROOT)
    );
    assert_eq!(owner(&tree), (SANDBOX_ROOT, SANDBOX_ROOT));
}

#[test]
#[ignore = "privileged: chowns files to the sandbox id range"]
fn test_ensure_base_template_as_root_home_user_is_owned_by_sandbox_user() {
    coppice_core::require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let storage = open_storage(dir.path());

    let tree = build_base(&storage);

    assert_eq!(
        owner(&tree.join("home/user")),
        (SANDBOX_ROOT + 1000, SANDBOX_ROOT + 1000)
    );
    assert_eq!(
        fs::metadata(tree.join("home/user"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
}

#[test]
#[ignore = "privileged: chowns files to the sandbox id range"]
fn test_ensure_base_template_as_root_copies_host_etc_as_sandbox_root() {
    coppice_core::require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let storage = open_storage(dir.path());

    let tree = build_base(&storage);

    assert!(fs::symlink_metadata(tree.join("etc/ld.so.cache")).is_ok());
    assert_eq!(
        owner(&tree.join("etc/ld.so.cache")),
        (SANDBOX_ROOT, SANDBOX_ROOT)
    );
    assert!(!tree.join("etc/shadow").exists());
    assert!(!tree.join("etc/ssl/private").exists());
}

#[test]
#[ignore = "privileged: chowns files to the sandbox id range"]
fn test_create_rootfs_as_root_upper_is_owned_by_sandbox_root() {
    coppice_core::require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let storage = open_storage(dir.path());
    build_base(&storage);

    let rootfs = storage
        .create_rootfs(&sandbox("sbx1"), &base(), 512)
        .unwrap();

    let upper = sandbox_dir(dir.path(), "sbx1").join("upper");
    assert!(
        matches!(&rootfs, RootFs::Overlay { upper: got, .. } if *got == upper),
        "{rootfs:?}"
    );
    assert_eq!(owner(&upper), (SANDBOX_ROOT, SANDBOX_ROOT));
}

#[test]
#[ignore = "privileged: chowns files to the sandbox id range"]
fn test_destroy_rootfs_as_root_removes_kernel_work_dir() {
    coppice_core::require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let storage = open_storage(dir.path());
    build_base(&storage);
    let id = sandbox("sbx1");
    storage.create_rootfs(&id, &base(), 512).unwrap();
    let work = sandbox_dir(dir.path(), "sbx1").join("work");
    fs::create_dir_all(work.join("work/index")).unwrap();
    fs::set_permissions(work.join("work"), fs::Permissions::from_mode(0o000)).unwrap();

    storage.destroy_rootfs(&id).unwrap();

    assert!(storage.list_rootfs().unwrap().is_empty());
    assert!(!sandbox_dir(dir.path(), "sbx1").exists());
}

/// Mounts the overlay of `rootfs` on `target` with the mount(8) tool (the runtime does this
/// inside the sandbox; here only the layer stack matters).
fn mount_overlay(rootfs: &RootFs, target: &Path) {
    let RootFs::Overlay {
        lower, upper, work, ..
    } = rootfs
    else {
        panic!("overlay storage makes overlays: {rootfs:?}");
    };
    let lowerdir: Vec<String> = lower.iter().map(|l| l.display().to_string()).collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir.join(":"),
        upper.display(),
        work.display()
    );
    fs::create_dir_all(target).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(target)
        .status()
        .unwrap();
    assert!(status.success(), "mount {options}");
}

fn unmount(target: &Path) {
    let status = std::process::Command::new("umount")
        .arg(target)
        .status()
        .unwrap();
    assert!(status.success(), "umount {}", target.display());
}

#[test]
#[ignore = "privileged: mounts overlays and chowns files to the sandbox id range"]
fn test_snapshot_keeps_deletions_opaque_dirs_and_owners_for_its_forks() {
    coppice_core::require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let storage = open_storage(dir.path());
    build_base(&storage);
    let source = storage
        .create_rootfs(&sandbox("src1"), &base(), 512)
        .unwrap();
    let merged = dir.path().join("merged");
    mount_overlay(&source, &merged);
    // A deleted template file (a whiteout), a replaced directory (opaque), a user's file.
    fs::remove_file(merged.join("etc/hostname")).unwrap();
    fs::remove_dir_all(merged.join("home/user")).unwrap();
    fs::create_dir(merged.join("home/user")).unwrap();
    fs::write(merged.join("home/user/mine.txt"), "user data").unwrap();
    std::os::unix::fs::chown(
        merged.join("home/user/mine.txt"),
        Some(SANDBOX_ROOT + 1000),
        Some(SANDBOX_ROOT + 1000),
    )
    .unwrap();
    fs::set_permissions(
        merged.join("home/user/mine.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    unmount(&merged);

    let snapshot: TemplateId = "snap1".parse().unwrap();
    storage
        .snapshot_rootfs(&sandbox("src1"), &snapshot)
        .unwrap();
    let fork = storage
        .create_rootfs(&sandbox("fork1"), &snapshot, 512)
        .unwrap();
    mount_overlay(&fork, &merged);

    let seen = (
        merged.join("etc/hostname").exists(),
        fs::read_to_string(merged.join("home/user/mine.txt")).unwrap(),
        owner(&merged.join("home/user/mine.txt")),
        fs::metadata(merged.join("home/user/mine.txt"))
            .unwrap()
            .mode()
            & 0o7777,
        fs::read_dir(merged.join("home/user")).unwrap().count(),
        merged.join("etc/passwd").is_file(),
    );
    let machine_ids = (
        fs::read_to_string(merged.join("etc/machine-id")).unwrap(),
        fs::read_to_string(sandbox_dir(dir.path(), "src1").join("upper/etc/machine-id")).unwrap(),
    );
    unmount(&merged);
    assert_eq!(
        seen,
        (
            false,
            "user data".to_owned(),
            (SANDBOX_ROOT + 1000, SANDBOX_ROOT + 1000),
            0o600,
            1,
            true
        )
    );
    assert_ne!(
        machine_ids.0, machine_ids.1,
        "the fork has its own machine-id"
    );
}

/// A btrfs file system in an image file, loop-mounted at `mount` until dropped.
struct BtrfsMount {
    mount: PathBuf,
}

impl BtrfsMount {
    fn new(dir: &Path) -> Self {
        let image = dir.join("btrfs.img");
        let file = fs::File::create(&image).unwrap();
        // 256 MiB: below that mkfs.btrfs makes a mixed layout that some kernels mount slowly.
        file.set_len(256 << 20).unwrap();
        drop(file);
        let made = std::process::Command::new("mkfs.btrfs")
            .args(["-q", "-f"])
            .arg(&image)
            .status()
            .expect("mkfs.btrfs (btrfs-progs; scripts/test.sh installs it)");
        assert!(made.success(), "mkfs.btrfs failed");
        let mount = dir.join("btrfs");
        fs::create_dir(&mount).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount)
            .status()
            .unwrap();
        assert!(mounted.success(), "loop-mounting the btrfs image failed");
        Self { mount }
    }
}

impl Drop for BtrfsMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.mount)
            .status();
    }
}

#[test]
#[ignore = "privileged: makes and loop-mounts a btrfs file system"]
fn test_volumes_are_btrfs_subvolumes_on_btrfs_and_directories_elsewhere() {
    coppice_core::require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let btrfs = BtrfsMount::new(dir.path());
    let on_btrfs = open_storage(&btrfs.mount);
    let id: coppice_core::VolumeId = "btrfsvolume".parse().unwrap();
    let path = on_btrfs.create_volume(&id).unwrap();
    let meta = fs::metadata(&path).unwrap();
    // A subvolume's root directory is inode 256 on a device of its own.
    assert_eq!(meta.ino(), 256, "not a subvolume");
    assert_ne!(
        meta.dev(),
        fs::metadata(path.parent().unwrap()).unwrap().dev()
    );
    assert_eq!(owner(&path), (201_000, 201_000));
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    fs::write(path.join("kept.txt"), "data").unwrap();
    on_btrfs.delete_volume(&id).unwrap();
    assert!(!path.exists(), "the subvolume is removed with its files");

    let elsewhere = open_storage(dir.path());
    let plain = elsewhere.create_volume(&id).unwrap();
    assert_ne!(fs::metadata(&plain).unwrap().ino(), 256);
    elsewhere.delete_volume(&id).unwrap();
    drop(btrfs);
}
