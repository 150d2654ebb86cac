//! The sandbox lifecycle as an enum with explicit transitions. The E2B string forms
//! ("running", "paused") exist only in the gateway.

use std::fmt;

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SandboxState {
    /// Storage, cgroups and namespaces are being set up.
    Creating,
    /// Processes run; envd is reachable.
    Running,
    /// Processes are frozen or checkpointed; state is kept.
    Paused,
    /// Being killed and cleaned up.
    Stopping,
    /// Gone; only the record and its events remain.
    Stopped,
    /// Creation or the sandbox itself failed; resources are cleaned up.
    Failed,
}

/// What a paused sandbox kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PauseMode {
    /// Its processes are stopped where they were, memory included; resume continues them.
    Memory,
    /// Only its filesystem is kept; resume boots a fresh init and envd on it.
    Filesystem,
    /// Its processes were written to disk, memory included, and ended (a memory pause that
    /// stayed idle); resume restores them. Survives daemon and host restarts.
    Durable,
}

impl PauseMode {
    /// The persisted name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Filesystem => "filesystem",
            Self::Durable => "durable",
        }
    }

    /// Parses the persisted name.
    pub fn from_persisted(name: &str) -> Option<Self> {
        match name {
            "memory" => Some(Self::Memory),
            "filesystem" => Some(Self::Filesystem),
            "durable" => Some(Self::Durable),
            _ => None,
        }
    }
}

/// An operation that moves a sandbox between states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Creation finished.
    Start,
    /// Freeze or checkpoint.
    Pause,
    /// Undo a pause.
    Resume,
    /// Begin kill and cleanup.
    Kill,
    /// Cleanup finished.
    Finish,
    /// Something went wrong.
    Fail,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Operation::Start => "start",
            Operation::Pause => "pause",
            Operation::Resume => "resume",
            Operation::Kill => "kill",
            Operation::Finish => "finish",
            Operation::Fail => "fail",
        };
        f.write_str(name)
    }
}

/// A transition that the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {op} a sandbox that is {from}")]
pub struct InvalidTransition {
    /// The state the sandbox was in.
    pub from: SandboxState,
    /// What was attempted.
    pub op: Operation,
}

impl SandboxState {
    /// The state after `op`, if the lifecycle allows it.
    ///
    /// # Errors
    /// [`InvalidTransition`] when `op` does not apply to `self`.
    pub fn apply(self, op: Operation) -> Result<SandboxState, InvalidTransition> {
        use Operation as Op;
        use SandboxState as S;
        let next = match (self, op) {
            (S::Creating, Op::Start) => S::Running,
            (S::Running, Op::Pause) => S::Paused,
            (S::Paused, Op::Resume) => S::Running,
            (S::Creating | S::Running | S::Paused, Op::Kill) => S::Stopping,
            (S::Stopping, Op::Finish) => S::Stopped,
            (S::Creating | S::Running | S::Paused | S::Stopping, Op::Fail) => S::Failed,
            (from, op) => return Err(InvalidTransition { from, op }),
        };
        Ok(next)
    }

    /// Whether the sandbox still holds host resources (processes, mounts, cgroups).
    pub fn holds_resources(self) -> bool {
        matches!(
            self,
            Self::Creating | Self::Running | Self::Paused | Self::Stopping
        )
    }

    /// Whether the sandbox is visible to `get` and `list`.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }

    /// The persisted name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }

    /// Parses the persisted name of the state.
    pub fn from_persisted(name: &str) -> Option<Self> {
        let state = match name {
            "creating" => Self::Creating,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "stopping" => Self::Stopping,
            "stopped" => Self::Stopped,
            "failed" => Self::Failed,
            _ => return None,
        };
        Some(state)
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operation as Op;
    use SandboxState as S;

    #[test]
    fn test_apply_transition_table() {
        let allowed = [
            (S::Creating, Op::Start, S::Running),
            (S::Running, Op::Pause, S::Paused),
            (S::Paused, Op::Resume, S::Running),
            (S::Running, Op::Kill, S::Stopping),
            (S::Paused, Op::Kill, S::Stopping),
            (S::Creating, Op::Kill, S::Stopping),
            (S::Stopping, Op::Finish, S::Stopped),
            (S::Creating, Op::Fail, S::Failed),
            (S::Stopping, Op::Fail, S::Failed),
        ];
        for (from, op, to) in allowed {
            assert_eq!(from.apply(op), Ok(to), "{from} --{op}-->");
        }
    }

    #[test]
    fn test_apply_refused_transitions() {
        let refused = [
            (S::Paused, Op::Pause),
            (S::Running, Op::Resume),
            (S::Stopped, Op::Kill),
            (S::Stopping, Op::Kill),
            (S::Failed, Op::Start),
            (S::Stopped, Op::Fail),
        ];
        for (from, op) in refused {
            assert_eq!(from.apply(op), Err(InvalidTransition { from, op }));
        }
    }

    #[test]
    fn test_persisted_names_round_trip() {
        for state in [
            S::Creating,
            S::Running,
            S::Paused,
            S::Stopping,
            S::Stopped,
            S::Failed,
        ] {
            assert_eq!(SandboxState::from_persisted(state.as_str()), Some(state));
        }
    }
}
