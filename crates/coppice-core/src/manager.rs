//! `SandboxManager`: every sandbox operation, implemented once for the gateway, the CLI and MCP.
//!
//! The manager owns the in-memory index of sandboxes, persists every change to the [`Store`]
//! before acting on it, and reaches the blocking backends through `spawn_blocking`. Two
//! background tasks run while the manager lives: the TTL reaper ([`background`]) and the
//! monitor that records OOM kills and notices sandboxes whose init died.
//!
//! Crash safety: a sandbox is recorded as `Creating` before any host resource exists and as
//! `Stopping` before any is released, so [`reconcile`] can finish or undo either after a crash.

mod background;
mod boot;
mod build;
mod build_cache;
#[cfg(test)]
mod build_tests;
mod dir_snapshots;
mod durable;
mod error;
mod lifecycle;
mod network;
mod reconcile;
mod snapshot;
mod start;
mod tags;
mod templates;
mod volumes;

use boot::{boot_blocking, provision_blocking};

pub use volumes::VolumeAccess;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

pub use self::build::BuildLog;
pub use self::error::ManagerError;
pub use self::lifecycle::{ResumeOptions, ResumeOutcome, Resumed};
pub use self::snapshot::MAX_FORKS;
use crate::clock::Clock;
use crate::event::{EventKind, LifecycleEvent, Reason};
use crate::exec::{ExecOutcome, ExecRequest};
use crate::id::{SandboxId, TemplateId};
use crate::net::NetPolicy;
use crate::runtime::{Runtime, SandboxEndpoints};
use crate::sandbox::{AccessToken, Sandbox};
use crate::spec::{Limits, SandboxSpec};
use crate::state::{Operation, SandboxState};
use crate::storage::Storage;
use crate::store::Store;

/// The three backends, chosen once by the daemon.
#[derive(Clone)]
pub struct Backends {
    /// Isolation.
    pub runtime: Arc<dyn Runtime>,
    /// Root filesystems and templates.
    pub storage: Arc<dyn Storage>,
    /// Networking and egress policy.
    pub net: Arc<dyn NetPolicy>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends").finish_non_exhaustive()
    }
}

/// The manager's settings.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Bounds on what one sandbox may ask for.
    pub limits: Limits,
    /// How often the monitor probes running sandboxes.
    pub monitor_interval: Duration,
    /// How long a sandbox stays paused in memory before its processes are written to disk
    /// (a durable pause, which frees its memory); `None` keeps them in memory.
    pub durable_pause_after: Option<Duration>,
    /// Below this share of the host's memory available (in percent), every sandbox paused in
    /// memory is written to disk at once; 0 never does.
    pub durable_pause_memory_low: u8,
    /// Longest wait for a template's service to pass its ready check before a sandbox from
    /// it is handed out (it fails instead).
    pub template_ready_timeout: Duration,
    /// Build cache steps unused this long are deleted after each build (`None`: never).
    pub build_cache_max_age: Option<Duration>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            monitor_interval: Duration::from_secs(1),
            durable_pause_after: Some(Duration::from_secs(600)),
            durable_pause_memory_low: 10,
            template_ready_timeout: Duration::from_secs(30),
            build_cache_max_age: Some(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

/// Which sandboxes `list` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only these states; empty means every live state.
    pub states: Vec<SandboxState>,
    /// Only sandboxes whose metadata contains every one of these pairs.
    pub metadata: BTreeMap<String, String>,
    /// Only sandboxes of this template.
    pub template: Option<TemplateId>,
}

/// Every sandbox operation. Cheap to clone; clones share one manager.
#[derive(Debug, Clone)]
pub struct SandboxManager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    backends: Backends,
    store: Store,
    clock: Arc<dyn Clock>,
    config: ManagerConfig,
    sandboxes: Mutex<HashMap<SandboxId, Sandbox>>,
    /// OOM kill counters last seen per sandbox, so each kill is recorded once.
    oom_seen: Mutex<HashMap<SandboxId, u64>>,
    /// Sandboxes whose release is running right now; a second release (the monitor's retry,
    /// a concurrent kill) must not run beside it.
    releasing: Mutex<HashSet<SandboxId>>,
    /// Woken whenever an end time changes, so the reaper recomputes its deadline.
    deadlines_changed: Notify,
    /// One lock per sandbox that serialises its pause, resume and kill.
    operations: Mutex<HashMap<SandboxId, Arc<tokio::sync::Mutex<()>>>>,
    /// Held while a volume's mounts are checked and it is deleted, and while a new sandbox
    /// is registered and its volumes looked up, so a volume is never deleted under a mount.
    volume_mounts: Mutex<()>,
    /// Since when each sandbox has been paused in memory, or that it cannot pause durably.
    memory_paused: Mutex<HashMap<SandboxId, durable::Watch>>,
    /// One lock per template name that serialises its builds, so they replace it in the
    /// order they were asked for.
    template_builds: Mutex<HashMap<TemplateId, Arc<tokio::sync::Mutex<()>>>>,
    /// Held shared by every build while it stands on the build cache's steps, and
    /// exclusively while they are pruned.
    build_cache_use: tokio::sync::RwLock<()>,
}

