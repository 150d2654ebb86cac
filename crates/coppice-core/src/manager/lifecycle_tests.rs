//! Pause, resume, auto-pause and auto-resume over the fake backends.

use std::time::Duration;

use super::tests::{Harness, spec, wait_until};
use super::*;
use crate::spec::TimeoutAction;
use crate::state::PauseMode;

fn resume_for(seconds: u64) -> ResumeOptions {
    ResumeOptions {
        timeout: Duration::from_secs(seconds),
        keep_memory: None,
    }
}

async fn kinds(manager: &SandboxManager, id: &SandboxId) -> Vec<EventKind> {
    manager
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.kind)
        .collect()
}

#[tokio::test]
async fn test_memory_pause_freezes_and_resume_thaws_again_and_again() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();

    for _ in 0..3 {
        let paused = manager.pause(&sandbox.id, PauseMode::Memory).await.unwrap();
        assert_eq!(paused.state, SandboxState::Paused);
        assert_eq!(paused.pause_mode, Some(PauseMode::Memory));
        assert!(harness.runtime.is_frozen(&sandbox.id));
        assert!(matches!(
            manager.endpoints(&sandbox.id),
            Err(ManagerError::NotRunning { .. })
        ));

        harness.clock.advance(Duration::from_secs(10));
        let resumed = manager.resume(&sandbox.id, resume_for(60)).await.unwrap();
        assert_eq!(resumed.outcome, ResumeOutcome::Thawed);
        assert_eq!(resumed.sandbox.state, SandboxState::Running);
        assert_eq!(resumed.sandbox.pause_mode, None);
        assert_eq!(
            resumed.sandbox.end_at,
            harness.clock.now() + Duration::from_secs(60)
        );
        assert!(!harness.runtime.is_frozen(&sandbox.id));
        assert_eq!(resumed.sandbox.endpoints, sandbox.endpoints);
    }
    let events = kinds(&manager, &sandbox.id).await;
    assert_eq!(
        events.iter().filter(|k| **k == EventKind::Paused).count(),
        3
    );
    assert_eq!(
        events.iter().filter(|k| **k == EventKind::Resumed).count(),
        3
    );
}

#[tokio::test]
async fn test_pausing_a_paused_sandbox_is_a_conflict_and_changes_nothing() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();
    manager.pause(&sandbox.id, PauseMode::Memory).await.unwrap();

    let again = manager
        .pause(&sandbox.id, PauseMode::Filesystem)
        .await
        .unwrap_err();

    assert_eq!(again.kind(), crate::ErrorKind::Conflict, "{again}");
    assert_eq!(
        manager.get(&sandbox.id).unwrap().pause_mode,
        Some(PauseMode::Memory)
    );
    assert!(harness.runtime.is_frozen(&sandbox.id));
}

#[tokio::test]
async fn test_failed_freeze_leaves_the_sandbox_running() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();
    harness.runtime.fail_next("freeze");

    manager
        .pause(&sandbox.id, PauseMode::Memory)
        .await
        .unwrap_err();

    assert_eq!(
        manager.get(&sandbox.id).unwrap().state,
        SandboxState::Running
    );
    manager.endpoints(&sandbox.id).unwrap();
}

#[tokio::test]
async fn test_filesystem_pause_keeps_only_storage_and_resume_reboots_on_it() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();

    let paused = manager
        .pause(&sandbox.id, PauseMode::Filesystem)
        .await
        .unwrap();

    assert_eq!(paused.endpoints, None);
    assert!(!harness.runtime.holds(&sandbox.id));
    assert!(!harness.net.holds(&sandbox.id));
    assert!(harness.storage.holds(&sandbox.id));

    let resumed = manager.resume(&sandbox.id, resume_for(60)).await.unwrap();
    assert_eq!(resumed.outcome, ResumeOutcome::Rebooted);
    assert!(resumed.sandbox.endpoints.is_some());
    assert!(harness.runtime.holds(&sandbox.id));
    assert!(harness.net.holds(&sandbox.id));
    // The kept filesystem is booted, never a fresh copy of the template.
    let creates = harness
        .storage
        .calls()
        .into_iter()
        .filter(|call| matches!(call, crate::testing::FakeCall::CreateRootfs(..)))
        .count();
    assert_eq!(creates, 1);
}

#[tokio::test]
async fn test_resume_without_memory_reboots_a_memory_paused_sandbox() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();
    manager.pause(&sandbox.id, PauseMode::Memory).await.unwrap();

    let resumed = manager
        .resume(
            &sandbox.id,
            ResumeOptions {
                timeout: Duration::from_secs(30),
                keep_memory: Some(false),
            },
        )
        .await
        .unwrap();

    assert_eq!(resumed.outcome, ResumeOutcome::Rebooted);
    assert!(!harness.runtime.is_frozen(&sandbox.id));
    assert!(harness.runtime.holds(&sandbox.id));
}

#[tokio::test]
async fn test_failed_reboot_keeps_the_sandbox_paused_with_its_files() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();
    manager.pause(&sandbox.id, PauseMode::Memory).await.unwrap();
    harness.runtime.fail_next("start");

    let options = ResumeOptions {
        timeout: Duration::from_secs(30),
        keep_memory: Some(false),
    };
    manager.resume(&sandbox.id, options).await.unwrap_err();

    let kept = manager.get(&sandbox.id).unwrap();
    assert_eq!(kept.state, SandboxState::Paused);
    assert_eq!(kept.pause_mode, Some(PauseMode::Filesystem));
    assert!(harness.storage.holds(&sandbox.id));
    let resumed = manager.resume(&sandbox.id, options).await.unwrap();
    assert_eq!(resumed.outcome, ResumeOutcome::Rebooted);
}

