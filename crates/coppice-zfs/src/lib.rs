//! ZFS `Storage` for coppice: a dataset per template with an `@template` snapshot, a clone of
//! it per sandbox, snapshots that become templates, and a dataset per volume.
//!
//! The plan (dataset names, `zfs` argument lists, the parsing of `zfs list -Hp`) is portable
//! and tested everywhere; the only host contact is [`ZfsSys`], which runs the `zfs` command.
//! The libzfs_core path is not built yet: every operation goes through the command.
#![forbid(unsafe_code)]

mod command;
mod layout;
mod list;
mod storage;
mod sys;

pub use layout::{DatasetName, InvalidDatasetName, ZfsLayout};
pub use list::{DatasetRow, ParseListError, parse_list};
pub use storage::ZfsStorage;
pub use sys::{CommandZfs, ZfsError, ZfsSys};
