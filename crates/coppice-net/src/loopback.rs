//! [`LoopbackOnly`]: sandboxes get a private network namespace with only loopback.
//!
//! Pooled namespaces come with a user namespace of their own (mapping the sandbox's ids) that
//! the sandbox joins, so that all of a sandbox's namespaces belong to its user namespace and
//! it can be checkpointed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use coppice_core::SandboxId;
use coppice_core::net::{NetAttachment, NetError, NetPolicy};
use coppice_core::spec::NetworkSpec;
use coppice_core::volume::IdMap;

use crate::pool::Pool;
use crate::sys::{NetnsSys, OwnedNamespace};

/// A policy that isolates every sandbox completely: its network namespace has loopback only.
///
/// With a pool, namespaces are made ahead of time and the runtime joins one; without (or
/// when the pool is momentarily empty) the runtime creates the namespace itself. Either way
/// nothing outlives the sandbox: the policy holds a namespace only from `attach` to `detach`,
/// so after a daemon restart `list` is empty and nothing needs cleaning.
#[derive(Debug, Default)]
pub struct LoopbackOnly {
    pool: Option<(Pool<OwnedNamespace>, Arc<dyn NetnsSys>)>,
    attached: Mutex<BTreeMap<SandboxId, Attached>>,
}

#[derive(Debug)]
struct Attached {
    spec: NetworkSpec,
    /// The pooled namespace the sandbox joined: held (never read) until detach, so the
    /// runtime can open it by path while it starts the sandbox.
    _namespace: Option<OwnedNamespace>,
}

impl LoopbackOnly {
    /// Keeps `size` namespaces ready, made through `sys`, each inside a user namespace that
    /// maps the sandbox ids as `map` says.
    pub fn with_pool(sys: Arc<dyn NetnsSys>, size: usize, map: IdMap) -> Self {
        Self {
            pool: Some((
                Pool::start("netns-pool", size, {
                    let sys = Arc::clone(&sys);
                    move || sys.new_owned_namespace(&map)
                }),
                sys,
            )),
            attached: Mutex::default(),
        }
    }

    /// Keeps `size` namespaces ready, made by the kernel.
    #[cfg(target_os = "linux")]
    pub fn pooled(size: usize, map: IdMap) -> Self {
        Self::with_pool(Arc::new(crate::sys::RealNetnsSys), size, map)
    }

    fn attached(&self) -> MutexGuard<'_, BTreeMap<SandboxId, Attached>> {
        self.attached.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl NetPolicy for LoopbackOnly {
    fn attach(&self, id: &SandboxId, spec: &NetworkSpec) -> Result<NetAttachment, NetError> {
        let pooled = self
            .pool
            .as_ref()
            .and_then(|(pool, sys)| pool.take().map(|namespace| (sys, namespace)));
        let (attachment, namespace) = match pooled {
            Some((sys, namespace)) => (
                NetAttachment::Namespace {
                    path: sys.path_of(&namespace.net),
                    user: Some(sys.path_of(&namespace.user)),
                    addresses: Vec::new(),
                    dns: Vec::new(),
                    restore_device: None,
                },
                Some(namespace),
            ),
            None => (NetAttachment::LoopbackOnly, None),
        };
        self.attached().insert(
            id.clone(),
            Attached {
                spec: spec.clone(),
                _namespace: namespace,
            },
        );
        Ok(attachment)
    }

    fn update(&self, id: &SandboxId, spec: &NetworkSpec) -> Result<(), NetError> {
        let mut attached = self.attached();
        let current = attached
            .get_mut(id)
            .ok_or_else(|| NetError::NotFound { id: id.clone() })?;
        current.spec = spec.clone();
        Ok(())
    }

    fn detach(&self, id: &SandboxId) -> Result<(), NetError> {
        self.attached().remove(id);
        Ok(())
    }

    fn list(&self) -> Result<Vec<SandboxId>, NetError> {
        // No host resources outlive a sandbox, so there is never anything to reconcile.
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::sys::FakeNetnsSys;

    fn id() -> SandboxId {
        "abc".parse().unwrap()
    }

    #[test]
    fn test_attach_without_pool_gives_fresh_loopback_namespace() {
        let policy = LoopbackOnly::default();
        assert_eq!(
            policy.attach(&id(), &NetworkSpec::default()).unwrap(),
            NetAttachment::LoopbackOnly
        );
    }

    #[test]
    fn test_attach_with_filled_pool_joins_a_pooled_namespace() {
        let policy = LoopbackOnly::with_pool(
            Arc::new(FakeNetnsSys::default()),
            2,
            IdMap {
                uid_base: 1000,
                gid_base: 1000,
                count: 10,
            },
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        let attachment = loop {
            let attachment = policy.attach(&id(), &NetworkSpec::default()).unwrap();
            if attachment != NetAttachment::LoopbackOnly || Instant::now() > deadline {
                break attachment;
            }
            policy.detach(&id()).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        };
        assert!(
            matches!(attachment, NetAttachment::Namespace { ref path, user: Some(ref user), .. }
                if path.starts_with("/fake/fd") && user.starts_with("/fake/fd") && user != path)
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
