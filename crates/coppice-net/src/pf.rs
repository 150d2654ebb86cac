//! FreeBSD's side of the egress policy: the pf anchor of one sandbox, rendered from the same
//! [`EgressPolicy`] and [`BridgeConfig`] as the nftables rules, plus the `pfctl` argument
//! lists that load it, swap it and kill a sandbox's states, and the check that the host's
//! `pf.conf` hooks coppice's anchors in.
//!
//! pf evaluates every rule and the last match wins, so every rule here is `quick` (the first
//! match wins), in the order nftables uses: the resolver, allowOut, pinned names, denyOut,
//! the host itself, other sandboxes, then the outside or the air gap. Refusals are
//! `block return` (a reset or an ICMP error), so clients fail at once rather than time out.
//! Each sandbox's anchor also guards its bridge member against sources that are not its
//! own, which needs `net.link.bridge.pfil_member=1`.
//!
//! Nothing here runs a command: the FreeBSD `NetPolicy` feeds these texts to `pfctl`.

use std::fmt::Write as _;

use crate::BridgeConfig;
use crate::egress::EgressPolicy;

/// The anchor under which every sandbox's anchor lives; `pf.conf` must name it.
pub const ANCHOR_ROOT: &str = "coppice";

/// The table, inside a sandbox's anchor, of addresses the resolver pinned for allowed names.
pub const PIN_TABLE: &str = "coppice_pins";

/// The anchor of the sandbox at `index`.
pub fn anchor_name(index: u32) -> String {
    format!("{ANCHOR_ROOT}/sbx_{index}")
}

/// The rules of the anchor of the sandbox at `index` under `policy`, for `pfctl -a <anchor>
/// -f -`, which replaces the anchor's rules in one step.
pub fn anchor_rules(config: &BridgeConfig, index: u32, policy: &EgressPolicy) -> String {
    let (v4, v6) = config.sandbox_addresses(index);
    let bridge = &config.bridge;
    let member = config.host_link(index);
    let sources = format!("{{ {v4} {v6} }}");
    let on = format!("in quick on \"{bridge}\"");
    let mut rules = String::new();
    let mut line = |text: String| {
        let _ = writeln!(rules, "{text}");
    };
    line(format!("table <{PIN_TABLE}> persist"));
    // Spoofing guard on the member: its own addresses, and link-local for neighbour
    // discovery; nothing else enters the bridge from this port.
    line(format!(
        "pass in quick on \"{member}\" inet6 proto ipv6-icmp from fe80::/10 to any"
    ));
    line(format!(
        "pass in quick on \"{member}\" from {sources} to any"
    ));
    line(format!("block drop in quick on \"{member}\" all"));
    line(format!(
        "pass {on} proto {{ tcp udp }} from {sources} to {{ {} {} }} port 53",
        config.bridge_v4(),
        config.bridge_v6()
    ));
    if !policy.allow.is_empty() {
        line(format!(
            "pass {on} from {sources} to {{ {} }}",
            join(&policy.allow)
        ));
    }
    line(format!("pass {on} from {sources} to <{PIN_TABLE}>"));
    if !policy.deny.is_empty() {
        line(format!(
            "block return {on} from {sources} to {{ {} }}",
            join(&policy.deny)
        ));
    }
    line(format!("block return {on} from {sources} to self"));
    line(format!(
        "block return {on} from {sources} to {{ {} {} }}",
        config.ipv4, config.ipv6
    ));
    if policy.internet {
        line(format!("pass {on} from {sources} to any"));
    } else {
        line(format!("block return {on} from {sources} to any"));
    }
    rules
}

fn join(nets: &[ipnet::IpNet]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|&arg| arg.to_owned()).collect()
}

/// `pfctl -a <anchor> -f -`: replaces the anchor's rules with the ones on standard input.
pub fn load_anchor(index: u32) -> Vec<String> {
    strings(&["-a", &anchor_name(index), "-f", "-"])
}

/// `pfctl -a <anchor> -F all`: empties the anchor (rules and tables) when a sandbox goes.
pub fn flush_anchor(index: u32) -> Vec<String> {
    strings(&["-a", &anchor_name(index), "-F", "all"])
}

/// `pfctl -k <source>` for both of the sandbox's addresses: ends every state it opened, so
/// that a stricter policy cuts open connections at once (states are otherwise judged only
/// when they are made).
pub fn kill_states(config: &BridgeConfig, index: u32) -> [Vec<String>; 2] {
    let (v4, v6) = config.sandbox_addresses(index);
    [
        strings(&["-k", &v4.to_string()]),
        strings(&["-k", &v6.to_string()]),
    ]
}

/// `pfctl -a <anchor> -t coppice_pins -T add <address>…`: opens the addresses the resolver
/// answered for an allowed name.
pub fn pin(index: u32, addresses: &[std::net::IpAddr]) -> Vec<String> {
    let mut args = strings(&["-a", &anchor_name(index), "-t", PIN_TABLE, "-T", "add"]);
    args.extend(addresses.iter().map(ToString::to_string));
    args
}

/// The lines the host's `pf.conf` needs for coppice: NAT of both sandbox prefixes out of
/// `uplink`, and the anchor every sandbox's rules hang from.
pub fn pf_conf_lines(config: &BridgeConfig, uplink: &str) -> String {
    format!(
        "nat on {uplink} inet from {} to any -> ({uplink})\n\
         nat on {uplink} inet6 from {} to any -> ({uplink})\n\
         anchor \"{ANCHOR_ROOT}/*\"\n",
        config.ipv4, config.ipv6
    )
}

/// The host's `pf.conf` does not load coppice's anchors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "pf.conf has no line `anchor \"{ANCHOR_ROOT}/*\"`: sandbox egress rules would never be \
     evaluated; add it after the host's own filter rules and reload pf"
)]
pub struct MissingAnchor;

