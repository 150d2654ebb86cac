//! Linux overlayfs storage for coppice: templates are stacks of read-only layers, and each
//! sandbox gets a writable upper directory on top, with the host's `/usr` bind-mounted
//! read-only.
//!
//! [`OverlayStorage`] implements `coppice_core::storage::Storage`. It prepares directories and
//! metadata only; the runtime mounts the overlay from the returned `RootFs::Overlay`.
//! [`OverlayStorage::ensure_base_template`] builds the `base` template without downloading
//! anything.
//!
//! # Layout
//! - [`config`](OverlayConfig): the storage directory, the sandbox id mapping, host paths.
//! - `storage`: [`OverlayStorage`] and the on-disk layout under the storage directory.
//! - [`layer`]: [`LayerId`], [`LayerManifest`] and the [`LayerRegistry`] that allocates,
//!   commits and looks up layers (the unit snapshots build on).
//! - `base`: what the `base` template's tree contains (a pure plan) and how it is written.
//! - `records`: the versioned JSON metadata files.
//! - `copy`, `fsutil`: copying host files without following symlinks; atomic writes; removal.
//! - `clone`: copying a sandbox's upper directory into a snapshot layer exactly.
//! - `sys`: the `OverlaySys` seam (ownership changes, entropy) with the real Linux
//!   implementation and a recording fake for tests.
//! - [`error`](OverlayError): [`OverlayError`] and its mapping onto core's `StorageError`.
//!
//! The crate compiles on every Unix; off Linux, [`OverlayStorage::new`] returns
//! [`OverlayError::Unsupported`]. Its only `unsafe` is the btrfs subvolume `ioctl` in
//! `sys/linux.rs`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod base;
mod clone;
mod config;
mod copy;
mod error;
mod fsutil;
pub mod layer;
mod records;
mod storage;
mod sys;

pub use config::OverlayConfig;
pub use error::OverlayError;
pub use layer::{LayerId, LayerManifest, LayerRegistry, PendingLayer};
pub use storage::{OverlayStorage, SourceFile, TemplateSource};
