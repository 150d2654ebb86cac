//! FreeBSD's side of the egress policy: the pf anchor of one sandbox, rendered from the same
//! [`EgressPolicy`] and [`BridgeConfig`] as the nftables rules, plus the `pfctl` argument
//! lists that load it, swap it and kill a sandbox's states, and the lines the host's
//! `pf.conf` must hold around coppice's anchors.
//!
//! pf evaluates every rule and the last match wins, so every rule here is `quick` (the first
//! match wins), in the order nftables uses: the resolver, allowOut, pinned names, denyOut,
//! the host itself, then the outside or the air gap. One rule has no nftables twin: the
//! daemon (root, from the bridge's addresses) may open connections to a VM's guest agent and
//! envd, which a jail serves on host-side Unix sockets instead. Refusals are `block return`
//! (a reset or an ICMP error), so clients fail at once rather than time out.
//!
//! What a sandbox anchor cannot express lives in `pf.conf`, after the anchor line (see
//! [`pf_conf_lines`]): nothing new leaves the host onto the bridge (no sandbox reaches
//! another, no other host reaches a sandbox; replies travel on the states their requests
//! made), and a packet from the bridge that no sandbox anchor claimed (a source that is no
//! sandbox's) is dropped. A sandbox's anchor also holds its member to its own source addresses
//! (stateless, so the bridge-level rules still judge every packet); that guard needs
//! `net.link.bridge.pfil_local_phys=1`.
//!
//! Nothing here runs a command: [`crate::PfNetwork`] feeds these texts to `pfctl`.

use std::fmt::Write as _;

use crate::BridgeConfig;
use crate::egress::EgressPolicy;
use crate::owned;

/// The anchor under which every sandbox's anchor lives; `pf.conf` must name it.
pub const ANCHOR_ROOT: &str = "coppice";

/// The table, inside a sandbox's anchor, of addresses the resolver pinned for allowed names.
pub const PIN_TABLE: &str = "coppice_pins";

/// The TCP ports of a VM's guest agent and envd, which the host's root reaches over the
/// bridge (a jail's are reached through Unix sockets instead).
pub const GUEST_SERVICE_PORTS: [u16; 2] = [49982, 49983];

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
    // The member guard: its own addresses, and link-local ICMPv6 for neighbour discovery.
    line(format!(
        "pass in quick on \"{member}\" inet6 proto ipv6-icmp from fe80::/10 to any no state"
    ));
    line(format!(
        "pass in quick on \"{member}\" from {sources} to any no state"
    ));
    line(format!("block drop in quick on \"{member}\" all"));
    // The one new flow onto the bridge: the daemon (root) to a VM's agent and envd. `user`
    // keeps every other local user off those ports.
    line(format!(
        "pass out quick on \"{bridge}\" proto tcp from {{ {} {} }} to {sources} port {{ {} {} }} user root",
        config.bridge_v4(),
        config.bridge_v6(),
        GUEST_SERVICE_PORTS[0],
        GUEST_SERVICE_PORTS[1],
    ));
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

/// `pfctl -a <anchor> -f -`: replaces the anchor's rules with the ones on standard input.
pub fn load_anchor(index: u32) -> Vec<String> {
    owned(&["-a", &anchor_name(index), "-f", "-"])
}

/// `pfctl -a <anchor> -F all`: empties the anchor (rules and tables) when a sandbox goes.
pub fn flush_anchor(index: u32) -> Vec<String> {
    owned(&["-a", &anchor_name(index), "-F", "all"])
}

/// `pfctl -k <source>` for both of the sandbox's addresses: ends every state it opened, so
/// that a stricter policy cuts open connections at once (states are otherwise judged only
/// when they are made).
pub fn kill_states(config: &BridgeConfig, index: u32) -> [Vec<String>; 2] {
    let (v4, v6) = config.sandbox_addresses(index);
    [
        owned(&["-k", &v4.to_string()]),
        owned(&["-k", &v6.to_string()]),
    ]
}

