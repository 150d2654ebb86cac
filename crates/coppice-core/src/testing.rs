//! Fakes of the three backend traits and the `require_privileged!` macro, for tests in every
//! crate (feature `test-support`).
//!
//! Each fake keeps enough state to answer `list`, records the calls it receives, and can be
//! told to fail its next call of a given operation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use crate::exec::{ExecOutcome, ExecRequest, ExitStatus};
use crate::id::{DirSnapshotId, SandboxId, TemplateId, VolumeId};
use crate::net::{NetAttachment, NetError, NetPolicy};
use crate::runtime::{
    Probe, RootDir, Runtime, RuntimeError, RuntimeSandbox, RuntimeSpec, SandboxEndpoints,
};
use crate::spec::NetworkSpec;
use crate::storage::{BindMount, RootFs, Storage, StorageError, TemplateInfo};
use crate::volume::{ArchiveInfo, IdMap};

/// Fails the test unless privileged tests were asked for and the process is root.
///
/// Privileged tests are `#[ignore = "privileged: …"]`; CI runs them with
/// `COPPICE_PRIVILEGED_TESTS=1 … -- --ignored`. A misconfigured run fails instead of passing
/// by not testing anything.
#[macro_export]
macro_rules! require_privileged {
    () => {
        assert_eq!(
            std::env::var("COPPICE_PRIVILEGED_TESTS").as_deref(),
            Ok("1"),
            "privileged test run without COPPICE_PRIVILEGED_TESTS=1"
        );
        assert!(
            std::fs::read_to_string("/proc/self/status")
                .unwrap_or_default()
                .lines()
                .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0")),
            "privileged test must run as root"
        );
    };
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, thiserror::Error)]
#[error("injected failure")]
struct Injected;

/// One call a fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    /// `Runtime::create`.
    Create(SandboxId),
    /// `Runtime::start`.
    Start(SandboxId),
    /// `Runtime::exec`, with argv.
    Exec(SandboxId, Vec<String>),
    /// `Runtime::destroy`.
    Destroy(SandboxId),
    /// `Runtime::freeze`.
    Freeze(SandboxId),
    /// `Runtime::thaw`.
    Thaw(SandboxId),
    /// `Runtime::checkpoint`.
    Checkpoint(SandboxId),
    /// `Runtime::restore`.
    Restore(SandboxId),
    /// `Storage::create_rootfs`.
    CreateRootfs(SandboxId, TemplateId),
    /// `Storage::destroy_rootfs`.
    DestroyRootfs(SandboxId),
    /// `NetPolicy::attach`.
    Attach(SandboxId),
    /// `NetPolicy::detach`.
    Detach(SandboxId),
    /// `NetPolicy::prepare_restore`.
    PrepareRestore(SandboxId),
    /// `Storage::snapshot_rootfs`.
    Snapshot(SandboxId, TemplateId),
    /// `Storage::bootstrap_debian`.
    Bootstrap(TemplateId),
    /// `Storage::derive_template`: the new template and the one it is made from.
    Derive(TemplateId, TemplateId),
}

/// An in-memory `Runtime`. `exec` echoes its argv joined by spaces on stdout.
#[derive(Debug, Default)]
pub struct FakeRuntime {
    created: Mutex<BTreeMap<SandboxId, bool>>,
    calls: Mutex<Vec<FakeCall>>,
    fail_next: Mutex<BTreeSet<&'static str>>,
    oom_kills: Mutex<BTreeMap<SandboxId, u64>>,
    frozen: Mutex<BTreeSet<SandboxId>>,
    volumes: Mutex<BTreeMap<SandboxId, Vec<BindMount>>>,
    specs: Mutex<BTreeMap<SandboxId, RuntimeSpec>>,
    checkpoints: Mutex<BTreeSet<SandboxId>>,
    refuse_checkpoints: std::sync::atomic::AtomicBool,
    host_memory: Mutex<Option<crate::runtime::HostMemory>>,
    failing_execs: Mutex<Vec<String>>,
    exec_requests: Mutex<Vec<ExecRequest>>,
}

