//! [`LoopbackOnly`]: sandboxes get a fresh network namespace with only loopback.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use coppice_core::SandboxId;
use coppice_core::net::{NetAttachment, NetError, NetPolicy};
use coppice_core::spec::NetworkSpec;

/// A policy that isolates every sandbox completely: its network namespace has loopback only.
///
/// It holds no host resources (the runtime creates the namespace and the kernel frees it with
/// the sandbox), so it remembers specs only for [`NetPolicy::update`]; after a daemon restart
/// `list` is empty and nothing needs cleaning.
#[derive(Debug, Default)]
pub struct LoopbackOnly {
    specs: Mutex<BTreeMap<SandboxId, NetworkSpec>>,
}

impl LoopbackOnly {
    fn specs(&self) -> std::sync::MutexGuard<'_, BTreeMap<SandboxId, NetworkSpec>> {
        self.specs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl NetPolicy for LoopbackOnly {
    fn attach(&self, id: &SandboxId, spec: &NetworkSpec) -> Result<NetAttachment, NetError> {
        self.specs().insert(id.clone(), spec.clone());
        Ok(NetAttachment::LoopbackOnly)
    }

    fn update(&self, id: &SandboxId, spec: &NetworkSpec) -> Result<(), NetError> {
        let mut specs = self.specs();
        let current = specs
            .get_mut(id)
            .ok_or_else(|| NetError::NotFound { id: id.clone() })?;
        *current = spec.clone();
        Ok(())
    }

    fn detach(&self, id: &SandboxId) -> Result<(), NetError> {
        self.specs().remove(id);
        Ok(())
    }

    fn list(&self) -> Result<Vec<SandboxId>, NetError> {
        // No host resources outlive a sandbox, so there is never anything to reconcile.
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SandboxId {
        "abc".parse().unwrap()
    }

    #[test]
    fn test_attach_gives_loopback_only() {
        let policy = LoopbackOnly::default();
        assert_eq!(
            policy.attach(&id(), &NetworkSpec::default()).unwrap(),
            NetAttachment::LoopbackOnly
        );
    }

    #[test]
    fn test_update_unknown_sandbox_is_not_found() {
        let policy = LoopbackOnly::default();
        assert!(matches!(
            policy.update(&id(), &NetworkSpec::default()),
            Err(NetError::NotFound { .. })
        ));
    }

    #[test]
    fn test_update_after_detach_is_not_found() {
        let policy = LoopbackOnly::default();
        policy.attach(&id(), &NetworkSpec::default()).unwrap();
        policy.detach(&id()).unwrap();
        assert!(matches!(
            policy.update(&id(), &NetworkSpec::default()),
            Err(NetError::NotFound { .. })
        ));
    }
}
