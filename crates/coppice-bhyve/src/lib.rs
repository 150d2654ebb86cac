//! FreeBSD bhyve VMs for coppice: the portable plan.
//!
//! What is built: the `bhyve`, `bhyveload` and `bhyvectl` argument lists for a VM's shape
//! (Linux and FreeBSD guests on virtio, Windows guests on AHCI and e1000 with a framebuffer
//! behind VNC, GPUs passed through) in [`argv`], and the state machine of the warm pool of
//! pre-booted VMs in [`pool`]. Running them (and exec through envd in the guest) is not built
//! yet, so this crate does not implement `coppice_core::Runtime`.
#![forbid(unsafe_code)]

pub mod argv;
pub mod pool;