/// Checks that `pf_conf` (the text of `/etc/pf.conf`) has the anchor line, ignoring
/// comments and spacing.
///
/// # Errors
/// [`MissingAnchor`] when no uncommented line hooks `coppice/*` in.
pub fn check_pf_conf(pf_conf: &str) -> Result<(), MissingAnchor> {
    let wanted = format!("anchor \"{ANCHOR_ROOT}/*\"");
    let found = pf_conf.lines().any(|line| {
        let code = line.split('#').next().unwrap_or_default();
        code.split_whitespace().collect::<Vec<_>>().join(" ") == wanted
    });
    if found { Ok(()) } else { Err(MissingAnchor) }
}

/// The default bridge, prefixes and state directory of a FreeBSD host, for tests.
#[cfg(test)]
pub(crate) fn test_config() -> BridgeConfig {
    let mut config = BridgeConfig::new("coppice0", "/var/db/coppice/net");
    config.ipv4 = "10.213.0.0/16".parse().unwrap();
    config.ipv6 = "fd00:c0:ffee::/64".parse().unwrap();
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BridgeConfig {
        test_config()
    }

    fn policy(internet: bool, allow: &[&str], deny: &[&str]) -> EgressPolicy {
        EgressPolicy {
            internet,
            allow: allow.iter().map(|net| net.parse().unwrap()).collect(),
            deny: deny.iter().map(|net| net.parse().unwrap()).collect(),
            ..EgressPolicy::default()
        }
    }

    const HEAD: &str = "table <coppice_pins> persist
pass in quick on \"coppice0-4\" inet6 proto ipv6-icmp from fe80::/10 to any
pass in quick on \"coppice0-4\" from { 10.213.0.5 fd00:c0:ffee::5 } to any
block drop in quick on \"coppice0-4\" all
pass in quick on \"coppice0\" proto { tcp udp } from { 10.213.0.5 fd00:c0:ffee::5 } to { 10.213.0.1 fd00:c0:ffee::1 } port 53
";

    #[test]
    fn test_anchor_rules_for_each_policy_shape() {
        let from = "from { 10.213.0.5 fd00:c0:ffee::5 }";
        let tail = format!(
            "block return in quick on \"coppice0\" {from} to self\n\
             block return in quick on \"coppice0\" {from} to {{ 10.213.0.0/16 fd00:c0:ffee::/64 }}\n"
        );
        let pins = format!("pass in quick on \"coppice0\" {from} to <coppice_pins>\n");
        let cases = [
            (
                "default",
                policy(true, &[], &[]),
                format!("{HEAD}{pins}{tail}pass in quick on \"coppice0\" {from} to any\n"),
            ),
            (
                "air-gap",
                policy(false, &[], &[]),
                format!("{HEAD}{pins}{tail}block return in quick on \"coppice0\" {from} to any\n"),
            ),
            (
                "allow wins over deny and over the air gap",
                policy(false, &["192.0.2.0/24", "2001:db8::/32"], &["192.0.2.7/32"]),
                format!(
                    "{HEAD}pass in quick on \"coppice0\" {from} to {{ 192.0.2.0/24 2001:db8::/32 }}\n\
                     {pins}block return in quick on \"coppice0\" {from} to {{ 192.0.2.7/32 }}\n\
                     {tail}block return in quick on \"coppice0\" {from} to any\n"
                ),
            ),
            (
                "deny with internet",
                policy(true, &[], &["198.51.100.0/24"]),
                format!(
                    "{HEAD}{pins}block return in quick on \"coppice0\" {from} to {{ 198.51.100.0/24 }}\n\
                     {tail}pass in quick on \"coppice0\" {from} to any\n"
                ),
            ),
        ];
        for (name, policy, expected) in cases {
            assert_eq!(anchor_rules(&config(), 4, &policy), expected, "{name}");
        }
    }

    #[test]
    fn test_pfctl_argument_lists() {
        let config = config();
        assert_eq!(load_anchor(4).join(" "), "-a coppice/sbx_4 -f -");
        assert_eq!(flush_anchor(4).join(" "), "-a coppice/sbx_4 -F all");
        let [v4, v6] = kill_states(&config, 4);
        assert_eq!(v4.join(" "), "-k 10.213.0.5");
        assert_eq!(v6.join(" "), "-k fd00:c0:ffee::5");
        assert_eq!(
            pin(
                4,
                &["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()]
            )
            .join(" "),
            "-a coppice/sbx_4 -t coppice_pins -T add 192.0.2.1 2001:db8::1"
        );
        assert_eq!(
            pf_conf_lines(&config, "vtnet0"),
            "nat on vtnet0 inet from 10.213.0.0/16 to any -> (vtnet0)\n\
             nat on vtnet0 inet6 from fd00:c0:ffee::/64 to any -> (vtnet0)\n\
             anchor \"coppice/*\"\n"
        );
    }

    #[test]
    fn test_pf_conf_must_hook_the_anchor_in() {
        let present = [
            "anchor \"coppice/*\"\n",
            "set skip on lo\npass out all\n  anchor   \"coppice/*\"   # sandboxes\n",
        ];
        for text in present {
            assert_eq!(check_pf_conf(text), Ok(()), "{text:?}");
        }
        let missing = [
            "",
            "# anchor \"coppice/*\"\n",
            "anchor \"coppice\"\n",
            "anchor \"other/*\"\npass all\n",
        ];
        for text in missing {
            assert_eq!(check_pf_conf(text), Err(MissingAnchor), "{text:?}");
        }
        assert!(MissingAnchor.to_string().contains("anchor \"coppice/*\""));
    }
}
