//! The running warm pool: a thread keeps `target` VMs booted from one template and held
//! stopped (SIGSTOP), following [`crate::pool::WarmPool`]'s bookkeeping. A create whose disk
//! is a fresh clone of that template, with the pool's size, takes one: the fresh clone is
//! destroyed and the pooled VM's disk is marked as the sandbox's (`coppice:sandbox=<id>`,
//! which storage follows; never renamed, as renaming a zvol revokes the device its VM has
//! open), the VM's files move into the sandbox's run dir, the seed is rewritten with the
//! sandbox, and start only wakes the VM, whose agent picks the seed up. A VM that was taken
//! is never pooled again.
//!
//! VMs an earlier run of the daemon left in the pool are destroyed at start: their
//! bookkeeping went with that run.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use coppice_core::SandboxId;
use coppice_init::records::{read_json, write_json};
use serde::{Deserialize, Serialize};

use super::{
    LOG_FILE, SEED_FILE, VARS_FILE, VmRuntimeConfig, VmRuntimeError, host_step, make_dir, stop_vm,
    vm_spec,
};
use crate::argv::{self, Boot, Guest};
use crate::netgraph;
use crate::pool::{Booted, WarmPool};
use crate::seed::{self, GuestSeed, SEED_VERSION};
use crate::sys::{BhyveSys, VmSignal};

/// The pooled VM's own record, for clearing it after a restart.
pub(crate) const POOL_RECORD: &str = "pool.json";
/// Pause after a failed boot before the next.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the pool keeps ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPoolConfig {
    /// The template snapshot pooled VMs boot from (`<pool>/…/templates/<t>@template`).
    pub origin: String,
    /// The dataset under which pooled disks are cloned: inside storage's root dataset,
    /// whose listing is where storage finds a disk a sandbox took.
    pub dataset: String,
    /// How many VMs to keep booting or ready.
    pub target: usize,
    /// Their vCPUs; only creates asking for as many take one.
    pub vcpus: u32,
    /// Their memory in MiB; likewise.
    pub memory_mb: u32,
    /// How long a pooled VM boots before it is held.
    pub settle: Duration,
}

