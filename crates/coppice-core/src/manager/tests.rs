//! Manager tests over the fake backends.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::clock::ManualClock;
use crate::event::EventKind;
use crate::exec::ExecRequest;
use crate::testing::{FakeNetPolicy, FakeRuntime, FakeStorage};

pub(super) struct Harness {
    pub(super) runtime: Arc<FakeRuntime>,
    pub(super) storage: Arc<FakeStorage>,
    pub(super) net: Arc<FakeNetPolicy>,
    pub(super) clock: Arc<ManualClock>,
}

impl Harness {
    pub(super) fn new() -> Self {
        Self {
            runtime: Arc::new(FakeRuntime::default()),
            storage: Arc::new(FakeStorage::with_templates(&["base"])),
            net: Arc::new(FakeNetPolicy::default()),
            clock: Arc::new(ManualClock::new(
                UNIX_EPOCH + Duration::from_secs(1_000_000),
            )),
        }
    }

    pub(super) fn backends(&self) -> Backends {
        Backends {
            runtime: self.runtime.clone(),
            storage: self.storage.clone(),
            net: self.net.clone(),
        }
    }

    pub(super) async fn manager_with(&self, store: Store) -> SandboxManager {
        let config = ManagerConfig {
            monitor_interval: Duration::from_secs(3600),
            ..ManagerConfig::default()
        };
        SandboxManager::start(config, self.backends(), store, self.clock.clone())
            .await
            .unwrap()
    }

    pub(super) async fn manager(&self) -> SandboxManager {
        self.manager_with(Store::in_memory().unwrap()).await
    }

    pub(super) fn holds_anything(&self, id: &SandboxId) -> bool {
        self.runtime.holds(id) || self.storage.holds(id) || self.net.holds(id)
    }
}

pub(super) fn spec() -> SandboxSpec {
    SandboxSpec::new("base".parse().unwrap())
}

#[tokio::test]
async fn test_create_returns_running_sandbox_with_endpoints() {
    let harness = Harness::new();
    let manager = harness.manager().await;

    let sandbox = manager.create(spec()).await.unwrap();

    assert_eq!(sandbox.state, SandboxState::Running);
    assert!(sandbox.endpoints.is_some());
    assert!(harness.runtime.holds(&sandbox.id));
    assert_eq!(manager.get(&sandbox.id).unwrap(), sandbox);
}

#[tokio::test]
async fn test_each_sandbox_gets_its_own_access_token() {
    let harness = Harness::new();
    let manager = harness.manager().await;

    let first = manager.create(spec()).await.unwrap();
    let second = manager.create(spec()).await.unwrap();

    let token = |sandbox: &Sandbox| sandbox.access_token.clone().unwrap();
    assert_eq!(token(&first).expose().len(), 64);
    assert_ne!(token(&first), token(&second));
    assert!(!format!("{first:?}").contains(token(&first).expose()));
}

#[tokio::test]
async fn test_create_unknown_template_is_template_not_found_and_leaves_nothing() {
    let harness = Harness::new();
    let manager = harness.manager().await;

    let err = manager
        .create(SandboxSpec::new("nope".parse().unwrap()))
        .await
        .unwrap_err();

    assert!(
        matches!(err, ManagerError::TemplateNotFound { .. }),
        "{err:?}"
    );
    assert!(harness.runtime.calls().is_empty());
    assert!(harness.storage.calls().is_empty());
}

#[tokio::test]
async fn test_create_invalid_spec_is_refused_before_any_backend_call() {
    let harness = Harness::new();
    let manager = harness.manager().await;

    let err = manager
        .create(SandboxSpec {
            memory_mb: 0,
            ..spec()
        })
        .await
        .unwrap_err();

    assert_eq!(err.kind(), crate::ErrorKind::Invalid);
    assert!(harness.storage.calls().is_empty());
}