impl FakeRuntime {
    /// Every exec request so far, in every sandbox, in order.
    pub fn exec_requests(&self) -> Vec<ExecRequest> {
        lock(&self.exec_requests).clone()
    }

    /// Makes every further exec whose command line contains `needle` exit 1 (until
    /// [`FakeRuntime::stop_failing_execs`]).
    pub fn fail_execs_containing(&self, needle: &str) {
        lock(&self.failing_execs).push(needle.to_owned());
    }

    /// Lets every exec succeed again.
    pub fn stop_failing_execs(&self) {
        lock(&self.failing_execs).clear();
    }

    /// The command lines of the execs run in sandbox `id` so far.
    pub fn execs(&self, id: &SandboxId) -> Vec<String> {
        lock(&self.calls)
            .iter()
            .filter_map(|call| match call {
                FakeCall::Exec(sandbox, argv) if sandbox == id => Some(argv.join(" ")),
                _ => None,
            })
            .collect()
    }

    /// Whether the sandbox is frozen.
    pub fn is_frozen(&self, id: &SandboxId) -> bool {
        lock(&self.frozen).contains(id)
    }

    /// Makes the next call of `op` ("create", "start", "exec", "destroy", "freeze", "thaw")
    /// fail.
    pub fn fail_next(&self, op: &'static str) {
        lock(&self.fail_next).insert(op);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<FakeCall> {
        lock(&self.calls).clone()
    }

    /// Whether the fake holds the sandbox.
    pub fn holds(&self, id: &SandboxId) -> bool {
        lock(&self.created).contains_key(id)
    }

    /// What the sandbox was last created with.
    pub fn spec_of(&self, id: &SandboxId) -> Option<RuntimeSpec> {
        lock(&self.specs).get(id).cloned()
    }

    /// The volumes the sandbox was last created with.
    pub fn volumes_of(&self, id: &SandboxId) -> Vec<BindMount> {
        lock(&self.volumes).get(id).cloned().unwrap_or_default()
    }

    /// Marks a sandbox's init as dead, as if it had exited.
    pub fn kill_init(&self, id: &SandboxId) {
        if let Some(alive) = lock(&self.created).get_mut(id) {
            *alive = false;
        }
    }

    /// Pretends the OOM killer struck `count` more times.
    pub fn add_oom_kills(&self, id: &SandboxId, count: u64) {
        *lock(&self.oom_kills).entry(id.clone()).or_insert(0) += count;
    }

    /// Sets what `host_memory` answers.
    pub fn set_host_memory(&self, memory: Option<crate::runtime::HostMemory>) {
        *lock(&self.host_memory) = memory;
    }

    /// Makes every `checkpoint` refuse as `Unsupported` (a runtime without CRIU).
    pub fn refuse_checkpoints(&self) {
        self.refuse_checkpoints
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Adds a sandbox as if it had been left by an earlier daemon.
    pub fn insert_alive(&self, id: &SandboxId) {
        lock(&self.created).insert(id.clone(), true);
    }

    fn injected(&self, op: &'static str, id: &SandboxId) -> Result<(), RuntimeError> {
        if lock(&self.fail_next).remove(op) {
            return Err(RuntimeError::Backend {
                op,
                id: id.clone(),
                source: Box::new(Injected),
            });
        }
        Ok(())
    }
}

impl Runtime for FakeRuntime {
    fn create(
        &self,
        id: &SandboxId,
        spec: &RuntimeSpec,
        _root: &RootFs,
    ) -> Result<(), RuntimeError> {
        lock(&self.calls).push(FakeCall::Create(id.clone()));
        self.injected("create", id)?;
        lock(&self.volumes).insert(id.clone(), spec.volumes.clone());
        lock(&self.specs).insert(id.clone(), spec.clone());
        let mut created = lock(&self.created);
        if created.contains_key(id) {
            return Err(RuntimeError::AlreadyExists { id: id.clone() });
        }
        created.insert(id.clone(), false);
        Ok(())
    }

    fn start(&self, id: &SandboxId) -> Result<SandboxEndpoints, RuntimeError> {
        lock(&self.calls).push(FakeCall::Start(id.clone()));
        self.injected("start", id)?;
        let mut created = lock(&self.created);
        let alive = created
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
        *alive = true;
        Ok(SandboxEndpoints {
            control_socket: PathBuf::from(format!("/fake/{id}/control.sock")),
            envd_socket: PathBuf::from(format!("/fake/{id}/envd.sock")),
        })
    }

    fn exec(&self, id: &SandboxId, request: &ExecRequest) -> Result<ExecOutcome, RuntimeError> {
        lock(&self.calls).push(FakeCall::Exec(id.clone(), request.argv.clone()));
        lock(&self.exec_requests).push(request.clone());
        self.injected("exec", id)?;
        if lock(&self.created).get(id) != Some(&true) {
            return Err(RuntimeError::NotFound { id: id.clone() });
        }
        let line = request.argv.join(" ");
        if lock(&self.failing_execs)
            .iter()
            .any(|needle| line.contains(needle.as_str()))
        {
            return Ok(ExecOutcome {
                status: ExitStatus::Code(1),
                stdout: Vec::new(),
                stderr: b"not ready".to_vec(),
                truncated: false,
                timed_out: false,
            });
        }
        Ok(ExecOutcome {
            status: ExitStatus::Code(0),
            stdout: request.argv.join(" ").into_bytes(),
            stderr: Vec::new(),
            truncated: false,
            timed_out: false,
        })
    }

    fn probe(&self, id: &SandboxId) -> Result<Probe, RuntimeError> {
        let alive = *lock(&self.created)
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
        let oom_kills = lock(&self.oom_kills).get(id).copied().unwrap_or(0);
        Ok(Probe {
            alive,
            oom_kills,
            memory_bytes: 0,
            pids: u64::from(alive),
        })
    }

    fn destroy(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        lock(&self.calls).push(FakeCall::Destroy(id.clone()));
        self.injected("destroy", id)?;
        lock(&self.created).remove(id);
        lock(&self.frozen).remove(id);
        lock(&self.checkpoints).remove(id);
        Ok(())
    }

    fn root_dir(&self, id: &SandboxId) -> Result<RootDir, RuntimeError> {
        if lock(&self.created).get(id) != Some(&true) {
            return Err(RuntimeError::NotFound { id: id.clone() });
        }
        Ok(RootDir::at(PathBuf::from(format!("/fake/{id}/root"))))
    }

    fn freeze(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        lock(&self.calls).push(FakeCall::Freeze(id.clone()));
        self.injected("freeze", id)?;
        if lock(&self.created).get(id) != Some(&true) {
            return Err(RuntimeError::NotFound { id: id.clone() });
        }
        lock(&self.frozen).insert(id.clone());
        Ok(())
    }

    fn thaw(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        lock(&self.calls).push(FakeCall::Thaw(id.clone()));
        self.injected("thaw", id)?;
        if !lock(&self.created).contains_key(id) {
            return Err(RuntimeError::NotFound { id: id.clone() });
        }
        lock(&self.frozen).remove(id);
        Ok(())
    }

    fn checkpoint(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        lock(&self.calls).push(FakeCall::Checkpoint(id.clone()));
        if self
            .refuse_checkpoints
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(RuntimeError::Unsupported {
                what: "pausing durably with memory",
            });
        }
        self.injected("checkpoint", id)?;
        let mut created = lock(&self.created);
        match created.get_mut(id) {
            Some(alive) if *alive => *alive = false,
            _ => return Err(RuntimeError::NotFound { id: id.clone() }),
        }
        lock(&self.frozen).remove(id);
        lock(&self.checkpoints).insert(id.clone());
        Ok(())
    }

    fn has_checkpoint(&self, id: &SandboxId) -> bool {
        lock(&self.checkpoints).contains(id)
    }

    fn host_memory(&self) -> Option<crate::runtime::HostMemory> {
        *lock(&self.host_memory)
    }

    fn restore(&self, id: &SandboxId) -> Result<SandboxEndpoints, RuntimeError> {
        lock(&self.calls).push(FakeCall::Restore(id.clone()));
        self.injected("restore", id)?;
        if !lock(&self.checkpoints).remove(id) {
            return Err(RuntimeError::NotFound { id: id.clone() });
        }
        lock(&self.created).insert(id.clone(), true);
        Ok(SandboxEndpoints {
            control_socket: PathBuf::from(format!("/fake/{id}/control.sock")),
            envd_socket: PathBuf::from(format!("/fake/{id}/envd.sock")),
        })
    }

    fn list(&self) -> Result<Vec<RuntimeSandbox>, RuntimeError> {
        Ok(lock(&self.created)
            .iter()
            .map(|(id, alive)| RuntimeSandbox {
                id: id.clone(),
                alive: *alive,
            })
            .collect())
    }
}

/// A template's default user, working directory and environment, as a test set them.
type TemplateDefaults = (String, String, Vec<(String, String)>);

/// An in-memory `Storage` holding the templates it was built with.
#[derive(Debug)]
pub struct FakeStorage {
    templates: Mutex<Vec<TemplateId>>,
    snapshots: Mutex<BTreeMap<TemplateId, SandboxId>>,
    rootfs: Mutex<BTreeSet<SandboxId>>,
    volumes: Mutex<BTreeSet<VolumeId>>,
    /// Directory snapshots: id -> (root, path) they were taken of.
    dir_snapshots: Mutex<BTreeMap<DirSnapshotId, (PathBuf, String)>>,
    calls: Mutex<Vec<FakeCall>>,
    fail_next: Mutex<BTreeSet<&'static str>>,
    starts: Mutex<BTreeMap<TemplateId, crate::storage::TemplateStart>>,
    defaults: Mutex<BTreeMap<TemplateId, TemplateDefaults>>,
    built_from: Mutex<BTreeMap<TemplateId, String>>,
}

impl FakeStorage {
    /// Storage with the given templates.
    pub fn with_templates(templates: &[&str]) -> Self {
        Self {
            templates: Mutex::new(templates.iter().filter_map(|t| t.parse().ok()).collect()),
            snapshots: Mutex::new(BTreeMap::new()),
            rootfs: Mutex::new(BTreeSet::new()),
            volumes: Mutex::new(BTreeSet::new()),
            dir_snapshots: Mutex::new(BTreeMap::new()),
            calls: Mutex::new(Vec::new()),
            fail_next: Mutex::new(BTreeSet::new()),
            starts: Mutex::new(BTreeMap::new()),
            defaults: Mutex::new(BTreeMap::new()),
            built_from: Mutex::new(BTreeMap::new()),
        }
    }

