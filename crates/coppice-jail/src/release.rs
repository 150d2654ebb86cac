//! The host patch-level check: coppice refuses FreeBSD hosts that lack the fixes for the jail
//! escapes of FreeBSD-SA-26:66.jail (fdescfs `nodup`, SCM_RIGHTS dropping
//! `FD_RESOLVE_BENEATH`, `renameat` ignoring `RESOLVE_BENEATH`).

use std::fmt;

/// The first fixed patch level of each release series the advisory names. A series newer
/// than all of these was released with the fix.
const FIXED: [((u32, u32), u32); 4] = [((14, 4), 10), ((14, 5), 1), ((15, 0), 14), ((15, 1), 4)];

/// A FreeBSD kernel release as `uname -r` (or `freebsd-version -k`) prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRelease {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// `RELEASE`, or a development branch.
    pub branch: Branch,
    /// The `-pN` patch level; 0 when absent.
    pub patch: u32,
}

/// The branch part of a release string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Branch {
    /// `RELEASE` (patch levels apply).
    Release,
    /// `STABLE`, `CURRENT`, `PRERELEASE`, `BETA*` or `RC*`: no patch level to compare.
    Development,
}

impl fmt::Display for HostRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.branch {
            Branch::Release => write!(f, "{}.{}-RELEASE-p{}", self.major, self.minor, self.patch),
            Branch::Development => write!(f, "{}.{} (development branch)", self.major, self.minor),
        }
    }
}

/// Why a host may not run jails for coppice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// The release string is not one FreeBSD prints.
    #[error("cannot read the FreeBSD release {0:?}")]
    Unreadable(String),
    /// The host lacks the fixes.
    #[error(
        "FreeBSD {found} lacks the fixes for FreeBSD-SA-26:66.jail (jail escapes through \
         fdescfs, SCM_RIGHTS and renameat); update to at least {needed} with freebsd-update"
    )]
    Unpatched {
        /// What the host runs.
        found: HostRelease,
        /// The first fixed patch level of its series, or of the oldest fixed series.
        needed: String,
    },
    /// A development branch, whose fixes cannot be told from its version.
    #[error(
        "FreeBSD {found} is a development branch: coppice cannot tell whether it has the fixes \
         for FreeBSD-SA-26:66.jail; run a patched RELEASE (14.4-p10, 14.5-p1, 15.0-p14, 15.1-p4 \
         or later)"
    )]
    Unverifiable {
        /// What the host runs.
        found: HostRelease,
    },
}

impl HostRelease {
    /// Parses `15.0-RELEASE-p14`, `14.5-RELEASE`, `16.0-CURRENT`, `15.1-STABLE`, ….
    ///
    /// # Errors
    /// [`ReleaseError::Unreadable`].
    pub fn parse(text: &str) -> Result<Self, ReleaseError> {
        let unreadable = || ReleaseError::Unreadable(text.to_owned());
        let text = text.trim();
        let mut parts = text.split('-');
        let (major, minor) = parts
            .next()
            .and_then(|version| version.split_once('.'))
            .ok_or_else(unreadable)?;
        let major = major.parse().map_err(|_| unreadable())?;
        let minor = minor.parse().map_err(|_| unreadable())?;
        let branch = match parts.next().ok_or_else(unreadable)? {
            "RELEASE" => Branch::Release,
            "STABLE" | "CURRENT" | "PRERELEASE" => Branch::Development,
            other
                if other.starts_with("BETA")
                    || other.starts_with("RC")
                    || other.starts_with("ALPHA") =>
            {
                Branch::Development
            }
            _ => return Err(unreadable()),
        };
        let patch = match parts.next() {
            None => 0,
            Some(level) => level
                .strip_prefix('p')
                .and_then(|n| n.parse().ok())
                .ok_or_else(unreadable)?,
        };
        if parts.next().is_some() {
            return Err(unreadable());
        }
        Ok(Self {
            major,
            minor,
            branch,
            patch,
        })
    }

