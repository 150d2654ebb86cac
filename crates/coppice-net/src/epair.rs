//! FreeBSD's side of a sandbox's link: an epair whose `a` end joins the host bridge as a
//! private member (no frames to other private members, i.e. other sandboxes) and whose `b`
//! end moves into the sandbox's VNET jail as `eth0`, with the same addresses, MAC and routes
//! as on Linux. Each step is one command's argument list (program first); nothing here runs
//! them.
//!
//! Split in two like the Linux pool: [`prepare`] runs ahead of time, off the create path (the
//! pair exists, the host end is named, bridged and up); [`hand_over`] runs once the jail
//! exists. `ifconfig -j` and `route -j` need FreeBSD 14 or later.

use crate::{BridgeConfig, owned};

/// The name the jail end of the pair has on the host until it is handed over.
pub fn jail_end(index: u32) -> String {
    format!("cpj{index}")
}

/// `ifconfig epair create`; it prints the `a` end's name (`epairNa`), the `b` end is `epairNb`.
pub fn create() -> Vec<String> {
    owned(&["ifconfig", "epair", "create"])
}

/// Commands that name the pair created as `created_a` (as [`create`] printed it) after the
/// sandbox index, put its host end on the bridge as a private member and bring it up.
///
/// # Errors
/// `created_a` is not an `epairNa` name.
pub fn prepare(
    config: &BridgeConfig,
    index: u32,
    created_a: &str,
) -> Result<Vec<Vec<String>>, NotAnEpair> {
    let unit = created_a
        .trim()
        .strip_prefix("epair")
        .and_then(|rest| rest.strip_suffix('a'))
        .filter(|unit| !unit.is_empty() && unit.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| NotAnEpair(created_a.trim().to_owned()))?;
    let host = config.host_link(index);
    let bridge = &config.bridge;
    Ok(vec![
        owned(&["ifconfig", &format!("epair{unit}a"), "name", &host]),
        owned(&[
            "ifconfig",
            &format!("epair{unit}b"),
            "name",
            &jail_end(index),
        ]),
        owned(&["ifconfig", bridge, "addm", &host, "private", &host]),
        owned(&["ifconfig", &host, "up"]),
    ])
}

/// `ifconfig epair create` printed something other than an epair's `a` end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`ifconfig epair create` printed {0:?}, not an epair interface")]
pub struct NotAnEpair(pub String);

/// Commands that move the jail end of the pair at `index` into `jail` and configure it there:
/// `eth0` with the index's MAC and addresses (no duplicate detection: the address is the
/// sandbox's alone), loopback with 127.0.0.1 (a new VNET's `lo0` has no address), and default
/// routes through the bridge.
pub fn hand_over(config: &BridgeConfig, index: u32, jail: &str) -> Vec<Vec<String>> {
    let (v4, v6) = config.sandbox_addresses(index);
    let v4_address = format!("{v4}/{}", config.ipv4.prefix_len());
    let v6_prefix = config.ipv6.prefix_len().to_string();
    let mac = config.sandbox_mac(index);
    let (gateway4, gateway6) = (
        config.bridge_v4().to_string(),
        config.bridge_v6().to_string(),
    );
    let (v6, jail_end) = (v6.to_string(), jail_end(index));
    vec![
        owned(&["ifconfig", &jail_end, "vnet", jail]),
        owned(&["ifconfig", "-j", jail, &jail_end, "name", "eth0"]),
        owned(&["ifconfig", "-j", jail, "eth0", "ether", &mac]),
        owned(&["ifconfig", "-j", jail, "eth0", "inet", &v4_address]),
        owned(&[
            "ifconfig",
            "-j",
            jail,
            "eth0",
            "inet6",
            &v6,
            "prefixlen",
            &v6_prefix,
            "no_dad",
        ]),
        owned(&["ifconfig", "-j", jail, "eth0", "up"]),
        owned(&["ifconfig", "-j", jail, "lo0", "inet", "127.0.0.1/8", "up"]),
        owned(&["route", "-j", jail, "add", "-inet", "default", &gateway4]),
        owned(&["route", "-j", jail, "add", "-inet6", "default", &gateway6]),
    ]
}

/// Destroying the host end destroys the pair, wherever its other end is; a jail that is
/// removed first gives its end back to the host, where this still finds the pair.
pub fn destroy(config: &BridgeConfig, index: u32) -> Vec<String> {
    owned(&["ifconfig", &config.host_link(index), "destroy"])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BridgeConfig {
        crate::pf::test_config()
    }

    fn lines(commands: &[Vec<String>]) -> Vec<String> {
        commands.iter().map(|c| c.join(" ")).collect()
    }

    #[test]
    fn test_prepare_names_bridges_and_raises_the_host_end() {
        assert_eq!(create().join(" "), "ifconfig epair create");
        assert_eq!(
            lines(&prepare(&config(), 7, "epair12a\n").unwrap()),
            [
                "ifconfig epair12a name coppice0-7",
                "ifconfig epair12b name cpj7",
                "ifconfig coppice0 addm coppice0-7 private coppice0-7",
                "ifconfig coppice0-7 up",
            ]
        );
        for bad in ["", "epaira", "epair12b", "bridge0", "epair1x2a"] {
            assert_eq!(
                prepare(&config(), 7, bad).unwrap_err(),
                NotAnEpair(bad.to_owned()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn test_hand_over_configures_eth0_inside_the_jail() {
        assert_eq!(
            lines(&hand_over(&config(), 7, "sbx-abc")),
            [
                "ifconfig cpj7 vnet sbx-abc",
                "ifconfig -j sbx-abc cpj7 name eth0",
                "ifconfig -j sbx-abc eth0 ether 02:c0:ff:ee:00:07",
                "ifconfig -j sbx-abc eth0 inet 10.213.0.8/16",
                "ifconfig -j sbx-abc eth0 inet6 fd00:c0:ffee::8 prefixlen 64 no_dad",
                "ifconfig -j sbx-abc eth0 up",
                "ifconfig -j sbx-abc lo0 inet 127.0.0.1/8 up",
                "route -j sbx-abc add -inet default 10.213.0.1",
                "route -j sbx-abc add -inet6 default fd00:c0:ffee::1",
            ]
        );
        assert_eq!(
            destroy(&config(), 7).join(" "),
            "ifconfig coppice0-7 destroy"
        );
    }
}
