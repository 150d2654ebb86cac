//! Durable pause: a sandbox paused in memory for longer than `durable_pause_after` (or at all,
//! while the host's memory runs short) has its processes written to disk by the runtime (a
//! checkpoint) and ended, freeing its memory; it
//! is then recorded as [`PauseMode::Durable`] and survives daemon and host restarts. Resume
//! restores the processes where they were.

use std::sync::{MutexGuard, PoisonError};
use std::time::SystemTime;

use super::{Inner, ManagerError, SandboxManager, error_chain};
use crate::event::{EventKind, Reason};
use crate::id::SandboxId;
use crate::runtime::RuntimeError;
use crate::sandbox::Sandbox;
use crate::state::{PauseMode, SandboxState};

/// What the monitor knows of a sandbox paused in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Watch {
    /// Paused in memory since then.
    Since(SystemTime),
    /// The runtime cannot write this sandbox to disk (its shape, or no CRIU); it stays in
    /// memory and is not tried again.
    Refused,
}

impl Watch {
    /// What to remember of a sandbox whose checkpoint failed with `error` at `now`: a
    /// refusal is final, anything else is tried again later.
    pub(super) fn after(error: &ManagerError, now: SystemTime) -> Self {
        match error {
            ManagerError::Runtime {
                source: RuntimeError::Unsupported { .. } | RuntimeError::Invalid { .. },
                ..
            } => Self::Refused,
            _ => Self::Since(now),
        }
    }
}

impl Inner {
    pub(super) fn memory_paused(
        &self,
    ) -> MutexGuard<'_, std::collections::HashMap<SandboxId, Watch>> {
        self.memory_paused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes a memory-paused sandbox to disk. A sandbox in any other state is left alone
    /// (`Ok(None)`).
    pub(super) fn make_durable_blocking(
        &self,
        id: &SandboxId,
        reason: Reason,
    ) -> Result<Option<Sandbox>, ManagerError> {
        let sandbox = self.live_sandbox(id)?;
        if sandbox.state != SandboxState::Paused || sandbox.pause_mode != Some(PauseMode::Memory) {
            return Ok(None);
        }
        self.backends
            .runtime
            .checkpoint(id)
            .map_err(|source| ManagerError::from_runtime("checkpoint", source))?;
        let mut durable = sandbox;
        durable.pause_mode = Some(PauseMode::Durable);
        // Nothing listens until the processes are restored.
        durable.endpoints = None;
        let event = self.event(
            id,
            EventKind::Paused,
            reason,
            "memory written to disk".into(),
        );
        // The processes are gone whatever the store says: the live record follows them. A
        // failure to persist leaves the stored record saying "memory"; start-up
        // reconciliation finds the checkpoint and records it as durable then.
        self.sandboxes().insert(id.clone(), durable.clone());
        self.store.put_with_event(&durable, &event)?;
        Ok(Some(durable))
    }
}

impl SandboxManager {
    /// Writes a sandbox paused in memory to disk now (what the monitor does once it has been
    /// paused for `durable_pause_after`). `Ok(None)` when it is not paused in memory.
    ///
    /// # Errors
    /// `SandboxNotFound`; `Unsupported` or `InvalidSpec`-like runtime refusals where it
    /// cannot be written to disk (it stays paused in memory); backend failures.
    pub async fn make_durable(
        &self,
        id: &SandboxId,
        reason: Reason,
    ) -> Result<Option<Sandbox>, ManagerError> {
        let sandbox_id = id.clone();
        self.locked_blocking("checkpoint", id, move |inner| {
            let durable = inner.make_durable_blocking(&sandbox_id, reason)?;
            if durable.is_some() {
                inner.memory_paused().remove(&sandbox_id);
                tracing::info!(%sandbox_id, "paused sandbox written to disk");
            }
            Ok(durable)
        })
        .await
    }

    /// Whether the host's memory runs short by `durable_pause_memory_low`.
    fn memory_runs_short(&self) -> bool {
        let low = self.inner.config.durable_pause_memory_low;
        low > 0
            && self
                .inner
                .backends
                .runtime
                .host_memory()
                .is_some_and(|memory| memory.below(low))
    }

    /// The monitor's part: writes to disk every sandbox paused in memory for longer than
    /// `durable_pause_after`, or every one of them while the host's memory runs short.
    pub(super) async fn make_idle_pauses_durable(&self) {
        let short = self.memory_runs_short();
        let after = if short {
            Some(std::time::Duration::ZERO)
        } else {
            self.inner.config.durable_pause_after
        };
        let Some(after) = after else {
            return;
        };
        let now = self.inner.clock.now();
        let due: Vec<SandboxId> = {
            let sandboxes = self.sandboxes();
            let mut watched = self.inner.memory_paused();
            watched.retain(|id, _| {
                sandboxes.get(id).is_some_and(|sandbox| {
                    sandbox.state == SandboxState::Paused
                        && sandbox.pause_mode == Some(PauseMode::Memory)
                })
            });
            sandboxes
                .values()
                .filter(|sandbox| {
                    sandbox.state == SandboxState::Paused
                        && sandbox.pause_mode == Some(PauseMode::Memory)
                })
                .filter(|sandbox| {
                    match *watched
                        .entry(sandbox.id.clone())
                        .or_insert(Watch::Since(now))
                    {
                        Watch::Since(since) => since + after <= now,
                        Watch::Refused => false,
                    }
                })
                .map(|sandbox| sandbox.id.clone())
                .collect()
        };
        for id in due {
            let reason = if short {
                Reason::MemoryShort
            } else {
                Reason::Idle
            };
            match self.make_durable(&id, reason).await {
                Ok(_) | Err(ManagerError::SandboxNotFound { .. }) => {}
                Err(error) => {
                    let watch = Watch::after(&error, now);
                    if watch == Watch::Refused {
                        tracing::info!(sandbox_id = %id, error = %error_chain(&error), "paused sandbox stays in memory: it cannot be written to disk");
                    } else {
                        tracing::warn!(sandbox_id = %id, error = %error_chain(&error), "cannot write a paused sandbox to disk; will retry");
                    }
                    self.inner.memory_paused().insert(id, watch);
                }
            }
        }
    }
}
