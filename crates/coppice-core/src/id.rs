//! Newtype identifiers, parsed once at the edge so that the rest of the code can trust them.

use std::fmt;
use std::str::FromStr;

/// Longest accepted sandbox id; generated ids are [`SandboxId::GENERATED_LEN`] long.
const SANDBOX_ID_MAX_LEN: usize = 64;
/// Longest accepted template id.
const TEMPLATE_ID_MAX_LEN: usize = 64;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseIdError {
    /// The string is empty.
    #[error("{kind} id is empty")]
    Empty {
        /// Which identifier was being parsed.
        kind: &'static str,
    },
    /// The string is longer than allowed.
    #[error("{kind} id is {len} characters long, the limit is {max}")]
    TooLong {
        /// Which identifier was being parsed.
        kind: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The string holds a character outside the allowed set.
    #[error("{kind} id {value:?} may only contain {allowed}")]
    BadCharacter {
        /// Which identifier was being parsed.
        kind: &'static str,
        /// The rejected input, for the error message.
        value: String,
        /// A human description of the allowed characters.
        allowed: &'static str,
    },
}

/// `Display` as the text itself, `Debug` as `Name(text)`.
macro_rules! formatted_as_its_text {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }
    };
}

/// The identity of one sandbox: lowercase ASCII letters and digits, as E2B ids are.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SandboxId(String);

impl SandboxId {
    /// Length of a freshly generated id (E2B uses 20 characters of `[a-z0-9]`).
    pub const GENERATED_LEN: usize = 20;

    /// Generates a new random id from the operating system's entropy source.
    ///
    /// # Errors
    /// Fails only if the OS entropy source fails.
    pub fn generate() -> Result<Self, getrandom::Error> {
        const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut bytes = [0u8; Self::GENERATED_LEN];
        getrandom::fill(&mut bytes)?;
        // 256 is not a multiple of 36, so the first 4 letters are very slightly more likely;
        // ids need uniqueness, not uniformity.
        let id = bytes
            .iter()
            .map(|byte| char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()]))
            .collect();
        Ok(Self(id))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SandboxId {
    type Err = ParseIdError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        check_lowercase_alphanumeric("sandbox", value, SANDBOX_ID_MAX_LEN)?;
        Ok(Self(value.to_owned()))
    }
}

formatted_as_its_text!(SandboxId);

/// The name of a template: lowercase letters, digits, `-`, `_` and `.`, starting with a letter or
/// digit (so it is safe as a file name and a ZFS dataset component), optionally followed by
/// `:` and a tag of the same characters (`name:v1`, a tagged build of `name`). `name:latest`
/// is `name` itself.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TemplateId(String);

/// The tag every template's own name stands for.
pub const LATEST_TAG: &str = "latest";

impl TemplateId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The template's name, without its tag.
    pub fn name(&self) -> &str {
        self.0
            .split_once(':')
            .map_or(self.0.as_str(), |(name, _)| name)
    }

    /// Its tag, if it names a tagged build.
    pub fn tag(&self) -> Option<&str> {
        self.0.split_once(':').map(|(_, tag)| tag)
    }

    /// The id of this template's name with `tag` (the name itself for `latest`).
    ///
    /// # Errors
    /// A tag that is not valid, or too long an id.
    pub fn with_tag(&self, tag: &str) -> Result<Self, ParseIdError> {
        format!("{}:{tag}", self.name()).parse()
    }
}

impl FromStr for TemplateId {
    type Err = ParseIdError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        const KIND: &str = "template";
        check_length(KIND, value, TEMPLATE_ID_MAX_LEN)?;
        let allowed_char =
            |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.');
        let valid = |part: &str| {
            part.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && part.bytes().all(allowed_char)
        };
        let (name, tag) = match value.split_once(':') {
            Some((name, tag)) => (name, Some(tag)),
            None => (value, None),
        };
        if !valid(name) || tag.is_some_and(|tag| !valid(tag)) {
            return Err(ParseIdError::BadCharacter {
                kind: KIND,
                value: truncate_for_message(value),
                allowed: "lowercase letters, digits, '-', '_' and '.', starting with a letter or digit \
                          (and a ':tag' of the same)",
            });
        }
        match tag {
            Some(LATEST_TAG) => Ok(Self(name.to_owned())),
            _ => Ok(Self(value.to_owned())),
        }
    }
}

formatted_as_its_text!(TemplateId);

/// Longest accepted volume or directory snapshot id.
const GENERATED_ID_MAX_LEN: usize = 64;
/// Longest accepted volume name.
const VOLUME_NAME_MAX_LEN: usize = 63;

/// A random identifier in the alphabet and length of sandbox ids, parsed as lowercase
/// letters and digits.
macro_rules! random_lowercase_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Generates a new random id.
            ///
            /// # Errors
            /// Fails only if the OS entropy source fails.
            pub fn generate() -> Result<Self, getrandom::Error> {
                Ok(Self(SandboxId::generate()?.0))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(value: &str) -> Result<Self, Self::Err> {
                check_lowercase_alphanumeric($kind, value, GENERATED_ID_MAX_LEN)?;
                Ok(Self(value.to_owned()))
            }
        }

        formatted_as_its_text!($name);
    };
}

