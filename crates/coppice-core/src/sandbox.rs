//! The manager's view of one sandbox.

use std::time::SystemTime;

use crate::id::SandboxId;
use crate::runtime::SandboxEndpoints;
use crate::spec::SandboxSpec;
use crate::state::SandboxState;

/// One sandbox, as the manager tracks and persists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// Its id.
    pub id: SandboxId,
    /// What was asked for.
    pub spec: SandboxSpec,
    /// Where it is in its life.
    pub state: SandboxState,
    /// When creation began.
    pub created_at: SystemTime,
    /// When the TTL reaper acts on it.
    pub end_at: SystemTime,
    /// How to reach it, once started.
    pub endpoints: Option<SandboxEndpoints>,
}