    /// Gives template `id` its own default user, working directory and environment.
    pub fn set_defaults(&self, id: &TemplateId, user: &str, workdir: &str, env: &[(&str, &str)]) {
        let env = env
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        lock(&self.defaults).insert(id.clone(), (user.into(), workdir.into(), env));
    }

    /// Gives template `id` a service to start in its sandboxes.
    pub fn set_start(&self, id: &TemplateId, start: crate::storage::TemplateStart) {
        lock(&self.starts).insert(id.clone(), start);
    }

    /// Makes the next call of `op` ("create_rootfs", "destroy_rootfs", "snapshot_rootfs")
    /// fail.
    pub fn fail_next(&self, op: &'static str) {
        lock(&self.fail_next).insert(op);
    }

    /// Whether a rootfs exists for the sandbox.
    pub fn holds(&self, id: &SandboxId) -> bool {
        lock(&self.rootfs).contains(id)
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<FakeCall> {
        lock(&self.calls).clone()
    }

    /// Adds a rootfs as if it had been left by an earlier daemon.
    pub fn insert_rootfs(&self, id: &SandboxId) {
        lock(&self.rootfs).insert(id.clone());
    }

    fn injected(&self, op: &'static str) -> Result<(), StorageError> {
        if lock(&self.fail_next).remove(op) {
            return Err(StorageError::Backend {
                op,
                source: Box::new(Injected),
            });
        }
        Ok(())
    }

    fn info(&self, id: &TemplateId) -> TemplateInfo {
        let (default_user, default_workdir, env) = lock(&self.defaults)
            .get(id)
            .cloned()
            .unwrap_or_else(|| ("user".into(), "/home/user".into(), Vec::new()));
        TemplateInfo {
            id: id.clone(),
            created_at: UNIX_EPOCH + Duration::from_secs(1),
            size_bytes: 0,
            default_user,
            default_workdir,
            snapshot_of: lock(&self.snapshots).get(id).cloned(),
            start: lock(&self.starts).get(id).cloned(),
            env,
            built_from: lock(&self.built_from).get(id).cloned(),
        }
    }

    /// The root and path directory snapshot `id` was taken of, if it is kept.
    pub fn dir_snapshot_source(&self, id: &DirSnapshotId) -> Option<(PathBuf, String)> {
        lock(&self.dir_snapshots).get(id).cloned()
    }

    /// Whether volume `id`'s directory exists.
    pub fn holds_volume(&self, id: &VolumeId) -> bool {
        lock(&self.volumes).contains(id)
    }

    fn volume_dir(id: &VolumeId) -> PathBuf {
        PathBuf::from(format!("/fake/volumes/{id}"))
    }

    fn root(id: &SandboxId) -> RootFs {
        RootFs::Directory {
            path: PathBuf::from(format!("/fake/{id}/root")),
            binds: Vec::new(),
        }
    }
}

impl Storage for FakeStorage {
    fn templates(&self) -> Result<Vec<TemplateInfo>, StorageError> {
        let templates = lock(&self.templates).clone();
        Ok(templates.iter().map(|id| self.info(id)).collect())
    }

