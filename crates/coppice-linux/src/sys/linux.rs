//! Linux: the real `NsSys` for the daemon side, and the sandbox init (`coppice-init`).

mod outer;
mod pid1;
mod security;
mod server;
mod syscalls;

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::CWD;
use rustix::mount::{FsPickFlags, fsconfig_reconfigure, fsconfig_set_flag, fspick};
use rustix::process::{
    Pid, PidfdFlags, Signal, WaitOptions, kill_process, pidfd_open, set_child_subreaper, waitpid,
};

use super::NsSys;
use crate::config::InitCommand;
use crate::protocol::{InitConfig, ReadyMessage};

/// The daemon-side process operations, on the real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealNsSys;

impl NsSys for RealNsSys {
    fn spawn_init(
        &self,
        command: &InitCommand,
        config: &Path,
        log: &Path,
        timeout: Duration,
    ) -> io::Result<Option<ReadyMessage>> {
        let log_file = fs::OpenOptions::new().create(true).append(true).open(log)?;
        let mut child = Command::new(&command.program)
            .args(&command.leading_args)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("init stdout not captured"))?;
        let ready = read_ready_line(stdout, timeout);
        if !matches!(ready, Ok(Some(_))) {
            // No answer in time: the init may be stuck half-way; the caller's destroy removes
            // whatever it made.
            let _ = child.kill();
        }
        child.wait()?;
        ready
    }

    fn process_start_time(&self, pid: i32) -> io::Result<Option<u64>> {
        let stat = match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        Ok(parse_stat_start_time(&stat))
    }

    fn kill(&self, pid: i32) -> io::Result<()> {
        let Some(pid) = Pid::from_raw(pid) else {
            return Ok(());
        };
        match kill_process(pid, Signal::KILL) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    fn wait_exit(&self, pid: i32, timeout: Duration) -> io::Result<()> {
        let Some(pid) = Pid::from_raw(pid) else {
            return Ok(());
        };
        let pidfd = match pidfd_open(pid, PidfdFlags::empty()) {
            Ok(pidfd) => pidfd,
            Err(rustix::io::Errno::SRCH) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            // A pidfd turns readable when the process exits, whoever its parent is.
            let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
            match poll(&mut fds, Some(&timespec(left))) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::INTR) => {}
                Err(error) => return Err(error.into()),
            }
        }
    }

    fn reap(&self, pid: i32) {
        if let Some(pid) = Pid::from_raw(pid) {
            // ECHILD (not our child, e.g. started by an earlier daemon) is expected.
            let _ = waitpid(Some(pid), WaitOptions::NOHANG);
        }
    }

    fn favor_dynamic_cgroups(&self, unified: &Path) -> io::Result<bool> {
        // Reconfigure the superblock only: the mount's own flags stay as they are.
        let context = fspick(CWD, unified, FsPickFlags::FSPICK_CLOEXEC)?;
        match fsconfig_set_flag(&context, "favordynmods") {
            Ok(()) => {}
            Err(rustix::io::Errno::INVAL) => return Ok(false),
            Err(error) => return Err(error.into()),
        }
        fsconfig_reconfigure(&context)?;
        Ok(true)
    }

    fn become_subreaper(&self) -> io::Result<()> {
        Ok(set_child_subreaper(Some(rustix::process::getpid()))?)
    }
}

/// Reads the init's one ready line, waiting at most `timeout`.
fn read_ready_line(
    stdout: std::process::ChildStdout,
    timeout: Duration,
) -> io::Result<Option<ReadyMessage>> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let mut fds = [PollFd::new(&stdout, PollFlags::IN)];
        match poll(&mut fds, Some(&timespec(left))) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => {}
            Err(error) => return Err(error.into()),
        }
    }
    // The init writes its one line in a single write and exits, so after readiness the rest
    // of the line arrives without blocking for long.
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(Some(ReadyMessage::Failed {
            error: "init exited without a report; see init.log".into(),
        }));
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

fn timespec(duration: Duration) -> Timespec {
    Timespec {
        tv_sec: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(duration.subsec_nanos()),
    }
}

/// Field 22 (starttime) of `/proc/<pid>/stat`, unless the process is a zombie.
fn parse_stat_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and ')'; fields after the last ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // After the state (field 3), starttime is field 22: 18 more fields on.
    fields.nth(18)?.parse().ok()
}

/// Entry point of the sandbox init, given its arguments after the program name
/// (`--config <init.json>`). Used by the `coppice-init` binary and by `coppiced`'s init mode.
pub fn init_main(mut args: impl Iterator<Item = std::ffi::OsString>) -> ExitCode {
    let config_path = match (args.next(), args.next()) {
        (Some(flag), Some(path)) if flag == "--config" => path,
        _ => {
            return report(&ReadyMessage::Failed {
                error: "usage: coppice-init --config <init.json>".into(),
            });
        }
    };
    let config: InitConfig = match fs::read(&config_path)
        .map_err(|error| error.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|error| error.to_string()))
    {
        Ok(config) => config,
        Err(error) => {
            return report(&ReadyMessage::Failed {
                error: format!("cannot read init config: {error}"),
            });
        }
    };
    if config.version != crate::protocol::INIT_CONFIG_VERSION {
        return report(&ReadyMessage::Failed {
            error: format!("unsupported init config version {}", config.version),
        });
    }
    report(&outer::run(&config))
}

fn report(message: &ReadyMessage) -> ExitCode {
    let mut line = serde_json::to_string(message)
        .unwrap_or_else(|_| "{\"failed\":{\"error\":\"encoding\"}}".into());
    line.push('\n');
    let written = io::Write::write_all(&mut io::stdout().lock(), line.as_bytes());
    match (message, written) {
        (ReadyMessage::Ready { .. }, Ok(())) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_stat_start_time_handles_parens_in_name() {
        let stat = "123 (a) b) S 1 123 123 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        assert_eq!(parse_stat_start_time(stat), Some(987_654));
    }

    #[test]
    fn test_parse_stat_start_time_zombie_is_none() {
        let stat = "123 (x) Z 1 123 123 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        assert_eq!(parse_stat_start_time(stat), None);
    }

    #[test]
    fn test_parse_stat_start_time_of_self() {
        let stat = fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat_start_time(&stat).is_some());
    }
}
