//! A command run to completion inside a sandbox over the runtime's control channel.
//!
//! This is the control path (health checks, ready checks, tests): bounded output, no streaming.
//! Interactive and streaming work goes to envd.

use std::time::Duration;

/// Which identity a command runs as inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecUser {
    /// uid 0 / gid 0 of the sandbox (an unprivileged id on the host).
    Root,
    /// The base template's unprivileged user (uid/gid 1000, home `/home/user`).
    User,
    /// A user of the sandbox by name (or uid), looked up in the sandbox's own `/etc/passwd`
    /// when the command starts (an imported image's user, say).
    Named(String),
}

/// One command to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// Program and arguments; `argv[0]` is looked up in `PATH` when it has no `/`.
    pub argv: Vec<String>,
    /// Extra environment variables, on top of the sandbox's own.
    pub env: Vec<(String, String)>,
    /// Working directory; the user's home when absent.
    pub cwd: Option<String>,
    /// Who runs it.
    pub user: ExecUser,
    /// Bytes written to stdin, then stdin is closed.
    pub stdin: Vec<u8>,
    /// Killed with SIGKILL when it runs longer.
    pub timeout: Option<Duration>,
}

impl ExecRequest {
    /// A request to run `argv` as root with no extra environment, no stdin and no timeout.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            cwd: None,
            user: ExecUser::Root,
            stdin: Vec::new(),
            timeout: None,
        }
    }

    /// The same request, run as `user`.
    #[must_use]
    pub fn as_user(self, user: ExecUser) -> Self {
        Self { user, ..self }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl ExitStatus {
    /// Whether it exited with code 0.
    pub fn success(self) -> bool {
        self == Self::Code(0)
    }
}

/// What a command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// How it ended.
    pub status: ExitStatus,
    /// Standard output, possibly truncated to the runtime's capture limit.
    pub stdout: Vec<u8>,
    /// Standard error, possibly truncated to the runtime's capture limit.
    pub stderr: Vec<u8>,
    /// Whether output beyond the capture limit was dropped.
    pub truncated: bool,
    /// Whether it was killed because it ran past its timeout.
    pub timed_out: bool,
}
