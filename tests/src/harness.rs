//! Real Linux backends in a private directory, for privileged tests and latency benches.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use coppice_core::SandboxManager;
use coppice_core::clock::SystemClock;
use coppice_core::manager::{Backends, ManagerConfig};
use coppice_core::net::NetPolicy;
use coppice_core::store::Store;
use coppice_linux::cgroup::{CgroupConfig, SandboxCgroups};
use coppice_linux::{
    EnvdSettings, IdMap, InitCommand, NamespaceRuntime, NamespaceRuntimeConfig, RealNsSys,
};
use coppice_net::LoopbackOnly;
use coppice_overlay::{OverlayConfig, OverlayStorage};

/// Network namespaces kept ready, so that creating one stays off the create path (enough
/// for a burst of 20 concurrent creates).
const NETNS_POOL_SIZE: usize = 24;

static NEXT_GROUP: AtomicUsize = AtomicUsize::new(0);

/// Where a harness keeps its state.
#[derive(Clone)]
pub struct HarnessPaths {
    /// Root of everything.
    pub data_dir: PathBuf,
    /// The cgroup group name, unique to this harness.
    pub group: String,
    /// envd for every sandbox, when set.
    pub envd: Option<EnvdSettings>,
    /// The network backend, when not loopback-only.
    pub net: Option<Arc<dyn NetPolicy>>,
}

