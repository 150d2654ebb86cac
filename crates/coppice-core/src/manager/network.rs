//! Replacing a sandbox's network policy while it lives.

use std::sync::Arc;

use super::{ManagerError, SandboxManager, blocking};
use crate::event::{EventKind, Reason};
use crate::id::SandboxId;
use crate::sandbox::Sandbox;
use crate::spec::NetworkSpec;
use crate::state::{PauseMode, SandboxState};

impl SandboxManager {
    /// Replaces the network policy of `id` (E2B's `update_network`). A sandbox that holds a
    /// network (running, or paused with its memory) gets the new policy at once, existing
    /// connections included; one paused to its filesystem gets it when it resumes.
    ///
    /// # Errors
    /// `SandboxNotFound`; `NotRunning` while it is being created or killed; `Net` with
    /// kind `Invalid` for a policy the backend cannot enforce (nothing changes then).
    #[tracing::instrument(skip(self, network), fields(sandbox_id = %id))]
    pub async fn update_network(
        &self,
        id: &SandboxId,
        network: NetworkSpec,
    ) -> Result<Sandbox, ManagerError> {
        let _operation = self.lock_operations(id).await;
        let inner = Arc::clone(&self.inner);
        let sandbox_id = id.clone();
        blocking("update network", move || {
            let current = inner
                .sandboxes()
                .get(&sandbox_id)
                .filter(|sandbox| sandbox.state.is_live())
                .cloned()
                .ok_or_else(|| ManagerError::SandboxNotFound {
                    id: sandbox_id.clone(),
                })?;
            let holds_network = match current.state {
                SandboxState::Running => true,
                // A durable pause has no processes (and only loopback-only sandboxes pause
                // durably): the new policy is recorded for the resume.
                SandboxState::Paused => current.pause_mode == Some(PauseMode::Memory),
                state => {
                    return Err(ManagerError::NotRunning {
                        id: sandbox_id.clone(),
                        state,
                    });
                }
            };
            if holds_network {
                inner
                    .backends
                    .net
                    .update(&sandbox_id, &network)
                    .map_err(|source| ManagerError::from_net("update", source))?;
            }
            let mut updated = current;
            updated.spec.network = network;
            let detail = describe(&updated.spec.network);
            let event = inner.event(
                &sandbox_id,
                EventKind::NetworkChanged,
                Reason::Requested,
                detail,
            );
            // Under the map lock, as for timeouts: a kill that finished meanwhile leaves the
            // sandbox not live, and its final record must not be overwritten.
            let mut sandboxes = inner.sandboxes();
            let Some(sandbox) = sandboxes
                .get_mut(&sandbox_id)
                .filter(|sandbox| sandbox.state.is_live())
            else {
                return Err(ManagerError::SandboxNotFound { id: sandbox_id });
            };
            updated.state = sandbox.state;
            updated.end_at = sandbox.end_at;
            inner.store.put_with_event(&updated, &event)?;
            *sandbox = updated.clone();
            Ok(updated)
        })
        .await?
    }
}

fn describe(network: &NetworkSpec) -> String {
    format!(
        "internet {}, {} allowed, {} denied",
        if network.allow_internet { "on" } else { "off" },
        network.allow_out.len(),
        network.deny_out.len()
    )
}
