//! `ZfsStorage` over the recording fake of `zfs`: the commands it runs, the errors it
//! classifies, and that a failure half-way leaves nothing behind.

use std::sync::Arc;

use coppice_core::ErrorKind;

use super::*;
use crate::sys::fake::FakeZfs;

const BASE: &str = "zroot/coppice/templates/base";

fn storage() -> (ZfsStorage, Arc<FakeZfs>) {
    let fake = Arc::new(
        FakeZfs::default()
            .with_dataset("zroot/coppice", &[("mountpoint", "none")])
            .with_dataset(
                BASE,
                &[
                    ("mountpoint", "/var/db/coppice/templates/base"),
                    ("coppice:user", "user"),
                    ("coppice:workdir", "/home/user"),
                ],
            )
            .with_snapshot(&format!("{BASE}@template")),
    );
    let layout = ZfsLayout::new(
        DatasetName::parse("zroot/coppice").unwrap(),
        "/var/db/coppice",
    );
    (
        ZfsStorage::new(layout, Arc::clone(&fake) as Arc<dyn ZfsSys>),
        fake,
    )
}

fn sandbox(id: &str) -> SandboxId {
    id.parse().unwrap()
}

fn template(id: &str) -> TemplateId {
    id.parse().unwrap()
}

#[test]
fn test_a_sandbox_root_is_a_clone_of_the_template_snapshot_with_its_quota() {
    let (storage, fake) = storage();
    let root = storage
        .create_rootfs(&sandbox("sb1"), &template("base"), 2048)
        .unwrap();
    assert_eq!(
        root,
        RootFs::Directory {
            path: "/var/db/coppice/sandboxes/sb1".into(),
            binds: Vec::new()
        }
    );
    assert!(fake.calls().contains(
        &"clone -o mountpoint=/var/db/coppice/sandboxes/sb1 -o quota=2048M zroot/coppice/templates/base@template zroot/coppice/sandboxes/sb1".to_owned()
    ));
    assert_eq!(storage.list_rootfs().unwrap(), vec![sandbox("sb1")]);
    assert_eq!(storage.rootfs(&sandbox("sb1")).unwrap(), root);

    storage.destroy_rootfs(&sandbox("sb1")).unwrap();
    assert!(storage.list_rootfs().unwrap().is_empty());
    // Destroying an unknown root succeeds, as the trait asks.
    storage.destroy_rootfs(&sandbox("sb1")).unwrap();
    assert_eq!(
        storage.rootfs(&sandbox("sb1")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn test_create_refuses_an_unknown_template_and_a_second_root_without_running_clone() {
    let (storage, fake) = storage();
    let error = storage
        .create_rootfs(&sandbox("sb1"), &template("nope"), 0)
        .unwrap_err();
    assert!(matches!(error, StorageError::TemplateNotFound { .. }));
    storage
        .create_rootfs(&sandbox("sb1"), &template("base"), 0)
        .unwrap();
    let error = storage
        .create_rootfs(&sandbox("sb1"), &template("base"), 0)
        .unwrap_err();
    assert!(matches!(error, StorageError::AlreadyExists { .. }));
    let clones = fake
        .calls()
        .iter()
        .filter(|call| call.starts_with("clone"))
        .count();
    assert_eq!(clones, 1);
}

#[test]
fn test_a_clone_made_but_not_mounted_is_destroyed() {
    let (storage, fake) = storage();
    fake.fail_after(
        "clone",
        "filesystem successfully created, but it may only be mounted by root",
    );
    let error = storage
        .create_rootfs(&sandbox("sb1"), &template("base"), 0)
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Internal);
    assert!(
        storage.list_rootfs().unwrap().is_empty(),
        "the clone stayed"
    );
    storage
        .create_rootfs(&sandbox("sb1"), &template("base"), 0)
        .unwrap();
}

#[test]
fn test_a_failed_snapshot_never_destroys_a_template_it_did_not_make() {
    let (storage, fake) = storage();
    storage
        .create_rootfs(&sandbox("sb1"), &template("base"), 0)
        .unwrap();
    // Another caller's template appears under the name after the existence check; only
    // a clone of this call's snapshot may be undone.
    storage.destroy_if_clone_of(
        &DatasetName::parse(BASE).unwrap(),
        "zroot/coppice/sandboxes/sb1@snap1",
    );
    assert!(fake.datasets().contains(&BASE.to_owned()));
    assert_eq!(
        storage
            .snapshot_rootfs(&sandbox("sb1"), &template("template"))
            .unwrap_err()
            .kind(),
        ErrorKind::Invalid,
        "the reserved name"
    );
}

#[test]
fn test_a_full_pool_is_reported_as_exhausted_and_leaves_nothing() {
    let (storage, fake) = storage();
    fake.fail_next(
        "clone",
        "cannot create 'zroot/coppice/sandboxes/sb1': out of space",
    );
    let error = storage
        .create_rootfs(&sandbox("sb1"), &template("base"), 0)
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::OutOfSpace);
    assert!(storage.list_rootfs().unwrap().is_empty());
}

#[test]
fn test_templates_carry_their_properties() {
    let (storage, _) = storage();
    let templates = storage.templates().unwrap();
    assert_eq!(templates.len(), 1);
    let base = &templates[0];
    assert_eq!(base.id, template("base"));
    assert_eq!(base.default_user, "user");
    assert_eq!(base.default_workdir, "/home/user");
    assert_eq!(base.snapshot_of, None);
    assert_eq!(storage.template(&template("base")).unwrap(), *base);
    assert!(matches!(
        storage.template(&template("other")).unwrap_err(),
        StorageError::TemplateNotFound { .. }
    ));
}

#[test]
fn test_a_snapshot_becomes_a_template_that_outlives_its_sandbox() {
    let (storage, fake) = storage();
    storage
        .create_rootfs(&sandbox("sb1"), &template("base"), 0)
        .unwrap();
    let info = storage
        .snapshot_rootfs(&sandbox("sb1"), &template("snap1"))
        .unwrap();
    assert_eq!(info.id, template("snap1"));
    assert_eq!(info.snapshot_of, Some(sandbox("sb1")));
    assert_eq!(info.default_workdir, "/home/user");
    let calls = fake.calls();
    let steps: Vec<&str> = calls
        .iter()
        .map(String::as_str)
        .filter(|call| !call.starts_with("list"))
        .collect();
    assert_eq!(
        steps[1..],
        [
            "snapshot zroot/coppice/sandboxes/sb1@snap1",
            "clone -o mountpoint=/var/db/coppice/templates/snap1 -o coppice:user=user -o coppice:workdir=/home/user -o coppice:snapshot_of=sb1 zroot/coppice/sandboxes/sb1@snap1 zroot/coppice/templates/snap1",
            "snapshot zroot/coppice/templates/snap1@template",
            "promote zroot/coppice/templates/snap1",
        ]
    );
    // Promotion moved the snapshot to the template, so the sandbox can go.
    storage.destroy_rootfs(&sandbox("sb1")).unwrap();
    storage
        .create_rootfs(&sandbox("sb2"), &template("snap1"), 0)
        .unwrap();
    assert_eq!(
        storage
            .snapshot_rootfs(&sandbox("sb2"), &template("snap1"))
            .unwrap_err()
            .kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        storage
            .snapshot_rootfs(&sandbox("gone"), &template("snap2"))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn test_a_snapshot_failing_half_way_leaves_nothing_behind() {
    // Steps fail before doing their work, and a clone also after doing it.
    for (step, after) in [
        ("snapshot", false),
        ("clone", false),
        ("clone", true),
        ("promote", false),
    ] {
        let (storage, fake) = storage();
        storage
            .create_rootfs(&sandbox("sb1"), &template("base"), 0)
            .unwrap();
        let before = (fake.datasets(), fake.snapshots());
        if after {
            fake.fail_after(step, "cannot do it: out of space");
        } else {
            fake.fail_next(step, "cannot do it: out of space");
        }
        let error = storage
            .snapshot_rootfs(&sandbox("sb1"), &template("snap1"))
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::OutOfSpace, "{step}");
        assert_eq!((fake.datasets(), fake.snapshots()), before, "{step}");
        // And the sandbox is still destroyable.
        storage.destroy_rootfs(&sandbox("sb1")).unwrap();
    }
}

#[test]
fn test_volumes_are_datasets() {
    let (storage, fake) = storage();
    let id: VolumeId = "vol1".parse().unwrap();
    let path = storage.create_volume(&id).unwrap();
    assert_eq!(path, PathBuf::from("/var/db/coppice/volumes/vol1"));
    assert!(
        fake.calls().contains(
            &"create -p -o mountpoint=/var/db/coppice/volumes/vol1 zroot/coppice/volumes/vol1"
                .to_owned()
        )
    );
    assert_eq!(storage.volume_path(&id).unwrap(), path);
    assert_eq!(
        storage.create_volume(&id).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    storage.delete_volume(&id).unwrap();
    assert_eq!(
        storage.delete_volume(&id).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        storage.volume_path(&id).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn test_open_names_a_missing_pool_and_makes_the_parents_once() {
    let layout = || ZfsLayout::new(DatasetName::parse("tank/coppice").unwrap(), "/srv");
    let fake = Arc::new(FakeZfs::default());
    let error = ZfsStorage::open(layout(), Arc::clone(&fake) as Arc<dyn ZfsSys>).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Invalid);
    assert!(
        error
            .to_string()
            .starts_with("ZFS pool tank does not exist"),
        "{error}"
    );
    assert!(fake.datasets().is_empty(), "nothing was made");

    let fake = Arc::new(FakeZfs::default().with_dataset("tank", &[("mountpoint", "/tank")]));
    ZfsStorage::open(layout(), Arc::clone(&fake) as Arc<dyn ZfsSys>).unwrap();
    assert_eq!(
        fake.datasets(),
        [
            "tank",
            "tank/coppice/sandboxes",
            "tank/coppice/templates",
            "tank/coppice/volumes"
        ]
    );
    let creates = |fake: &FakeZfs| {
        fake.calls()
            .iter()
            .filter(|call| call.starts_with("create"))
            .count()
    };
    assert_eq!(creates(&fake), 3);
    ZfsStorage::open(layout(), Arc::clone(&fake) as Arc<dyn ZfsSys>).unwrap();
    assert_eq!(creates(&fake), 3, "a second open makes nothing");
}

#[test]
fn test_a_missing_root_dataset_lists_nothing() {
    let fake = Arc::new(FakeZfs::default());
    let layout = ZfsLayout::new(DatasetName::parse("tank/coppice").unwrap(), "/srv");
    let storage = ZfsStorage::new(layout, fake as Arc<dyn ZfsSys>);
    assert!(storage.templates().unwrap().is_empty());
    assert!(storage.list_rootfs().unwrap().is_empty());
}

#[test]
fn test_a_volume_template_gives_each_sandbox_a_disk_and_snapshots_stay_volumes() {
    let (_, fake) = storage();
    let vm = "zroot/coppice/templates/debian-vm";
    let fake = Arc::new(
        Arc::try_unwrap(fake)
            .unwrap()
            .with_dataset(vm, &[("type", "volume"), ("coppice:user", "root")])
            .with_snapshot(&format!("{vm}@template")),
    );
    let storage = ZfsStorage::new(
        ZfsLayout::new(
            DatasetName::parse("zroot/coppice").unwrap(),
            "/var/db/coppice",
        ),
        Arc::clone(&fake) as Arc<dyn ZfsSys>,
    );
    let root = storage
        .create_rootfs(&sandbox("vm1"), &template("debian-vm"), 2048)
        .unwrap();
    let disk = RootFs::Disk {
        device: "/dev/zvol/zroot/coppice/sandboxes/vm1".into(),
    };
    assert_eq!(root, disk);
    assert_eq!(
        fake.calls().last().map(String::as_str),
        Some(
            "clone -o volmode=dev zroot/coppice/templates/debian-vm@template zroot/coppice/sandboxes/vm1"
        ),
        "a volume's clone has neither mountpoint nor quota, and the host never tastes it"
    );
    assert_eq!(storage.rootfs(&sandbox("vm1")).unwrap(), disk);

    let info = storage
        .snapshot_rootfs(&sandbox("vm1"), &template("vm-snap"))
        .unwrap();
    assert_eq!(info.default_user, "root");
    assert!(fake.calls().contains(
        &"clone -o coppice:user=root -o coppice:workdir=/home/user -o coppice:snapshot_of=vm1 -o volmode=dev zroot/coppice/sandboxes/vm1@vm-snap zroot/coppice/templates/vm-snap".to_owned()
    ));
    let fork = storage
        .create_rootfs(&sandbox("vm2"), &template("vm-snap"), 0)
        .unwrap();
    assert_eq!(
        fork,
        RootFs::Disk {
            device: "/dev/zvol/zroot/coppice/sandboxes/vm2".into()
        }
    );
}

#[test]
fn test_a_dataset_handed_to_a_sandbox_is_its_root_until_destroyed() {
    let (_, fake) = storage();
    let pooled = "zroot/coppice/vmpool/coppice-pool-7f3a-1";
    let fake = Arc::new(
        Arc::try_unwrap(fake)
            .unwrap()
            .with_dataset(pooled, &[("type", "volume"), ("coppice:sandbox", "q8w2e4")]),
    );
    let storage = ZfsStorage::new(
        ZfsLayout::new(
            DatasetName::parse("zroot/coppice").unwrap(),
            "/var/db/coppice",
        ),
        Arc::clone(&fake) as Arc<dyn ZfsSys>,
    );
    assert_eq!(
        storage.rootfs(&sandbox("q8w2e4")).unwrap(),
        RootFs::Disk {
            device: format!("/dev/zvol/{pooled}").into()
        }
    );
    assert_eq!(storage.list_rootfs().unwrap(), vec![sandbox("q8w2e4")]);
    storage.destroy_rootfs(&sandbox("q8w2e4")).unwrap();
    assert!(!fake.datasets().contains(&pooled.to_owned()));
    assert!(storage.list_rootfs().unwrap().is_empty());
}
