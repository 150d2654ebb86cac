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
//! - [`checkpoint`]: durable pause with CRIU: the external mounts and command lines.
//! - `sys`: the only place that knows the OS. `sys/linux/` holds the init that runs as the
//!   sandbox's first process (the `coppice-init` binary); all `unsafe` lives in
//!   `sys/linux/syscalls.rs`.
//!
//! # How a sandbox starts
//! 1. `create` makes the run dir and the cgroups and writes the init's config.
//! 2. `start` asks the init zygote (one `coppice-init --zygote` per daemon) to fork an outer
//!    init, which forks the builder and moves it into the cgroups while it mounts.
//! 3. The builder mounts the root as host root (overlay, template binds, the port, `/dev`,
//!    `/tmp`, volumes), enters the sandbox's user namespace (the outer init writes its id
//!    map, or it is the one a pooled network namespace belongs to), unshares every other
//!    namespace inside it, and forks PID 1.
//! 4. PID 1 mounts `/proc`, `pivot_root`s and re-executes the init from the port; then it
//!    sets the hostname, binds the control and envd sockets in the port, drops capabilities,
//!    sets `no_new_privs` and a seccomp filter, serves the control socket and reaps zombies.
//! 5. The outer process reports PID 1's host pid and exits; PID 1 lives on without any
//!    process of the daemon, so the daemon can crash and re-adopt the sandbox.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cgroup;
pub mod checkpoint;
pub mod config;
mod error;
pub mod meminfo;
pub mod mount_plan;
pub mod protocol;
pub mod runtime;
#[allow(unsafe_code)]
mod sys;

pub use config::{EnvdSettings, IdMap, InitCommand, NamespaceRuntimeConfig};
pub use error::LinuxError;
pub use runtime::NamespaceRuntime;
pub use sys::{FakeNsCall, FakeNsSys, NsSys};
#[cfg(target_os = "linux")]
pub use sys::{RealNsSys, init_main};
