//! FreeBSD bhyve VMs for coppice.
//!
//! # Layout
//! - [`argv`]: the `bhyveload`, `bhyve` and `bhyvectl` command lines of a VM's shape (Linux
//!   and FreeBSD guests on virtio, Windows guests on AHCI and e1000 with a framebuffer
//!   behind VNC, GPUs passed through).
//! - [`seed`]: the seed disk that tells the guest agent which sandbox it is.
//! - [`netgraph`]: the VM's network card on a bridge node the sandbox's epair joins.
//! - [`relay`]: Unix sockets on the host in front of the guest's TCP services.
//! - [`pool`]: the warm pool's state machine; `runtime::warm` runs it.
//! - [`VmRuntime`]: `coppice_core::Runtime` over all of it.
//! - [`guest`]: the guest agent (`coppice-guest`), which serves the same control channel as
//!   the Linux and jail inits, over TCP with a token, and keeps envd running.
//! - `sys`: the host behind the [`BhyveSys`] seam, and a recording fake of it.
#![forbid(unsafe_code)]

pub mod argv;
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub mod guest;
pub mod netgraph;
pub mod pool;
pub mod relay;
pub mod runtime;
pub mod seed;
mod sys;

pub use runtime::warm::VmPoolConfig;
pub use runtime::{VmRuntime, VmRuntimeConfig, VmRuntimeError};
pub use sys::{BhyveSys, HostBhyveSys, VmSignal};