/// A pooled VM handed to a create.
#[derive(Debug)]
pub(crate) struct PooledVm {
    pub(crate) vm: String,
    pub(crate) home: PathBuf,
    pub(crate) pid: i32,
    /// Its disk's device (the pooled dataset, now the sandbox's).
    pub(crate) disk: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PoolRecord {
    pub(crate) vm: String,
    pub(crate) pid: Option<i32>,
    /// Its disk's dataset.
    pub(crate) disk: String,
}

#[derive(Debug)]
struct State {
    pool: WarmPool,
    ready: HashMap<String, PooledVm>,
    stopping: bool,
}

struct Shared {
    sys: Arc<dyn BhyveSys>,
    config: VmPoolConfig,
    guest: Guest,
    firmware: PathBuf,
    vars_template: PathBuf,
    home_base: PathBuf,
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn disk_dataset(&self, vm: &str) -> String {
        format!("{}/{vm}", self.config.dataset)
    }
}

/// The pool and its refill thread; dropping it stops the thread.
pub(crate) struct PoolHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PoolHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolHandle")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

fn io_error(error: &getrandom::Error) -> std::io::Error {
    std::io::Error::other(error.to_string())
}

/// `zfs clone` of a pooled or sandbox disk: parents made, and never tasted by the host.
fn clone_args<'a>(origin: &'a str, dataset: &'a str) -> Vec<&'a str> {
    vec!["clone", "-p", "-o", "volmode=dev", origin, dataset]
}

/// Destroys pooled disk `dataset` unless a sandbox took it (`coppice:sandbox` set): that one
/// is the sandbox's data, which only storage removes.
pub(crate) fn destroy_unclaimed_disk(sys: &dyn BhyveSys, dataset: &str) {
    let claimed = sys.run(
        &zfs(&["get", "-H", "-o", "value", "coppice:sandbox", dataset]),
        None,
    );
    match claimed {
        Ok(owner) if owner.trim() == "-" => {
            let _ = sys.run(&zfs(&["destroy", dataset]), None);
        }
        Ok(owner) => {
            tracing::info!(
                dataset,
                sandbox = owner.trim(),
                "a pooled disk a sandbox took stays"
            );
        }
        // Gone already.
        Err(_) => {}
    }
}

fn zfs(args: &[&str]) -> Vec<String> {
    std::iter::once("zfs")
        .chain(args.iter().copied())
        .map(str::to_owned)
        .collect()
}

/// A locally administered MAC for pooled VM `vm` (the guest takes the sandbox's own from the
/// seed once it has one).
fn pooled_mac(vm: &str) -> String {
    let hash = vm.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    let [_, a, b, c] = hash.to_be_bytes();
    format!("02:c0:00:{a:02x}:{b:02x}:{c:02x}")
}

impl PoolHandle {
    /// Clears what an earlier run left and starts refilling.
    ///
    /// # Errors
    /// The pool's directory cannot be made.
    pub(crate) fn start(
        sys: Arc<dyn BhyveSys>,
        runtime: &VmRuntimeConfig,
        config: VmPoolConfig,
    ) -> Result<Self, VmRuntimeError> {
        // Not a sandbox id, so the runtime's list never takes it for a sandbox.
        let home_base = runtime.run_dir.join(".pool");
        make_dir(&home_base).map_err(host_step("make the pool's dir"))?;
        let shared = Arc::new(Shared {
            sys,
            config,
            guest: runtime.guest,
            firmware: runtime.firmware.clone(),
            vars_template: runtime.vars_template.clone(),
            home_base,
            state: Mutex::new(State {
                pool: WarmPool::new("coppice-pool-", 0),
                ready: HashMap::new(),
                stopping: false,
            }),
            changed: Condvar::new(),
        });
        shared.clear_leftovers();
        // A prefix of this run's own: names never meet those of VMs an earlier run handed
        // to sandboxes, which live on.
        let mut run = [0u8; 6];
        getrandom::fill(&mut run)
            .map_err(|error| host_step("draw the pool's prefix")(io_error(&error)))?;
        let run: String = run.iter().map(|byte| format!("{byte:02x}")).collect();
        let prefix = format!("coppice-pool-{run}-");
        shared.state().pool = WarmPool::new(prefix, shared.config.target);
        let refill = Arc::clone(&shared);
        thread::Builder::new()
            .name("vm-pool".into())
            .spawn(move || refill.refill_loop())
            .map_err(host_step("start the pool's thread"))?;
        Ok(Self { shared })
    }

    /// A ready VM for sandbox `id`, created with `vcpus` and `memory_mb` on the fresh clone
    /// `disk`, whose files move to `sandbox_dir`; `None` when the pool has none that fits
    /// (the create boots its own on `disk`).
    ///
    /// # Errors
    /// The hand-over failed and the sandbox's own disk could not be put back.
    pub(crate) fn checkout(
        &self,
        id: &SandboxId,
        (vcpus, memory_mb): (u32, u32),
        disk: &Path,
        sandbox_dir: &Path,
    ) -> Result<Option<PooledVm>, VmRuntimeError> {
        let shared = &self.shared;
        if (vcpus, memory_mb) != (shared.config.vcpus, shared.config.memory_mb) {
            return Ok(None);
        }
        let Some(dataset) = disk
            .strip_prefix("/dev/zvol")
            .ok()
            .and_then(Path::to_str)
            .map(str::to_owned)
        else {
            return Ok(None);
        };
        let origin = shared
            .sys
            .run(
                &zfs(&["get", "-H", "-o", "value", "origin", &dataset]),
                None,
            )
            .map_err(host_step("read the disk's origin"))?;
        if origin.trim() != shared.config.origin {
            return Ok(None);
        }
        let taken = {
            let mut state = shared.state();
            let name = state.pool.checkout();
            name.and_then(|name| state.ready.remove(&name))
        };
        shared.changed.notify_all();
        let Some(mut vm) = taken else {
            return Ok(None);
        };
        // The VM's files (its pool record among them) move into the sandbox's run dir first:
        // from then on a crash leaves it where the sandbox's removal finds it, and out of
        // the pool's dir, which a restart clears. bhyve holds its files by descriptor.
        let home = sandbox_dir.join("vm");
        if let Err(error) = fs::rename(&vm.home, &home) {
            tracing::warn!(error = %error, "cannot move a pooled VM's files; booting afresh");
            shared.discard(&vm);
            return Ok(None);
        }
        vm.home = home;
        if let Err(error) = shared.sys.run(&zfs(&["destroy", &dataset]), None) {
            tracing::warn!(error = %error, "cannot drop the fresh disk for a pooled one; booting afresh");
            shared.discard(&vm);
            return Ok(None);
        }
        let pooled_disk = shared.disk_dataset(&vm.vm);
        let owner = format!("coppice:sandbox={id}");
        if let Err(error) = shared.sys.run(&zfs(&["set", &owner, &pooled_disk]), None) {
            tracing::warn!(error = %error, "cannot hand a pooled disk over; booting afresh");
            shared.discard(&vm);
            shared
                .sys
                .run(&zfs(&clone_args(&shared.config.origin, &dataset)), None)
                .map_err(host_step("put the sandbox's disk back"))?;
            return Ok(None);
        }
        vm.disk = Path::new("/dev/zvol").join(&pooled_disk);
        Ok(Some(vm))
    }

