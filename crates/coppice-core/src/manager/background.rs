//! The manager's background tasks: the TTL reaper and the monitor.
//!
//! Both hold only a weak reference, so they end when the last `SandboxManager` clone is dropped.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use super::{Inner, SandboxManager, blocking, error_chain};
use crate::event::{EventKind, Reason};
use crate::id::SandboxId;
use crate::spec::TimeoutAction;
use crate::state::SandboxState;

/// Longest the reaper sleeps without re-checking, so clock jumps are noticed.
const REAPER_MAX_SLEEP: Duration = Duration::from_secs(30);

pub(super) fn spawn(manager: &SandboxManager) {
    let weak = Arc::downgrade(&manager.inner);
    tokio::spawn(reaper(weak.clone()));
    tokio::spawn(monitor(weak, manager.inner.config.monitor_interval));
}

fn upgrade(weak: &Weak<Inner>) -> Option<SandboxManager> {
    weak.upgrade().map(|inner| SandboxManager { inner })
}

async fn reaper(weak: Weak<Inner>) {
    loop {
        let Some(manager) = upgrade(&weak) else {
            return;
        };
        let now = manager.inner.clock.now();
        let (expired, next_deadline) = manager.deadlines(now);
        for (id, action) in expired {
            let result = match action {
                TimeoutAction::Kill => manager.kill_with_reason(&id, Reason::Timeout).await,
                TimeoutAction::Pause(mode) => manager
                    .pause_with_reason(&id, mode, Reason::Timeout, Some(now))
                    .await
                    .map(drop),
            };
            match result {
                Ok(())
                | Err(
                    super::ManagerError::SandboxNotFound { .. }
                    | super::ManagerError::InvalidState { .. },
                ) => {}
                Err(error) => {
                    tracing::warn!(sandbox_id = %id, error = %error_chain(&error), "TTL action failed")
                }
            }
        }
        let sleep_for = next_deadline
            .and_then(|deadline| deadline.duration_since(now).ok())
            .map_or(REAPER_MAX_SLEEP, |wait| wait.min(REAPER_MAX_SLEEP));
        let notified = Arc::clone(&manager.inner);
        drop(manager);
        tokio::select! {
            () = tokio::time::sleep(sleep_for) => {}
            () = notified.deadlines_changed.notified() => {}
        }
    }
}

async fn monitor(weak: Weak<Inner>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick fires at once; start-up reconciliation has just looked at everything.
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(manager) = upgrade(&weak) else {
            return;
        };
        manager.monitor_once().await;
    }
}

impl SandboxManager {
    /// Running sandboxes past their end time with what their timeout does, and the earliest
    /// end time still ahead. A paused sandbox has no deadline: it stays until resumed or
    /// killed.
    fn deadlines(&self, now: SystemTime) -> (Vec<(SandboxId, TimeoutAction)>, Option<SystemTime>) {
        let sandboxes = self.sandboxes();
        let mut expired = Vec::new();
        let mut next = None::<SystemTime>;
        for sandbox in sandboxes
            .values()
            .filter(|s| s.state == SandboxState::Running)
        {
            if sandbox.end_at <= now {
                expired.push((sandbox.id.clone(), sandbox.spec.on_timeout));
            } else {
                next = Some(next.map_or(sandbox.end_at, |n| n.min(sandbox.end_at)));
            }
        }
        (expired, next)
    }

    /// One monitor pass: OOM kills, dead inits, and retries of unfinished cleanups.
    pub(super) async fn monitor_once(&self) {
        let snapshot: Vec<(SandboxId, SandboxState)> = self
            .sandboxes()
            .values()
            .map(|s| (s.id.clone(), s.state))
            .collect();
        for (id, state) in snapshot {
            match state {
                SandboxState::Running => self.check_running(&id).await,
                SandboxState::Stopping => {
                    if !self.claim_release(&id) {
                        continue;
                    }
                    let Some(sandbox) = self.sandboxes().get(&id).cloned() else {
                        self.end_release(&id);
                        continue;
                    };
                    let detail = "cleanup retried".to_owned();
                    if let Err(error) = self
                        .finish_stopping(sandbox, EventKind::Killed, Reason::Requested, detail)
                        .await
                    {
                        tracing::debug!(sandbox_id = %id, error = %error_chain(&error), "cleanup retry failed");
                    }
                }
                _ => {}
            }
        }
        self.make_idle_pauses_durable().await;
    }

    async fn check_running(&self, id: &SandboxId) {
        // A pause, resume or kill in progress owns the sandbox; the next pass looks again.
        let Some(_operation) = self.try_lock_operations(id) else {
            return;
        };
        if self.sandboxes().get(id).map(|s| s.state) != Some(SandboxState::Running) {
            return;
        }
        self.check_oom(id).await;
        let runtime = Arc::clone(&self.inner.backends.runtime);
        let sandbox_id = id.clone();
        let Ok(Ok(probe)) = blocking("probe", move || runtime.probe(&sandbox_id)).await else {
            return;
        };
        if probe.alive {
            return;
        }
        let Ok(Some(sandbox)) = self.begin_stopping(id, None) else {
            return;
        };
        let detail = "sandbox init exited".to_owned();
        if let Err(error) = self.persist(&sandbox).await {
            tracing::warn!(sandbox_id = %id, error = %error_chain(&error), "cannot record exit");
            self.end_release(id);
            return;
        }
        if let Err(error) = self
            .finish_stopping(sandbox, EventKind::Exited, Reason::Error, detail)
            .await
        {
            tracing::warn!(sandbox_id = %id, error = %error_chain(&error), "cleanup of exited sandbox failed");
        }
    }
}
