//! Network policy backends for coppice.
//!
//! Charter: one mechanism per platform implementing `coppice_core::NetPolicy` (nftables on
//! Linux, pf anchors on FreeBSD), with rule rendering kept pure and testable everywhere.
//!
//! Today it holds [`LoopbackOnly`]: every sandbox gets a private network namespace with only
//! loopback, handed out from a warm pool so that creating one stays off the create path.
//! Nothing outside the sandbox is reachable, whatever the spec allows; the veth, bridge and
//! nftables backend replaces it.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod loopback;
mod pool;
#[allow(unsafe_code)]
mod sys;

pub use loopback::LoopbackOnly;
#[cfg(target_os = "linux")]
pub use sys::RealNetnsSys;
pub use sys::{FakeNetnsSys, NetnsSys};
