//! The manager's view of one sandbox.

use std::time::SystemTime;

use crate::id::SandboxId;
use crate::runtime::SandboxEndpoints;
use crate::spec::SandboxSpec;
use crate::state::{PauseMode, SandboxState};

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
    /// What its pause kept, while it is paused.
    pub pause_mode: Option<PauseMode>,
    /// The secret its in-sandbox services (envd) require from callers; `None` only for
    /// sandboxes recorded before tokens existed.
    pub access_token: Option<AccessToken>,
    /// What requests to its exposed ports must bear when its spec keeps them private.
    pub traffic_token: Option<AccessToken>,
}

/// A per-sandbox secret: 32 random bytes, hex-encoded. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    /// A fresh token from the operating system's entropy source.
    ///
    /// # Errors
    /// Fails only if the OS entropy source fails.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// A token read back from the store.
    pub fn from_persisted(token: String) -> Self {
        Self(token)
    }

    /// The token itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(…)")
    }
}
