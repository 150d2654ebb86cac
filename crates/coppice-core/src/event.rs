//! Lifecycle events: what happened to a sandbox and why, persisted for users and operators.

use std::time::SystemTime;

use crate::id::SandboxId;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The sandbox was created and started.
    Created,
    /// Creation failed; resources were released.
    CreateFailed,
    /// The sandbox was killed and its resources released.
    Killed,
    /// A process in the sandbox was killed by the OOM killer.
    OomKill,
    /// The sandbox's init died on its own.
    Exited,
    /// The end time was changed.
    TimeoutChanged,
    /// The daemon found the sandbox alive after a restart and took it back.
    Readopted,
    /// The daemon found leftovers after a restart and removed them.
    CleanedUp,
    /// The sandbox was paused.
    Paused,
    /// The sandbox was resumed.
    Resumed,
    /// A snapshot of the sandbox's filesystem was taken.
    Snapshotted,
    /// The network policy was replaced.
    NetworkChanged,
}

impl EventKind {
    /// The persisted name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::CreateFailed => "create_failed",
            Self::Killed => "killed",
            Self::OomKill => "oom_kill",
            Self::Exited => "exited",
            Self::TimeoutChanged => "timeout_changed",
            Self::Readopted => "readopted",
            Self::CleanedUp => "cleaned_up",
            Self::Paused => "paused",
            Self::Resumed => "resumed",
            Self::Snapshotted => "snapshotted",
            Self::NetworkChanged => "network_changed",
        }
    }

    /// Parses the persisted name.
    pub fn from_persisted(name: &str) -> Option<Self> {
        let kind = match name {
            "created" => Self::Created,
            "create_failed" => Self::CreateFailed,
            "killed" => Self::Killed,
            "oom_kill" => Self::OomKill,
            "exited" => Self::Exited,
            "timeout_changed" => Self::TimeoutChanged,
            "readopted" => Self::Readopted,
            "cleaned_up" => Self::CleanedUp,
            "paused" => Self::Paused,
            "resumed" => Self::Resumed,
            "snapshotted" => Self::Snapshotted,
            "network_changed" => Self::NetworkChanged,
            _ => return None,
        };
        Some(kind)
    }
}

/// Why it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A user or API call asked for it.
    Requested,
    /// The sandbox's timeout ran out.
    Timeout,
    /// Memory limit reached.
    Oom,
    /// A failure of the host or a backend.
    Error,
    /// The daemon restarted.
    Restart,
    /// The sandbox stayed paused long enough to be written to disk.
    Idle,
    /// The host's memory ran short.
    MemoryShort,
}

impl Reason {
    /// The persisted name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Timeout => "timeout",
            Self::Oom => "oom",
            Self::Error => "error",
            Self::Restart => "restart",
            Self::Idle => "idle",
            Self::MemoryShort => "memory_short",
        }
    }

    /// Parses the persisted name.
    pub fn from_persisted(name: &str) -> Option<Self> {
        let reason = match name {
            "requested" => Self::Requested,
            "timeout" => Self::Timeout,
            "oom" => Self::Oom,
            "idle" => Self::Idle,
            "memory_short" => Self::MemoryShort,
            "error" => Self::Error,
            "restart" => Self::Restart,
            _ => return None,
        };
        Some(reason)
    }
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleEvent {
    /// The sandbox it concerns.
    pub sandbox_id: SandboxId,
    /// When it was recorded.
    pub at: SystemTime,
    /// What happened.
    pub kind: EventKind,
    /// Why.
    pub reason: Reason,
    /// Human-readable detail (an error chain, a new end time).
    pub detail: String,
}
