//! Durable pause of a namespace sandbox: `checkpoint` dumps its process tree with CRIU into
//! the run dir's `checkpoint/` and ends it; `restore` brings the tree back through the init's
//! restore helper. The filesystem (the overlay's upper layer) stays where it is throughout.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use coppice_core::SandboxId;
use coppice_core::runtime::{RuntimeError, SandboxEndpoints};
use coppice_init::records::read_json;

use super::{INIT_CONFIG, LIMITS, NamespaceRuntime, RunLimits, STATE, backend, remove_all};
use crate::cgroup::limit_writes;
use crate::checkpoint::{
    DUMP_LOG, check, dump_args, external_mounts, log_errors, post_dump_script,
};
use crate::error::LinuxError;
use crate::protocol::InitConfig;
use crate::sys::NsSys;

/// The checkpoint's directory in the run dir.
const CHECKPOINT_DIR: &str = "checkpoint";
/// Written into the checkpoint's directory by CRIU's post-dump action once every image is
/// written: a dump cut short is never restored, and one the daemon did not see finish (it
/// died meanwhile) still is.
const COMPLETE: &str = "complete";
/// What `complete` becomes while a restore runs: a restore the daemon did not see finish
/// leaves no checkpoint that a second restore could bring back beside the first.
const RESTORING: &str = "restoring";
/// The action script in the checkpoint's directory.
const POST_DUMP: &str = "post-dump.sh";
/// Longest wait for a restore (memory read back from disk: seconds per gigabyte).
const RESTORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

impl<S: NsSys> NamespaceRuntime<S> {
    fn images(&self, id: &SandboxId) -> PathBuf {
        self.sandbox_dir(id).join(CHECKPOINT_DIR)
    }

    fn criu(&self) -> Result<&Path, RuntimeError> {
        self.config
            .criu
            .as_deref()
            .ok_or(RuntimeError::Unsupported {
                what: "pausing durably with memory without CRIU",
            })
    }

    pub(super) fn checkpoint_impl(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        let criu = self.criu()?;
        let dir = self.sandbox_dir(id);
        let state = match self.read_state(id) {
            Ok(Some(state)) if self.init_alive(&state).unwrap_or(false) => state,
            Ok(_) => return Err(RuntimeError::NotFound { id: id.clone() }),
            Err(error) => return Err(backend("checkpoint", id, error)),
        };
        let dump = || -> Result<(), LinuxError> {
            let config: InitConfig =
                read_json(&dir.join(INIT_CONFIG))?.ok_or_else(|| LinuxError::InitFailed {
                    message: "the sandbox has no init config".into(),
                })?;
            check(&config)?;
            let images = self.images(id);
            remove_all(&images)?;
            fs::create_dir(&images).map_err(|source| run_dir("create", &images, source))?;
            let script = images.join(POST_DUMP);
            fs::write(&script, post_dump_script(&images.join(COMPLETE)))
                .and_then(|()| fs::set_permissions(&script, fs::Permissions::from_mode(0o700)))
                .map_err(|source| run_dir("write", &script, source))?;
            let args = dump_args(state.pid, &images, &script, &external_mounts(&config));
            // CRIU stops the tree itself; a frozen tree (an in-memory pause) runs again first,
            // so that it can notice connections the daemon closed.
            let cgroups = self.cgroups(id)?;
            let was_frozen = cgroups.is_frozen()?;
            cgroups.set_frozen(false)?;
            if let Err(error) = self.sys.run_criu(criu, &args) {
                let message = format!("{error}: {}", log_errors(&images.join(DUMP_LOG)));
                // CRIU let the tree go on: no checkpoint (a failure after the post-dump stage
                // left the marker), and the tree goes back to the state it was found in.
                let unmarked = remove_file(&images.join(COMPLETE));
                if was_frozen {
                    cgroups.set_frozen_and_wait(true, super::FREEZE_TIMEOUT)?;
                }
                unmarked?;
                return Err(LinuxError::Checkpoint {
                    op: "dump",
                    message,
                });
            }
            // CRIU ended the tree once its images were written.
            let _ = self.sys.wait_exit(state.pid, self.config.stop_timeout);
            self.sys.reap(state.pid);
            if !images.join(COMPLETE).is_file() {
                fs::write(images.join(COMPLETE), b"")
                    .map_err(|source| run_dir("write", &images, source))?;
            }
            remove_file(&dir.join(STATE))
        };
        dump().map_err(|error| match error {
            LinuxError::NotCheckpointable(reason) => RuntimeError::Invalid {
                what: "durable pause",
                reason: reason.to_string(),
            },
            error => backend("checkpoint", id, error),
        })
    }

