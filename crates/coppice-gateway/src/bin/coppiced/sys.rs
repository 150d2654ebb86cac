//! Backend selection: the only place that names a backend crate.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(not(target_os = "linux"))]
mod other;

#[cfg(target_os = "linux")]
pub(crate) use linux::{backends, run_as_sandbox_init};
#[cfg(not(target_os = "linux"))]
pub(crate) use other::{backends, run_as_sandbox_init};
