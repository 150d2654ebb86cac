//! `coppiced`: the coppice gateway daemon.
//!
//! Started with no arguments it runs with embedded defaults: data in `/var/lib/coppice`, the
//! `base` template built on first start, the API on `127.0.0.1:3000`.
#![forbid(unsafe_code)]

mod shipped;
mod sys;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use coppice_core::SandboxManager;
use coppice_core::clock::SystemClock;
use coppice_core::manager::ManagerConfig;
use coppice_core::store::Store;
use coppice_gateway::auth::{ApiKeys, KeySource};
use coppice_gateway::config::{Cli, GatewayConfig, ShippedTemplates};
use coppice_gateway::{AppState, router, serve};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    if let Some(code) = sys::run_as_sandbox_init() {
        return code;
    }
    let cli = Cli::parse();
    init_tracing(cli.log_filter.as_deref());
    match try_main(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "coppiced exiting");
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {error:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(flag: Option<&str>) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(flag.unwrap_or("info,tower_http=warn")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn try_main(cli: &Cli) -> anyhow::Result<()> {
    let config = GatewayConfig::from_cli(cli).context("validating configuration")?;
    if cli.print_config {
        #[allow(clippy::print_stdout)]
        {
            println!("{config:#?}");
        }
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    runtime.block_on(run(config, cli.api_key.clone()))
}

async fn run(config: GatewayConfig, api_key: Option<String>) -> anyhow::Result<()> {
    let backends = sys::backends(&config).context("initialising isolation backends")?;
    let store = Store::open(&config.state_db()).context("opening the state database")?;
    let manager = SandboxManager::start(
        ManagerConfig {
            durable_pause_after: config.durable_pause_after,
            durable_pause_memory_low: config.durable_pause_memory_low,
            ..ManagerConfig::default()
        },
        backends,
        store,
        Arc::new(SystemClock),
    )
    .await
    .context("starting the sandbox manager")?;
    if config.shipped_templates == ShippedTemplates::Build {
        shipped::build_in_background(manager.clone());
    }
    let (api_keys, key, source) = ApiKeys::load_or_generate(api_key.as_deref(), &config.data_dir)
        .context("setting up the API key")?;
    match source {
        KeySource::Generated => {
            #[allow(clippy::print_stdout)]
            {
                println!(
                    "coppiced: generated an admin API key (kept in {}):\n  E2B_API_KEY={key}",
                    config
                        .data_dir
                        .join(coppice_gateway::auth::ADMIN_KEY_FILE)
                        .display()
                );
            }
        }
        KeySource::File => tracing::info!(
            file = %config.data_dir.join(coppice_gateway::auth::ADMIN_KEY_FILE).display(),
            "API key read from the data dir"
        ),
        KeySource::Environment => tracing::info!("API key taken from COPPICE_API_KEY"),
    }
    let state = AppState {
        manager,
        api_keys,
        envd_version: coppice_envd::ENVD_VERSION,
        envd_init: Arc::new(coppice_gateway::envd::UnixEnvdInit),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(listen = %config.listen, data_dir = %config.data_dir.display(), "coppiced listening");
    serve(listener, router(state), shutdown_signal())
        .await
        .context("serving HTTP")?;
    tracing::info!("coppiced stopped; sandboxes keep running and are re-adopted at the next start");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
