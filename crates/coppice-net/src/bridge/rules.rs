//! The nftables rules of one sandbox's policy (pure, unit-tested without a kernel).
//!
//! A sandbox whose policy is not the default has a chain, `sbx_<index>`, that the base chains
//! reach through the `egress_v4`/`egress_v6` verdict maps. Every policy change is a new
//! *generation* of rules inserted at the top of that chain, each tagged with a comment
//! `g<generation>` and ending in `return`, so the generation below it is shadowed at once.
//! Only additions are on the request path: on these kernels any deletion in an nftables
//! transaction waits for RCU grace periods (about 12 ms here), so shadowed generations,
//! pin sets that are no longer used and whole chains are deleted afterwards, off the path.
//!
//! Addresses an allowed domain resolved to are *pins*: elements with a timeout in the
//! generation's pin sets `pins4_<index>_<p>` / `pins6_<index>_<p>`. A flow opened through a
//! pin gets conntrack mark `p`, and flows with that mark stay open after the pin expires, as
//! long as the allowed domains do not change (which starts a new `p`).

use std::fmt::Write;
use std::net::IpAddr;

use ipnet::{Ipv4Net, Ipv6Net};

use super::config::BridgeConfig;
use crate::egress::EgressPolicy;

/// What becomes of one sandbox's chain.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChainChange<'a> {
    /// The sandbox's index.
    pub(crate) index: u32,
    /// Whether it has a chain (and map entries) already.
    pub(crate) had_chain: bool,
    /// The policy it moves to.
    pub(crate) policy: &'a EgressPolicy,
    /// The tag of the new rules.
    pub(crate) generation: u32,
    /// The pin sets and conntrack mark the rules use: made here when new (equal to
    /// `generation`) or when the chain is.
    pub(crate) pins: u32,
}

/// An `nft -f` script that puts a new generation of rules at the top of the sandbox's chain
/// (making the chain and its map entries first if needed), in one transaction of additions
/// only. Empty when a sandbox without a chain stays on the default policy.
pub(crate) fn policy_change(config: &BridgeConfig, change: &ChainChange<'_>) -> String {
    let ChainChange {
        index,
        had_chain,
        policy,
        generation,
        pins,
    } = *change;
    if !had_chain && policy.is_default() {
        return String::new();
    }
    let t = format!("inet {}", config.table());
    let chain = chain_name(index);
    let (pins_v4, pins_v6) = pin_sets(index, pins);
    let mut s = String::new();
    // Only what is new: naming an existing chain or set makes nft read far more of the
    // ruleset (about 15 ms with a few hundred rules).
    if !had_chain {
        let _ = writeln!(s, "add chain {t} {chain}");
    }
    if !policy.allow_domains.is_empty() && (!had_chain || pins == generation) {
        let _ = writeln!(
            s,
            "add set {t} {pins_v4} {{ type ipv4_addr ; flags timeout ; }}"
        );
        let _ = writeln!(
            s,
            "add set {t} {pins_v6} {{ type ipv6_addr ; flags timeout ; }}"
        );
    }
    let mut rules = Vec::new();
    if !policy.allow_domains.is_empty() {
        // Pins open the outside only: a name that resolves to one of the host's own
        // addresses (DNS rebinding) opens nothing on the host.
        rules.push(format!("ct mark {pins} accept"));
        rules.push(format!(
            "fib daddr type != local ip daddr @{pins_v4} ct mark set {pins} accept"
        ));
        rules.push(format!(
            "fib daddr type != local ip6 daddr @{pins_v6} ct mark set {pins} accept"
        ));
    }
    let allow_v4 = Ipv4Net::aggregate(&policy.allow_v4());
    let allow_v6 = Ipv6Net::aggregate(&policy.allow_v6());
    let deny_v4 = Ipv4Net::aggregate(&policy.deny_v4());
    let deny_v6 = Ipv6Net::aggregate(&policy.deny_v6());
    if !allow_v4.is_empty() {
        rules.push(format!("ip daddr {} accept", set(&allow_v4)));
    }
    if !allow_v6.is_empty() {
        rules.push(format!("ip6 daddr {} accept", set(&allow_v6)));
    }
    let denied = [
        ("ip", (!deny_v4.is_empty()).then(|| set(&deny_v4))),
        ("ip6", (!deny_v6.is_empty()).then(|| set(&deny_v6))),
    ];
    for (family, nets) in denied {
        if let Some(nets) = nets {
            rules.push(format!(
                "{family} daddr {nets} meta l4proto tcp reject with tcp reset"
            ));
            rules.push(format!(
                "{family} daddr {nets} reject with icmpx admin-prohibited"
            ));
        }
    }
    if !policy.internet {
        rules.push("meta l4proto tcp reject with tcp reset".to_owned());
        rules.push("reject with icmpx admin-prohibited".to_owned());
    }
    rules.push("return".to_owned());
    // Each insert goes to the top, so the last one inserted is the first evaluated.
    for rule in rules.iter().rev() {
        let _ = writeln!(
            s,
            "insert rule {t} {chain} {rule} comment \"g{generation}\""
        );
    }
    if !had_chain {
        let (v4, v6) = config.sandbox_addresses(index);
        let _ = writeln!(s, "add element {t} egress_v4 {{ {v4} : jump {chain} }}");
        let _ = writeln!(s, "add element {t} egress_v6 {{ {v6} : jump {chain} }}");
    }
    s
}

