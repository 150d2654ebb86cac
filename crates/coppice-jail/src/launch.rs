//! How the runtime hands a new jail init its work: one message on a `SOCK_SEQPACKET` pair
//! that is the init's standard input, carrying a [`JailInitConfig`] as JSON and, as
//! `SCM_RIGHTS`, the descriptors the host opened for it (the control socket's listener, then
//! envd's listener and binary). The init answers with one [`InitReport`] on the same pair.
//!
//! Passing descriptors keeps every host path out of the jail: the init never opens anything
//! on the host side, and nothing inside the jail leads back to the sockets' directory.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType, recvmsg, sendmsg, socketpair,
    sockopt,
};
use serde::{Deserialize, Serialize};

/// Version of [`JailInitConfig`]; the init refuses others.
pub const JAIL_INIT_VERSION: u32 = 1;
/// Largest message either side sends (the environment dominates).
const MAX_MESSAGE: usize = 1 << 20;
/// Most descriptors one message carries.
const MAX_FDS: usize = 3;

/// What the jail init needs besides its descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailInitConfig {
    /// Must equal [`JAIL_INIT_VERSION`].
    pub version: u32,
    /// The sandbox id, for logs.
    pub sandbox_id: String,
    /// Environment of every command and of envd.
    pub env: Vec<(String, String)>,
    /// Most bytes of stdout and of stderr kept per exec.
    pub exec_output_limit: usize,
    /// envd's arguments when envd runs (its listener and binary then follow the control
    /// listener among the descriptors).
    pub envd_args: Option<Vec<String>>,
}

/// The init's one answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitReport {
    /// It serves the control socket (and envd runs).
    Ready,
    /// It could not start; nothing of it runs.
    Failed {
        /// Why.
        error: String,
    },
}

/// A connected `SOCK_SEQPACKET` pair: (the runtime's end, the init's end).
///
/// # Errors
/// `socketpair` failed.
pub fn channel() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

fn send_message(channel: &OwnedFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if bytes.len() > MAX_MESSAGE || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "launch message too large",
        ));
    }
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("no room for the descriptors"));
    }
    let sent = sendmsg(
        channel,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::empty(),
    )?;
    if sent == bytes.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "launch message cut",
        ))
    }
}

fn receive_message(channel: &OwnedFd) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut bytes = vec![0u8; MAX_MESSAGE];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = recvmsg(
        channel,
        &mut [IoSliceMut::new(&mut bytes)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received_fds) = message {
            fds.extend(received_fds);
        }
    }
    if received
        .flags
        .intersects(rustix::net::ReturnFlags::TRUNC | rustix::net::ReturnFlags::CTRUNC)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "launch message truncated",
        ));
    }
    if received.bytes == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the other side closed the launch channel",
        ));
    }
    bytes.truncate(received.bytes);
    Ok((bytes, fds))
}

fn invalid(error: serde_json::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// Sends `config` and `fds` (the control listener, then envd's listener and binary).
///
/// # Errors
/// The init is gone, or the message is too large.
pub fn send_config(
    channel: &OwnedFd,
    config: &JailInitConfig,
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    send_message(channel, &serde_json::to_vec(config).map_err(invalid)?, fds)
}

/// Receives the config and descriptors [`send_config`] sent.
///
/// # Errors
/// The channel failed, or the message is not a config of this version.
pub fn receive_config(channel: &OwnedFd) -> io::Result<(JailInitConfig, Vec<OwnedFd>)> {
    let (bytes, fds) = receive_message(channel)?;
    let config: JailInitConfig = serde_json::from_slice(&bytes).map_err(invalid)?;
    if config.version != JAIL_INIT_VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "jail init config version {} (this init speaks {JAIL_INIT_VERSION})",
                config.version
            ),
        ));
    }
    Ok((config, fds))
}

/// Sends the init's answer.
///
/// # Errors
/// The runtime is gone.
pub fn send_report(channel: &impl AsFd, report: &InitReport) -> io::Result<()> {
    let bytes = serde_json::to_vec(report).map_err(invalid)?;
    let sent = rustix::net::send(channel, &bytes, SendFlags::empty())?;
    if sent == bytes.len() {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::WriteZero, "report cut"))
    }
}

/// Waits up to `timeout` for the init's answer.
///
/// # Errors
/// `WouldBlock`/`TimedOut` when none came in time, `UnexpectedEof` when the init died first.
pub fn receive_report(channel: &OwnedFd, timeout: Duration) -> io::Result<InitReport> {
    sockopt::set_socket_timeout(channel, sockopt::Timeout::Recv, Some(timeout))?;
    let (bytes, fds) = receive_message(channel)?;
    if !fds.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "descriptors in the init's report",
        ));
    }
    serde_json::from_slice(&bytes).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, Write};

    use super::*;

    fn config() -> JailInitConfig {
        JailInitConfig {
            version: JAIL_INIT_VERSION,
            sandbox_id: "a1".into(),
            env: vec![("LANG".into(), "C.UTF-8".into())],
            exec_output_limit: 1024,
            envd_args: Some(vec!["--port".into(), "49983".into()]),
        }
    }

    #[test]
    fn test_the_config_and_its_descriptors_arrive_together() {
        let (runtime, init) = channel().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"passed").unwrap();
        send_config(&runtime, &config(), &[file.as_fd()]).unwrap();
        let (received, fds) = receive_config(&init).unwrap();
        assert_eq!(received, config());
        assert_eq!(fds.len(), 1);
        let mut passed = std::fs::File::from(fds.into_iter().next().unwrap());
        passed.rewind().unwrap();
        let mut text = String::new();
        passed.read_to_string(&mut text).unwrap();
        assert_eq!(text, "passed");

        send_report(&init, &InitReport::Ready).unwrap();
        assert_eq!(
            receive_report(&runtime, Duration::from_secs(1)).unwrap(),
            InitReport::Ready
        );
    }

    #[test]
    fn test_a_config_of_another_version_is_refused() {
        let (runtime, init) = channel().unwrap();
        let mut other = config();
        other.version = 99;
        send_config(&runtime, &other, &[]).unwrap();
        let error = receive_config(&init).unwrap_err();
        assert!(error.to_string().contains("version 99"), "{error}");
    }

    #[test]
    fn test_a_silent_or_dead_init_is_reported_not_awaited_forever() {
        let (runtime, init) = channel().unwrap();
        let error = receive_report(&runtime, Duration::from_millis(50)).unwrap_err();
        assert!(
            matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{error:?}"
        );
        drop(init);
        let error = receive_report(&runtime, Duration::from_secs(1)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
