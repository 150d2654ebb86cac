//! Pause and resume: a sandbox frozen in place with its memory, or kept as its filesystem
//! alone, and brought back, on request, on connect, or transparently for a sandbox created
//! with auto-resume.
//!
//! Every pause, resume and kill of one sandbox holds that sandbox's operation lock, so they
//! never interleave. A filesystem pause records its intent before it stops anything: after a
//! crash at any point the record says "paused, filesystem kept", and the next resume (or
//! kill) finishes whatever was left running.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::OwnedMutexGuard;

use super::{
    Inner, ManagerError, SandboxManager, blocking, boot_blocking, stop_processes_blocking,
};
use crate::event::{EventKind, Reason};
use crate::id::SandboxId;
use crate::runtime::{RootUse, SandboxEndpoints};
use crate::sandbox::Sandbox;
use crate::state::{Operation, PauseMode, SandboxState};

/// What a resume (or connect) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeOptions {
    /// The lifetime from now. A running sandbox's end time only ever moves later.
    pub timeout: Duration,
    /// `Some(false)` boots a fresh init on the kept filesystem even when memory was kept.
    pub keep_memory: Option<bool>,
}

/// What a resume found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeOutcome {
    /// It was running; at most its end time moved.
    AlreadyRunning,
    /// Its frozen processes run on where they stopped.
    Thawed,
    /// A fresh init and envd run on its kept filesystem; in-sandbox services need their
    /// settings (the access token) again.
    Rebooted,
    /// Its processes, written to disk, run on where they stopped.
    Restored,
}

/// A sandbox after a resume, and what the resume did.
#[derive(Debug, Clone)]
pub struct Resumed {
    /// The sandbox, running.
    pub sandbox: Sandbox,
    /// What happened.
    pub outcome: ResumeOutcome,
}

impl SandboxManager {
    fn operations_lock(&self, id: &SandboxId) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(
            self.inner
                .operations
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(id.clone())
                .or_default(),
        )
    }

    /// Waits for, then holds, the lock that serialises pause, resume and kill of `id`.
    pub(super) async fn lock_operations(&self, id: &SandboxId) -> OwnedMutexGuard<()> {
        self.operations_lock(id).lock_owned().await
    }

    /// Runs `work` on the blocking pool while holding `id`'s operation lock, in a task of its
    /// own: a caller that goes away must not strand an operation half done.
    pub(super) async fn locked_blocking<T, F>(
        &self,
        op: &'static str,
        id: &SandboxId,
        work: F,
    ) -> Result<T, ManagerError>
    where
        F: FnOnce(&Inner) -> Result<T, ManagerError> + Send + 'static,
        T: Send + 'static,
    {
        let manager = self.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let _operation = manager.lock_operations(&id).await;
            let inner = Arc::clone(&manager.inner);
            blocking(op, move || work(&inner)).await?
        })
        .await
        .map_err(|source| ManagerError::Task { op, source })?
    }

    /// The operation lock of `id` if nobody holds it.
    pub(super) fn try_lock_operations(&self, id: &SandboxId) -> Option<OwnedMutexGuard<()>> {
        self.operations_lock(id).try_lock_owned().ok()
    }

    /// Pauses a running sandbox, keeping its memory (frozen in place) or only its filesystem.
    ///
    /// # Errors
    /// `SandboxNotFound`; `InvalidState` when it is not running (already paused included);
    /// a backend failure (a failed memory pause leaves it running).
    #[tracing::instrument(skip(self), fields(sandbox_id = %id))]
    pub async fn pause(&self, id: &SandboxId, mode: PauseMode) -> Result<Sandbox, ManagerError> {
        // Detached like `kill`: a caller that goes away must not strand a half-done pause.
        let manager = self.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let paused = manager
                .pause_with_reason(&id, mode, Reason::Requested, None)
                .await?;
            paused.ok_or(ManagerError::SandboxNotFound { id })
        })
        .await
        .map_err(|source| ManagerError::Task {
            op: "pause",
            source,
        })?
    }

    /// Pauses `id`; with `expired_by`, only while it is running past its end time by then
    /// (`None` otherwise: the timeout was extended meanwhile).
    pub(super) async fn pause_with_reason(
        &self,
        id: &SandboxId,
        mode: PauseMode,
        reason: Reason,
        expired_by: Option<SystemTime>,
    ) -> Result<Option<Sandbox>, ManagerError> {
        let _operation = self.lock_operations(id).await;
        let inner = Arc::clone(&self.inner);
        let sandbox_id = id.clone();
        let paused = blocking("pause", move || {
            inner.pause_blocking(&sandbox_id, mode, reason, expired_by)
        })
        .await??;
        if paused.is_some() {
            tracing::info!(sandbox_id = %id, mode = mode.as_str(), reason = reason.as_str(), "sandbox paused");
        }
        Ok(paused)
    }

    /// Resumes a paused sandbox, or extends a running one's end time (E2B's connect).
    ///
    /// # Errors
    /// `SandboxNotFound` (killed or never existed); `InvalidState` while it is being
    /// created or killed; a backend failure (the sandbox then stays paused, files kept).
    #[tracing::instrument(skip(self), fields(sandbox_id = %id))]
    pub async fn resume(
        &self,
        id: &SandboxId,
        options: ResumeOptions,
    ) -> Result<Resumed, ManagerError> {
        self.check_timeout(options.timeout)?;
        let sandbox_id = id.clone();
        self.locked_blocking("resume", id, move |inner| {
            let resumed = inner.resume_blocking(&sandbox_id, options)?;
            inner.deadlines_changed.notify_one();
            if resumed.outcome != ResumeOutcome::AlreadyRunning {
                tracing::info!(%sandbox_id, outcome = ?resumed.outcome, "sandbox resumed");
            }
            Ok(resumed)
        })
        .await
    }

    /// A running sandbox for a request that touches it: a paused one created with
    /// auto-resume is resumed first (for its own timeout).
    ///
    /// # Errors
    /// `SandboxNotFound`; `NotRunning` for a paused sandbox without auto-resume; resume
    /// failures.
    pub async fn ensure_running(&self, id: &SandboxId) -> Result<Resumed, ManagerError> {
        let sandbox = self.get(id)?;
        match sandbox.state {
            SandboxState::Running => Ok(Resumed {
                sandbox,
                outcome: ResumeOutcome::AlreadyRunning,
            }),
            SandboxState::Paused if sandbox.spec.auto_resume => {
                let options = ResumeOptions {
                    timeout: sandbox.spec.timeout,
                    keep_memory: None,
                };
                self.resume(id, options).await
            }
            state => Err(ManagerError::NotRunning {
                id: id.clone(),
                state,
            }),
        }
    }
}

