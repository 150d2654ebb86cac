//! The `Runtime` trait: creates, starts and destroys isolated execution environments.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::ErrorKind;
use crate::exec::{ExecOutcome, ExecRequest};
use crate::id::SandboxId;
use crate::net::NetAttachment;
use crate::storage::{BindMount, RootFs};
use crate::volume::IdMap;

mod by_root;

pub use by_root::ByRoot;

/// Whether a sandbox's root was just made from its template, or has run a sandbox before
/// (a resume boots a new init on the files a paused sandbox kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootUse {
    /// Cloned from its template for this boot (create, fork): a runtime may swap it for an
    /// identical one it prepared ahead (a pooled VM's disk).
    Fresh,
    /// It holds the sandbox's own data and must be booted as it is.
    Used,
}

/// What the runtime needs to know to build a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSpec {
    /// Hostname inside the sandbox.
    pub hostname: String,
    /// CPU quota in whole cores.
    pub vcpus: u32,
    /// Memory limit in MiB.
    pub memory_mb: u32,
    /// Most processes and threads.
    pub max_pids: u32,
    /// Environment given to every process the runtime starts.
    pub env: Vec<(String, String)>,
    /// How the sandbox is connected to the network.
    pub network: NetAttachment,
    /// Volumes mounted on top of everything else, in order.
    pub volumes: Vec<BindMount>,
    /// Whether the root is fresh from its template.
    pub root_use: RootUse,
    /// Who runs the processes of requests that name no user, and where.
    pub defaults: ProcessDefaults,
}

/// The user and working directory of a sandbox's processes when a request names neither:
/// its template's, fixed at create. `None` leaves the runtime's own default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessDefaults {
    /// A user name (or uid) of the sandbox.
    pub user: Option<String>,
    /// An absolute directory inside the sandbox.
    pub workdir: Option<String>,
}

/// A sandbox's root directory on the host: a path, and whatever keeps that path naming the
/// sandbox's root (such as an open descriptor that the path refers to).
#[derive(Debug)]
pub struct RootDir {
    path: PathBuf,
    _hold: Option<std::os::fd::OwnedFd>,
}

impl RootDir {
    /// A root directory that `path` names by itself.
    pub fn at(path: PathBuf) -> Self {
        Self { path, _hold: None }
    }

    /// A root directory that `path` names while `hold` is open.
    pub fn held(path: PathBuf, hold: std::os::fd::OwnedFd) -> Self {
        Self {
            path,
            _hold: Some(hold),
        }
    }

    /// The path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

/// How the host reaches a running sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxEndpoints {
    /// Unix socket of the sandbox init's control channel (exec, health).
    pub control_socket: PathBuf,
    /// Unix socket where envd listens once it runs; created inside the sandbox's run dir.
    pub envd_socket: PathBuf,
}

/// A point-in-time view of a running sandbox, as the runtime sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Whether the sandbox's init process is alive.
    pub alive: bool,
    /// How many processes the kernel's OOM killer has killed in the sandbox so far.
    pub oom_kills: u64,
    /// Memory in use, in bytes.
    pub memory_bytes: u64,
    /// Processes and threads in the sandbox.
    pub pids: u64,
}

