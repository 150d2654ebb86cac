//! The text of every `ip -batch` and `nft -f` script the bridge network runs (pure, so the
//! exact rules are unit-tested without a kernel).
//!
//! The nftables table holds three base chains. `forward` and `input` send each packet from
//! a sandbox whose policy is not the default through that sandbox's own chain (`sbx_<index>`,
//! found by source address in a verdict map; see `rules`): its allowed CIDRs accept, its
//! denied ones and, when air-gapped, everything else reject. The chain is consulted for every
//! packet, not only for new flows, so a policy change cuts connections that are already open
//! (a TCP packet is answered with a reset). A sandbox on the default policy has no chain (or
//! one that returns at once): from `forward` it is accepted (and masqueraded in
//! `postrouting`), from `input` refused, so the host and its services (the gateway's ports
//! among them) stay out of reach unless an allow entry names them; the resolver on the
//! bridge's port 53 is the one exception.

use std::fmt::Write;
use std::path::Path;

use super::config::BridgeConfig;

/// `ip -batch` lines that give the (existing) bridge its fixed MAC and its addresses and
/// bring it up.
pub(crate) fn bridge_addresses(config: &BridgeConfig, create: bool) -> String {
    let bridge = &config.bridge;
    let mut script = String::new();
    if create {
        let _ = writeln!(script, "link add {bridge} type bridge");
    }
    let _ = writeln!(script, "link set {bridge} address {}", config.bridge_mac());
    let _ = writeln!(
        script,
        "addr replace {}/{} dev {bridge}",
        config.bridge_v4(),
        config.ipv4.prefix_len()
    );
    let _ = writeln!(
        script,
        "addr replace {}/{} dev {bridge} nodad",
        config.bridge_v6(),
        config.ipv6.prefix_len()
    );
    let _ = writeln!(script, "link set {bridge} up");
    script
}

/// Host-side `ip -batch` lines for the endpoint at `index`: a veth pair whose inner end,
/// `eth0` with the index's MAC, lands in the namespace at `netns`, and whose outer end joins
/// the bridge as an isolated port (no frames to other isolated ports, i.e. other sandboxes).
/// The host's neighbour entries for the sandbox's addresses are fixed to that MAC, so no
/// ARP or neighbour advertisement of another sandbox can redirect them.
pub(crate) fn endpoint_host(config: &BridgeConfig, index: u32, netns: &Path) -> String {
    let link = config.host_link(index);
    let mac = config.sandbox_mac(index);
    format!(
        "link add {link} type veth peer name eth0 address {mac} netns {}\n{}",
        netns.display(),
        endpoint_port(config, index),
    )
}

/// Host-side `ip -batch` lines that make the pair of the endpoint at `index` for a restore:
/// its inner end stays on the host, down, with the index's MAC, until the restore moves it
/// into the namespace it makes; its outer end is already the port it will be.
pub(crate) fn endpoint_for_restore(config: &BridgeConfig, index: u32) -> String {
    format!(
        "link add {} type veth peer name {} address {}\n{}",
        config.host_link(index),
        config.restore_link(index),
        config.sandbox_mac(index),
        endpoint_port(config, index),
    )
}

/// Host-side `ip -batch` lines that make the host end of the endpoint at `index` an isolated
/// port of the bridge, bring it up, and fix the neighbour entries of its addresses. Isolated
/// before it is up, so not one frame crosses to another sandbox.
pub(crate) fn endpoint_port(config: &BridgeConfig, index: u32) -> String {
    let link = config.host_link(index);
    let mac = config.sandbox_mac(index);
    let (v4, v6) = config.sandbox_addresses(index);
    format!(
        "link set {link} master {bridge}\n\
         link set dev {link} type bridge_slave isolated on\n\
         link set {link} up\n\
         neigh replace {v4} lladdr {mac} dev {bridge} nud permanent\n\
         neigh replace {v6} lladdr {mac} dev {bridge} nud permanent\n",
        bridge = config.bridge,
    )
}

/// An `nft -f` script that lets the port of the endpoint at `index` send only from its own
/// MAC and addresses. The elements name the index, not the sandbox, so they are right for
/// every sandbox that ever gets it and are never deleted.
pub(crate) fn endpoint_guard(config: &BridgeConfig, index: u32) -> String {
    let t = format!("bridge {}", config.table());
    let link = config.host_link(index);
    let mac = config.sandbox_mac(index);
    let (v4, v6) = config.sandbox_addresses(index);
    format!(
        "add element {t} ports_mac {{ \"{link}\" . {mac} }}\n\
         add element {t} ports_v4 {{ \"{link}\" . {v4} }}\n\
         add element {t} ports_v6 {{ \"{link}\" . {v6} }}\n"
    )
}

