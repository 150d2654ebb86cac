//! End-to-end scenarios for coppice and the harness they share with the latency benches.
//!
//! [`harness`] assembles the real Linux backends (namespaces runtime, overlayfs storage with
//! the `base` template, loopback-only networking) in a private directory, with unique cgroup
//! names, so tests and benches never touch a running daemon's state.
#![forbid(unsafe_code)]

#[cfg(target_os = "linux")]
pub mod harness;
pub mod host;
