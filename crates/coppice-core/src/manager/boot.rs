//! Booting a sandbox: its root made from a template (create, fork) or found again (resume),
//! its network attached, and a fresh init and envd started on it.

use crate::id::{SandboxId, TemplateId};
use crate::runtime::{RootUse, RuntimeSpec, SandboxEndpoints};
use crate::spec::SandboxSpec;
use crate::storage::BindMount;

use super::{Backends, ManagerError};

pub(super) fn provision_blocking(
    backends: &Backends,
    id: &SandboxId,
    spec: &SandboxSpec,
    root_template: &TemplateId,
    max_pids: u32,
    volumes: Vec<BindMount>,
) -> Result<SandboxEndpoints, ManagerError> {
    let root = backends
        .storage
        .create_rootfs(id, root_template, spec.disk_mb)
        .map_err(|source| ManagerError::from_storage("create rootfs", source))?;
    boot_blocking(
        backends,
        id,
        spec,
        max_pids,
        (&root, RootUse::Fresh),
        volumes,
    )
}

/// Attaches the network and starts a fresh init (and envd) on `root`.
pub(super) fn boot_blocking(
    backends: &Backends,
    id: &SandboxId,
    spec: &SandboxSpec,
    max_pids: u32,
    (root, root_use): (&crate::storage::RootFs, RootUse),
    volumes: Vec<BindMount>,
) -> Result<SandboxEndpoints, ManagerError> {
    let network = backends
        .net
        .attach(id, &spec.network)
        .map_err(|source| ManagerError::from_net("attach network", source))?;
    let runtime_spec = RuntimeSpec {
        defaults: spec.defaults.clone(),
        hostname: id.to_string(),
        vcpus: spec.vcpus,
        memory_mb: spec.memory_mb,
        max_pids,
        env: spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        network,
        volumes,
        root_use,
    };
    backends
        .runtime
        .create(id, &runtime_spec, root)
        .map_err(|source| ManagerError::from_runtime("create", source))?;
    backends
        .runtime
        .start(id)
        .map_err(|source| ManagerError::from_runtime("start", source))
}
