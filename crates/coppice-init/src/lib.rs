//! The sandbox init's portable half, shared by the Linux and FreeBSD runtimes: the control
//! channel's messages ([`control`]), the host's client of it ([`client`]), envd's settings
//! ([`settings`]), the runtimes' per-sandbox records ([`records`]), and, on the
//! platforms that run sandboxes, the init's control server ([`server`]) and envd supervisor
//! ([`envd`]).
//!
//! Each runtime builds the sandbox its own way (namespaces and `pivot_root`, or `jail_attach`)
//! and then hands over to the same server: one thread per control connection runs one command,
//! and the main thread reaps every child.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod control;
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub mod envd;
pub mod passwd;
pub mod records;
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub mod server;
pub mod settings;
pub mod socket;
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
#[allow(unsafe_code)]
mod sys;
#[cfg(feature = "test-support")]
pub mod testing;
