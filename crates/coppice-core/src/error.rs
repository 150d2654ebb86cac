//! The classification every backend and manager error maps onto, so that frontends pick a
//! status code without knowing which backend failed.

/// What kind of failure an error is, independent of which layer produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The named thing does not exist.
    NotFound,
    /// The thing already exists.
    AlreadyExists,
    /// The request is malformed or out of the allowed range.
    Invalid,
    /// The operation does not fit the current state (e.g. killing a sandbox being killed).
    Conflict,
    /// A capacity limit was reached; trying later may work.
    Exhausted,
    /// The disk holding sandboxes is full (or a quota is reached); nothing was changed.
    OutOfSpace,
    /// The caller did not prove it may do this (a missing or wrong token).
    Unauthenticated,
    /// The backend cannot do this at all.
    Unsupported,
    /// Anything else: a failure inside the host or backend.
    Internal,
}
