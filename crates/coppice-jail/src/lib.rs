//! FreeBSD jail(2) runtime for coppice: the portable plan of a sandbox's jail.
//!
//! What is built: the jail's parameters and their encoding as the name/value pairs
//! `jail_set(2)` takes ([`params`]), its rctl rules ([`rctl`]), the devfs ruleset it sees
//! ([`devfs`]), the host patch-level check ([`release`]), and [`JailHost`], which makes and
//! removes a sandbox's jail (devfs, jail, rctl rules) through the [`JailSys`] seam, undoing
//! every step when a later one fails. Starting the sandbox init inside the jail is not built
//! yet, so this crate does not implement `coppice_core::Runtime` and `coppiced` does not
//! choose it.
#![deny(unsafe_code)]

pub mod devfs;
mod host;
pub mod params;
pub mod rctl;
pub mod release;
#[allow(unsafe_code)]
mod sys;

pub use host::{JailError, JailHost};
#[cfg(target_os = "freebsd")]
pub use sys::HostJailSys;
pub use sys::JailSys;