impl SandboxManager {
    /// Opens the manager: reconciles persisted records with what the backends hold, then
    /// starts the TTL reaper and the monitor on the current tokio runtime.
    ///
    /// # Errors
    /// A store or backend failure during reconciliation.
    pub async fn start(
        config: ManagerConfig,
        backends: Backends,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ManagerError> {
        let manager = Self {
            inner: Arc::new(Inner {
                backends,
                store,
                clock,
                config,
                sandboxes: Mutex::new(HashMap::new()),
                oom_seen: Mutex::new(HashMap::new()),
                releasing: Mutex::new(HashSet::new()),
                deadlines_changed: Notify::new(),
                operations: Mutex::new(HashMap::new()),
                volume_mounts: Mutex::new(()),
                memory_paused: Mutex::new(HashMap::new()),
                template_builds: Mutex::new(HashMap::new()),
                build_cache_use: tokio::sync::RwLock::new(()),
            }),
        };
        manager.reconcile().await?;
        manager.remove_stale_fork_templates().await;
        background::spawn(&manager);
        Ok(manager)
    }

    fn sandboxes(&self) -> MutexGuard<'_, HashMap<SandboxId, Sandbox>> {
        self.inner.sandboxes()
    }

    /// Creates and starts a sandbox.
    ///
    /// # Errors
    /// `InvalidSpec`, `TemplateNotFound`, or a backend failure (after which nothing of the
    /// sandbox remains on the host).
    #[tracing::instrument(skip(self, spec), fields(template = %spec.template))]
    pub async fn create(&self, spec: SandboxSpec) -> Result<Sandbox, ManagerError> {
        // Detached, so that a caller who goes away (an HTTP client disconnecting) cannot stop
        // a create half-way and leave a running sandbox recorded as `Creating`.
        let manager = self.clone();
        tokio::spawn(async move { manager.create_detached(spec, None).await })
            .await
            .map_err(|source| ManagerError::Task {
                op: "create",
                source,
            })?
    }

    /// Creates a sandbox; its root filesystem comes from `root_template` when given (a fork's
    /// snapshot), else from its spec's template.
    async fn create_detached(
        &self,
        spec: SandboxSpec,
        root_template: Option<TemplateId>,
    ) -> Result<Sandbox, ManagerError> {
        spec.validate(&self.inner.config.limits)?;
        // One trip to the blocking pool for the whole create: each hop costs a thread
        // hand-off, and the store and backends all block anyway.
        let inner = Arc::clone(&self.inner);
        let sandbox =
            blocking("create", move || inner.create_blocking(spec, root_template)).await??;
        self.inner.deadlines_changed.notify_one();
        tracing::info!(sandbox_id = %sandbox.id, "sandbox created");
        Ok(sandbox)
    }

    /// A live (running or paused) sandbox.
    ///
    /// # Errors
    /// `SandboxNotFound`.
    pub fn get(&self, id: &SandboxId) -> Result<Sandbox, ManagerError> {
        self.sandboxes()
            .get(id)
            .filter(|sandbox| sandbox.state.is_live())
            .cloned()
            .ok_or_else(|| ManagerError::SandboxNotFound { id: id.clone() })
    }

    /// Live sandboxes matching `filter`, oldest first.
    pub fn list(&self, filter: &ListFilter) -> Vec<Sandbox> {
        let mut sandboxes: Vec<Sandbox> = self
            .sandboxes()
            .values()
            .filter(|sandbox| sandbox.state.is_live())
            .filter(|sandbox| filter.states.is_empty() || filter.states.contains(&sandbox.state))
            .filter(|sandbox| {
                filter
                    .template
                    .as_ref()
                    .is_none_or(|t| *t == sandbox.spec.template)
            })
            .filter(|sandbox| {
                filter
                    .metadata
                    .iter()
                    .all(|(key, value)| sandbox.spec.metadata.get(key) == Some(value))
            })
            .cloned()
            .collect();
        sandboxes.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        sandboxes
    }

