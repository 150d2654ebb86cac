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
        Self { host_uid_base: 200_000, host_gid_base: 200_000, count: 65_536 }
    }
}

/// Settings of [`crate::NamespaceRuntime`].
#[derive(Debug, Clone)]
pub struct NamespaceRuntimeConfig {
    /// Per-sandbox run dirs (init config, state, control socket, mount point) live here.
    pub run_dir: PathBuf,
    /// The `coppice-init` binary.
    pub init_binary: PathBuf,
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
}

impl NamespaceRuntimeConfig {
    /// Defaults for a daemon whose state lives under `run_dir`, with `init_binary` as the init.
    pub fn new(run_dir: PathBuf, init_binary: PathBuf) -> Self {
        Self {
            run_dir,
            init_binary,
            cgroup: CgroupConfig::default(),
            id_map: IdMap::default(),
            host_dev: PathBuf::from("/dev"),
            exec_output_limit: 4 << 20,
            start_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(10),
        }
    }
}
