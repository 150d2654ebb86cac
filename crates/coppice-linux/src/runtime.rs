//! [`NamespaceRuntime`]: `coppice_core::Runtime` over Linux namespaces, cgroups and the
//! `coppice-init` process.
//!
//! Per sandbox, `<run_dir>/<id>/` holds `init.json` (what the init builds), `state.json`
//! (PID 1's host pid and start time, for re-adoption after a daemon restart), `port/` (bound
//! at the sandbox's `/.coppice`: its control and envd sockets, and the binaries its init and
//! envd run from), `dev/` (bound at the sandbox's `/dev`), `limits.json` (its cgroup limits,
//! to make the cgroups again for a restore after a host restart), `checkpoint/` while it is
//! paused durably, and `root/`, the mount point the root is assembled on (mounted only inside
//! the sandbox's own mount namespace).

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use coppice_core::SandboxId;
use coppice_core::exec::{ExecOutcome, ExecRequest};
use coppice_core::net::NetAttachment;
use coppice_core::runtime::{
    Probe, RootDir, Runtime, RuntimeError, RuntimeSandbox, RuntimeSpec, SandboxEndpoints,
};
use coppice_core::storage::RootFs;
use serde::{Deserialize, Serialize};

use coppice_init::records::{read_json, sandbox_dirs, write_json};

use crate::cgroup::{SandboxCgroups, limit_writes};
use crate::config::NamespaceRuntimeConfig;
use crate::error::LinuxError;
use crate::mount_plan;
use crate::protocol::{
    CONTROL_SOCKET, DEV_DIR, ENVD_SOCKET, EnvdLaunch, INIT_CONFIG_VERSION, InitConfig,
    NetworkSetup, PORT_DIR, ReadyMessage,
};
use crate::sys::NsSys;

const INIT_CONFIG: &str = "init.json";
const STATE: &str = "state.json";
/// Where envd keeps `/init`'s settings inside the sandbox (a tmpfs: they last as long as the
/// sandbox runs, across envd restarts).
const ENVD_STATE_FILE: &str = "/run/coppice-envd/settings.json";
const ROOT_MOUNT_POINT: &str = "root";
/// Longest a freeze may take before it is undone (busy tasks need a moment to stop).
const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest `/tmp` per sandbox; smaller sandboxes get their memory size (tmpfs is charged to
/// the sandbox's memory cgroup either way).
const MAX_TMP_MB: u32 = 1024;

/// What `limits.json` holds: the cgroup limits, to make the cgroups again for a restore
/// after the host restarted (they do not outlive it).
#[derive(Debug, Serialize, Deserialize)]
struct RunLimits {
    memory_mb: u32,
    max_pids: u32,
    vcpus: u32,
}

const LIMITS: &str = "limits.json";

/// What `state.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct RunState {
    pid: i32,
    start_time: u64,
}

/// The Linux namespace runtime.
#[derive(Debug)]
pub struct NamespaceRuntime<S: NsSys> {
    sys: Arc<S>,
    config: NamespaceRuntimeConfig,
    proc_self_cgroup: String,
}

#[cfg(target_os = "linux")]
impl NamespaceRuntime<crate::sys::RealNsSys> {
    /// A runtime over the real kernel. Makes this process a child subreaper, so that the
    /// sandbox inits it starts are reaped by it when they exit.
    ///
    /// # Errors
    /// The run dir cannot be created, `/proc/self/cgroup` cannot be read, or a required
    /// cgroup controller is missing.
    pub fn new(config: NamespaceRuntimeConfig) -> Result<Self, LinuxError> {
        Self::with_sys(Arc::new(crate::sys::RealNsSys::default()), config)
    }
}

