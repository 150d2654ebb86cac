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
//! [`pf`] renders the same policy as FreeBSD pf anchors and [`epair`] plans the FreeBSD
//! links; the FreeBSD `NetPolicy` that runs them is not built yet.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod bridge;
pub mod egress;
pub mod epair;
mod loopback;
pub mod pf;
mod pool;
#[allow(unsafe_code)]
mod sys;

pub use bridge::{BridgeConfig, BridgeNetwork, ConfigError};
pub use loopback::LoopbackOnly;
#[cfg(target_os = "linux")]
pub use sys::RealNetnsSys;
pub use sys::{BridgeSys, FakeBridgeSys, FakeNetnsSys, NetnsSys};
