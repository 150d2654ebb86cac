//! The only place that knows the OS: jail(2) calls, starting the init inside a jail, and the
//! `mount`, `umount`, `rctl`, `ifconfig` and `route` commands.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use crate::params::{EncodedParam, JailName};

#[cfg(test)]
pub(crate) mod fake;
#[cfg(target_os = "freebsd")]
mod freebsd;

#[cfg(target_os = "freebsd")]
pub use freebsd::HostJailSys;

/// What making and removing a jail needs of the host.
pub trait JailSys: Send + Sync + 'static {
    /// `jail_set(JAIL_CREATE)` with `params`; the new jail's id.
    ///
    /// # Errors
    /// The kernel refused a parameter or the jail.
    fn jail_create(&self, params: &[EncodedParam]) -> io::Result<i32>;

    /// The id of the live jail named `name`, if there is one.
    ///
    /// # Errors
    /// The lookup failed for another reason than the jail's absence.
    fn jail_id(&self, name: &JailName) -> io::Result<Option<i32>>;

    /// `jail_remove`: kills the jail's processes and removes it.
    ///
    /// # Errors
    /// The kernel refused.
    fn jail_remove(&self, jid: i32) -> io::Result<()>;

    /// Replaces devfs ruleset `number` with `commands` (`devfs rule -s <number> …` argument
    /// lists, emptying it first).
    ///
    /// # Errors
    /// `devfs` refused a rule.
    fn load_devfs_ruleset(&self, number: u16, commands: &[Vec<String>]) -> io::Result<()>;

    /// Mounts devfs on `target` with devfs ruleset `ruleset`. `target` comes from the
    /// sandbox's files, so it must be a directory itself, not a link to one elsewhere.
    ///
    /// # Errors
    /// `target` is not a plain directory, or the mount failed.
    fn mount_devfs(&self, target: &Path, ruleset: u16) -> io::Result<()>;

    /// Unmounts `target`; `false` when nothing was mounted there.
    ///
    /// # Errors
    /// The unmount failed.
    fn unmount(&self, target: &Path) -> io::Result<bool>;

    /// `rctl -a <rule>`.
    ///
    /// # Errors
    /// rctl refused the rule.
    fn rctl_add(&self, rule: &str) -> io::Result<()>;

    /// `rctl -r <filter>`: removes every rule the filter matches (none is not an error).
    ///
    /// # Errors
    /// rctl failed.
    fn rctl_remove(&self, filter: &str) -> io::Result<()>;

    /// Mounts host directory `source` on `target` with nullfs (read-only when asked).
    /// `target` comes from the sandbox's files; the caller checked that no link leads there.
    ///
    /// # Errors
    /// The mount failed.
    fn mount_nullfs(&self, source: &Path, target: &Path, read_only: bool) -> io::Result<()>;

    /// Runs one command (program first) to completion; its standard output.
    ///
    /// # Errors
    /// It could not start or exited with a failure (its standard error in the message).
    fn run(&self, argv: &[String]) -> io::Result<String>;

    /// Starts the open `program` with `argv` inside jail `jid`, with `channel` as its standard
    /// input and nothing else inherited: a forked child attaches to the jail and changes
    /// into its root before a second fork executes the program, so the init is never this
    /// process's child and lives on when the daemon stops.
    ///
    /// # Errors
    /// The fork, the attach or the exec failed.
    fn start_init(
        &self,
        jid: i32,
        program: &File,
        argv: &[String],
        channel: OwnedFd,
    ) -> io::Result<()>;
}