#[tokio::test]
async fn test_connect_to_a_running_sandbox_only_extends_its_end_time() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager
        .create(SandboxSpec {
            timeout: Duration::from_secs(600),
            ..spec()
        })
        .await
        .unwrap();

    let shorter = manager.resume(&sandbox.id, resume_for(60)).await.unwrap();
    assert_eq!(shorter.outcome, ResumeOutcome::AlreadyRunning);
    assert_eq!(shorter.sandbox.end_at, sandbox.end_at);

    let longer = manager.resume(&sandbox.id, resume_for(900)).await.unwrap();
    assert_eq!(
        longer.sandbox.end_at,
        harness.clock.now() + Duration::from_secs(900)
    );
}

#[tokio::test]
async fn test_timeout_with_auto_pause_pauses_and_the_paused_sandbox_is_never_reaped() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager
        .create(SandboxSpec {
            timeout: Duration::from_secs(5),
            on_timeout: TimeoutAction::Pause(PauseMode::Memory),
            ..spec()
        })
        .await
        .unwrap();

    harness.clock.advance(Duration::from_secs(6));
    manager.inner.deadlines_changed.notify_one();
    wait_until(|| harness.runtime.is_frozen(&sandbox.id)).await;
    wait_until(|| {
        manager
            .get(&sandbox.id)
            .is_ok_and(|s| s.state == SandboxState::Paused)
    })
    .await;
    let events = manager.events(&sandbox.id).await.unwrap();
    let paused = events
        .iter()
        .find(|event| event.kind == EventKind::Paused)
        .unwrap();
    assert_eq!(paused.reason, Reason::Timeout);

    harness.clock.advance(Duration::from_secs(3600));
    manager.inner.deadlines_changed.notify_one();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        manager.get(&sandbox.id).unwrap().state,
        SandboxState::Paused
    );
    assert!(harness.storage.holds(&sandbox.id));
}

#[tokio::test]
async fn test_ensure_running_resumes_only_with_auto_resume() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let plain = manager.create(spec()).await.unwrap();
    let eager = manager
        .create(SandboxSpec {
            auto_resume: true,
            ..spec()
        })
        .await
        .unwrap();
    for id in [&plain.id, &eager.id] {
        manager.pause(id, PauseMode::Memory).await.unwrap();
    }

    assert!(matches!(
        manager.ensure_running(&plain.id).await,
        Err(ManagerError::NotRunning { .. })
    ));
    let resumed = manager.ensure_running(&eager.id).await.unwrap();
    assert_eq!(resumed.outcome, ResumeOutcome::Thawed);
    assert_eq!(
        resumed.sandbox.end_at,
        harness.clock.now() + eager.spec.timeout
    );
    let again = manager.ensure_running(&eager.id).await.unwrap();
    assert_eq!(again.outcome, ResumeOutcome::AlreadyRunning);
}

#[tokio::test]
async fn test_killing_a_paused_sandbox_releases_it_and_resume_then_is_not_found() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let frozen = manager.create(spec()).await.unwrap();
    let cold = manager.create(spec()).await.unwrap();
    manager.pause(&frozen.id, PauseMode::Memory).await.unwrap();
    manager
        .pause(&cold.id, PauseMode::Filesystem)
        .await
        .unwrap();

    for sandbox in [&frozen, &cold] {
        manager.kill(&sandbox.id).await.unwrap();
        assert!(!harness.holds_anything(&sandbox.id));
        assert!(matches!(
            manager.resume(&sandbox.id, resume_for(30)).await,
            Err(ManagerError::SandboxNotFound { .. })
        ));
    }
}

#[tokio::test]
async fn test_restart_keeps_paused_sandboxes_and_turns_lost_memory_into_a_filesystem_pause() {
    let harness = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let (frozen, lost, cold) = {
        let manager = harness.manager_with(Store::open(&db).unwrap()).await;
        let frozen = manager.create(spec()).await.unwrap();
        let lost = manager.create(spec()).await.unwrap();
        let cold = manager.create(spec()).await.unwrap();
        manager.pause(&frozen.id, PauseMode::Memory).await.unwrap();
        manager.pause(&lost.id, PauseMode::Memory).await.unwrap();
        manager
            .pause(&cold.id, PauseMode::Filesystem)
            .await
            .unwrap();
        (frozen, lost, cold)
    };
    // The host went down under `lost`: its init is gone.
    harness.runtime.kill_init(&lost.id);

    let restarted = harness.manager_with(Store::open(&db).unwrap()).await;

    let kept = restarted.get(&frozen.id).unwrap();
    assert_eq!(
        (kept.state, kept.pause_mode),
        (SandboxState::Paused, Some(PauseMode::Memory))
    );
    assert!(harness.runtime.is_frozen(&frozen.id));
    for id in [&lost.id, &cold.id] {
        let sandbox = restarted.get(id).unwrap();
        assert_eq!(
            (sandbox.state, sandbox.pause_mode),
            (SandboxState::Paused, Some(PauseMode::Filesystem))
        );
        assert!(harness.storage.holds(id), "files of {id} kept");
        assert!(!harness.runtime.holds(id));
        let resumed = restarted.resume(id, resume_for(30)).await.unwrap();
        assert_eq!(resumed.outcome, ResumeOutcome::Rebooted);
    }
    let resumed = restarted.resume(&frozen.id, resume_for(30)).await.unwrap();
    assert_eq!(resumed.outcome, ResumeOutcome::Thawed);
}
