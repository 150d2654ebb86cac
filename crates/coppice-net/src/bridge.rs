//! [`BridgeNetwork`]: every sandbox gets a network namespace with a veth into a host bridge,
//! an IPv4 and an IPv6 address, a default route and a resolver; nftables enforces its
//! egress policy and masquerades it to the outside.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use coppice_core::SandboxId;
use coppice_core::net::{NetAttachment, NetError, NetPolicy};
use coppice_core::spec::NetworkSpec;

use crate::egress::{EgressPolicy, NameVerdict};
use crate::pool::Pool;
use crate::sys::BridgeSys;

mod config;
mod release;
pub(crate) mod resolver;
mod rules;
mod script;
pub(crate) mod state;
#[cfg(test)]
mod tests;

pub use config::{BridgeConfig, ConfigError};
use rules::ChainChange;
use state::StateDir;

/// One sandbox's place on the bridge: its index (which fixes its addresses and host link)
/// and, until the sandbox holds it itself, its namespace.
#[derive(Debug)]
struct Endpoint {
    index: u32,
    /// `None` for an endpoint adopted after a restart, or made again by a restore: the
    /// sandbox's processes hold it.
    netns: Option<OwnedFd>,
    /// The user namespace `netns` belongs to, when not the host's.
    user: Option<OwnedFd>,
}

#[derive(Debug)]
struct Attached {
    endpoint: Endpoint,
    policy: EgressPolicy,
    /// What `policy` was parsed from, as recorded.
    spec: NetworkSpec,
    /// The tag of its current rules.
    generation: u32,
    /// Its current pin sets, and the conntrack mark of flows opened through them.
    pins: u32,
    /// Whether it has a chain of its own (kept until release once made).
    has_chain: bool,
}

/// What the background thread does, off the request path.
#[derive(Debug)]
enum Work {
    /// Remove an endpoint, its rules and flows, then free its index.
    Release(Endpoint),
    /// Delete the rules and pin sets the current generation at this index shadowed.
    Collect(u32),
}

#[derive(Debug)]
struct Inner {
    config: BridgeConfig,
    sys: Arc<dyn BridgeSys>,
    used: Mutex<BTreeSet<u32>>,
    attached: Mutex<BTreeMap<SandboxId, Attached>>,
    state: StateDir,
    next_generation: AtomicU32,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn backend(
    op: &'static str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> NetError {
    NetError::Backend {
        op,
        source: Box::new(error),
    }
}

/// A starting point for generations that differs from run to run, so that flows marked by an
/// earlier run's pins are not taken for a new policy's.
fn first_generation() -> u32 {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |elapsed| elapsed.as_secs());
    u32::try_from(seconds % u64::from(u32::MAX)).unwrap_or(1) | 1
}

/// The counter's next value, skipping 0 (which marks no flow).
fn next_nonzero(counter: &AtomicU32) -> u32 {
    loop {
        let value = counter.fetch_add(1, Ordering::Relaxed);
        if value != 0 {
            return value;
        }
    }
}

impl Inner {
    fn fresh_generation(&self) -> u32 {
        next_nonzero(&self.next_generation)
    }

    fn allocate(&self) -> Result<u32, NetError> {
        let mut used = lock(&self.used);
        let index = (1..=self.config.capacity())
            .find(|index| !used.contains(index))
            .ok_or(NetError::Exhausted {
                what: "sandbox addresses",
            })?;
        used.insert(index);
        Ok(index)
    }

    fn free(&self, index: u32) {
        lock(&self.used).remove(&index);
    }

    /// A namespace with a configured veth into the bridge.
    fn make_endpoint(&self) -> Result<Endpoint, NetError> {
        let index = self.allocate()?;
        let made = self.configure(index);
        // A half-made pair that cannot be removed keeps its index taken.
        if made.is_err() && self.remove_link(index) {
            self.free(index);
        }
        made
    }

    fn configure(&self, index: u32) -> Result<Endpoint, NetError> {
        let (netns, user) = match &self.config.sandbox_ids {
            Some(map) => self
                .sys
                .new_owned_namespace(map)
                .map(|owned| (owned.net, Some(owned.user))),
            None => self.sys.new_namespace().map(|net| (net, None)),
        }
        .map_err(|error| backend("create network namespace", error))?;
        let path = self.sys.path_of(&netns);
        self.sys
            .ip_batch(None, &script::endpoint_host(&self.config, index, &path))
            .map_err(|error| backend("create veth", error))?;
        self.sys
            .nft(&script::endpoint_guard(&self.config, index))
            .map_err(|error| backend("guard sandbox port", error))?;
        self.sys
            .ip_batch(Some(&path), &script::endpoint_inside(&self.config, index))
            .map_err(|error| backend("configure sandbox interface", error))?;
        Ok(Endpoint {
            index,
            netns: Some(netns),
            user,
        })
    }

