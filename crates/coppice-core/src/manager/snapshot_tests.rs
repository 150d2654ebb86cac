//! Snapshots and forks over the fake backends.

use std::time::Duration;

use super::tests::{Harness, spec};
use super::*;
use crate::state::PauseMode;
use crate::testing::FakeCall;

#[tokio::test]
async fn test_snapshot_of_a_running_sandbox_freezes_it_only_for_the_capture() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();

    let snapshot = manager
        .snapshot(&sandbox.id, Some("mine".parse().unwrap()))
        .await
        .unwrap();

    assert_eq!(snapshot.id.as_str(), "mine");
    assert_eq!(snapshot.snapshot_of.as_ref(), Some(&sandbox.id));
    let calls = harness.runtime.calls();
    let freeze = calls
        .iter()
        .position(|c| *c == FakeCall::Freeze(sandbox.id.clone()));
    let thaw = calls
        .iter()
        .position(|c| *c == FakeCall::Thaw(sandbox.id.clone()));
    assert!(freeze.is_some() && thaw > freeze, "{calls:?}");
    assert!(!harness.runtime.is_frozen(&sandbox.id));
    assert_eq!(
        manager.get(&sandbox.id).unwrap().state,
        SandboxState::Running
    );
    let listed = manager.snapshots(Some(&sandbox.id)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        manager
            .snapshots(Some(&"other".parse().unwrap()))
            .await
            .unwrap()
            .is_empty()
    );
    let events = manager.events(&sandbox.id).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == EventKind::Snapshotted && e.detail == "mine")
    );

    let taken = manager
        .snapshot(&sandbox.id, Some("mine".parse().unwrap()))
        .await
        .unwrap_err();
    assert_eq!(taken.kind(), crate::ErrorKind::AlreadyExists, "{taken}");
}

#[tokio::test]
async fn test_snapshot_of_a_paused_sandbox_leaves_it_paused() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();
    manager.pause(&sandbox.id, PauseMode::Memory).await.unwrap();

    let snapshot = manager.snapshot(&sandbox.id, None).await.unwrap();

    assert!(snapshot.id.as_str().starts_with("snap-"));
    assert!(harness.runtime.is_frozen(&sandbox.id));
    assert_eq!(
        manager.get(&sandbox.id).unwrap().state,
        SandboxState::Paused
    );
}

#[tokio::test]
async fn test_failed_capture_thaws_the_sandbox_and_keeps_nothing() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();
    harness.storage.fail_next("snapshot_rootfs");

    manager.snapshot(&sandbox.id, None).await.unwrap_err();

    assert!(!harness.runtime.is_frozen(&sandbox.id));
    assert!(manager.snapshots(None).await.unwrap().is_empty());
    manager.endpoints(&sandbox.id).unwrap();
}

#[tokio::test]
async fn test_fork_starts_new_sandboxes_from_a_fresh_snapshot() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let mut source_spec = spec();
    source_spec.metadata.insert("k".into(), "v".into());
    let source = manager.create(source_spec).await.unwrap();

    let forks = manager
        .fork(&source.id, 3, Some(Duration::from_secs(42)))
        .await
        .unwrap();

    let forks: Vec<Sandbox> = forks.into_iter().map(Result::unwrap).collect();
    assert_eq!(forks.len(), 3);
    let mut ids: Vec<&SandboxId> = forks.iter().map(|f| &f.id).collect();
    ids.push(&source.id);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "every fork is a new sandbox");
    let mut tokens: Vec<&str> = forks
        .iter()
        .chain([&source])
        .map(|f| f.access_token.as_ref().unwrap().expose())
        .collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 4, "every fork has its own token");
    for fork in &forks {
        assert_eq!(fork.state, SandboxState::Running);
        assert_eq!(fork.spec.template, source.spec.template);
        assert_eq!(fork.spec.metadata, source.spec.metadata);
        assert_eq!(fork.spec.timeout, Duration::from_secs(42));
        let made_from = harness
            .storage
            .calls()
            .into_iter()
            .find_map(|call| match call {
                FakeCall::CreateRootfs(id, template) if id == fork.id => Some(template),
                _ => None,
            });
        assert!(made_from.unwrap().as_str().starts_with("fork-"));
    }
    // The snapshot served its forks and is gone; the source runs on.
    assert!(manager.snapshots(None).await.unwrap().is_empty());
    assert_eq!(
        manager.get(&source.id).unwrap().state,
        SandboxState::Running
    );
    assert!(!harness.runtime.is_frozen(&source.id));
}

#[tokio::test]
async fn test_fork_count_out_of_range_is_invalid_and_touches_nothing() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let source = manager.create(spec()).await.unwrap();

    for count in [0, MAX_FORKS + 1] {
        let error = manager.fork(&source.id, count, None).await.unwrap_err();
        assert_eq!(error.kind(), crate::ErrorKind::Invalid, "{error}");
    }
    let zero = manager
        .fork(&source.id, 1, Some(Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!(zero.kind(), crate::ErrorKind::Invalid, "{zero}");
    assert!(
        !harness
            .runtime
            .calls()
            .iter()
            .any(|c| matches!(c, FakeCall::Freeze(_)))
    );
}

#[tokio::test]
async fn test_sandboxes_start_from_a_snapshot_until_it_is_deleted() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let source = manager.create(spec()).await.unwrap();
    let snapshot = manager.snapshot(&source.id, None).await.unwrap();

    let mut from_snapshot = spec();
    from_snapshot.template = snapshot.id.clone();
    let started = manager.create(from_snapshot.clone()).await.unwrap();
    assert_eq!(started.spec.template, snapshot.id);

    manager.delete_template(&snapshot.id).await.unwrap();
    assert!(matches!(
        manager.create(from_snapshot).await,
        Err(ManagerError::TemplateNotFound { .. })
    ));
    assert!(matches!(
        manager.delete_template(&snapshot.id).await,
        Err(ManagerError::TemplateNotFound { .. })
    ));
    assert_eq!(
        manager.get(&started.id).unwrap().state,
        SandboxState::Running
    );
}

#[tokio::test]
async fn test_restart_removes_snapshots_of_interrupted_forks_only() {
    let harness = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let source = {
        let manager = harness.manager_with(Store::open(&db).unwrap()).await;
        let source = manager.create(spec()).await.unwrap();
        // A fork call that died after its snapshot, and a snapshot a user asked for.
        let refused = manager
            .snapshot(&source.id, Some("fork-mine".parse().unwrap()))
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), crate::ErrorKind::Invalid, "{refused}");
        manager
            .snapshot_as(&source.id, Some("fork-interrupted".parse().unwrap()))
            .await
            .unwrap();
        manager
            .snapshot(&source.id, Some("keep-me".parse().unwrap()))
            .await
            .unwrap();
        source
    };

    let restarted = harness.manager_with(Store::open(&db).unwrap()).await;

    let left: Vec<String> = restarted
        .snapshots(Some(&source.id))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id.to_string())
        .collect();
    assert_eq!(left, vec!["keep-me".to_owned()]);
}
