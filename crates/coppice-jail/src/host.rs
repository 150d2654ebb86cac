//! `JailHost`: makes and removes a sandbox's jail on the host, in steps that are each undone
//! when a later one fails, so a failed create leaves no jail, mount or rule behind.
//!
//! Create: devfs on `<root>/dev` with the sandbox's ruleset, then the jail (`persist`, so it
//! lives before any process does), then its rctl rules. Remove, in reverse: the jail (which
//! kills its processes), its rules, the devfs mount; removing what is already gone succeeds.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::params::{InteriorNul, JailName, JailSpec, encode, jail_params};
use crate::rctl::{JailLimits, removal_filter, rules};
use crate::sys::JailSys;

/// Why a jail could not be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// A live jail already has the name.
    #[error("a jail named {name} already exists")]
    AlreadyExists {
        /// The name.
        name: String,
    },
    /// The devfs ruleset could not be loaded.
    #[error("loading devfs ruleset {number} failed")]
    Ruleset {
        /// The ruleset.
        number: u16,
        /// The host's error.
        #[source]
        source: io::Error,
    },
    /// A parameter cannot be passed to jail(2).
    #[error(transparent)]
    Parameter(#[from] InteriorNul),
    /// A step failed on the host; the steps before it were undone.
    #[error("{step} failed for jail {name}")]
    Host {
        /// The step.
        step: &'static str,
        /// The jail.
        name: String,
        /// The host's error.
        #[source]
        source: io::Error,
    },
}

/// Makes and removes jails through a [`JailSys`].
pub struct JailHost {
    sys: Arc<dyn JailSys>,
}

impl std::fmt::Debug for JailHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JailHost").finish_non_exhaustive()
    }
}

fn dev_of(spec: &JailSpec) -> PathBuf {
    spec.path.join("dev")
}

impl JailHost {
    /// A host reached through `sys`.
    pub fn new(sys: Arc<dyn JailSys>) -> Self {
        Self { sys }
    }

    /// Loads the devfs ruleset `number` ([`crate::devfs`]); once, at start, before any jail
    /// uses it: mounting devfs with a ruleset that does not exist makes an empty one, which
    /// hides nothing.
    ///
    /// # Errors
    /// `devfs` refused a rule.
    pub fn load_devfs_ruleset(&self, number: u16) -> Result<(), JailError> {
        self.sys
            .load_devfs_ruleset(number, &crate::devfs::devfs_commands(number))
            .map_err(|source| JailError::Ruleset { number, source })
    }

    fn host_error(step: &'static str, name: &JailName) -> impl FnOnce(io::Error) -> JailError {
        let name = name.as_str().to_owned();
        move |source| JailError::Host { step, name, source }
    }

    /// Makes the jail of `spec` with `limits`; its id.
    ///
    /// # Errors
    /// [`JailError::AlreadyExists`], [`JailError::Parameter`], or the [`JailError::Host`]
    /// step that failed, with everything before it undone.
    pub fn create(&self, spec: &JailSpec, limits: JailLimits) -> Result<i32, JailError> {
        let name = &spec.name;
        if self
            .sys
            .jail_id(name)
            .map_err(Self::host_error("look up the jail", name))?
            .is_some()
        {
            return Err(JailError::AlreadyExists {
                name: name.as_str().to_owned(),
            });
        }
        let params = encode(&jail_params(spec))?;
        let dev = dev_of(spec);
        self.sys
            .mount_devfs(&dev, spec.devfs_ruleset)
            .map_err(Self::host_error("mount devfs", name))?;
        let jid = match self.sys.jail_create(&params) {
            Ok(jid) => jid,
            Err(source) => {
                let _ = self.sys.unmount(&dev);
                return Err(Self::host_error("create the jail", name)(source));
            }
        };
        for rule in rules(name, limits) {
            if let Err(source) = self.sys.rctl_add(&rule) {
                let _ = self.sys.jail_remove(jid);
                let _ = self.sys.rctl_remove(&removal_filter(name));
                let _ = self.sys.unmount(&dev);
                return Err(Self::host_error("add an rctl rule", name)(source));
            }
        }
        Ok(jid)
    }