impl Inner {
    pub(super) fn live_sandbox(&self, id: &SandboxId) -> Result<Sandbox, ManagerError> {
        self.sandboxes()
            .get(id)
            .filter(|sandbox| sandbox.state.is_live())
            .cloned()
            .ok_or_else(|| ManagerError::SandboxNotFound { id: id.clone() })
    }

    fn pause_blocking(
        &self,
        id: &SandboxId,
        mode: PauseMode,
        reason: Reason,
        expired_by: Option<SystemTime>,
    ) -> Result<Option<Sandbox>, ManagerError> {
        let sandbox = self.live_sandbox(id)?;
        if let Some(now) = expired_by
            && (sandbox.state != SandboxState::Running || sandbox.end_at > now)
        {
            return Ok(None);
        }
        let mut paused = sandbox.clone();
        paused.state = super::transition(&sandbox, Operation::Pause)?;
        // A durable pause starts as a memory pause, written to disk once it is recorded.
        let kept = match mode {
            PauseMode::Durable => PauseMode::Memory,
            mode => mode,
        };
        paused.pause_mode = Some(kept);
        match kept {
            PauseMode::Filesystem => {
                paused.endpoints = None;
                let event = self.event(
                    id,
                    EventKind::Paused,
                    reason,
                    "filesystem kept, processes stopped".into(),
                );
                self.store.put_with_event(&paused, &event)?;
                self.sandboxes().insert(id.clone(), paused.clone());
                stop_processes_blocking(&self.backends, id)?;
            }
            PauseMode::Memory | PauseMode::Durable => {
                self.backends
                    .runtime
                    .freeze(id)
                    .map_err(|source| ManagerError::from_runtime("freeze", source))?;
                let event = self.event(id, EventKind::Paused, reason, "memory kept".into());
                if let Err(error) = self.store.put_with_event(&paused, &event) {
                    // Not recorded as paused means not paused.
                    if let Err(thaw) = self.backends.runtime.thaw(id) {
                        tracing::warn!(sandbox_id = %id, error = %super::error_chain(&thaw), "cannot thaw after a failed pause");
                    }
                    return Err(error.into());
                }
                self.memory_paused()
                    .insert(id.clone(), super::durable::Watch::Since(self.clock.now()));
            }
        }
        self.sandboxes().insert(id.clone(), paused.clone());
        if mode != PauseMode::Durable {
            return Ok(Some(paused));
        }
        match self.make_durable_blocking(id, reason) {
            Ok(durable) => Ok(durable.or(Some(paused))),
            // It stays paused in memory, which is what the caller can rely on.
            Err(error) => {
                tracing::info!(sandbox_id = %id, error = %super::error_chain(&error), "paused in memory: it cannot be written to disk");
                self.memory_paused().insert(
                    id.clone(),
                    super::durable::Watch::after(&error, self.clock.now()),
                );
                Ok(Some(paused))
            }
        }
    }

