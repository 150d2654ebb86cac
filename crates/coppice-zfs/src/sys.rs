//! The seam between the plan and the host: carrying out a [`ZfsOp`], by default with the
//! `zfs` command.

use std::io;
use std::process::Command;

use crate::command::ZfsOp;

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
    /// A libzfs_core call failed with an errno.
    #[error("{call} failed: {source}")]
    Lzc {
        /// The call.
        call: &'static str,
        /// The errno, as an I/O error.
        #[source]
        source: io::Error,
    },
}

fn errno_is(error: &ZfsError, errnos: &[i32]) -> bool {
    matches!(error, ZfsError::Lzc { source, .. }
        if source.raw_os_error().is_some_and(|errno| errnos.contains(&errno)))
}

impl ZfsError {
    /// Whether `zfs` said the dataset does not exist.
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::Failed { stderr, .. } if stderr.contains("does not exist"))
            || errno_is(self, &[libc::ENOENT])
    }

    /// Whether `zfs` said the pool or a quota is out of space.
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, Self::Failed { stderr, .. }
            if stderr.contains("out of space") || stderr.contains("quota exceeded"))
            || errno_is(self, &[libc::ENOSPC, libc::EDQUOT])
    }

    /// Whether `zfs` said the dataset already exists.
    pub fn is_existing(&self) -> bool {
        matches!(self, Self::Failed { stderr, .. } if stderr.contains("already exists"))
            || errno_is(self, &[libc::EEXIST])
    }
}

/// Carries out ZFS operations. Implemented by [`CommandZfs`] on hosts, by the libzfs_core
/// path where the `libzfs-core` feature is on, and by recording fakes in tests.
pub trait ZfsSys: Send + Sync + 'static {
    /// Carries out `op`; the output of a [`ZfsOp::List`], empty for the others.
    ///
    /// # Errors
    /// The operation failed.
    fn zfs(&self, op: &ZfsOp<'_>) -> Result<String, ZfsError>;
}

/// The `zfs` command found on `PATH`.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommandZfs;

impl CommandZfs {
    fn run(args: &[String]) -> Result<String, ZfsError> {
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

    /// `zfs mount <dataset>`, for a filesystem made without mounting it.
    #[cfg(feature = "libzfs-core")]
    fn mount(&self, dataset: &str) -> Result<String, ZfsError> {
        Self::run(&["mount".to_owned(), dataset.to_owned()])
    }
}

impl ZfsSys for CommandZfs {
    fn zfs(&self, op: &ZfsOp<'_>) -> Result<String, ZfsError> {
        Self::run(&op.argv())
    }
}

#[cfg(test)]
pub(crate) mod fake;
#[cfg(feature = "libzfs-core")]
mod lzc;

#[cfg(feature = "libzfs-core")]
pub use lzc::LzcZfs;