/// `pfctl -a <anchor> -t coppice_pins -T add <address>…`: opens the addresses the resolver
/// answered for an allowed name.
pub fn pin(index: u32, addresses: &[std::net::IpAddr]) -> Vec<String> {
    let mut args = owned(&["-a", &anchor_name(index), "-t", PIN_TABLE, "-T", "add"]);
    args.extend(addresses.iter().map(ToString::to_string));
    args
}

/// The lines of the host's `pf.conf` that coppice's isolation depends on, in order, without
/// the NAT (see [`pf_conf_lines`]).
fn required_lines(bridge: &str) -> [String; 4] {
    [
        format!(
            "pass quick on \"{bridge}\" inet6 proto ipv6-icmp icmp6-type {{ neighbrsol neighbradv routersol routeradv }} no state"
        ),
        format!("anchor \"{ANCHOR_ROOT}/*\""),
        format!("block return out quick on \"{bridge}\" all"),
        format!("block drop in quick on \"{bridge}\" all"),
    ]
}

/// What the host's `pf.conf` needs for coppice: NAT of both sandbox prefixes out of `uplink`
/// (in the translation section), neighbour discovery on the bridge, the anchor every
/// sandbox's rules hang from, and behind it the blocks of new flows onto the bridge and of
/// sources no anchor claimed.
pub fn pf_conf_lines(config: &BridgeConfig, uplink: &str) -> String {
    let mut text = format!(
        "nat on {uplink} inet from {} to any -> ({uplink})\n\
         nat on {uplink} inet6 from {} to any -> ({uplink})\n",
        config.ipv4, config.ipv6
    );
    for line in required_lines(&config.bridge) {
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// The host's `pf.conf` lacks a line coppice's isolation depends on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "pf.conf lacks the line `{line}`, without which sandboxes are not isolated; add the lines \
     coppice needs (docs/freebsd.md lists them) after the host's own filter rules, in order, \
     and reload pf"
)]
pub struct MissingPfConfLine {
    /// The missing line.
    pub line: String,
}

