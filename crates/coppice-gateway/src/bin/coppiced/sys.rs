//! Backend selection: the only place that names a backend crate.

use std::path::PathBuf;

use anyhow::Context;

#[cfg(target_os = "freebsd")]
mod freebsd;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
mod other;

#[cfg(target_os = "freebsd")]
pub(crate) use freebsd::{backends, run_as_sandbox_init};
#[cfg(target_os = "linux")]
pub(crate) use linux::{backends, run_as_sandbox_init};
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
pub(crate) use other::{backends, run_as_sandbox_init};

/// The sub-command under which `coppiced` acts as the sandbox init, used when no separate
/// init binary sits next to it.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
const INIT_SUBCOMMAND: &str = "__sandbox-init";
/// The sub-command under which `coppiced` acts as envd, used when no separate
/// `coppice-envd` binary sits next to it.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
const ENVD_SUBCOMMAND: &str = "__envd";

/// The network backend `mode` asks for: loopback only, the bridge (fatal when it cannot be
/// set up), or the bridge with loopback as the logged fallback (`fix` says how to get the
/// bridge). Returns it with its name for the log.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
fn choose_network(
    mode: coppice_gateway::config::NetworkMode,
    bridge: impl FnOnce() -> anyhow::Result<std::sync::Arc<dyn coppice_core::net::NetPolicy>>,
    loopback: impl FnOnce() -> std::sync::Arc<dyn coppice_core::net::NetPolicy>,
    fix: &str,
) -> anyhow::Result<(
    std::sync::Arc<dyn coppice_core::net::NetPolicy>,
    &'static str,
)> {
    use coppice_gateway::config::NetworkMode;
    Ok(match mode {
        NetworkMode::Loopback => (loopback(), "loopback-only"),
        NetworkMode::Bridge => (
            bridge().context(
                "setting up the sandbox bridge network (or start with --network loopback)",
            )?,
            "bridge",
        ),
        NetworkMode::Auto => match bridge() {
            Ok(network) => (network, "bridge"),
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "cannot set up the sandbox bridge network; sandboxes get loopback only \
                     ({fix}, or pass --network bridge to make this fatal)"
                );
                (loopback(), "loopback-only")
            }
        },
    })
}

/// The dedicated binary `name` next to this executable if present (smaller per sandbox),
/// otherwise this executable with `subcommand` as its first argument.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
fn helper_binary(name: &str, subcommand: &str) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let exe = std::env::current_exe().context("locating the coppiced executable")?;
    let sibling = exe.with_file_name(name);
    if sibling.is_file() {
        return Ok((sibling, Vec::new()));
    }
    Ok((exe, vec![subcommand.to_owned()]))
}

/// Runs the sandbox init (`init_main`) or envd instead of the daemon when the first argument
/// asks for either.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
fn run_helper(
    init_main: impl FnOnce(std::env::ArgsOs) -> std::process::ExitCode,
) -> Option<std::process::ExitCode> {
    let mut args = std::env::args_os();
    args.next();
    let first = args.next()?;
    if first == INIT_SUBCOMMAND {
        Some(init_main(args))
    } else if first == ENVD_SUBCOMMAND {
        Some(coppice_envd::cli::main(
            std::iter::once(std::ffi::OsString::from("coppice-envd")).chain(args),
        ))
    } else {
        None
    }
}