/// Creates, starts and destroys isolated execution environments.
///
/// Implementations block; `SandboxManager` calls them off the async runtime.
pub trait Runtime: Send + Sync + 'static {
    /// Prepares the sandbox (limits, directories) without starting anything.
    ///
    /// # Errors
    /// `AlreadyExists` if `id` is known, otherwise a backend failure; nothing stays behind.
    fn create(&self, id: &SandboxId, spec: &RuntimeSpec, root: &RootFs)
    -> Result<(), RuntimeError>;

    /// Starts the sandbox's init and returns how to reach it once it is ready.
    ///
    /// # Errors
    /// `NotFound` if `id` was never created.
    fn start(&self, id: &SandboxId) -> Result<SandboxEndpoints, RuntimeError>;

    /// Runs one command to completion inside the sandbox, over the control channel.
    ///
    /// # Errors
    /// `NotFound` for an unknown or dead sandbox; `Invalid` for a request the sandbox refuses.
    fn exec(&self, id: &SandboxId, request: &ExecRequest) -> Result<ExecOutcome, RuntimeError>;

    /// Reports liveness and resource counters.
    ///
    /// # Errors
    /// `NotFound` for an unknown sandbox.
    fn probe(&self, id: &SandboxId) -> Result<Probe, RuntimeError>;

    /// Stops every process of the sandbox where it is, memory kept, until [`Runtime::thaw`].
    /// A failed freeze leaves the sandbox running.
    ///
    /// # Errors
    /// `NotFound` for an unknown or dead sandbox; `Unsupported` where the runtime cannot.
    fn freeze(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        let _ = id;
        Err(RuntimeError::Unsupported {
            what: "pausing with memory",
        })
    }

    /// Lets the processes of a frozen sandbox run again.
    ///
    /// # Errors
    /// `NotFound` for an unknown sandbox; `Unsupported` where the runtime cannot.
    fn thaw(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        let _ = id;
        Err(RuntimeError::Unsupported {
            what: "resuming from memory",
        })
    }

    /// Writes the processes of a live sandbox to disk (memory, open files, sockets) and ends
    /// them, keeping its filesystem: a durable pause, which outlives the daemon and the host.
    /// A failure leaves the sandbox running as it was.
    ///
    /// # Errors
    /// `NotFound` for an unknown or dead sandbox; `Unsupported` where the runtime (or this
    /// sandbox's shape) cannot.
    fn checkpoint(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        let _ = id;
        Err(RuntimeError::Unsupported {
            what: "pausing durably with memory",
        })
    }

    /// Whether the sandbox has a checkpoint that `restore` would resume.
    fn has_checkpoint(&self, id: &SandboxId) -> bool {
        let _ = id;
        false
    }

    /// The host's memory as the runtime sees it, for writing paused sandboxes to disk when it
    /// runs short; `None` where it cannot tell.
    fn host_memory(&self) -> Option<HostMemory> {
        None
    }

    /// Resumes a checkpointed sandbox's processes where they were, consuming the checkpoint.
    /// A failure keeps the checkpoint (and the filesystem), so nothing is lost.
    ///
    /// # Errors
    /// `NotFound` without a checkpoint; `Unsupported` where the runtime cannot.
    fn restore(&self, id: &SandboxId) -> Result<SandboxEndpoints, RuntimeError> {
        Err(RuntimeError::NotFound { id: id.clone() })
    }

    /// Kills every process of the sandbox and releases everything `create` and `start` made.
    /// Destroying an unknown sandbox succeeds, so that cleanup can be retried.
    ///
    /// # Errors
    /// A backend failure; the call can be retried.
    fn destroy(&self, id: &SandboxId) -> Result<(), RuntimeError>;

    /// The running sandbox's root directory as its processes see it (its own mounts
    /// included), for reading and writing its files from the host without following anything
    /// below it. It stays the sandbox's for as long as the returned value lives.
    ///
    /// # Errors
    /// `NotFound` when the sandbox has no running init; `Unsupported`.
    fn root_dir(&self, id: &SandboxId) -> Result<RootDir, RuntimeError> {
        let _ = id;
        Err(RuntimeError::Unsupported {
            what: "reaching a sandbox's files from the host",
        })
    }

    /// How sandbox ids map to host ids, for files the host writes on a sandbox's behalf
    /// (volumes). The default is the identity: the sandbox shares the host's ids.
    fn id_map(&self) -> IdMap {
        IdMap::IDENTITY
    }

    /// Every sandbox the runtime holds resources for, e.g. after a restart of the daemon.
    ///
    /// # Errors
    /// A backend failure.
    fn list(&self) -> Result<Vec<RuntimeSandbox>, RuntimeError>;
}

/// One sandbox found by [`Runtime::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSandbox {
    /// Its id.
    pub id: SandboxId,
    /// Whether its init is alive (it can be re-adopted) or only leftovers remain.
    pub alive: bool,
}

/// How much memory the host has, and how much of it could be used without swapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostMemory {
    /// All of it.
    pub total_bytes: u64,
    /// What is available for new work (Linux: `MemAvailable`).
    pub available_bytes: u64,
}

impl HostMemory {
    /// Whether less than `percent` of the memory is available.
    pub fn below(&self, percent: u8) -> bool {
        u128::from(self.available_bytes) * 100 < u128::from(self.total_bytes) * u128::from(percent)
    }
}

/// A runtime failure, classified by kind; the backend's detail travels as the source.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No such sandbox.
    #[error("sandbox {id} not found in the runtime")]
    NotFound {
        /// The sandbox.
        id: SandboxId,
    },
    /// The sandbox already exists.
    #[error("sandbox {id} already exists in the runtime")]
    AlreadyExists {
        /// The sandbox.
        id: SandboxId,
    },
    /// The request cannot be carried out as given.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// This runtime cannot do it.
    #[error("{what} is not supported by this runtime")]
    Unsupported {
        /// The capability.
        what: &'static str,
    },
    /// The sandbox did not answer in time.
    #[error("sandbox {id} did not answer within {waited:?}")]
    Timeout {
        /// The sandbox.
        id: SandboxId,
        /// How long we waited.
        waited: Duration,
    },
    /// A failure of a host-wide operation (not tied to one sandbox).
    #[error("runtime operation {op} failed")]
    Host {
        /// The operation.
        op: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A failure inside the backend.
    #[error("runtime operation {op} failed for sandbox {id}")]
    Backend {
        /// The operation.
        op: &'static str,
        /// The sandbox.
        id: SandboxId,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl RuntimeError {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Self::Invalid { .. } => ErrorKind::Invalid,
            Self::Unsupported { .. } => ErrorKind::Unsupported,
            Self::Timeout { .. } | Self::Host { .. } | Self::Backend { .. } => ErrorKind::Internal,
        }
    }
}