    fn resume_blocking(
        &self,
        id: &SandboxId,
        options: ResumeOptions,
    ) -> Result<Resumed, ManagerError> {
        let sandbox = self.live_sandbox(id)?;
        let end_at = self.clock.now() + options.timeout;
        if sandbox.state == SandboxState::Running {
            if end_at <= sandbox.end_at {
                return Ok(Resumed {
                    sandbox,
                    outcome: ResumeOutcome::AlreadyRunning,
                });
            }
            let mut extended = sandbox.clone();
            extended.end_at = end_at;
            let detail = format!("{} s from now, on connect", options.timeout.as_secs());
            let event = self.event(id, EventKind::TimeoutChanged, Reason::Requested, detail);
            self.store.put_with_event(&extended, &event)?;
            self.sandboxes().insert(id.clone(), extended.clone());
            return Ok(Resumed {
                sandbox: extended,
                outcome: ResumeOutcome::AlreadyRunning,
            });
        }
        let mut resumed = sandbox.clone();
        resumed.state = super::transition(&sandbox, Operation::Resume)?;
        let keep_memory = options.keep_memory != Some(false);
        let outcome = if sandbox.pause_mode == Some(PauseMode::Durable) && keep_memory {
            // A failed restore keeps the checkpoint and the files: the sandbox stays paused,
            // and a resume without memory still boots on its files.
            resumed.endpoints = Some(self.restore_blocking(id)?);
            ResumeOutcome::Restored
        } else if sandbox.pause_mode != Some(PauseMode::Memory) || !keep_memory {
            self.reboot_blocking(&sandbox, &mut resumed)?;
            ResumeOutcome::Rebooted
        } else {
            self.backends
                .runtime
                .thaw(id)
                .map_err(|source| ManagerError::from_runtime("thaw", source))?;
            ResumeOutcome::Thawed
        };
        resumed.pause_mode = None;
        resumed.end_at = end_at;
        let detail = match outcome {
            ResumeOutcome::Rebooted => "booted on the kept filesystem",
            ResumeOutcome::Restored => "memory restored from disk",
            _ => "memory restored",
        };
        let event = self.event(id, EventKind::Resumed, Reason::Requested, detail.into());
        if let Err(error) = self.store.put_with_event(&resumed, &event) {
            // Not recorded as running means not running: put it back the way it was.
            let undone = match outcome {
                ResumeOutcome::Thawed => self
                    .backends
                    .runtime
                    .freeze(id)
                    .map_err(|source| ManagerError::from_runtime("freeze", source)),
                ResumeOutcome::Restored => self
                    .backends
                    .runtime
                    .checkpoint(id)
                    .map_err(|source| ManagerError::from_runtime("checkpoint", source)),
                _ => stop_processes_blocking(&self.backends, id),
            };
            if let Err(undo) = undone {
                tracing::warn!(sandbox_id = %id, error = %super::error_chain(&undo), "cannot undo a resume that was not recorded");
            }
            return Err(error.into());
        }
        self.sandboxes().insert(id.clone(), resumed.clone());
        Ok(Resumed {
            sandbox: resumed,
            outcome,
        })
    }

    /// Brings a checkpointed sandbox's processes back, into a network namespace the restore
    /// makes again from what the network policy prepared.
    fn restore_blocking(&self, id: &SandboxId) -> Result<SandboxEndpoints, ManagerError> {
        self.backends
            .net
            .prepare_restore(id)
            .map_err(|source| ManagerError::from_net("prepare network for restore", source))?;
        self.backends
            .runtime
            .restore(id)
            .map_err(|source| ManagerError::from_runtime("restore", source))
    }

    /// Boots a fresh init on the kept filesystem of a paused sandbox. A sandbox that had kept
    /// its memory is recorded as filesystem-paused first, so a failure or crash from here on
    /// leaves a consistent record.
    fn reboot_blocking(&self, paused: &Sandbox, resumed: &mut Sandbox) -> Result<(), ManagerError> {
        let id = &paused.id;
        if paused.pause_mode != Some(PauseMode::Filesystem) {
            let mut filesystem_only = paused.clone();
            filesystem_only.pause_mode = Some(PauseMode::Filesystem);
            filesystem_only.endpoints = None;
            self.store.put(&filesystem_only)?;
            self.sandboxes().insert(id.clone(), filesystem_only);
        }
        // Whatever an interrupted pause left running goes first.
        stop_processes_blocking(&self.backends, id)?;
        let root = self
            .backends
            .storage
            .rootfs(id)
            .map_err(|source| ManagerError::from_storage("find rootfs", source))?;
        let volumes = self.volume_binds(&paused.spec)?;
        let booted = boot_blocking(
            &self.backends,
            id,
            &paused.spec,
            self.config.limits.max_pids,
            (&root, RootUse::Used),
            volumes,
        )
        .inspect(|_| {
            // The files are what a resume must give back: a service that no longer gets
            // ready (its user may have changed the files it runs from) is reported, and the
            // sandbox resumes without it.
            if let Err(error) = self.restart_service_blocking(id, &paused.spec) {
                tracing::warn!(sandbox_id = %id, error = %super::error_chain(&error), "the template's service did not get ready after the resume");
            }
        });
        match booted {
            Ok(endpoints) => {
                resumed.endpoints = Some(endpoints);
                Ok(())
            }
            Err(error) => {
                if let Err(cleanup) = stop_processes_blocking(&self.backends, id) {
                    tracing::warn!(sandbox_id = %id, error = %super::error_chain(&cleanup), "cleanup after a failed resume");
                }
                Err(error)
            }
        }
    }
}
