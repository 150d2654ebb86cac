//! `PfNetwork`: FreeBSD's `NetPolicy`. Each sandbox gets an epair whose host end is a private
//! member of the bridge and whose jail end the runtime moves into the sandbox's VNET jail
//! ([`NetAttachment::Vnet`]); its egress policy is a pf anchor ([`crate::pf`]). Epairs can be
//! prepared ahead of time ([`PfNetwork::prefill`]), so a create only loads the anchor.
//!
//! Each attachment is recorded under the config's state directory, so a restarted daemon
//! adopts the sandboxes whose epair survived (reloading their anchors), forgets the others,
//! and destroys epairs nothing owns.
//!
//! Not built yet on this side: the sandbox resolver (so domain entries are refused and no
//! resolver is handed to the sandbox) and a background refill of prepared epairs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use coppice_core::SandboxId;
use coppice_core::net::{NetAttachment, NetError, NetPolicy};
use coppice_core::spec::NetworkSpec;

use crate::bridge::backend;
use crate::bridge::state::StateDir;
use crate::egress::EgressPolicy;
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

#[derive(Debug, Default)]
struct State {
    used: BTreeSet<u32>,
    /// Indexes whose epair is prepared and not yet handed out, oldest first.
    ready: VecDeque<u32>,
    attached: BTreeMap<SandboxId, u32>,
}

/// Sandboxes on a FreeBSD bridge, filtered by pf.
#[derive(Debug)]
pub struct PfNetwork {
    config: BridgeConfig,
    sys: Arc<dyn PfSys>,
    state: Mutex<State>,
    records: StateDir,
}

impl PfNetwork {
    /// Checks `pf.conf`, turns forwarding and the filtering of bridge members on, and makes
    /// the bridge with its addresses unless it exists.
    ///
    /// # Errors
    /// A bad config, a `pf.conf` without the lines coppice needs, or a failed host command.
    pub fn start(config: BridgeConfig, sys: Arc<dyn PfSys>) -> Result<Self, PfStartError> {
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
        let network = Self {
            config,
            sys,
            state: Mutex::new(State::default()),
            records,
        };
        network.adopt()?;
        Ok(network)
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
            let policy = policy_of(&recorded.spec);
            match (alive, policy) {
                (true, Ok(policy)) if !owned.contains(&index) => {
                    if let Err(error) = self.load(index, &policy) {
                        tracing::warn!(sandbox_id = %recorded.id, error = %error, "reloading a sandbox's pf anchor after a restart");
                    }
                    owned.insert(index);
                    let mut state = self.state();
                    state.used.insert(index);
                    state.attached.insert(recorded.id, index);
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
    pub fn prefill(&self, count: usize) -> Result<(), NetError> {
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

    fn attachment(&self, index: u32) -> NetAttachment {
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
            dns: Vec::new(),
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

/// The policy of `spec`, refusing what pf cannot enforce yet.
fn policy_of(spec: &NetworkSpec) -> Result<EgressPolicy, NetError> {
    let policy = EgressPolicy::from_spec(spec)?;
    if !policy.allow_domains.is_empty() || !policy.deny_domains.is_empty() {
        return Err(NetError::Invalid {
            reason: "domain entries in allowOut and denyOut need the sandbox resolver, which \
                     coppice does not run on FreeBSD yet; use addresses and CIDRs"
                .into(),
        });
    }
    Ok(policy)
}

impl NetPolicy for PfNetwork {
    fn attach(&self, id: &SandboxId, spec: &NetworkSpec) -> Result<NetAttachment, NetError> {
        let policy = policy_of(spec)?;
        if self.state().attached.contains_key(id) {
            return Err(NetError::Invalid {
                reason: format!("sandbox {id} is already attached"),
            });
        }
        let pooled = self.state().ready.pop_front();
        let index = match pooled {
            Some(index) => index,
            None => {
                let index = self.allocate()?;
                if let Err(error) = self.prepare(index) {
                    self.state().used.remove(&index);
                    return Err(error);
                }
                index
            }
        };
        let recorded = self.load(index, &policy).and_then(|()| {
            self.records
                .write(id, index, spec, 0)
                .map_err(|error| backend("record the attachment", error))
        });
        if let Err(error) = recorded {
            let _ = self.release(index);
            return Err(error);
        }
        self.state().attached.insert(id.clone(), index);
        Ok(self.attachment(index))
    }

    fn update(&self, id: &SandboxId, spec: &NetworkSpec) -> Result<(), NetError> {
        let policy = policy_of(spec)?;
        let index = *self
            .state()
            .attached
            .get(id)
            .ok_or_else(|| NetError::NotFound { id: id.clone() })?;
        // Recorded first: a restart reloads the anchor from the record.
        self.records
            .write(id, index, spec, 0)
            .map_err(|error| backend("record the attachment", error))?;
        self.load(index, &policy)?;
        // States are judged when made: end the open ones so the new rules apply to them.
        for args in pf::kill_states(&self.config, index) {
            self.pfctl("kill states", &args, None)?;
        }
        Ok(())
    }

    fn detach(&self, id: &SandboxId) -> Result<(), NetError> {
        let Some(index) = self.state().attached.remove(id) else {
            return Ok(());
        };
        let released = self.release(index);
        // A link left behind is destroyed at the next start as one nobody owns.
        let forgotten = self
            .records
            .remove(id)
            .map_err(|error| backend("forget the attachment", error));
        released.and(forgotten)
    }

    fn list(&self) -> Result<Vec<SandboxId>, NetError> {
        Ok(self.state().attached.keys().cloned().collect())
    }
}

#[cfg(test)]
mod tests;
