//! File operations confined to one persistent volume's directory, for the volume-content API.
//!
//! Every operation starts from a descriptor of the volume's root and walks the request's path
//! one component at a time with `openat(O_NOFOLLOW)`: `..` is refused before any system call,
//! and a symlink anywhere but the last component is refused when it is met, so neither a
//! crafted path nor a symlink that a sandbox planted (even one swapped in concurrently) can
//! lead outside the volume. The last component is never followed either: a symlink is
//! reported as one. Owners are given and reported in sandbox ids through the runtime's
//! [`IdMap`](coppice_core::volume::IdMap), so `uid 1000` is the sandbox's `user` both ways.
//!
//! Everything blocks; callers run it off their async runtime.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod entry;
mod error;
mod fs;
mod path;

pub use entry::{Entry, EntryKind};
pub use error::{VolumeFsError, VolumeFsErrorKind};
pub use fs::{ArchiveSummary, Ownership, PendingWrite, VolumeFs};
pub use path::VolumePath;
