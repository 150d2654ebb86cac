//! [`JailRuntime`]: `coppice_core::Runtime` over jails. Per sandbox, `<run_dir>/<id>/` holds
//! `jail.json` (what the jail is made of, written before anything is made, so a crash at any
//! point leaves a record that `destroy` and `list` find), `control.sock` and `envd.sock`.
//!
//! - create: the jail ([`JailHost`]: devfs, `jail_set`, rctl rules), volumes as nullfs mounts,
//!   the VNET link handed over ([`crate::vnet`]), `/etc/resolv.conf`; any failure undoes all.
//! - start: the host binds both sockets and opens the init and envd binaries, starts the init
//!   inside the jail ([`JailSys::start_init`]) and hands it those descriptors
//!   ([`crate::launch`]); the init answers once it serves.
//! - destroy: the link given back, the jail removed (which kills every process in it), its
//!   rules and mounts gone, the record last.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use coppice_core::SandboxId;
use coppice_core::exec::{ExecOutcome, ExecRequest};
use coppice_core::net::NetAttachment;
use coppice_core::runtime::{
    Probe, RootDir, Runtime, RuntimeError, RuntimeSandbox, RuntimeSpec, SandboxEndpoints,
};
use coppice_core::storage::{BindMount, RootFs};
use coppice_init::records::{RecordError, read_json, sandbox_dirs, write_json};
pub use coppice_init::settings::EnvdSettings;
use serde::{Deserialize, Serialize};

use crate::host::{JailError, JailHost};
use crate::launch::{self, InitReport, JAIL_INIT_VERSION, JailInitConfig};
use crate::params::{JailName, JailSpec};
use crate::rctl::{JailLimits, parse_usage, usage_command};
use crate::sys::JailSys;
use crate::vnet::{self, VnetLink};

const RECORD: &str = "jail.json";
const CONTROL_SOCKET: &str = "control.sock";
const ENVD_SOCKET: &str = "envd.sock";
/// Where envd keeps `/init`'s settings inside the sandbox.
const ENVD_STATE_FILE: &str = "/var/run/coppice-envd/settings.json";
/// Longest a probe waits for the init's pong.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// How to start the jail init: a program and the arguments before none of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailInitProgram {
    /// The `coppice-jail-init` binary, or a binary with a jail-init mode.
    pub program: PathBuf,
    /// Its arguments (e.g. the mode's sub-command).
    pub leading_args: Vec<String>,
}

/// Settings of [`JailRuntime`].
#[derive(Debug, Clone)]
pub struct JailRuntimeConfig {
    /// Per-sandbox records and sockets live here.
    pub run_dir: PathBuf,
    /// How to start the init.
    pub init: JailInitProgram,
    /// envd, started in every sandbox when set.
    pub envd: Option<EnvdSettings>,
    /// The devfs ruleset of every sandbox's `/dev` (loaded at start).
    pub devfs_ruleset: u16,
    /// Every jail's securelevel.
    pub securelevel: i32,
    /// Longest wait for a new init's report.
    pub start_timeout: Duration,
    /// Most bytes of stdout and of stderr kept from one control-path exec.
    pub exec_output_limit: usize,
}

impl JailRuntimeConfig {
    /// Defaults for a daemon whose state lives under `run_dir`, starting inits with `init`.
    pub fn new(run_dir: PathBuf, init: JailInitProgram) -> Self {
        Self {
            run_dir,
            init,
            envd: None,
            devfs_ruleset: crate::devfs::DEFAULT_RULESET,
            securelevel: 2,
            start_timeout: Duration::from_secs(10),
            exec_output_limit: 4 << 20,
        }
    }
}

/// What `jail.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JailRecord {
    name: String,
    path: PathBuf,
    hostname: String,
    env: Vec<(String, String)>,
    /// The template's default user and working directory for envd (`None`: envd's own);
    /// absent from records written before they were kept.
    #[serde(default)]
    default_user: Option<String>,
    #[serde(default)]
    default_workdir: Option<String>,
    /// The link handed over at create, if any; reclaimed at destroy.
    link: Option<VnetLink>,
    /// nullfs mount targets on the host, in mount order.
    mounts: Vec<PathBuf>,
}

