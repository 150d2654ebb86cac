//! The control channel between a runtime (in the daemon) and a sandbox init: one request per
//! connection, a [`ControlRequest`] JSON line followed by `stdin_len` raw bytes; the answer is
//! a [`ControlResponse`] JSON line followed by `stdout_len` then `stderr_len` raw bytes. Raw
//! framing keeps megabytes of output out of JSON.

use std::io::{self, BufRead, Read, Write};

use serde::{Deserialize, Serialize};

/// Longest accepted JSON header line on the control socket.
pub const MAX_HEADER_BYTES: usize = 1 << 20;

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
    /// Whether the init looks `name` up in the sandbox's `/etc/passwd` (the other fields
    /// are then ignored).
    #[serde(default)]
    pub look_up: bool,
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