/// What of a sandbox's rules a listing of the table shows.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Listed {
    /// Whether its chain exists.
    pub(crate) chain: bool,
    /// Its rules: handle and comment.
    pub(crate) rules: Vec<(u64, Option<String>)>,
    /// Its pin sets.
    pub(crate) sets: Vec<String>,
}

/// Reads the sandbox at `index`'s chain, rules and pin sets out of `nft -j -a list table`.
///
/// # Errors
/// The text is not nft's JSON.
pub(crate) fn listed(json: &str, index: u32) -> Result<Listed, serde_json::Error> {
    let mut many = listed_many(json, &[index])?;
    Ok(many.remove(&index).unwrap_or_default())
}

/// [`listed`] for each of `indices`, out of one reading of the listing.
///
/// # Errors
/// The text is not nft's JSON.
pub(crate) fn listed_many(
    json: &str,
    indices: &[u32],
) -> Result<std::collections::BTreeMap<u32, Listed>, serde_json::Error> {
    let document: serde_json::Value = serde_json::from_str(json)?;
    let empty = Vec::new();
    let items = document["nftables"].as_array().unwrap_or(&empty);
    Ok(indices
        .iter()
        .map(|index| (*index, listed_in(items, *index)))
        .collect())
}

fn listed_in(items: &[serde_json::Value], index: u32) -> Listed {
    let chain = chain_name(index);
    let prefixes = [format!("pins4_{index}_"), format!("pins6_{index}_")];
    let mut listed = Listed::default();
    for item in items {
        if item["chain"]["name"].as_str() == Some(chain.as_str()) {
            listed.chain = true;
        }
        if let Some(name) = item["set"]["name"].as_str()
            && prefixes
                .iter()
                .any(|prefix| name.starts_with(prefix.as_str()))
        {
            listed.sets.push(name.to_owned());
        }
        let rule = &item["rule"];
        if rule["chain"].as_str() == Some(chain.as_str())
            && let Some(handle) = rule["handle"].as_u64()
        {
            listed
                .rules
                .push((handle, rule["comment"].as_str().map(str::to_owned)));
        }
    }
    listed
}

/// An `nft -f` script that deletes what generation `generation` (with pin sets `pins`)
/// shadowed: older rules and pin sets no longer used. Empty when there is nothing.
pub(crate) fn garbage(
    config: &BridgeConfig,
    index: u32,
    listed: &Listed,
    generation: u32,
    pins: u32,
) -> String {
    let t = format!("inet {}", config.table());
    let chain = chain_name(index);
    let current = format!("g{generation}");
    let (pins_v4, pins_v6) = pin_sets(index, pins);
    let mut s = String::new();
    for (handle, comment) in &listed.rules {
        if comment.as_deref() != Some(current.as_str()) {
            let _ = writeln!(s, "delete rule {t} {chain} handle {handle}");
        }
    }
    for name in &listed.sets {
        if *name != pins_v4 && *name != pins_v6 {
            let _ = writeln!(s, "delete set {t} {name}");
        }
    }
    s
}

/// An `nft -f` script that removes everything of the sandbox at `index` that `listed` shows:
/// its map entries, chain and pin sets.
pub(crate) fn removal(config: &BridgeConfig, index: u32, listed: &Listed) -> String {
    if !listed.chain {
        return String::new();
    }
    let t = format!("inet {}", config.table());
    let chain = chain_name(index);
    let (v4, v6) = config.sandbox_addresses(index);
    let mut s = format!(
        "delete element {t} egress_v4 {{ {v4} }}\n\
         delete element {t} egress_v6 {{ {v6} }}\n\
         flush chain {t} {chain}\n\
         delete chain {t} {chain}\n"
    );
    for name in &listed.sets {
        let _ = writeln!(s, "delete set {t} {name}");
    }
    s
}