/// Why a jail runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JailRuntimeError {
    /// Making or removing the jail failed.
    #[error(transparent)]
    Jail(#[from] JailError),
    /// A record could not be read or written.
    #[error(transparent)]
    Record(#[from] RecordError),
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
    /// A step on the host failed.
    #[error("{step} failed")]
    Host {
        /// The step.
        step: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The init reported that it could not start.
    #[error("the jail init failed: {message}")]
    InitFailed {
        /// Its message.
        message: String,
    },
    /// The control channel failed.
    #[error(transparent)]
    Control(#[from] coppice_init::client::ControlError),
}

fn host_step(step: &'static str) -> impl FnOnce(io::Error) -> JailRuntimeError {
    move |source| JailRuntimeError::Host { step, source }
}

/// The jail runtime.
pub struct JailRuntime {
    sys: Arc<dyn JailSys>,
    host: JailHost,
    config: JailRuntimeConfig,
}

impl std::fmt::Debug for JailRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JailRuntime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The jail name of sandbox `id`.
fn jail_name(id: &SandboxId) -> Result<JailName, RuntimeError> {
    JailName::parse(&format!("coppice-{}", id.as_str())).map_err(|error| RuntimeError::Invalid {
        what: "sandbox id",
        reason: error.to_string(),
    })
}

impl JailRuntime {
    /// A runtime over `sys`: makes the run dir and loads the devfs ruleset every jail uses.
    ///
    /// # Errors
    /// Either step failed.
    pub fn new(sys: Arc<dyn JailSys>, config: JailRuntimeConfig) -> Result<Self, JailRuntimeError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.run_dir)
            .map_err(|source| JailRuntimeError::RunDir {
                op: "create",
                path: config.run_dir.clone(),
                source,
            })?;
        let host = JailHost::new(Arc::clone(&sys));
        host.load_devfs_ruleset(config.devfs_ruleset)?;
        Ok(Self { sys, host, config })
    }

    fn sandbox_dir(&self, id: &SandboxId) -> PathBuf {
        self.config.run_dir.join(id.as_str())
    }

    fn endpoints(&self, id: &SandboxId) -> SandboxEndpoints {
        let dir = self.sandbox_dir(id);
        SandboxEndpoints {
            control_socket: dir.join(CONTROL_SOCKET),
            envd_socket: dir.join(ENVD_SOCKET),
        }
    }

    fn spec(&self, record: &JailRecord) -> Result<JailSpec, JailRuntimeError> {
        let name = JailName::parse(&record.name).map_err(|error| JailRuntimeError::Host {
            step: "read the jail's name",
            source: io::Error::new(io::ErrorKind::InvalidData, error),
        })?;
        Ok(JailSpec {
            name,
            path: record.path.clone(),
            hostname: record.hostname.clone(),
            devfs_ruleset: self.config.devfs_ruleset,
            securelevel: self.config.securelevel,
            vnet: true,
        })
    }

    fn read_record(&self, id: &SandboxId) -> Result<Option<JailRecord>, JailRuntimeError> {
        Ok(read_json(&self.sandbox_dir(id).join(RECORD))?)
    }

    fn write_record(&self, id: &SandboxId, record: &JailRecord) -> Result<(), JailRuntimeError> {
        Ok(write_json(&self.sandbox_dir(id).join(RECORD), record)?)
    }

    /// The live jail's id, if the record's jail exists.
    fn live_jid(&self, record: &JailRecord) -> Result<Option<i32>, JailRuntimeError> {
        let spec = self.spec(record)?;
        self.sys
            .jail_id(&spec.name)
            .map_err(host_step("look up the jail"))
    }

    fn create_impl(
        &self,
        id: &SandboxId,
        spec: &RuntimeSpec,
        root: &Path,
        binds: &[BindMount],
    ) -> Result<(), JailRuntimeError> {
        let name = jail_name(id).map_err(|error| JailRuntimeError::Host {
            step: "name the jail",
            source: io::Error::new(io::ErrorKind::InvalidInput, error.to_string()),
        })?;
        let (link, dns) = match &spec.network {
            NetAttachment::Vnet {
                interface,
                mac,
                addresses,
                gateways,
                dns,
            } => (
                Some(VnetLink {
                    interface: interface.clone(),
                    mac: mac.clone(),
                    addresses: addresses.clone(),
                    gateways: gateways.clone(),
                    dns: dns.clone(),
                }),
                dns.clone(),
            ),
            _ => (None, Vec::new()),
        };
        let mut record = JailRecord {
            name: name.as_str().to_owned(),
            path: root.to_owned(),
            hostname: spec.hostname.clone(),
            env: spec.env.clone(),
            default_user: spec.defaults.user.clone(),
            default_workdir: spec.defaults.workdir.clone(),
            link: None,
            mounts: Vec::new(),
        };
        self.write_record(id, &record)?;
        let jail_spec = self.spec(&record)?;
        let limits = JailLimits {
            memory_mb: spec.memory_mb,
            vcpus: spec.vcpus,
            max_procs: spec.max_pids,
        };
        self.host.create(&jail_spec, limits)?;
        for bind in binds.iter().chain(&spec.volumes) {
            let target = volume_target(root, &bind.target).map_err(host_step("place a volume"))?;
            self.sys
                .mount_nullfs(&bind.source, &target, bind.read_only)
                .map_err(host_step("mount a volume"))?;
            record.mounts.push(target);
            self.write_record(id, &record)?;
        }
        for command in vnet::loopback(name.as_str()) {
            self.sys
                .run(&command)
                .map_err(host_step("set up loopback"))?;
        }
        if let Some(link) = link {
            // Recorded first: a link moved half-way in is still reclaimed.
            record.link = Some(link.clone());
            self.write_record(id, &record)?;
            for command in vnet::hand_over(name.as_str(), &link) {
                self.sys
                    .run(&command)
                    .map_err(host_step("hand the link over"))?;
            }
        }
        if !dns.is_empty() {
            write_resolv_conf(root, &vnet::resolv_conf(&dns))
                .map_err(host_step("write /etc/resolv.conf"))?;
        }
        Ok(())
    }

    fn start_impl(&self, id: &SandboxId) -> Result<SandboxEndpoints, JailRuntimeError> {
        let record = self.read_record(id)?.ok_or(JailRuntimeError::Host {
            step: "find the record",
            source: io::ErrorKind::NotFound.into(),
        })?;
        let jid = self.live_jid(&record)?.ok_or(JailRuntimeError::Host {
            step: "find the jail",
            source: io::ErrorKind::NotFound.into(),
        })?;
        let endpoints = self.endpoints(id);
        let bind = |path: &Path| {
            coppice_init::envd::bind_private(path).map_err(|message| JailRuntimeError::Host {
                step: "bind a socket",
                source: io::Error::other(message),
            })
        };
        let control = bind(&endpoints.control_socket)?;
        let envd = match &self.config.envd {
            Some(envd) => Some((
                bind(&endpoints.envd_socket)?,
                fs::File::open(&envd.binary).map_err(host_step("open envd"))?,
                envd.args_for(
                    id.as_str(),
                    ENVD_STATE_FILE,
                    record.default_user.as_deref(),
                    record.default_workdir.as_deref(),
                ),
            )),
            None => None,
        };
        let program =
            fs::File::open(&self.config.init.program).map_err(host_step("open the init"))?;
        let (runtime_end, init_end) =
            launch::channel().map_err(host_step("make the launch channel"))?;
        let argv: Vec<String> = std::iter::once("coppice-jail-init".to_owned())
            .chain(self.config.init.leading_args.iter().cloned())
            .collect();
        self.sys
            .start_init(jid, &program, &argv, init_end)
            .map_err(host_step("start the init in the jail"))?;
        let config = JailInitConfig {
            version: JAIL_INIT_VERSION,
            sandbox_id: id.to_string(),
            env: record.env.clone(),
            exec_output_limit: self.config.exec_output_limit,
            envd_args: envd.as_ref().map(|(_, _, args)| args.clone()),
        };
        let mut fds = vec![control.as_fd()];
        if let Some((listener, binary, _)) = &envd {
            fds.extend([listener.as_fd(), binary.as_fd()]);
        }
        launch::send_config(&runtime_end, &config, &fds)
            .map_err(host_step("hand the init its launch message"))?;
        match launch::receive_report(&runtime_end, self.config.start_timeout)
            .map_err(host_step("wait for the init's report"))?
        {
            InitReport::Ready => Ok(endpoints),
            InitReport::Failed { error } => Err(JailRuntimeError::InitFailed { message: error }),
        }
    }

    /// Undoes everything `create` made for `record`, trying every step; the first failure.
    fn remove(&self, record: &JailRecord) -> Result<(), JailRuntimeError> {
        let spec = self.spec(record)?;
        let mut first: Option<JailRuntimeError> = None;
        if let Some(link) = &record.link
            && self.live_jid(record)?.is_some()
        {
            // Best effort: a link never moved in, or already renamed, makes these fail,
            // and the jail's removal returns it to the host either way.
            for command in vnet::reclaim(spec.name.as_str(), link) {
                if let Err(error) = self.sys.run(&command) {
                    tracing::debug!(jail = spec.name.as_str(), error = %error, "reclaiming the link");
                }
            }
        }
        // The jail first: its removal kills every process that could hold a mount busy.
        if let Err(error) = self.host.remove(&spec) {
            first.get_or_insert(error.into());
        }
        for target in record.mounts.iter().rev() {
            if let Err(error) = self.sys.unmount(target) {
                first.get_or_insert(JailRuntimeError::Host {
                    step: "unmount a volume",
                    source: error,
                });
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn destroy_impl(&self, id: &SandboxId) -> Result<(), JailRuntimeError> {
        if let Some(record) = self.read_record(id)? {
            self.remove(&record)?;
        }
        let dir = self.sandbox_dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(JailRuntimeError::RunDir {
                op: "remove",
                path: dir,
                source,
            }),
        }
    }

    fn list_impl(&self) -> Result<Vec<RuntimeSandbox>, JailRuntimeError> {
        let mut found = Vec::new();
        for id in sandbox_dirs(&self.config.run_dir)? {
            let alive = match self.read_record(&id)? {
                Some(record) => self.live_jid(&record)?.is_some(),
                None => false,
            };
            found.push(RuntimeSandbox { id, alive });
        }
        Ok(found)
    }

    /// The record of a sandbox whose jail lives; `NotFound` otherwise.
    fn live_record(&self, op: &'static str, id: &SandboxId) -> Result<JailRecord, RuntimeError> {
        let record = self
            .read_record(id)
            .map_err(|error| backend(op, id, error))?
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
        match self.live_jid(&record) {
            Ok(Some(_)) => Ok(record),
            Ok(None) => Err(RuntimeError::NotFound { id: id.clone() }),
            Err(error) => Err(backend(op, id, error)),
        }
    }
}

/// The host path of volume target `target` (absolute, inside the sandbox) under `root`,
/// with every missing directory made. No component may be a link or a non-directory:
/// mount(8) follows links, and one planted in a template would put the mount on the host.
///
/// # Errors
/// `target` is not absolute or has `..`, or a component is a link or not a directory.
pub(crate) fn volume_target(root: &Path, target: &Path) -> io::Result<PathBuf> {
    let invalid = |reason: String| io::Error::new(io::ErrorKind::InvalidInput, reason);
    if !target.is_absolute() {
        return Err(invalid(format!("{} is not absolute", target.display())));
    }
    let mut path = root.to_owned();
    for component in target.components() {
        match component {
            Component::RootDir | Component::CurDir => continue,
            Component::Normal(name) => path.push(name),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(invalid(format!("{} leaves the root", target.display())));
            }
        }
        match fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.file_type().is_dir() => {}
            Ok(_) => {
                return Err(invalid(format!(
                    "{} is a link or not a directory",
                    path.display()
                )));
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new().mode(0o755).create(&path)?;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(path)
}

/// Writes `<root>/etc/resolv.conf` unless the sandbox made `/etc` or that file a link (or
/// `/etc` is missing): then its own choice stands and nothing outside the root is touched.
fn write_resolv_conf(root: &Path, text: &str) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags, openat};

    let etc = match rustix::fs::open(
        root.join("etc"),
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(etc) => etc,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    // Non-blocking, so a FIFO planted there cannot hold the open; no truncation before the
    // file is known to be a regular one.
    let file = match openat(
        &etc,
        "resolv.conf",
        OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    ) {
        Ok(file) => file,
        Err(
            rustix::io::Errno::LOOP
            | rustix::io::Errno::ISDIR
            | rustix::io::Errno::MLINK
            | rustix::io::Errno::NXIO,
        ) => {
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    if !rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(&file)?.st_mode).is_file() {
        return Ok(());
    }
    let mut file = fs::File::from(file);
    file.set_len(0)?;
    io::Write::write_all(&mut file, text.as_bytes())
}

fn backend(op: &'static str, id: &SandboxId, error: JailRuntimeError) -> RuntimeError {
    match error {
        JailRuntimeError::Jail(JailError::AlreadyExists { .. }) => {
            RuntimeError::AlreadyExists { id: id.clone() }
        }
        error => RuntimeError::Backend {
            op,
            id: id.clone(),
            source: Box::new(error),
        },
    }
}

impl Runtime for JailRuntime {
    fn create(
        &self,
        id: &SandboxId,
        spec: &RuntimeSpec,
        root: &RootFs,
    ) -> Result<(), RuntimeError> {
        let (path, binds) = match root {
            RootFs::Directory { path, binds } => (path, binds),
            RootFs::Overlay { .. } => {
                return Err(RuntimeError::Unsupported {
                    what: "an overlay root filesystem (jails run on a directory, e.g. a ZFS clone)",
                });
            }
            RootFs::Disk { .. } => {
                return Err(RuntimeError::Unsupported {
                    what: "a disk root (a virtual machine's; jails run on a directory)",
                });
            }
        };
        if let NetAttachment::Namespace { .. } = spec.network {
            return Err(RuntimeError::Unsupported {
                what: "a network namespace (Linux's network attachment)",
            });
        }
        jail_name(id)?;
        let dir = self.sandbox_dir(id);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                return Err(RuntimeError::AlreadyExists { id: id.clone() });
            }
            Err(source) => {
                let error = JailRuntimeError::RunDir {
                    op: "create",
                    path: dir,
                    source,
                };
                return Err(backend("create", id, error));
            }
        }
        self.create_impl(id, spec, path, binds).map_err(|error| {
            if let Err(cleanup) = self.destroy_impl(id) {
                tracing::warn!(sandbox_id = %id, error = %coppice_core::manager::error_chain(&cleanup), "cleanup after failed create");
            }
            backend("create", id, error)
        })
    }

    fn start(&self, id: &SandboxId) -> Result<SandboxEndpoints, RuntimeError> {
        self.live_record("start", id)?;
        self.start_impl(id)
            .map_err(|error| backend("start", id, error))
    }

    fn exec(&self, id: &SandboxId, request: &ExecRequest) -> Result<ExecOutcome, RuntimeError> {
        self.live_record("exec", id)?;
        coppice_init::client::exec_for(
            id,
            &self.endpoints(id).control_socket,
            request,
            self.config.exec_output_limit,
        )
    }

    fn probe(&self, id: &SandboxId) -> Result<Probe, RuntimeError> {
        let record = self
            .read_record(id)
            .map_err(|error| backend("probe", id, error))?
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
        let spec = self
            .spec(&record)
            .map_err(|error| backend("probe", id, error))?;
        if self
            .live_jid(&record)
            .map_err(|error| backend("probe", id, error))?
            .is_none()
        {
            return Ok(Probe {
                alive: false,
                oom_kills: 0,
                memory_bytes: 0,
                pids: 0,
            });
        }
        let usage = self
            .sys
            .run(&usage_command(&spec.name))
            .map(|output| parse_usage(&output))
            .map_err(|error| backend("probe", id, host_step("read rctl usage")(error)))?;
        let alive =
            coppice_init::client::ping(&self.endpoints(id).control_socket, PING_TIMEOUT).is_ok();
        Ok(Probe {
            alive,
            // rctl denies memory beyond the limit to the allocation instead of killing.
            oom_kills: 0,
            memory_bytes: usage.memory_bytes,
            pids: usage.processes,
        })
    }

    fn destroy(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.destroy_impl(id)
            .map_err(|error| backend("destroy", id, error))
    }

    fn root_dir(&self, id: &SandboxId) -> Result<RootDir, RuntimeError> {
        let record = self.live_record("find the root of", id)?;
        Ok(RootDir::at(record.path))
    }

    fn list(&self) -> Result<Vec<RuntimeSandbox>, RuntimeError> {
        self.list_impl().map_err(|error| RuntimeError::Host {
            op: "list",
            source: Box::new(error),
        })
    }
}

#[cfg(test)]
mod tests;
