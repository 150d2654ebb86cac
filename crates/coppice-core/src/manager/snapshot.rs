//! Snapshots and forks: a sandbox's filesystem captured as an immutable template (a running
//! sandbox is frozen only for the capture), and new sandboxes started from it.
//!
//! Fork safety: every sandbox made from a snapshot is a new sandbox. It gets its own id and
//! hostname, its own envd access token, its own `/etc/machine-id` (storage writes one into
//! every new root filesystem), and freshly started processes, so no random state is shared
//! with the source or with its siblings.

use std::sync::Arc;
use std::time::Duration;

use super::{Inner, ManagerError, SandboxManager, blocking};
use crate::event::{EventKind, Reason};
use crate::id::{SandboxId, TemplateId};
use crate::sandbox::Sandbox;
use crate::spec::SpecError;
use crate::state::SandboxState;
use crate::storage::TemplateInfo;

/// Most sandboxes one fork call starts.
pub const MAX_FORKS: u32 = 20;
/// Names of the private templates forks are made from (deleted once the forks started).
const FORK_PREFIX: &str = "fork";

impl SandboxManager {
    /// Captures a live sandbox's filesystem as template `name` (or a generated id).
    ///
    /// # Errors
    /// `SandboxNotFound`; `AlreadyExists` for a taken name; `InvalidSpec` for a name starting
    /// with `fork-` (reserved for forks); storage failures (a failed
    /// capture leaves nothing behind and the sandbox as it was).
    #[tracing::instrument(skip(self), fields(sandbox_id = %id))]
    pub async fn snapshot(
        &self,
        id: &SandboxId,
        name: Option<TemplateId>,
    ) -> Result<TemplateInfo, ManagerError> {
        if let Some(name) = &name
            && name.as_str().starts_with(&format!("{FORK_PREFIX}-"))
        {
            return Err(ManagerError::InvalidSpec(SpecError::ReservedName {
                name: name.to_string(),
            }));
        }
        // The build cache trusts its names: no one else may take them.
        if let Some(name) = &name {
            Self::check_template_name(name)?;
        }
        self.snapshot_as(id, name).await
    }

    pub(super) async fn snapshot_as(
        &self,
        id: &SandboxId,
        name: Option<TemplateId>,
    ) -> Result<TemplateInfo, ManagerError> {
        let sandbox_id = id.clone();
        self.locked_blocking("snapshot", id, move |inner| {
            inner.snapshot_blocking(&sandbox_id, name)
        })
        .await
    }

    /// Snapshots, oldest first; only those of sandbox `of` when given.
    ///
    /// # Errors
    /// A storage failure.
    pub async fn snapshots(
        &self,
        of: Option<&SandboxId>,
    ) -> Result<Vec<TemplateInfo>, ManagerError> {
        let mut snapshots: Vec<TemplateInfo> = self
            .templates()
            .await?
            .into_iter()
            .filter(|template| match (&template.snapshot_of, of) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(source), Some(wanted)) => source == wanted,
            })
            .collect();
        snapshots.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(snapshots)
    }

    /// Deletes a template (a snapshot, a build) and the tags of its name; sandboxes made from
    /// them keep running.
    ///
    /// # Errors
    /// `TemplateNotFound`; `InvalidSpec`-like refusals from storage for built-in templates.
    pub async fn delete_template(&self, id: &TemplateId) -> Result<(), ManagerError> {
        let _name = self.lock_template_name(id).await;
        // The name first: if it may not go, its tags stay too.
        self.delete_one_template(id).await?;
        if id.tag().is_none() {
            for tagged in self.all_templates().await? {
                if tagged.id.name() == id.as_str() && tagged.id.tag().is_some() {
                    self.delete_one_template(&tagged.id).await?;
                }
            }
        }
        Ok(())
    }

    pub(super) async fn delete_one_template(&self, id: &TemplateId) -> Result<(), ManagerError> {
        let storage = Arc::clone(&self.inner.backends.storage);
        let template = id.clone();
        blocking("delete template", move || {
            storage.delete_template(&template)
        })
        .await?
        .map_err(|source| ManagerError::from_storage("delete template", source))?;
        // The template is gone; a log left behind is only a row.
        self.store_best_effort("delete build log", id, |store, template| {
            store.delete_build_log(template)
        })
        .await;
        Ok(())
    }

    /// Starts `count` new sandboxes from a snapshot of sandbox `id` taken now; each has the
    /// source's settings and `timeout` (else the source's timeout). One result per fork.
    ///
    /// # Errors
    /// `InvalidSpec` for a count or timeout out of range; `SandboxNotFound`; a failed
    /// snapshot. A fork that fails to start is reported in its own slot.
    #[tracing::instrument(skip(self), fields(sandbox_id = %id))]
    pub async fn fork(
        &self,
        id: &SandboxId,
        count: u32,
        timeout: Option<Duration>,
    ) -> Result<Vec<Result<Sandbox, ManagerError>>, ManagerError> {
        if count == 0 || count > MAX_FORKS {
            return Err(ManagerError::InvalidSpec(SpecError::ForkCount {
                got: count,
                max: MAX_FORKS,
            }));
        }
        if let Some(timeout) = timeout {
            self.check_timeout(timeout)?;
        }
        let source = self.get(id)?;
        let name = generated_template_id(FORK_PREFIX)?;
        let snapshot = self.snapshot_as(id, Some(name)).await?;
        let mut spec = source.spec.clone();
        if let Some(timeout) = timeout {
            spec.timeout = timeout;
        }
        let creates: Vec<_> = (0..count)
            .map(|_| {
                let manager = self.clone();
                let spec = spec.clone();
                let root = snapshot.id.clone();
                tokio::spawn(async move { manager.create_detached(spec, Some(root)).await })
            })
            .collect();
        let mut forks = Vec::with_capacity(creates.len());
        for create in creates {
            forks.push(
                create
                    .await
                    .map_err(|source| ManagerError::Task { op: "fork", source })
                    .and_then(|created| created),
            );
        }
        // The forks hold the snapshot's layers themselves; its template is not needed.
        if let Err(error) = self.delete_template(&snapshot.id).await {
            tracing::warn!(template = %snapshot.id, error = %super::error_chain(&error), "cannot remove a fork's snapshot");
        }
        Ok(forks)
    }
}