    /// Kills a sandbox and releases all its host resources.
    ///
    /// # Errors
    /// `SandboxNotFound`, `InvalidState` (already being killed), or a backend failure (the
    /// sandbox then stays `Stopping` and the monitor retries the cleanup).
    #[tracing::instrument(skip(self), fields(sandbox_id = %id))]
    pub async fn kill(&self, id: &SandboxId) -> Result<(), ManagerError> {
        // Detached like `create`: a caller that goes away must not strand a half-done kill.
        let manager = self.clone();
        let id = id.clone();
        tokio::spawn(async move { manager.kill_with_reason(&id, Reason::Requested).await })
            .await
            .map_err(|source| ManagerError::Task { op: "kill", source })?
    }

    async fn kill_with_reason(&self, id: &SandboxId, reason: Reason) -> Result<(), ManagerError> {
        // A TTL kill re-checks the deadline under the lock: the timeout may have been extended
        // since the reaper looked.
        let _operation = self.lock_operations(id).await;
        let expired_by = (reason == Reason::Timeout).then(|| self.inner.clock.now());
        let Some(sandbox) = self.begin_stopping(id, expired_by)? else {
            return Ok(());
        };
        let inner = Arc::clone(&self.inner);
        let result = blocking("kill", move || {
            let sandbox_id = sandbox.id.clone();
            let result = inner
                .store
                .put(&sandbox)
                .map_err(ManagerError::from)
                .and_then(|()| {
                    inner.release_and_record(sandbox, EventKind::Killed, reason, String::new())
                });
            // Given back on the blocking thread, so even an abandoned kill releases its claim.
            inner.end_release(&sandbox_id);
            result
        })
        .await
        .and_then(|result| result);
        if result.is_ok() {
            tracing::info!(sandbox_id = %id, reason = reason.as_str(), "sandbox stopped");
        }
        result
    }

