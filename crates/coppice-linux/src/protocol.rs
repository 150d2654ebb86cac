//! Messages between the runtime (in the daemon) and the sandbox init.
//!
//! 1. The runtime writes an [`InitConfig`] as JSON to `<run dir>/init.json` and starts
//!    `coppice-init --config <that file>`.
//! 2. The outer init prints one [`ReadyMessage`] JSON line on stdout and exits.
//! 3. The control socket then speaks one request per connection: a [`ControlRequest`] JSON
//!    line followed by `stdin_len` raw bytes; the answer is a [`ControlResponse`] JSON line
//!    followed by `stdout_len` then `stderr_len` raw bytes. Raw framing keeps megabytes of
//!    output out of JSON.

use std::io::{self, BufRead, Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Version of [`InitConfig`]; the init refuses others.
pub const INIT_CONFIG_VERSION: u32 = 1;

/// Longest accepted JSON header line on the control socket.
pub const MAX_HEADER_BYTES: usize = 1 << 20;

/// Everything the init needs to build one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitConfig {
    /// Must equal [`INIT_CONFIG_VERSION`].
    pub version: u32,
    /// The sandbox id, for logs.
    pub sandbox_id: String,
    /// Hostname inside the sandbox.
    pub hostname: String,
    /// The directory the root is assembled in before `pivot_root`.
    pub rootfs: PathBuf,
    /// Mount steps, in order, with targets relative to `rootfs`.
    pub mounts: Vec<MountStep>,
    /// `cgroup.procs` files to join before forking.
    pub cgroup_procs: Vec<PathBuf>,
    /// The control socket to bind and serve.
    pub control_socket: PathBuf,
    /// How to get a network namespace.
    pub network: NetworkSetup,
    /// Host uid of sandbox uid 0.
    pub host_uid_base: u32,
    /// Host gid of sandbox gid 0.
    pub host_gid_base: u32,
    /// Mapped id count.
    pub id_count: u32,
    /// Environment for every command.
    pub env: Vec<(String, String)>,
    /// Most bytes of stdout and of stderr kept per exec.
    pub exec_output_limit: usize,
    /// The in-sandbox daemon PID 1 starts and keeps running, if any.
    #[serde(default)]
    pub envd: Option<EnvdLaunch>,
    /// Written to the root's `/etc/resolv.conf` before the sandbox starts, unless the
    /// sandbox made that path a link or a directory.
    #[serde(default)]
    pub resolv_conf: Option<String>,
}

/// How PID 1 runs envd: the host binary is opened before `pivot_root` and executed from that
/// descriptor, so nothing of it needs to exist inside the sandbox's root; its listening Unix
/// socket (bound on the host side) is its standard input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvdLaunch {
    /// The envd executable on the host.
    pub binary: PathBuf,
    /// Where its host-side Unix socket is bound.
    pub socket: PathBuf,
    /// Its arguments (after the program name).
    pub args: Vec<String>,
}

/// Where the sandbox's network namespace comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NetworkSetup {
    /// A fresh namespace with loopback up.
    Loopback,
    /// Join a prepared namespace.
    Join {
        /// A namespace file (e.g. a bind mount of `/proc/<pid>/ns/net`).
        path: PathBuf,
    },
}

/// One step of building the sandbox's root. Paths named `target` are relative to the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MountStep {
    /// overlayfs onto the root itself.
    Overlay {
        /// Read-only layers, topmost first.
        lower: Vec<PathBuf>,
        /// Writable layer.
        upper: PathBuf,
        /// overlayfs work dir.
        work: PathBuf,
    },
    /// A bind mount of a host directory or file.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Target, relative to the root.
        target: PathBuf,
        /// Remount read-only (and nosuid, nodev).
        read_only: bool,
        /// Create the target directory (and its parents) when missing, as for a volume.
        #[serde(default)]
        create_target: bool,
    },
    /// A character device bound from the host's `/dev` onto an empty file.
    DevNode {
        /// Host device node.
        source: PathBuf,
        /// Target, relative to the root.
        target: PathBuf,
    },
    /// procfs of the sandbox's PID namespace.
    Proc {
        /// Target, relative to the root.
        target: PathBuf,
    },
    /// A private devpts instance.
    Devpts {
        /// Target, relative to the root.
        target: PathBuf,
    },
    /// tmpfs.
    Tmpfs {
        /// Target, relative to the root.
        target: PathBuf,
        /// Mount data, e.g. `mode=1777,size=64m`.
        data: String,
        /// Whether executables may run from it.
        noexec: bool,
        /// Whether device nodes work on it.
        nodev: bool,
    },
    /// A symlink created inside the root.
    Symlink {
        /// The link, relative to the root.
        link: PathBuf,
        /// What it points to.
        points_to: PathBuf,
    },
}

