//! The only place that knows the OS: network namespaces, links, nftables, sysctls.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use coppice_core::volume::IdMap;

pub(crate) mod fake;
#[cfg(target_os = "linux")]
mod linux;
mod pf;

pub use fake::{FakeBridgeSys, FakeNetnsSys};
#[cfg(target_os = "linux")]
pub use linux::RealNetnsSys;
#[cfg(test)]
pub(crate) use pf::FakePfSys;
pub use pf::{CommandPfSys, PfSys};

/// Creates network namespaces and names them for other processes.
pub trait NetnsSys: Send + Sync + fmt::Debug + 'static {
    /// A new, empty network namespace, kept alive by the returned descriptor.
    ///
    /// # Errors
    /// The kernel refused (e.g. no privilege).
    fn new_namespace(&self) -> io::Result<OwnedFd>;

    /// A path another process can open to join the namespace behind `fd` while this process
    /// holds `fd`.
    fn path_of(&self, fd: &OwnedFd) -> PathBuf;

    /// A new user namespace with `map`, and a new, empty network namespace that belongs to
    /// it, each kept alive by its descriptor.
    ///
    /// # Errors
    /// The kernel refused, or the helper process that makes them failed.
    fn new_owned_namespace(&self, map: &IdMap) -> io::Result<OwnedNamespace>;
}

/// A network namespace and the user namespace it belongs to.
#[derive(Debug)]
pub struct OwnedNamespace {
    /// The user namespace.
    pub user: OwnedFd,
    /// The network namespace.
    pub net: OwnedFd,
}

/// What the bridge network needs of the host besides namespaces. Scripts are rendered by
/// `bridge::script`; this seam only runs them.
pub trait BridgeSys: NetnsSys {
    /// Takes the host-wide lock of `bridge`, held as long as the descriptor is open: two
    /// daemons on one bridge would rebuild each other's rules.
    ///
    /// # Errors
    /// `WouldBlock` while another process holds it.
    fn lock_bridge(&self, bridge: &str) -> io::Result<OwnedFd>;

    /// Whether a link of that name exists in the host's namespace.
    fn link_exists(&self, name: &str) -> bool;

    /// The names of every link in the host's namespace.
    ///
    /// # Errors
    /// The list cannot be read.
    fn links(&self) -> io::Result<Vec<String>>;

    /// The names of the host's links in link group `group`.
    ///
    /// # Errors
    /// The links cannot be read.
    fn links_in_group(&self, group: u32) -> io::Result<Vec<String>>;

    /// Runs `ip -batch` lines, in the namespace at `netns` when given.
    ///
    /// # Errors
    /// `ip` failed; the error carries its message.
    fn ip_batch(&self, netns: Option<&Path>, script: &str) -> io::Result<()>;

    /// The table `inet <table>` as `nft -j -a list` prints it (rule handles included).
    ///
    /// # Errors
    /// `nft` failed.
    fn nft_listing(&self, table: &str) -> io::Result<String>;

    /// Applies an `nft -f` script as one transaction.
    ///
    /// # Errors
    /// `nft` refused the script; nothing of it applied.
    fn nft(&self, script: &str) -> io::Result<()>;

    /// Deletes every conntrack entry whose original source is `address`.
    ///
    /// # Errors
    /// The entries could not be listed or deleted.
    fn forget_flows(&self, address: std::net::IpAddr) -> io::Result<()>;

    /// Turns on IPv4 and IPv6 forwarding, keeping router advertisements accepted where the
    /// host relied on them.
    ///
    /// # Errors
    /// A sysctl could not be written.
    fn enable_forwarding(&self) -> io::Result<()>;
}