    /// Moves a live sandbox to `Stopping` in memory, refusing concurrent kills, and claims its
    /// release for the caller (see [`SandboxManager::finish_stopping`]), atomically with the
    /// state change so that the monitor's retry can never slip in between. With
    /// `expired_by`, only a sandbox whose end time has passed by then is stopped (`None`
    /// otherwise).
    fn begin_stopping(
        &self,
        id: &SandboxId,
        expired_by: Option<std::time::SystemTime>,
    ) -> Result<Option<Sandbox>, ManagerError> {
        let mut sandboxes = self.sandboxes();
        let sandbox = sandboxes
            .get_mut(id)
            .filter(|sandbox| sandbox.state != SandboxState::Stopped)
            .ok_or_else(|| ManagerError::SandboxNotFound { id: id.clone() })?;
        if expired_by.is_some_and(|now| sandbox.end_at > now) {
            return Ok(None);
        }
        sandbox.state = transition(sandbox, Operation::Kill)?;
        let sandbox = sandbox.clone();
        self.inner
            .releasing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone());
        Ok(Some(sandbox))
    }

    /// Claims the release of a sandbox; false when another task is releasing it already.
    fn claim_release(&self, id: &SandboxId) -> bool {
        self.inner.claim_release(id)
    }

    fn end_release(&self, id: &SandboxId) {
        self.inner.end_release(id);
    }

    /// Releases a `Stopping` sandbox's resources and records it as stopped. The caller holds
    /// the sandbox's release claim; this gives it back, whatever the outcome.
    async fn finish_stopping(
        &self,
        sandbox: Sandbox,
        kind: EventKind,
        reason: Reason,
        detail: String,
    ) -> Result<(), ManagerError> {
        let id = sandbox.id.clone();
        let inner = Arc::clone(&self.inner);
        let result = blocking("release", move || {
            inner.release_and_record(sandbox, kind, reason, detail)
        })
        .await
        .and_then(|result| result);
        self.end_release(&id);
        result
    }

    /// `InvalidSpec` unless `timeout` is a lifetime the limits allow.
    fn check_timeout(&self, timeout: Duration) -> Result<(), ManagerError> {
        let limits = &self.inner.config.limits;
        if timeout.is_zero() || timeout > limits.max_timeout {
            return Err(ManagerError::InvalidSpec(crate::spec::SpecError::Timeout {
                got_secs: timeout.as_secs(),
                max_secs: limits.max_timeout.as_secs(),
            }));
        }
        Ok(())
    }

    /// Sets the end time to now + `timeout` (shorter or longer than before).
    ///
    /// # Errors
    /// `SandboxNotFound`, `InvalidSpec` for a timeout out of range.
    pub async fn set_timeout(
        &self,
        id: &SandboxId,
        timeout: Duration,
    ) -> Result<Sandbox, ManagerError> {
        self.check_timeout(timeout)?;
        let end_at = self.inner.clock.now() + timeout;
        let detail = format!("{} s from now", timeout.as_secs());
        let inner = Arc::clone(&self.inner);
        let sandbox_id = id.clone();
        // Updated and persisted under the map lock: a kill finishing meanwhile has already
        // made the sandbox not live, so its final record is never overwritten.
        let sandbox = blocking("set timeout", move || {
            let mut sandboxes = inner.sandboxes();
            let sandbox = sandboxes
                .get_mut(&sandbox_id)
                .filter(|sandbox| sandbox.state.is_live())
                .ok_or_else(|| ManagerError::SandboxNotFound {
                    id: sandbox_id.clone(),
                })?;
            let mut updated = sandbox.clone();
            updated.end_at = end_at;
            let event = inner.event(
                &sandbox_id,
                EventKind::TimeoutChanged,
                Reason::Requested,
                detail,
            );
            inner.store.put_with_event(&updated, &event)?;
            *sandbox = updated.clone();
            Ok::<_, ManagerError>(updated)
        })
        .await??;
        self.inner.deadlines_changed.notify_one();
        Ok(sandbox)
    }

    /// How to reach a running sandbox's init and envd.
    ///
    /// # Errors
    /// `SandboxNotFound`, `InvalidState` when it is not running.
    pub fn endpoints(&self, id: &SandboxId) -> Result<SandboxEndpoints, ManagerError> {
        let sandbox = self.get(id)?;
        if sandbox.state != SandboxState::Running {
            return Err(ManagerError::NotRunning {
                id: id.clone(),
                state: sandbox.state,
            });
        }
        sandbox.endpoints.ok_or_else(|| ManagerError::NotRunning {
            id: id.clone(),
            state: sandbox.state,
        })
    }

    /// Runs a command to completion inside a running sandbox (control path, bounded output).
    ///
    /// # Errors
    /// `SandboxNotFound`, `NotRunning`, or a runtime failure.
    #[tracing::instrument(skip(self, request), fields(sandbox_id = %id))]
    pub async fn exec(
        &self,
        id: &SandboxId,
        request: ExecRequest,
    ) -> Result<ExecOutcome, ManagerError> {
        self.endpoints(id)?;
        let runtime = Arc::clone(&self.inner.backends.runtime);
        let sandbox_id = id.clone();
        let outcome = blocking("exec", move || runtime.exec(&sandbox_id, &request))
            .await?
            .map_err(|source| ManagerError::from_runtime("exec", source))?;
        // A command killed for memory shows up as SIGKILL; record the OOM now rather than at
        // the next monitor tick, so the event precedes the caller's next request.
        if outcome.status == crate::exec::ExitStatus::Signal(9) {
            self.check_oom(id).await;
        }
        Ok(outcome)
    }

    /// A sandbox's lifecycle events, oldest first; also for sandboxes that are gone.
    ///
    /// # Errors
    /// A store failure.
    pub async fn events(&self, id: &SandboxId) -> Result<Vec<LifecycleEvent>, ManagerError> {
        let inner = Arc::clone(&self.inner);
        let id = id.clone();
        Ok(blocking("read events", move || inner.store.events(&id)).await??)
    }

    fn oom_seen(&self) -> MutexGuard<'_, HashMap<SandboxId, u64>> {
        self.inner
            .oom_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the OOM kill counter as it stands as already recorded (a re-adopted sandbox's
    /// earlier kills were recorded by the previous daemon).
    async fn remember_oom_kills(&self, id: &SandboxId) {
        let runtime = Arc::clone(&self.inner.backends.runtime);
        let sandbox_id = id.clone();
        if let Ok(Ok(probe)) = blocking("probe", move || runtime.probe(&sandbox_id)).await {
            self.oom_seen().insert(id.clone(), probe.oom_kills);
        }
    }

    /// Records one event per OOM kill not seen before.
    async fn check_oom(&self, id: &SandboxId) {
        let runtime = Arc::clone(&self.inner.backends.runtime);
        let sandbox_id = id.clone();
        let probe = match blocking("probe", move || runtime.probe(&sandbox_id)).await {
            Ok(Ok(probe)) => probe,
            _ => return,
        };
        let new_kills = {
            let mut seen = self.oom_seen();
            let last = seen.entry(id.clone()).or_insert(0);
            let new_kills = probe.oom_kills.saturating_sub(*last);
            *last = probe.oom_kills;
            new_kills
        };
        for _ in 0..new_kills {
            let detail = format!(
                "memory limit {} MiB reached",
                self.memory_mb(id).unwrap_or(0)
            );
            self.record(id, EventKind::OomKill, Reason::Oom, detail)
                .await;
        }
    }

    fn memory_mb(&self, id: &SandboxId) -> Option<u32> {
        self.sandboxes()
            .get(id)
            .map(|sandbox| sandbox.spec.memory_mb)
    }

    async fn persist(&self, sandbox: &Sandbox) -> Result<(), ManagerError> {
        let inner = Arc::clone(&self.inner);
        let sandbox = sandbox.clone();
        Ok(blocking("persist", move || inner.store.put(&sandbox)).await??)
    }

    /// Appends an event; a failure to record is logged, never fatal to the operation.
    async fn record(&self, id: &SandboxId, kind: EventKind, reason: Reason, detail: String) {
        let event = LifecycleEvent {
            sandbox_id: id.clone(),
            at: self.inner.clock.now(),
            kind,
            reason,
            detail,
        };
        let inner = Arc::clone(&self.inner);
        match blocking("record event", move || inner.store.record_event(&event)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(sandbox_id = %id, error = %error_chain(&error), "cannot record event")
            }
            Err(error) => {
                tracing::warn!(sandbox_id = %id, error = %error_chain(&error), "cannot record event")
            }
        }
    }
}

