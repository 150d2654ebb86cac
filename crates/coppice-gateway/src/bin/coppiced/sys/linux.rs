//! Linux backends: namespaces runtime, overlayfs storage, loopback-only networking.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use coppice_core::manager::Backends;
use coppice_gateway::config::GatewayConfig;
use coppice_linux::{EnvdSettings, IdMap, InitCommand, NamespaceRuntime, NamespaceRuntimeConfig};
use coppice_net::{BridgeConfig, BridgeNetwork, LoopbackOnly, RealNetnsSys};
use coppice_overlay::{OverlayConfig, OverlayStorage};

mod stand_ins;

/// Network namespaces kept ready, so that creating one stays off the create path (enough
/// for a burst of 20 concurrent creates).
const NETNS_POOL_SIZE: usize = 24;

/// Runs the sandbox init or envd instead of the daemon when asked to.
pub(crate) fn run_as_sandbox_init() -> Option<ExitCode> {
    super::run_helper(coppice_linux::init_main)
}

fn envd_settings() -> anyhow::Result<EnvdSettings> {
    let (binary, leading_args) = super::helper_binary("coppice-envd", super::ENVD_SUBCOMMAND)?;
    let mut settings = EnvdSettings::new(binary);
    settings.leading_args = leading_args;
    Ok(settings)
}

fn init_command() -> anyhow::Result<InitCommand> {
    let (program, leading_args) = super::helper_binary("coppice-init", super::INIT_SUBCOMMAND)?;
    Ok(InitCommand {
        program,
        leading_args,
    })
}

/// The bridge network as configured, its sandboxes' namespaces in user namespaces with
/// `sandbox_ids` (so they can be checkpointed).
fn bridge_network(
    config: &GatewayConfig,
    sandbox_ids: coppice_core::volume::IdMap,
) -> Result<BridgeNetwork, coppice_core::net::NetError> {
    let settings = &config.network;
    let mut bridge = BridgeConfig::new(&settings.bridge, config.net_dir());
    bridge.ipv4 = settings.ipv4;
    bridge.ipv6 = settings.ipv6;
    bridge.pool_size = NETNS_POOL_SIZE;
    bridge.dns_upstream = settings.dns_upstream;
    bridge.sandbox_ids = Some(sandbox_ids);
    BridgeNetwork::start(bridge, Arc::new(RealNetnsSys))
}

/// The CRIU to use: the one asked for, else `criu` on the `PATH`, else the one the test
/// command installs.
fn find_criu(asked: Option<&Path>) -> Option<std::path::PathBuf> {
    if let Some(asked) = asked {
        return Some(asked.to_owned());
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("criu"));
    on_path
        .chain(std::iter::once(std::path::PathBuf::from(
            "/usr/local/sbin/criu",
        )))
        .find(|candidate| candidate.is_file())
}

fn private_dir(path: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}

pub(crate) fn backends(config: &GatewayConfig) -> anyhow::Result<Backends> {
    private_dir(&config.data_dir)?;
    let id_map = IdMap::default();
    let storage = OverlayStorage::new(OverlayConfig::new(
        config.storage_dir(),
        id_map.host_uid_base,
        id_map.host_gid_base,
    ))
    .context("opening overlay storage")?;
    let base = storage
        .ensure_base_template()
        .context("building the base template")?;
    tracing::info!(template = %base.id, "base template ready");
    // Sandboxes of the base template do not need them: a failed build is reported, not fatal.
    let sources = stand_ins::sources().unwrap_or_else(|error| {
        tracing::warn!(
            error = format!("{error:#}"),
            "cannot read the stand-ins' sources"
        );
        Vec::new()
    });
    for source in sources {
        match storage.ensure_template(&source) {
            Ok(template) => {
                tracing::info!(template = %template.id, built_from = template.built_from.as_deref().unwrap_or_default(), "template ready")
            }
            Err(error) => tracing::warn!(
                template = %source.id,
                error = format!("{error:#}"),
                "cannot build the template's stand-in"
            ),
        }
    }
    let mut runtime_config = NamespaceRuntimeConfig::new(config.run_dir(), init_command()?);
    runtime_config.id_map = id_map;
    runtime_config.envd = Some(envd_settings()?);
    runtime_config.criu = find_criu(config.criu.as_deref());
    match &runtime_config.criu {
        Some(criu) => {
            tracing::info!(criu = %criu.display(), "durable pause available");
        }
        None => tracing::warn!("no CRIU found: paused sandboxes stay in memory (see --criu)"),
    }
    let runtime =
        NamespaceRuntime::new(runtime_config).context("starting the namespace runtime")?;
    let sandbox_ids = coppice_core::runtime::Runtime::id_map(&runtime);
    let (net, network) = super::choose_network(
        config.network.mode,
        || Ok(Arc::new(bridge_network(config, sandbox_ids)?)),
        || Arc::new(LoopbackOnly::pooled(NETNS_POOL_SIZE, sandbox_ids)),
        "install iproute2, nftables and conntrack",
    )?;
    tracing::info!(
        runtime = "linux-namespaces",
        storage = "overlayfs",
        network,
        "backends chosen"
    );
    Ok(Backends {
        runtime: Arc::new(runtime),
        storage: Arc::new(storage),
        net,
    })
}