/// Checks that `pf_conf` (the text of `/etc/pf.conf`) holds the lines coppice needs for the
/// bridge `bridge`, in order, ignoring comments and spacing.
///
/// # Errors
/// The first line that is missing or out of order.
pub fn check_pf_conf(pf_conf: &str, bridge: &str) -> Result<(), MissingPfConfLine> {
    let normalized: Vec<String> = pf_conf
        .lines()
        .map(|line| {
            let code = line.split('#').next().unwrap_or_default();
            code.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .collect();
    let mut from = 0;
    for wanted in required_lines(bridge) {
        match normalized[from..].iter().position(|line| *line == wanted) {
            Some(at) => from += at + 1,
            None => return Err(MissingPfConfLine { line: wanted }),
        }
    }
    Ok(())
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
pass in quick on \"coppice0-4\" inet6 proto ipv6-icmp from fe80::/10 to any no state
pass in quick on \"coppice0-4\" from { 10.213.0.5 fd00:c0:ffee::5 } to any no state
block drop in quick on \"coppice0-4\" all
pass out quick on \"coppice0\" proto tcp from { 10.213.0.1 fd00:c0:ffee::1 } to { 10.213.0.5 fd00:c0:ffee::5 } port { 49982 49983 } user root
pass in quick on \"coppice0\" proto { tcp udp } from { 10.213.0.5 fd00:c0:ffee::5 } to { 10.213.0.1 fd00:c0:ffee::1 } port 53
";

    #[test]
    fn test_anchor_rules_for_each_policy_shape() {
        let from = "from { 10.213.0.5 fd00:c0:ffee::5 }";
        let host = format!("block return in quick on \"coppice0\" {from} to self\n");
        let pins = format!("pass in quick on \"coppice0\" {from} to <coppice_pins>\n");
        let cases = [
            (
                "default",
                policy(true, &[], &[]),
                format!("{HEAD}{pins}{host}pass in quick on \"coppice0\" {from} to any\n"),
            ),
            (
                "air-gap",
                policy(false, &[], &[]),
                format!("{HEAD}{pins}{host}block return in quick on \"coppice0\" {from} to any\n"),
            ),
            (
                "allow wins over deny, the host and the air gap",
                policy(false, &["192.0.2.0/24", "2001:db8::/32"], &["192.0.2.7/32"]),
                format!(
                    "{HEAD}pass in quick on \"coppice0\" {from} to {{ 192.0.2.0/24 2001:db8::/32 }}\n\
                     {pins}block return in quick on \"coppice0\" {from} to {{ 192.0.2.7/32 }}\n\
                     {host}block return in quick on \"coppice0\" {from} to any\n"
                ),
            ),
            (
                "deny with internet",
                policy(true, &[], &["198.51.100.0/24"]),
                format!(
                    "{HEAD}{pins}block return in quick on \"coppice0\" {from} to {{ 198.51.100.0/24 }}\n\
                     {host}pass in quick on \"coppice0\" {from} to any\n"
                ),
            ),
        ];
        for (name, policy, expected) in cases {
            assert_eq!(anchor_rules(&config(), 4, &policy), expected, "{name}");
        }
    }

    #[test]
    fn test_no_anchor_rule_lets_a_sandbox_reach_another() {
        // Sandbox-to-sandbox traffic leaves the host onto the bridge, and only pf.conf's
        // `block return out` judges that direction: an allowOut covering the sandbox prefix
        // must not hold a rule for it. The one `out` rule is the daemon's own (root's, from
        // the bridge's addresses, which no sandbox can send from past its member guard) to a
        // VM's agent and envd.
        let rules = anchor_rules(&config(), 4, &policy(true, &["10.0.0.0/8"], &[]));
        let out: Vec<&str> = rules
            .lines()
            .filter(|rule| rule.contains(" out "))
            .collect();
        assert_eq!(out.len(), 1, "{rules}");
        assert!(
            out[0].contains("from { 10.213.0.1 fd00:c0:ffee::1 }")
                && out[0].ends_with("port { 49982 49983 } user root"),
            "{rules}"
        );
        let lines = pf_conf_lines(&config(), "vtnet0");
        let anchor = lines.find("anchor \"coppice/*\"").unwrap();
        let block_out = lines
            .find("block return out quick on \"coppice0\" all")
            .unwrap();
        assert!(anchor < block_out);
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
             pass quick on \"coppice0\" inet6 proto ipv6-icmp icmp6-type { neighbrsol neighbradv routersol routeradv } no state\n\
             anchor \"coppice/*\"\n\
             block return out quick on \"coppice0\" all\n\
             block drop in quick on \"coppice0\" all\n"
        );
    }

    #[test]
    fn test_pf_conf_must_hold_the_required_lines_in_order() {
        let complete = pf_conf_lines(&config(), "vtnet0");
        assert_eq!(check_pf_conf(&complete, "coppice0"), Ok(()));
        let spaced = format!(
            "set skip on lo\npass out all\n{}",
            complete.replace(' ', "   ")
        )
        .replace(
            "anchor   \"coppice/*\"",
            "  anchor \"coppice/*\"  # sandboxes",
        );
        assert_eq!(check_pf_conf(&spaced, "coppice0"), Ok(()));

        let lines: Vec<&str> = complete.lines().skip(2).collect();
        for missing in 0..lines.len() {
            let text: String = lines
                .iter()
                .enumerate()
                .filter(|(at, _)| *at != missing)
                .map(|(_, line)| format!("{line}\n"))
                .collect();
            assert_eq!(
                check_pf_conf(&text, "coppice0"),
                Err(MissingPfConfLine {
                    line: lines[missing].to_owned()
                }),
                "without line {missing}"
            );
        }
        let commented = complete.replace("anchor \"coppice/*\"", "# anchor \"coppice/*\"");
        assert!(check_pf_conf(&commented, "coppice0").is_err());
        let reversed: String = lines.iter().rev().map(|line| format!("{line}\n")).collect();
        assert!(
            check_pf_conf(&reversed, "coppice0").is_err(),
            "order matters"
        );
        assert!(
            check_pf_conf(&complete, "other0").is_err(),
            "the bridge is named"
        );
        let error = check_pf_conf("", "coppice0").unwrap_err();
        assert!(error.to_string().contains("docs/freebsd.md"), "{error}");
    }
}
