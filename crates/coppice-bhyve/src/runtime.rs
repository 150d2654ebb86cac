//! [`VmRuntime`]: `coppice_core::Runtime` over bhyve VMs. A sandbox is a VM booted from its
//! own zvol clone (`RootFs::Disk`), with a seed disk that tells the guest agent
//! (`coppice-guest`) who it is, a network card on a netgraph bridge node of its own that the
//! sandbox's epair joins, and two relays that put the agent's and envd's TCP ports behind
//! Unix sockets in the run dir, so everything above the runtime reaches a VM as it reaches
//! a jail.
//!
//! Per sandbox, `<run_dir>/<id>/vm.json` records the VM (written before anything is made,
//! so a crash leaves a record that `destroy` finds). A VM booted ahead by the warm pool
//! ([`warm`]) keeps its files under `<run_dir>/.pool/<vm>/` until a create takes it; they
//! then move to `<run_dir>/<id>/vm/` with the pool's record of the VM, which `destroy`
//! follows when the create did not get as far as `vm.json`.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use coppice_core::SandboxId;
use coppice_core::exec::{ExecOutcome, ExecRequest};
use coppice_core::net::NetAttachment;
use coppice_core::runtime::{
    Probe, RootUse, Runtime, RuntimeError, RuntimeSandbox, RuntimeSpec, SandboxEndpoints,
};
use coppice_core::storage::RootFs;
use coppice_init::records::{RecordError, read_json, sandbox_dirs, write_json};
use serde::{Deserialize, Serialize};

use crate::argv::{self, Boot, Guest, Nic, NicBackend, VmSpec, VmSpecError};
use crate::netgraph;
use crate::relay::Relay;
use crate::seed::{self, GuestNetwork, GuestSeed, SEED_VERSION};
use crate::sys::{BhyveSys, VmSignal};

pub mod warm;

const RECORD: &str = "vm.json";
const CONTROL_SOCKET: &str = "control.sock";
const ENVD_SOCKET: &str = "envd.sock";
const SEED_FILE: &str = "seed.img";
const VARS_FILE: &str = "vars.fd";
const LOG_FILE: &str = "vm.log";
/// How often start asks the agent whether it serves.
const PING_EVERY: Duration = Duration::from_millis(100);

/// Settings of [`VmRuntime`].
#[derive(Debug, Clone)]
pub struct VmRuntimeConfig {
    /// Per-sandbox records, seed disks, logs and sockets live here.
    pub run_dir: PathBuf,
    /// What the VMs run.
    pub guest: Guest,
    /// The UEFI firmware, for guests that boot with it.
    pub firmware: PathBuf,
    /// The firmware's variable store, copied for each VM.
    pub vars_template: PathBuf,
    /// The guest agent's control port.
    pub agent_port: u16,
    /// envd's port in the guest.
    pub envd_port: u16,
    /// Longest wait for a started VM's agent.
    pub boot_timeout: Duration,
    /// Most bytes of stdout and of stderr kept from one control-path exec.
    pub exec_output_limit: usize,
    /// VMs booted ahead of demand, if any.
    pub pool: Option<warm::VmPoolConfig>,
}

impl VmRuntimeConfig {
    /// Defaults for Linux guests whose records live under `run_dir`.
    pub fn new(run_dir: PathBuf) -> Self {
        Self {
            run_dir,
            guest: Guest::Linux,
            firmware: "/usr/local/share/uefi-firmware/BHYVE_UEFI.fd".into(),
            vars_template: "/usr/local/share/uefi-firmware/BHYVE_UEFI_VARS.fd".into(),
            agent_port: 49982,
            envd_port: 49983,
            boot_timeout: Duration::from_secs(60),
            exec_output_limit: 4 << 20,
            pool: None,
        }
    }
}

/// The sandbox's link, as the network backend handed it over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LinkRecord {
    interface: String,
    network: GuestNetwork,
}

/// What `vm.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VmRecord {
    /// The VM's name in `/dev/vmm`.
    vm: String,
    /// Where its seed disk, firmware variables and log are.
    home: PathBuf,
    disk: PathBuf,
    vcpus: u32,
    memory_mb: u32,
    token: String,
    link: LinkRecord,
    /// The bhyve process, once it runs.
    pid: Option<i32>,
    /// Booted by the pool: it runs already, held stopped until start.
    pooled: bool,
}