    fn template(&self, id: &TemplateId) -> Result<TemplateInfo, StorageError> {
        let known = lock(&self.templates).contains(id);
        known
            .then(|| self.info(id))
            .ok_or_else(|| StorageError::TemplateNotFound { id: id.clone() })
    }

    /// Refuses a package named `no-such-package`, as the archive would.
    fn bootstrap_debian(
        &self,
        id: &TemplateId,
        base: &crate::recipe::DebianBase,
        _ids: IdMap,
        log: &mut dyn FnMut(&str),
    ) -> Result<TemplateInfo, StorageError> {
        lock(&self.calls).push(FakeCall::Bootstrap(id.clone()));
        self.injected("bootstrap_debian")?;
        log(&format!("fake bootstrap of {}", base.release));
        if base.packages.iter().any(|p| p == "no-such-package") {
            return Err(StorageError::Invalid {
                reason: "E: Unable to locate package no-such-package".into(),
            });
        }
        let mut templates = lock(&self.templates);
        if templates.contains(id) {
            return Err(StorageError::TemplateExists { id: id.clone() });
        }
        templates.push(id.clone());
        drop(templates);
        Ok(self.info(id))
    }

    fn derive_template(
        &self,
        id: &TemplateId,
        from: &TemplateId,
        meta: &crate::storage::TemplateMeta,
    ) -> Result<TemplateInfo, StorageError> {
        lock(&self.calls).push(FakeCall::Derive(id.clone(), from.clone()));
        let mut templates = lock(&self.templates);
        if !templates.contains(from) {
            return Err(StorageError::TemplateNotFound { id: from.clone() });
        }
        if templates.contains(id) {
            let replaceable = meta.built_from.is_some() && lock(&self.built_from).contains_key(id);
            if !replaceable {
                return Err(StorageError::TemplateExists { id: id.clone() });
            }
        } else {
            templates.push(id.clone());
        }
        drop(templates);
        if let Some(digest) = &meta.built_from {
            lock(&self.built_from).insert(id.clone(), digest.clone());
        }
        if let Some(start) = &meta.start {
            lock(&self.starts).insert(id.clone(), start.clone());
        }
        let env: Vec<(&str, &str)> = meta
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.set_defaults(
            id,
            meta.default_user.as_deref().unwrap_or("user"),
            meta.default_workdir.as_deref().unwrap_or("/home/user"),
            &env,
        );
        Ok(self.info(id))
    }

