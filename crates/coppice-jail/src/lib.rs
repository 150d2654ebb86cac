//! FreeBSD jail(2) `Runtime` for coppice.
//!
//! Charter: one mechanism (jail(2) with VNET and rctl limits) implementing
//! `coppice_core::Runtime`; all `unsafe` under `src/sys/`. The backend itself arrives with the
//! FreeBSD backends work; until then this crate exports nothing and claims nothing.
#![forbid(unsafe_code)]
