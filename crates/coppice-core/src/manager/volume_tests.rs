//! Persistent volumes over the fake backends: their records, mounts, deletion rules and
//! token checks.

use std::time::Duration;

use super::lifecycle::ResumeOptions;
use super::tests::{Harness, spec};
use super::*;
use crate::ErrorKind;
use crate::state::PauseMode;
use crate::testing::FakeCall;
use crate::volume::{Volume, VolumeMount};

fn mounting(name: &str, path: &str) -> SandboxSpec {
    SandboxSpec {
        volume_mounts: vec![VolumeMount {
            name: name.parse().unwrap(),
            path: path.into(),
        }],
        ..spec()
    }
}

/// A manager over fresh fakes, with one volume named `name`.
async fn with_volume(name: &str) -> (Harness, SandboxManager, Volume) {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let volume = manager.create_volume(name.parse().unwrap()).await.unwrap();
    (harness, manager, volume)
}

#[tokio::test]
async fn test_volume_is_created_listed_and_found_by_id() {
    let (harness, manager, data) = with_volume("data").await;
    manager
        .create_volume("cache".parse().unwrap())
        .await
        .unwrap();
    assert!(harness.storage.holds_volume(&data.id));
    assert_eq!(data.token.expose().len(), 64);

    let names: Vec<String> = manager
        .volumes()
        .await
        .unwrap()
        .iter()
        .map(|v| v.name.to_string())
        .collect();
    assert_eq!(names, ["cache", "data"]);
    assert_eq!(manager.volume(&data.id).await.unwrap(), data);

    let taken = manager
        .create_volume("data".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(taken.kind(), ErrorKind::AlreadyExists, "{taken}");
    let missing = manager
        .volume(&"nosuchvolume".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn test_mounted_volume_reaches_the_runtime_and_cannot_be_deleted_until_kill() {
    let (harness, manager, data) = with_volume("data").await;
    let sandbox = manager.create(mounting("data", "/mnt/data")).await.unwrap();
    let volumes = harness.runtime.volumes_of(&sandbox.id);
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0].target, std::path::Path::new("/mnt/data"));
    assert_eq!(
        volumes[0].source,
        harness.storage.volume_path(&data.id).unwrap()
    );

    let in_use = manager.delete_volume(&data.id).await.unwrap_err();
    assert_eq!(in_use.kind(), ErrorKind::Conflict, "{in_use}");
    // Paused still counts as mounted; a reboot on resume mounts it again.
    manager
        .pause(&sandbox.id, PauseMode::Filesystem)
        .await
        .unwrap();
    let in_use = manager.delete_volume(&data.id).await.unwrap_err();
    assert_eq!(in_use.kind(), ErrorKind::Conflict);
    let options = ResumeOptions {
        timeout: Duration::from_secs(60),
        keep_memory: None,
    };
    manager.resume(&sandbox.id, options).await.unwrap();
    assert_eq!(harness.runtime.volumes_of(&sandbox.id).len(), 1);

    manager.kill(&sandbox.id).await.unwrap();
    manager.delete_volume(&data.id).await.unwrap();
    assert!(!harness.storage.holds_volume(&data.id));
    let gone = manager.delete_volume(&data.id).await.unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn test_create_with_an_unknown_volume_fails_and_leaves_nothing() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let error = manager
        .create(mounting("nosuch", "/mnt/x"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");
    assert!(manager.list(&ListFilter::default()).is_empty());
    let calls = harness.runtime.calls();
    assert!(
        !calls.iter().any(|call| matches!(call, FakeCall::Create(_))),
        "{calls:?}"
    );
    assert!(
        !harness
            .storage
            .calls()
            .iter()
            .any(|call| matches!(call, FakeCall::CreateRootfs(..)))
    );
}

#[tokio::test]
async fn test_volume_access_requires_its_token_and_survives_a_restart() {
    let harness = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let manager = harness.manager_with(Store::open(&path).unwrap()).await;
    let data = manager
        .create_volume("data".parse().unwrap())
        .await
        .unwrap();
    let access = manager
        .volume_access(&data.id, data.token.expose())
        .await
        .unwrap();
    assert_eq!(access.root, harness.storage.volume_path(&data.id).unwrap());
    let wrong = manager.volume_access(&data.id, "wrong").await.unwrap_err();
    assert_eq!(wrong.kind(), ErrorKind::Unauthenticated);
    drop(manager);

    let restarted = harness.manager_with(Store::open(&path).unwrap()).await;
    assert_eq!(restarted.volume(&data.id).await.unwrap(), data);
}