impl SandboxManager {
    /// Deletes the private templates of fork calls a crash interrupted: their forks, if any
    /// started, hold the layers themselves.
    pub(super) async fn remove_stale_fork_templates(&self) {
        let Ok(templates) = self.templates().await else {
            return;
        };
        let prefix = format!("{FORK_PREFIX}-");
        for template in templates
            .iter()
            .filter(|t| t.snapshot_of.is_some() && t.id.as_str().starts_with(&prefix))
        {
            match self.delete_template(&template.id).await {
                Ok(()) => {
                    tracing::info!(template = %template.id, "removed an interrupted fork's snapshot")
                }
                Err(error) => {
                    tracing::warn!(template = %template.id, error = %super::error_chain(&error), "cannot remove an interrupted fork's snapshot")
                }
            }
        }
    }
}

impl Inner {
    fn snapshot_blocking(
        &self,
        id: &SandboxId,
        name: Option<TemplateId>,
    ) -> Result<TemplateInfo, ManagerError> {
        let sandbox = self.live_sandbox(id)?;
        let name = match name {
            Some(name) => name,
            None => generated_template_id("snap")?,
        };
        let captured = self.still_while(&sandbox, || {
            self.backends.storage.snapshot_rootfs(id, &name)
        })?;
        let info = captured.map_err(|source| ManagerError::from_storage("snapshot", source))?;
        let event = self.event(
            id,
            EventKind::Snapshotted,
            Reason::Requested,
            name.to_string(),
        );
        if let Err(error) = self.store.record_event(&event) {
            tracing::warn!(sandbox_id = %id, error = %super::error_chain(&error), "cannot record snapshot");
        }
        Ok(info)
    }
}

impl Inner {
    /// Runs `work` with `sandbox`'s processes still: a running sandbox is frozen for its
    /// duration; a memory-paused one is frozen already and a filesystem-paused one runs
    /// nothing.
    pub(super) fn still_while<T>(
        &self,
        sandbox: &Sandbox,
        work: impl FnOnce() -> T,
    ) -> Result<T, ManagerError> {
        let freeze = sandbox.state == SandboxState::Running;
        if freeze {
            self.backends
                .runtime
                .freeze(&sandbox.id)
                .map_err(|source| ManagerError::from_runtime("freeze", source))?;
        }
        let result = work();
        if freeze {
            self.backends
                .runtime
                .thaw(&sandbox.id)
                .map_err(|source| ManagerError::from_runtime("thaw", source))?;
        }
        Ok(result)
    }
}

/// `<prefix>-<random>`, a template id no user picks by chance.
fn generated_template_id(prefix: &str) -> Result<TemplateId, ManagerError> {
    let random = SandboxId::generate().map_err(|source| ManagerError::Entropy { source })?;
    format!("{prefix}-{random}")
        .parse()
        .map_err(|source| ManagerError::InvalidId { source })
}