    pub(super) fn has_checkpoint_impl(&self, id: &SandboxId) -> bool {
        self.images(id).join(COMPLETE).is_file()
    }

    pub(super) fn restore_impl(&self, id: &SandboxId) -> Result<SandboxEndpoints, RuntimeError> {
        let criu = self.criu()?;
        if !self.has_checkpoint_impl(id) {
            return Err(RuntimeError::NotFound { id: id.clone() });
        }
        let dir = self.sandbox_dir(id);
        let images = self.images(id);
        let (complete, restoring) = (images.join(COMPLETE), images.join(RESTORING));
        fs::rename(&complete, &restoring)
            .map_err(|source| backend("restore", id, run_dir("mark", &complete, source)))?;
        let restore = || -> Result<(), LinuxError> {
            let cgroups = self.cgroups(id)?;
            // After a restart of the host the cgroups are gone: made again, with the limits
            // the sandbox was created with.
            if let Some(limits) = read_json::<RunLimits>(&dir.join(LIMITS))? {
                cgroups.create(&limit_writes(
                    limits.memory_mb,
                    limits.max_pids,
                    limits.vcpus,
                ))?;
            }
            // Restored processes join these; a freezer left frozen would stop them at once.
            cgroups.set_frozen(false)?;
            let ready = self.sys.restore_init(
                &self.config.init,
                &dir.join(INIT_CONFIG),
                &images,
                criu,
                RESTORE_TIMEOUT,
            );
            let pid = self.reported_pid(ready, |message| LinuxError::Checkpoint {
                op: "restore",
                message,
            })?;
            self.record_init(&dir, pid)
        };
        if let Err(error) = restore() {
            // Whatever CRIU got running goes; only once nothing runs is the checkpoint good
            // again (else it stays marked as restoring, never to be restored beside a copy).
            let emptied = self.cgroups(id).and_then(|cgroups| {
                self.kill_cgroup_processes(&cgroups)?;
                self.cgroups_emptied(&cgroups)
            });
            match emptied {
                Ok(true) => {
                    if let Err(unmark) = fs::rename(&restoring, &complete) {
                        tracing::warn!(sandbox_id = %id, error = %unmark, "cannot mark a checkpoint restorable again");
                    }
                }
                Ok(false) => {
                    tracing::warn!(sandbox_id = %id, "processes of a failed restore outlived the kill; its checkpoint is given up");
                }
                Err(cleanup) => {
                    tracing::warn!(sandbox_id = %id, error = %coppice_core::manager::error_chain(&cleanup), "cannot clean up a failed restore; its checkpoint is given up");
                }
            }
            return Err(backend("restore", id, error));
        }
        // The tree runs on and diverges: its checkpoint must never be restored again (it is
        // marked as restoring, so a leftover is never taken for one).
        if let Err(error) = remove_all(&images) {
            tracing::warn!(sandbox_id = %id, error = %coppice_core::manager::error_chain(&error), "cannot remove a restored checkpoint");
        }
        Ok(self.endpoints(id))
    }
}

/// Removes the checkpoint in the run dir `dir`, if any.
pub(super) fn forget(dir: &Path) -> Result<(), LinuxError> {
    remove_all(&dir.join(CHECKPOINT_DIR))
}

fn run_dir(op: &'static str, path: &Path, source: io::Error) -> LinuxError {
    LinuxError::RunDir {
        op,
        path: path.to_owned(),
        source,
    }
}

fn remove_file(path: &Path) -> Result<(), LinuxError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(run_dir("remove", path, source)),
    }
}
