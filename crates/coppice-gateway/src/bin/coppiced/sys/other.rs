//! Hosts without a backend: coppiced runs sandboxes on Linux and FreeBSD only.

use std::process::ExitCode;

use coppice_core::manager::Backends;
use coppice_gateway::config::GatewayConfig;

pub(crate) fn run_as_sandbox_init() -> Option<ExitCode> {
    None
}

pub(crate) fn backends(_config: &GatewayConfig) -> anyhow::Result<Backends> {
    anyhow::bail!(
        "no isolation backend for {}; coppiced runs on Linux and FreeBSD",
        std::env::consts::OS
    )
}
