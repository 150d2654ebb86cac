//! Fakes of the OS seams: namespaces are descriptors of `/dev/null`; scripts are recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{BridgeSys, NetnsSys};

/// Counts the namespaces it pretends to create; can be told to fail.
#[derive(Debug, Default)]
pub struct FakeNetnsSys {
    created: AtomicUsize,
    failing: AtomicBool,
}

impl FakeNetnsSys {
    /// How many namespaces were created.
    pub fn created(&self) -> usize {
        self.created.load(Ordering::SeqCst)
    }

    /// Makes every further creation fail.
    pub fn fail(&self) {
        self.failing.store(true, Ordering::SeqCst);
    }
}

impl NetnsSys for FakeNetnsSys {
    fn new_namespace(&self) -> io::Result<OwnedFd> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        self.created.fetch_add(1, Ordering::SeqCst);
        Ok(OwnedFd::from(File::open("/dev/null")?))
    }

    fn path_of(&self, fd: &OwnedFd) -> PathBuf {
        PathBuf::from(format!("/fake/fd/{}", fd.as_raw_fd()))
    }

    fn new_owned_namespace(
        &self,
        _map: &coppice_core::volume::IdMap,
    ) -> io::Result<super::OwnedNamespace> {
        let net = self.new_namespace()?;
        Ok(super::OwnedNamespace {
            user: OwnedFd::from(File::open("/dev/null")?),
            net,
        })
    }
}

/// One script the fake was asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// `ip -batch`, in a namespace or on the host.
    Ip {
        /// The namespace, if any.
        netns: Option<PathBuf>,
        /// The lines.
        script: String,
    },
    /// `nft -f`.
    Nft(String),
    /// Conntrack entries from this source deleted.
    ForgetFlows(std::net::IpAddr),
}

/// Records every script, keeps a set of host links that `link add` / `link del` lines
/// change, and fails `nft` on request.
#[derive(Debug, Default)]
pub struct FakeBridgeSys {
    netns: FakeNetnsSys,
    ran: Mutex<Vec<Ran>>,
    links: Mutex<BTreeSet<String>>,
    groups: Mutex<BTreeMap<String, u32>>,
    fail_nft: AtomicBool,
    forwarding: AtomicBool,
    listing: Mutex<String>,
    locked: Mutex<BTreeSet<String>>,
}

impl FakeBridgeSys {
    /// Everything run so far.
    pub fn ran(&self) -> Vec<Ran> {
        lock(&self.ran).clone()
    }

    /// The `nft` scripts run so far.
    pub fn nft_scripts(&self) -> Vec<String> {
        self.ran()
            .into_iter()
            .filter_map(|ran| match ran {
                Ran::Nft(script) => Some(script),
                Ran::Ip { .. } | Ran::ForgetFlows(_) => None,
            })
            .collect()
    }

    /// Host links that exist now.
    pub fn links(&self) -> BTreeSet<String> {
        lock(&self.links).clone()
    }

    /// Pretends a link exists (e.g. left by an earlier daemon).
    pub fn add_link(&self, name: &str) {
        lock(&self.links).insert(name.to_owned());
    }

    /// Puts a host link in link group `group`.
    pub fn set_link_group(&self, name: &str, group: u32) {
        lock(&self.groups).insert(name.to_owned(), group);
    }

    /// What `nft_listing` answers from now on (nft's JSON).
    pub fn set_listing(&self, json: &str) {
        *lock(&self.listing) = json.to_owned();
    }

    /// Lets `lock_bridge` take `bridge` again (its holder went away).
    pub fn unlock(&self, bridge: &str) {
        lock(&self.locked).remove(bridge);
    }

    /// Makes every further `nft` call fail.
    pub fn fail_nft(&self) {
        self.fail_nft.store(true, Ordering::SeqCst);
    }

    /// Whether forwarding was turned on.
    pub fn forwarding(&self) -> bool {
        self.forwarding.load(Ordering::SeqCst)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl NetnsSys for FakeBridgeSys {
    fn new_namespace(&self) -> io::Result<OwnedFd> {
        self.netns.new_namespace()
    }

    fn path_of(&self, fd: &OwnedFd) -> PathBuf {
        self.netns.path_of(fd)
    }

    fn new_owned_namespace(
        &self,
        map: &coppice_core::volume::IdMap,
    ) -> io::Result<super::OwnedNamespace> {
        self.netns.new_owned_namespace(map)
    }
}

impl BridgeSys for FakeBridgeSys {
    fn lock_bridge(&self, bridge: &str) -> io::Result<OwnedFd> {
        if !lock(&self.locked).insert(bridge.to_owned()) {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        Ok(OwnedFd::from(File::open("/dev/null")?))
    }

    fn link_exists(&self, name: &str) -> bool {
        lock(&self.links).contains(name)
    }

    fn links(&self) -> io::Result<Vec<String>> {
        Ok(lock(&self.links).iter().cloned().collect())
    }

    fn links_in_group(&self, group: u32) -> io::Result<Vec<String>> {
        let links = lock(&self.links);
        Ok(lock(&self.groups)
            .iter()
            .filter(|(name, member_of)| **member_of == group && links.contains(*name))
            .map(|(name, _)| name.clone())
            .collect())
    }

    fn ip_batch(&self, netns: Option<&Path>, script: &str) -> io::Result<()> {
        if netns.is_none() {
            let mut links = lock(&self.links);
            for line in script.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["link", "add", name, ..] if !links.insert((*name).to_owned()) => {
                        return Err(io::Error::other(format!("{name}: File exists")));
                    }
                    ["link", "del", name] if !links.remove(*name) => {
                        return Err(io::Error::other(format!("{name}: Cannot find device")));
                    }
                    ["link", "set", name, "group", group] => {
                        if !links.contains(*name) {
                            return Err(io::Error::other(format!("{name}: Cannot find device")));
                        }
                        let group = group.parse().map_err(io::Error::other)?;
                        lock(&self.groups).insert((*name).to_owned(), group);
                    }
                    ["link", "del", "group", group] => {
                        let group: u32 = group.parse().map_err(io::Error::other)?;
                        lock(&self.groups).retain(|name, member_of| {
                            let member = *member_of == group;
                            if member {
                                links.remove(name);
                            }
                            !member
                        });
                    }
                    _ => {}
                }
            }
        }
        lock(&self.ran).push(Ran::Ip {
            netns: netns.map(Path::to_path_buf),
            script: script.to_owned(),
        });
        Ok(())
    }

    fn nft_listing(&self, _table: &str) -> io::Result<String> {
        let listing = lock(&self.listing).clone();
        Ok(if listing.is_empty() {
            r#"{"nftables": []}"#.to_owned()
        } else {
            listing
        })
    }

    fn nft(&self, script: &str) -> io::Result<()> {
        if self.fail_nft.load(Ordering::SeqCst) {
            return Err(io::Error::other("nft: injected failure"));
        }
        lock(&self.ran).push(Ran::Nft(script.to_owned()));
        Ok(())
    }

    fn forget_flows(&self, address: std::net::IpAddr) -> io::Result<()> {
        lock(&self.ran).push(Ran::ForgetFlows(address));
        Ok(())
    }

    fn enable_forwarding(&self) -> io::Result<()> {
        self.forwarding.store(true, Ordering::SeqCst);
        Ok(())
    }
}
