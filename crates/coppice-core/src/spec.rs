//! What a caller asks for when creating a sandbox, and its validation against the operator's
//! limits. Validation happens once, in the manager, so every frontend rejects the same input
//! with the same message.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::id::TemplateId;
use crate::state::PauseMode;
use crate::volume::{MAX_MOUNTS, MountPathError, VolumeMount, check_mount_path};

/// A request for one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    /// The template whose root filesystem the sandbox starts from.
    pub template: TemplateId,
    /// Virtual CPUs: the CPU quota in whole cores.
    pub vcpus: u32,
    /// Memory limit in MiB; the sandbox is OOM-killed above it.
    pub memory_mb: u32,
    /// Disk size in MiB that the sandbox may write.
    pub disk_mb: u32,
    /// Environment variables given to every process in the sandbox.
    pub env: BTreeMap<String, String>,
    /// Free-form labels, used for filtering in `list`.
    pub metadata: BTreeMap<String, String>,
    /// Lifetime from creation; the TTL reaper acts when it runs out.
    pub timeout: Duration,
    /// What the TTL reaper does when the timeout runs out.
    pub on_timeout: TimeoutAction,
    /// Whether a request that touches the sandbox while it is paused resumes it.
    pub auto_resume: bool,
    /// Network egress wishes.
    pub network: NetworkSpec,
    /// Persistent volumes mounted into the sandbox.
    pub volume_mounts: Vec<VolumeMount>,
    /// Whether its exposed ports answer anyone who can reach the gateway; when false they
    /// answer only requests bearing the sandbox's traffic token.
    pub public_traffic: bool,
    /// Who runs its processes by default, and where: taken from its template at create.
    pub defaults: crate::runtime::ProcessDefaults,
    /// The service every boot of it starts: its template's, recorded at create (`None` in
    /// records from before it was, whose template is then asked again).
    pub service: Option<crate::storage::TemplateStart>,
}

impl SandboxSpec {
    /// A spec with the documented defaults for `template`: 2 vCPUs, 512 MiB, 1 GiB disk,
    /// 300 s timeout, no env vars or metadata, default network.
    pub fn new(template: TemplateId) -> Self {
        Self {
            template,
            vcpus: 2,
            memory_mb: 512,
            disk_mb: 1024,
            env: BTreeMap::new(),
            metadata: BTreeMap::new(),
            timeout: Duration::from_secs(300),
            on_timeout: TimeoutAction::Kill,
            auto_resume: false,
            network: NetworkSpec::default(),
            volume_mounts: Vec::new(),
            public_traffic: true,
            defaults: crate::runtime::ProcessDefaults::default(),
            service: None,
        }
    }
}

/// What happens to a sandbox whose timeout runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeoutAction {
    /// It is killed and everything of it released.
    #[default]
    Kill,
    /// It is paused, keeping what the mode keeps.
    Pause(PauseMode),
}

/// Network egress wishes of a sandbox. Entries are CIDRs or domain names, validated by the
/// network backend that enforces them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Whether destinations not named in `allow_out` are reachable.
    pub allow_internet: bool,
    /// Destinations always reachable (wins over `deny_out`).
    pub allow_out: Vec<String>,
    /// Destinations never reachable unless also in `allow_out`.
    pub deny_out: Vec<String>,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            allow_internet: true,
            allow_out: Vec::new(),
            deny_out: Vec::new(),
        }
    }
}

/// The operator's bounds on what one sandbox may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most vCPUs per sandbox.
    pub max_vcpus: u32,
    /// Least memory per sandbox, in MiB (below it nothing useful starts).
    pub min_memory_mb: u32,
    /// Most memory per sandbox, in MiB.
    pub max_memory_mb: u32,
    /// Least disk per sandbox, in MiB.
    pub min_disk_mb: u32,
    /// Most disk per sandbox, in MiB.
    pub max_disk_mb: u32,
    /// Longest timeout.
    pub max_timeout: Duration,
    /// Most environment variables.
    pub max_env_vars: usize,
    /// Most metadata entries.
    pub max_metadata_entries: usize,
    /// Longest key or value, in bytes, of an env var or metadata entry.
    pub max_entry_bytes: usize,
    /// Most processes and threads inside one sandbox.
    pub max_pids: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_vcpus: 16,
            min_memory_mb: 32,
            max_memory_mb: 64 * 1024,
            min_disk_mb: 64,
            max_disk_mb: 1024 * 1024,
            max_timeout: Duration::from_secs(24 * 60 * 60),
            max_env_vars: 256,
            max_metadata_entries: 64,
            max_entry_bytes: 4096,
            max_pids: 1024,
        }
    }
}

