//! Settings of the bridge network and the addresses they imply.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use coppice_core::volume::IdMap;
use ipnet::{Ipv4Net, Ipv6Net};

/// The longest bridge name that leaves room for `-65535` within the kernel's 15 bytes.
pub const MAX_BRIDGE_NAME: usize = 9;

/// Sandboxes per bridge at most: host veth names carry the index in five digits.
const MAX_INDEX: u32 = 65_535;

/// How sandboxes are connected: one host bridge, one IPv4 and one IPv6 prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// The bridge's name; also names the nftables table and prefixes the host veths.
    pub bridge: String,
    /// Sandbox IPv4 prefix; its first address is the bridge's.
    pub ipv4: Ipv4Net,
    /// Sandbox IPv6 prefix; its first address is the bridge's.
    pub ipv6: Ipv6Net,
    /// Where attachments are recorded, so that a restarted daemon finds them.
    pub state_dir: PathBuf,
    /// Prepared endpoints kept ready.
    pub pool_size: usize,
    /// Where the sandbox resolver forwards queries.
    pub dns_upstream: Option<std::net::SocketAddr>,
    /// The sandboxes' id map. With one, each endpoint's network namespace belongs to a user
    /// namespace of its own with this map, which the sandbox joins as its own: CRIU can
    /// checkpoint only a tree whose namespaces all belong to its user namespace.
    pub sandbox_ids: Option<IdMap>,
}

/// Why a configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A bridge name the kernel or nft would refuse, or too long for veth names.
    #[error(
        "bridge name {0:?} must be 1 to {MAX_BRIDGE_NAME} characters of letters, digits and '_'"
    )]
    BridgeName(String),
    /// A prefix with too few addresses.
    #[error("prefix {0} leaves no room for sandboxes; use a /30 or larger (IPv6: /126)")]
    PrefixTooSmall(String),
}

impl BridgeConfig {
    /// Defaults for `bridge` with records under `state_dir`: `10.213.0.0/16` and
    /// `fd00:c0:ffee::/64`, 24 endpoints ready, no resolver upstream.
    pub fn new(bridge: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            bridge: bridge.into(),
            ipv4: Ipv4Net::new(Ipv4Addr::new(10, 213, 0, 0), 16).unwrap_or_default(),
            ipv6: Ipv6Net::new(Ipv6Addr::new(0xfd00, 0xc0, 0xffee, 0, 0, 0, 0, 0), 64)
                .unwrap_or_default(),
            state_dir: state_dir.into(),
            pool_size: 24,
            dns_upstream: None,
            sandbox_ids: None,
        }
    }

    /// Checks the names and prefixes.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name_ok = !self.bridge.is_empty()
            && self.bridge.len() <= MAX_BRIDGE_NAME
            && self
                .bridge
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return Err(ConfigError::BridgeName(self.bridge.clone()));
        }
        if self.ipv4.prefix_len() > 30 {
            return Err(ConfigError::PrefixTooSmall(self.ipv4.to_string()));
        }
        if self.ipv6.prefix_len() > 126 {
            return Err(ConfigError::PrefixTooSmall(self.ipv6.to_string()));
        }
        Ok(())
    }

    /// The nftables table (family `inet`) holding every rule of this bridge.
    pub fn table(&self) -> String {
        format!("coppice_{}", self.bridge)
    }

    /// The bridge's IPv4 address, the sandboxes' gateway and resolver.
    pub fn bridge_v4(&self) -> Ipv4Addr {
        nth_v4(self.ipv4, 1)
    }

    /// The bridge's IPv6 address.
    pub fn bridge_v6(&self) -> Ipv6Addr {
        nth_v6(self.ipv6, 1)
    }

    /// How many sandboxes the prefixes hold (index 1 upwards).
    pub fn capacity(&self) -> u32 {
        // Host numbers 0 (network), 1 (bridge) and the IPv4 broadcast are not handed out.
        let v4_hosts = (1u64 << (32 - u32::from(self.ipv4.prefix_len()))).saturating_sub(3);
        let v6_bits = 128 - u32::from(self.ipv6.prefix_len());
        let v6_hosts = if v6_bits >= 32 {
            u64::MAX
        } else {
            (1u64 << v6_bits).saturating_sub(2)
        };
        u32::try_from(v4_hosts.min(v6_hosts).min(u64::from(MAX_INDEX))).unwrap_or(MAX_INDEX)
    }

    /// The addresses of the sandbox at `index` (1-based: index 1 is host number 2).
    pub fn sandbox_addresses(&self, index: u32) -> (Ipv4Addr, Ipv6Addr) {
        (
            nth_v4(self.ipv4, u128::from(index) + 1),
            nth_v6(self.ipv6, u128::from(index) + 1),
        )
    }

    /// The index of the sandbox that has `address`, if it is a sandbox address at all.
    pub fn index_of_address(&self, address: std::net::IpAddr) -> Option<u32> {
        let host = match address {
            std::net::IpAddr::V4(v4) if self.ipv4.contains(&v4) => {
                u128::from(u32::from(v4) - u32::from(self.ipv4.network()))
            }
            std::net::IpAddr::V6(v6) if self.ipv6.contains(&v6) => {
                u128::from(v6) - u128::from(self.ipv6.network())
            }
            _ => return None,
        };
        let index = u32::try_from(host.checked_sub(1)?).ok()?;
        (1..=self.capacity()).contains(&index).then_some(index)
    }

    /// The MAC address of the sandbox at `index` (locally administered, unique on its
    /// bridge): the host's neighbour entries for its addresses are fixed to it.
    pub fn sandbox_mac(&self, index: u32) -> String {
        let [_, _, high, low] = index.to_be_bytes();
        format!("02:c0:ff:ee:{high:02x}:{low:02x}")
    }

    /// The bridge's own MAC address, index 0's (no sandbox has it). Set explicitly, a
    /// bridge keeps it; left to the kernel, a bridge takes its lowest port's, which changes
    /// as sandboxes come and go and leaves every sandbox's neighbour entry for its gateway
    /// pointing nowhere for seconds.
    pub fn bridge_mac(&self) -> String {
        self.sandbox_mac(0)
    }

    /// The host end of the veth of the sandbox at `index`.
    pub fn host_link(&self, index: u32) -> String {
        format!("{}-{index}", self.bridge)
    }

    /// The name, on the host, of the inner end of the pair made for a restore of the sandbox
    /// at `index`, until the restore moves it into the sandbox's namespace as `eth0`.
    pub fn restore_link(&self, index: u32) -> String {
        format!("{}r{index}", self.bridge)
    }

    /// The link group this bridge's host links join just before they are deleted together.
    /// Derived from the bridge's name, so that daemons on other bridges use other groups
    /// (and the group is checked to hold only this bridge's links before it is deleted).
    pub fn release_group(&self) -> u32 {
        // FNV-1a, folded to 16 bits, under a fixed high half; group 0 is every link's default.
        let hash = self.bridge.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
            (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
        });
        0x6370_0000 | ((hash >> 16) ^ (hash & 0xffff))
    }

    /// The index a host veth name stands for, if it is one of this bridge's.
    pub fn index_of_link(&self, name: &str) -> Option<u32> {
        let index: u32 = name
            .strip_prefix(&self.bridge)?
            .strip_prefix('-')?
            .parse()
            .ok()?;
        (1..=self.capacity()).contains(&index).then_some(index)
    }
}

