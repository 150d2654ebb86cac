//! The `base` template: a small layer built from nothing but the host, with no download.
//!
//! Its tree holds the usr-merge symlinks (`bin -> usr/bin`, …), empty mount points, and a
//! generated `/etc` (users, hosts, hostname, a machine id, a profile) plus a few host `/etc`
//! entries copied in. The sandbox gets the host's `/usr` as a read-only bind mount on top.
//!
//! [`plan`] decides what goes into the tree and is pure; [`apply`] writes a plan into a
//! directory, giving every entry to the sandbox's root (or user) through `OverlaySys`.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use crate::copy::{self, Owner};
use crate::error::OverlayError;
use crate::fsutil;
use crate::sys::OverlaySys;

type Result<T> = std::result::Result<T, OverlayError>;

/// Id of the base template.
pub(crate) const BASE_TEMPLATE: &str = "base";
/// The user sandbox processes run as by default.
pub(crate) const DEFAULT_USER: &str = "user";
/// The default working directory, the default user's home.
pub(crate) const DEFAULT_WORKDIR: &str = "/home/user";
/// uid and gid of [`DEFAULT_USER`] inside the sandbox.
pub(crate) const USER_ID: u32 = 1000;
/// Where the host's `/usr` is mounted in the sandbox.
pub(crate) const USR_TARGET: &str = "/usr";
/// Description recorded in the base layer's manifest.
pub(crate) const LAYER_DESCRIPTION: &str =
    "base template: usr-merge links, mount points and a generated /etc";

/// Top-level directories that merged-/usr systems replace by symlinks into `/usr`.
const USR_MERGE_DIRS: &[&str] = &["bin", "lib", "lib32", "lib64", "libx32", "sbin"];

/// Directories of the tree, parents before children: path, mode, owner.
const DIRS: &[(&str, u32, SandboxOwner)] = &[
    ("usr", 0o755, SandboxOwner::Root),
    ("proc", 0o755, SandboxOwner::Root),
    ("dev", 0o755, SandboxOwner::Root),
    ("tmp", 0o1777, SandboxOwner::Root),
    ("sys", 0o755, SandboxOwner::Root),
    ("run", 0o755, SandboxOwner::Root),
    ("root", 0o700, SandboxOwner::Root),
    ("home", 0o755, SandboxOwner::Root),
    ("home/user", 0o755, SandboxOwner::User),
    ("var", 0o755, SandboxOwner::Root),
    ("var/tmp", 0o1777, SandboxOwner::Root),
    ("var/log", 0o755, SandboxOwner::Root),
    ("workspace", 0o755, SandboxOwner::Root),
    (".oldroot", 0o755, SandboxOwner::Root),
    ("etc", 0o755, SandboxOwner::Root),
    ("mnt", 0o755, SandboxOwner::Root),
    ("opt", 0o755, SandboxOwner::Root),
    ("srv", 0o755, SandboxOwner::Root),
];

/// Host `/etc` entries copied into the template when the host has them.
pub(crate) const HOST_ETC_COPIES: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "os-release",
    "debian_version",
    "localtime",
    "bash.bashrc",
    "inputrc",
    "profile.d",
    "skel",
    "login.defs",
    "shells",
    "environment",
    "mime.types",
    "python3",
    "python3.11",
    "mailcap",
];

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
user:x:1000:1000::/home/user:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
";

const GROUP: &str = "\
root:x:0:
user:x:1000:
nogroup:x:65534:
";

const HOSTS: &str = "\
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
";

const HOSTNAME: &str = "sandbox\n";

const RESOLV_CONF: &str = "\
# The sandbox network is loopback-only until coppice configures it and rewrites this file.
";

const NSSWITCH_CONF: &str = "\
passwd: files
group: files
shadow: files
hosts: files dns
";

const PROFILE: &str = r#"# /etc/profile of a coppice sandbox, sourced by login shells.

PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
export PATH

# Interactive bash login shells also read the system-wide bashrc.
if [ -n "${PS1-}" ] && [ -n "${BASH-}" ] && [ -r /etc/bash.bashrc ]; then
    . /etc/bash.bashrc
fi

