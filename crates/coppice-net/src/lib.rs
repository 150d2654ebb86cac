//! Network policy backends for coppice.
//!
//! Charter: one mechanism per platform implementing `coppice_core::NetPolicy` (nftables on
//! Linux, pf anchors on FreeBSD), with rule rendering kept pure and testable everywhere.
//!
//! Today it holds [`LoopbackOnly`]: every sandbox gets a private network namespace with only
//! loopback. Nothing outside the sandbox is reachable, whatever the spec allows; the veth,
//! bridge and nftables backend replaces it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod loopback;

pub use loopback::LoopbackOnly;