fn nth_v4(net: Ipv4Net, n: u128) -> Ipv4Addr {
    let base = u32::from(net.network());
    Ipv4Addr::from(base.wrapping_add(u32::try_from(n).unwrap_or(0)))
}

fn nth_v6(net: Ipv6Net, n: u128) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(net.network()).wrapping_add(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BridgeConfig {
        BridgeConfig::new("cpn0", "/state")
    }

    #[test]
    fn test_default_addresses() {
        let config = config();
        assert_eq!(config.bridge_v4(), Ipv4Addr::new(10, 213, 0, 1));
        assert_eq!(config.bridge_v6().to_string(), "fd00:c0:ffee::1");
        let (v4, v6) = config.sandbox_addresses(1);
        assert_eq!(v4, Ipv4Addr::new(10, 213, 0, 2));
        assert_eq!(v6.to_string(), "fd00:c0:ffee::2");
        let (v4, _) = config.sandbox_addresses(300);
        assert_eq!(v4, Ipv4Addr::new(10, 213, 1, 45));
    }

    #[test]
    fn test_capacity_follows_the_smaller_prefix() {
        let mut config = config();
        assert_eq!(config.capacity(), 65_533);
        config.ipv4 = "10.0.0.0/24".parse().unwrap();
        assert_eq!(config.capacity(), 253);
        config.ipv6 = "fd00::/126".parse().unwrap();
        assert_eq!(config.capacity(), 2);
    }

    #[test]
    fn test_addresses_map_back_to_their_index() {
        let config = config();
        let (v4, v6) = config.sandbox_addresses(300);
        assert_eq!(config.index_of_address(v4.into()), Some(300));
        assert_eq!(config.index_of_address(v6.into()), Some(300));
        assert_eq!(config.index_of_address(config.bridge_v4().into()), None);
        assert_eq!(config.index_of_address("192.0.2.1".parse().unwrap()), None);
    }

    #[test]
    fn test_link_names_round_trip() {
        let config = config();
        assert_eq!(config.host_link(42), "cpn0-42");
        assert_eq!(config.sandbox_mac(300), "02:c0:ff:ee:01:2c");
        assert_eq!(config.index_of_link("cpn0-42"), Some(42));
        assert_eq!(config.index_of_link("cpn0-0"), None);
        assert_eq!(config.index_of_link("cpn1-42"), None);
        assert_eq!(config.index_of_link("cpn0-x"), None);
    }

    #[test]
    fn test_validation() {
        let mut config = config();
        assert!(config.validate().is_ok());
        config.bridge = "much-too-long".into();
        assert!(matches!(config.validate(), Err(ConfigError::BridgeName(_))));
        config.bridge = "ok".into();
        config.ipv4 = "10.0.0.0/31".parse().unwrap();
        assert!(matches!(
            config.validate(),
            Err(ConfigError::PrefixTooSmall(_))
        ));
    }
}
