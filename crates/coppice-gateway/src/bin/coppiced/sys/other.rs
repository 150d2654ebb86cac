//! Hosts without a backend yet. The FreeBSD pieces (`coppice-jail`'s `JailHost`,
//! `coppice-zfs`'s `ZfsStorage`, `coppice-net`'s `PfNetwork`) exist, but no jail `Runtime`
//! starts a sandbox init yet, so coppiced cannot run sandboxes there.

use std::process::ExitCode;

use coppice_core::manager::Backends;
use coppice_gateway::config::GatewayConfig;

pub(crate) fn run_as_sandbox_init() -> Option<ExitCode> {
    None
}

pub(crate) fn backends(_config: &GatewayConfig) -> anyhow::Result<Backends> {
    anyhow::bail!(
        "no isolation backend for {} yet; coppiced runs on Linux",
        std::env::consts::OS
    )
}