/// Shortest and longest time an address from a DNS answer stays open: long enough for a
/// client that caches a little past the TTL, short enough that a name's new owner does not
/// inherit the sandbox's access for long.
const PIN_MIN_SECONDS: u32 = 60;
const PIN_MAX_SECONDS: u32 = 24 * 3600;

/// An `nft -f` script that opens `addresses` (with their TTLs) to the sandbox at `index`
/// through its pin sets `pins`, renewing the timeout of any already open.
pub(crate) fn pin(
    config: &BridgeConfig,
    index: u32,
    pins: u32,
    addresses: &[(IpAddr, u32)],
) -> String {
    let t = format!("inet {}", config.table());
    let (pins_v4, pins_v6) = pin_sets(index, pins);
    let mut s = String::new();
    for (address, ttl) in addresses {
        let set = if address.is_ipv4() {
            &pins_v4
        } else {
            &pins_v6
        };
        let seconds = (*ttl).clamp(PIN_MIN_SECONDS, PIN_MAX_SECONDS);
        // add, delete, add: the element exists for the delete, and the last add sets the
        // new timeout (a plain add leaves an existing element's timeout alone).
        let _ = writeln!(
            s,
            "add element {t} {set} {{ {address} timeout {seconds}s }}"
        );
        let _ = writeln!(s, "delete element {t} {set} {{ {address} }}");
        let _ = writeln!(
            s,
            "add element {t} {set} {{ {address} timeout {seconds}s }}"
        );
    }
    s
}

fn pin_sets(index: u32, pins: u32) -> (String, String) {
    (
        format!("pins4_{index}_{pins}"),
        format!("pins6_{index}_{pins}"),
    )
}

fn chain_name(index: u32) -> String {
    format!("sbx_{index}")
}