impl std::fmt::Debug for HarnessPaths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HarnessPaths")
            .field("data_dir", &self.data_dir)
            .field("group", &self.group)
            .field("envd", &self.envd)
            .field("net", &self.net.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl HarnessPaths {
    /// Fresh paths under `data_dir` with a cgroup group unique to this process.
    pub fn new(data_dir: &Path) -> Self {
        let group = format!(
            "coppice-test-{}-{}",
            std::process::id(),
            NEXT_GROUP.fetch_add(1, Ordering::Relaxed)
        );
        Self::with_group(data_dir, group)
    }

    /// Paths under `data_dir` with the given cgroup group (to share state with another process).
    pub fn with_group(data_dir: &Path, group: String) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            group,
            envd: None,
            net: None,
        }
    }

    /// These paths with `net` connecting the sandboxes.
    #[must_use]
    pub fn with_net(mut self, net: Arc<dyn NetPolicy>) -> Self {
        self.net = Some(net);
        self
    }

    /// These paths with envd started in every sandbox.
    #[must_use]
    pub fn with_envd(mut self, envd: EnvdSettings) -> Self {
        self.envd = Some(envd);
        self
    }

    /// The cgroup group directories (parents of every sandbox's cgroups).
    pub fn cgroup_groups(&self) -> Vec<PathBuf> {
        let config = self.cgroup_config();
        let own = std::fs::read_to_string(&config.proc_self_cgroup).unwrap_or_default();
        SandboxCgroups::group_dirs(&config, &own)
            .map(|dirs| dirs.dirs().iter().map(|d| d.path.clone()).collect())
            .unwrap_or_default()
    }

    fn cgroup_config(&self) -> CgroupConfig {
        CgroupConfig {
            group: self.group.clone(),
            ..CgroupConfig::default()
        }
    }

    /// The real backends over these paths, with `init` as the sandbox init.
    ///
    /// # Errors
    /// Backend start-up failures.
    pub fn backends(
        &self,
        init: &InitCommand,
    ) -> anyhow::Result<(Backends, Arc<NamespaceRuntime<RealNsSys>>)> {
        let id_map = IdMap::default();
        let storage = OverlayStorage::new(OverlayConfig::new(
            self.data_dir.join("storage"),
            id_map.host_uid_base,
            id_map.host_gid_base,
        ))?;
        storage.ensure_base_template()?;
        let mut config = NamespaceRuntimeConfig::new(self.data_dir.join("run"), init.clone());
        config.cgroup = self.cgroup_config();
        config.id_map = id_map;
        config.envd.clone_from(&self.envd);
        config.criu = criu_binary();
        let runtime = Arc::new(NamespaceRuntime::new(config)?);
        let backends = Backends {
            runtime: Arc::clone(&runtime) as Arc<dyn coppice_core::runtime::Runtime>,
            storage: Arc::new(storage),
            net: self.net.clone().unwrap_or_else(|| {
                Arc::new(LoopbackOnly::pooled(
                    NETNS_POOL_SIZE,
                    coppice_core::runtime::Runtime::id_map(runtime.as_ref()),
                ))
            }),
        };
        Ok((backends, runtime))
    }

    /// A manager over the real backends, persisting to `<data_dir>/state.db`.
    ///
    /// # Errors
    /// Backend or store start-up failures.
    pub async fn manager(&self, init: &InitCommand) -> anyhow::Result<SandboxManager> {
        let (backends, _) = self.backends(init)?;
        let store = Store::open(&self.data_dir.join("state.db"))?;
        Ok(SandboxManager::start(
            ManagerConfig::default(),
            backends,
            store,
            Arc::new(SystemClock),
        )
        .await?)
    }

    /// Removes the (empty) cgroup group directories.
    pub fn remove_groups(&self) {
        for dir in self.cgroup_groups() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A manager over the real backends in a fresh temp dir; its cgroup groups go when it does.
#[derive(Debug)]
pub struct ManagerEnv {
    /// Keeps the data dir alive.
    pub dir: tempfile::TempDir,
    /// Where the backends keep their state.
    pub paths: HarnessPaths,
    /// The manager.
    pub manager: SandboxManager,
}

impl ManagerEnv {
    /// Starts a manager whose sandbox init (and envd, when `with_envd`) is
    /// `coppice-test-daemon` at `daemon`.
    ///
    /// # Errors
    /// Temp dir, backend or store start-up failures.
    pub async fn start(daemon: &Path, with_envd: bool) -> anyhow::Result<Self> {
        let envd = with_envd.then(|| test_daemon_envd(daemon));
        Self::start_inner(daemon, envd).await
    }

    /// Starts a manager whose sandbox init is `coppice-test-daemon` at `daemon` and whose
    /// sandboxes run `envd`.
    ///
    /// # Errors
    /// Temp dir, backend or store start-up failures.
    pub async fn start_with_envd(daemon: &Path, envd: EnvdSettings) -> anyhow::Result<Self> {
        Self::start_inner(daemon, Some(envd)).await
    }

    /// Starts a manager like [`Self::start`] whose sandboxes `net` connects.
    ///
    /// # Errors
    /// Temp dir, backend or store start-up failures.
    pub async fn start_with_net(
        daemon: &Path,
        with_envd: bool,
        net: Arc<dyn NetPolicy>,
    ) -> anyhow::Result<Self> {
        let envd = with_envd.then(|| test_daemon_envd(daemon));
        Self::start_inner_with(daemon, envd, Some(net)).await
    }

    async fn start_inner(daemon: &Path, envd: Option<EnvdSettings>) -> anyhow::Result<Self> {
        Self::start_inner_with(daemon, envd, None).await
    }

    async fn start_inner_with(
        daemon: &Path,
        envd: Option<EnvdSettings>,
        net: Option<Arc<dyn NetPolicy>>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut paths = HarnessPaths::new(dir.path());
        if let Some(envd) = envd {
            paths = paths.with_envd(envd);
        }
        if let Some(net) = net {
            paths = paths.with_net(net);
        }
        let manager = paths.manager(&test_daemon_init(daemon)).await?;
        Ok(Self {
            dir,
            paths,
            manager,
        })
    }
}

impl Drop for ManagerEnv {
    fn drop(&mut self) {
        self.paths.remove_groups();
    }
}

/// The sandbox id map of the namespace runtime's defaults, as network policies take it (a
/// bridge's endpoints are made in user namespaces with it, as `coppiced` makes them).
pub fn sandbox_id_map() -> coppice_core::volume::IdMap {
    let ids = coppice_linux::IdMap::default();
    coppice_core::volume::IdMap {
        uid_base: ids.host_uid_base,
        gid_base: ids.host_gid_base,
        count: ids.count,
    }
}

/// The CRIU that durable pause uses: `COPPICE_CRIU`, else the one the test command installs
/// when it is there.
pub fn criu_binary() -> Option<PathBuf> {
    std::env::var_os("COPPICE_CRIU")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/usr/local/sbin/criu")))
        .filter(|criu| criu.is_file())
}

/// The sub-command under which `coppice-test-daemon` acts as a sandbox init.
pub const INIT_SUBCOMMAND: &str = "__sandbox-init";

/// The sub-command under which `coppice-test-daemon` acts as envd.
pub const ENVD_SUBCOMMAND: &str = "__envd";

/// `coppice-test-daemon` at `program`, in envd mode, defaulting to the `user` account.
pub fn test_daemon_envd(program: &Path) -> EnvdSettings {
    let mut settings = EnvdSettings::new(program.to_owned());
    settings.leading_args = vec![ENVD_SUBCOMMAND.to_owned()];
    settings
}

/// `coppice-test-daemon` at `program`, in init mode.
pub fn test_daemon_init(program: &Path) -> InitCommand {
    InitCommand {
        program: program.to_owned(),
        leading_args: vec![INIT_SUBCOMMAND.to_owned()],
    }
}

/// Finds a workspace binary next to the running test or bench executable
/// (`target/<profile>/<name>`).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}
