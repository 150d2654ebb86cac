//! FreeBSD bhyve VM `Runtime` for coppice.
//!
//! Charter: bhyve VMs (argv built from the spec, warm pool, exec through envd in the guest)
//! implementing `coppice_core::Runtime`. The backend arrives with the FreeBSD backends work;
//! until then this crate exports nothing and claims nothing.
#![forbid(unsafe_code)]
