//! The `NetPolicy` trait: how a sandbox is connected and what it may reach.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::error::ErrorKind;
use crate::id::SandboxId;
use crate::spec::NetworkSpec;

/// How the runtime connects a sandbox to the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetAttachment {
    /// A fresh network namespace with only loopback: nothing outside is reachable.
    LoopbackOnly,
    /// A prepared network namespace (e.g. from a warm pool) that the runtime joins.
    Namespace {
        /// A bind-mounted namespace file to `setns` into.
        path: PathBuf,
        /// The user namespace that namespace belongs to, when not the host's: the sandbox
        /// joins it as its own (it maps the sandbox's ids), which keeps every namespace of the
        /// sandbox inside one user namespace, as a checkpoint needs.
        user: Option<PathBuf>,
        /// The sandbox's addresses.
        addresses: Vec<IpAddr>,
        /// Resolvers for `/etc/resolv.conf`.
        dns: Vec<IpAddr>,
        /// A host device that a restore from a checkpoint moves into the namespace it makes
        /// again, as the sandbox's `eth0` (made by [`NetPolicy::prepare_restore`] before each
        /// restore); `None` when the namespace has no interface but loopback.
        restore_device: Option<String>,
    },
    /// A prepared interface on the host (FreeBSD: an epair's jail end) that the runtime moves
    /// into the sandbox's own network stack (a VNET jail) and configures there as `eth0`.
    Vnet {
        /// The interface's name on the host.
        interface: String,
        /// The MAC address it takes.
        mac: String,
        /// Its addresses with their prefix lengths.
        addresses: Vec<(IpAddr, u8)>,
        /// Default routes, one per family.
        gateways: Vec<IpAddr>,
        /// Resolvers for `/etc/resolv.conf`.
        dns: Vec<IpAddr>,
    },
}

/// Connects sandboxes and enforces their egress policy.
///
/// Implementations block; `SandboxManager` calls them off the async runtime.
pub trait NetPolicy: Send + Sync + 'static {
    /// Prepares the network of a new sandbox according to `spec`.
    ///
    /// # Errors
    /// `Invalid` for a spec this backend cannot enforce; nothing stays behind.
    fn attach(&self, id: &SandboxId, spec: &NetworkSpec) -> Result<NetAttachment, NetError>;

    /// Replaces the policy of a running sandbox.
    ///
    /// # Errors
    /// `NotFound`, `Invalid`.
    fn update(&self, id: &SandboxId, spec: &NetworkSpec) -> Result<(), NetError>;

    /// Releases everything `attach` made. Detaching an unknown sandbox succeeds.
    ///
    /// # Errors
    /// A backend failure; the call can be retried.
    fn detach(&self, id: &SandboxId) -> Result<(), NetError>;

    /// Every sandbox the backend holds network resources for.
    ///
    /// # Errors
    /// A backend failure.
    fn list(&self) -> Result<Vec<SandboxId>, NetError>;

    /// Prepares the network of a checkpointed sandbox for its restore, which makes its
    /// network namespace again: whatever of its old namespace is still on the host goes, and
    /// the device named in [`NetAttachment::Namespace::restore_device`] is made ready for
    /// the restore to move in, while the sandbox keeps its addresses and policy. Called
    /// before every attempt, so a failed restore can be tried again.
    ///
    /// # Errors
    /// `NotFound` for a sandbox without network state; a backend failure.
    fn prepare_restore(&self, id: &SandboxId) -> Result<(), NetError> {
        let _ = id;
        Ok(())
    }
}

/// A network failure, classified by kind.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// No network state for that sandbox.
    #[error("no network state for sandbox {id}")]
    NotFound {
        /// The sandbox.
        id: SandboxId,
    },
    /// The policy cannot be enforced as given.
    #[error("invalid network policy: {reason}")]
    Invalid {
        /// Why.
        reason: String,
    },
    /// Address pool or similar exhausted.
    #[error("network resources exhausted: {what}")]
    Exhausted {
        /// What ran out.
        what: &'static str,
    },
    /// A failure inside the backend.
    #[error("network operation {op} failed")]
    Backend {
        /// The operation.
        op: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl NetError {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::Invalid { .. } => ErrorKind::Invalid,
            Self::Exhausted { .. } => ErrorKind::Exhausted,
            Self::Backend { .. } => ErrorKind::Internal,
        }
    }
}
