//! Releasing sandbox endpoints, many at once when many sandboxes go together: their host
//! links are deleted in one kernel pass, their rules in one listing and one transaction.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::{Endpoint, Inner, rules, script};

/// Most endpoints released in one pass; the rest wait for the next.
pub(super) const MAX_BATCH: usize = 256;

impl Inner {
    /// Removes `endpoints`' links, rules and flows, then frees their indices. An index whose
    /// link, rules or flows may remain stays taken: reusing it would hand a new sandbox the
    /// old one's leftovers.
    pub(super) fn release_all(&self, endpoints: Vec<Endpoint>) {
        let indices: Vec<u32> = endpoints.iter().map(|endpoint| endpoint.index).collect();
        // The links first: until one is gone its sandbox keeps its policy, however strict.
        let unlinked = self.remove_links(&indices);
        let rules_gone = self.remove_rules_of(&unlinked);
        drop(endpoints);
        for index in indices {
            // Before the index is free: a new sandbox with these addresses must not inherit
            // its flows.
            let (v4, v6) = self.config.sandbox_addresses(index);
            let mut flows_gone = true;
            for address in [IpAddr::V4(v4), IpAddr::V6(v6)] {
                if let Err(error) = self.sys.forget_flows(address) {
                    tracing::warn!(%address, error = %error, "cannot delete a sandbox's conntrack entries");
                    flows_gone = false;
                }
            }
            if rules_gone.contains(&index) && flows_gone {
                self.free(index);
            }
        }
    }

    /// Deletes the host links of `indices`; the indices whose link is gone.
    fn remove_links(&self, indices: &[u32]) -> Vec<u32> {
        let present: Vec<u32> = indices
            .iter()
            .copied()
            .filter(|index| self.sys.link_exists(&self.config.host_link(*index)))
            .collect();
        if present.len() > 1 && self.release_group_is_ours() {
            let removal = script::endpoints_removal(&self.config, &present);
            if let Err(error) = self.sys.ip_batch(None, &removal) {
                tracing::warn!(count = present.len(), error = %error, "cannot delete sandbox veths together; deleting them one by one");
            }
        }
        // One by one whatever the group left (or all of them, when it could not be used).
        indices
            .iter()
            .copied()
            .filter(|index| self.remove_link(*index))
            .collect()
    }

    /// Whether the release group holds nothing but this bridge's links: deleting the group
    /// deletes every member.
    fn release_group_is_ours(&self) -> bool {
        let group = self.config.release_group();
        match self.sys.links_in_group(group) {
            Ok(members) => {
                let foreign: Vec<&String> = members
                    .iter()
                    .filter(|name| self.config.index_of_link(name).is_none())
                    .collect();
                if !foreign.is_empty() {
                    tracing::warn!(
                        group,
                        ?foreign,
                        "the release group holds other links; deleting sandbox veths one by one"
                    );
                }
                foreign.is_empty()
            }
            Err(error) => {
                tracing::warn!(group, error = %error, "cannot list the release group; deleting sandbox veths one by one");
                false
            }
        }
    }

    /// Removes the rules of `indices` in one transaction; the indices whose rules are gone.
    fn remove_rules_of(&self, indices: &[u32]) -> BTreeSet<u32> {
        if indices.len() <= 1 {
            return indices
                .iter()
                .copied()
                .filter(|index| self.remove_rules(*index))
                .collect();
        }
        let together = self
            .sys
            .nft_listing(&self.config.table())
            .and_then(|json| rules::listed_many(&json, indices).map_err(std::io::Error::other))
            .and_then(|listed| {
                let script: String = listed
                    .iter()
                    .map(|(index, listed)| rules::removal(&self.config, *index, listed))
                    .collect();
                if script.is_empty() {
                    Ok(())
                } else {
                    self.sys.nft(&script)
                }
            });
        match together {
            Ok(()) => indices.iter().copied().collect(),
            Err(error) => {
                tracing::warn!(count = indices.len(), error = %error, "cannot remove sandboxes' rules together; removing them one by one");
                indices
                    .iter()
                    .copied()
                    .filter(|index| self.remove_rules(*index))
                    .collect()
            }
        }
    }
}
