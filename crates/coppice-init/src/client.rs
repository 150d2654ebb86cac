//! The host side of the control socket: sends one request per connection to a sandbox init.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use coppice_core::exec::{ExecOutcome, ExecRequest, ExecUser, ExitStatus};

use crate::control::{
    ControlRequest, ControlResponse, ExecIdentity, WireExit, read_header, read_payload, write_frame,
};

/// Extra time granted over a command's own timeout before the channel gives up.
const CHANNEL_MARGIN: Duration = Duration::from_secs(5);
/// Channel timeout for commands without a timeout of their own.
const UNBOUNDED_EXEC_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

fn identity(user: &ExecUser) -> ExecIdentity {
    match user {
        ExecUser::Root => ExecIdentity {
            uid: 0,
            gid: 0,
            home: "/root".into(),
            name: "root".into(),
            look_up: false,
        },
        ExecUser::User => ExecIdentity {
            uid: 1000,
            gid: 1000,
            home: "/home/user".into(),
            name: "user".into(),
            look_up: false,
        },
        ExecUser::Named(name) => ExecIdentity {
            uid: 0,
            gid: 0,
            home: "/".into(),
            name: name.clone(),
            look_up: true,
        },
    }
}

/// Why a request over the control channel failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The channel failed: no init listens, it hung up, or it broke the protocol.
    #[error("control channel to the sandbox init failed")]
    Channel(#[source] std::io::Error),
    /// The init refused the request (e.g. the program does not exist).
    #[error("sandbox refused the command: {message}")]
    Refused {
        /// Why.
        message: String,
    },
}

/// [`exec`] for a runtime: an empty argv and a refusal are the caller's mistakes
/// (`Invalid`), any other failure is the runtime's (`Backend`, for sandbox `id`).
///
/// # Errors
/// As described.
pub fn exec_for(
    id: &coppice_core::SandboxId,
    socket: &Path,
    request: &ExecRequest,
    output_limit: usize,
) -> Result<ExecOutcome, coppice_core::runtime::RuntimeError> {
    use coppice_core::runtime::RuntimeError;
    if request.argv.is_empty() {
        return Err(RuntimeError::Invalid {
            what: "command",
            reason: "argv is empty".into(),
        });
    }
    exec(socket, request, output_limit).map_err(|error| match error {
        ControlError::Refused { message } => RuntimeError::Invalid {
            what: "command",
            reason: message,
        },
        error @ ControlError::Channel(_) => RuntimeError::Backend {
            op: "exec",
            id: id.clone(),
            source: Box::new(error),
        },
    })
}

/// Asks the init listening on `socket` whether it serves, waiting at most `timeout`.
///
/// # Errors
/// [`ControlError::Channel`] when nothing answers a pong in time.
pub fn ping(socket: &Path, timeout: Duration) -> Result<(), ControlError> {
    let pinned = crate::socket::pin(socket).map_err(ControlError::Channel)?;
    let stream = UnixStream::connect(pinned.path()).map_err(ControlError::Channel)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(ControlError::Channel)?;
    let mut writer = &stream;
    write_frame(&mut writer, &ControlRequest::Ping, &[]).map_err(ControlError::Channel)?;
    match read_header(&mut BufReader::new(&stream)).map_err(ControlError::Channel)? {
        ControlResponse::Pong => Ok(()),
        ControlResponse::Refused { message } => Err(ControlError::Refused { message }),
        ControlResponse::Exited { .. } => Err(ControlError::Channel(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "an exit status in answer to a ping",
        ))),
    }
}

/// Runs `request` through the init listening on `socket`. Output longer than `output_limit`
/// per stream is a protocol violation (the init cuts at that limit), never an allocation.
///
/// # Errors
/// [`ControlError`].
pub fn exec(
    socket: &Path,
    request: &ExecRequest,
    output_limit: usize,
) -> Result<ExecOutcome, ControlError> {
    let pinned = crate::socket::pin(socket).map_err(ControlError::Channel)?;
    let stream = UnixStream::connect(pinned.path()).map_err(ControlError::Channel)?;
    let wait = request
        .timeout
        .map_or(UNBOUNDED_EXEC_WAIT, |t| t.saturating_add(CHANNEL_MARGIN));
    stream
        .set_read_timeout(Some(wait))
        .map_err(ControlError::Channel)?;
    let header = ControlRequest::Exec {
        argv: request.argv.clone(),
        env: request.env.clone(),
        cwd: request.cwd.clone(),
        identity: identity(&request.user),
        timeout_ms: request
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        stdin_len: request.stdin.len(),
    };
    let mut writer = &stream;
    write_frame(&mut writer, &header, &[&request.stdin]).map_err(ControlError::Channel)?;
    writer.flush().map_err(ControlError::Channel)?;
    let mut reader = BufReader::new(&stream);
    match read_header(&mut reader).map_err(ControlError::Channel)? {
        ControlResponse::Exited {
            status,
            stdout_len,
            stderr_len,
            truncated,
            timed_out,
        } => {
            if stdout_len > output_limit || stderr_len > output_limit {
                return Err(ControlError::Channel(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "sandbox init announced {stdout_len} + {stderr_len} bytes, over the {output_limit}-byte limit"
                    ),
                )));
            }
            let stdout = read_payload(&mut reader, stdout_len).map_err(ControlError::Channel)?;
            let stderr = read_payload(&mut reader, stderr_len).map_err(ControlError::Channel)?;
            let status = match status {
                WireExit::Code(code) => ExitStatus::Code(code),
                WireExit::Signal(signal) => ExitStatus::Signal(signal),
            };
            Ok(ExecOutcome {
                status,
                stdout,
                stderr,
                truncated,
                timed_out,
            })
        }
        ControlResponse::Refused { message } => Err(ControlError::Refused { message }),
        ControlResponse::Pong => Err(ControlError::Channel(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "unexpected pong to an exec request",
        ))),
    }
}
