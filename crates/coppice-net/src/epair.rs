//! FreeBSD's side of a sandbox's link: an epair whose `a` end joins the host bridge as a
//! private member (no frames to other private members, i.e. other sandboxes) and whose `b`
//! end moves into the sandbox's VNET jail as `eth0`, with the same addresses, MAC and routes
//! as on Linux. Each step is one command's argument list (program first); nothing here runs
//! them.
//!
//! [`prepare`] runs ahead of time, off the create path, like the Linux pool: the pair exists,
//! the host end is named, bridged and up. The jail runtime moves the other end in once the
//! jail exists (`coppice_jail::vnet`), from the `NetAttachment::Vnet` that attach returns.

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
        // The bridge knows the sandbox's MAC on its member from the start and learns
        // nothing there: a sandbox that changes its MAC cannot draw another's frames, and
        // the host's first frames to it are not flooded to every member.
        owned(&["ifconfig", bridge, "-learn", &host]),
        owned(&[
            "ifconfig",
            bridge,
            "static",
            &host,
            &config.sandbox_mac(index),
        ]),
        owned(&["ifconfig", &host, "up"]),
    ])
}

/// `ifconfig epair create` printed something other than an epair's `a` end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`ifconfig epair create` printed {0:?}, not an epair interface")]
pub struct NotAnEpair(pub String);

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
                "ifconfig coppice0 -learn coppice0-7",
                "ifconfig coppice0 static coppice0-7 02:c0:ff:ee:00:07",
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
}
