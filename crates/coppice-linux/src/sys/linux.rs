//! Linux: the real `NsSys` for the daemon side, and the sandbox init (`coppice-init`).

mod builder;
mod mounts;
mod outer;
mod pid1;
mod restore;
mod security;
mod syscalls;
mod zygote;

use std::fs;
use std::io;
use std::path::Path;
use std::process::ExitCode;
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
#[derive(Debug, Default)]
pub struct RealNsSys {
    /// Started on the first sandbox start; replaced if it dies.
    zygote: std::sync::Mutex<Option<std::sync::Arc<zygote::Zygote>>>,
}

impl RealNsSys {
    fn zygote(&self, command: &InitCommand) -> io::Result<std::sync::Arc<zygote::Zygote>> {
        let mut slot = self
            .zygote
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(zygote) = slot.as_ref().filter(|zygote| zygote.is_alive()) {
            return Ok(std::sync::Arc::clone(zygote));
        }
        let zygote = std::sync::Arc::new(zygote::Zygote::start(command)?);
        *slot = Some(std::sync::Arc::clone(&zygote));
        Ok(zygote)
    }
}

impl NsSys for RealNsSys {
    fn spawn_init(
        &self,
        command: &InitCommand,
        config: &Path,
        timeout: Duration,
    ) -> io::Result<Option<ReadyMessage>> {
        match self.zygote(command)?.request(config, timeout) {
            // The zygote died and its handle had not noticed yet; the failed write marked it
            // dead, so this asks a fresh one. Nothing was started: retrying is safe.
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
                self.zygote(command)?.request(config, timeout)
            }
            result => result,
        }
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

    fn remove_cgroup(&self, dir: &Path) -> io::Result<()> {
        // cgroupfs lets rmdir remove a directory still listing its control files.
        fs::remove_dir(dir)
    }

    fn become_subreaper(&self) -> io::Result<()> {
        Ok(set_child_subreaper(Some(rustix::process::getpid()))?)
    }

    fn run_criu(&self, criu: &Path, args: &[std::ffi::OsString]) -> io::Result<()> {
        let status = std::process::Command::new(criu)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("criu exited with {status}")))
        }
    }

    fn restore_init(
        &self,
        command: &InitCommand,
        config: &Path,
        images: &Path,
        criu: &Path,
        timeout: Duration,
    ) -> io::Result<Option<ReadyMessage>> {
        let mut child = std::process::Command::new(&command.program)
            .args(&command.leading_args)
            .arg(restore::RESTORE_FLAG)
            .args([config, images, criu])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("restore helper has no stdout"))?;
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("restore-report".into())
            .spawn(move || {
                let mut line = String::new();
                let read = io::BufRead::read_line(&mut io::BufReader::new(stdout), &mut line);
                let _ = sender.send(read.map(|_| line));
            })?;
        let report = match receiver.recv_timeout(timeout) {
            Ok(Ok(line)) => serde_json::from_str(line.trim()).ok(),
            Ok(Err(error)) => return Err(error),
            Err(_) => None,
        };
        if report.is_none() {
            let _ = child.kill();
        }
        let _ = child.wait();
        Ok(report)
    }

    fn open_root(&self, pid: i32) -> io::Result<std::os::fd::OwnedFd> {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        Ok(rustix::fs::open(
            format!("/proc/{pid}/root"),
            flags,
            Mode::empty(),
        )?)
    }
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

/// Entry point of the sandbox init, given its arguments after the program name: either
/// `--zygote` (the daemon's long-lived forker, see `zygote`), `--config <init.json>` (build
/// one sandbox and report on stdout), `--pid1 <channel fd> <config fd>` (a sandbox's PID 1,
/// re-executed from inside its root), or `--restore <init.json> <images> <criu>` (restore a
/// checkpointed sandbox and report on stdout). Used by the `coppice-init` binary and by binaries with
/// an init mode.
pub fn init_main(mut args: impl Iterator<Item = std::ffi::OsString>) -> ExitCode {
    match (args.next(), args.next()) {
        (Some(flag), None) if flag == zygote::ZYGOTE_FLAG => zygote::zygote_main(),
        (Some(flag), Some(path)) if flag == restore::RESTORE_FLAG => {
            match (load_config(Path::new(&path)), args.next(), args.next()) {
                (Ok(config), Some(images), Some(criu)) => {
                    report(&restore::run(&config, Path::new(&images), Path::new(&criu)))
                }
                (Err(error), _, _) => report(&ReadyMessage::Failed { error }),
                _ => report(&ReadyMessage::Failed {
                    error: "usage: coppice-init --restore <init.json> <images> <criu>".into(),
                }),
            }
        }
        (Some(flag), Some(channel)) if flag == pid1::PID1_FLAG => match args.next() {
            Some(config) => pid1::main(&channel.to_string_lossy(), &config.to_string_lossy()),
            None => ExitCode::FAILURE,
        },
        (Some(flag), Some(path)) if flag == "--config" => match load_config(Path::new(&path)) {
            Ok(config) => report(&outer::run(&config)),
            Err(error) => report(&ReadyMessage::Failed { error }),
        },
        _ => report(&ReadyMessage::Failed {
            error: "usage: coppice-init --zygote | --config <init.json>".into(),
        }),
    }
}

/// Reads and checks an init config.
fn load_config(path: &Path) -> Result<InitConfig, String> {
    let config: InitConfig = fs::read(path)
        .map_err(|error| error.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|error| error.to_string()))
        .map_err(|error| format!("cannot read init config {}: {error}", path.display()))?;
    if config.version != crate::protocol::INIT_CONFIG_VERSION {
        return Err(format!(
            "unsupported init config version {}",
            config.version
        ));
    }
    Ok(config)
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
