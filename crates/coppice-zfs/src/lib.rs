//! ZFS `Storage` for coppice: a dataset per template with an `@template` snapshot, a clone of
//! it per sandbox, snapshots that become templates, and a dataset per volume.
//!
//! The plan (dataset names, operations and their `zfs` argument lists, the parsing of
//! `zfs list -Hp`) is portable and tested everywhere; the only host contact is [`ZfsSys`]:
//! [`CommandZfs`] runs the `zfs` command, and with the off-by-default `libzfs-core` feature
//! `LzcZfs` does clones, snapshots and promotions through libzfs_core (FFI in `sys/`).
#![deny(unsafe_code)]

mod command;
mod layout;
mod list;
mod storage;
#[allow(unsafe_code)]
mod sys;

pub use command::ZfsOp;
pub use layout::{DatasetName, InvalidDatasetName, ZfsLayout};
pub use list::{DatasetKind, DatasetRow, ParseListError, parse_list};
pub use storage::ZfsStorage;
#[cfg(feature = "libzfs-core")]
pub use sys::LzcZfs;
pub use sys::{CommandZfs, ZfsError, ZfsSys};