impl<S: NsSys> NamespaceRuntime<S> {
    /// A runtime over `sys` (a fake in tests).
    ///
    /// # Errors
    /// As [`NamespaceRuntime::new`].
    pub fn with_sys(sys: Arc<S>, config: NamespaceRuntimeConfig) -> Result<Self, LinuxError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.run_dir)
            .map_err(|source| LinuxError::RunDir {
                op: "create",
                path: config.run_dir.clone(),
                source,
            })?;
        let proc_self_cgroup =
            fs::read_to_string(&config.cgroup.proc_self_cgroup).map_err(|source| {
                LinuxError::RunDir {
                    op: "read",
                    path: config.cgroup.proc_self_cgroup.clone(),
                    source,
                }
            })?;
        SandboxCgroups::group_dirs(&config.cgroup, &proc_self_cgroup)?;
        if config.favor_dynamic_cgroups
            && let Some(unified) = config
                .cgroup
                .unified_root
                .as_deref()
                .filter(|root| root.is_dir())
        {
            match sys.favor_dynamic_cgroups(unified) {
                Ok(true) => {
                    tracing::info!(mount = %unified.display(), "cgroup2 set to favordynmods")
                }
                Ok(false) => {
                    tracing::info!("kernel lacks favordynmods; sandbox starts pay RCU waits")
                }
                Err(error) => tracing::warn!(error = %error, "cannot set favordynmods"),
            }
        }
        sys.become_subreaper()
            .map_err(|source| LinuxError::Process {
                op: "become subreaper of",
                pid: 0,
                source,
            })?;
        Ok(Self {
            sys,
            config,
            proc_self_cgroup,
        })
    }

    fn sandbox_dir(&self, id: &SandboxId) -> PathBuf {
        self.config.run_dir.join(id.as_str())
    }

    fn cgroups(&self, id: &SandboxId) -> Result<SandboxCgroups, LinuxError> {
        Ok(SandboxCgroups::plan(
            &self.config.cgroup,
            &self.proc_self_cgroup,
            id,
        )?)
    }

    fn endpoints(&self, id: &SandboxId) -> SandboxEndpoints {
        let port = self.sandbox_dir(id).join(PORT_DIR);
        SandboxEndpoints {
            control_socket: port.join(CONTROL_SOCKET),
            envd_socket: port.join(ENVD_SOCKET),
        }
    }

    fn read_state(&self, id: &SandboxId) -> Result<Option<RunState>, LinuxError> {
        Ok(read_json(&self.sandbox_dir(id).join(STATE))?)
    }

    /// Whether the recorded PID 1 still runs (same pid and start time, not a zombie).
    fn init_alive(&self, state: &RunState) -> Result<bool, LinuxError> {
        let start_time =
            self.sys
                .process_start_time(state.pid)
                .map_err(|source| LinuxError::Process {
                    op: "inspect",
                    pid: state.pid,
                    source,
                })?;
        Ok(start_time == Some(state.start_time))
    }

    fn create_impl(
        &self,
        id: &SandboxId,
        spec: &RuntimeSpec,
        root: &RootFs,
    ) -> Result<(), LinuxError> {
        let dir = self.sandbox_dir(id);
        let mount_point = dir.join(ROOT_MOUNT_POINT);
        let tmp_mb = spec.memory_mb.min(MAX_TMP_MB);
        let mounts = mount_plan::plan(
            root,
            &spec.volumes,
            &self.config.host_dev,
            &dir.join(DEV_DIR),
            tmp_mb,
        )?;
        let cgroups = self.cgroups(id)?;
        fs::create_dir_all(&mount_point).map_err(|source| LinuxError::RunDir {
            op: "create",
            path: mount_point.clone(),
            source,
        })?;
        cgroups.create(&limit_writes(spec.memory_mb, spec.max_pids, spec.vcpus))?;
        write_json(
            &dir.join(LIMITS),
            &RunLimits {
                memory_mb: spec.memory_mb,
                max_pids: spec.max_pids,
                vcpus: spec.vcpus,
            },
        )?;
        let (network, resolv_conf) = match &spec.network {
            NetAttachment::LoopbackOnly => (NetworkSetup::Loopback, None),
            NetAttachment::Namespace {
                path,
                user,
                dns,
                restore_device,
                ..
            } => (
                NetworkSetup::Join {
                    path: path.clone(),
                    user: user.clone(),
                    restore_device: restore_device.clone(),
                },
                resolv_conf(dns),
            ),
            // Refused in `create` before anything is made.
            NetAttachment::Vnet { .. } => (NetworkSetup::Loopback, None),
        };
        let init = InitConfig {
            version: INIT_CONFIG_VERSION,
            sandbox_id: id.to_string(),
            hostname: spec.hostname.clone(),
            rootfs: mount_point,
            mounts,
            cgroup_procs: cgroups.procs_files(),
            port_dir: dir.join(PORT_DIR),
            init_program: self.config.init.program.clone(),
            init_leading_args: self.config.init.leading_args.clone(),
            network,
            resolv_conf,
            host_uid_base: self.config.id_map.host_uid_base,
            host_gid_base: self.config.id_map.host_gid_base,
            id_count: self.config.id_map.count,
            env: spec.env.clone(),
            exec_output_limit: self.config.exec_output_limit,
            envd: self.config.envd.as_ref().map(|envd| EnvdLaunch {
                binary: envd.binary.clone(),
                args: envd.args_for(
                    id.as_str(),
                    ENVD_STATE_FILE,
                    spec.defaults.user.as_deref(),
                    spec.defaults.workdir.as_deref(),
                ),
            }),
        };
        Ok(write_json(&dir.join(INIT_CONFIG), &init)?)
    }

    fn start_impl(&self, id: &SandboxId) -> Result<SandboxEndpoints, LinuxError> {
        let dir = self.sandbox_dir(id);
        let config_path = dir.join(INIT_CONFIG);
        self.fresh_port_and_dev(&dir)?;
        // A fresh boot diverges from any checkpoint of an earlier run.
        checkpoint::forget(&dir)?;
        let ready = self
            .sys
            .spawn_init(&self.config.init, &config_path, self.config.start_timeout);
        let pid = self.reported_pid(ready, |message| LinuxError::InitFailed { message })?;
        self.record_init(&dir, pid)?;
        Ok(self.endpoints(id))
    }

    /// The pid an init (or the restore helper) reported; `failed` makes its reported failure
    /// an error.
    fn reported_pid(
        &self,
        ready: io::Result<Option<ReadyMessage>>,
        failed: impl FnOnce(String) -> LinuxError,
    ) -> Result<i32, LinuxError> {
        let ready = ready.map_err(|source| LinuxError::SpawnInit {
            binary: self.config.init.program.clone(),
            source,
        })?;
        match ready {
            Some(ReadyMessage::Ready { pid }) => Ok(pid),
            Some(ReadyMessage::Failed { error }) => Err(failed(error)),
            None => Err(LinuxError::InitTimeout),
        }
    }

    /// Records a new PID 1 (its pid and start time) in `state.json`, for re-adoption.
    fn record_init(&self, dir: &std::path::Path, pid: i32) -> Result<(), LinuxError> {
        let start_time = self
            .sys
            .process_start_time(pid)
            .map_err(|source| LinuxError::Process {
                op: "inspect",
                pid,
                source,
            })?
            .ok_or(LinuxError::InitFailed {
                message: format!("init {pid} exited right after start"),
            })?;
        Ok(write_json(&dir.join(STATE), &RunState { pid, start_time })?)
    }

    /// Empties the port and `/dev` directories a previous boot of the sandbox left: the port
    /// owned by sandbox root (PID 1 binds its sockets there), `/dev` by host root.
    fn fresh_port_and_dev(&self, dir: &std::path::Path) -> Result<(), LinuxError> {
        let ids = &self.config.id_map;
        for (name, mode, owner) in [
            (
                PORT_DIR,
                0o700,
                Some((ids.host_uid_base, ids.host_gid_base)),
            ),
            (DEV_DIR, 0o755, None),
        ] {
            let path = dir.join(name);
            let run_dir = |op, source| LinuxError::RunDir {
                op,
                path: path.clone(),
                source,
            };
            remove_all(&path)?;
            fs::DirBuilder::new()
                .mode(mode)
                .create(&path)
                .map_err(|source| run_dir("create", source))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(|source| run_dir("chown", source))?;
            }
        }
        Ok(())
    }

    /// SIGKILLs every process in the sandbox's cgroups (without waiting).
    fn kill_cgroup_processes(&self, cgroups: &SandboxCgroups) -> Result<(), LinuxError> {
        if cgroups.kill_all()? {
            // A frozen (paused) sandbox's processes die only once thawed.
            cgroups.set_frozen(false)?;
        } else if !cgroups.pids()?.is_empty() {
            // No cgroup2 kill on this host: freeze so nothing forks while we signal, then thaw
            // so the signals are delivered.
            cgroups.set_frozen(true)?;
            let signalled = cgroups.pids().map_err(LinuxError::from).and_then(|pids| {
                pids.into_iter().try_for_each(|pid| {
                    self.sys.kill(pid).map_err(|source| LinuxError::Process {
                        op: "kill",
                        pid,
                        source,
                    })
                })
            });
            // Thaw whatever happened: a frozen sandbox left behind could never be killed.
            cgroups.set_frozen(false)?;
            signalled?;
        }
        Ok(())
    }

    /// Whether the sandbox's cgroups hold no process, waiting up to the stop timeout.
    fn cgroups_emptied(&self, cgroups: &SandboxCgroups) -> Result<bool, LinuxError> {
        let deadline = Instant::now() + self.config.stop_timeout;
        let mut pause = Duration::from_micros(50);
        while !cgroups.pids()?.is_empty() {
            if Instant::now() >= deadline {
                return Ok(false);
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        Ok(true)
    }

    fn destroy_impl(&self, id: &SandboxId) -> Result<(), LinuxError> {
        let cgroups = self.cgroups(id)?;
        let state = self.read_state(id)?;
        self.kill_cgroup_processes(&cgroups)?;
        if let Some(state) = &state {
            // Only a process with the recorded start time is the init: after a restart its pid
            // may belong to someone else by now.
            if self.init_alive(state)? {
                self.sys
                    .kill(state.pid)
                    .map_err(|source| LinuxError::Process {
                        op: "kill",
                        pid: state.pid,
                        source,
                    })?;
                self.sys
                    .wait_exit(state.pid, self.config.stop_timeout)
                    .map_err(|source| LinuxError::Process {
                        op: "wait for",
                        pid: state.pid,
                        source,
                    })?;
            }
            // The init is a zombie now; collect it (it is our child when this process started it).
            self.sys.reap(state.pid);
        }
        let deadline = Instant::now() + self.config.stop_timeout;
        let mut pause = Duration::from_micros(50);
        loop {
            let init_gone = match &state {
                Some(state) => !self.init_alive(state)?,
                None => true,
            };
            if init_gone && cgroups.pids()?.is_empty() {
                match cgroups.remove(&|dir| self.sys.remove_cgroup(dir)) {
                    Ok(()) => break,
                    Err(error) if Instant::now() >= deadline => return Err(error.into()),
                    Err(_) => {}
                }
            } else if Instant::now() >= deadline {
                return Err(LinuxError::StopTimeout);
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        // Collect the init once its whole thread group is gone: a zombie leader whose threads
        // are still exiting cannot be reaped yet, so the reap above may have come too early.
        if let Some(state) = &state {
            self.sys.reap(state.pid);
        }
        remove_all(&self.sandbox_dir(id))
    }

    /// Freezes or thaws every process of a live sandbox through its freezer cgroup.
    fn set_frozen(&self, id: &SandboxId, frozen: bool) -> Result<(), RuntimeError> {
        let op = if frozen { "freeze" } else { "thaw" };
        match self.read_state(id) {
            Ok(Some(state)) if self.init_alive(&state).unwrap_or(false) => {}
            Ok(_) => return Err(RuntimeError::NotFound { id: id.clone() }),
            Err(error) => return Err(backend(op, id, error)),
        }
        self.cgroups(id)
            .and_then(|cgroups| Ok(cgroups.set_frozen_and_wait(frozen, FREEZE_TIMEOUT)?))
            .map_err(|error| backend(op, id, error))
    }

    fn list_impl(&self) -> Result<Vec<RuntimeSandbox>, LinuxError> {
        let mut ids = SandboxCgroups::group_dirs(&self.config.cgroup, &self.proc_self_cgroup)?
            .list_sandboxes()?;
        ids.extend(sandbox_dirs(&self.config.run_dir)?);
        ids.sort();
        ids.dedup();
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            let alive = match self.read_state(&id) {
                Ok(Some(state)) => self.init_alive(&state)?,
                Ok(None) | Err(LinuxError::Corrupt { .. }) => false,
                Err(error) => return Err(error),
            };
            found.push(RuntimeSandbox { id, alive });
        }
        Ok(found)
    }
}

/// Removes a run-dir file tree; one already gone is not an error.
fn remove_all(path: &std::path::Path) -> Result<(), LinuxError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LinuxError::RunDir {
            op: "remove",
            path: path.to_owned(),
            source,
        }),
    }
}

