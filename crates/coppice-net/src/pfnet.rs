//! `PfNetwork`: FreeBSD's `NetPolicy`. Each sandbox gets an epair whose host end is a private
//! member of the bridge and whose jail end the runtime moves into the sandbox's VNET jail
//! ([`NetAttachment::Vnet`]); its egress policy is a pf anchor ([`crate::pf`]). Epairs can be
//! prepared ahead of time ([`PfNetwork::prefill`]), so a create only loads the anchor.
//!
//! A background thread keeps `pool_size` epairs prepared, refilling after each attach.
//!
//! Each attachment is recorded under the config's state directory, so a restarted daemon
//! adopts the sandboxes whose epair survived (reloading their anchors), forgets the others,
//! and destroys epairs nothing owns (prepared ones left at a stop included).
//!
//! Domain entries work as on Linux: the sandboxes' resolver (`bridge::resolver`) listens on
//! the bridge, answers a name the sandbox may not resolve with NXDOMAIN, and adds the
//! addresses answered for an allowed name to the anchor's pin table before passing the
//! answer on. pf tables have no per-entry lifetime, so a pin lasts until the sandbox's policy
//! changes (reloading the anchor empties the table) or the sandbox goes, where Linux drops it
//! with the answer's TTL.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use coppice_core::SandboxId;
use coppice_core::net::{NetAttachment, NetError, NetPolicy};
use coppice_core::spec::NetworkSpec;

use crate::bridge::backend;
use crate::bridge::resolver::{self, Directory, Resolver};
use crate::bridge::state::StateDir;
use crate::egress::{EgressPolicy, NameVerdict};
use crate::sys::PfSys;
use crate::{BridgeConfig, ConfigError, epair, pf};

