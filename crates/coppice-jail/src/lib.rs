//! FreeBSD jail(2) runtime for coppice.
//!
//! # Layout
//! - [`params`]: a jail's parameters and their encoding as the name/value pairs `jail_set(2)`
//!   takes; [`rctl`]: its resource rules and usage; [`devfs`]: the ruleset of its `/dev`;
//!   [`release`]: the host patch-level check; [`vnet`]: its network link's hand-over.
//! - [`JailHost`]: makes and removes a jail (devfs, jail, rctl rules), undoing every step
//!   when a later one fails.
//! - [`JailRuntime`]: `coppice_core::Runtime` over jails: records, volumes, the link, and
//!   the init started inside the jail through [`launch`].
//! - [`init_main`]: the jail init itself (the `coppice-jail-init` binary), which serves the
//!   same control channel and envd supervision as the Linux init (`coppice-init`).
//! - `sys`: the only place that knows the OS, behind the [`JailSys`] seam; a recording fake
//!   of it tests everything else on Linux.
#![deny(unsafe_code)]

pub mod devfs;
mod host;
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
mod init;
pub mod launch;
pub mod params;
pub mod rctl;
pub mod release;
pub mod runtime;
#[allow(unsafe_code)]
mod sys;
pub mod vnet;

pub use host::{JailError, JailHost};
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub use init::init_main;
pub use runtime::{
    EnvdSettings, JailInitProgram, JailRuntime, JailRuntimeConfig, JailRuntimeError,
};
#[cfg(target_os = "freebsd")]
pub use sys::HostJailSys;
pub use sys::JailSys;