    /// Removes the jail of `spec` with its rules and devfs mount. Every step is tried even
    /// when one fails, so a retry has less left to do.
    ///
    /// # Errors
    /// The first step that failed.
    pub fn remove(&self, spec: &JailSpec) -> Result<(), JailError> {
        let name = &spec.name;
        let mut first = None;
        let mut note = |result: Result<(), JailError>| {
            if let Err(error) = result
                && first.is_none()
            {
                first = Some(error);
            }
        };
        note(match self.sys.jail_id(name) {
            Ok(Some(jid)) => self
                .sys
                .jail_remove(jid)
                .map_err(Self::host_error("remove the jail", name)),
            Ok(None) => Ok(()),
            Err(source) => Err(Self::host_error("look up the jail", name)(source)),
        });
        note(
            self.sys
                .rctl_remove(&removal_filter(name))
                .map_err(Self::host_error("remove rctl rules", name)),
        );
        note(
            self.sys
                .unmount(&dev_of(spec))
                .map(drop)
                .map_err(Self::host_error("unmount devfs", name)),
        );
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeJailSys;

    fn spec() -> JailSpec {
        JailSpec {
            name: JailName::parse("sbx-a1").unwrap(),
            path: "/var/db/coppice/sandboxes/a1".into(),
            hostname: "a1".into(),
            devfs_ruleset: 4215,
            securelevel: 2,
            vnet: true,
        }
    }

    const LIMITS: JailLimits = JailLimits {
        memory_mb: 512,
        vcpus: 1,
        max_procs: 256,
    };

    fn host() -> (JailHost, Arc<FakeJailSys>) {
        let fake = Arc::new(FakeJailSys::default());
        let host = JailHost::new(Arc::clone(&fake) as Arc<dyn JailSys>);
        host.load_devfs_ruleset(4215).unwrap();
        (host, fake)
    }

    #[test]
    fn test_a_jail_needs_its_devfs_ruleset_loaded_first() {
        let fake = Arc::new(FakeJailSys::default());
        let host = JailHost::new(Arc::clone(&fake) as Arc<dyn JailSys>);
        let error = host.create(&spec(), LIMITS).unwrap_err();
        assert!(
            matches!(
                error,
                JailError::Host {
                    step: "mount devfs",
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(fake.held(), (vec![], vec![], vec![]));
        host.load_devfs_ruleset(4215).unwrap();
        host.create(&spec(), LIMITS).unwrap();
    }

    #[test]
    fn test_create_mounts_devfs_makes_the_jail_and_adds_its_rules() {
        let (host, fake) = host();
        let jid = host.create(&spec(), LIMITS).unwrap();
        assert_eq!(jid, 1);
        assert_eq!(
            fake.calls(),
            [
                "devfs ruleset 4215 (15 commands)",
                "jail_id sbx-a1",
                "mount devfs ruleset=4215 /var/db/coppice/sandboxes/a1/dev",
                "jail_create sbx-a1 (14 params)",
                "rctl -a jail:sbx-a1:memoryuse:deny=536870912",
                "rctl -a jail:sbx-a1:pcpu:deny=100",
                "rctl -a jail:sbx-a1:maxproc:deny=256",
            ]
        );
        assert!(matches!(
            host.create(&spec(), LIMITS).unwrap_err(),
            JailError::AlreadyExists { .. }
        ));

        host.remove(&spec()).unwrap();
        assert_eq!(fake.held(), (vec![], vec![], vec![]));
        // Removing what is gone succeeds.
        host.remove(&spec()).unwrap();
    }

    #[test]
    fn test_a_failure_at_any_step_of_create_leaves_nothing_behind() {
        let steps = [
            ("mount_devfs", 0, "mount devfs"),
            ("jail_create", 0, "create the jail"),
            ("rctl_add", 0, "add an rctl rule"),
            ("rctl_add", 1, "add an rctl rule"),
            ("rctl_add", 2, "add an rctl rule"),
        ];
        for (operation, after, step) in steps {
            let (host, fake) = host();
            fake.fail(operation, after);
            let error = host.create(&spec(), LIMITS).unwrap_err();
            assert!(
                matches!(&error, JailError::Host { step: s, .. } if *s == step),
                "{operation} #{after}: {error:?}"
            );
            assert_eq!(
                fake.held(),
                (vec![], vec![], vec![]),
                "{operation} #{after} left something behind"
            );
            // And the name is free again.
            host.create(&spec(), LIMITS).unwrap();
        }
    }

    #[test]
    fn test_remove_tries_every_step_and_reports_the_first_failure() {
        let (host, fake) = host();
        host.create(&spec(), LIMITS).unwrap();
        fake.fail("jail_remove", 0);
        let error = host.remove(&spec()).unwrap_err();
        assert!(matches!(
            error,
            JailError::Host {
                step: "remove the jail",
                ..
            }
        ));
        let (jails, mounts, rules) = fake.held();
        assert_eq!(jails, ["sbx-a1"], "the jail is still there to retry");
        assert!(mounts.is_empty() && rules.is_empty(), "the other steps ran");
        host.remove(&spec()).unwrap();
        assert_eq!(fake.held(), (vec![], vec![], vec![]));
    }

    #[test]
    fn test_a_nul_in_a_parameter_runs_nothing() {
        let (host, fake) = host();
        let mut spec = spec();
        spec.hostname = "a\0".into();
        assert!(matches!(
            host.create(&spec, LIMITS).unwrap_err(),
            JailError::Parameter(_)
        ));
        assert_eq!(fake.calls()[1..], ["jail_id sbx-a1"]);
    }
}
