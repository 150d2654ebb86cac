//! Durable pause over the fake backends: idle memory pauses written to disk, restores,
//! restarts, refusals and failed restores.

use std::time::Duration;

use super::tests::{Harness, spec};
use super::*;
use crate::state::PauseMode;
use crate::testing::FakeCall;

fn resume_for(seconds: u64) -> ResumeOptions {
    ResumeOptions {
        timeout: Duration::from_secs(seconds),
        keep_memory: None,
    }
}

fn mode_of(manager: &SandboxManager, id: &SandboxId) -> (SandboxState, Option<PauseMode>) {
    let sandbox = manager.get(id).unwrap();
    (sandbox.state, sandbox.pause_mode)
}

const DURABLE: (SandboxState, Option<PauseMode>) = (SandboxState::Paused, Some(PauseMode::Durable));

/// A manager over fresh fakes, and a sandbox of it paused on disk.
async fn durably_paused() -> (Harness, SandboxManager, Sandbox) {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();
    manager
        .pause(&sandbox.id, PauseMode::Durable)
        .await
        .unwrap();
    (harness, manager, sandbox)
}

#[tokio::test]
async fn test_memory_pause_idle_past_the_limit_is_written_to_disk_and_restored() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();
    manager.pause(&sandbox.id, PauseMode::Memory).await.unwrap();

    harness.clock.advance(Duration::from_secs(599));
    manager.monitor_once().await;
    assert_eq!(
        mode_of(&manager, &sandbox.id),
        (SandboxState::Paused, Some(PauseMode::Memory))
    );
    assert!(!harness.runtime.has_checkpoint(&sandbox.id));

    harness.clock.advance(Duration::from_secs(2));
    manager.monitor_once().await;
    assert_eq!(mode_of(&manager, &sandbox.id), DURABLE);
    assert!(harness.runtime.has_checkpoint(&sandbox.id));
    assert_eq!(manager.get(&sandbox.id).unwrap().endpoints, None);
    let events = manager.events(&sandbox.id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!((last.kind, last.reason), (EventKind::Paused, Reason::Idle));

    let resumed = manager.resume(&sandbox.id, resume_for(60)).await.unwrap();
    assert_eq!(resumed.outcome, ResumeOutcome::Restored);
    assert_eq!(resumed.sandbox.state, SandboxState::Running);
    assert_eq!(resumed.sandbox.endpoints, sandbox.endpoints);
    assert!(!harness.runtime.has_checkpoint(&sandbox.id));
    assert!(harness.storage.holds(&sandbox.id));
}

#[tokio::test]
async fn test_durable_pause_outlives_a_restart_and_a_lost_record_of_it_is_found() {
    let harness = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let (asked, interrupted) = {
        let manager = harness.manager_with(Store::open(&db).unwrap()).await;
        let asked = manager.create(spec()).await.unwrap();
        let interrupted = manager.create(spec()).await.unwrap();
        let paused = manager.pause(&asked.id, PauseMode::Durable).await.unwrap();
        assert_eq!(paused.pause_mode, Some(PauseMode::Durable));
        // A crash right after the checkpoint, before the record said so.
        manager
            .pause(&interrupted.id, PauseMode::Memory)
            .await
            .unwrap();
        harness.runtime.checkpoint(&interrupted.id).unwrap();
        (asked, interrupted)
    };

    let restarted = harness.manager_with(Store::open(&db).unwrap()).await;

    for id in [&asked.id, &interrupted.id] {
        assert_eq!(mode_of(&restarted, id), DURABLE);
        assert!(
            harness.runtime.has_checkpoint(id),
            "checkpoint of {id} kept"
        );
        let resumed = restarted.resume(id, resume_for(30)).await.unwrap();
        assert_eq!(resumed.outcome, ResumeOutcome::Restored);
    }
}