/// Why the pf network cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PfStartError {
    /// The bridge settings are unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `pf.conf` lacks a line sandbox isolation depends on.
    #[error(transparent)]
    PfConf(#[from] pf::MissingPfConfLine),
    /// `pf.conf` cannot be read.
    #[error("cannot read pf.conf")]
    ReadPfConf(#[source] std::io::Error),
    /// A host command failed.
    #[error("setting up the bridge failed")]
    Host(#[source] std::io::Error),
    /// The records of attachments cannot be read or their directory made.
    #[error("cannot open the network records")]
    Records(#[source] std::io::Error),
}

/// One attached sandbox.
#[derive(Debug)]
struct Attached {
    index: u32,
    policy: EgressPolicy,
    /// Bumped at every load of its anchor: a pin asked under an older policy opens nothing.
    generation: u64,
}

#[derive(Debug, Default)]
struct State {
    used: BTreeSet<u32>,
    /// Indexes whose epair is prepared and not yet handed out, oldest first.
    ready: VecDeque<u32>,
    attached: BTreeMap<SandboxId, Attached>,
    next_generation: u64,
}

impl State {
    fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }
}

/// Sandboxes on a FreeBSD bridge, filtered by pf.
#[derive(Debug)]
pub struct PfNetwork {
    inner: Arc<Inner>,
    /// Wakes the refill thread; dropping it stops the thread.
    refill: Mutex<Option<mpsc::Sender<()>>>,
    resolver: Option<Resolver>,
}

#[derive(Debug)]
struct Inner {
    config: BridgeConfig,
    sys: Arc<dyn PfSys>,
    state: Mutex<State>,
    records: StateDir,
}

impl PfNetwork {
    /// Checks `pf.conf`, turns forwarding and the filtering of bridge members on, makes the
    /// bridge with its addresses unless it exists, adopts recorded sandboxes, and starts the
    /// resolver and the epair refill.
    ///
    /// # Errors
    /// A bad config, a `pf.conf` without the lines coppice needs, or a failed host command.
    pub fn start(config: BridgeConfig, sys: Arc<dyn PfSys>) -> Result<Self, PfStartError> {
        Self::start_with(config, sys, true)
    }

    /// As [`PfNetwork::start`], with the resolver only when `resolver` is set (tests run
    /// without one: its addresses are not this host's).
    ///
    /// # Errors
    /// As [`PfNetwork::start`].
    pub(crate) fn start_with(
        config: BridgeConfig,
        sys: Arc<dyn PfSys>,
        with_resolver: bool,
    ) -> Result<Self, PfStartError> {
        let inner = Arc::new(Inner::start(config, sys)?);
        let resolver = with_resolver.then(|| {
            Resolver::start(
                &resolver::listen_addresses(&inner.config),
                resolver::upstream(inner.config.dns_upstream),
                &(Arc::clone(&inner) as Arc<dyn Directory>),
            )
        });
        let refill = (inner.config.pool_size > 0).then(|| {
            let (wake, woken) = mpsc::channel::<()>();
            let refiller = Arc::clone(&inner);
            let started = std::thread::Builder::new()
                .name("epair-refill".into())
                .spawn(move || {
                    while woken.recv().is_ok() {
                        if let Err(error) = refiller.prefill(refiller.config.pool_size) {
                            tracing::warn!(error = %error, "cannot prepare epairs ahead of time");
                        }
                    }
                });
            match started {
                Ok(_) => {
                    let _ = wake.send(());
                    Some(wake)
                }
                Err(error) => {
                    tracing::warn!(error = %error, "epair refill not started; epairs are made on demand");
                    None
                }
            }
        });
        Ok(Self {
            inner,
            refill: Mutex::new(refill.flatten()),
            resolver,
        })
    }

    /// Prepares epairs until `count` are ready, off the create path.
    ///
    /// # Errors
    /// Out of addresses, or a host command failed (what was prepared stays ready).
    pub fn prefill(&self, count: usize) -> Result<(), NetError> {
        self.inner.prefill(count)
    }

    /// The resolvers a sandbox is told about: the bridge's IPv4 address where the resolver
    /// listens.
    fn dns(&self) -> Vec<IpAddr> {
        let [v4, _] = resolver::listen_addresses(&self.inner.config);
        match &self.resolver {
            Some(resolver) if resolver.listens_on(v4) => vec![v4.ip()],
            _ => Vec::new(),
        }
    }

    fn wake_refill(&self) {
        if let Some(wake) = self
            .refill
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            let _ = wake.send(());
        }
    }
}

impl Inner {
    fn start(config: BridgeConfig, sys: Arc<dyn PfSys>) -> Result<Self, PfStartError> {
        config.validate()?;
        pf::check_pf_conf(
            &sys.pf_conf().map_err(PfStartError::ReadPfConf)?,
            &config.bridge,
        )?;
        let run = |program: &str, args: &[&str]| {
            let args: Vec<String> = args.iter().map(|&arg| arg.to_owned()).collect();
            sys.run(program, &args, None).map_err(PfStartError::Host)
        };
        run(
            "sysctl",
            &[
                "net.inet.ip.forwarding=1",
                "net.inet6.ip6.forwarding=1",
                "net.link.bridge.pfil_local_phys=1",
            ],
        )?;
        let bridge = config.bridge.as_str();
        if run("ifconfig", &[bridge]).is_err() {
            let created = run("ifconfig", &["bridge", "create"])?;
            run("ifconfig", &[created.trim(), "name", bridge])?;
        }
        let v4 = format!("{}/{}", config.bridge_v4(), config.ipv4.prefix_len());
        let v6 = config.bridge_v6().to_string();
        let v6_len = config.ipv6.prefix_len().to_string();
        // A restarted daemon finds its addresses in place: ifconfig says "File exists".
        let add_address = |args: &[&str]| match run("ifconfig", args) {
            Err(PfStartError::Host(error)) if error.to_string().contains("File exists") => Ok(()),
            other => other.map(drop),
        };
        add_address(&[bridge, "inet", &v4, "alias"])?;
        add_address(&[
            bridge,
            "inet6",
            &v6,
            "prefixlen",
            &v6_len,
            "no_dad",
            "alias",
        ])?;
        run("ifconfig", &[bridge, "up"])?;
        let records = StateDir::open(&config.state_dir).map_err(PfStartError::Records)?;
        let inner = Self {
            config,
            sys,
            state: Mutex::new(State::default()),
            records,
        };
        inner.adopt()?;
        Ok(inner)
    }

    /// After a restart: takes back the recorded sandboxes whose epair is still there (their
    /// anchors reloaded from the records), forgets the others, and destroys this bridge's
    /// epairs that no record owns (prepared ones included).
    fn adopt(&self) -> Result<(), PfStartError> {
        let links = self
            .sys
            .run("ifconfig", &["-l".to_owned()], None)
            .map_err(PfStartError::Host)?;
        let links: BTreeSet<&str> = links.split_whitespace().collect();
        let mut owned = BTreeSet::new();
        for recorded in self.records.load().map_err(PfStartError::Records)? {
            let index = recorded.index;
            let alive = links.contains(self.config.host_link(index).as_str());
            let policy = EgressPolicy::from_spec(&recorded.spec);
            match (alive, policy) {
                (true, Ok(policy)) if !owned.contains(&index) => {
                    if let Err(error) = self.load(index, &policy) {
                        tracing::warn!(sandbox_id = %recorded.id, error = %error, "reloading a sandbox's pf anchor after a restart");
                    }
                    owned.insert(index);
                    let mut state = self.state();
                    state.used.insert(index);
                    let generation = state.generation();
                    state.attached.insert(
                        recorded.id,
                        Attached {
                            index,
                            policy,
                            generation,
                        },
                    );
                }
                _ => {
                    let _ = self.pfctl("flush pf anchor", &pf::flush_anchor(index), None);
                    let _ = self.records.remove(&recorded.id);
                }
            }
        }
        for link in links {
            if let Some(index) = self.config.index_of_link(link)
                && !owned.contains(&index)
            {
                let _ = self.pfctl("flush pf anchor", &pf::flush_anchor(index), None);
                let _ = self.run("destroy epair", &epair::destroy(&self.config, index), None);
            }
        }
        Ok(())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(
        &self,
        op: &'static str,
        command: &[String],
        stdin: Option<&str>,
    ) -> Result<String, NetError> {
        let (program, args) = command.split_first().ok_or(NetError::Invalid {
            reason: "empty command".into(),
        })?;
        self.sys
            .run(program, args, stdin)
            .map_err(|error| backend(op, error))
    }

    fn pfctl(
        &self,
        op: &'static str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<(), NetError> {
        self.sys
            .run("pfctl", args, stdin)
            .map(drop)
            .map_err(|error| backend(op, error))
    }

    fn allocate(&self) -> Result<u32, NetError> {
        let mut state = self.state();
        let index = (1..=self.config.capacity())
            .find(|index| !state.used.contains(index))
            .ok_or(NetError::Exhausted {
                what: "sandbox addresses",
            })?;
        state.used.insert(index);
        Ok(index)
    }

    /// Makes the epair of `index`, named, bridged and up; undone if a step fails.
    fn prepare(&self, index: u32) -> Result<(), NetError> {
        let created = self.run("create epair", &epair::create(), None)?;
        let steps =
            epair::prepare(&self.config, index, &created).map_err(|error| NetError::Backend {
                op: "create epair",
                source: Box::new(error),
            });
        let result = steps.and_then(|steps| {
            steps
                .iter()
                .try_for_each(|step| self.run("prepare epair", step, None).map(drop))
        });
        if result.is_err() {
            // The pair has its host name once the first step ran, its created name before.
            let _ = self.run("destroy epair", &epair::destroy(&self.config, index), None);
            let _ = self.sys.run(
                "ifconfig",
                &[created.trim().to_owned(), "destroy".to_owned()],
                None,
            );
        }
        result
    }

    /// Prepares epairs until `count` are ready, off the create path.
    ///
    /// # Errors
    /// Out of addresses, or a host command failed (what was prepared stays ready).
    fn prefill(&self, count: usize) -> Result<(), NetError> {
        while self.state().ready.len() < count {
            let index = self.allocate()?;
            if let Err(error) = self.prepare(index) {
                self.state().used.remove(&index);
                return Err(error);
            }
            self.state().ready.push_back(index);
        }
        Ok(())
    }

    fn attachment(&self, index: u32, dns: Vec<IpAddr>) -> NetAttachment {
        let (v4, v6) = self.config.sandbox_addresses(index);
        NetAttachment::Vnet {
            interface: epair::jail_end(index),
            mac: self.config.sandbox_mac(index),
            addresses: vec![
                (IpAddr::V4(v4), self.config.ipv4.prefix_len()),
                (IpAddr::V6(v6), self.config.ipv6.prefix_len()),
            ],
            gateways: vec![
                IpAddr::V4(self.config.bridge_v4()),
                IpAddr::V6(self.config.bridge_v6()),
            ],
            dns,
        }
    }

    fn load(&self, index: u32, policy: &EgressPolicy) -> Result<(), NetError> {
        let rules = pf::anchor_rules(&self.config, index, policy);
        self.pfctl("load pf anchor", &pf::load_anchor(index), Some(&rules))
    }

    /// Removes everything of `index` and frees it. An index whose anchor or epair could not
    /// be removed stays taken, so no later sandbox inherits its rules or interface.
    fn release(&self, index: u32) -> Result<(), NetError> {
        let flushed = self.pfctl("flush pf anchor", &pf::flush_anchor(index), None);
        for args in pf::kill_states(&self.config, index) {
            let _ = self.pfctl("kill states", &args, None);
        }
        let destroyed = self
            .run("destroy epair", &epair::destroy(&self.config, index), None)
            .map(drop);
        flushed.and(destroyed)?;
        self.state().used.remove(&index);
        Ok(())
    }
}

impl Directory for Inner {
    /// The ticket is the generation of the sandbox's anchor: a pin is added only while it is
    /// still current, so an answer that arrives after a change (or after the index went to
    /// another sandbox) opens nothing.
    fn verdict(&self, client: IpAddr, name: &str) -> (NameVerdict, u64) {
        let Some(index) = self.config.index_of_address(client) else {
            return (NameVerdict::Refuse, 0);
        };
        self.state()
            .attached
            .values()
            .find(|attached| attached.index == index)
            .map_or((NameVerdict::Refuse, 0), |attached| {
                (attached.policy.verdict(name), attached.generation)
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
        // Held through the pfctl run, so no change of the sandbox's anchor slips between the
        // check and the pin.
        let state = self.state();
        let current = state.attached.values().any(|a| {
            a.index == index && a.generation == ticket && a.policy.verdict(name) == NameVerdict::Pin
        });
        if !current || addresses.is_empty() {
            return Ok(());
        }
        let addresses: Vec<IpAddr> = addresses.iter().map(|(address, _)| *address).collect();
        self.sys
            .run("pfctl", &pf::pin(index, &addresses), None)
            .map(drop)
    }
}

impl NetPolicy for PfNetwork {
    fn attach(&self, id: &SandboxId, spec: &NetworkSpec) -> Result<NetAttachment, NetError> {
        let inner = &self.inner;
        let policy = EgressPolicy::from_spec(spec)?;
        if inner.state().attached.contains_key(id) {
            return Err(NetError::Invalid {
                reason: format!("sandbox {id} is already attached"),
            });
        }
        let pooled = inner.state().ready.pop_front();
        let index = match pooled {
            Some(index) => {
                self.wake_refill();
                index
            }
            None => {
                let index = inner.allocate()?;
                if let Err(error) = inner.prepare(index) {
                    inner.state().used.remove(&index);
                    return Err(error);
                }
                index
            }
        };
        let recorded = inner.load(index, &policy).and_then(|()| {
            inner
                .records
                .write(id, index, spec, 0)
                .map_err(|error| backend("record the attachment", error))
        });
        if let Err(error) = recorded {
            let _ = inner.release(index);
            return Err(error);
        }
        let mut state = inner.state();
        let generation = state.generation();
        state.attached.insert(
            id.clone(),
            Attached {
                index,
                policy,
                generation,
            },
        );
        drop(state);
        Ok(inner.attachment(index, self.dns()))
    }

    fn update(&self, id: &SandboxId, spec: &NetworkSpec) -> Result<(), NetError> {
        let inner = &self.inner;
        let policy = EgressPolicy::from_spec(spec)?;
        let index = inner
            .state()
            .attached
            .get(id)
            .map(|attached| attached.index)
            .ok_or_else(|| NetError::NotFound { id: id.clone() })?;
        // Recorded first: a restart reloads the anchor from the record.
        inner
            .records
            .write(id, index, spec, 0)
            .map_err(|error| backend("record the attachment", error))?;
        {
            // Under the lock the resolver pins under: no pin of the old policy lands in the
            // new anchor, and none of the new one is emptied by the load.
            let mut state = inner.state();
            let generation = state.generation();
            if let Some(attached) = state.attached.get_mut(id) {
                attached.generation = generation;
                attached.policy = policy.clone();
            }
            inner.load(index, &policy)?;
        }
        // States are judged when made: end the open ones so the new rules apply to them.
        for args in pf::kill_states(&inner.config, index) {
            inner.pfctl("kill states", &args, None)?;
        }
        Ok(())
    }

    fn detach(&self, id: &SandboxId) -> Result<(), NetError> {
        let inner = &self.inner;
        let Some(attached) = inner.state().attached.remove(id) else {
            return Ok(());
        };
        let released = inner.release(attached.index);
        // A link left behind is destroyed at the next start as one nobody owns.
        let forgotten = inner
            .records
            .remove(id)
            .map_err(|error| backend("forget the attachment", error));
        released.and(forgotten)
    }

    fn list(&self) -> Result<Vec<SandboxId>, NetError> {
        Ok(self.inner.state().attached.keys().cloned().collect())
    }
}

#[cfg(test)]
mod tests;