/// Why a spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A name coppice keeps for itself.
    #[error("the name {name:?} is reserved (names starting with \"fork-\" are coppice's)")]
    ReservedName {
        /// The name asked for.
        name: String,
    },
    /// A fork count out of range.
    #[error("fork count must be between 1 and {max}, got {got}")]
    ForkCount {
        /// Requested.
        got: u32,
        /// Allowed maximum.
        max: u32,
    },
    /// vCPUs out of range.
    #[error("vcpus must be between 1 and {max}, got {got}")]
    Vcpus {
        /// Requested.
        got: u32,
        /// Allowed maximum.
        max: u32,
    },
    /// Memory out of range.
    #[error("memory must be between {min} and {max} MiB, got {got}")]
    Memory {
        /// Requested.
        got: u32,
        /// Allowed minimum.
        min: u32,
        /// Allowed maximum.
        max: u32,
    },
    /// Disk out of range.
    #[error("disk size must be between {min} and {max} MiB, got {got}")]
    Disk {
        /// Requested.
        got: u32,
        /// Allowed minimum.
        min: u32,
        /// Allowed maximum.
        max: u32,
    },
    /// Timeout zero or too long.
    #[error("timeout must be between 1 s and {max_secs} s, got {got_secs} s")]
    Timeout {
        /// Requested, in seconds.
        got_secs: u64,
        /// Allowed maximum, in seconds.
        max_secs: u64,
    },
    /// Too many entries in a map.
    #[error("{what} has {got} entries, the limit is {max}")]
    TooManyEntries {
        /// "env vars" or "metadata".
        what: &'static str,
        /// Requested count.
        got: usize,
        /// Allowed maximum.
        max: usize,
    },
    /// A key or value too long.
    #[error("{what} entry {key:?} is longer than {max} bytes")]
    EntryTooLong {
        /// "env vars" or "metadata".
        what: &'static str,
        /// The offending key (truncated).
        key: String,
        /// Allowed maximum.
        max: usize,
    },
    /// An environment variable name that a process environment cannot carry.
    #[error("env var name {name:?} is invalid: it must be non-empty and contain no '=' or NUL")]
    EnvName {
        /// The offending name (truncated).
        name: String,
    },
    /// A volume mount path that cannot be used.
    #[error("volume mount {0}")]
    MountPath(#[from] MountPathError),
    /// Two volumes on one path, or a volume inside another volume.
    #[error("volume mount paths {first:?} and {second:?} overlap")]
    MountOverlap {
        /// One path.
        first: String,
        /// The path on or inside it.
        second: String,
    },
    /// A NUL byte in a value that ends up in a C string.
    #[error("{what} entry {key:?} contains a NUL byte")]
    NulByte {
        /// "env vars" or "metadata".
        what: &'static str,
        /// The offending key (truncated).
        key: String,
    },
}

impl SandboxSpec {
    /// Checks the spec against `limits`.
    ///
    /// # Errors
    /// The first violated limit.
    pub fn validate(&self, limits: &Limits) -> Result<(), SpecError> {
        if self.vcpus == 0 || self.vcpus > limits.max_vcpus {
            return Err(SpecError::Vcpus {
                got: self.vcpus,
                max: limits.max_vcpus,
            });
        }
        if self.memory_mb < limits.min_memory_mb || self.memory_mb > limits.max_memory_mb {
            return Err(SpecError::Memory {
                got: self.memory_mb,
                min: limits.min_memory_mb,
                max: limits.max_memory_mb,
            });
        }
        if self.disk_mb < limits.min_disk_mb || self.disk_mb > limits.max_disk_mb {
            return Err(SpecError::Disk {
                got: self.disk_mb,
                min: limits.min_disk_mb,
                max: limits.max_disk_mb,
            });
        }
        if self.timeout < Duration::from_secs(1) || self.timeout > limits.max_timeout {
            return Err(SpecError::Timeout {
                got_secs: self.timeout.as_secs(),
                max_secs: limits.max_timeout.as_secs(),
            });
        }
        validate_map(
            "env vars",
            &self.env,
            limits.max_env_vars,
            limits.max_entry_bytes,
        )?;
        validate_map(
            "metadata",
            &self.metadata,
            limits.max_metadata_entries,
            limits.max_entry_bytes,
        )?;
        if let Some(name) = self
            .env
            .keys()
            .find(|name| name.is_empty() || name.contains('='))
        {
            return Err(SpecError::EnvName { name: short(name) });
        }
        validate_mounts(&self.volume_mounts)
    }
}

fn validate_mounts(mounts: &[VolumeMount]) -> Result<(), SpecError> {
    if mounts.len() > MAX_MOUNTS {
        return Err(SpecError::TooManyEntries {
            what: "volume mounts",
            got: mounts.len(),
            max: MAX_MOUNTS,
        });
    }
    for (index, mount) in mounts.iter().enumerate() {
        check_mount_path(&mount.path)?;
        // A volume mounted inside another would hide or be hidden by it, depending on order.
        if let Some(other) = mounts[..index].iter().find(|other| {
            other.path.starts_with(&mount.path) || mount.path.starts_with(&other.path)
        }) {
            return Err(SpecError::MountOverlap {
                first: other.path.display().to_string(),
                second: mount.path.display().to_string(),
            });
        }
    }
    Ok(())
}

