//! A VNET jail's network, as commands (program first) that the runtime runs once the jail
//! exists: the prepared interface moves in and becomes `eth0` with the sandbox's MAC,
//! addresses (no duplicate detection: the address is the sandbox's alone) and default routes,
//! and `lo0` gets 127.0.0.1 (a new VNET's loopback has no address). `ifconfig -j` and
//! `route -j` need FreeBSD 14 or later.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The link a network backend prepared for one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VnetLink {
    /// The interface's name on the host before it moves into the jail.
    pub interface: String,
    /// The MAC address `eth0` takes.
    pub mac: String,
    /// Addresses with their prefix lengths.
    pub addresses: Vec<(IpAddr, u8)>,
    /// Default routes, one per family.
    pub gateways: Vec<IpAddr>,
    /// Resolvers for `/etc/resolv.conf`.
    pub dns: Vec<IpAddr>,
}

fn owned(words: &[&str]) -> Vec<String> {
    words.iter().map(|&word| word.to_owned()).collect()
}

/// Commands that configure loopback in the jail named `jail` (every VNET jail, also one
/// without any other link).
pub fn loopback(jail: &str) -> Vec<Vec<String>> {
    vec![owned(&[
        "ifconfig",
        "-j",
        jail,
        "lo0",
        "inet",
        "127.0.0.1/8",
        "up",
    ])]
}

/// Commands that move `link` into the jail named `jail` and configure it as `eth0`.
pub fn hand_over(jail: &str, link: &VnetLink) -> Vec<Vec<String>> {
    let mut commands = vec![
        owned(&["ifconfig", &link.interface, "vnet", jail]),
        owned(&["ifconfig", "-j", jail, &link.interface, "name", "eth0"]),
        owned(&["ifconfig", "-j", jail, "eth0", "ether", &link.mac]),
    ];
    for (address, prefix) in &link.addresses {
        let address = address.to_string();
        let prefix = prefix.to_string();
        commands.push(if address.contains(':') {
            owned(&[
                "ifconfig",
                "-j",
                jail,
                "eth0",
                "inet6",
                &address,
                "prefixlen",
                &prefix,
                "no_dad",
            ])
        } else {
            owned(&[
                "ifconfig",
                "-j",
                jail,
                "eth0",
                "inet",
                &format!("{address}/{prefix}"),
            ])
        });
    }
    commands.push(owned(&["ifconfig", "-j", jail, "eth0", "up"]));
    for gateway in &link.gateways {
        let family = if gateway.is_ipv6() { "-inet6" } else { "-inet" };
        commands.push(owned(&[
            "route",
            "-j",
            jail,
            "add",
            family,
            "default",
            &gateway.to_string(),
        ]));
    }
    commands
}

/// Commands that give `link`'s interface back to the host under its own name before the jail
/// goes: a removed jail returns its interfaces as they are named inside (`eth0`), which
/// would clash with the next one returned.
pub fn reclaim(jail: &str, link: &VnetLink) -> Vec<Vec<String>> {
    vec![
        owned(&["ifconfig", "-j", jail, "eth0", "name", &link.interface]),
        owned(&["ifconfig", &link.interface, "-vnet", jail]),
    ]
}

/// `/etc/resolv.conf` naming `dns`.
pub fn resolv_conf(dns: &[IpAddr]) -> String {
    dns.iter().map(|ip| format!("nameserver {ip}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> VnetLink {
        VnetLink {
            interface: "cpj7".into(),
            mac: "02:c0:00:00:00:07".into(),
            addresses: vec![
                ("10.213.0.9".parse().unwrap(), 20),
                ("fd00:c0:213::9".parse().unwrap(), 64),
            ],
            gateways: vec![
                "10.213.0.1".parse().unwrap(),
                "fd00:c0:213::1".parse().unwrap(),
            ],
            dns: vec!["10.213.0.1".parse().unwrap()],
        }
    }

    fn lines(commands: &[Vec<String>]) -> Vec<String> {
        commands.iter().map(|c| c.join(" ")).collect()
    }

    #[test]
    fn test_hand_over_configures_eth0_inside_the_jail() {
        assert_eq!(
            lines(&hand_over("sbx-abc", &link())),
            [
                "ifconfig cpj7 vnet sbx-abc",
                "ifconfig -j sbx-abc cpj7 name eth0",
                "ifconfig -j sbx-abc eth0 ether 02:c0:00:00:00:07",
                "ifconfig -j sbx-abc eth0 inet 10.213.0.9/20",
                "ifconfig -j sbx-abc eth0 inet6 fd00:c0:213::9 prefixlen 64 no_dad",
                "ifconfig -j sbx-abc eth0 up",
                "route -j sbx-abc add -inet default 10.213.0.1",
                "route -j sbx-abc add -inet6 default fd00:c0:213::1",
            ]
        );
        assert_eq!(
            lines(&loopback("sbx-abc")),
            ["ifconfig -j sbx-abc lo0 inet 127.0.0.1/8 up"]
        );
    }

    #[test]
    fn test_reclaim_renames_eth0_back_before_taking_it_out() {
        assert_eq!(
            lines(&reclaim("sbx-abc", &link())),
            [
                "ifconfig -j sbx-abc eth0 name cpj7",
                "ifconfig cpj7 -vnet sbx-abc",
            ]
        );
    }

    #[test]
    fn test_resolv_conf_names_each_resolver() {
        assert_eq!(
            resolv_conf(&link().dns),
            "nameserver 10.213.0.1\n".to_owned()
        );
        assert_eq!(resolv_conf(&[]), "");
    }
}
