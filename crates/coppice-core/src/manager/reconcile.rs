//! Start-up reconciliation: persisted records against what the backends actually hold.
//!
//! - running or memory-paused records whose init is alive are re-adopted;
//! - paused records whose init is gone keep their filesystem (a memory pause whose init died
//!   with the host becomes a filesystem pause), and anything left running of a filesystem
//!   pause is stopped;
//! - records that were `Creating` are cleaned up and marked failed (the create never answered);
//! - records that were `Stopping` are cleaned up and marked stopped;
//! - running records whose init is gone are cleaned up and marked failed;
//! - backend resources with no active record are removed.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{Backends, ManagerError, SandboxManager, blocking, error_chain, try_release_blocking};
use crate::event::{EventKind, Reason};
use crate::id::SandboxId;
use crate::runtime::RuntimeSandbox;
use crate::sandbox::Sandbox;
use crate::state::{PauseMode, SandboxState};

struct Inventory {
    runtime: Vec<RuntimeSandbox>,
    storage: Vec<SandboxId>,
    net: Vec<SandboxId>,
}

impl SandboxManager {
    pub(super) async fn reconcile(&self) -> Result<(), ManagerError> {
        let inner = Arc::clone(&self.inner);
        let records = blocking("load records", move || inner.store.active()).await??;
        let backends = self.inner.backends.clone();
        let inventory = blocking("inventory", move || take_inventory(&backends)).await??;

        let mut known = BTreeSet::new();
        for mut sandbox in records {
            known.insert(sandbox.id.clone());
            let alive = inventory
                .runtime
                .iter()
                .any(|found| found.id == sandbox.id && found.alive);
            match sandbox.state {
                SandboxState::Paused
                    if !alive
                        || matches!(
                            sandbox.pause_mode,
                            Some(PauseMode::Filesystem | PauseMode::Durable)
                        ) =>
                {
                    self.readopt_paused(sandbox).await?;
                }
                SandboxState::Running | SandboxState::Paused if alive => {
                    tracing::info!(sandbox_id = %sandbox.id, "re-adopted sandbox after restart");
                    self.remember_oom_kills(&sandbox.id).await;
                    self.sandboxes().insert(sandbox.id.clone(), sandbox.clone());
                    self.record(
                        &sandbox.id,
                        EventKind::Readopted,
                        Reason::Restart,
                        String::new(),
                    )
                    .await;
                }
                SandboxState::Stopping => {
                    self.sandboxes().insert(sandbox.id.clone(), sandbox.clone());
                    self.claim_release(&sandbox.id);
                    let detail = "kill completed after restart".to_owned();
                    if let Err(error) = self
                        .finish_stopping(sandbox, EventKind::Killed, Reason::Restart, detail)
                        .await
                    {
                        tracing::warn!(error = %error_chain(&error), "cleanup after restart failed; will retry");
                    }
                }
                state => {
                    let (kind, detail) = if state == SandboxState::Creating {
                        (
                            EventKind::CreateFailed,
                            "daemon restarted during create".to_owned(),
                        )
                    } else {
                        (
                            EventKind::Exited,
                            "sandbox init not running after restart".to_owned(),
                        )
                    };
                    let backends = self.inner.backends.clone();
                    let id = sandbox.id.clone();
                    let released =
                        blocking("release", move || try_release_blocking(&backends, &id)).await;
                    if let Some(error) = released_error(released) {
                        // Leave it to the monitor: `Stopping` sandboxes are retried until released.
                        tracing::warn!(sandbox_id = %sandbox.id, error = %error_chain(&error), "cleanup after restart failed; will retry");
                        sandbox.state = SandboxState::Stopping;
                        self.persist(&sandbox).await?;
                        self.sandboxes().insert(sandbox.id.clone(), sandbox);
                        continue;
                    }
                    sandbox.state = SandboxState::Failed;
                    self.persist(&sandbox).await?;
                    self.record(&sandbox.id, kind, Reason::Restart, detail)
                        .await;
                }
            }
        }

        let orphans: BTreeSet<SandboxId> = inventory
            .runtime
            .iter()
            .map(|found| found.id.clone())
            .chain(inventory.storage)
            .chain(inventory.net)
            .filter(|id| !known.contains(id))
            .collect();
        for id in orphans {
            tracing::info!(sandbox_id = %id, "removing leftovers of an unknown sandbox");
            let backends = self.inner.backends.clone();
            let sandbox_id = id.clone();
            let released = blocking("release", move || {
                try_release_blocking(&backends, &sandbox_id)
            })
            .await;
            if let Some(error) = released_error(released) {
                tracing::warn!(sandbox_id = %id, error = %error_chain(&error), "cannot remove leftovers; next start retries");
                continue;
            }
            self.record(&id, EventKind::CleanedUp, Reason::Restart, String::new())
                .await;
        }
        Ok(())
    }
}