#[tokio::test]
async fn test_create_start_failure_rolls_back_everything() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    harness.runtime.fail_next("start");

    let err = manager.create(spec()).await.unwrap_err();

    assert!(
        matches!(err, ManagerError::Runtime { op: "start", .. }),
        "{err:?}"
    );
    let created = harness
        .storage
        .calls()
        .into_iter()
        .find_map(|call| match call {
            crate::testing::FakeCall::CreateRootfs(id, _) => Some(id),
            _ => None,
        });
    let id = created.unwrap();
    assert!(!harness.holds_anything(&id));
    assert!(manager.list(&ListFilter::default()).is_empty());
    let kinds: Vec<EventKind> = manager
        .events(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, [EventKind::CreateFailed]);
}

#[tokio::test]
async fn test_kill_releases_all_backends_and_hides_sandbox() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();

    manager.kill(&sandbox.id).await.unwrap();

    assert!(!harness.holds_anything(&sandbox.id));
    assert!(matches!(
        manager.get(&sandbox.id),
        Err(ManagerError::SandboxNotFound { .. })
    ));
    assert!(matches!(
        manager.kill(&sandbox.id).await,
        Err(ManagerError::SandboxNotFound { .. })
    ));
}

#[tokio::test]
async fn test_kill_failure_leaves_stopping_and_monitor_retries() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();
    harness.runtime.fail_next("destroy");

    assert!(manager.kill(&sandbox.id).await.is_err());
    manager.monitor_once().await;

    assert!(!harness.holds_anything(&sandbox.id));
}

#[tokio::test]
async fn test_list_filters_by_metadata() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let mut tagged = spec();
    tagged.metadata.insert("suite".into(), "a".into());
    let wanted = manager.create(tagged).await.unwrap();
    manager.create(spec()).await.unwrap();
    let filter = ListFilter {
        metadata: [("suite".to_owned(), "a".to_owned())].into(),
        ..ListFilter::default()
    };

    let found: Vec<SandboxId> = manager.list(&filter).into_iter().map(|s| s.id).collect();

    assert_eq!(found, [wanted.id]);
}

#[tokio::test]
async fn test_set_timeout_moves_end_time_both_ways() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();
    let now = harness.clock.now();

    let longer = manager
        .set_timeout(&sandbox.id, Duration::from_secs(600))
        .await
        .unwrap();
    let shorter = manager
        .set_timeout(&sandbox.id, Duration::from_secs(10))
        .await
        .unwrap();

    assert_eq!(longer.end_at, now + Duration::from_secs(600));
    assert_eq!(shorter.end_at, now + Duration::from_secs(10));
}

#[tokio::test]
async fn test_set_timeout_zero_is_invalid() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();

    let err = manager
        .set_timeout(&sandbox.id, Duration::ZERO)
        .await
        .unwrap_err();

    assert_eq!(err.kind(), crate::ErrorKind::Invalid);
}

#[tokio::test]
async fn test_ttl_reaper_kills_expired_sandbox() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager
        .create(SandboxSpec {
            timeout: Duration::from_secs(5),
            ..spec()
        })
        .await
        .unwrap();

    harness.clock.advance(Duration::from_secs(6));
    manager.inner.deadlines_changed.notify_one();
    wait_until(|| !harness.runtime.holds(&sandbox.id)).await;

    let events = manager.events(&sandbox.id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (last.kind, last.reason),
        (EventKind::Killed, Reason::Timeout)
    );
}

#[tokio::test]
async fn test_exec_reaches_runtime_and_records_oom() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();
    harness.runtime.add_oom_kills(&sandbox.id, 1);

    let outcome = manager
        .exec(&sandbox.id, ExecRequest::new(["echo", "hi"]))
        .await
        .unwrap();
    manager.monitor_once().await;

    assert_eq!(outcome.stdout, b"echo hi");
    let events = manager.events(&sandbox.id).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == EventKind::OomKill && e.reason == Reason::Oom),
        "{events:?}"
    );
}

