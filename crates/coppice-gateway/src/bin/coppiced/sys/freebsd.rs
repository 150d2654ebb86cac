//! FreeBSD backends: VNET jails for file-system templates and bhyve VMs for volume templates
//! (one runtime per root kind, `ByRoot`), ZFS clones, and pf anchors on a bridge.
//! Type-checked from Linux; not yet run on FreeBSD (see docs/freebsd.md).

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use coppice_bhyve::{BhyveSys, HostBhyveSys, VmPoolConfig, VmRuntime, VmRuntimeConfig};
use coppice_core::manager::Backends;
use coppice_core::runtime::ByRoot;
use coppice_gateway::config::GatewayConfig;
use coppice_jail::release::HostRelease;
use coppice_jail::{
    EnvdSettings, HostJailSys, JailInitProgram, JailRuntime, JailRuntimeConfig, JailSys,
};
use coppice_net::{BridgeConfig, CommandPfSys, LoopbackOnly, PfNetwork};
use coppice_zfs::{CommandZfs, DatasetName, ZfsLayout, ZfsStorage, ZfsSys};

/// Runs the jail init or envd instead of the daemon when asked to.
pub(crate) fn run_as_sandbox_init() -> Option<ExitCode> {
    super::run_helper(|_| coppice_jail::init_main())
}

/// Refuses a kernel without the jail fixes coppice relies on.
fn check_release() -> anyhow::Result<()> {
    let output = Command::new("uname")
        .arg("-r")
        .output()
        .context("running uname -r")?;
    let text = String::from_utf8_lossy(&output.stdout);
    HostRelease::parse(&text)?.check()?;
    Ok(())
}

fn pf_network(config: &GatewayConfig) -> anyhow::Result<PfNetwork> {
    let settings = &config.network;
    let mut bridge = BridgeConfig::new(&settings.bridge, config.net_dir());
    bridge.ipv4 = settings.ipv4;
    bridge.ipv6 = settings.ipv6;
    bridge.dns_upstream = settings.dns_upstream;
    Ok(PfNetwork::start(bridge, Arc::new(CommandPfSys::default()))?)
}

/// The VM runtime's settings: its records beside the jails', and the warm pool if asked for.
fn vm_config(config: &GatewayConfig, dataset: &DatasetName) -> anyhow::Result<VmRuntimeConfig> {
    let mut vm = VmRuntimeConfig::new(config.data_dir.join("vms"));
    let defaults = coppice_core::SandboxSpec::new("base".parse().context("a template id")?);
    vm.pool = config
        .vm_pool
        .as_ref()
        .map(|(template, target)| VmPoolConfig {
            origin: format!("{dataset}/templates/{template}@template"),
            dataset: format!("{dataset}/vmpool"),
            target: *target,
            vcpus: defaults.vcpus,
            memory_mb: defaults.memory_mb,
            settle: Duration::from_secs(20),
        });
    Ok(vm)
}

pub(crate) fn backends(config: &GatewayConfig) -> anyhow::Result<Backends> {
    check_release().context("checking the host's FreeBSD release")?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;

    let dataset = DatasetName::parse(&config.zfs_dataset).context("--zfs-dataset")?;
    let storage = ZfsStorage::open(
        ZfsLayout::new(dataset.clone(), config.storage_dir()),
        Arc::new(CommandZfs) as Arc<dyn ZfsSys>,
    )
    .context("opening ZFS storage")?;

    let (program, leading_args) =
        super::helper_binary("coppice-jail-init", super::INIT_SUBCOMMAND)?;
    let (envd_binary, envd_leading_args) =
        super::helper_binary("coppice-envd", super::ENVD_SUBCOMMAND)?;
    let mut runtime_config = JailRuntimeConfig::new(
        config.run_dir(),
        JailInitProgram {
            program,
            leading_args,
        },
    );
    let mut envd = EnvdSettings::new(envd_binary);
    envd.leading_args = envd_leading_args;
    runtime_config.envd = Some(envd);
    let jails = JailRuntime::new(Arc::new(HostJailSys) as Arc<dyn JailSys>, runtime_config)
        .context("starting the jail runtime")?;
    let vms = VmRuntime::new(
        Arc::new(HostBhyveSys) as Arc<dyn BhyveSys>,
        vm_config(config, &dataset)?,
    )
    .context("starting the VM runtime")?;
    let runtime = ByRoot::new(Arc::new(jails), Arc::new(vms)).context("listing sandboxes")?;

    let (net, network) = super::choose_network(
        config.network.mode,
        || Ok(Arc::new(pf_network(config)?)),
        || Arc::new(LoopbackOnly::default()),
        "add the pf.conf lines of docs/freebsd.md",
    )?;
    tracing::info!(
        runtime = "freebsd-jails-and-bhyve",
        storage = "zfs",
        network,
        "backends chosen"
    );
    Ok(Backends {
        runtime: Arc::new(runtime),
        storage: Arc::new(storage),
        net,
    })
}