impl Inner {
    /// Claims the release of a sandbox; false when another task is releasing it already.
    fn claim_release(&self, id: &SandboxId) -> bool {
        self.releasing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone())
    }

    fn end_release(&self, id: &SandboxId) {
        self.releasing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    fn sandboxes(&self) -> MutexGuard<'_, HashMap<SandboxId, Sandbox>> {
        self.sandboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn event(
        &self,
        id: &SandboxId,
        kind: EventKind,
        reason: Reason,
        detail: String,
    ) -> LifecycleEvent {
        LifecycleEvent {
            sandbox_id: id.clone(),
            at: self.clock.now(),
            kind,
            reason,
            detail,
        }
    }

    /// Every step of a create. Blocks.
    fn create_blocking(
        &self,
        mut spec: SandboxSpec,
        root_template: Option<TemplateId>,
    ) -> Result<Sandbox, ManagerError> {
        let root_template = root_template.unwrap_or_else(|| spec.template.clone());
        // A fork's root template is its private snapshot, which carries the service of the
        // template the source came from.
        let template = self
            .backends
            .storage
            .template(&root_template)
            .map_err(|source| ManagerError::from_storage("look up template", source))?;
        start::take_template_defaults(&mut spec, &template);
        let id = SandboxId::generate().map_err(|source| ManagerError::Entropy { source })?;
        let access_token =
            AccessToken::generate().map_err(|source| ManagerError::Entropy { source })?;
        // Every sandbox made private gets its own token, forks included.
        let traffic_token = (!spec.public_traffic)
            .then(AccessToken::generate)
            .transpose()
            .map_err(|source| ManagerError::Entropy { source })?;
        let now = self.clock.now();
        let mut sandbox = Sandbox {
            id: id.clone(),
            end_at: now + spec.timeout,
            spec,
            state: SandboxState::Creating,
            created_at: now,
            endpoints: None,
            pause_mode: None,
            access_token: Some(access_token),
            traffic_token,
        };
        self.store.put(&sandbox)?;
        let volumes = {
            let _mounts = self.lock_volume_mounts();
            self.sandboxes().insert(id.clone(), sandbox.clone());
            self.volume_binds(&sandbox.spec)
        };

        let provisioned = volumes
            .and_then(|volumes| {
                provision_blocking(
                    &self.backends,
                    &id,
                    &sandbox.spec,
                    &root_template,
                    self.config.limits.max_pids,
                    volumes,
                )
            })
            .and_then(|endpoints| {
                self.start_service_blocking(&id, &sandbox.spec)?;
                sandbox.state = transition(&sandbox, Operation::Start)?;
                sandbox.endpoints = Some(endpoints);
                // Not recorded as running means not running: a failure here rolls back too.
                let event = self.event(&id, EventKind::Created, Reason::Requested, String::new());
                Ok(self.store.put_with_event(&sandbox, &event)?)
            });
        match provisioned {
            Ok(()) => {
                self.sandboxes().insert(id, sandbox.clone());
                Ok(sandbox)
            }
            Err(error) => {
                release_blocking(&self.backends, &id);
                self.sandboxes().remove(&id);
                sandbox.state = SandboxState::Failed;
                sandbox.endpoints = None;
                let event = self.event(
                    &id,
                    EventKind::CreateFailed,
                    Reason::Error,
                    error_chain(&error),
                );
                if let Err(store_error) = self.store.put_with_event(&sandbox, &event) {
                    tracing::warn!(sandbox_id = %id, error = %error_chain(&store_error), "cannot record failed create");
                }
                Err(error)
            }
        }
    }

    /// Releases a `Stopping` sandbox's resources and records it as stopped. Blocks.
    fn release_and_record(
        &self,
        mut sandbox: Sandbox,
        kind: EventKind,
        reason: Reason,
        detail: String,
    ) -> Result<(), ManagerError> {
        try_release_blocking(&self.backends, &sandbox.id)?;
        sandbox.state = transition(&sandbox, Operation::Finish)?;
        let event = self.event(&sandbox.id, kind, reason, detail);
        self.store.put_with_event(&sandbox, &event)?;
        self.sandboxes().remove(&sandbox.id);
        self.operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&sandbox.id);
        self.oom_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&sandbox.id);
        Ok(())
    }
}