#[tokio::test]
async fn test_monitor_cleans_up_sandbox_whose_init_died() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();

    harness.runtime.kill_init(&sandbox.id);
    manager.monitor_once().await;

    assert!(!harness.holds_anything(&sandbox.id));
    let kinds: Vec<EventKind> = manager
        .events(&sandbox.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds.last(), Some(&EventKind::Exited));
}

#[tokio::test]
async fn test_restart_readopts_live_sandboxes() {
    let harness = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let sandbox = {
        let manager = harness.manager_with(Store::open(&db).unwrap()).await;
        manager.create(spec()).await.unwrap()
    };

    let restarted = harness.manager_with(Store::open(&db).unwrap()).await;

    assert_eq!(
        restarted.get(&sandbox.id).unwrap().state,
        SandboxState::Running
    );
    assert!(harness.runtime.holds(&sandbox.id));
}

#[tokio::test]
async fn test_restart_cleans_up_half_created_and_orphans() {
    let harness = Harness::new();
    let half: SandboxId = "half".parse().unwrap();
    let orphan: SandboxId = "orphan".parse().unwrap();
    let store = store_with_half_created(&harness, &half);
    harness.storage.insert_rootfs(&half);
    harness.runtime.insert_alive(&orphan);
    harness.storage.insert_rootfs(&orphan);

    let manager = harness.manager_with(store).await;

    assert!(!harness.holds_anything(&half));
    assert!(!harness.holds_anything(&orphan));
    assert!(manager.get(&half).is_err());
}

/// A store recording `id` as `Creating`, as a daemon that crashed mid-create leaves it.
fn store_with_half_created(harness: &Harness, id: &SandboxId) -> Store {
    let store = Store::in_memory().unwrap();
    let now = harness.clock.now();
    let sandbox = Sandbox {
        id: id.clone(),
        spec: spec(),
        state: SandboxState::Creating,
        created_at: now,
        end_at: now,
        endpoints: None,
        pause_mode: None,
        access_token: None,
        traffic_token: None,
    };
    store.put(&sandbox).unwrap();
    store
}

pub(super) async fn wait_until(condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 5 s");
}

#[tokio::test]
async fn test_restart_with_failing_cleanup_still_starts_and_monitor_retries() {
    let harness = Harness::new();
    let half: SandboxId = "half".parse().unwrap();
    let store = store_with_half_created(&harness, &half);
    harness.runtime.insert_alive(&half);
    harness.runtime.fail_next("destroy");

    let manager = harness.manager_with(store).await;
    assert!(harness.runtime.holds(&half));
    manager.monitor_once().await;

    assert!(!harness.holds_anything(&half));
}

#[tokio::test]
async fn test_restart_does_not_record_earlier_oom_kills_again() {
    let harness = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let sandbox = {
        let manager = harness.manager_with(Store::open(&db).unwrap()).await;
        let sandbox = manager.create(spec()).await.unwrap();
        harness.runtime.add_oom_kills(&sandbox.id, 2);
        manager.monitor_once().await;
        sandbox
    };

    let restarted = harness.manager_with(Store::open(&db).unwrap()).await;
    restarted.monitor_once().await;

    let ooms = restarted
        .events(&sandbox.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::OomKill)
        .count();
    assert_eq!(ooms, 2);
}

#[tokio::test]
async fn test_ttl_kill_spares_a_sandbox_whose_timeout_was_extended() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager
        .create(SandboxSpec {
            timeout: Duration::from_secs(5),
            ..spec()
        })
        .await
        .unwrap();
    manager
        .set_timeout(&sandbox.id, Duration::from_secs(600))
        .await
        .unwrap();
    harness.clock.advance(Duration::from_secs(6));

    manager
        .kill_with_reason(&sandbox.id, Reason::Timeout)
        .await
        .unwrap();

    assert_eq!(
        manager.get(&sandbox.id).unwrap().state,
        SandboxState::Running
    );
}