/// `ip -batch` lines run inside the endpoint's namespace: loopback, both addresses (no
/// duplicate detection: the address is ours alone), default routes through the bridge.
pub(crate) fn endpoint_inside(config: &BridgeConfig, index: u32) -> String {
    let (v4, v6) = config.sandbox_addresses(index);
    format!(
        "link set lo up\n\
         addr add {v4}/{v4len} dev eth0\n\
         addr add {v6}/{v6len} dev eth0 nodad\n\
         link set eth0 up\n\
         route add default via {gw4}\n\
         route add default via {gw6}\n",
        v4len = config.ipv4.prefix_len(),
        v6len = config.ipv6.prefix_len(),
        gw4 = config.bridge_v4(),
        gw6 = config.bridge_v6(),
    )
}

/// `ip -batch` line that removes the endpoint at `index` (both ends of the pair go at once).
pub(crate) fn endpoint_removal(config: &BridgeConfig, index: u32) -> String {
    format!("link del {}\n", config.host_link(index))
}

/// `ip -batch` lines that remove the endpoints at `indices` in one kernel pass: their host
/// links join the bridge's release group, which is then deleted whole. (One `link del` each
/// waits out a network-wide synchronisation each, about 16 ms; a group waits once.)
pub(crate) fn endpoints_removal(config: &BridgeConfig, indices: &[u32]) -> String {
    let group = config.release_group();
    let mut s = String::new();
    for index in indices {
        let _ = writeln!(s, "link set {} group {group}", config.host_link(*index));
    }
    let _ = writeln!(s, "link del group {group}");
    s
}

