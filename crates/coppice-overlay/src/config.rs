//! `OverlayConfig`: where overlay storage keeps its files, which host ids sandboxes map to, and
//! which host directories the base template draws from.

use std::path::{Path, PathBuf};

use crate::base::USER_ID;
use crate::copy::Owner;
use crate::error::OverlayError;

/// Configuration of [`OverlayStorage`](crate::OverlayStorage), passed in by the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayConfig {
    /// The storage directory (e.g. `<data-dir>/storage`); created if missing. Holds `layers/`,
    /// `templates/` and `sandboxes/`.
    pub root: PathBuf,
    /// Host uid that uid 0 inside sandboxes maps to (e.g. 200000). The sandbox user, uid 1000
    /// inside, is this plus 1000 on the host.
    pub sandbox_root_uid: u32,
    /// Host gid that gid 0 inside sandboxes maps to.
    pub sandbox_root_gid: u32,
    /// The host directory bind-mounted read-only as the sandboxes' `/usr` (normally `/usr`).
    pub host_usr: PathBuf,
    /// The host directory the base template copies `/etc` entries from (normally `/etc`).
    pub host_etc: PathBuf,
}

impl OverlayConfig {
    /// A configuration with the host's own `/usr` and `/etc`.
    pub fn new(root: PathBuf, sandbox_root_uid: u32, sandbox_root_gid: u32) -> Self {
        Self {
            root,
            sandbox_root_uid,
            sandbox_root_gid,
            host_usr: PathBuf::from("/usr"),
            host_etc: PathBuf::from("/etc"),
        }
    }

    /// Checks that paths are absolute and that the sandbox user's host ids fit in a `u32`.
    pub(crate) fn validate(&self) -> Result<(), OverlayError> {
        check_absolute("root", &self.root)?;
        check_absolute("host_usr", &self.host_usr)?;
        check_absolute("host_etc", &self.host_etc)?;
        self.user_owner().map(|_| ())
    }

    /// Host ids of the sandbox's root.
    pub(crate) fn root_owner(&self) -> Owner {
        Owner {
            uid: self.sandbox_root_uid,
            gid: self.sandbox_root_gid,
        }
    }

    /// Host ids of the sandbox's default user.
    pub(crate) fn user_owner(&self) -> Result<Owner, OverlayError> {
        let shift = |id: u32| {
            id.checked_add(USER_ID)
                .ok_or(OverlayError::IdOverflow { id })
        };
        Ok(Owner {
            uid: shift(self.sandbox_root_uid)?,
            gid: shift(self.sandbox_root_gid)?,
        })
    }
}

fn check_absolute(field: &'static str, path: &Path) -> Result<(), OverlayError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(OverlayError::RelativePath {
            field,
            path: path.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_validate_relative_root_is_rejected() {
        let config = OverlayConfig::new(PathBuf::from("storage"), 200_000, 200_000);

        let err = config.validate().unwrap_err();

        assert!(matches!(
            err,
            OverlayError::RelativePath { field: "root", .. }
        ));
    }

    #[test]
    fn test_validate_uid_near_max_is_id_overflow() {
        let config = OverlayConfig::new(PathBuf::from("/storage"), u32::MAX - 10, 200_000);

        let err = config.validate().unwrap_err();

        assert!(matches!(err, OverlayError::IdOverflow { id } if id == u32::MAX - 10));
    }

    #[test]
    fn test_user_owner_is_root_plus_1000() {
        let config = OverlayConfig::new(PathBuf::from("/storage"), 200_000, 300_000);

        let owner = config.user_owner().unwrap();

        assert_eq!(
            owner,
            Owner {
                uid: 201_000,
                gid: 301_000
            }
        );
    }
}