    /// Whether this host has the jail fixes coppice requires.
    ///
    /// # Errors
    /// [`ReleaseError::Unpatched`] or [`ReleaseError::Unverifiable`].
    pub fn check(self) -> Result<(), ReleaseError> {
        if self.branch == Branch::Development {
            return Err(ReleaseError::Unverifiable { found: self });
        }
        let series = (self.major, self.minor);
        if let Some((_, fixed)) = FIXED.iter().find(|(s, _)| *s == series) {
            return if self.patch >= *fixed {
                Ok(())
            } else {
                Err(ReleaseError::Unpatched {
                    found: self,
                    needed: format!("{}.{}-RELEASE-p{fixed}", self.major, self.minor),
                })
            };
        }
        // A series not named by the advisory is newer than the fixed series of its major
        // version (released with the fix) or older than all of them (unsupported).
        let oldest_fixed = |major: u32| {
            FIXED
                .iter()
                .filter(|((fixed_major, _), _)| *fixed_major == major)
                .min_by_key(|((_, minor), _)| *minor)
                .map(|((major, minor), patch)| format!("{major}.{minor}-RELEASE-p{patch}"))
        };
        let newest_major = FIXED
            .iter()
            .map(|((major, _), _)| *major)
            .max()
            .unwrap_or(0);
        let newest_minor_of_major = FIXED
            .iter()
            .filter(|((major, _), _)| *major == self.major)
            .map(|((_, minor), _)| *minor)
            .max();
        let newer = self.major > newest_major
            || newest_minor_of_major.is_some_and(|minor| self.minor > minor);
        if newer {
            Ok(())
        } else {
            Err(ReleaseError::Unpatched {
                found: self,
                needed: oldest_fixed(self.major)
                    .or_else(|| oldest_fixed(14))
                    .unwrap_or_default(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_patch_levels() {
        let cases = [
            ("15.0-RELEASE-p14", Ok(())),
            ("15.0-RELEASE-p15", Ok(())),
            ("15.1-RELEASE-p4", Ok(())),
            ("14.4-RELEASE-p10", Ok(())),
            ("14.5-RELEASE-p1", Ok(())),
            ("15.2-RELEASE", Ok(())),
            ("16.0-RELEASE-p2", Ok(())),
            ("14.6-RELEASE", Ok(())),
            ("15.0-RELEASE-p13", Err("15.0-RELEASE-p14")),
            ("15.1-RELEASE", Err("15.1-RELEASE-p4")),
            ("14.5-RELEASE", Err("14.5-RELEASE-p1")),
            ("14.4-RELEASE-p9", Err("14.4-RELEASE-p10")),
            ("14.3-RELEASE-p20", Err("14.4-RELEASE-p10")),
            ("15.0-RELEASE", Err("15.0-RELEASE-p14")),
            ("13.5-RELEASE-p8", Err("14.4-RELEASE-p10")),
        ];
        for (text, expected) in cases {
            let result = HostRelease::parse(text).unwrap().check();
            match (result, expected) {
                (Ok(()), Ok(())) => {}
                (Err(ReleaseError::Unpatched { needed, .. }), Err(want)) => {
                    assert_eq!(needed, want, "{text}");
                }
                (other, _) => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn test_development_branches_and_garbage() {
        for text in [
            "16.0-CURRENT",
            "15.1-STABLE",
            "15.1-RC2",
            "15.1-BETA1",
            "14.4-PRERELEASE",
        ] {
            let error = HostRelease::parse(text).unwrap().check().unwrap_err();
            assert!(matches!(error, ReleaseError::Unverifiable { .. }), "{text}");
            assert!(error.to_string().contains("development branch"), "{text}");
        }
        for text in [
            "",
            "15",
            "15.0",
            "15.0-FOO",
            "x.0-RELEASE",
            "15.0-RELEASE-14",
            "15.0-RELEASE-p1-x",
        ] {
            assert_eq!(
                HostRelease::parse(text),
                Err(ReleaseError::Unreadable(text.to_owned())),
                "{text:?}"
            );
        }
        let error = HostRelease::parse("15.0-RELEASE-p3\n")
            .unwrap()
            .check()
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "FreeBSD 15.0-RELEASE-p3 lacks the fixes for FreeBSD-SA-26:66.jail (jail escapes \
             through fdescfs, SCM_RIGHTS and renameat); update to at least 15.0-RELEASE-p14 with \
             freebsd-update"
        );
    }
}
