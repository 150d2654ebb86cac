//! ZFS `Storage` for coppice.
//!
//! Charter: templates as datasets with an `@template` snapshot and a clone per sandbox,
//! implementing `coppice_core::Storage`. The backend arrives with the FreeBSD backends work;
//! until then this crate exports nothing and claims nothing.
#![forbid(unsafe_code)]