fn set<T: std::fmt::Display>(nets: &[T]) -> String {
    let items: Vec<String> = nets.iter().map(ToString::to_string).collect();
    format!("{{ {} }}", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::tests::test_policy as policy;

    fn config() -> BridgeConfig {
        BridgeConfig::new("cpn0", "/state")
    }

    fn change(index: u32, had_chain: bool, policy: &EgressPolicy) -> String {
        policy_change(
            &config(),
            &ChainChange {
                index,
                had_chain,
                policy,
                generation: 77,
                pins: 77,
            },
        )
    }

    /// The rules of a script in evaluation order (inserts reversed).
    fn evaluated(script: &str) -> Vec<String> {
        let mut rules: Vec<String> = script
            .lines()
            .filter_map(|line| line.strip_prefix("insert rule inet coppice_cpn0 sbx_3 "))
            .map(str::to_owned)
            .collect();
        rules.reverse();
        rules
    }

    #[test]
    fn test_default_policy_without_a_chain_needs_nothing() {
        assert_eq!(change(3, false, &policy(true, &[], &[])), "");
    }

    #[test]
    fn test_back_to_default_shadows_with_a_bare_return() {
        let script = change(3, true, &policy(true, &[], &[]));
        assert_eq!(evaluated(&script), vec!["return comment \"g77\""]);
        assert!(!script.contains("delete"), "{script}");
    }

    #[test]
    fn test_air_gap_with_allow_accepts_then_rejects_then_returns() {
        let script = change(3, false, &policy(false, &["10.9.0.0/16"], &[]));
        assert_eq!(
            evaluated(&script),
            vec![
                "ip daddr { 10.9.0.0/16 } accept comment \"g77\"",
                "meta l4proto tcp reject with tcp reset comment \"g77\"",
                "reject with icmpx admin-prohibited comment \"g77\"",
                "return comment \"g77\"",
            ]
        );
        assert!(
            script.contains("add element inet coppice_cpn0 egress_v4 { 10.213.0.4 : jump sbx_3 }")
        );
        assert!(!script.contains("delete"), "only additions: {script}");
    }

    #[test]
    fn test_deny_rejects_and_internet_stays_open() {
        let rules = evaluated(&change(3, true, &policy(true, &[], &["192.0.2.0/24"])));
        assert_eq!(
            rules[0],
            "ip daddr { 192.0.2.0/24 } meta l4proto tcp reject with tcp reset comment \"g77\""
        );
        assert_eq!(rules.last().unwrap(), "return comment \"g77\"");
        assert_eq!(rules.len(), 3);
    }

    #[test]
    fn test_overlapping_cidrs_are_merged() {
        let rules = evaluated(&change(
            3,
            false,
            &policy(false, &["10.0.0.0/8", "10.1.0.0/16"], &[]),
        ));
        assert_eq!(rules[0], "ip daddr { 10.0.0.0/8 } accept comment \"g77\"");
    }

    #[test]
    fn test_allowed_domains_accept_pinned_addresses_and_their_marked_flows() {
        let script = change(3, false, &policy(false, &["pypi.org"], &[]));
        assert!(
            script.contains(
                "add set inet coppice_cpn0 pins4_3_77 { type ipv4_addr ; flags timeout ; }"
            )
        );
        let rules = evaluated(&script);
        assert_eq!(rules[0], "ct mark 77 accept comment \"g77\"");
        assert_eq!(
            rules[1],
            "fib daddr type != local ip daddr @pins4_3_77 ct mark set 77 accept comment \"g77\""
        );
    }

    #[test]
    fn test_kept_domains_reuse_their_pins() {
        let policy = policy(false, &["pypi.org"], &["192.0.2.0/24"]);
        let script = policy_change(
            &config(),
            &ChainChange {
                index: 3,
                had_chain: true,
                policy: &policy,
                generation: 90,
                pins: 77,
            },
        );
        assert!(
            !script.contains("add set") && !script.contains("add chain"),
            "{script}"
        );
        assert_eq!(evaluated(&script)[0], "ct mark 77 accept comment \"g90\"");
    }

    const LISTING: &str = r#"{"nftables": [{"metainfo": {}},
        {"set": {"name": "pins4_3_77", "table": "coppice_cpn0"}},
        {"set": {"name": "pins4_3_90", "table": "coppice_cpn0"}},
        {"set": {"name": "pins4_31_90", "table": "coppice_cpn0"}},
        {"chain": {"name": "sbx_3"}},
        {"rule": {"chain": "sbx_3", "handle": 9, "comment": "g90"}},
        {"rule": {"chain": "sbx_3", "handle": 4, "comment": "g77"}},
        {"rule": {"chain": "sbx_3", "handle": 2}},
        {"rule": {"chain": "sbx_31", "handle": 5, "comment": "g1"}}]}"#;

    #[test]
    fn test_listing_finds_only_this_sandboxes_rules_and_sets() {
        let found = listed(LISTING, 3).unwrap();
        assert!(found.chain);
        assert_eq!(
            found.rules,
            vec![(9, Some("g90".into())), (4, Some("g77".into())), (2, None)]
        );
        assert_eq!(
            found.sets,
            vec!["pins4_3_77".to_owned(), "pins4_3_90".to_owned()]
        );
        assert!(listed("not json", 3).is_err());
    }

    #[test]
    fn test_garbage_is_every_other_generation_and_unused_pins() {
        let found = listed(LISTING, 3).unwrap();
        let script = garbage(&config(), 3, &found, 90, 90);
        assert_eq!(
            script,
            "delete rule inet coppice_cpn0 sbx_3 handle 4\n\
             delete rule inet coppice_cpn0 sbx_3 handle 2\n\
             delete set inet coppice_cpn0 pins4_3_77\n"
        );
        assert_eq!(garbage(&config(), 3, &Listed::default(), 90, 90), "");
    }

    #[test]
    fn test_removal_takes_map_entries_chain_and_sets() {
        let script = removal(&config(), 3, &listed(LISTING, 3).unwrap());
        assert!(script.contains("delete element inet coppice_cpn0 egress_v4 { 10.213.0.4 }"));
        assert!(script.contains("delete chain inet coppice_cpn0 sbx_3"));
        assert!(script.contains("delete set inet coppice_cpn0 pins4_3_90"));
        assert_eq!(removal(&config(), 3, &Listed::default()), "");
    }

    #[test]
    fn test_pins_renew_timeouts_and_clamp_them() {
        let script = pin(
            &config(),
            4,
            7,
            &[
                ("192.0.2.1".parse().unwrap(), 5),
                ("2001:db8::1".parse().unwrap(), 999_999),
            ],
        );
        assert!(
            script.contains("add element inet coppice_cpn0 pins4_4_7 { 192.0.2.1 timeout 60s }")
        );
        assert!(script.contains("delete element inet coppice_cpn0 pins4_4_7 { 192.0.2.1 }"));
        assert!(script.contains("pins6_4_7 { 2001:db8::1 timeout 86400s }"));
        assert_eq!(pin(&config(), 4, 7, &[]), "");
    }
}
