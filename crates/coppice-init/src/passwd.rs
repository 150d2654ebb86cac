//! Looking a sandbox user up by name in the sandbox's own `/etc/passwd` and `/etc/group`, as
//! a container runtime does for an image's `User` (`name`, `uid`, `name:group`, `uid:gid`).

use crate::control::ExecIdentity;

/// The identity `spec` names, from the contents of `passwd` and `group`.
///
/// # Errors
/// A name that is not in `passwd` (a bare uid need not be), or a group that is not in
/// `group`.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<ExecIdentity, String> {
    let (user, group_part) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let entry = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let [name, _, uid, gid, _, home, ..] = fields.as_slice() else {
            return None;
        };
        let (uid, gid) = (uid.parse::<u32>().ok()?, gid.parse::<u32>().ok()?);
        (*name == user || user.parse::<u32>() == Ok(uid)).then(|| ExecIdentity {
            uid,
            gid,
            home: (*home).to_owned(),
            name: (*name).to_owned(),
            look_up: false,
        })
    });
    let mut identity = match (entry, user.parse::<u32>()) {
        (Some(entry), _) => entry,
        // A bare uid the image has no entry for runs with that uid and group 0, in `/`, as a
        // container runtime runs it.
        (None, Ok(uid)) => ExecIdentity {
            uid,
            gid: 0,
            home: "/".into(),
            name: user.to_owned(),
            look_up: false,
        },
        (None, Err(_)) => return Err(format!("no user {user:?} in the sandbox's /etc/passwd")),
    };
    if let Some(wanted) = group_part {
        identity.gid = match wanted.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .lines()
                .find_map(|line| {
                    let fields: Vec<&str> = line.split(':').collect();
                    let [name, _, gid, ..] = fields.as_slice() else {
                        return None;
                    };
                    (*name == wanted).then(|| gid.parse::<u32>().ok()).flatten()
                })
                .ok_or_else(|| format!("no group {wanted:?} in the sandbox's /etc/group"))?,
        };
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\napp:x:1000:1001:App:/srv/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\napp:x:1001:\n";

    fn ids(spec: &str) -> (u32, u32, String, String) {
        let identity = resolve(spec, PASSWD, GROUP).unwrap();
        (identity.uid, identity.gid, identity.home, identity.name)
    }

    #[test]
    fn test_names_uids_and_groups_resolve_as_a_container_runtime_does() {
        assert_eq!(ids("app"), (1000, 1001, "/srv/app".into(), "app".into()));
        assert_eq!(ids("1000"), (1000, 1001, "/srv/app".into(), "app".into()));
        assert_eq!(
            ids("app:staff"),
            (1000, 50, "/srv/app".into(), "app".into())
        );
        assert_eq!(ids("app:7"), (1000, 7, "/srv/app".into(), "app".into()));
        assert_eq!(ids("4242"), (4242, 0, "/".into(), "4242".into()));
        assert_eq!(ids("root"), (0, 0, "/root".into(), "root".into()));
    }

    #[test]
    fn test_unknown_names_are_refused() {
        assert!(
            resolve("nobody", PASSWD, GROUP)
                .unwrap_err()
                .contains("nobody")
        );
        assert!(
            resolve("app:wheel", PASSWD, GROUP)
                .unwrap_err()
                .contains("wheel")
        );
    }
}