#[tokio::test]
async fn test_a_sandbox_that_cannot_be_written_to_disk_stays_paused_in_memory() {
    let harness = Harness::new();
    harness.runtime.refuse_checkpoints();
    let manager = harness.manager().await;
    let asked = manager.create(spec()).await.unwrap();
    let idle = manager.create(spec()).await.unwrap();

    let paused = manager.pause(&asked.id, PauseMode::Durable).await.unwrap();
    assert_eq!(paused.pause_mode, Some(PauseMode::Memory));
    manager.pause(&idle.id, PauseMode::Memory).await.unwrap();
    for _ in 0..3 {
        harness.clock.advance(Duration::from_secs(3600));
        manager.monitor_once().await;
    }

    let tries = |id: &SandboxId| {
        harness
            .runtime
            .calls()
            .iter()
            .filter(|call| matches!(call, crate::testing::FakeCall::Checkpoint(of) if of == id))
            .count()
    };
    assert_eq!(tries(&asked.id), 1, "the pause tried; a refusal is final");
    assert_eq!(
        tries(&idle.id),
        1,
        "the first idle check tried; no more after"
    );
    for id in [&asked.id, &idle.id] {
        assert_eq!(
            mode_of(&manager, id),
            (SandboxState::Paused, Some(PauseMode::Memory))
        );
        assert!(harness.runtime.is_frozen(id));
        let resumed = manager.resume(id, resume_for(30)).await.unwrap();
        assert_eq!(resumed.outcome, ResumeOutcome::Thawed);
    }
}

#[tokio::test]
async fn test_a_failed_restore_keeps_the_checkpoint_and_the_pause() {
    let (harness, manager, sandbox) = durably_paused().await;

    harness.runtime.fail_next("restore");
    assert!(manager.resume(&sandbox.id, resume_for(30)).await.is_err());
    assert_eq!(mode_of(&manager, &sandbox.id), DURABLE);
    assert!(harness.runtime.has_checkpoint(&sandbox.id));
    // The network was prepared before the attempt, and is again before the next one.
    assert_eq!(prepared_restores(&harness, &sandbox.id), 1);

    let resumed = manager.resume(&sandbox.id, resume_for(30)).await.unwrap();
    assert_eq!(resumed.outcome, ResumeOutcome::Restored);
    assert_eq!(prepared_restores(&harness, &sandbox.id), 2);
}

/// How often the network policy prepared a restore of `id`.
fn prepared_restores(harness: &Harness, id: &SandboxId) -> usize {
    harness
        .net
        .calls()
        .into_iter()
        .filter(|call| *call == FakeCall::PrepareRestore(id.clone()))
        .count()
}

#[tokio::test]
async fn test_a_restore_whose_network_cannot_be_prepared_keeps_the_pause() {
    let (harness, manager, sandbox) = durably_paused().await;

    harness.net.fail_next("prepare_restore");
    let error = manager
        .resume(&sandbox.id, resume_for(30))
        .await
        .unwrap_err();
    assert!(
        super::error_chain(&error).contains("prepare network for restore"),
        "{}",
        super::error_chain(&error)
    );
    assert_eq!(mode_of(&manager, &sandbox.id), DURABLE);
    assert!(harness.runtime.has_checkpoint(&sandbox.id));
    assert!(
        !harness
            .runtime
            .calls()
            .contains(&FakeCall::Restore(sandbox.id.clone())),
        "no restore without a network"
    );

    let resumed = manager.resume(&sandbox.id, resume_for(30)).await.unwrap();
    assert_eq!(resumed.outcome, ResumeOutcome::Restored);
}

#[tokio::test]
async fn test_resume_without_memory_boots_a_durable_pause_on_its_files() {
    let (harness, manager, sandbox) = durably_paused().await;

    let options = ResumeOptions {
        timeout: Duration::from_secs(30),
        keep_memory: Some(false),
    };
    let resumed = manager.resume(&sandbox.id, options).await.unwrap();

    assert_eq!(resumed.outcome, ResumeOutcome::Rebooted);
    assert!(!harness.runtime.has_checkpoint(&sandbox.id));
    assert!(harness.storage.holds(&sandbox.id));
}

#[tokio::test]
async fn test_every_memory_pause_goes_to_disk_while_host_memory_runs_short() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();
    manager.pause(&sandbox.id, PauseMode::Memory).await.unwrap();
    let memory = |available_bytes| crate::runtime::HostMemory {
        total_bytes: 1000,
        available_bytes,
    };

    harness.runtime.set_host_memory(Some(memory(100)));
    manager.monitor_once().await;
    assert_eq!(
        mode_of(&manager, &sandbox.id),
        (SandboxState::Paused, Some(PauseMode::Memory)),
        "10% available is not below 10%"
    );

    harness.runtime.set_host_memory(Some(memory(99)));
    manager.monitor_once().await;
    assert_eq!(mode_of(&manager, &sandbox.id), DURABLE);
    let events = manager.events(&sandbox.id).await.unwrap();
    assert_eq!(events.last().unwrap().reason, Reason::MemoryShort);
}
