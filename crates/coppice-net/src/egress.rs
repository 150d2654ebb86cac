//! A sandbox's egress policy, parsed and validated from core's `NetworkSpec`.

use std::net::IpAddr;

use coppice_core::net::NetError;
use coppice_core::spec::NetworkSpec;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Most entries in `allow_out` plus `deny_out`: each becomes a rule element evaluated for
/// every packet of the sandbox.
pub const MAX_ENTRIES: usize = 256;

/// What a sandbox may reach beyond the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EgressPolicy {
    /// Whether destinations in neither list are reachable (false: air-gapped).
    pub internet: bool,
    /// Always reachable; wins over `deny`. Also how a host service is opened to a sandbox.
    pub allow: Vec<IpNet>,
    /// Never reachable unless also in `allow`.
    pub deny: Vec<IpNet>,
    /// Names the resolver answers even when air-gapped; their addresses become reachable
    /// for as long as the answer lives.
    pub allow_domains: Vec<DomainPattern>,
    /// Names the resolver never answers (unless also allowed).
    pub deny_domains: Vec<DomainPattern>,
}

/// A domain in `allowOut` / `denyOut`: `example.com` is that name alone, `*.example.com`
/// every name below it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum DomainPattern {
    /// Exactly this name (lower case, no trailing dot).
    Exact(String),
    /// Any name that ends in `.` + this one.
    Below(String),
}

impl DomainPattern {
    /// Whether `name` (lower case, no trailing dot) matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(exact) => name == exact,
            Self::Below(parent) => name
                .strip_suffix(parent.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

impl std::fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Below(parent) => write!(f, "*.{parent}"),
        }
    }
}

/// What the sandbox resolver does with a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameVerdict {
    /// Answer, and open the answer's addresses to the sandbox.
    Pin,
    /// Answer; reachability is up to the address rules.
    Forward,
    /// Answer that the name does not exist.
    Refuse,
}

impl EgressPolicy {
    /// Validates `spec`.
    ///
    /// # Errors
    /// `Invalid` naming the first entry that is not an address or CIDR, or too many entries.
    pub fn from_spec(spec: &NetworkSpec) -> Result<Self, NetError> {
        let entries = spec.allow_out.len() + spec.deny_out.len();
        if entries > MAX_ENTRIES {
            return Err(NetError::Invalid {
                reason: format!(
                    "allowOut and denyOut hold {entries} entries together; at most {MAX_ENTRIES} are allowed"
                ),
            });
        }
        let (allow, allow_domains) = parse_all("allowOut", &spec.allow_out)?;
        let (deny, deny_domains) = parse_all("denyOut", &spec.deny_out)?;
        Ok(Self {
            internet: spec.allow_internet,
            allow,
            deny,
            allow_domains,
            deny_domains,
        })
    }

    /// The policy every sandbox has unless told otherwise: the outside is open, nothing else
    /// is. Such a sandbox needs no rules of its own.
    pub fn is_default(&self) -> bool {
        self.internet
            && self.allow.is_empty()
            && self.deny.is_empty()
            && self.allow_domains.is_empty()
            && self.deny_domains.is_empty()
    }

    /// What the resolver does when this sandbox asks for `name` (any case, trailing dot or
    /// not): allowed names win over denied ones; others resolve only with internet access.
    pub fn verdict(&self, name: &str) -> NameVerdict {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if self.allow_domains.iter().any(|p| p.matches(&name)) {
            NameVerdict::Pin
        } else if self.deny_domains.iter().any(|p| p.matches(&name)) || !self.internet {
            NameVerdict::Refuse
        } else {
            NameVerdict::Forward
        }
    }

    /// The IPv4 CIDRs of `allow`.
    pub fn allow_v4(&self) -> Vec<Ipv4Net> {
        v4(&self.allow)
    }

    /// The IPv6 CIDRs of `allow`.
    pub fn allow_v6(&self) -> Vec<Ipv6Net> {
        v6(&self.allow)
    }

    /// The IPv4 CIDRs of `deny`.
    pub fn deny_v4(&self) -> Vec<Ipv4Net> {
        v4(&self.deny)
    }

    /// The IPv6 CIDRs of `deny`.
    pub fn deny_v6(&self) -> Vec<Ipv6Net> {
        v6(&self.deny)
    }
}

fn v4(nets: &[IpNet]) -> Vec<Ipv4Net> {
    nets.iter()
        .filter_map(|net| match net {
            IpNet::V4(net) => Some(*net),
            IpNet::V6(_) => None,
        })
        .collect()
}

fn v6(nets: &[IpNet]) -> Vec<Ipv6Net> {
    nets.iter()
        .filter_map(|net| match net {
            IpNet::V6(net) => Some(*net),
            IpNet::V4(_) => None,
        })
        .collect()
}

enum Entry {
    Net(IpNet),
    Domain(DomainPattern),
}

fn parse_all(
    field: &str,
    entries: &[String],
) -> Result<(Vec<IpNet>, Vec<DomainPattern>), NetError> {
    let mut nets = Vec::new();
    let mut domains = Vec::new();
    for entry in entries {
        match parse_entry(field, entry)? {
            Entry::Net(net) => nets.push(net),
            Entry::Domain(domain) => domains.push(domain),
        }
    }
    nets.sort_unstable();
    nets.dedup();
    domains.sort_unstable();
    domains.dedup();
    Ok((nets, domains))
}

