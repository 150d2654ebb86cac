//! The build cache's upkeep: every step a build makes or reuses is marked used, and steps
//! unused for a while are deleted (after each build, past `ManagerConfig::build_cache_max_age`,
//! and on request). A template keeps the layers it was made of whatever becomes of the
//! steps; a pruned step only costs the next build that needs it its time.

use std::sync::Arc;
use std::time::Duration;

use super::{ManagerError, SandboxManager, blocking};
use crate::id::TemplateId;

/// Steps used more recently than this are never pruned, whatever a caller asks (a build
/// marks each step used before it looks for it, and pruning waits for running builds).
pub const MIN_PRUNE_AGE: Duration = Duration::from_secs(3600);

impl SandboxManager {
    /// Marks build cache step `id` used now; a failure is logged (the step then ages from
    /// its creation).
    pub(super) async fn touch_build_step(&self, id: &TemplateId) {
        let now = self.inner.clock.now();
        self.store_best_effort("touch build step", id, move |store, step| {
            store.touch_build_step(step, now)
        })
        .await;
    }

    /// Deletes the build cache's steps unused for `older_than` (at least [`MIN_PRUNE_AGE`]);
    /// returns them.
    ///
    /// # Errors
    /// Storage and store failures (steps deleted before one are gone).
    pub async fn prune_build_cache(
        &self,
        older_than: Duration,
    ) -> Result<Vec<TemplateId>, ManagerError> {
        let older_than = older_than.max(MIN_PRUNE_AGE);
        // No build stands on the cache meanwhile (each holds this shared while it runs).
        let _pruning = self.inner.build_cache_use.write().await;
        let now = self.inner.clock.now();
        let mut pruned = Vec::new();
        for step in self.all_templates().await? {
            if !Self::is_build_cache(&step.id) {
                continue;
            }
            let inner = Arc::clone(&self.inner);
            let id = step.id.clone();
            let used = blocking("get build step", move || inner.store.build_step_used(&id))
                .await??
                .unwrap_or(step.created_at);
            if now.duration_since(used).unwrap_or_default() < older_than {
                continue;
            }
            match self.delete_one_template(&step.id).await {
                // Deleted meanwhile (by hand): as good as pruned.
                Ok(()) | Err(ManagerError::TemplateNotFound { .. }) => {}
                Err(error) => return Err(error),
            }
            let inner = Arc::clone(&self.inner);
            let id = step.id.clone();
            blocking("forget build step", move || {
                inner.store.forget_build_step(&id)
            })
            .await??;
            pruned.push(step.id);
        }
        if !pruned.is_empty() {
            tracing::info!(count = pruned.len(), "build cache steps pruned");
        }
        Ok(pruned)
    }
}
