//! The warm pool: VMs booted ahead of demand and held stopped until a create checks one out,
//! so a create pays a resume instead of a boot. The pool is a state machine over VM names;
//! the runtime performs what it asks for (boot, destroy) and reports back. A VM that was
//! checked out is never returned to the pool: it ran a tenant's code.
//!
//! ```text
//! Booting --booted--> Ready --checkout--> CheckedOut --release--> Destroying --destroyed--> (gone)
//!    \--boot_failed---------------------------------------------^
//!                      Ready --shrink-------------------------------^
//! ```

use std::collections::{BTreeMap, VecDeque};

/// Where a pooled VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// Being booted for the pool.
    Booting,
    /// Booted, stopped, waiting for a create.
    Ready,
    /// Handed to a sandbox.
    CheckedOut,
    /// Being destroyed.
    Destroying,
}

/// A report the pool cannot accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The pool does not know the VM.
    #[error("the warm pool has no VM {0}")]
    Unknown(String),
    /// The VM is not in a state the event applies to.
    #[error("VM {vm} is {from:?}; {event} does not apply")]
    InvalidTransition {
        /// The VM.
        vm: String,
        /// Its state.
        from: VmState,
        /// What was reported.
        event: &'static str,
    },
}

/// What becomes of a VM that finished booting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Booted {
    /// It waits for a create.
    Ready,
    /// The target shrank while it booted: it is to be destroyed.
    Surplus,
}

/// How many VMs are in each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolCounts {
    /// Booting.
    pub booting: usize,
    /// Ready.
    pub ready: usize,
    /// Checked out.
    pub checked_out: usize,
    /// Being destroyed.
    pub destroying: usize,
}

/// The pool's bookkeeping.
#[derive(Debug, Clone, Default)]
pub struct WarmPool {
    target: usize,
    prefix: String,
    next: u64,
    states: BTreeMap<String, VmState>,
    /// Ready VMs, oldest first: the oldest is checked out first.
    ready: VecDeque<String>,
}

impl WarmPool {
    /// A pool that keeps `target` VMs booting or ready, named `<prefix><n>`.
    pub fn new(prefix: impl Into<String>, target: usize) -> Self {
        Self {
            target,
            prefix: prefix.into(),
            ..Self::default()
        }
    }

    /// The state of `vm`, if the pool knows it.
    pub fn state(&self, vm: &str) -> Option<VmState> {
        self.states.get(vm).copied()
    }

    /// How many VMs are in each state.
    pub fn counts(&self) -> PoolCounts {
        let mut counts = PoolCounts::default();
        for state in self.states.values() {
            match state {
                VmState::Booting => counts.booting += 1,
                VmState::Ready => counts.ready += 1,
                VmState::CheckedOut => counts.checked_out += 1,
                VmState::Destroying => counts.destroying += 1,
            }
        }
        counts
    }

    /// Names of new VMs to boot so that booting and ready ones reach the target; they are
    /// `Booting` from now on.
    pub fn to_boot(&mut self) -> Vec<String> {
        let counts = self.counts();
        let missing = self.target.saturating_sub(counts.booting + counts.ready);
        (0..missing)
            .map(|_| {
                self.next += 1;
                let name = format!("{}{}", self.prefix, self.next);
                self.states.insert(name.clone(), VmState::Booting);
                name
            })
            .collect()
    }

    /// Changes the target; ready VMs beyond it are returned, now `Destroying`.
    pub fn set_target(&mut self, target: usize) -> Vec<String> {
        self.target = target;
        let mut surplus = Vec::new();
        while self.counts().booting + self.ready.len() > self.target {
            let Some(vm) = self.ready.pop_back() else {
                break;
            };
            self.states.insert(vm.clone(), VmState::Destroying);
            surplus.push(vm);
        }
        surplus
    }

    fn transition(
        &mut self,
        vm: &str,
        event: &'static str,
        from: VmState,
        to: VmState,
    ) -> Result<(), PoolError> {
        let state = self
            .states
            .get_mut(vm)
            .ok_or_else(|| PoolError::Unknown(vm.to_owned()))?;
        if *state != from {
            return Err(PoolError::InvalidTransition {
                vm: vm.to_owned(),
                from: *state,
                event,
            });
        }
        *state = to;
        Ok(())
    }

    /// `vm` finished booting: held stopped for a create, or surplus when the target shrank
    /// meanwhile.
    ///
    /// # Errors
    /// An unknown VM, or one that was not booting.
    pub fn booted(&mut self, vm: &str) -> Result<Booted, PoolError> {
        let other_booting = self.counts().booting.saturating_sub(1);
        if self.ready.len() + other_booting >= self.target {
            self.transition(vm, "booted", VmState::Booting, VmState::Destroying)?;
            return Ok(Booted::Surplus);
        }
        self.transition(vm, "booted", VmState::Booting, VmState::Ready)?;
        self.ready.push_back(vm.to_owned());
        Ok(Booted::Ready)
    }

    /// `vm` failed to boot; it is to be destroyed.
    ///
    /// # Errors
    /// An unknown VM, or one that was not booting.
    pub fn boot_failed(&mut self, vm: &str) -> Result<(), PoolError> {
        self.transition(vm, "boot_failed", VmState::Booting, VmState::Destroying)
    }