fn backend(op: &'static str, id: &SandboxId, error: LinuxError) -> RuntimeError {
    match error {
        LinuxError::Refused { message } => RuntimeError::Invalid {
            what: "command",
            reason: message,
        },
        LinuxError::Plan(source) => RuntimeError::Invalid {
            what: "root filesystem",
            reason: source.to_string(),
        },
        error => RuntimeError::Backend {
            op,
            id: id.clone(),
            source: Box::new(error),
        },
    }
}

impl<S: NsSys> Runtime for NamespaceRuntime<S> {
    fn create(
        &self,
        id: &SandboxId,
        spec: &RuntimeSpec,
        root: &RootFs,
    ) -> Result<(), RuntimeError> {
        if matches!(spec.network, NetAttachment::Vnet { .. }) {
            return Err(RuntimeError::Unsupported {
                what: "a VNET interface (FreeBSD's network attachment)",
            });
        }
        if matches!(root, RootFs::Disk { .. }) {
            return Err(RuntimeError::Unsupported {
                what: "a disk root (a virtual machine's)",
            });
        }
        let dir = self.sandbox_dir(id);
        // Root-only: the run dir holds the control socket and the init's config.
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                return Err(RuntimeError::AlreadyExists { id: id.clone() });
            }
            Err(source) => {
                return Err(backend(
                    "create",
                    id,
                    LinuxError::RunDir {
                        op: "create",
                        path: dir,
                        source,
                    },
                ));
            }
        }
        self.create_impl(id, spec, root).map_err(|error| {
            if let Err(cleanup) = self.destroy_impl(id) {
                tracing::warn!(sandbox_id = %id, error = %coppice_core::manager::error_chain(&cleanup), "cleanup after failed create");
            }
            backend("create", id, error)
        })
    }

    fn start(&self, id: &SandboxId) -> Result<SandboxEndpoints, RuntimeError> {
        if !self.sandbox_dir(id).join(INIT_CONFIG).is_file() {
            return Err(RuntimeError::NotFound { id: id.clone() });
        }
        let started = Instant::now();
        let endpoints = self
            .start_impl(id)
            .map_err(|error| backend("start", id, error))?;
        tracing::debug!(sandbox_id = %id, elapsed_us = started.elapsed().as_micros(), "sandbox init ready");
        Ok(endpoints)
    }

    fn exec(&self, id: &SandboxId, request: &ExecRequest) -> Result<ExecOutcome, RuntimeError> {
        match self.read_state(id) {
            Ok(Some(state)) if self.init_alive(&state).unwrap_or(false) => {}
            Ok(_) => return Err(RuntimeError::NotFound { id: id.clone() }),
            Err(error) => return Err(backend("exec", id, error)),
        }
        coppice_init::client::exec_for(
            id,
            &self.endpoints(id).control_socket,
            request,
            self.config.exec_output_limit,
        )
    }

    fn probe(&self, id: &SandboxId) -> Result<Probe, RuntimeError> {
        let state = self
            .read_state(id)
            .map_err(|error| backend("probe", id, error))?;
        let Some(state) = state else {
            return Err(RuntimeError::NotFound { id: id.clone() });
        };
        let alive = self
            .init_alive(&state)
            .map_err(|error| backend("probe", id, error))?;
        let cgroups = self
            .cgroups(id)
            .map_err(|error| backend("probe", id, error))?;
        let counters = || -> Result<(u64, u64, u64), LinuxError> {
            Ok((
                cgroups.oom_kills()?,
                cgroups.memory_bytes()?,
                cgroups.pids_current()?,
            ))
        };
        let (oom_kills, memory_bytes, pids) =
            counters().map_err(|error| backend("probe", id, error))?;
        Ok(Probe {
            alive,
            oom_kills,
            memory_bytes,
            pids,
        })
    }

    fn freeze(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.set_frozen(id, true)
    }

    fn thaw(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.set_frozen(id, false)
    }

    fn checkpoint(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.checkpoint_impl(id)
    }

    fn has_checkpoint(&self, id: &SandboxId) -> bool {
        self.has_checkpoint_impl(id)
    }

    fn host_memory(&self) -> Option<coppice_core::runtime::HostMemory> {
        let text = fs::read_to_string(crate::meminfo::MEMINFO).ok()?;
        crate::meminfo::parse(&text)
    }

    fn restore(&self, id: &SandboxId) -> Result<SandboxEndpoints, RuntimeError> {
        self.restore_impl(id)
    }

    fn destroy(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.destroy_impl(id)
            .map_err(|error| backend("destroy", id, error))
    }

    fn list(&self) -> Result<Vec<RuntimeSandbox>, RuntimeError> {
        self.list_impl().map_err(|error| RuntimeError::Host {
            op: "list",
            source: Box::new(error),
        })
    }

    fn root_dir(&self, id: &SandboxId) -> Result<RootDir, RuntimeError> {
        let state = self
            .read_state(id)
            .map_err(|error| backend("find the root of", id, error))?
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
        // PID 1's root is the sandbox's root, with every mount of the sandbox in it. It is
        // opened first and the pid checked after: a process with the recorded start time that
        // lives after the open was PID 1 during it, so the descriptor is its root and never
        // that of a process that took the pid over.
        let root = self
            .sys
            .open_root(state.pid)
            .map_err(|_| RuntimeError::NotFound { id: id.clone() })?;
        if !self
            .init_alive(&state)
            .map_err(|error| backend("find the root of", id, error))?
        {
            return Err(RuntimeError::NotFound { id: id.clone() });
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&root);
        Ok(RootDir::held(
            PathBuf::from(format!("/proc/self/fd/{fd}")),
            root,
        ))
    }

    fn id_map(&self) -> coppice_core::volume::IdMap {
        coppice_core::volume::IdMap {
            uid_base: self.config.id_map.host_uid_base,
            gid_base: self.config.id_map.host_gid_base,
            count: self.config.id_map.count,
        }
    }
}

mod checkpoint;
#[cfg(test)]
mod tests;

/// The resolver configuration for `dns`, or `None` to leave the root's own file alone.
fn resolv_conf(dns: &[std::net::IpAddr]) -> Option<String> {
    if dns.is_empty() {
        return None;
    }
    let mut text = String::from("# Written by coppice at every boot of this sandbox.\n");
    for server in dns {
        text.push_str(&format!("nameserver {server}\n"));
    }
    text.push_str("options edns0\n");
    Some(text)
}
