//! Network policy backends for coppice.
//!
//! Charter: one mechanism per platform implementing `coppice_core::NetPolicy` (nftables on
//! Linux, pf anchors on FreeBSD), with rule rendering kept pure and testable everywhere.
//!
//! - [`BridgeNetwork`]: each sandbox gets a network namespace with a veth into a host bridge,
//!   IPv4 and IPv6 addresses, NAT to the outside, a resolver, and an nftables egress policy
//!   (allow and deny CIDRs, air-gap) that can change while it runs.
//! - [`LoopbackOnly`]: a private network namespace with only loopback; nothing outside is
//!   reachable, whatever the spec allows.
//!
//! Both hand out namespaces from a warm pool, so that making one stays off the create path.
//! - [`PfNetwork`] (FreeBSD): an epair per sandbox on a bridge and a pf anchor per sandbox,
//!   rendered by [`pf`] from the same policy; [`epair`] plans the links.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod bridge;
pub mod egress;
pub mod epair;
mod loopback;
pub mod pf;
mod pfnet;
mod pool;
#[allow(unsafe_code)]
mod sys;

pub use bridge::{BridgeConfig, BridgeNetwork, ConfigError};
pub use loopback::LoopbackOnly;
pub use pfnet::{PfNetwork, PfStartError};
#[cfg(target_os = "linux")]
pub use sys::RealNetnsSys;
pub use sys::{BridgeSys, CommandPfSys, FakeBridgeSys, FakeNetnsSys, NetnsSys, PfSys};

/// An argument list of owned strings, as commands take them.
fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|&arg| arg.to_owned()).collect()
}