    fn snapshot_rootfs(
        &self,
        id: &SandboxId,
        snapshot: &TemplateId,
    ) -> Result<TemplateInfo, StorageError> {
        lock(&self.calls).push(FakeCall::Snapshot(id.clone(), snapshot.clone()));
        self.injected("snapshot_rootfs")?;
        if !self.holds(id) {
            return Err(StorageError::NotFound { id: id.clone() });
        }
        let mut templates = lock(&self.templates);
        if templates.contains(snapshot) {
            return Err(StorageError::TemplateExists {
                id: snapshot.clone(),
            });
        }
        templates.push(snapshot.clone());
        drop(templates);
        lock(&self.snapshots).insert(snapshot.clone(), id.clone());
        Ok(self.info(snapshot))
    }

    /// Refuses `base`, as the real backends refuse their built-in template.
    fn delete_template(&self, id: &TemplateId) -> Result<(), StorageError> {
        if id.as_str() == "base" {
            return Err(StorageError::Invalid {
                reason: "template base is built in".into(),
            });
        }
        let mut templates = lock(&self.templates);
        let before = templates.len();
        templates.retain(|t| t != id);
        if templates.len() == before {
            return Err(StorageError::TemplateNotFound { id: id.clone() });
        }
        lock(&self.snapshots).remove(id);
        Ok(())
    }