    /// Deletes the host link of `index` if it is there; false if it stays.
    fn remove_link(&self, index: u32) -> bool {
        let link = self.config.host_link(index);
        if !self.sys.link_exists(&link) {
            return true;
        }
        match self
            .sys
            .ip_batch(None, &script::endpoint_removal(&self.config, index))
        {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%link, error = %error, "cannot delete a sandbox veth");
                !self.sys.link_exists(&link)
            }
        }
    }

    /// What the table holds for the sandbox at `index`.
    fn listed(&self, index: u32) -> std::io::Result<rules::Listed> {
        let json = self.sys.nft_listing(&self.config.table())?;
        rules::listed(&json, index).map_err(std::io::Error::other)
    }

    /// Removes the rules of `index`; false if some may stay.
    fn remove_rules(&self, index: u32) -> bool {
        let removed = self.listed(index).and_then(|listed| {
            let script = rules::removal(&self.config, index, &listed);
            if script.is_empty() {
                Ok(())
            } else {
                self.sys.nft(&script)
            }
        });
        if let Err(error) = &removed {
            tracing::warn!(index, error = %error, "cannot remove a sandbox's rules");
        }
        removed.is_ok()
    }

    /// Deletes what the current generation at `index` shadows. Takes no lock against
    /// updates: the listing is read before the current generation, so a generation added in
    /// between is not in the listing, and everything in it is shadowed by that newer one.
    fn collect(&self, index: u32) {
        let listing = self.listed(index);
        let current = lock(&self.attached)
            .values()
            .find(|a| a.endpoint.index == index)
            .map(|a| (a.generation, a.pins));
        // A released sandbox's rules went with it.
        let Some((generation, pins)) = current else {
            return;
        };
        let collected = listing.and_then(|listed| {
            let script = rules::garbage(&self.config, index, &listed, generation, pins);
            if script.is_empty() {
                Ok(())
            } else {
                self.sys.nft(&script)
            }
        });
        if let Err(error) = collected {
            tracing::warn!(index, error = %error, "cannot delete a sandbox's shadowed rules");
        }
    }

    fn attachment(&self, endpoint: &Endpoint) -> NetAttachment {
        let (v4, v6) = self.config.sandbox_addresses(endpoint.index);
        NetAttachment::Namespace {
            user: endpoint.user.as_ref().map(|fd| self.sys.path_of(fd)),
            path: endpoint
                .netns
                .as_ref()
                .map(|fd| self.sys.path_of(fd))
                .unwrap_or_default(),
            addresses: vec![IpAddr::V4(v4), IpAddr::V6(v6)],
            dns: vec![IpAddr::V4(self.config.bridge_v4())],
            restore_device: Some(self.config.restore_link(endpoint.index)),
        }
    }

    /// The index of an attached sandbox.
    fn index_of(&self, id: &SandboxId) -> Result<u32, NetError> {
        lock(&self.attached)
            .get(id)
            .map(|attached| attached.endpoint.index)
            .ok_or_else(|| NetError::NotFound { id: id.clone() })
    }
}

impl resolver::Directory for Inner {
    /// The ticket is the generation of the sandbox's rules: a pin is added only while it is
    /// still current, so an answer that arrives after a change (or after the index went to
    /// another sandbox) opens nothing.
    fn verdict(&self, client: IpAddr, name: &str) -> (NameVerdict, u64) {
        let Some(index) = self.config.index_of_address(client) else {
            return (NameVerdict::Refuse, 0);
        };
        lock(&self.attached)
            .values()
            .find(|attached| attached.endpoint.index == index)
            .map_or((NameVerdict::Refuse, 0), |attached| {
                (
                    attached.policy.verdict(name),
                    u64::from(attached.generation),
                )
            })
    }

    fn pin(
        &self,
        client: IpAddr,
        name: &str,
        ticket: u64,
        addresses: &[(IpAddr, u32)],
    ) -> std::io::Result<()> {
        let Some(index) = self.config.index_of_address(client) else {
            return Ok(());
        };
        // Held through the transaction, so no change of the sandbox's policy slips between
        // the check and the pin.
        let attached = lock(&self.attached);
        let current = attached.values().find(|a| {
            a.endpoint.index == index
                && u64::from(a.generation) == ticket
                && a.policy.verdict(name) == NameVerdict::Pin
        });
        let Some(current) = current else {
            return Ok(());
        };
        let script = rules::pin(&self.config, index, current.pins, addresses);
        if script.is_empty() {
            return Ok(());
        }
        self.sys.nft(&script)
    }
}

