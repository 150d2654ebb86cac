//! FreeBSD jail(2) runtime for coppice: the portable plan of a sandbox's jail.
//!
//! What is built: the jail's parameters and their encoding as the name/value pairs
//! `jail_set(2)` takes ([`params`]), its rctl rules ([`rctl`]), the devfs ruleset it sees
//! ([`devfs`]), and the host patch-level check ([`release`]). The `Runtime` that issues the
//! system calls (from a `sys/` module) is not built yet, so this crate does not implement
//! `coppice_core::Runtime` and `coppiced` does not choose it.
#![forbid(unsafe_code)]

pub mod devfs;
pub mod params;
pub mod rctl;
pub mod release;