    /// The oldest ready VM, now checked out; `None` when none is ready (the create boots
    /// one itself).
    pub fn checkout(&mut self) -> Option<String> {
        let vm = self.ready.pop_front()?;
        self.states.insert(vm.clone(), VmState::CheckedOut);
        Some(vm)
    }

    /// The sandbox on `vm` is gone; the VM is to be destroyed, never reused.
    ///
    /// # Errors
    /// An unknown VM, or one that was not checked out.
    pub fn release(&mut self, vm: &str) -> Result<(), PoolError> {
        self.transition(vm, "release", VmState::CheckedOut, VmState::Destroying)
    }

    /// `vm` is destroyed; the pool forgets it.
    ///
    /// # Errors
    /// An unknown VM, or one that was not being destroyed.
    pub fn destroyed(&mut self, vm: &str) -> Result<(), PoolError> {
        match self.state(vm) {
            Some(VmState::Destroying) => {
                self.states.remove(vm);
                Ok(())
            }
            Some(from) => Err(PoolError::InvalidTransition {
                vm: vm.to_owned(),
                from,
                event: "destroyed",
            }),
            None => Err(PoolError::Unknown(vm.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(booting: usize, ready: usize, checked_out: usize, destroying: usize) -> PoolCounts {
        PoolCounts {
            booting,
            ready,
            checked_out,
            destroying,
        }
    }

    #[test]
    fn test_a_vm_goes_through_the_pool_once() {
        let mut pool = WarmPool::new("warm-", 2);
        assert_eq!(pool.to_boot(), ["warm-1", "warm-2"]);
        assert_eq!(pool.to_boot(), Vec::<String>::new(), "booting ones count");
        pool.booted("warm-2").unwrap();
        pool.booted("warm-1").unwrap();
        assert_eq!(pool.counts(), counts(0, 2, 0, 0));

        // Oldest ready first; the pool refills behind it.
        assert_eq!(pool.checkout().as_deref(), Some("warm-2"));
        assert_eq!(pool.to_boot(), ["warm-3"]);
        assert_eq!(pool.counts(), counts(1, 1, 1, 0));

        pool.release("warm-2").unwrap();
        assert_eq!(pool.state("warm-2"), Some(VmState::Destroying));
        pool.destroyed("warm-2").unwrap();
        assert_eq!(pool.state("warm-2"), None);
        assert_eq!(pool.counts(), counts(1, 1, 0, 0));
    }

    #[test]
    fn test_failed_boots_and_an_empty_pool() {
        let mut pool = WarmPool::new("warm-", 1);
        let [vm] = pool.to_boot().try_into().unwrap();
        assert_eq!(pool.checkout(), None, "nothing is ready yet");
        pool.boot_failed(&vm).unwrap();
        assert_eq!(pool.to_boot(), ["warm-2"], "a failed boot is replaced");
        pool.destroyed(&vm).unwrap();
        assert_eq!(pool.counts(), counts(1, 0, 0, 0));
    }

    #[test]
    fn test_shrinking_destroys_ready_surplus_newest_first() {
        let mut pool = WarmPool::new("warm-", 3);
        for vm in pool.to_boot() {
            pool.booted(&vm).unwrap();
        }
        assert_eq!(pool.set_target(1), ["warm-3", "warm-2"]);
        assert_eq!(pool.counts(), counts(0, 1, 0, 2));
        assert_eq!(pool.checkout().as_deref(), Some("warm-1"));
        assert_eq!(pool.set_target(1), Vec::<String>::new());
    }

    #[test]
    fn test_vms_booting_past_a_shrunk_target_are_surplus() {
        let mut pool = WarmPool::new("warm-", 3);
        let booting = pool.to_boot();
        assert_eq!(
            pool.set_target(1),
            Vec::<String>::new(),
            "booting ones cannot go yet"
        );
        assert_eq!(pool.booted(&booting[0]), Ok(Booted::Surplus));
        assert_eq!(pool.booted(&booting[1]), Ok(Booted::Surplus));
        assert_eq!(pool.booted(&booting[2]), Ok(Booted::Ready));
        assert_eq!(pool.counts(), counts(0, 1, 0, 2));
    }

    #[test]
    fn test_reports_that_do_not_fit_are_refused() {
        let mut pool = WarmPool::new("warm-", 1);
        let [vm] = pool.to_boot().try_into().unwrap();
        let invalid = |from, event| PoolError::InvalidTransition {
            vm: vm.clone(),
            from,
            event,
        };
        assert_eq!(pool.release(&vm), Err(invalid(VmState::Booting, "release")));
        assert_eq!(
            pool.destroyed(&vm),
            Err(invalid(VmState::Booting, "destroyed"))
        );
        pool.booted(&vm).unwrap();
        assert_eq!(pool.booted(&vm), Err(invalid(VmState::Ready, "booted")));
        assert_eq!(
            pool.boot_failed(&vm),
            Err(invalid(VmState::Ready, "boot_failed"))
        );
        assert_eq!(pool.release(&vm), Err(invalid(VmState::Ready, "release")));
        assert_eq!(
            pool.booted("nobody"),
            Err(PoolError::Unknown("nobody".into()))
        );
        assert_eq!(pool.counts(), counts(0, 1, 0, 0), "refusals change nothing");
    }
}
