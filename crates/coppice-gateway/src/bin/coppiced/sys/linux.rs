//! Linux backends: namespaces runtime, overlayfs storage, loopback-only networking.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use coppice_core::manager::Backends;
use coppice_gateway::config::GatewayConfig;
use coppice_gateway::config::NetworkMode;
use coppice_linux::{EnvdSettings, IdMap, InitCommand, NamespaceRuntime, NamespaceRuntimeConfig};
use coppice_net::{BridgeConfig, BridgeNetwork, LoopbackOnly, RealNetnsSys};
use coppice_overlay::{OverlayConfig, OverlayStorage};

/// Network namespaces kept ready, so that creating one stays off the create path (enough
/// for a burst of 20 concurrent creates).
const NETNS_POOL_SIZE: usize = 24;

/// The sub-command under which `coppiced` acts as a sandbox init, used when no separate
/// `coppice-init` binary sits next to it.
const INIT_SUBCOMMAND: &str = "__sandbox-init";
/// The sub-command under which `coppiced` acts as envd, used when no separate
/// `coppice-envd` binary sits next to it.
const ENVD_SUBCOMMAND: &str = "__envd";

/// Runs the sandbox init or envd instead of the daemon when asked to.
pub(crate) fn run_as_sandbox_init() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    match args.next() {
        Some(first) if first == INIT_SUBCOMMAND => Some(coppice_linux::init_main(args)),
        Some(first) if first == ENVD_SUBCOMMAND => Some(coppice_envd::cli::main(
            std::iter::once(std::ffi::OsString::from("coppice-envd")).chain(args),
        )),
        _ => None,
    }
}

/// The dedicated envd binary next to this executable if present, otherwise this executable
/// in envd mode.
fn envd_settings() -> anyhow::Result<EnvdSettings> {
    let exe = std::env::current_exe().context("locating the coppiced executable")?;
    let sibling = exe.with_file_name("coppice-envd");
    if sibling.is_file() {
        return Ok(EnvdSettings::new(sibling));
    }
    let mut settings = EnvdSettings::new(exe);
    settings.leading_args = vec![ENVD_SUBCOMMAND.to_owned()];
    Ok(settings)
}

/// The dedicated init binary next to this executable if present (smaller per sandbox),
/// otherwise this executable in init mode.
fn init_command() -> anyhow::Result<InitCommand> {
    let exe = std::env::current_exe().context("locating the coppiced executable")?;
    let sibling = exe.with_file_name("coppice-init");
    if sibling.is_file() {
        return Ok(InitCommand::binary(sibling));
    }
    Ok(InitCommand {
        program: exe,
        leading_args: vec![INIT_SUBCOMMAND.to_owned()],
    })
}

/// The bridge network as configured.
fn bridge_network(config: &GatewayConfig) -> Result<BridgeNetwork, coppice_core::net::NetError> {
    let settings = &config.network;
    let mut bridge = BridgeConfig::new(&settings.bridge, config.net_dir());
    bridge.ipv4 = settings.ipv4;
    bridge.ipv6 = settings.ipv6;
    bridge.pool_size = NETNS_POOL_SIZE;
    bridge.dns_upstream = settings.dns_upstream;
    BridgeNetwork::start(bridge, Arc::new(RealNetnsSys))
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
    let mut runtime_config = NamespaceRuntimeConfig::new(config.run_dir(), init_command()?);
    runtime_config.id_map = id_map;
    runtime_config.envd = Some(envd_settings()?);
    let runtime =
        NamespaceRuntime::new(runtime_config).context("starting the namespace runtime")?;
    let loopback = || -> (Arc<dyn coppice_core::net::NetPolicy>, &'static str) {
        (
            Arc::new(LoopbackOnly::pooled(NETNS_POOL_SIZE)),
            "loopback-only",
        )
    };
    let (net, network) = match config.network.mode {
        NetworkMode::Loopback => loopback(),
        NetworkMode::Bridge => (
            Arc::new(bridge_network(config).context(
                "setting up the sandbox bridge network (or start with --network loopback)",
            )?) as Arc<dyn coppice_core::net::NetPolicy>,
            "bridge",
        ),
        NetworkMode::Auto => match bridge_network(config) {
            Ok(network) => (
                Arc::new(network) as Arc<dyn coppice_core::net::NetPolicy>,
                "bridge",
            ),
            Err(error) => {
                tracing::error!(
                    error = %coppice_core::manager::error_chain(&error),
                    "cannot set up the sandbox bridge network; sandboxes get loopback only \
                     (install iproute2, nftables and conntrack, or pass --network bridge to \
                     make this fatal)"
                );
                loopback()
            }
        },
    };
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