fn validate_map(
    what: &'static str,
    map: &BTreeMap<String, String>,
    max_entries: usize,
    max_bytes: usize,
) -> Result<(), SpecError> {
    if map.len() > max_entries {
        return Err(SpecError::TooManyEntries {
            what,
            got: map.len(),
            max: max_entries,
        });
    }
    for (key, value) in map {
        if key.len() > max_bytes || value.len() > max_bytes {
            return Err(SpecError::EntryTooLong {
                what,
                key: short(key),
                max: max_bytes,
            });
        }
        if key.contains('\0') || value.contains('\0') {
            return Err(SpecError::NulByte {
                what,
                key: short(key),
            });
        }
    }
    Ok(())
}

fn short(value: &str) -> String {
    value.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SandboxSpec {
        SandboxSpec::new("base".parse().unwrap())
    }

    #[test]
    fn test_validate_default_spec_passes() {
        assert_eq!(spec().validate(&Limits::default()), Ok(()));
    }

    #[test]
    fn test_validate_volume_mounts() {
        let mount = |path: &str| VolumeMount {
            name: "data".parse().unwrap(),
            path: path.into(),
        };
        let with = |paths: &[&str]| SandboxSpec {
            volume_mounts: paths.iter().map(|p| mount(p)).collect(),
            ..spec()
        };
        let limits = Limits::default();
        assert_eq!(with(&["/mnt/a", "/mnt/b"]).validate(&limits), Ok(()));
        assert!(matches!(
            with(&["/mnt/a", "/mnt/a/b"]).validate(&limits),
            Err(SpecError::MountOverlap { .. })
        ));
        assert!(matches!(
            with(&["/proc/x"]).validate(&limits),
            Err(SpecError::MountPath(MountPathError::Reserved { .. }))
        ));
        assert!(matches!(
            with(&["/mnt/../etc"]).validate(&limits),
            Err(SpecError::MountPath(MountPathError::NotNormal { .. }))
        ));
        let many: Vec<String> = (0..=MAX_MOUNTS).map(|i| format!("/mnt/{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(matches!(
            with(&many).validate(&limits),
            Err(SpecError::TooManyEntries {
                what: "volume mounts",
                ..
            })
        ));
    }

    #[test]
    fn test_validate_zero_memory_is_refused() {
        let spec = SandboxSpec {
            memory_mb: 0,
            ..spec()
        };
        assert!(matches!(
            spec.validate(&Limits::default()),
            Err(SpecError::Memory { got: 0, .. })
        ));
    }

    #[test]
    fn test_validate_absurd_memory_is_refused() {
        let spec = SandboxSpec {
            memory_mb: u32::MAX,
            ..spec()
        };
        assert!(matches!(
            spec.validate(&Limits::default()),
            Err(SpecError::Memory { .. })
        ));
    }

    #[test]
    fn test_validate_zero_and_absurd_vcpus_are_refused() {
        let zero = SandboxSpec { vcpus: 0, ..spec() };
        let absurd = SandboxSpec {
            vcpus: 10_000,
            ..spec()
        };
        assert!(matches!(
            zero.validate(&Limits::default()),
            Err(SpecError::Vcpus { .. })
        ));
        assert!(matches!(
            absurd.validate(&Limits::default()),
            Err(SpecError::Vcpus { .. })
        ));
    }

    #[test]
    fn test_validate_zero_timeout_is_refused() {
        let spec = SandboxSpec {
            timeout: Duration::ZERO,
            ..spec()
        };
        assert!(matches!(
            spec.validate(&Limits::default()),
            Err(SpecError::Timeout { .. })
        ));
    }

    #[test]
    fn test_validate_env_name_with_equals_is_refused() {
        let mut spec = spec();
        spec.env.insert("A=B".into(), "1".into());
        assert!(matches!(
            spec.validate(&Limits::default()),
            Err(SpecError::EnvName { .. })
        ));
    }

    #[test]
    fn test_validate_nul_in_metadata_is_refused() {
        let mut spec = spec();
        spec.metadata.insert("k".into(), "a\0b".into());
        assert!(matches!(
            spec.validate(&Limits::default()),
            Err(SpecError::NulByte { .. })
        ));
    }

    #[test]
    fn test_validate_huge_metadata_is_refused() {
        let mut spec = spec();
        spec.metadata.insert("k".into(), "v".repeat(100_000));
        assert!(matches!(
            spec.validate(&Limits::default()),
            Err(SpecError::EntryTooLong { .. })
        ));
    }

    #[test]
    fn test_validate_too_many_metadata_entries_is_refused() {
        let mut spec = spec();
        for n in 0..100 {
            spec.metadata.insert(format!("k{n}"), "v".into());
        }
        assert!(matches!(
            spec.validate(&Limits::default()),
            Err(SpecError::TooManyEntries { .. })
        ));
    }
}
