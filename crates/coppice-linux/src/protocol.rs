//! Messages between the runtime (in the daemon) and the sandbox init.
//!
//! 1. The runtime writes an [`InitConfig`] as JSON to `<run dir>/init.json` and starts
//!    `coppice-init --config <that file>`.
//! 2. The outer init prints one [`ReadyMessage`] JSON line on stdout and exits.
//! 3. The control socket then speaks `coppice_init::control`, re-exported here.
//!
//! Everything a running sandbox holds lies inside its root, so that its process tree can be
//! checkpointed: the init and envd run from binaries bound at [`PORT_IN_ROOT`], and bind
//! their sockets there; on the host, that directory is the run dir's [`PORT_DIR`].

use std::path::PathBuf;

pub use coppice_init::control::{
    ControlRequest, ControlResponse, ExecIdentity, MAX_HEADER_BYTES, WireExit, read_header,
    read_payload, write_frame,
};
use serde::{Deserialize, Serialize};

/// Version of [`InitConfig`]; the init refuses others.
pub const INIT_CONFIG_VERSION: u32 = 2;

/// Where the sandbox's port (its sockets and the binaries it runs from) is bound, relative to
/// the sandbox's root.
pub const PORT_IN_ROOT: &str = ".coppice";
/// The host directory, in a sandbox's run dir, that is bound at [`PORT_IN_ROOT`].
pub const PORT_DIR: &str = "port";
/// The control socket's name in the port.
pub const CONTROL_SOCKET: &str = "control.sock";
/// envd's socket's name in the port.
pub const ENVD_SOCKET: &str = "envd.sock";
/// The init binary's name in the port.
pub const INIT_BINARY: &str = "coppice-init";
/// envd's binary's name in the port.
pub const ENVD_BINARY: &str = "coppice-envd";
/// The directory, in a sandbox's run dir, that is bound at the sandbox's `/dev` (device
/// nodes and the devpts and shm mounts sit on it).
pub const DEV_DIR: &str = "dev";

/// Everything the init needs to build one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitConfig {
    /// Must equal [`INIT_CONFIG_VERSION`].
    pub version: u32,
    /// The sandbox id, for logs.
    pub sandbox_id: String,
    /// Hostname inside the sandbox.
    pub hostname: String,
    /// The directory the root is assembled in before `pivot_root`.
    pub rootfs: PathBuf,
    /// Mount steps, in order, with targets relative to `rootfs`.
    pub mounts: Vec<MountStep>,
    /// `cgroup.procs` files to join before forking.
    pub cgroup_procs: Vec<PathBuf>,
    /// The host directory bound at [`PORT_IN_ROOT`]: owned by sandbox root, holding nothing
    /// when the init starts.
    pub port_dir: PathBuf,
    /// The init binary on the host, which PID 1 re-executes from inside the root.
    pub init_program: PathBuf,
    /// Arguments that put the init binary in its init mode (before `--pid1`).
    #[serde(default)]
    pub init_leading_args: Vec<String>,
    /// How to get a network namespace.
    pub network: NetworkSetup,
    /// Host uid of sandbox uid 0.
    pub host_uid_base: u32,
    /// Host gid of sandbox gid 0.
    pub host_gid_base: u32,
    /// Mapped id count.
    pub id_count: u32,
    /// Environment for every command.
    pub env: Vec<(String, String)>,
    /// Most bytes of stdout and of stderr kept per exec.
    pub exec_output_limit: usize,
    /// The in-sandbox daemon PID 1 starts and keeps running, if any.
    #[serde(default)]
    pub envd: Option<EnvdLaunch>,
    /// Written to the root's `/etc/resolv.conf` before the sandbox starts, unless the
    /// sandbox made that path a link or a directory.
    #[serde(default)]
    pub resolv_conf: Option<String>,
}

/// How PID 1 runs envd: the host binary is bound read-only into the port, and PID 1 runs it
/// from there with its listening Unix socket (bound in the port) as standard input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvdLaunch {
    /// The envd executable on the host.
    pub binary: PathBuf,
    /// Its arguments (after the program name).
    pub args: Vec<String>,
}

/// Where the sandbox's network namespace comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NetworkSetup {
    /// A fresh namespace with loopback up.
    Loopback,
    /// Join a prepared namespace.
    Join {
        /// A namespace file (e.g. a bind mount of `/proc/<pid>/ns/net`).
        path: PathBuf,
        /// The user namespace it belongs to, joined as the sandbox's own; `None` when it
        /// belongs to the host's (the builder then makes the sandbox's user namespace).
        #[serde(default)]
        user: Option<PathBuf>,
        /// A host device that a restore moves into the namespace it makes, as `eth0` (the
        /// network policy prepares it before each restore); `None`: loopback only.
        #[serde(default)]
        restore_device: Option<String>,
    },
}

/// One step of building the sandbox's root. Paths named `target` are relative to the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MountStep {
    /// overlayfs onto the root itself.
    Overlay {
        /// Read-only layers, topmost first.
        lower: Vec<PathBuf>,
        /// Writable layer.
        upper: PathBuf,
        /// overlayfs work dir.
        work: PathBuf,
    },
    /// A bind mount of a host directory or file.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Target, relative to the root.
        target: PathBuf,
        /// Remount read-only (and nosuid, nodev).
        read_only: bool,
        /// Create the target directory (and its parents) when missing, as for a volume.
        #[serde(default)]
        create_target: bool,
    },
    /// A character device bound from the host's `/dev` onto an empty file.
    DevNode {
        /// Host device node.
        source: PathBuf,
        /// Target, relative to the root.
        target: PathBuf,
    },
    /// procfs of the sandbox's PID namespace.
    Proc {
        /// Target, relative to the root.
        target: PathBuf,
    },
    /// A private devpts instance.
    Devpts {
        /// Target, relative to the root.
        target: PathBuf,
    },
    /// tmpfs.
    Tmpfs {
        /// Target, relative to the root.
        target: PathBuf,
        /// Mount data, e.g. `mode=1777,size=64m`.
        data: String,
        /// Whether executables may run from it.
        noexec: bool,
        /// Whether device nodes work on it.
        nodev: bool,
    },
    /// A symlink created inside the root.
    Symlink {
        /// The link, relative to the root.
        link: PathBuf,
        /// What it points to.
        points_to: PathBuf,
    },
}

/// The outer init's one-line report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadyMessage {
    /// The sandbox runs; its PID 1 has this host pid.
    Ready {
        /// Host pid of the sandbox's PID 1.
        pid: i32,
    },
    /// Building the sandbox failed.
    Failed {
        /// What failed, with its cause.
        error: String,
    },
}
