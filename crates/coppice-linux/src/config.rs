//! Settings of the Linux runtime, passed in by the daemon (never read from the environment).

use std::path::PathBuf;
use std::time::Duration;

use crate::cgroup::CgroupConfig;

/// How sandbox ids map onto host ids: sandbox uid/gid `n` is host `base + n` for
/// `n < count`. Sandbox root is therefore `base` on the host, an unprivileged id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// Host uid of sandbox uid 0.
    pub host_uid_base: u32,
    /// Host gid of sandbox gid 0.
    pub host_gid_base: u32,
    /// How many consecutive ids are mapped.
    pub count: u32,
}

impl Default for IdMap {
    fn default() -> Self {
        Self {
            host_uid_base: 200_000,
            host_gid_base: 200_000,
            count: 65_536,
        }
    }
}

/// How to start the sandbox init: a program and the arguments that precede `--config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitCommand {
    /// The executable (the `coppice-init` binary, or a binary with an init mode).
    pub program: PathBuf,
    /// Arguments before `--config <file>` (e.g. the init mode's sub-command).
    pub leading_args: Vec<String>,
}

impl InitCommand {
    /// The dedicated `coppice-init` binary at `program`.
    pub fn binary(program: PathBuf) -> Self {
        Self {
            program,
            leading_args: Vec::new(),
        }
    }
}

/// Settings of [`crate::NamespaceRuntime`].
#[derive(Debug, Clone)]
pub struct NamespaceRuntimeConfig {
    /// Per-sandbox run dirs (init config, state, control socket, mount point) live here.
    pub run_dir: PathBuf,
    /// How to start the sandbox init.
    pub init: InitCommand,
    /// Where the cgroup hierarchies are and what to call coppice's group.
    pub cgroup: CgroupConfig,
    /// The sandbox id map.
    pub id_map: IdMap,
    /// The host's `/dev`, whose character devices are bound into sandboxes.
    pub host_dev: PathBuf,
    /// Most bytes of stdout and of stderr kept from one control-path exec.
    pub exec_output_limit: usize,
    /// Longest wait for a new sandbox's init to report ready.
    pub start_timeout: Duration,
    /// Longest wait for a killed sandbox's processes to be gone.
    pub stop_timeout: Duration,
    /// Set `favordynmods` on the host's cgroup2 mount at start (see `NsSys`).
    pub favor_dynamic_cgroups: bool,
    /// envd, started in every sandbox when set.
    pub envd: Option<EnvdSettings>,
    /// The CRIU binary for durable pause (checkpoints); `None` where there is none.
    pub criu: Option<PathBuf>,
}

pub use coppice_init::settings::EnvdSettings;

impl NamespaceRuntimeConfig {
    /// Defaults for a daemon whose state lives under `run_dir`, starting inits with `init`.
    pub fn new(run_dir: PathBuf, init: InitCommand) -> Self {
        Self {
            run_dir,
            init,
            cgroup: CgroupConfig::default(),
            id_map: IdMap::default(),
            host_dev: PathBuf::from("/dev"),
            exec_output_limit: 4 << 20,
            start_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(10),
            favor_dynamic_cgroups: true,
            envd: None,
            criu: None,
        }
    }
}