random_lowercase_id!(
    /// The identity of one persistent volume.
    VolumeId,
    "volume"
);

random_lowercase_id!(
    /// The identity of one directory snapshot.
    DirSnapshotId,
    "directory snapshot"
);

/// The name a volume is mounted by: letters, digits, `-`, `_` and `.`, starting with a letter
/// or digit. Names are unique.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeName(String);

impl VolumeName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for VolumeName {
    type Err = ParseIdError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        const KIND: &str = "volume name";
        check_length(KIND, value, VOLUME_NAME_MAX_LEN)?;
        let allowed_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
        let first_ok = value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
        if !first_ok || !value.bytes().all(allowed_char) {
            return Err(ParseIdError::BadCharacter {
                kind: KIND,
                value: truncate_for_message(value),
                allowed: "letters, digits, '-', '_' and '.', starting with a letter or digit",
            });
        }
        Ok(Self(value.to_owned()))
    }
}

formatted_as_its_text!(VolumeName);

fn check_lowercase_alphanumeric(
    kind: &'static str,
    value: &str,
    max: usize,
) -> Result<(), ParseIdError> {
    check_length(kind, value, max)?;
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(ParseIdError::BadCharacter {
            kind,
            value: truncate_for_message(value),
            allowed: "lowercase letters and digits",
        });
    }
    Ok(())
}

fn check_length(kind: &'static str, value: &str, max: usize) -> Result<(), ParseIdError> {
    if value.is_empty() {
        return Err(ParseIdError::Empty { kind });
    }
    if value.len() > max {
        return Err(ParseIdError::TooLong {
            kind,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// Keeps error messages short when a caller sends a huge bogus id.
fn truncate_for_message(value: &str) -> String {
    value.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_volume_names_and_ids_are_checked() {
        assert!("data-1.v_2".parse::<VolumeName>().is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "..", &"x".repeat(64)] {
            assert!(bad.parse::<VolumeName>().is_err(), "{bad:?}");
        }
        let id = VolumeId::generate().unwrap();
        assert_eq!(id.as_str().parse::<VolumeId>().unwrap(), id);
        assert!("Bad-Id".parse::<VolumeId>().is_err());
    }

    #[test]
    fn test_sandbox_id_generate_is_valid_and_round_trips() {
        let id = SandboxId::generate().unwrap();
        assert_eq!(id.as_str().len(), SandboxId::GENERATED_LEN);
        assert_eq!(id.as_str().parse::<SandboxId>().unwrap(), id);
    }

    #[test]
    fn test_sandbox_id_generate_differs_each_time() {
        assert_ne!(
            SandboxId::generate().unwrap(),
            SandboxId::generate().unwrap()
        );
    }

    #[test]
    fn test_sandbox_id_parse_table() {
        let cases: &[(&str, bool)] = &[
            ("abc123", true),
            ("", false),
            ("ABC", false),
            ("a-b", false),
            ("../etc", false),
            ("a b", false),
            ("é", false),
            (&"a".repeat(64), true),
            (&"a".repeat(65), false),
        ];
        for (input, ok) in cases {
            assert_eq!(input.parse::<SandboxId>().is_ok(), *ok, "{input:?}");
        }
    }

    #[test]
    fn test_template_id_parse_table() {
        let cases: &[(&str, bool)] = &[
            ("base", true),
            ("code-interpreter-v1", true),
            ("python3.11_x", true),
            ("-base", false),
            (".hidden", false),
            ("a/b", false),
            ("Base", false),
            ("", false),
            (&"t".repeat(65), false),
            ("mine:v1.0", true),
            ("mine:", false),
            (":v1", false),
            ("mine:v1:v2", false),
            ("mine:V1", false),
        ];
        for (input, ok) in cases {
            assert_eq!(input.parse::<TemplateId>().is_ok(), *ok, "{input:?}");
        }
    }

    #[test]
    fn test_a_tagged_template_id_names_its_template_and_latest_is_the_name() {
        let tagged: TemplateId = "mine:v1".parse().unwrap();
        assert_eq!((tagged.name(), tagged.tag()), ("mine", Some("v1")));
        let latest: TemplateId = "mine:latest".parse().unwrap();
        assert_eq!((latest.as_str(), latest.tag()), ("mine", None));
        assert_eq!(tagged.with_tag("latest").unwrap().as_str(), "mine");
        assert_eq!(latest.with_tag("prod").unwrap().as_str(), "mine:prod");
        assert!(latest.with_tag("Bad").is_err());
    }

    #[test]
    fn test_template_id_bad_character_message_names_the_rule() {
        let err = "a/b".parse::<TemplateId>().unwrap_err();
        assert!(err.to_string().contains("lowercase letters"), "{err}");
    }
}
