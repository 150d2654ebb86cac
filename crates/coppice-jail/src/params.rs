//! A sandbox's jail parameters, and their encoding as the name/value pairs `jail_set(2)`
//! reads from its iovec array.
//!
//! The set follows the jail escape history (targets.md §7.1): `enforce_statfs=2` (no view of
//! mounts outside the root), `children.max=0` (no nested jails), no `allow.*` privilege (in
//! particular no `allow.mount.*`), a devfs ruleset that hides all but the basic nodes, and a
//! securelevel. `persist` keeps the jail alive between its creation and the first process.

use std::path::{Path, PathBuf};

/// `jail_set`'s value for a "jailsys" parameter (`vnet`, `ip4`, `ip6`): a new instance.
const JAIL_SYS_NEW: i32 = 1;
/// ... and none at all.
const JAIL_SYS_DISABLE: i32 = 0;

/// Longest jail name (`MAXHOSTNAMELEN` less the terminator).
const MAX_NAME_LEN: usize = 255;

/// A name jail(2) accepts as a jail's name, and that cannot be mistaken for a jail id or a
/// child jail: `[A-Za-z0-9_-]`, not all digits, no dots.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JailName(String);

/// A jail name jail(2) would refuse or misread.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} cannot name a jail: {reason}")]
pub struct InvalidJailName {
    /// The name given.
    pub name: String,
    /// Why.
    pub reason: &'static str,
}

