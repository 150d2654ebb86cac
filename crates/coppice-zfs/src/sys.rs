//! The seam between the plan and the host: running `zfs` with an argument list.

use std::io;
use std::process::Command;

/// What running `zfs` can end in.
#[derive(Debug, thiserror::Error)]
pub enum ZfsError {
    /// The command could not be started.
    #[error("cannot run zfs: {0}")]
    Spawn(#[source] io::Error),
    /// `zfs` exited unsuccessfully; `stderr` is its message.
    #[error("zfs {args} failed: {stderr}")]
    Failed {
        /// The arguments, joined for the message.
        args: String,
        /// What `zfs` printed on standard error.
        stderr: String,
    },
}

impl ZfsError {
    /// Whether `zfs` said the dataset does not exist.
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::Failed { stderr, .. } if stderr.contains("does not exist"))
    }

    /// Whether `zfs` said the pool or a quota is out of space.
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, Self::Failed { stderr, .. }
            if stderr.contains("out of space") || stderr.contains("quota exceeded"))
    }

    /// Whether `zfs` said the dataset already exists.
    pub fn is_existing(&self) -> bool {
        matches!(self, Self::Failed { stderr, .. } if stderr.contains("already exists"))
    }
}

/// Runs `zfs`. Implemented by [`CommandZfs`] on hosts and by recording fakes in tests.
pub trait ZfsSys: Send + Sync + 'static {
    /// Runs `zfs <args>` and returns its standard output.
    ///
    /// # Errors
    /// The command could not start or exited unsuccessfully.
    fn zfs(&self, args: &[String]) -> Result<String, ZfsError>;
}

/// The `zfs` command found on `PATH`.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommandZfs;

impl ZfsSys for CommandZfs {
    fn zfs(&self, args: &[String]) -> Result<String, ZfsError> {
        let output = Command::new("zfs")
            .args(args)
            .output()
            .map_err(ZfsError::Spawn)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(ZfsError::Failed {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }
}

#[cfg(test)]
pub(crate) mod fake;