    /// Forgets pooled VM `vm` once its sandbox is gone.
    pub(crate) fn forget(&self, vm: &str) {
        let mut state = self.shared.state();
        let _ = state.pool.release(vm);
        let _ = state.pool.destroyed(vm);
    }
}

impl Drop for PoolHandle {
    fn drop(&mut self) {
        self.shared.state().stopping = true;
        self.shared.changed.notify_all();
    }
}

impl Shared {
    fn refill_loop(&self) {
        loop {
            let names = {
                let mut state = self.state();
                if state.stopping {
                    return;
                }
                state.pool.to_boot()
            };
            let mut failed = false;
            for name in names {
                match self.boot(&name) {
                    Ok(vm) => {
                        let mut state = self.state();
                        if let Ok(Booted::Ready) = state.pool.booted(&name)
                            && !state.stopping
                        {
                            state.ready.insert(name, vm);
                        } else {
                            drop(state);
                            self.discard(&vm);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(vm = %name, error = %error, "cannot boot a VM for the pool");
                        let _ = self.state().pool.boot_failed(&name);
                        failed = true;
                    }
                }
            }
            let state = self.state();
            if state.stopping {
                return;
            }
            let wait = if failed {
                RETRY_AFTER
            } else {
                Duration::from_secs(60)
            };
            let _ = self.changed.wait_timeout(state, wait);
        }
    }

    /// Boots pooled VM `vm` on a clone of its own, lets it settle, and holds it.
    fn boot(&self, vm: &str) -> Result<PooledVm, VmRuntimeError> {
        let home = self.home_base.join(vm);
        let booted = self.boot_steps(vm, &home);
        if booted.is_err() {
            let pid = read_json::<PoolRecord>(&home.join(POOL_RECORD))
                .ok()
                .flatten()
                .and_then(|record| record.pid);
            // Only what this boot made goes: a VM of that name without a pid of ours is
            // not ours to stop.
            if pid.is_some() {
                let _ = stop_vm(self.sys.as_ref(), vm, pid);
            } else {
                let _ = self.sys.run(
                    &["ngctl", "-f", "-"].map(str::to_owned),
                    Some(&netgraph::shutdown(vm)),
                );
            }
            destroy_unclaimed_disk(self.sys.as_ref(), &self.disk_dataset(vm));
            let _ = fs::remove_dir_all(&home);
        }
        booted
    }

    fn boot_steps(&self, vm: &str, home: &Path) -> Result<PooledVm, VmRuntimeError> {
        make_dir(home).map_err(host_step("make a pooled VM's dir"))?;
        write_json(
            &home.join(POOL_RECORD),
            &PoolRecord {
                vm: vm.to_owned(),
                pid: None,
                disk: self.disk_dataset(vm),
            },
        )?;
        let dataset = self.disk_dataset(vm);
        self.sys
            .run(&zfs(&clone_args(&self.config.origin, &dataset)), None)
            .map_err(host_step("clone a pooled disk"))?;
        self.sys
            .run(
                &["ngctl", "-f", "-"].map(str::to_owned),
                Some(&netgraph::create(vm)),
            )
            .map_err(host_step("make a pooled VM's netgraph node"))?;
        let boot = match self.guest {
            Guest::FreeBsd => Boot::BhyveLoad,
            Guest::Linux | Guest::Windows => {
                fs::copy(&self.vars_template, home.join(VARS_FILE))
                    .map_err(host_step("copy the firmware variables"))?;
                Boot::Uefi {
                    firmware: self.firmware.clone(),
                    vars: home.join(VARS_FILE),
                }
            }
        };
        let unassigned = GuestSeed {
            version: SEED_VERSION,
            sandbox_id: String::new(),
            hostname: vm.to_owned(),
            token: String::new(),
            env: Vec::new(),
            network: None,
            agent_port: 0,
            envd_port: 0,
        };
        seed::write(&home.join(SEED_FILE), &unassigned)
            .map_err(host_step("write a pooled seed disk"))?;
        let shape = vm_spec(
            vm,
            self.guest,
            (self.config.vcpus, self.config.memory_mb),
            &Path::new("/dev/zvol").join(&dataset),
            home,
            &pooled_mac(vm),
            boot,
        );
        if let Some(load) = argv::bhyveload(&shape)? {
            self.sys
                .run(&load, None)
                .map_err(host_step("load a pooled guest's kernel"))?;
        }
        let pid = self
            .sys
            .spawn(&argv::bhyve(&shape)?, &home.join(LOG_FILE))
            .map_err(host_step("start a pooled VM"))?;
        write_json(
            &home.join(POOL_RECORD),
            &PoolRecord {
                vm: vm.to_owned(),
                pid: Some(pid),
                disk: dataset.clone(),
            },
        )?;
        thread::sleep(self.config.settle);
        self.sys
            .signal(pid, VmSignal::Stop)
            .map_err(host_step("hold a pooled VM"))?;
        Ok(PooledVm {
            vm: vm.to_owned(),
            home: home.to_owned(),
            pid,
            disk: Path::new("/dev/zvol").join(&dataset),
        })
    }

    /// Destroys a pooled VM that will not be used: its process, kernel state, node, disk and
    /// files.
    fn discard(&self, vm: &PooledVm) {
        if let Err(error) = stop_vm(self.sys.as_ref(), &vm.vm, Some(vm.pid)) {
            tracing::warn!(vm = %vm.vm, error = %error, "cannot stop a pooled VM");
        }
        destroy_unclaimed_disk(self.sys.as_ref(), &self.disk_dataset(&vm.vm));
        let _ = fs::remove_dir_all(&vm.home);
        let mut state = self.state();
        let _ = state.pool.release(&vm.vm);
        let _ = state.pool.destroyed(&vm.vm);
    }

    /// Destroys the pooled VMs an earlier run left.
    fn clear_leftovers(&self) {
        let Ok(entries) = fs::read_dir(&self.home_base) else {
            return;
        };
        for entry in entries.flatten() {
            let home = entry.path();
            // Without its record a dir belongs to a VM a sandbox took: not the pool's.
            let Ok(Some(record)) = read_json::<PoolRecord>(&home.join(POOL_RECORD)) else {
                continue;
            };
            let _ = stop_vm(self.sys.as_ref(), &record.vm, record.pid);
            destroy_unclaimed_disk(self.sys.as_ref(), &record.disk);
            let _ = fs::remove_dir_all(&home);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_pooled_macs_are_local_and_differ() {
        let a = pooled_mac("coppice-pool-1");
        assert!(a.starts_with("02:"), "{a}");
        assert_ne!(a, pooled_mac("coppice-pool-2"));
        assert_eq!(a.len(), 17);
    }
}