/// Why a VM runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VmRuntimeError {
    /// A record could not be read or written.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The VM's shape is one bhyve cannot run.
    #[error(transparent)]
    Shape(#[from] VmSpecError),
    /// The seed does not fit its disk.
    #[error(transparent)]
    Seed(#[from] seed::SeedError),
    /// A step on the host failed.
    #[error("{step} failed")]
    Host {
        /// The step.
        step: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The control channel failed.
    #[error(transparent)]
    Control(#[from] coppice_init::client::ControlError),
}

pub(crate) fn host_step(step: &'static str) -> impl FnOnce(io::Error) -> VmRuntimeError {
    move |source| VmRuntimeError::Host { step, source }
}

/// The VM runtime.
pub struct VmRuntime {
    sys: Arc<dyn BhyveSys>,
    config: VmRuntimeConfig,
    relays: Mutex<HashMap<SandboxId, [Relay; 2]>>,
    pool: Option<warm::PoolHandle>,
}

impl std::fmt::Debug for VmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmRuntime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A token of 32 hex digits from the OS's entropy.
fn new_token() -> Result<String, VmRuntimeError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|error| VmRuntimeError::Host {
        step: "draw a token",
        source: io::Error::other(error.to_string()),
    })?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn make_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// A failure that only says the thing is gone already.
fn is_absent(error: &io::Error) -> bool {
    let text = error.to_string();
    text.contains("No such file")
}

impl VmRuntime {
    /// A runtime over `sys`: makes the run dir, puts the relays of live VMs back (after a
    /// daemon restart), destroys pooled VMs an earlier run left, and starts the pool.
    ///
    /// # Errors
    /// The run dir cannot be made or read.
    pub fn new(sys: Arc<dyn BhyveSys>, config: VmRuntimeConfig) -> Result<Self, VmRuntimeError> {
        make_dir(&config.run_dir).map_err(host_step("make the run dir"))?;
        let pool = config
            .pool
            .clone()
            .map(|pool_config| warm::PoolHandle::start(Arc::clone(&sys), &config, pool_config))
            .transpose()?;
        let runtime = Self {
            sys,
            config,
            relays: Mutex::new(HashMap::new()),
            pool,
        };
        for sandbox in runtime.list_impl()? {
            if sandbox.alive
                && let Some(record) = runtime.read_record(&sandbox.id)?
                && let Err(error) = runtime.start_relays(&sandbox.id, &record)
            {
                tracing::warn!(sandbox_id = %sandbox.id, error = %error, "cannot reach a VM after a restart");
            }
        }
        Ok(runtime)
    }

    fn relays(&self) -> MutexGuard<'_, HashMap<SandboxId, [Relay; 2]>> {
        self.relays.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sandbox_dir(&self, id: &SandboxId) -> PathBuf {
        self.config.run_dir.join(id.as_str())
    }

    fn endpoints(&self, id: &SandboxId) -> SandboxEndpoints {
        let dir = self.sandbox_dir(id);
        SandboxEndpoints {
            control_socket: dir.join(CONTROL_SOCKET),
            envd_socket: dir.join(ENVD_SOCKET),
        }
    }

    fn read_record(&self, id: &SandboxId) -> Result<Option<VmRecord>, VmRuntimeError> {
        Ok(read_json(&self.sandbox_dir(id).join(RECORD))?)
    }

    fn write_record(&self, id: &SandboxId, record: &VmRecord) -> Result<(), VmRuntimeError> {
        Ok(write_json(&self.sandbox_dir(id).join(RECORD), record)?)
    }

    /// Whether the record's VM runs.
    fn running(&self, record: &VmRecord) -> bool {
        record
            .pid
            .is_some_and(|pid| self.sys.runs_vm(pid, &record.vm))
            && self.sys.vm_exists(&record.vm)
    }

    fn create_impl(
        &self,
        id: &SandboxId,
        spec: &RuntimeSpec,
        disk: &Path,
        link: LinkRecord,
    ) -> Result<(), VmRuntimeError> {
        let token = new_token()?;
        // Only a root fresh from its template may be swapped for a pooled VM's: a resumed
        // sandbox boots on the data it kept.
        let pooled = match (&self.pool, spec.root_use) {
            (Some(pool), RootUse::Fresh) => pool.checkout(
                id,
                (spec.vcpus, spec.memory_mb),
                disk,
                &self.sandbox_dir(id),
            )?,
            _ => None,
        };
        let mut record = VmRecord {
            vm: format!("coppice-{}", id.as_str()),
            home: self.sandbox_dir(id),
            disk: disk.to_owned(),
            vcpus: spec.vcpus,
            memory_mb: spec.memory_mb,
            token,
            link,
            pid: None,
            pooled: false,
        };
        if let Some(pooled) = pooled {
            record.vm = pooled.vm;
            record.home = pooled.home;
            record.disk = pooled.disk;
            record.pid = Some(pooled.pid);
            record.pooled = true;
        }
        if let Err(error) = self.write_record(id, &record) {
            // Without a record nothing would find the taken VM again.
            if record.pooled {
                let _ = stop_vm(self.sys.as_ref(), &record.vm, record.pid);
            }
            return Err(error);
        }
        if !record.pooled {
            self.sys
                .run(&ngctl(), Some(&netgraph::create(&record.vm)))
                .map_err(host_step("make the VM's netgraph node"))?;
            if self.config.guest != Guest::FreeBsd {
                fs::copy(&self.config.vars_template, record.home.join(VARS_FILE))
                    .map_err(host_step("copy the firmware variables"))?;
            }
        }
        let guest_seed = GuestSeed {
            version: SEED_VERSION,
            sandbox_id: id.to_string(),
            hostname: spec.hostname.clone(),
            token: record.token.clone(),
            env: spec.env.clone(),
            network: Some(record.link.network.clone()),
            agent_port: self.config.agent_port,
            envd_port: self.config.envd_port,
        };
        seed::write(&record.home.join(SEED_FILE), &guest_seed)
            .map_err(host_step("write the seed disk"))?;
        self.sys
            .run(
                &["ifconfig", &record.link.interface, "up"].map(str::to_owned),
                None,
            )
            .map_err(host_step("bring the sandbox's link up"))?;
        self.sys
            .run(
                &ngctl(),
                Some(&netgraph::attach(&record.vm, &record.link.interface)),
            )
            .map_err(host_step("connect the sandbox's link"))?;
        Ok(())
    }

    /// The bhyve shape of `record`'s VM.
    fn vm_spec(&self, record: &VmRecord) -> VmSpec {
        let boot = match self.config.guest {
            Guest::FreeBsd => Boot::BhyveLoad,
            Guest::Linux | Guest::Windows => Boot::Uefi {
                firmware: self.config.firmware.clone(),
                vars: record.home.join(VARS_FILE),
            },
        };
        vm_spec(
            &record.vm,
            self.config.guest,
            (record.vcpus, record.memory_mb),
            &record.disk,
            &record.home,
            &record.link.network.mac,
            boot,
        )
    }

    fn guest_address(record: &VmRecord) -> Option<IpAddr> {
        let addresses = &record.link.network.addresses;
        addresses
            .iter()
            .find(|(address, _)| address.is_ipv4())
            .or_else(|| addresses.first())
            .map(|(address, _)| *address)
    }

    fn start_relays(&self, id: &SandboxId, record: &VmRecord) -> Result<(), VmRuntimeError> {
        // The old relays go first: dropping one removes its socket, which must not be the
        // one just bound in its place.
        self.relays().remove(id);
        let address = Self::guest_address(record).ok_or(VmRuntimeError::Host {
            step: "find the guest's address",
            source: io::ErrorKind::NotFound.into(),
        })?;
        let endpoints = self.endpoints(id);
        let control = Relay::start(
            &endpoints.control_socket,
            SocketAddr::new(address, self.config.agent_port),
            format!("{}\n", record.token).into_bytes(),
        )
        .map_err(host_step("relay the agent's port"))?;
        let envd = Relay::start(
            &endpoints.envd_socket,
            SocketAddr::new(address, self.config.envd_port),
            Vec::new(),
        )
        .map_err(host_step("relay envd's port"))?;
        self.relays().insert(id.clone(), [control, envd]);
        Ok(())
    }

    fn start_impl(&self, id: &SandboxId, mut record: VmRecord) -> Result<(), VmRuntimeError> {
        match record.pid {
            Some(pid) if record.pooled => self
                .sys
                .signal(pid, VmSignal::Continue)
                .map_err(host_step("wake the pooled VM"))?,
            _ => {
                let shape = self.vm_spec(&record);
                if let Some(load) = argv::bhyveload(&shape)? {
                    self.sys
                        .run(&load, None)
                        .map_err(host_step("load the guest kernel"))?;
                }
                let pid = self
                    .sys
                    .spawn(&argv::bhyve(&shape)?, &record.home.join(LOG_FILE))
                    .map_err(host_step("start bhyve"))?;
                record.pid = Some(pid);
                self.write_record(id, &record)?;
            }
        }
        self.start_relays(id, &record)?;
        let control = self.endpoints(id).control_socket;
        let deadline = Instant::now() + self.config.boot_timeout;
        loop {
            match coppice_init::client::ping(&control, PING_EVERY) {
                Ok(()) => return Ok(()),
                Err(_) if Instant::now() < deadline && self.running(&record) => {
                    std::thread::sleep(PING_EVERY);
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Stops and removes `record`'s VM and its netgraph node, trying every step.
    fn remove(&self, record: &VmRecord) -> Result<(), VmRuntimeError> {
        stop_vm(self.sys.as_ref(), &record.vm, record.pid)
    }

    fn destroy_impl(&self, id: &SandboxId) -> Result<(), VmRuntimeError> {
        self.relays().remove(id);
        let record = self.read_record(id)?;
        if record.is_none()
            && let Some(taken) = read_json::<warm::PoolRecord>(
                &self.sandbox_dir(id).join("vm").join(warm::POOL_RECORD),
            )?
        {
            // A create stopped half-way through taking a pooled VM.
            stop_vm(self.sys.as_ref(), &taken.vm, taken.pid)?;
            warm::destroy_unclaimed_disk(self.sys.as_ref(), &taken.disk);
        }
        if let Some(record) = record {
            self.remove(&record)?;
            if record.home != self.sandbox_dir(id) {
                let _ = fs::remove_dir_all(&record.home);
            }
            if record.pooled
                && let Some(pool) = &self.pool
            {
                pool.forget(&record.vm);
            }
        }
        match fs::remove_dir_all(self.sandbox_dir(id)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                Err(host_step("remove the run dir")(error))
            }
            _ => Ok(()),
        }
    }

    fn list_impl(&self) -> Result<Vec<RuntimeSandbox>, VmRuntimeError> {
        let mut found = Vec::new();
        for id in sandbox_dirs(&self.config.run_dir)? {
            let alive = self
                .read_record(&id)?
                .is_some_and(|record| self.running(&record));
            found.push(RuntimeSandbox { id, alive });
        }
        Ok(found)
    }

    fn live_record(&self, op: &'static str, id: &SandboxId) -> Result<VmRecord, RuntimeError> {
        let record = self
            .read_record(id)
            .map_err(|error| backend(op, id, error))?
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
        if self.running(&record) {
            Ok(record)
        } else {
            Err(RuntimeError::NotFound { id: id.clone() })
        }
    }

    fn signal(&self, id: &SandboxId, signal: VmSignal) -> Result<(), RuntimeError> {
        let record = self.live_record("signal", id)?;
        let pid = record
            .pid
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
        self.sys
            .signal(pid, signal)
            .map_err(|error| backend("signal", id, host_step("signal bhyve")(error)))
    }
}

fn ngctl() -> Vec<String> {
    ["ngctl", "-f", "-"].map(str::to_owned).to_vec()
}

/// The shape of a sandbox VM: its disk, its seed, its card on its own netgraph node.
pub(crate) fn vm_spec(
    vm: &str,
    guest: Guest,
    (vcpus, memory_mb): (u32, u32),
    disk: &Path,
    home: &Path,
    mac: &str,
    boot: Boot,
) -> VmSpec {
    VmSpec {
        name: vm.to_owned(),
        guest,
        vcpus,
        memory_mb,
        disk: disk.to_owned(),
        seed: Some(home.join(SEED_FILE)),
        nic: Some(Nic {
            backend: NicBackend::Netgraph {
                node: netgraph::node_name(vm),
                hook: netgraph::VM_HOOK.to_owned(),
            },
            mac: mac.to_owned(),
        }),
        // bhyve wants a terminal for a serial console; the agent and envd need none.
        console: None,
        boot,
        framebuffer: None,
        passthru: Vec::new(),
    }
}

/// Kills VM `vm`'s bhyve, frees its kernel state and removes its netgraph node; every step
/// is tried, and one that finds its thing gone already succeeds.
pub(crate) fn stop_vm(
    sys: &dyn BhyveSys,
    vm: &str,
    pid: Option<i32>,
) -> Result<(), VmRuntimeError> {
    let mut first = None;
    if let Some(pid) = pid
        && sys.runs_vm(pid, vm)
        && let Err(error) = sys.signal(pid, VmSignal::Kill)
    {
        first.get_or_insert(host_step("kill bhyve")(error));
    }
    if sys.vm_exists(vm)
        && let Err(error) = sys.run(&argv::destroy(vm), None)
    {
        first.get_or_insert(host_step("destroy the VM")(error));
    }
    match sys.run(&ngctl(), Some(&netgraph::shutdown(vm))) {
        Err(error) if !is_absent(&error) => {
            first.get_or_insert(host_step("remove the netgraph node")(error));
        }
        _ => {}
    }
    first.map_or(Ok(()), Err)
}

fn backend(op: &'static str, id: &SandboxId, error: VmRuntimeError) -> RuntimeError {
    match error {
        VmRuntimeError::Shape(error) => RuntimeError::Invalid {
            what: "VM shape",
            reason: error.to_string(),
        },
        error => RuntimeError::Backend {
            op,
            id: id.clone(),
            source: Box::new(error),
        },
    }
}

impl Runtime for VmRuntime {
    fn create(
        &self,
        id: &SandboxId,
        spec: &RuntimeSpec,
        root: &RootFs,
    ) -> Result<(), RuntimeError> {
        let RootFs::Disk { device } = root else {
            return Err(RuntimeError::Unsupported {
                what: "a directory root (VMs boot from a disk)",
            });
        };
        let NetAttachment::Vnet {
            interface,
            mac,
            addresses,
            gateways,
            dns,
        } = &spec.network
        else {
            return Err(RuntimeError::Unsupported {
                what: "a VM without a network link (its agent is reached over it)",
            });
        };
        if !spec.volumes.is_empty() {
            return Err(RuntimeError::Unsupported {
                what: "volumes in VMs",
            });
        }
        let link = LinkRecord {
            interface: interface.clone(),
            network: GuestNetwork {
                mac: mac.clone(),
                addresses: addresses.clone(),
                gateways: gateways.clone(),
                dns: dns.clone(),
            },
        };
        let dir = self.sandbox_dir(id);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                return Err(RuntimeError::AlreadyExists { id: id.clone() });
            }
            Err(error) => {
                return Err(backend("create", id, host_step("make the run dir")(error)));
            }
        }
        self.create_impl(id, spec, device, link).map_err(|error| {
            if let Err(cleanup) = self.destroy_impl(id) {
                tracing::warn!(sandbox_id = %id, error = %coppice_core::manager::error_chain(&cleanup), "cleanup after failed create");
            }
            backend("create", id, error)
        })
    }

    fn start(&self, id: &SandboxId) -> Result<SandboxEndpoints, RuntimeError> {
        let record = self
            .read_record(id)
            .map_err(|error| backend("start", id, error))?
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
        self.start_impl(id, record)
            .map_err(|error| backend("start", id, error))?;
        Ok(self.endpoints(id))
    }

    fn exec(&self, id: &SandboxId, request: &ExecRequest) -> Result<ExecOutcome, RuntimeError> {
        self.live_record("exec", id)?;
        coppice_init::client::exec_for(
            id,
            &self.endpoints(id).control_socket,
            request,
            self.config.exec_output_limit,
        )
    }

    fn probe(&self, id: &SandboxId) -> Result<Probe, RuntimeError> {
        let record = self
            .read_record(id)
            .map_err(|error| backend("probe", id, error))?
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
        let alive = self.running(&record);
        Ok(Probe {
            alive,
            oom_kills: 0,
            // A VM holds its memory whatever the guest does with it.
            memory_bytes: if alive {
                u64::from(record.memory_mb) << 20
            } else {
                0
            },
            pids: 0,
        })
    }

    fn freeze(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.signal(id, VmSignal::Stop)
    }

    fn thaw(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.signal(id, VmSignal::Continue)
    }

    fn destroy(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.destroy_impl(id)
            .map_err(|error| backend("destroy", id, error))
    }

    fn list(&self) -> Result<Vec<RuntimeSandbox>, RuntimeError> {
        self.list_impl().map_err(|error| RuntimeError::Host {
            op: "list",
            source: Box::new(error),
        })
    }
}

#[cfg(test)]
mod tests;
