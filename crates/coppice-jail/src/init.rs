//! The jail init: the first process of a sandbox's jail. The runtime starts it already inside
//! the jail with a launch channel as standard input ([`crate::launch`]); it takes its
//! descriptors from there, serves the control socket, runs envd, reports, and then reaps its
//! children for as long as the jail lives.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::process::ExitCode;

use coppice_init::envd::{self, PreparedEnvd};
use coppice_init::server;

use crate::launch::{InitReport, JailInitConfig, receive_config, send_report};

/// Runs the jail init; returns only when it could not start.
pub fn init_main() -> ExitCode {
    let channel = match take_channel() {
        Ok(channel) => channel,
        Err(error) => {
            // Nobody can be told through the channel; stderr is all there is.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("coppice-jail-init: {error}");
            }
            return ExitCode::FAILURE;
        }
    };
    let shared = match receive_config(&channel)
        .map_err(|e| format!("cannot read the launch message: {e}"))
        .and_then(|(config, fds)| start(config, fds))
    {
        Ok(shared) => shared,
        Err(error) => {
            let _ = send_report(&channel, &InitReport::Failed { error });
            return ExitCode::FAILURE;
        }
    };
    if send_report(&channel, &InitReport::Ready).is_err() {
        // The runtime gave up on this start and will remove the jail; nobody would reach us.
        return ExitCode::FAILURE;
    }
    drop(channel);
    server::reap_forever(&shared)
}

/// The launch channel (standard input), with `/dev/null` put in its place so that commands
/// never inherit it.
fn take_channel() -> Result<OwnedFd, String> {
    // Close-on-exec, so neither envd nor any command inherits it.
    let channel = rustix::io::fcntl_dupfd_cloexec(std::io::stdin(), 0)
        .map_err(|e| format!("no launch channel: {e}"))?;
    let null = File::open("/dev/null").map_err(|e| format!("cannot open /dev/null: {e}"))?;
    rustix::stdio::dup2_stdin(&null).map_err(|e| format!("cannot replace stdin: {e}"))?;
    Ok(channel)
}

fn start(
    config: JailInitConfig,
    fds: Vec<OwnedFd>,
) -> Result<std::sync::Arc<server::Shared>, String> {
    let expected = if config.envd_args.is_some() { 3 } else { 1 };
    if fds.len() != expected {
        return Err(format!(
            "{} descriptors in the launch message, {expected} expected",
            fds.len()
        ));
    }
    // A session of its own: no signal aimed at the daemon's group reaches the sandbox.
    let _ = rustix::process::setsid();
    let mut fds = fds.into_iter();
    let control = fds.next().map(UnixListener::from);
    let envd_listener = fds.next().map(UnixListener::from);
    let envd_binary = fds.next().map(File::from);
    let control = control.ok_or("no control listener")?;
    let shared = server::start(config.env.clone(), config.exec_output_limit, control)?;
    if let (Some(args), Some(listener), Some(binary)) =
        (config.envd_args, envd_listener, envd_binary)
    {
        envd::start(
            &shared,
            PreparedEnvd::from_parts(binary, listener, args),
            config.env,
        )?;
    }
    Ok(shared)
}
