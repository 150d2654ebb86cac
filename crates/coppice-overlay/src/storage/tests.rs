//! Tests of `OverlayStorage` over tempdirs and the fake sys layer; no root needed.
use std::os::unix::fs::{PermissionsExt, symlink};

use coppice_core::ErrorKind;
use tempfile::TempDir;

use super::*;
use crate::sys::{FakeOverlaySys, SysOp};

const ROOT_ID: u32 = 200_000;

pub(super) struct Harness {
    pub(super) dir: TempDir,
    pub(super) sys: Arc<FakeOverlaySys>,
    pub(super) storage: OverlayStorage,
}

impl Harness {
    pub(super) fn root(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    fn reopen(&self) -> OverlayStorage {
        OverlayStorage::with_sys(self.sys.clone(), self.storage.config().clone()).unwrap()
    }

    pub(super) fn base_layer(&self) -> LayerId {
        let record = self.storage.read_template(&template_id("base")).unwrap();
        record.layers[0].clone()
    }

    fn base_tree(&self) -> PathBuf {
        self.storage.layers().tree_dir(&self.base_layer())
    }

    /// Where `relative` was while the base layer was being built, the path the fake saw.
    fn staged(&self, relative: &str) -> PathBuf {
        let staging = format!(".staging-{}", self.base_layer());
        self.root()
            .join("layers")
            .join(staging)
            .join("tree")
            .join(relative)
    }

    /// The owner the fake gave to `relative` in the base layer's tree.
    fn base_owner(&self, relative: &str) -> Option<(u32, u32)> {
        self.sys.owner(&self.staged(relative))
    }
}

/// A storage over a tempdir, with a fake host `/usr` (bin, lib, sbin; no lib64) and a fake
/// host `/etc`.
pub(super) fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let host_usr = dir.path().join("host/usr");
    for sub in ["bin", "lib", "sbin"] {
        fs::create_dir_all(host_usr.join(sub)).unwrap();
    }
    let host_etc = dir.path().join("host/etc");
    fs::create_dir_all(host_etc.join("ssl/certs")).unwrap();
    fs::create_dir_all(host_etc.join("ssl/private")).unwrap();
    fs::create_dir_all(host_etc.join("ld.so.conf.d")).unwrap();
    fs::write(host_etc.join("ssl/certs/ca.pem"), b"CERT").unwrap();
    fs::write(host_etc.join("ssl/private/host.key"), b"KEY").unwrap();
    fsutil::set_mode(&host_etc.join("ssl/private"), 0o700).unwrap();
    fs::write(host_etc.join("ld.so.conf.d/libc.conf"), b"/usr/local/lib\n").unwrap();
    fs::write(host_etc.join("debian_version"), b"12.0\n").unwrap();
    fs::write(host_etc.join("shadow"), b"root:*:1::::::\n").unwrap();
    symlink("../usr/lib/os-release", host_etc.join("os-release")).unwrap();
    let config = OverlayConfig {
        root: dir.path().join("storage"),
        sandbox_root_uid: ROOT_ID,
        sandbox_root_gid: ROOT_ID,
        host_usr,
        host_etc,
    };
    let sys = Arc::new(FakeOverlaySys::default());
    let storage = OverlayStorage::with_sys(sys.clone(), config).unwrap();
    Harness { dir, sys, storage }
}

/// A harness whose base template is built.
pub(super) fn harness_with_base() -> Harness {
    let harness = harness();
    harness.storage.ensure_base_template().unwrap();
    harness
}

pub(super) fn template_id(value: &str) -> TemplateId {
    value.parse().unwrap()
}