/// How long after a sandbox's last policy change its shadowed rules are deleted. Deleting
/// holds the kernel's nftables commit lock through RCU grace periods (about 12 ms here), which
/// a policy change arriving meanwhile would wait for; waiting for a quiet spell keeps runs of
/// changes (flipping air-gap on and off) at the cost of additions alone.
const COLLECT_AFTER: Duration = Duration::from_secs(2);

/// Releases at once; collections once their sandbox has been quiet for `COLLECT_AFTER`.
fn work_loop(inner: &Inner, queue: &mpsc::Receiver<Work>) {
    let mut due: BTreeMap<u32, Instant> = BTreeMap::new();
    loop {
        let wait = due.values().min().map_or(Duration::from_secs(3600), |at| {
            at.saturating_duration_since(Instant::now())
        });
        match queue.recv_timeout(wait) {
            Ok(Work::Release(endpoint)) => {
                // Sandboxes killed together are released together.
                let mut batch = vec![endpoint];
                while batch.len() < release::MAX_BATCH {
                    match queue.try_recv() {
                        Ok(Work::Release(endpoint)) => batch.push(endpoint),
                        Ok(Work::Collect(index)) => {
                            due.insert(index, Instant::now() + COLLECT_AFTER);
                        }
                        Err(_) => break,
                    }
                }
                for endpoint in &batch {
                    due.remove(&endpoint.index);
                }
                inner.release_all(batch);
            }
            Ok(Work::Collect(index)) => {
                due.insert(index, Instant::now() + COLLECT_AFTER);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                let ready: Vec<u32> = due
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(index, _)| *index)
                    .collect();
                for index in ready {
                    due.remove(&index);
                    inner.collect(index);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Sandboxes on a host bridge with per-sandbox nftables egress policy.
///
/// Endpoints (namespace + veth + addresses) come from a warm pool, so attaching a sandbox
/// with the default policy runs no command at all; other policies, and every change of one,
/// cost one `nft` transaction of additions. Deletions (shadowed rules, released endpoints)
/// happen on a background thread. Attachments are recorded on disk: after a restart the
/// table is rebuilt, in one transaction, with the policies of the sandboxes that survived.
#[derive(Debug)]
pub struct BridgeNetwork {
    inner: Arc<Inner>,
    pool: Option<Pool<Endpoint>>,
    work: Mutex<mpsc::Sender<Work>>,
    _resolver: resolver::Resolver,
    /// The bridge's host-wide lock.
    _lock: OwnedFd,
}

impl BridgeNetwork {
    /// Sets up the bridge, forwarding and the table, adopts the attachments recorded by an
    /// earlier run, and starts the pool and the resolver.
    ///
    /// # Errors
    /// `Invalid` for a bad configuration; `Backend` when the host refuses.
    pub fn start(config: BridgeConfig, sys: Arc<dyn BridgeSys>) -> Result<Self, NetError> {
        config.validate().map_err(|error| NetError::Invalid {
            reason: error.to_string(),
        })?;
        let bridge_lock = sys.lock_bridge(&config.bridge).map_err(|error| {
            if error.kind() == std::io::ErrorKind::WouldBlock {
                NetError::Invalid {
                    reason: format!(
                        "bridge {} is in use by another coppiced on this host; give each daemon its own bridge and prefixes",
                        config.bridge
                    ),
                }
            } else {
                backend("lock bridge", error)
            }
        })?;
        let state = StateDir::open(&config.state_dir)
            .map_err(|error| backend("open network state", error))?;
        // Releases need conntrack; better to refuse now, before the host is touched, than to
        // leak every address later.
        sys.forget_flows(IpAddr::V4(config.bridge_v4()))
            .map_err(|error| backend("check conntrack (install conntrack)", error))?;
        sys.enable_forwarding()
            .map_err(|error| backend("enable forwarding", error))?;
        let create = !sys.link_exists(&config.bridge);
        sys.ip_batch(None, &script::bridge_addresses(&config, create))
            .map_err(|error| backend("set up bridge", error))?;

        let next_generation = AtomicU32::new(first_generation());
        let fresh = || next_nonzero(&next_generation);
        let mut attached = BTreeMap::new();
        for recorded in state
            .load()
            .map_err(|error| backend("read network state", error))?
        {
            let usable = (1..=config.capacity()).contains(&recorded.index)
                && !attached
                    .values()
                    .any(|other: &Attached| other.endpoint.index == recorded.index);
            match EgressPolicy::from_spec(&recorded.spec) {
                Ok(policy) if usable => {
                    let generation = fresh();
                    attached.insert(
                        recorded.id,
                        Attached {
                            endpoint: Endpoint {
                                index: recorded.index,
                                netns: None,
                                user: None,
                            },
                            has_chain: !policy.is_default(),
                            policy,
                            spec: recorded.spec,
                            generation,
                            // Kept, so flows opened through the old pins stay open.
                            pins: if recorded.mark == 0 {
                                generation
                            } else {
                                recorded.mark
                            },
                        },
                    );
                }
                _ => {
                    tracing::warn!(sandbox_id = %recorded.id, "dropping an unusable network record");
                    let _ = state.remove(&recorded.id);
                }
            }
        }
        let used: BTreeSet<u32> = attached.values().map(|a| a.endpoint.index).collect();
        // Links of endpoints an earlier run had pooled or was releasing (their namespaces
        // may still be going away, which takes the pair with them only later).
        for link in sys.links().unwrap_or_default() {
            if let Some(index) = config.index_of_link(&link)
                && !used.contains(&index)
            {
                let _ = sys.ip_batch(None, &script::endpoint_removal(&config, index));
            }
        }
        let upstream = resolver::upstream(config.dns_upstream);
        let listen = resolver::listen_addresses(&config);
        let pool_size = config.pool_size;
        let inner = Arc::new(Inner {
            config,
            sys,
            used: Mutex::new(used),
            attached: Mutex::new(attached),
            state,
            next_generation,
        });
        let resolver = resolver::Resolver::start(
            &listen,
            upstream,
            &(Arc::clone(&inner) as Arc<dyn resolver::Directory>),
        );
        // The resolver's port is opened only where it listens: anything else answering on
        // the bridge's port 53 must not become a way around the name policy.
        let dns = (
            resolver.listens_on(listen[0]),
            resolver.listens_on(listen[1]),
        );
        {
            let attached = lock(&inner.attached);
            let policies: Vec<ChainChange<'_>> = attached
                .values()
                .map(|a| ChainChange {
                    index: a.endpoint.index,
                    had_chain: false,
                    policy: &a.policy,
                    generation: a.generation,
                    pins: a.pins,
                })
                .collect();
            inner
                .sys
                .nft(&script::table(&inner.config, &policies, dns))
                .map_err(|error| backend("install nftables rules", error))?;
        }
        let (work, queue) = mpsc::channel::<Work>();
        let worker = Arc::clone(&inner);
        thread::Builder::new()
            .name("net-work".into())
            .spawn(move || work_loop(&worker, &queue))
            .map_err(|error| backend("start release thread", error))?;
        let pool = (pool_size > 0).then(|| {
            let maker = Arc::clone(&inner);
            Pool::start("net-pool", pool_size, move || {
                maker.make_endpoint().map_err(std::io::Error::other)
            })
        });
        Ok(Self {
            inner,
            pool,
            work: Mutex::new(work),
            _resolver: resolver,
            _lock: bridge_lock,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &BridgeConfig {
        &self.inner.config
    }

    /// Where attachments are recorded.
    pub fn state_dir(&self) -> &Path {
        &self.inner.config.state_dir
    }

    fn queue(&self, work: Work) {
        if let Err(mpsc::SendError(work)) = lock(&self.work).send(work) {
            match work {
                Work::Release(endpoint) => self.inner.release_all(vec![endpoint]),
                Work::Collect(index) => self.inner.collect(index),
            }
        }
    }
}

impl NetPolicy for BridgeNetwork {
    fn attach(&self, id: &SandboxId, spec: &NetworkSpec) -> Result<NetAttachment, NetError> {
        let policy = EgressPolicy::from_spec(spec)?;
        let endpoint = match self.pool.as_ref().and_then(Pool::take) {
            Some(endpoint) => endpoint,
            None => self.inner.make_endpoint()?,
        };
        let index = endpoint.index;
        let generation = self.inner.fresh_generation();
        let rules = rules::policy_change(
            &self.inner.config,
            &ChainChange {
                index,
                had_chain: false,
                policy: &policy,
                generation,
                pins: generation,
            },
        );
        if !rules.is_empty()
            && let Err(error) = self.inner.sys.nft(&rules)
        {
            self.queue(Work::Release(endpoint));
            return Err(backend("apply egress policy", error));
        }
        if let Err(error) = self.inner.state.write(id, index, spec, generation) {
            self.queue(Work::Release(endpoint));
            return Err(backend("record network state", error));
        }
        let attachment = self.inner.attachment(&endpoint);
        let previous = lock(&self.inner.attached).insert(
            id.clone(),
            Attached {
                endpoint,
                has_chain: !rules.is_empty(),
                policy,
                spec: spec.clone(),
                generation,
                pins: generation,
            },
        );
        if let Some(previous) = previous {
            self.queue(Work::Release(previous.endpoint));
        }
        Ok(attachment)
    }

    fn update(&self, id: &SandboxId, spec: &NetworkSpec) -> Result<(), NetError> {
        let policy = EgressPolicy::from_spec(spec)?;
        // Held through the transaction, so two changes of one sandbox cannot interleave.
        let mut attached = lock(&self.inner.attached);
        let current = attached
            .get_mut(id)
            .ok_or_else(|| NetError::NotFound { id: id.clone() })?;
        let index = current.endpoint.index;
        let generation = self.inner.fresh_generation();
        // Pins and the flows they opened survive a change that keeps the allowed domains.
        let pins = if current.has_chain && current.policy.allow_domains == policy.allow_domains {
            current.pins
        } else {
            generation
        };
        let had_chain = current.has_chain;
        let rules = rules::policy_change(
            &self.inner.config,
            &ChainChange {
                index,
                had_chain,
                policy: &policy,
                generation,
                pins,
            },
        );
        // Recorded first: a restart must never bring back a policy the kernel left.
        self.inner
            .state
            .write(id, index, spec, pins)
            .map_err(|error| backend("record network state", error))?;
        if !rules.is_empty()
            && let Err(error) = self.inner.sys.nft(&rules)
        {
            if let Err(undo) = self
                .inner
                .state
                .write(id, index, &current.spec, current.pins)
            {
                tracing::warn!(sandbox_id = %id, error = %undo, "cannot restore a network record");
            }
            return Err(backend("apply egress policy", error));
        }
        current.has_chain |= !rules.is_empty();
        current.policy = policy;
        current.spec = spec.clone();
        current.generation = generation;
        current.pins = pins;
        drop(attached);
        if had_chain {
            self.queue(Work::Collect(index));
        }
        Ok(())
    }

    fn detach(&self, id: &SandboxId) -> Result<(), NetError> {
        if !lock(&self.inner.attached).contains_key(id) {
            return Ok(());
        }
        // Forgotten on disk first: a failure here leaves the attachment whole for a retry.
        self.inner
            .state
            .remove(id)
            .map_err(|error| backend("forget network state", error))?;
        let Some(attached) = lock(&self.inner.attached).remove(id) else {
            return Ok(());
        };
        self.queue(Work::Release(attached.endpoint));
        Ok(())
    }

    fn list(&self) -> Result<Vec<SandboxId>, NetError> {
        Ok(lock(&self.inner.attached).keys().cloned().collect())
    }

    /// Makes the pair a restore needs: the veth of the sandbox's old namespace goes (both
    /// ends together), and the namespace is let go; a new pair is made in its place, its host
    /// end already an isolated, guarded port, its inner end on the host until the restore
    /// moves it into the namespace it makes. The index, its rules and its record stay the
    /// sandbox's.
    fn prepare_restore(&self, id: &SandboxId) -> Result<(), NetError> {
        // The sandbox exists (it is being restored): a missing record is this backend's
        // failure, not an unknown sandbox, which callers would report as gone.
        let index = self.inner.index_of(id).map_err(|_| {
            backend(
                "prepare network for restore",
                std::io::Error::other(format!(
                    "sandbox {id} has no network record, so its address cannot be given back"
                )),
            )
        })?;
        let link = self.inner.config.host_link(index);
        if !self.inner.remove_link(index) {
            return Err(backend(
                "prepare network for restore",
                std::io::Error::other(format!("cannot delete {link}")),
            ));
        }
        if let Some(attached) = lock(&self.inner.attached).get_mut(id) {
            attached.endpoint.netns = None;
            attached.endpoint.user = None;
        }
        // Guarded before it is up: the guard elements name the link, and a port missing
        // from them drops everything.
        self.inner
            .sys
            .nft(&script::endpoint_guard(&self.inner.config, index))
            .map_err(|error| backend("guard sandbox port", error))?;
        if let Err(error) = self.inner.sys.ip_batch(
            None,
            &script::endpoint_for_restore(&self.inner.config, index),
        ) {
            self.inner.remove_link(index);
            return Err(backend("prepare network for restore", error));
        }
        Ok(())
    }
}
