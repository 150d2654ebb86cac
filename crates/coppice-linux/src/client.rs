//! The host side of the control socket: sends one request per connection to a sandbox init.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use coppice_core::exec::{ExecOutcome, ExecRequest, ExecUser, ExitStatus};

use crate::error::LinuxError;
use crate::protocol::{
    ControlRequest, ControlResponse, ExecIdentity, WireExit, read_header, read_payload, write_frame,
};

/// Extra time granted over a command's own timeout before the channel gives up.
const CHANNEL_MARGIN: Duration = Duration::from_secs(5);
/// Channel timeout for commands without a timeout of their own.
const UNBOUNDED_EXEC_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

fn identity(user: ExecUser) -> ExecIdentity {
    match user {
        ExecUser::Root => ExecIdentity {
            uid: 0,
            gid: 0,
            home: "/root".into(),
            name: "root".into(),
        },
        ExecUser::User => ExecIdentity {
            uid: 1000,
            gid: 1000,
            home: "/home/user".into(),
            name: "user".into(),
        },
    }
}

/// Runs `request` through the init listening on `socket`. Output longer than `output_limit`
/// per stream is a protocol violation (the init cuts at that limit), never an allocation.
pub(crate) fn exec(
    socket: &Path,
    request: &ExecRequest,
    output_limit: usize,
) -> Result<ExecOutcome, LinuxError> {
    let stream = UnixStream::connect(socket).map_err(LinuxError::Control)?;
    let wait = request
        .timeout
        .map_or(UNBOUNDED_EXEC_WAIT, |t| t.saturating_add(CHANNEL_MARGIN));
    stream
        .set_read_timeout(Some(wait))
        .map_err(LinuxError::Control)?;
    let header = ControlRequest::Exec {
        argv: request.argv.clone(),
        env: request.env.clone(),
        cwd: request.cwd.clone(),
        identity: identity(request.user),
        timeout_ms: request
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        stdin_len: request.stdin.len(),
    };
    let mut writer = &stream;
    write_frame(&mut writer, &header, &[&request.stdin]).map_err(LinuxError::Control)?;
    writer.flush().map_err(LinuxError::Control)?;
    let mut reader = BufReader::new(&stream);
    match read_header(&mut reader).map_err(LinuxError::Control)? {
        ControlResponse::Exited {
            status,
            stdout_len,
            stderr_len,
            truncated,
            timed_out,
        } => {
            if stdout_len > output_limit || stderr_len > output_limit {
                return Err(LinuxError::Control(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "sandbox init announced {stdout_len} + {stderr_len} bytes, over the {output_limit}-byte limit"
                    ),
                )));
            }
            let stdout = read_payload(&mut reader, stdout_len).map_err(LinuxError::Control)?;
            let stderr = read_payload(&mut reader, stderr_len).map_err(LinuxError::Control)?;
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
        ControlResponse::Refused { message } => Err(LinuxError::Refused { message }),
        ControlResponse::Pong => Err(LinuxError::Control(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "unexpected pong to an exec request",
        ))),
    }
}
