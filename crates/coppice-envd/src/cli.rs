//! envd's command line: serves the envd API inside a sandbox, on the Unix socket the host
//! passed as standard input (or a path) and on TCP in the sandbox's network. Shared by the
//! `coppice-envd` binary and `coppiced`'s envd mode.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::{Envd, EnvdConfig, Exposure, router, server};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "coppice-envd",
    version,
    about = "The coppice in-sandbox daemon (E2B envd protocol)"
)]
struct Cli {
    /// Serve the host side on the listening Unix socket passed as standard input.
    #[arg(long, conflicts_with = "unix")]
    listen_stdin: bool,
    /// Serve the host side on a Unix socket bound at this path.
    #[arg(long)]
    unix: Option<PathBuf>,
    /// TCP port inside the sandbox's network (0 turns TCP off).
    #[arg(long, default_value_t = 49983)]
    port: u16,
    /// Address the TCP listener binds.
    #[arg(long, default_value = "0.0.0.0")]
    bind: std::net::IpAddr,
    /// User of requests that name none.
    #[arg(long, default_value = "user")]
    default_user: String,
    /// Working directory of requests that name none (default: the user's home).
    #[arg(long)]
    default_workdir: Option<PathBuf>,
    /// Where `passwd` and `group` are read.
    #[arg(long, default_value = "/etc")]
    etc: PathBuf,
    /// Sandbox id, exported as `E2B_SANDBOX_ID`.
    #[arg(long)]
    sandbox_id: Option<String>,
    /// Template id, exported as `E2B_TEMPLATE_ID`.
    #[arg(long)]
    template_id: Option<String>,
    /// Keep `/init`'s settings (the access token, variables) in this owner-only file, so that
    /// a restarted envd keeps them.
    #[arg(long)]
    state_file: Option<PathBuf>,
}

/// Runs envd with `args` (the first is the program name); returns when a listener fails.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    match try_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "envd exiting");
            ExitCode::FAILURE
        }
    }
}

fn try_main(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<()> {
    let cli = Cli::try_parse_from(args)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COPPICE_ENVD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // envd's own environment is the sandbox's: whoever starts it passes exactly that.
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter(|(key, _)| key != "COPPICE_ENVD_LOG")
        .collect();
    env.insert("E2B_SANDBOX".into(), "true".into());
    if let Some(id) = &cli.sandbox_id {
        env.insert("E2B_SANDBOX_ID".into(), id.clone());
    }
    if let Some(id) = &cli.template_id {
        env.insert("E2B_TEMPLATE_ID".into(), id.clone());
    }
    let config = EnvdConfig {
        etc_dir: cli.etc.clone(),
        default_user: cli.default_user.clone(),
        default_workdir: cli.default_workdir.clone(),
        env,
        state_file: cli.state_file.clone(),
        ..EnvdConfig::default()
    };
    // One thread runs every connection and process: envd is I/O-bound, and keeping a
    // request, its process's exit and the reply on one thread saves the cross-CPU wake-ups
    // that cost about 0.1 ms of each `Process/Start` on virtual CPUs. File bodies are read
    // and written on tokio's blocking pool, so large transfers do not stall it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(run(&cli, config))
}

async fn run(cli: &Cli, config: EnvdConfig) -> anyhow::Result<()> {
    let envd = Envd::new(config);
    let mut servers = tokio::task::JoinSet::new();
    let unix = if cli.listen_stdin {
        let fd = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicate standard input")?;
        Some(std::os::unix::net::UnixListener::from(fd))
    } else if let Some(path) = &cli.unix {
        let _ = std::fs::remove_file(path);
        Some(
            std::os::unix::net::UnixListener::bind(path)
                .with_context(|| format!("bind {}", path.display()))?,
        )
    } else {
        None
    };
    if let Some(listener) = unix {
        listener
            .set_nonblocking(true)
            .context("standard input is not a listening Unix socket")?;
        let listener = tokio::net::UnixListener::from_std(listener)
            .context("standard input is not a listening Unix socket")?;
        servers.spawn(server::serve_unix(listener, router(&envd, Exposure::Host)));
    }
    if cli.port != 0 {
        let listener = tokio::net::TcpListener::bind((cli.bind, cli.port))
            .await
            .with_context(|| format!("bind {}:{}", cli.bind, cli.port))?;
        servers.spawn(server::serve_tcp(
            listener,
            router(&envd, Exposure::Sandbox),
        ));
    }
    anyhow::ensure!(
        !servers.is_empty(),
        "nothing to serve: give --listen-stdin, --unix or a port"
    );
    while let Some(result) = servers.join_next().await {
        result
            .context("a listener task failed")?
            .context("a listener stopped")?;
    }
    Ok(())
}