    fn create_dir_snapshot(
        &self,
        id: &DirSnapshotId,
        root: &Path,
        path: &str,
        _ids: IdMap,
    ) -> Result<ArchiveInfo, StorageError> {
        self.injected("create_dir_snapshot")?;
        lock(&self.dir_snapshots).insert(id.clone(), (root.to_owned(), path.to_owned()));
        Ok(ArchiveInfo {
            sha256: "0".repeat(64),
            size_bytes: 10_240,
            entries: 1,
        })
    }

    fn restore_dir_snapshot(
        &self,
        id: &DirSnapshotId,
        _root: &Path,
        _path: &str,
        _ids: IdMap,
    ) -> Result<u64, StorageError> {
        if lock(&self.dir_snapshots).contains_key(id) {
            Ok(1)
        } else {
            Err(StorageError::DirSnapshotNotFound { id: id.clone() })
        }
    }

    fn dir_snapshot_file(&self, id: &DirSnapshotId) -> Result<PathBuf, StorageError> {
        if lock(&self.dir_snapshots).contains_key(id) {
            Ok(PathBuf::from(format!("/fake/dir-snapshots/{id}.tar")))
        } else {
            Err(StorageError::DirSnapshotNotFound { id: id.clone() })
        }
    }

    fn delete_dir_snapshot(&self, id: &DirSnapshotId) -> Result<(), StorageError> {
        lock(&self.dir_snapshots).remove(id);
        Ok(())
    }

    fn create_volume(&self, id: &VolumeId) -> Result<PathBuf, StorageError> {
        self.injected("create_volume")?;
        if !lock(&self.volumes).insert(id.clone()) {
            return Err(StorageError::VolumeExists { id: id.clone() });
        }
        Ok(Self::volume_dir(id))
    }

    fn volume_path(&self, id: &VolumeId) -> Result<PathBuf, StorageError> {
        if lock(&self.volumes).contains(id) {
            Ok(Self::volume_dir(id))
        } else {
            Err(StorageError::VolumeNotFound { id: id.clone() })
        }
    }

    fn delete_volume(&self, id: &VolumeId) -> Result<(), StorageError> {
        lock(&self.volumes).remove(id);
        Ok(())
    }

