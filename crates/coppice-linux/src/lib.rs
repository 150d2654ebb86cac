//! The Linux sandbox runtime: each sandbox is a set of fresh namespaces (mount, PID, UTS, IPC,
//! cgroup, network, and a user namespace that maps sandbox root to an unprivileged host id),
//! an overlayfs root entered with `pivot_root`, and cgroup v1 limits nested under the daemon's
//! own cgroups.
//!
//! # Layout
//! - [`config`]: the runtime's settings (paths, id map, limits of the control channel).
//! - [`cgroup`]: cgroup paths and limit files, computed from `/proc/self/cgroup` (pure).
//! - [`mount_plan`]: the ordered mount steps that build a sandbox's root (pure).
//! - [`protocol`]: messages between the runtime and the sandbox init.
//! - [`runtime`]: [`NamespaceRuntime`], the `coppice_core::Runtime` implementation.
//! - `sys`: the only place that knows the OS. `sys/linux/` holds the init that runs as the
//!   sandbox's first process (the `coppice-init` binary); all `unsafe` lives in
//!   `sys/linux/syscalls.rs`.
//!
//! # How a sandbox starts
//! 1. `create` makes the run dir and the cgroups and writes the init's config.
//! 2. `start` asks the init zygote (one `coppice-init --zygote` per daemon) to fork an outer
//!    init, which binds the control socket, unshares the namespaces and forks the sandbox's
//!    PID 1, then moves PID 1 into the cgroups while PID 1 mounts.
//! 3. PID 1 mounts the root (overlay, `/usr`, `/proc`, `/dev`, `/tmp`), sets the hostname,
//!    brings up loopback, `pivot_root`s, enters new cgroup and user namespaces (the outer
//!    process writes the id map), drops capabilities, sets `no_new_privs` and a seccomp
//!    filter, then serves the control socket and reaps zombies.
//! 4. The outer process reports PID 1's host pid and exits; PID 1 lives on without any
//!    process of the daemon, so the daemon can crash and re-adopt the sandbox.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cgroup;
pub mod config;
mod error;
pub mod mount_plan;
pub mod protocol;
pub mod runtime;
#[allow(unsafe_code)]
mod sys;

pub use config::{EnvdSettings, IdMap, InitCommand, NamespaceRuntimeConfig};
pub use error::LinuxError;
pub use runtime::NamespaceRuntime;
pub use sys::{FakeNsSys, NsSys};
#[cfg(target_os = "linux")]
pub use sys::{RealNsSys, init_main};