/// The outer init's one-line report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadyMessage {
    /// The sandbox runs; its PID 1 has this host pid.
    Ready {
        /// Host pid of the sandbox's PID 1.
        pid: i32,
    },
    /// Building the sandbox failed.
    Failed {
        /// What failed, with its cause.
        error: String,
    },
}

/// Who a command runs as, in sandbox ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecIdentity {
    /// uid inside the sandbox.
    pub uid: u32,
    /// gid inside the sandbox.
    pub gid: u32,
    /// `HOME`, and the default working directory.
    pub home: String,
    /// `USER` and `LOGNAME`.
    pub name: String,
}

/// A request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Liveness check.
    Ping,
    /// Run a command to completion.
    Exec {
        /// Program and arguments.
        argv: Vec<String>,
        /// Extra environment.
        env: Vec<(String, String)>,
        /// Working directory; `home` when absent.
        cwd: Option<String>,
        /// Who runs it.
        identity: ExecIdentity,
        /// SIGKILL after this many milliseconds.
        timeout_ms: Option<u64>,
        /// Bytes of stdin that follow the header.
        stdin_len: usize,
    },
}

/// How a command ended, on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireExit {
    /// Exit code.
    Code(i32),
    /// Killing signal.
    Signal(i32),
}

/// An answer on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ControlResponse {
    /// Answer to `Ping`.
    Pong,
    /// Answer to `Exec`; raw stdout then stderr bytes follow.
    Exited {
        /// How it ended.
        status: WireExit,
        /// Bytes of stdout that follow.
        stdout_len: usize,
        /// Bytes of stderr that follow.
        stderr_len: usize,
        /// Output was cut at the limit.
        truncated: bool,
        /// It was killed for running too long.
        timed_out: bool,
    },
    /// The request could not be carried out (e.g. the program does not exist).
    Refused {
        /// Why.
        message: String,
    },
}

/// Writes a JSON header line followed by raw payloads.
///
/// # Errors
/// I/O or serialisation failure.
pub fn write_frame<W: Write, T: Serialize>(
    writer: &mut W,
    header: &T,
    payloads: &[&[u8]],
) -> io::Result<()> {
    let mut line = serde_json::to_vec(header).map_err(io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line)?;
    for payload in payloads {
        writer.write_all(payload)?;
    }
    writer.flush()
}

/// Reads a JSON header line of at most [`MAX_HEADER_BYTES`].
///
/// # Errors
/// I/O failure, an over-long line, or JSON that does not match `T`.
pub fn read_header<R: BufRead, T: for<'de> Deserialize<'de>>(reader: &mut R) -> io::Result<T> {
    let mut line = Vec::new();
    let read = reader
        .take(MAX_HEADER_BYTES as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if read == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a header",
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "header line too long or unterminated",
        ));
    }
    serde_json::from_slice(&line).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

/// Reads exactly `len` payload bytes.
///
/// # Errors
/// I/O failure or early end of stream.
pub fn read_payload<R: Read>(reader: &mut R, len: usize) -> io::Result<Vec<u8>> {
    let mut payload = vec![0; len];
    reader.read_exact(&mut payload)?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use super::*;

    #[test]
    fn test_frame_round_trip_with_payloads() {
        let header = ControlResponse::Exited {
            status: WireExit::Code(3),
            stdout_len: 2,
            stderr_len: 1,
            truncated: false,
            timed_out: false,
        };
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &header, &[b"hi", b"\n"]).unwrap();
        let mut reader = BufReader::new(buffer.as_slice());
        let decoded: ControlResponse = read_header(&mut reader).unwrap();
        assert_eq!(decoded, header);
        assert_eq!(read_payload(&mut reader, 2).unwrap(), b"hi");
        assert_eq!(read_payload(&mut reader, 1).unwrap(), b"\n");
    }

    #[test]
    fn test_read_header_rejects_unterminated_line() {
        let mut reader = BufReader::new(&b"{\"kind\":\"ping\"}"[..]);
        let err = read_header::<_, ControlRequest>(&mut reader).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn test_read_header_rejects_unknown_kind() {
        let mut reader = BufReader::new(&b"{\"kind\":\"reboot\"}\n"[..]);
        assert!(read_header::<_, ControlRequest>(&mut reader).is_err());
    }
}