impl JailName {
    /// Checks `name`.
    ///
    /// # Errors
    /// Empty, too long, all digits (read as a jail id), a `.` (read as a child jail), or
    /// another character outside `[A-Za-z0-9_-]`.
    pub fn parse(name: &str) -> Result<Self, InvalidJailName> {
        let invalid = |reason| InvalidJailName {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(invalid("must be 1 to 255 bytes"));
        }
        if name.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("all digits would be read as a jail id"));
        }
        if name.contains('.') {
            return Err(invalid("a '.' would be read as a child jail"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        {
            return Err(invalid("only letters, digits, '_' and '-' are allowed"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a sandbox's jail is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailSpec {
    /// The jail's name.
    pub name: JailName,
    /// Its root directory (the sandbox's dataset mountpoint).
    pub path: PathBuf,
    /// The hostname processes see.
    pub hostname: String,
    /// The devfs ruleset of its `/dev` (see [`crate::devfs`]).
    pub devfs_ruleset: u16,
    /// The jail's securelevel.
    pub securelevel: i32,
    /// A network stack of its own (VNET), or none at all.
    pub vnet: bool,
}

/// One parameter's value as jail(2) types it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JailValue {
    /// A string, passed NUL-terminated.
    Str(String),
    /// An `int`, passed as its native bytes.
    Int(i32),
    /// A boolean, passed as the name alone: `x` for true, `nox` (the last component
    /// prefixed) for false.
    Flag(bool),
}

/// One named parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailParam {
    /// Its name as jail(2) knows it (`host.hostname`, `allow.mount`, …).
    pub name: &'static str,
    /// Its value.
    pub value: JailValue,
}

fn param(name: &'static str, value: JailValue) -> JailParam {
    JailParam { name, value }
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The parameters of `spec`'s jail, in the order they are passed.
pub fn jail_params(spec: &JailSpec) -> Vec<JailParam> {
    use JailValue::{Flag, Int, Str};
    let mut params = vec![
        param("name", Str(spec.name.as_str().to_owned())),
        param("path", Str(path_string(&spec.path))),
        param("host.hostname", Str(spec.hostname.clone())),
        param("persist", Flag(true)),
        param("enforce_statfs", Int(2)),
        param("children.max", Int(0)),
        param("devfs_ruleset", Int(i32::from(spec.devfs_ruleset))),
        param("securelevel", Int(spec.securelevel)),
        param("allow.mount", Flag(false)),
        param("allow.raw_sockets", Flag(false)),
        param("allow.chflags", Flag(false)),
        param("allow.set_hostname", Flag(false)),
        param("allow.sysvipc", Flag(false)),
    ];
    if spec.vnet {
        params.push(param("vnet", Int(JAIL_SYS_NEW)));
    } else {
        params.push(param("ip4", Int(JAIL_SYS_DISABLE)));
        params.push(param("ip6", Int(JAIL_SYS_DISABLE)));
    }
    params
}

/// A parameter as the two iovec entries `jail_set` reads: the NUL-terminated name, and the
/// value bytes (`None` for a flag, whose meaning is in its name).
pub type EncodedParam = (Vec<u8>, Option<Vec<u8>>);

/// The name/value byte pairs of `params`, ready to be pointed at by an iovec array.
///
/// # Errors
/// A name or string value with an interior NUL, which jail(2) would cut short.
pub fn encode(params: &[JailParam]) -> Result<Vec<EncodedParam>, InteriorNul> {
    params
        .iter()
        .map(|param| {
            let name = match &param.value {
                JailValue::Flag(false) => match param.name.rsplit_once('.') {
                    Some((parent, last)) => format!("{parent}.no{last}"),
                    None => format!("no{}", param.name),
                },
                _ => param.name.to_owned(),
            };
            let value = match &param.value {
                JailValue::Str(text) => Some(nul_terminated(param.name, text)?),
                JailValue::Int(number) => Some(number.to_ne_bytes().to_vec()),
                JailValue::Flag(_) => None,
            };
            Ok((nul_terminated(param.name, &name)?, value))
        })
        .collect()
}

fn nul_terminated(param: &'static str, text: &str) -> Result<Vec<u8>, InteriorNul> {
    if text.contains('\0') {
        return Err(InteriorNul { param });
    }
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    Ok(bytes)
}

/// A string for jail(2) holds a NUL byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("jail parameter {param} holds a NUL byte")]
pub struct InteriorNul {
    /// The parameter.
    pub param: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(vnet: bool) -> JailSpec {
        JailSpec {
            name: JailName::parse("sbx-k3v9q2").unwrap(),
            path: "/var/db/coppice/sandboxes/k3v9q2".into(),
            hostname: "k3v9q2".into(),
            devfs_ruleset: 4215,
            securelevel: 2,
            vnet,
        }
    }

    #[test]
    fn test_jail_names() {
        assert!(JailName::parse("sbx-k3v9q2").is_ok());
        assert!(JailName::parse("a_1").is_ok());
        let cases = [
            ("", "must be 1 to 255 bytes"),
            ("42", "all digits would be read as a jail id"),
            ("a.b", "a '.' would be read as a child jail"),
            ("a b", "only letters, digits, '_' and '-' are allowed"),
            ("a/b", "only letters, digits, '_' and '-' are allowed"),
        ];
        for (name, reason) in cases {
            assert_eq!(
                JailName::parse(name).unwrap_err().reason,
                reason,
                "{name:?}"
            );
        }
        assert!(JailName::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn test_encoding_of_every_parameter() {
        let int = |n: i32| Some(n.to_ne_bytes().to_vec());
        let text = |s: &str| Some(format!("{s}\0").into_bytes());
        let name = |s: &str| format!("{s}\0").into_bytes();
        let expected: Vec<EncodedParam> = vec![
            (name("name"), text("sbx-k3v9q2")),
            (name("path"), text("/var/db/coppice/sandboxes/k3v9q2")),
            (name("host.hostname"), text("k3v9q2")),
            (name("persist"), None),
            (name("enforce_statfs"), int(2)),
            (name("children.max"), int(0)),
            (name("devfs_ruleset"), int(4215)),
            (name("securelevel"), int(2)),
            (name("allow.nomount"), None),
            (name("allow.noraw_sockets"), None),
            (name("allow.nochflags"), None),
            (name("allow.noset_hostname"), None),
            (name("allow.nosysvipc"), None),
            (name("vnet"), int(1)),
        ];
        assert_eq!(encode(&jail_params(&spec(true))).unwrap(), expected);

        let without_network = encode(&jail_params(&spec(false))).unwrap();
        assert_eq!(
            without_network[expected.len() - 1..],
            [(name("ip4"), int(0)), (name("ip6"), int(0))]
        );
    }

    #[test]
    fn test_no_parameter_grants_mounts_or_nested_jails() {
        for vnet in [true, false] {
            let params = jail_params(&spec(vnet));
            for param in &params {
                if param.name.starts_with("allow.") {
                    assert_eq!(param.value, JailValue::Flag(false), "{}", param.name);
                }
            }
            assert!(params.contains(&param("children.max", JailValue::Int(0))));
            assert!(params.contains(&param("enforce_statfs", JailValue::Int(2))));
        }
    }

    #[test]
    fn test_a_nul_in_a_string_is_refused() {
        let mut spec = spec(true);
        spec.hostname = "a\0b".into();
        assert_eq!(
            encode(&jail_params(&spec)),
            Err(InteriorNul {
                param: "host.hostname"
            })
        );
    }
}
