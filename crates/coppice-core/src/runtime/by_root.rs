//! [`ByRoot`]: one `Runtime` over two, chosen per sandbox by the kind of its root: a
//! directory goes to one (FreeBSD: jails), a whole disk to the other (bhyve VMs). Which one
//! holds a sandbox is remembered from its create, and after a daemon restart learnt from
//! both runtimes' lists.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Probe, RootDir, Runtime, RuntimeError, RuntimeSandbox, RuntimeSpec, SandboxEndpoints};
use crate::exec::{ExecOutcome, ExecRequest};
use crate::id::SandboxId;
use crate::storage::RootFs;

/// Which runtime holds a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Directory,
    Disk,
}

/// Two runtimes behind one, by root kind.
pub struct ByRoot {
    directory: Arc<dyn Runtime>,
    disk: Arc<dyn Runtime>,
    sides: Mutex<HashMap<SandboxId, Side>>,
}

impl std::fmt::Debug for ByRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByRoot").finish_non_exhaustive()
    }
}

impl ByRoot {
    /// Directory and overlay roots to `directory`, disks to `disk`; learns where the
    /// sandboxes of an earlier run are.
    ///
    /// # Errors
    /// Either runtime cannot list its sandboxes.
    pub fn new(directory: Arc<dyn Runtime>, disk: Arc<dyn Runtime>) -> Result<Self, RuntimeError> {
        let mut sides = HashMap::new();
        for sandbox in directory.list()? {
            sides.insert(sandbox.id, Side::Directory);
        }
        for sandbox in disk.list()? {
            sides.insert(sandbox.id, Side::Disk);
        }
        Ok(Self {
            directory,
            disk,
            sides: Mutex::new(sides),
        })
    }

    fn sides(&self) -> MutexGuard<'_, HashMap<SandboxId, Side>> {
        self.sides.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn runtime(&self, side: Side) -> &dyn Runtime {
        match side {
            Side::Directory => self.directory.as_ref(),
            Side::Disk => self.disk.as_ref(),
        }
    }

    /// The runtime holding `id`.
    fn holder(&self, id: &SandboxId) -> Result<&dyn Runtime, RuntimeError> {
        let side = self
            .sides()
            .get(id)
            .copied()
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
        Ok(self.runtime(side))
    }
}

impl Runtime for ByRoot {
    fn create(
        &self,
        id: &SandboxId,
        spec: &RuntimeSpec,
        root: &RootFs,
    ) -> Result<(), RuntimeError> {
        let side = match root {
            RootFs::Disk { .. } => Side::Disk,
            RootFs::Directory { .. } | RootFs::Overlay { .. } => Side::Directory,
        };
        if self.sides().contains_key(id) {
            return Err(RuntimeError::AlreadyExists { id: id.clone() });
        }
        self.runtime(side).create(id, spec, root)?;
        self.sides().insert(id.clone(), side);
        Ok(())
    }

    fn start(&self, id: &SandboxId) -> Result<SandboxEndpoints, RuntimeError> {
        self.holder(id)?.start(id)
    }

    fn exec(&self, id: &SandboxId, request: &ExecRequest) -> Result<ExecOutcome, RuntimeError> {
        self.holder(id)?.exec(id, request)
    }

    fn probe(&self, id: &SandboxId) -> Result<Probe, RuntimeError> {
        self.holder(id)?.probe(id)
    }

    fn freeze(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.holder(id)?.freeze(id)
    }

    fn thaw(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.holder(id)?.thaw(id)
    }

    fn destroy(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        let side = self.sides().get(id).copied();
        match side {
            Some(side) => self.runtime(side).destroy(id)?,
            // Unknown here: whatever either runtime still holds of it goes.
            None => {
                self.directory.destroy(id)?;
                self.disk.destroy(id)?;
            }
        }
        self.sides().remove(id);
        Ok(())
    }

    fn root_dir(&self, id: &SandboxId) -> Result<RootDir, RuntimeError> {
        self.holder(id)?.root_dir(id)
    }

    fn id_map(&self) -> crate::volume::IdMap {
        self.directory.id_map()
    }

    fn list(&self) -> Result<Vec<RuntimeSandbox>, RuntimeError> {
        let mut all = self.directory.list()?;
        all.extend(self.disk.list()?);
        Ok(all)
    }
}

#[cfg(all(test, feature = "test-support"))]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::exec::ExitStatus;
    use crate::net::NetAttachment;
    use crate::runtime::RootUse;
    use crate::testing::FakeRuntime;

    fn spec() -> RuntimeSpec {
        RuntimeSpec {
            defaults: crate::runtime::ProcessDefaults::default(),
            hostname: "h".into(),
            vcpus: 1,
            memory_mb: 128,
            max_pids: 64,
            env: vec![],
            network: NetAttachment::LoopbackOnly,
            volumes: vec![],
            root_use: RootUse::Fresh,
        }
    }

    fn id(text: &str) -> SandboxId {
        text.parse().expect("a sandbox id")
    }

    #[test]
    fn test_each_sandbox_goes_to_the_runtime_of_its_root_and_stays_there() {
        let (jails, vms) = (
            Arc::new(FakeRuntime::default()),
            Arc::new(FakeRuntime::default()),
        );
        let runtime = ByRoot::new(
            Arc::clone(&jails) as Arc<dyn Runtime>,
            Arc::clone(&vms) as Arc<dyn Runtime>,
        )
        .unwrap();
        let directory = RootFs::Directory {
            path: PathBuf::from("/var/db/coppice/sandboxes/j1"),
            binds: vec![],
        };
        let disk = RootFs::Disk {
            device: PathBuf::from("/dev/zvol/zroot/coppice/sandboxes/v1"),
        };
        runtime.create(&id("j1"), &spec(), &directory).unwrap();
        runtime.create(&id("v1"), &spec(), &disk).unwrap();
        assert!(jails.holds(&id("j1")) && !jails.holds(&id("v1")));
        assert!(vms.holds(&id("v1")) && !vms.holds(&id("j1")));
        assert!(matches!(
            runtime.create(&id("v1"), &spec(), &directory),
            Err(RuntimeError::AlreadyExists { .. })
        ));

        runtime.start(&id("v1")).unwrap();
        let outcome = runtime
            .exec(&id("v1"), &ExecRequest::new(["true"]))
            .unwrap();
        assert_eq!(outcome.status, ExitStatus::Code(0));
        runtime.freeze(&id("v1")).unwrap();
        assert!(vms.is_frozen(&id("v1")));
        assert_eq!(runtime.list().unwrap().len(), 2);

        // A restarted daemon learns where each one is.
        let restarted = ByRoot::new(
            Arc::clone(&jails) as Arc<dyn Runtime>,
            Arc::clone(&vms) as Arc<dyn Runtime>,
        )
        .unwrap();
        restarted.destroy(&id("v1")).unwrap();
        assert!(!vms.holds(&id("v1")) && jails.holds(&id("j1")));
        assert!(matches!(
            restarted.probe(&id("v1")),
            Err(RuntimeError::NotFound { .. })
        ));
        restarted.destroy(&id("nobody")).unwrap();
    }
}
