//! Errors of the Linux runtime, mapped onto `RuntimeError` kinds at the trait boundary.

use std::io;
use std::path::PathBuf;

use crate::cgroup::CgroupError;
use crate::mount_plan::PlanError;

impl From<coppice_init::records::RecordError> for LinuxError {
    fn from(error: coppice_init::records::RecordError) -> Self {
        match error {
            coppice_init::records::RecordError::Io { op, path, source } => {
                Self::RunDir { op, path, source }
            }
            coppice_init::records::RecordError::Corrupt { path, source } => {
                Self::Corrupt { path, source }
            }
        }
    }
}

impl From<coppice_init::client::ControlError> for LinuxError {
    fn from(error: coppice_init::client::ControlError) -> Self {
        match error {
            coppice_init::client::ControlError::Channel(source) => Self::Control(source),
            coppice_init::client::ControlError::Refused { message } => Self::Refused { message },
        }
    }
}

/// A Linux runtime failure.
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    /// cgroup set-up, accounting or removal failed.
    #[error("cgroup operation failed")]
    Cgroup(#[from] CgroupError),
    /// The root filesystem cannot be mounted as given.
    #[error("cannot plan the root filesystem")]
    Plan(#[from] PlanError),
    /// A file of the run dir could not be read or written.
    #[error("cannot {op} {path}")]
    RunDir {
        /// What was attempted.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The init binary could not be started.
    #[error("cannot start the sandbox init {binary}")]
    SpawnInit {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The init reported a failure while building the sandbox.
    #[error("sandbox init failed: {message}")]
    InitFailed {
        /// The init's own error chain.
        message: String,
    },
    /// The init did not report in time.
    #[error("sandbox init did not report ready")]
    InitTimeout,
    /// The control socket failed.
    #[error("control channel to the sandbox init failed")]
    Control(#[source] io::Error),
    /// The sandbox init refused a command.
    #[error("sandbox refused the command: {message}")]
    Refused {
        /// Why.
        message: String,
    },
    /// A process could not be signalled or inspected.
    #[error("cannot {op} process {pid}")]
    Process {
        /// What was attempted.
        op: &'static str,
        /// The pid.
        pid: i32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// CRIU failed to write or read a checkpoint.
    #[error("checkpoint {op} failed: {message}")]
    Checkpoint {
        /// `dump` or `restore`.
        op: &'static str,
        /// What CRIU reported.
        message: String,
    },
    /// The sandbox cannot be checkpointed as built.
    #[error("sandbox cannot be checkpointed")]
    NotCheckpointable(#[from] crate::checkpoint::CheckpointError),
    /// Processes were still present after the stop timeout.
    #[error("sandbox processes still present after kill")]
    StopTimeout,
    /// A JSON file of the run dir is corrupt.
    #[error("corrupt run-dir file {path}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}
