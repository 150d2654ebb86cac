//! Directory snapshots over the fake backends: the capture freezes a running sandbox only
//! for its duration, bad directories and unreachable sandboxes are refused.

use std::time::Duration;

use super::lifecycle::ResumeOptions;
use super::tests::{Harness, spec};
use super::*;
use crate::ErrorKind;
use crate::state::PauseMode;
use crate::testing::FakeCall;

#[tokio::test]
async fn test_capture_freezes_only_for_its_duration_and_is_kept_and_restored() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let source = manager.create(spec()).await.unwrap();
    let snapshot = manager
        .create_dir_snapshot(&source.id, "/home/user/work")
        .await
        .unwrap();
    assert_eq!(
        (snapshot.sandbox.clone(), snapshot.path.as_str()),
        (source.id.clone(), "/home/user/work")
    );
    let calls = harness.runtime.calls();
    let freeze = calls
        .iter()
        .position(|c| *c == FakeCall::Freeze(source.id.clone()));
    let thaw = calls
        .iter()
        .position(|c| *c == FakeCall::Thaw(source.id.clone()));
    assert!(freeze.is_some() && thaw > freeze, "{calls:?}");
    assert!(!harness.runtime.is_frozen(&source.id));
    let (root, path) = harness.storage.dir_snapshot_source(&snapshot.id).unwrap();
    assert_eq!(root, harness.runtime.root_dir(&source.id).unwrap().path());
    assert_eq!(path, "/home/user/work");
    assert_eq!(
        manager.dir_snapshots().await.unwrap(),
        vec![snapshot.clone()]
    );

    manager.kill(&source.id).await.unwrap();
    let target = manager.create(spec()).await.unwrap();
    let written = manager
        .restore_dir_snapshot(&snapshot.id, &target.id, Some("/srv/copy"))
        .await
        .unwrap();
    assert_eq!(written, 1);
    let gone = manager
        .restore_dir_snapshot(&snapshot.id, &source.id, None)
        .await
        .unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound, "{gone}");

    manager.delete_dir_snapshot(&snapshot.id).await.unwrap();
    assert!(harness.storage.dir_snapshot_source(&snapshot.id).is_none());
    let again = manager.delete_dir_snapshot(&snapshot.id).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn test_bad_directories_and_filesystem_paused_sandboxes_are_refused() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();
    for path in ["/", "/proc", "relative", "/a/../b"] {
        let error = manager
            .create_dir_snapshot(&sandbox.id, path)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Invalid, "{path}: {error}");
    }
    manager
        .pause(&sandbox.id, PauseMode::Filesystem)
        .await
        .unwrap();
    let paused = manager
        .create_dir_snapshot(&sandbox.id, "/home/user")
        .await
        .unwrap_err();
    assert_eq!(paused.kind(), ErrorKind::Conflict, "{paused}");
    let options = ResumeOptions {
        timeout: Duration::from_secs(60),
        keep_memory: None,
    };
    manager.resume(&sandbox.id, options).await.unwrap();
    // A memory-paused sandbox is captured without another freeze.
    manager.pause(&sandbox.id, PauseMode::Memory).await.unwrap();
    let before = harness.runtime.calls().len();
    manager
        .create_dir_snapshot(&sandbox.id, "/home/user")
        .await
        .unwrap();
    assert!(
        !harness.runtime.calls()[before..]
            .iter()
            .any(|c| matches!(c, FakeCall::Freeze(_) | FakeCall::Thaw(_)))
    );
    assert!(harness.runtime.is_frozen(&sandbox.id));
}
