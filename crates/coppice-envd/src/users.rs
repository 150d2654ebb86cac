//! Sandbox users and groups, read from the sandbox's own `/etc/passwd` and `/etc/group`
//! (no NSS: the sandbox's files are the only source envd may trust).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One account from `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
    /// Login shell.
    pub shell: String,
}

/// Where the account databases live (the sandbox's `/etc`, or a test's directory).
#[derive(Debug, Clone)]
pub struct UserDb {
    passwd: PathBuf,
    group: PathBuf,
}

impl UserDb {
    /// The databases under `etc` (normally `/etc`).
    #[must_use]
    pub fn new(etc: &Path) -> Self {
        Self {
            passwd: etc.join("passwd"),
            group: etc.join("group"),
        }
    }

    /// Looks a user up by name; `None` when there is no such account.
    #[must_use]
    pub fn user(&self, name: &str) -> Option<User> {
        let text = std::fs::read_to_string(&self.passwd).ok()?;
        text.lines()
            .filter_map(parse_passwd_line)
            .find(|user| user.name == name)
    }

    /// A snapshot of id → name for users and groups, for listing many entries at once.
    #[must_use]
    pub fn names(&self) -> Names {
        let users = std::fs::read_to_string(&self.passwd)
            .map(|text| {
                text.lines()
                    .filter_map(parse_passwd_line)
                    .map(|user| (user.uid, user.name))
                    .collect()
            })
            .unwrap_or_default();
        let groups = std::fs::read_to_string(&self.group)
            .map(|text| text.lines().filter_map(parse_group_line).collect())
            .unwrap_or_default();
        Names { users, groups }
    }
}

/// Id → name maps; an id without a name shows as its number (as `ls -l` does).
#[derive(Debug, Clone, Default)]
pub struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    /// The user name of `uid`.
    #[must_use]
    pub fn user(&self, uid: u32) -> String {
        self.users
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }

    /// The group name of `gid`.
    #[must_use]
    pub fn group(&self, gid: u32) -> String {
        self.groups
            .get(&gid)
            .cloned()
            .unwrap_or_else(|| gid.to_string())
    }
}

fn parse_passwd_line(line: &str) -> Option<User> {
    let mut fields = line.split(':');
    let name = fields.next()?.trim();
    if name.is_empty() || name.starts_with('#') {
        return None;
    }
    let _password = fields.next()?;
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    let _gecos = fields.next()?;
    let home = fields.next()?;
    let shell = fields.next().unwrap_or("/bin/sh");
    Some(User {
        name: name.to_owned(),
        uid,
        gid,
        home: PathBuf::from(if home.is_empty() { "/" } else { home }),
        shell: shell.to_owned(),
    })
}

fn parse_group_line(line: &str) -> Option<(u32, String)> {
    let mut fields = line.split(':');
    let name = fields.next()?.trim();
    if name.is_empty() || name.starts_with('#') {
        return None;
    }
    let _password = fields.next()?;
    let gid = fields.next()?.parse().ok()?;
    Some((gid, name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, UserDb) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("passwd"),
            "# comment\nroot:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\nbroken:x:nope\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("group"), "root:x:0:\nuser:x:1000:\n").unwrap();
        let db = UserDb::new(dir.path());
        (dir, db)
    }

    #[test]
    fn test_user_lookup_reads_ids_home_and_shell() {
        let (_dir, db) = db();
        let user = db.user("user").unwrap();
        assert_eq!((user.uid, user.gid), (1000, 1000));
        assert_eq!(user.home, PathBuf::from("/home/user"));
        assert_eq!(user.shell, "/bin/bash");
        assert!(db.user("nobody-here").is_none());
        assert!(db.user("broken").is_none());
    }

    #[test]
    fn test_names_fall_back_to_numbers() {
        let (_dir, db) = db();
        let names = db.names();
        assert_eq!(names.user(1000), "user");
        assert_eq!(names.group(0), "root");
        assert_eq!(names.user(4242), "4242");
    }
}