/// An address (a /32 or /128), a CIDR (host bits cleared, as nft wants them) or a domain.
fn parse_entry(field: &str, entry: &str) -> Result<Entry, NetError> {
    let entry = entry.trim();
    if let Ok(net) = entry.parse::<IpNet>() {
        return Ok(Entry::Net(net.trunc()));
    }
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Ok(Entry::Net(IpNet::from(address)));
    }
    parse_domain(entry).map(Entry::Domain).ok_or_else(|| NetError::Invalid {
        reason: format!(
            "{field} entry {entry:?} is not an IP address, a CIDR such as 10.0.0.0/8, or a domain such as example.com or *.example.com"
        ),
    })
}

/// A host name of letters, digits and hyphens (labels of 1 to 63, 253 at most in all),
/// optionally led by `*.`.
fn parse_domain(entry: &str) -> Option<DomainPattern> {
    let lower = entry.trim_end_matches('.').to_ascii_lowercase();
    let (below, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest.to_owned()),
        None => (false, lower),
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    // A bare word such as "localhost" is more likely a typo than a domain to open, and an
    // all-digit last label is a mistyped address, never a top-level domain.
    let numeric_tld = name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()));
    if !valid || numeric_tld || (!below && !name.contains('.')) {
        return None;
    }
    Some(if below {
        DomainPattern::Below(name)
    } else {
        DomainPattern::Exact(name)
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn spec(internet: bool, allow: &[&str], deny: &[&str]) -> NetworkSpec {
        NetworkSpec {
            allow_internet: internet,
            allow_out: allow.iter().map(|s| (*s).to_owned()).collect(),
            deny_out: deny.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// A policy from literal lists (the other modules' tests use it too).
    pub(crate) fn test_policy(internet: bool, allow: &[&str], deny: &[&str]) -> EgressPolicy {
        EgressPolicy::from_spec(&spec(internet, allow, deny)).unwrap()
    }

    #[test]
    fn test_default_spec_is_default_policy() {
        let policy = EgressPolicy::from_spec(&NetworkSpec::default()).unwrap();
        assert!(policy.is_default());
    }

    #[test]
    fn test_addresses_become_host_cidrs_and_host_bits_are_cleared() {
        let policy =
            EgressPolicy::from_spec(&spec(true, &["10.1.2.3", "fd00::1"], &["192.168.7.9/24"]))
                .unwrap();
        assert_eq!(policy.allow_v4(), vec!["10.1.2.3/32".parse().unwrap()]);
        assert_eq!(policy.allow_v6(), vec!["fd00::1/128".parse().unwrap()]);
        assert_eq!(policy.deny_v4(), vec!["192.168.7.0/24".parse().unwrap()]);
        assert!(!policy.is_default());
    }

    #[test]
    fn test_air_gap_alone_is_not_default() {
        let policy = EgressPolicy::from_spec(&spec(false, &[], &[])).unwrap();
        assert!(!policy.internet);
        assert!(!policy.is_default());
    }

    #[test]
    fn test_duplicates_collapse() {
        let policy =
            EgressPolicy::from_spec(&spec(true, &["10.0.0.0/8", "10.9.9.9/8"], &[])).unwrap();
        assert_eq!(policy.allow.len(), 1);
    }

    #[test]
    fn test_domains_are_parsed_and_matched() {
        let policy = EgressPolicy::from_spec(&spec(
            true,
            &["Example.COM.", "*.pypi.org"],
            &["*.evil.test", "tracker.test"],
        ))
        .unwrap();
        assert!(policy.allow.is_empty());
        assert_eq!(
            policy.allow_domains,
            vec![
                DomainPattern::Exact("example.com".into()),
                DomainPattern::Below("pypi.org".into())
            ]
        );
        assert_eq!(policy.verdict("example.com."), NameVerdict::Pin);
        assert_eq!(policy.verdict("www.example.com"), NameVerdict::Forward);
        assert_eq!(policy.verdict("files.PYPI.org"), NameVerdict::Pin);
        assert_eq!(policy.verdict("pypi.org"), NameVerdict::Forward);
        assert_eq!(policy.verdict("notpypi.org"), NameVerdict::Forward);
        assert_eq!(policy.verdict("a.evil.test"), NameVerdict::Refuse);
        assert_eq!(policy.verdict("tracker.test"), NameVerdict::Refuse);
        assert!(!policy.is_default());
    }

    #[test]
    fn test_air_gap_refuses_names_not_allowed_and_allow_wins_over_deny() {
        let policy =
            EgressPolicy::from_spec(&spec(false, &["ok.test"], &["ok.test", "*.test"])).unwrap();
        assert_eq!(policy.verdict("ok.test"), NameVerdict::Pin);
        assert_eq!(policy.verdict("other.example"), NameVerdict::Refuse);
    }

    #[test]
    fn test_bad_domains_are_refused() {
        for bad in [
            "localhost",
            "-bad.test",
            "a..b",
            "*.",
            "has space.test",
            "x/y.test",
            "10.0.0.999",
        ] {
            assert!(
                EgressPolicy::from_spec(&spec(true, &[bad], &[])).is_err(),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn test_garbage_is_refused_naming_the_field() {
        let error = EgressPolicy::from_spec(&spec(true, &[], &["10.0.0.0/99"])).unwrap_err();
        assert!(error.to_string().contains("not an IP address"), "{error}");
        let message = error.to_string();
        assert!(message.contains("denyOut"), "{message}");
    }

    #[test]
    fn test_too_many_entries_are_refused() {
        let many: Vec<String> = (0..=MAX_ENTRIES)
            .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
            .collect();
        let spec = NetworkSpec {
            allow_internet: true,
            allow_out: many,
            deny_out: Vec::new(),
        };
        assert!(matches!(
            EgressPolicy::from_spec(&spec),
            Err(NetError::Invalid { .. })
        ));
    }
}