    fn create_rootfs(
        &self,
        id: &SandboxId,
        template: &TemplateId,
        _disk_mb: u32,
    ) -> Result<RootFs, StorageError> {
        lock(&self.calls).push(FakeCall::CreateRootfs(id.clone(), template.clone()));
        self.injected("create_rootfs")?;
        self.template(template)?;
        if !lock(&self.rootfs).insert(id.clone()) {
            return Err(StorageError::AlreadyExists { id: id.clone() });
        }
        Ok(Self::root(id))
    }

    fn rootfs(&self, id: &SandboxId) -> Result<RootFs, StorageError> {
        if lock(&self.rootfs).contains(id) {
            Ok(Self::root(id))
        } else {
            Err(StorageError::NotFound { id: id.clone() })
        }
    }

    fn destroy_rootfs(&self, id: &SandboxId) -> Result<(), StorageError> {
        lock(&self.calls).push(FakeCall::DestroyRootfs(id.clone()));
        self.injected("destroy_rootfs")?;
        lock(&self.rootfs).remove(id);
        Ok(())
    }

    fn list_rootfs(&self) -> Result<Vec<SandboxId>, StorageError> {
        Ok(lock(&self.rootfs).iter().cloned().collect())
    }
}

/// An in-memory `NetPolicy` that hands out loopback-only attachments.
#[derive(Debug, Default)]
pub struct FakeNetPolicy {
    attached: Mutex<BTreeMap<SandboxId, NetworkSpec>>,
    calls: Mutex<Vec<FakeCall>>,
    fail_next: Mutex<BTreeSet<&'static str>>,
}

impl FakeNetPolicy {
    /// Makes the next call of `op` ("attach", "detach", "update", "prepare_restore") fail.
    pub fn fail_next(&self, op: &'static str) {
        lock(&self.fail_next).insert(op);
    }

    /// Whether the sandbox is attached.
    pub fn holds(&self, id: &SandboxId) -> bool {
        lock(&self.attached).contains_key(id)
    }

    /// The policy the sandbox is attached with.
    pub fn spec_of(&self, id: &SandboxId) -> Option<NetworkSpec> {
        lock(&self.attached).get(id).cloned()
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<FakeCall> {
        lock(&self.calls).clone()
    }

    fn injected(&self, op: &'static str) -> Result<(), NetError> {
        if lock(&self.fail_next).remove(op) {
            return Err(NetError::Backend {
                op,
                source: Box::new(Injected),
            });
        }
        Ok(())
    }
}

impl NetPolicy for FakeNetPolicy {
    fn attach(&self, id: &SandboxId, spec: &NetworkSpec) -> Result<NetAttachment, NetError> {
        lock(&self.calls).push(FakeCall::Attach(id.clone()));
        self.injected("attach")?;
        lock(&self.attached).insert(id.clone(), spec.clone());
        Ok(NetAttachment::LoopbackOnly)
    }

    fn update(&self, id: &SandboxId, spec: &NetworkSpec) -> Result<(), NetError> {
        self.injected("update")?;
        let mut attached = lock(&self.attached);
        let current = attached
            .get_mut(id)
            .ok_or_else(|| NetError::NotFound { id: id.clone() })?;
        *current = spec.clone();
        Ok(())
    }

    fn detach(&self, id: &SandboxId) -> Result<(), NetError> {
        lock(&self.calls).push(FakeCall::Detach(id.clone()));
        self.injected("detach")?;
        lock(&self.attached).remove(id);
        Ok(())
    }

    fn list(&self) -> Result<Vec<SandboxId>, NetError> {
        Ok(lock(&self.attached).keys().cloned().collect())
    }

    fn prepare_restore(&self, id: &SandboxId) -> Result<(), NetError> {
        lock(&self.calls).push(FakeCall::PrepareRestore(id.clone()));
        self.injected("prepare_restore")?;
        if self.holds(id) {
            Ok(())
        } else {
            Err(NetError::NotFound { id: id.clone() })
        }
    }
}