# Drop-in snippets, in name order.
if [ -d /etc/profile.d ]; then
    for snippet in /etc/profile.d/*.sh; do
        [ -r "$snippet" ] && . "$snippet"
    done
    unset snippet
fi
"#;

/// Which sandbox identity owns an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SandboxOwner {
    /// uid/gid 0 inside the sandbox.
    Root,
    /// The default user, uid/gid 1000 inside the sandbox.
    User,
}

/// Host ids of the sandbox identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostIds {
    pub(crate) root: Owner,
    pub(crate) user: Owner,
}

impl HostIds {
    fn of(self, owner: SandboxOwner) -> Owner {
        match owner {
            SandboxOwner::Root => self.root,
            SandboxOwner::User => self.user,
        }
    }
}

/// One thing to create in the tree; paths are relative to the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A directory with an exact mode.
    Dir {
        path: &'static str,
        mode: u32,
        owner: SandboxOwner,
    },
    /// A symlink.
    Symlink { path: &'static str, target: String },
    /// A generated file owned by the sandbox's root.
    File {
        path: &'static str,
        contents: String,
        mode: u32,
    },
    /// `etc/<name>` copied from the host's `/etc`, if the host has it.
    HostEtc { name: &'static str },
}

/// The entries of the base tree, in creation order.
///
/// `host_usr_has(name)` says whether the host's `/usr/<name>` exists; only those usr-merge
/// links are made. `machine_id` is the 32-hex-digit contents of `/etc/machine-id`.
pub(crate) fn plan(host_usr_has: impl Fn(&str) -> bool, machine_id: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    for name in USR_MERGE_DIRS
        .iter()
        .copied()
        .filter(|name| host_usr_has(name))
    {
        entries.push(Entry::Symlink {
            path: name,
            target: format!("usr/{name}"),
        });
    }
    for &(path, mode, owner) in DIRS {
        entries.push(Entry::Dir { path, mode, owner });
    }
    let files: [(&'static str, String, u32); 8] = [
        ("etc/passwd", PASSWD.to_owned(), 0o644),
        ("etc/group", GROUP.to_owned(), 0o644),
        ("etc/hosts", HOSTS.to_owned(), 0o644),
        ("etc/hostname", HOSTNAME.to_owned(), 0o644),
        ("etc/resolv.conf", RESOLV_CONF.to_owned(), 0o644),
        ("etc/nsswitch.conf", NSSWITCH_CONF.to_owned(), 0o644),
        ("etc/machine-id", format!("{machine_id}\n"), 0o444),
        ("etc/profile", PROFILE.to_owned(), 0o644),
    ];
    for (path, contents, mode) in files {
        entries.push(Entry::File {
            path,
            contents,
            mode,
        });
    }
    for &name in HOST_ETC_COPIES {
        entries.push(Entry::HostEtc { name });
    }
    entries
}

/// Formats 16 random bytes as a machine id (32 lowercase hex digits).
pub(crate) fn machine_id(random: &[u8; 16]) -> String {
    random
        .iter()
        .fold(String::with_capacity(32), |mut id, byte| {
            // Writing to a String cannot fail.
            let _ = write!(id, "{byte:02x}");
            id
        })
}

/// Writes `entries` into the empty directory `tree`, copying host entries from `host_etc`.
///
/// # Errors
/// I/O failures, naming the path; the caller discards the half-written tree.
pub(crate) fn apply(
    sys: &dyn OverlaySys,
    tree: &Path,
    entries: &[Entry],
    ids: HostIds,
    host_etc: &Path,
) -> Result<()> {
    ids.root.apply(sys, tree)?;
    fsutil::set_mode(tree, 0o755)?;
    for entry in entries {
        match entry {
            Entry::Dir { path, mode, owner } => {
                let path = tree.join(path);
                fsutil::create_dir(&path)?;
                ids.of(*owner).apply(sys, &path)?;
                fsutil::set_mode(&path, *mode)?;
            }
            Entry::Symlink { path, target } => {
                let path = tree.join(path);
                std::os::unix::fs::symlink(target, &path).map_err(|source| {
                    OverlayError::Symlink {
                        path: path.clone(),
                        source,
                    }
                })?;
                ids.root.apply(sys, &path)?;
            }
            Entry::File {
                path,
                contents,
                mode,
            } => {
                let path = tree.join(path);
                write_new(&path, contents.as_bytes()).map_err(|source| {
                    OverlayError::WriteFile {
                        path: path.clone(),
                        source,
                    }
                })?;
                ids.root.apply(sys, &path)?;
                fsutil::set_mode(&path, *mode)?;
            }
            Entry::HostEtc { name } => copy_host_etc(sys, host_etc, tree, name, ids.root)?,
        }
    }
    Ok(())
}

fn copy_host_etc(
    sys: &dyn OverlaySys,
    host_etc: &Path,
    tree: &Path,
    name: &str,
    owner: Owner,
) -> Result<()> {
    let src = host_etc.join(name);
    match std::fs::symlink_metadata(&src) {
        Ok(_) => {}
        Err(source) if source.kind() == io::ErrorKind::NotFound => {
            tracing::debug!(path = %src.display(), "host has no such /etc entry");
            return Ok(());
        }
        Err(source) => return Err(OverlayError::Stat { path: src, source }),
    }
    let dst: PathBuf = tree.join("etc").join(name);
    copy::copy_tree(sys, &src, &dst, owner)?;
    Ok(())
}

pub(crate) fn write_new(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(contents)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::sys::FakeOverlaySys;

    const IDS: HostIds = HostIds {
        root: Owner {
            uid: 200_000,
            gid: 300_000,
        },
        user: Owner {
            uid: 201_000,
            gid: 301_000,
        },
    };

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn test_plan_usr_merge_links_only_for_present_dirs() {
        let entries = plan(|name| matches!(name, "bin" | "lib"), &"0".repeat(32));

        let links: Vec<&Entry> = entries
            .iter()
            .filter(|entry| matches!(entry, Entry::Symlink { .. }))
            .collect();
        assert_eq!(
            links,
            [
                &Entry::Symlink {
                    path: "bin",
                    target: "usr/bin".to_owned()
                },
                &Entry::Symlink {
                    path: "lib",
                    target: "usr/lib".to_owned()
                },
            ]
        );
    }

    #[test]
    fn test_plan_any_host_shadow_is_not_included() {
        let entries = plan(|_| true, &"0".repeat(32));

        let shadow = entries.iter().any(|entry| {
            matches!(entry, Entry::File { path, .. } if path.ends_with("shadow"))
                || matches!(entry, Entry::HostEtc { name } if name.contains("shadow"))
        });
        assert!(!shadow);
    }

    #[test]
    fn test_plan_dirs_come_after_their_parents() {
        let entries = plan(|_| true, &"0".repeat(32));

        let dirs: Vec<&str> = entries
            .iter()
            .filter_map(|entry| match entry {
                Entry::Dir { path, .. } => Some(*path),
                _ => None,
            })
            .collect();
        let misordered: Vec<&&str> = dirs
            .iter()
            .enumerate()
            .filter(|(index, path)| {
                path.rsplit_once('/')
                    .is_some_and(|(parent, _)| !dirs[..*index].contains(&parent))
            })
            .map(|(_, path)| path)
            .collect();
        assert!(misordered.is_empty(), "{misordered:?}");
    }

    #[test]
    fn test_machine_id_16_bytes_give_32_hex_digits() {
        let id = machine_id(&[0xab; 16]);

        assert_eq!(id, "ab".repeat(16));
    }

    #[test]
    fn test_apply_sets_owners_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir(&tree).unwrap();
        let host_etc = dir.path().join("host-etc");
        fs::create_dir(&host_etc).unwrap();
        let sys = FakeOverlaySys::default();

        apply(
            &sys,
            &tree,
            &plan(|_| false, &"1".repeat(32)),
            IDS,
            &host_etc,
        )
        .unwrap();

        assert_eq!(mode_of(&tree.join("tmp")), 0o1777);
        assert_eq!(mode_of(&tree.join("var/tmp")), 0o1777);
        assert_eq!(mode_of(&tree.join("root")), 0o700);
        assert_eq!(mode_of(&tree.join("etc/machine-id")), 0o444);
        assert_eq!(sys.owner(&tree.join("home/user")), Some((201_000, 301_000)));
        assert_eq!(sys.owner(&tree.join("home")), Some((200_000, 300_000)));
        assert_eq!(
            sys.owner(&tree.join("etc/passwd")),
            Some((200_000, 300_000))
        );
        assert_eq!(sys.owner(&tree), Some((200_000, 300_000)));
    }

    #[test]
    fn test_apply_missing_host_etc_entries_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir(&tree).unwrap();
        let sys = FakeOverlaySys::default();

        apply(
            &sys,
            &tree,
            &plan(|_| false, &"1".repeat(32)),
            IDS,
            &dir.path().join("none"),
        )
        .unwrap();

        assert!(!tree.join("etc/ssl").exists());
        assert!(tree.join("etc/passwd").is_file());
    }
}