/// Releases everything of a sandbox, in reverse order of creation, stopping at the first
/// failure so that a retry starts where this one stopped.
fn try_release_blocking(backends: &Backends, id: &SandboxId) -> Result<(), ManagerError> {
    stop_processes_blocking(backends, id)?;
    backends
        .storage
        .destroy_rootfs(id)
        .map_err(|source| ManagerError::from_storage("destroy rootfs", source))
}

/// Stops every process of a sandbox and detaches its network, keeping its filesystem. Safe
/// to repeat.
fn stop_processes_blocking(backends: &Backends, id: &SandboxId) -> Result<(), ManagerError> {
    backends
        .runtime
        .destroy(id)
        .map_err(|source| ManagerError::from_runtime("destroy", source))?;
    backends
        .net
        .detach(id)
        .map_err(|source| ManagerError::from_net("detach network", source))
}

/// Best-effort release after a failed create; failures are logged and left to reconciliation.
fn release_blocking(backends: &Backends, id: &SandboxId) {
    if let Err(error) = backends.runtime.destroy(id) {
        tracing::warn!(sandbox_id = %id, error = %error_chain(&error), "rollback: runtime destroy failed");
    }
    if let Err(error) = backends.net.detach(id) {
        tracing::warn!(sandbox_id = %id, error = %error_chain(&error), "rollback: network detach failed");
    }
    if let Err(error) = backends.storage.destroy_rootfs(id) {
        tracing::warn!(sandbox_id = %id, error = %error_chain(&error), "rollback: rootfs destroy failed");
    }
}

/// The state `sandbox` moves to with `op`, or `InvalidState`.
fn transition(sandbox: &Sandbox, op: Operation) -> Result<SandboxState, ManagerError> {
    sandbox
        .state
        .apply(op)
        .map_err(|source| ManagerError::InvalidState {
            id: sandbox.id.clone(),
            source,
        })
}

/// Runs blocking backend work on tokio's blocking pool.
async fn blocking<T, F>(op: &'static str, work: F) -> Result<T, ManagerError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|source| ManagerError::Task { op, source })
}

/// An error and its sources on one line, for event details and logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod dir_snapshot_tests;
#[cfg(test)]
mod durable_tests;
#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod network_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod start_tests;
#[cfg(test)]
mod tag_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod volume_tests;
