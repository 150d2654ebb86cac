//! The seed disk: how a VM's guest agent learns which sandbox it is. A small raw disk (no
//! file system, so both sides stay trivial): the [`GuestSeed`] as JSON, a NUL, then zeros
//! up to a whole number of sectors. The agent reads it at boot and, while it has no sandbox
//! yet (a pooled VM held for a later create), again until one appears.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Version of [`GuestSeed`]; the agent refuses others.
pub const SEED_VERSION: u32 = 1;
/// The seed disk's size: bhyve wants whole sectors, and this bounds what the agent reads.
pub const SEED_BYTES: usize = 64 * 1024;

/// The guest's network, as the sandbox's network backend planned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNetwork {
    /// The MAC address the guest gives its interface.
    pub mac: String,
    /// Addresses with their prefix lengths.
    pub addresses: Vec<(IpAddr, u8)>,
    /// Default routes, one per family.
    pub gateways: Vec<IpAddr>,
    /// Resolvers for `/etc/resolv.conf`.
    pub dns: Vec<IpAddr>,
}

/// Everything the guest agent needs to become a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestSeed {
    /// Must equal [`SEED_VERSION`].
    pub version: u32,
    /// The sandbox id; empty while the VM waits in the pool.
    pub sandbox_id: String,
    /// The hostname.
    pub hostname: String,
    /// What every control request must carry: the agent listens on a TCP port that the
    /// guest's own processes can reach too.
    pub token: String,
    /// Environment of every command and of envd.
    pub env: Vec<(String, String)>,
    /// Its network; none for a VM without one.
    pub network: Option<GuestNetwork>,
    /// The agent's control port.
    pub agent_port: u16,
    /// envd's port.
    pub envd_port: u16,
}

impl GuestSeed {
    /// Whether the seed names a sandbox yet.
    pub fn assigned(&self) -> bool {
        !self.sandbox_id.is_empty()
    }
}

/// Why a seed disk could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The seed does not fit on the disk.
    #[error("the seed is {0} bytes, over the {SEED_BYTES}-byte disk")]
    TooLarge(usize),
    /// The disk holds no seed of this version.
    #[error("the seed disk holds no readable seed")]
    Unreadable(#[source] serde_json::Error),
    /// A seed of another version.
    #[error("seed version {0} (this agent reads {SEED_VERSION})")]
    Version(u32),
}

/// The disk image of `seed`.
///
/// # Errors
/// [`SeedError::TooLarge`].
pub fn encode(seed: &GuestSeed) -> Result<Vec<u8>, SeedError> {
    let mut bytes = serde_json::to_vec(seed).map_err(SeedError::Unreadable)?;
    if bytes.len() >= SEED_BYTES {
        return Err(SeedError::TooLarge(bytes.len()));
    }
    bytes.resize(SEED_BYTES, 0);
    Ok(bytes)
}

/// Writes `seed` over the disk image at `path` in place: a running VM's bhyve holds the file
/// by descriptor, so it must stay the same file, and a whole image of the same size is
/// written over it without truncating it first.
///
/// # Errors
/// The seed does not fit, or the file cannot be written.
pub fn write(path: &std::path::Path, seed: &GuestSeed) -> std::io::Result<()> {
    use std::io::Write as _;

    let image = encode(seed).map_err(std::io::Error::other)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    file.write_all(&image)?;
    file.set_len(SEED_BYTES as u64)?;
    file.sync_data()
}

/// The seed on a disk image (read from its start).
///
/// # Errors
/// [`SeedError::Unreadable`] or [`SeedError::Version`].
pub fn decode(disk: &[u8]) -> Result<GuestSeed, SeedError> {
    let end = disk.iter().position(|&b| b == 0).unwrap_or(disk.len());
    let seed: GuestSeed = serde_json::from_slice(&disk[..end]).map_err(SeedError::Unreadable)?;
    if seed.version != SEED_VERSION {
        return Err(SeedError::Version(seed.version));
    }
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> GuestSeed {
        GuestSeed {
            version: SEED_VERSION,
            sandbox_id: "a1".into(),
            hostname: "a1".into(),
            token: "t0k".into(),
            env: vec![("LANG".into(), "C.UTF-8".into())],
            network: Some(GuestNetwork {
                mac: "02:c0:ff:ee:00:07".into(),
                addresses: vec![("10.213.0.8".parse().unwrap(), 16)],
                gateways: vec!["10.213.0.1".parse().unwrap()],
                dns: vec!["10.213.0.1".parse().unwrap()],
            }),
            agent_port: 49982,
            envd_port: 49983,
        }
    }

    #[test]
    fn test_a_seed_round_trips_through_its_disk_image() {
        let disk = encode(&seed()).unwrap();
        assert_eq!(disk.len(), SEED_BYTES);
        assert_eq!(decode(&disk).unwrap(), seed());
        assert!(seed().assigned());
        let pooled = GuestSeed {
            sandbox_id: String::new(),
            network: None,
            ..seed()
        };
        assert!(!decode(&encode(&pooled).unwrap()).unwrap().assigned());
    }

    #[test]
    fn test_bad_disks_are_refused() {
        assert!(matches!(decode(&[0u8; 512]), Err(SeedError::Unreadable(_))));
        let mut other = seed();
        other.version = 7;
        assert!(matches!(
            decode(&encode(&other).unwrap()),
            Err(SeedError::Version(7))
        ));
        let mut huge = seed();
        huge.env = vec![("X".into(), "y".repeat(SEED_BYTES))];
        assert!(matches!(encode(&huge), Err(SeedError::TooLarge(_))));
    }
}
