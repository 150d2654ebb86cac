//! The coppice domain: identifiers, sandbox specs and states, the backend traits
//! (`Runtime`, `Storage`, `NetPolicy`) and the `SandboxManager` that implements every
//! operation once for all frontends.
//!
//! # Layout
//! - [`id`]: newtype identifiers parsed at the edge.
//! - [`spec`]: what a caller asks for, and its validation against configured limits.
//! - [`state`]: the sandbox lifecycle as an enum with explicit transitions.
//! - [`runtime`], [`storage`], [`net`]: the three backend traits and their value types.
//! - [`manager`]: the async operations, TTL reaper, monitor and start-up reconciliation.
//! - [`store`]: records and lifecycle events persisted in SQLite (WAL).
//! - [`volume`]: persistent volumes, their mounts and the sandbox id map.
//! - [`testing`] (feature `test-support`): fakes of the three traits.
//!
//! Core never calls a syscall, contains no `unsafe`, and knows nothing about HTTP, E2B JSON
//! or MCP.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
pub mod error;
pub mod event;
pub mod exec;
pub mod id;
pub mod manager;
pub mod net;
pub mod recipe;
pub mod runtime;
pub mod sandbox;
pub mod spec;
pub mod state;
pub mod storage;
pub mod store;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod volume;

pub use error::ErrorKind;
pub use id::{DirSnapshotId, ParseIdError, SandboxId, TemplateId, VolumeId, VolumeName};
pub use manager::{ManagerConfig, ManagerError, SandboxManager};
pub use sandbox::{AccessToken, Sandbox};
pub use spec::{Limits, NetworkSpec, SandboxSpec, SpecError, TimeoutAction};
pub use state::{InvalidTransition, PauseMode, SandboxState};