impl SandboxManager {
    /// Takes back a paused sandbox whose processes are gone (or must go): its filesystem is
    /// what it kept. One that had kept its memory lost it with its init (a host restart);
    /// it is recorded as filesystem-paused, so its resume boots on the kept files.
    async fn readopt_paused(&self, mut sandbox: Sandbox) -> Result<(), ManagerError> {
        let backends = self.inner.backends.clone();
        // Its memory is on disk (a durable pause, or one a crash interrupted before it was
        // recorded): nothing is stopped, and resume restores it.
        let id = sandbox.id.clone();
        let checkpointed = sandbox.pause_mode != Some(PauseMode::Filesystem)
            && blocking("find checkpoint", move || {
                backends.runtime.has_checkpoint(&id)
            })
            .await?;
        if checkpointed {
            sandbox.pause_mode = Some(PauseMode::Durable);
            sandbox.endpoints = None;
            self.persist(&sandbox).await?;
            tracing::info!(sandbox_id = %sandbox.id, "re-adopted a sandbox paused on disk after restart");
            self.sandboxes().insert(sandbox.id.clone(), sandbox.clone());
            let detail = "its memory is kept on disk".to_owned();
            self.record(&sandbox.id, EventKind::Readopted, Reason::Restart, detail)
                .await;
            return Ok(());
        }
        let backends = self.inner.backends.clone();
        let id = sandbox.id.clone();
        let stopped = blocking("stop processes", move || {
            super::stop_processes_blocking(&backends, &id)
        })
        .await;
        if let Some(error) = released_error(stopped) {
            // The next resume or kill stops them again before going on.
            tracing::warn!(sandbox_id = %sandbox.id, error = %error_chain(&error), "cannot stop a paused sandbox's leftovers; will retry");
        }
        let detail = if sandbox.pause_mode == Some(PauseMode::Filesystem) {
            String::new()
        } else {
            "its memory was lost; resume boots on the kept filesystem".to_owned()
        };
        sandbox.pause_mode = Some(PauseMode::Filesystem);
        sandbox.endpoints = None;
        self.persist(&sandbox).await?;
        tracing::info!(sandbox_id = %sandbox.id, "re-adopted paused sandbox after restart");
        self.sandboxes().insert(sandbox.id.clone(), sandbox.clone());
        self.record(&sandbox.id, EventKind::Readopted, Reason::Restart, detail)
            .await;
        Ok(())
    }
}

/// The error of a blocking release, if any (task failure included).
fn released_error(
    released: Result<Result<(), ManagerError>, ManagerError>,
) -> Option<ManagerError> {
    match released {
        Ok(Ok(())) => None,
        Ok(Err(error)) | Err(error) => Some(error),
    }
}

fn take_inventory(backends: &Backends) -> Result<Inventory, ManagerError> {
    Ok(Inventory {
        runtime: backends
            .runtime
            .list()
            .map_err(|source| ManagerError::from_runtime("list", source))?,
        storage: backends
            .storage
            .list_rootfs()
            .map_err(|source| ManagerError::from_storage("list rootfs", source))?,
        net: backends
            .net
            .list()
            .map_err(|source| ManagerError::from_net("list", source))?,
    })
}
