//! The error every manager operation returns, classified by kind for the frontends.

use crate::error::ErrorKind;
use crate::id::{DirSnapshotId, SandboxId, TemplateId, VolumeId};
use crate::net::NetError;
use crate::runtime::RuntimeError;
use crate::spec::SpecError;
use crate::state::{InvalidTransition, SandboxState};
use crate::storage::StorageError;
use crate::store::StoreError;

/// Why a manager operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The spec breaks a limit.
    #[error("invalid sandbox spec")]
    InvalidSpec(#[from] SpecError),
    /// No live sandbox with that id.
    #[error("sandbox {id} not found")]
    SandboxNotFound {
        /// The sandbox.
        id: SandboxId,
    },
    /// No template with that id.
    #[error("template {id} not found")]
    TemplateNotFound {
        /// The template.
        id: TemplateId,
    },
    /// A template recipe that cannot be built as written.
    #[error(transparent)]
    InvalidRecipe(#[from] crate::recipe::RecipeError),
    /// A tag that cannot be used so.
    #[error("tag {tag:?}: {reason}")]
    InvalidTag {
        /// The tag.
        tag: String,
        /// Why.
        reason: &'static str,
    },
    /// Tags name builds; this template was not built (a snapshot, an import, `base`).
    #[error("template {id} was not made by a build: only builds are tagged")]
    NotABuild {
        /// The template.
        id: TemplateId,
    },
    /// A build step failed; nothing of it was kept.
    #[error("build step {step:?} failed: {detail}")]
    BuildFailed {
        /// The step.
        step: String,
        /// Its position among the recipe's steps ([`crate::recipe::Recipe::steps`]), where
        /// one step failed.
        index: Option<usize>,
        /// What it said last.
        detail: String,
    },
    /// The operation does not fit the sandbox's state.
    #[error("sandbox {id}: invalid state")]
    InvalidState {
        /// The sandbox.
        id: SandboxId,
        /// The refused transition.
        #[source]
        source: InvalidTransition,
    },
    /// The sandbox exists but is not running.
    #[error("sandbox {id} is {state}, not running")]
    NotRunning {
        /// The sandbox.
        id: SandboxId,
        /// Its state.
        state: SandboxState,
    },
    /// The isolation backend failed.
    #[error("runtime {op} failed")]
    Runtime {
        /// The operation.
        op: &'static str,
        /// The backend error.
        #[source]
        source: RuntimeError,
    },
    /// The storage backend failed.
    #[error("storage {op} failed")]
    Storage {
        /// The operation.
        op: &'static str,
        /// The backend error.
        #[source]
        source: StorageError,
    },
    /// The network backend failed.
    #[error("network {op} failed")]
    Net {
        /// The operation.
        op: &'static str,
        /// The backend error.
        #[source]
        source: NetError,
    },
    /// The state database failed.
    #[error("state database failed")]
    Store(#[from] StoreError),
    /// No directory snapshot with that id.
    #[error("directory snapshot {id} not found")]
    DirSnapshotNotFound {
        /// The snapshot.
        id: DirSnapshotId,
    },
    /// A directory that cannot be captured or restored into.
    #[error("directory {path:?} cannot be used: {reason}")]
    BadDirectory {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// No volume with that id or name.
    #[error("volume {volume} not found")]
    VolumeNotFound {
        /// The id or name asked for.
        volume: String,
    },
    /// A volume with that name exists already.
    #[error("a volume named {name} already exists")]
    VolumeNameTaken {
        /// The name.
        name: String,
    },
    /// The volume is mounted by a sandbox that has not been killed.
    #[error("volume {id} is mounted by sandbox {sandbox}; kill the sandbox first")]
    VolumeInUse {
        /// The volume.
        id: VolumeId,
        /// One sandbox that mounts it.
        sandbox: SandboxId,
    },
    /// A missing or wrong volume token.
    #[error("the token does not grant access to volume {id}")]
    VolumeToken {
        /// The volume.
        id: VolumeId,
    },
    /// An id that does not parse.
    #[error("invalid id")]
    InvalidId {
        /// Why it does not parse.
        #[source]
        source: crate::id::ParseIdError,
    },
    /// The OS entropy source failed.
    #[error("cannot generate a sandbox id")]
    Entropy {
        /// The cause.
        #[source]
        source: getrandom::Error,
    },
    /// The template's service did not become ready in time (the sandbox is not handed out).
    #[error("the service of template {template} was not ready within {seconds} s: {detail}")]
    TemplateNotReady {
        /// The template.
        template: TemplateId,
        /// How long it was waited for.
        seconds: u64,
        /// What the ready check last said.
        detail: String,
    },
    /// A blocking task panicked or was cancelled.
    #[error("background task {op} did not complete")]
    Task {
        /// The operation.
        op: &'static str,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl ManagerError {
    pub(crate) fn from_runtime(op: &'static str, source: RuntimeError) -> Self {
        match source {
            RuntimeError::NotFound { id } => Self::SandboxNotFound { id },
            source => Self::Runtime { op, source },
        }
    }

    pub(crate) fn from_storage(op: &'static str, source: StorageError) -> Self {
        match source {
            StorageError::TemplateNotFound { id } => Self::TemplateNotFound { id },
            source => Self::Storage { op, source },
        }
    }

    pub(crate) fn from_net(op: &'static str, source: NetError) -> Self {
        Self::Net { op, source }
    }

    /// The kind of failure, for picking a status code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidSpec(_)
            | Self::InvalidId { .. }
            | Self::BadDirectory { .. }
            | Self::InvalidRecipe(_)
            | Self::NotABuild { .. }
            | Self::InvalidTag { .. }
            | Self::BuildFailed { .. } => ErrorKind::Invalid,
            Self::SandboxNotFound { .. }
            | Self::TemplateNotFound { .. }
            | Self::VolumeNotFound { .. }
            | Self::DirSnapshotNotFound { .. } => ErrorKind::NotFound,
            Self::InvalidState { .. } | Self::NotRunning { .. } | Self::VolumeInUse { .. } => {
                ErrorKind::Conflict
            }
            Self::VolumeNameTaken { .. } => ErrorKind::AlreadyExists,
            Self::VolumeToken { .. } => ErrorKind::Unauthenticated,
            Self::Runtime { source, .. } => source.kind(),
            Self::Storage { source, .. } => source.kind(),
            Self::Net { source, .. } => source.kind(),
            Self::Store(_)
            | Self::Entropy { .. }
            | Self::Task { .. }
            | Self::TemplateNotReady { .. } => ErrorKind::Internal,
        }
    }
}