/// An `nft -f` script that replaces both tables in one transaction, with the chains and
/// port guards of the sandboxes in `policies` already in place; the resolver's port is open
/// for the families in `dns` (IPv4, IPv6) whose listener is up.
///
/// The `bridge` table drops, before the bridge learns anything from it, every frame a
/// sandbox port sends from a MAC or an address that is not its own (IPv6 link-local and
/// unspecified sources aside, which neighbour discovery needs): the per-sandbox rules in
/// the `inet` table pick a sandbox by source address, so that address must be its own.
pub(crate) fn table(
    config: &BridgeConfig,
    policies: &[super::rules::ChainChange<'_>],
    dns: (bool, bool),
) -> String {
    let bridge = &config.bridge;
    let mut s = String::new();
    let b = format!("bridge {}", config.table());
    // `add` first so that `delete` never fails on a host where the table is new.
    let _ = writeln!(s, "add table {b}");
    let _ = writeln!(s, "delete table {b}");
    let _ = writeln!(s, "add table {b}");
    let _ = writeln!(s, "add set {b} ports_mac {{ type ifname . ether_addr ; }}");
    let _ = writeln!(s, "add set {b} ports_v4 {{ type ifname . ipv4_addr ; }}");
    let _ = writeln!(s, "add set {b} ports_v6 {{ type ifname . ipv6_addr ; }}");
    let _ = writeln!(
        s,
        "add chain {b} prerouting {{ type filter hook prerouting priority -300 ; policy accept ; }}"
    );
    let port = format!("add rule {b} prerouting iifname \"{bridge}-*\"");
    let _ = writeln!(s, "{port} iifname . ether saddr != @ports_mac drop");
    let _ = writeln!(
        s,
        "{port} ether type ip iifname . ip saddr != @ports_v4 drop"
    );
    let _ = writeln!(
        s,
        "{port} ether type arp iifname . arp saddr ip != @ports_v4 drop"
    );
    let _ = writeln!(
        s,
        "{port} ether type ip6 ip6 saddr != {{ fe80::/10, ::/128 }} iifname . ip6 saddr != @ports_v6 drop"
    );
    for change in policies {
        s.push_str(&endpoint_guard(config, change.index));
    }

    let t = format!("inet {}", config.table());
    let _ = writeln!(s, "add table {t}");
    let _ = writeln!(s, "delete table {t}");
    let _ = writeln!(s, "add table {t}");
    let _ = writeln!(s, "add map {t} egress_v4 {{ type ipv4_addr : verdict ; }}");
    let _ = writeln!(s, "add map {t} egress_v6 {{ type ipv6_addr : verdict ; }}");
    let _ = writeln!(
        s,
        "add chain {t} forward {{ type filter hook forward priority filter ; policy accept ; }}"
    );
    let _ = writeln!(
        s,
        "add chain {t} input {{ type filter hook input priority filter ; policy accept ; }}"
    );
    let _ = writeln!(
        s,
        "add chain {t} postrouting {{ type nat hook postrouting priority srcnat ; policy accept ; }}"
    );
    let from = format!("add rule {t} forward iifname \"{bridge}\"");
    let _ = writeln!(s, "{from} oifname \"{bridge}\" drop");
    let _ = writeln!(s, "{from} ip saddr != {} drop", config.ipv4);
    let _ = writeln!(s, "{from} ip6 saddr != {} drop", config.ipv6);
    let _ = writeln!(s, "{from} ip saddr vmap @egress_v4");
    let _ = writeln!(s, "{from} ip6 saddr vmap @egress_v6");
    let _ = writeln!(s, "{from} accept");
    let to = format!("add rule {t} forward oifname \"{bridge}\"");
    let _ = writeln!(s, "{to} ct state established,related accept");
    let _ = writeln!(s, "{to} drop");
    // No "established" shortcut here: nothing on the host opens connections into a
    // sandbox, and a flow to a host service must end when the policy that allowed it does.
    let input = format!("add rule {t} input iifname \"{bridge}\"");
    if dns.0 {
        let _ = writeln!(
            s,
            "{input} ip daddr {} meta l4proto {{ tcp, udp }} th dport 53 accept",
            config.bridge_v4()
        );
    }
    if dns.1 {
        let _ = writeln!(
            s,
            "{input} ip6 daddr {} meta l4proto {{ tcp, udp }} th dport 53 accept",
            config.bridge_v6()
        );
    }
    let _ = writeln!(
        s,
        "{input} icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }} accept"
    );
    let _ = writeln!(s, "{input} ip saddr vmap @egress_v4");
    let _ = writeln!(s, "{input} ip6 saddr vmap @egress_v6");
    let _ = writeln!(s, "{input} meta l4proto tcp reject with tcp reset");
    let _ = writeln!(s, "{input} reject with icmpx admin-prohibited");
    let nat = format!("add rule {t} postrouting");
    let _ = writeln!(
        s,
        "{nat} ip saddr {} oifname != \"{bridge}\" masquerade",
        config.ipv4
    );
    let _ = writeln!(
        s,
        "{nat} ip6 saddr {} oifname != \"{bridge}\" masquerade",
        config.ipv6
    );
    for change in policies {
        s.push_str(&super::rules::policy_change(config, change));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::rules::ChainChange;
    use super::*;
    use crate::egress::tests::test_policy;

    fn config() -> BridgeConfig {
        BridgeConfig::new("cpn0", "/state")
    }

    #[test]
    fn test_endpoint_scripts_name_the_index_addresses() {
        let config = config();
        let host = endpoint_host(&config, 7, Path::new("/proc/1/fd/9"));
        assert!(host.starts_with(
            "link add cpn0-7 type veth peer name eth0 address 02:c0:ff:ee:00:07 netns /proc/1/fd/9\n"
        ));
        assert!(
            host.contains(
                "neigh replace 10.213.0.8 lladdr 02:c0:ff:ee:00:07 dev cpn0 nud permanent"
            )
        );
        assert!(
            endpoint_guard(&config, 7).contains("ports_mac { \"cpn0-7\" . 02:c0:ff:ee:00:07 }")
        );
        // The port is isolated before it comes up, on create and on a restore alike.
        let port = endpoint_port(&config, 7);
        assert!(host.ends_with(&port));
        let isolated = port.find("link set dev cpn0-7 type bridge_slave isolated on\n");
        let up = port.find("link set cpn0-7 up\n");
        assert!(port.starts_with("link set cpn0-7 master cpn0\n"), "{port}");
        assert!(
            isolated.is_some() && up.is_some() && isolated < up,
            "{port}"
        );
        let inside = endpoint_inside(&config, 7);
        assert!(inside.contains("addr add 10.213.0.8/16 dev eth0\n"));
        assert!(inside.contains("addr add fd00:c0:ffee::8/64 dev eth0 nodad\n"));
        assert!(inside.contains("route add default via 10.213.0.1\n"));
        assert_eq!(endpoint_removal(&config, 7), "link del cpn0-7\n");
    }

    #[test]
    fn test_table_replaces_atomically_and_keeps_known_policies() {
        let airgapped = test_policy(false, &[], &[]);
        let open = test_policy(true, &[], &[]);
        let change = |index, policy| ChainChange {
            index,
            had_chain: false,
            policy,
            generation: 1,
            pins: 1,
        };
        let script = table(
            &config(),
            &[change(5, &airgapped), change(6, &open)],
            (true, false),
        );
        assert!(
            script.starts_with("add table bridge coppice_cpn0\ndelete table bridge coppice_cpn0\n")
        );
        assert!(script.contains("add table inet coppice_cpn0\ndelete table inet coppice_cpn0\n"));
        assert!(script.contains("masquerade"));
        assert!(script.contains("sbx_5"));
        assert!(!script.contains("sbx_6"));
        assert!(
            script.contains("ip daddr 10.213.0.1 meta l4proto { tcp, udp } th dport 53 accept")
        );
        assert!(!script.contains("ip6 daddr fd00:c0:ffee::1 meta l4proto"));
        assert!(
            !script
                .lines()
                .any(|line| line.contains(" input ") && line.contains("ct state")),
            "no established shortcut into the host"
        );
        // Port guards for the survivors, spoofing dropped before the bridge learns.
        assert!(
            script.contains("add element bridge coppice_cpn0 ports_v4 { \"cpn0-5\" . 10.213.0.6 }")
        );
        assert!(script.contains("iifname . ip saddr != @ports_v4 drop"));
    }
}
