//! A started program as envd holds it: the way to wait for its end, and (for the pipe case)
//! how it is started. On Linux a program with pipes is started by the vfork-style spawn of
//! `sys::spawn` and waited for through its pidfd; a terminal, and every program elsewhere,
//! goes through `tokio::process`.

use std::io;
use std::process::ExitStatus;

use tokio::net::unix::pipe;

/// How to wait for a started program.
#[derive(Debug)]
pub enum Child {
    /// Started by `tokio::process` (terminals; platforms without the vfork-style spawn).
    Tokio(tokio::process::Child),
    /// Started by `sys::spawn`; its pidfd turns readable when it exits.
    #[cfg(target_os = "linux")]
    Pidfd(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>),
}

impl Child {
    /// Waits for the program to end and reaps it.
    ///
    /// # Errors
    /// I/O errors from waiting.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            Self::Tokio(child) => child.wait().await,
            #[cfg(target_os = "linux")]
            Self::Pidfd(pidfd) => wait_pidfd(pidfd).await,
        }
    }
}

#[cfg(target_os = "linux")]
async fn wait_pidfd(
    pidfd: &tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
) -> io::Result<ExitStatus> {
    use std::os::fd::AsFd;
    use std::os::unix::process::ExitStatusExt;

    use rustix::process::{WaitId, WaitIdOptions};

    loop {
        let mut ready = pidfd.readable().await?;
        let waited = rustix::process::waitid(
            WaitId::PidFd(pidfd.get_ref().as_fd()),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        )?;
        let Some(status) = waited else {
            ready.clear_ready();
            continue;
        };
        // Rebuilt as the wait(2) status word, so it reads like any other ExitStatus.
        let raw = if let Some(code) = status.exit_status() {
            (code & 0xff) << 8
        } else if let Some(signal) = status.terminating_signal() {
            signal | if status.dumped() { 0x80 } else { 0 }
        } else {
            0
        };
        return Ok(ExitStatus::from_raw(raw));
    }
}

/// A program started with pipes: its pid, how to wait for it, and the parent's pipe ends.
#[derive(Debug)]
pub struct Piped {
    /// Its pid.
    pub pid: u32,
    /// How to wait for it.
    pub child: Child,
    /// The write end of its stdin, when stdin was requested.
    pub stdin: Option<pipe::Sender>,
    /// The read end of its stdout.
    pub stdout: pipe::Receiver,
    /// The read end of its stderr.
    pub stderr: pipe::Receiver,
}

/// What to start with pipes.
#[derive(Debug)]
pub struct PipedSpec<'a> {
    /// The program, a path or a name looked up in the `PATH` of `env`.
    pub cmd: &'a str,
    /// Its arguments.
    pub args: &'a [String],
    /// Its whole environment.
    pub env: &'a [(String, String)],
    /// Its working directory.
    pub cwd: &'a std::path::Path,
    /// `(uid, gid)` to switch to; `None` keeps envd's identity.
    pub switch_to: Option<(u32, u32)>,
    /// Whether stdin is a pipe (else `/dev/null`).
    pub stdin: bool,
}