pub(super) fn sandbox_id(value: &str) -> SandboxId {
    value.parse().unwrap()
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn test_ensure_base_template_creates_usr_merge_links_for_present_dirs() {
    let harness = harness_with_base();

    let tree = harness.base_tree();

    assert_eq!(
        fs::read_link(tree.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert_eq!(
        fs::read_link(tree.join("lib")).unwrap(),
        Path::new("usr/lib")
    );
    assert_eq!(
        fs::read_link(tree.join("sbin")).unwrap(),
        Path::new("usr/sbin")
    );
    assert!(fs::symlink_metadata(tree.join("lib64")).is_err());
}

#[test]
fn test_ensure_base_template_creates_mount_points() {
    let harness = harness_with_base();

    let tree = harness.base_tree();

    let dirs = [
        "usr",
        "proc",
        "dev",
        "tmp",
        "sys",
        "run",
        "root",
        "home/user",
        "var/tmp",
        "var/log",
        "workspace",
        ".oldroot",
        "etc",
        "mnt",
        "opt",
        "srv",
    ];
    let missing: Vec<&str> = dirs
        .into_iter()
        .filter(|dir| !tree.join(dir).is_dir())
        .collect();
    assert!(missing.is_empty(), "{missing:?}");
    assert_eq!(mode_of(&tree.join("tmp")), 0o1777);
    assert_eq!(mode_of(&tree.join("root")), 0o700);
}

#[test]
fn test_ensure_base_template_gives_home_to_the_sandbox_user() {
    let harness = harness_with_base();

    let home = harness.base_owner("home/user");

    assert_eq!(home, Some((ROOT_ID + 1000, ROOT_ID + 1000)));
    assert_eq!(harness.base_owner("home"), Some((ROOT_ID, ROOT_ID)));
    assert_eq!(harness.base_owner("etc/passwd"), Some((ROOT_ID, ROOT_ID)));
    assert_eq!(harness.base_owner("bin"), Some((ROOT_ID, ROOT_ID)));
}

#[test]
fn test_ensure_base_template_generates_etc_files() {
    let harness = harness_with_base();

    let etc = harness.base_tree().join("etc");

    let passwd = fs::read_to_string(etc.join("passwd")).unwrap();
    assert!(
        passwd.contains("root:x:0:0:root:/root:/bin/bash\n"),
        "{passwd}"
    );
    assert!(
        passwd.contains("user:x:1000:1000::/home/user:/bin/bash\n"),
        "{passwd}"
    );
    assert!(passwd.contains("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"));
    let group = fs::read_to_string(etc.join("group")).unwrap();
    assert_eq!(group, "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n");
    assert_eq!(
        fs::read_to_string(etc.join("hostname")).unwrap(),
        "sandbox\n"
    );
    let hosts = fs::read_to_string(etc.join("hosts")).unwrap();
    assert!(hosts.contains("127.0.0.1\tlocalhost\n"), "{hosts}");
    assert!(
        hosts.contains("::1\tlocalhost ip6-localhost ip6-loopback\n"),
        "{hosts}"
    );
    let nsswitch = fs::read_to_string(etc.join("nsswitch.conf")).unwrap();
    assert!(nsswitch.contains("passwd: files\n") && nsswitch.contains("hosts: files dns\n"));
}

#[test]
fn test_ensure_base_template_resolv_conf_has_only_comments() {
    let harness = harness_with_base();

    let resolv = fs::read_to_string(harness.base_tree().join("etc/resolv.conf")).unwrap();

    assert!(resolv.lines().all(|line| line.starts_with('#')), "{resolv}");
}

#[test]
fn test_ensure_base_template_machine_id_is_32_hex_digits() {
    let harness = harness_with_base();

    let id = fs::read_to_string(harness.base_tree().join("etc/machine-id")).unwrap();

    let id = id.strip_suffix('\n').unwrap();
    assert_eq!(id.len(), 32);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{id}"
    );
}

#[test]
fn test_ensure_base_template_profile_sets_path_and_sources_profile_d() {
    let harness = harness_with_base();

    let profile = fs::read_to_string(harness.base_tree().join("etc/profile")).unwrap();

    assert!(
        profile.contains("PATH=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"")
    );
    assert!(profile.contains("/etc/profile.d/*.sh"));
}

#[test]
fn test_ensure_base_template_copies_host_etc_entries() {
    let harness = harness_with_base();

    let etc = harness.base_tree().join("etc");

    assert_eq!(fs::read(etc.join("ssl/certs/ca.pem")).unwrap(), b"CERT");
    assert_eq!(
        fs::read(etc.join("ld.so.conf.d/libc.conf")).unwrap(),
        b"/usr/local/lib\n"
    );
    assert_eq!(fs::read(etc.join("debian_version")).unwrap(), b"12.0\n");
    assert_eq!(
        fs::read_link(etc.join("os-release")).unwrap(),
        Path::new("../usr/lib/os-release")
    );
    assert_eq!(
        harness.base_owner("etc/ssl/certs/ca.pem"),
        Some((ROOT_ID, ROOT_ID))
    );
}

#[test]
fn test_ensure_base_template_leaves_out_shadow_and_private_keys() {
    let harness = harness_with_base();

    let etc = harness.base_tree().join("etc");

    assert!(!etc.join("shadow").exists());
    assert!(!etc.join("ssl/private").exists());
}

#[test]
fn test_ensure_base_template_records_defaults_and_size() {
    let harness = harness();

    let info = harness.storage.ensure_base_template().unwrap();

    assert_eq!(info.id, template_id("base"));
    assert_eq!(info.default_user, "user");
    assert_eq!(info.default_workdir, "/home/user");
    assert_eq!(
        info.size_bytes,
        fsutil::tree_size(&harness.base_tree()).unwrap()
    );
    assert!(info.size_bytes > 0);
}

#[test]
fn test_ensure_base_template_second_call_changes_nothing() {
    let harness = harness();
    let first = harness.storage.ensure_base_template().unwrap();
    let calls_before = harness.sys.calls().len();

    let second = harness.storage.ensure_base_template().unwrap();

    assert_eq!(second, first);
    assert_eq!(harness.sys.calls().len(), calls_before);
    assert_eq!(harness.storage.layers().list().unwrap().len(), 1);
}

#[test]
fn test_ensure_base_template_half_built_leftovers_are_removed() {
    let harness = harness();
    let layers = harness.root().join("layers");
    fs::create_dir_all(layers.join(".staging-base-1-00000000/tree/etc")).unwrap();
    fs::write(
        layers.join(".staging-base-1-00000000/tree/etc/passwd"),
        b"partial",
    )
    .unwrap();
    fs::create_dir_all(layers.join("base-2-00000000/tree")).unwrap();

    harness.storage.ensure_base_template().unwrap();

    let entries = fsutil::read_dir_sorted(&layers).unwrap();
    assert_eq!(entries, vec![layers.join(harness.base_layer().as_str())]);
}

#[test]
fn test_ensure_base_template_missing_layer_is_rebuilt() {
    let harness = harness_with_base();
    let old = harness.base_layer();
    fs::remove_dir_all(harness.root().join("layers").join(old.as_str())).unwrap();

    harness.storage.ensure_base_template().unwrap();

    assert_ne!(harness.base_layer(), old);
    assert!(harness.base_tree().join("etc/passwd").is_file());
}

#[test]
fn test_ensure_base_template_corrupt_metadata_is_rebuilt() {
    let harness = harness_with_base();
    let old = harness.base_layer();
    fs::write(harness.root().join("templates/base.json"), b"{truncated").unwrap();

    harness.storage.ensure_base_template().unwrap();

    assert_ne!(harness.base_layer(), old);
    assert_eq!(harness.storage.layers().list().unwrap().len(), 1);
}

#[test]
fn test_ensure_base_template_failure_leaves_nothing_behind() {
    let harness = harness();
    harness.sys.fail_next(SysOp::Lchown, libc::EPERM);

    let err = harness.storage.ensure_base_template().unwrap_err();

    assert!(matches!(err, OverlayError::Chown { .. }), "{err:?}");
    assert!(
        fsutil::read_dir_sorted(&harness.root().join("layers"))
            .unwrap()
            .is_empty()
    );
    assert!(
        fsutil::read_dir_sorted(&harness.root().join("templates"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn test_prune_layers_removes_orphans_and_keeps_used_layers() {
    let harness = harness_with_base();
    let pending = harness
        .storage
        .layers()
        .begin("orphan".parse().unwrap(), None)
        .unwrap();
    harness
        .storage
        .layers()
        .commit(pending, "orphan", SystemTime::now())
        .unwrap();

    let removed = harness.storage.prune_layers().unwrap();

    assert_eq!(removed, vec!["orphan".parse::<LayerId>().unwrap()]);
    assert!(harness.storage.layers().get(&harness.base_layer()).is_ok());
}

#[test]
fn test_prune_layers_keeps_layer_used_only_by_a_sandbox() {
    let harness = harness_with_base();
    let old = harness.base_layer();
    harness
        .storage
        .create_rootfs(&sandbox_id("sbx1"), &template_id("base"), 512)
        .unwrap();
    fs::remove_file(harness.root().join("templates/base.json")).unwrap();
    harness.storage.ensure_base_template().unwrap();

    let removed = harness.storage.prune_layers().unwrap();

    assert!(removed.is_empty());
    assert!(harness.storage.layers().get(&old).is_ok());
}

#[test]
fn test_create_rootfs_returns_overlay_of_template_layers() {
    let harness = harness_with_base();
    let id = sandbox_id("sbx1");

    let rootfs = harness
        .storage
        .create_rootfs(&id, &template_id("base"), 512)
        .unwrap();

    let dir = harness.root().join("sandboxes/sbx1");
    let expected = RootFs::Overlay {
        lower: vec![harness.base_tree()],
        upper: dir.join("upper"),
        work: dir.join("work"),
        binds: vec![BindMount {
            source: harness.storage.config().host_usr.clone(),
            target: PathBuf::from("/usr"),
            read_only: true,
        }],
    };
    assert_eq!(rootfs, expected);
}

#[test]
fn test_create_rootfs_upper_is_owned_by_sandbox_root_with_mode_0755() {
    let harness = harness_with_base();

    harness
        .storage
        .create_rootfs(&sandbox_id("sbx1"), &template_id("base"), 512)
        .unwrap();

    let upper = harness.root().join("sandboxes/sbx1/upper");
    assert_eq!(mode_of(&upper), 0o755);
    assert_eq!(harness.sys.owner(&upper), Some((ROOT_ID, ROOT_ID)));
    assert!(harness.root().join("sandboxes/sbx1/work").is_dir());
}

#[test]
fn test_create_rootfs_records_disk_mb() {
    let harness = harness_with_base();
    let id = sandbox_id("sbx1");

    harness
        .storage
        .create_rootfs(&id, &template_id("base"), 2048)
        .unwrap();

    let path = harness.root().join("sandboxes/sbx1/rootfs.json");
    let record = RootfsRecord::read(&path, &id).unwrap().unwrap();
    assert_eq!(record.disk_mb, 2048);
    assert_eq!(record.template, template_id("base"));
}

#[test]
fn test_create_rootfs_then_rootfs_and_list_agree() {
    let harness = harness_with_base();
    let id = sandbox_id("sbx1");

    let created = harness
        .storage
        .create_rootfs(&id, &template_id("base"), 512)
        .unwrap();

    assert_eq!(harness.storage.rootfs(&id).unwrap(), created);
    assert_eq!(harness.storage.list_rootfs().unwrap(), vec![id]);
}

#[test]
fn test_create_rootfs_existing_sandbox_is_already_exists() {
    let harness = harness_with_base();
    let id = sandbox_id("sbx1");
    harness
        .storage
        .create_rootfs(&id, &template_id("base"), 512)
        .unwrap();

    let err = harness
        .storage
        .create_rootfs(&id, &template_id("base"), 512)
        .unwrap_err();

    assert!(
        matches!(err, StorageError::AlreadyExists { id: ref got } if *got == id),
        "{err:?}"
    );
    assert!(harness.storage.rootfs(&id).is_ok());
}

#[test]
fn test_create_rootfs_unknown_template_is_template_not_found_and_leaves_nothing() {
    let harness = harness_with_base();

    let err = harness
        .storage
        .create_rootfs(&sandbox_id("sbx1"), &template_id("nope"), 512)
        .unwrap_err();

    assert!(matches!(err, StorageError::TemplateNotFound { ref id } if id.as_str() == "nope"));
    assert!(
        fsutil::read_dir_sorted(&harness.root().join("sandboxes"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn test_create_rootfs_chown_failure_leaves_nothing() {
    let harness = harness_with_base();
    harness.sys.fail_next(SysOp::Lchown, libc::EPERM);

    let err = harness
        .storage
        .create_rootfs(&sandbox_id("sbx1"), &template_id("base"), 512)
        .unwrap_err();

    assert_eq!(err.kind(), ErrorKind::Internal);
    assert!(
        fsutil::read_dir_sorted(&harness.root().join("sandboxes"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn test_create_rootfs_template_without_layer_is_backend_error() {
    let harness = harness_with_base();
    fs::remove_dir_all(
        harness
            .root()
            .join("layers")
            .join(harness.base_layer().as_str()),
    )
    .unwrap();

    let err = harness
        .storage
        .create_rootfs(&sandbox_id("sbx1"), &template_id("base"), 512)
        .unwrap_err();

    assert!(
        matches!(
            err,
            StorageError::Backend {
                op: "create rootfs",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        fsutil::read_dir_sorted(&harness.root().join("sandboxes"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn test_destroy_rootfs_removes_overlay_work_leftovers() {
    let harness = harness_with_base();
    let id = sandbox_id("sbx1");
    harness
        .storage
        .create_rootfs(&id, &template_id("base"), 512)
        .unwrap();
    let kernel_work = harness.root().join("sandboxes/sbx1/work/work");
    fs::create_dir_all(kernel_work.join("index")).unwrap();
    fsutil::set_mode(&kernel_work, 0).unwrap();

    harness.storage.destroy_rootfs(&id).unwrap();

    assert!(!harness.root().join("sandboxes/sbx1").exists());
    assert!(harness.storage.list_rootfs().unwrap().is_empty());
}

#[test]
fn test_destroy_rootfs_unknown_sandbox_is_ok() {
    let harness = harness();

    let result = harness.storage.destroy_rootfs(&sandbox_id("ghost"));

    assert!(result.is_ok());
}

#[test]
fn test_rootfs_unknown_sandbox_is_not_found() {
    let harness = harness();

    let err = harness.storage.rootfs(&sandbox_id("ghost")).unwrap_err();

    assert!(matches!(err, StorageError::NotFound { .. }), "{err:?}");
}

#[test]
fn test_list_rootfs_includes_interrupted_create() {
    let harness = harness();
    fs::create_dir(harness.root().join("sandboxes/half")).unwrap();
    fs::create_dir(harness.root().join("sandboxes/.tmp")).unwrap();

    let listed = harness.storage.list_rootfs().unwrap();

    assert_eq!(listed, vec![sandbox_id("half")]);
    assert!(matches!(
        harness.storage.rootfs(&sandbox_id("half")),
        Err(StorageError::NotFound { .. })
    ));
}

#[test]
fn test_templates_lists_base_after_build() {
    let harness = harness();
    let info = harness.storage.ensure_base_template().unwrap();

    let templates = harness.storage.templates().unwrap();

    assert_eq!(templates, vec![info]);
}

#[test]
fn test_template_unknown_is_template_not_found() {
    let harness = harness();

    let err = harness.storage.template(&template_id("base")).unwrap_err();

    assert!(
        matches!(err, StorageError::TemplateNotFound { .. }),
        "{err:?}"
    );
}

#[test]
fn test_reopened_storage_sees_templates_layers_and_rootfs() {
    let harness = harness_with_base();
    let id = sandbox_id("sbx1");
    let created = harness
        .storage
        .create_rootfs(&id, &template_id("base"), 512)
        .unwrap();
    let template = harness.storage.template(&template_id("base")).unwrap();

    let reopened = harness.reopen();

    assert_eq!(reopened.templates().unwrap(), vec![template]);
    assert_eq!(
        reopened.layers().list().unwrap(),
        harness.storage.layers().list().unwrap()
    );
    assert_eq!(reopened.rootfs(&id).unwrap(), created);
    assert_eq!(reopened.list_rootfs().unwrap(), vec![id]);
}

#[test]
fn test_with_sys_relative_root_is_rejected() {
    let config = OverlayConfig::new(PathBuf::from("relative"), ROOT_ID, ROOT_ID);

    let err = OverlayStorage::with_sys(Arc::new(FakeOverlaySys::default()), config).unwrap_err();

    assert!(matches!(
        err,
        OverlayError::RelativePath { field: "root", .. }
    ));
}