/// Starts `spec` in its own process group with piped output.
///
/// # Errors
/// `NotFound` / `PermissionDenied` when the program cannot be run; other I/O errors.
#[cfg(target_os = "linux")]
pub fn spawn_piped(spec: &PipedSpec<'_>) -> io::Result<Piped> {
    use std::ffi::CString;
    use std::os::fd::AsFd;
    use std::os::unix::ffi::OsStrExt;

    use crate::sys::spawn::{Credentials, Request};

    let c_string = |text: &[u8]| {
        CString::new(text).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "arguments, environment and paths cannot contain NUL",
            )
        })
    };
    let path = spec
        .env
        .iter()
        .rev()
        .find(|(name, _)| name == "PATH")
        .map_or(super::spawn::DEFAULT_PATH, |(_, value)| value.as_str());
    let candidates = program_candidates(spec.cmd, path)
        .iter()
        .map(|candidate| c_string(candidate.as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let argv = std::iter::once(spec.cmd)
        .chain(spec.args.iter().map(String::as_str))
        .map(|arg| c_string(arg.as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let envp = spec
        .env
        .iter()
        .map(|(name, value)| c_string(format!("{name}={value}").as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let cwd = c_string(spec.cwd.as_os_str().as_bytes())?;

    let flags = rustix::pipe::PipeFlags::CLOEXEC;
    let (stdin_read, stdin_write) = if spec.stdin {
        let (read, write) = rustix::pipe::pipe_with(flags)?;
        (read, Some(write))
    } else {
        let null = rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        (null, None)
    };
    let (stdout_read, stdout_write) = rustix::pipe::pipe_with(flags)?;
    let (stderr_read, stderr_write) = rustix::pipe::pipe_with(flags)?;
    let spawned = crate::sys::spawn::spawn(&Request {
        candidates: &candidates,
        argv: &argv,
        envp: &envp,
        cwd: &cwd,
        credentials: spec.switch_to.map(|(uid, gid)| Credentials { uid, gid }),
        stdio: [
            stdin_read.as_fd(),
            stdout_write.as_fd(),
            stderr_write.as_fd(),
        ],
    })?;
    drop((stdin_read, stdout_write, stderr_write));
    Ok(Piped {
        pid: spawned.pid,
        child: Child::Pidfd(crate::sys::spawn::watch_pidfd(spawned.pidfd)?),
        stdin: stdin_write.map(pipe::Sender::from_owned_fd).transpose()?,
        stdout: pipe::Receiver::from_owned_fd(stdout_read)?,
        stderr: pipe::Receiver::from_owned_fd(stderr_read)?,
    })
}

/// The paths `execvp` would try for `cmd`: itself when it names a path, else each `PATH`
/// entry (an empty entry meaning the working directory).
#[must_use]
pub fn program_candidates(cmd: &str, path: &str) -> Vec<String> {
    if cmd.is_empty() {
        return Vec::new();
    }
    if cmd.contains('/') {
        return vec![cmd.to_owned()];
    }
    path.split(':')
        .map(|dir| {
            if dir.is_empty() {
                cmd.to_owned()
            } else {
                format!("{}/{cmd}", dir.trim_end_matches('/'))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_program_candidates_follow_execvp() {
        assert_eq!(program_candidates("/bin/sh", "/usr/bin"), vec!["/bin/sh"]);
        assert_eq!(program_candidates("./run", "/usr/bin"), vec!["./run"]);
        assert_eq!(
            program_candidates("ls", "/usr/bin/:/bin::/opt"),
            vec!["/usr/bin/ls", "/bin/ls", "ls", "/opt/ls"]
        );
        assert!(program_candidates("", "/bin").is_empty());
    }

    #[cfg(target_os = "linux")]
    mod spawned {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        use super::super::*;

        fn env() -> Vec<(String, String)> {
            vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("GREETING".into(), "hi there".into()),
            ]
        }

        async fn read_all(mut pipe: pipe::Receiver) -> String {
            let mut text = String::new();
            pipe.read_to_string(&mut text).await.expect("read a pipe");
            text
        }

        /// As root (as CI runs) the child switches to `nobody`; otherwise it keeps our uid.
        #[tokio::test]
        async fn test_spawn_piped_runs_as_the_user_in_the_directory_with_the_environment() {
            let root = rustix::process::geteuid().is_root();
            let expected_uid = if root {
                65534
            } else {
                rustix::process::geteuid().as_raw()
            };
            let args = vec![
                "-c".to_owned(),
                "echo \"$GREETING\"; id -u; id -G; pwd; grep -E '^(SigBlk|SigIgn)' \
                 /proc/self/status; echo oops >&2; exit 3"
                    .to_owned(),
            ];
            let env = env();
            let mut piped = spawn_piped(&PipedSpec {
                cmd: "sh",
                args: &args,
                env: &env,
                cwd: std::path::Path::new("/"),
                switch_to: root.then_some((65534, 65534)),
                stdin: false,
            })
            .expect("spawn sh");
            let (out, err) = tokio::join!(read_all(piped.stdout), read_all(piped.stderr));
            let status = piped.child.wait().await.expect("wait");
            assert_eq!(status.code(), Some(3));
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines[0], "hi there");
            assert_eq!(lines[1], expected_uid.to_string());
            if root {
                assert_eq!(lines[2], "65534", "supplementary groups are cleared");
            }
            assert_eq!(lines[3], "/");
            assert_eq!(
                lines[4], "SigBlk:\t0000000000000000",
                "nothing stays blocked"
            );
            let ignored = u64::from_str_radix(lines[5].trim_start_matches("SigIgn:\t"), 16)
                .expect("a hex mask");
            assert_eq!(
                ignored & (1 << (libc::SIGPIPE - 1)),
                0,
                "SIGPIPE is default"
            );
            assert_eq!(err, "oops\n");
        }

        #[tokio::test]
        async fn test_spawn_piped_feeds_stdin_and_reports_signals() {
            let env = env();
            let mut piped = spawn_piped(&PipedSpec {
                cmd: "/bin/cat",
                args: &[],
                env: &env,
                cwd: std::path::Path::new("/"),
                switch_to: None,
                stdin: true,
            })
            .expect("spawn cat");
            let mut stdin = piped.stdin.take().expect("a stdin pipe");
            stdin.write_all(b"echo back").await.expect("write");
            drop(stdin);
            assert_eq!(read_all(piped.stdout).await, "echo back");
            assert!(piped.child.wait().await.expect("wait").success());

            let args = vec!["-c".to_owned(), "kill -9 $$".to_owned()];
            let mut killed = spawn_piped(&PipedSpec {
                cmd: "sh",
                args: &args,
                env: &env,
                cwd: std::path::Path::new("/"),
                switch_to: None,
                stdin: false,
            })
            .expect("spawn sh");
            let status = killed.child.wait().await.expect("wait");
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(9)
            );
        }

        #[tokio::test]
        async fn test_spawn_piped_reports_what_cannot_run() {
            let env = env();
            let spawn = |cmd: &str, cwd: &str| {
                spawn_piped(&PipedSpec {
                    cmd,
                    args: &[],
                    env: &env,
                    cwd: std::path::Path::new(cwd),
                    switch_to: None,
                    stdin: false,
                })
                .map(|_| ())
            };
            let missing = spawn("no-such-program-here", "/").expect_err("missing program");
            assert_eq!(missing.kind(), std::io::ErrorKind::NotFound, "{missing}");
            let dir = tempfile::tempdir().expect("a temp dir");
            let script = dir.path().join("not-executable");
            std::fs::write(&script, "#!/bin/sh\n").expect("write");
            let denied = spawn(script.to_str().expect("utf-8"), "/").expect_err("not executable");
            assert_eq!(
                denied.kind(),
                std::io::ErrorKind::PermissionDenied,
                "{denied}"
            );
            let gone = spawn("/bin/true", "/no/such/dir").expect_err("missing cwd");
            assert!(gone.to_string().contains("working directory"), "{gone}");
            let nul = spawn("/bin/tr\0ue", "/").expect_err("NUL");
            assert_eq!(nul.kind(), std::io::ErrorKind::InvalidInput);
        }
    }
}
