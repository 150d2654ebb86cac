//! The real host, through std's process API and rustix's signals (no `unsafe`): type-checked
//! for FreeBSD, and the process parts exercised on Linux by the tests below.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use rustix::process::{Pid, Signal, kill_process, test_kill_process};

use super::{BhyveSys, VmSignal};

/// The host's commands and processes.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostBhyveSys;

impl BhyveSys for HostBhyveSys {
    fn run(&self, argv: &[String], stdin: Option<&str>) -> io::Result<String> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::other("empty command"))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(io::Error::other(format!(
                "{}: {}",
                argv.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }

    fn spawn(&self, argv: &[String], log: &Path) -> io::Result<i32> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::other("empty command"))?;
        let log = OpenOptions::new().create(true).append(true).open(log)?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()?;
        let pid = i32::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))?;
        // Collected while this daemon lives; after it, the host's init reaps it.
        std::thread::Builder::new()
            .name("vm-reaper".into())
            .spawn(move || {
                let _ = child.wait();
            })?;
        Ok(pid)
    }

    fn runs_vm(&self, pid: i32, vm: &str) -> bool {
        if Pid::from_raw(pid).is_none_or(|pid| test_kill_process(pid).is_err()) {
            return false;
        }
        // bhyve names itself `bhyve: <vm>`; its command line ends with the VM's name.
        let Ok(command) = self.run(
            &["ps", "-o", "command=", "-p", &pid.to_string()].map(str::to_owned),
            None,
        ) else {
            return false;
        };
        command.contains("bhyve") && command.split_whitespace().any(|word| word == vm)
    }

    fn signal(&self, pid: i32, signal: VmSignal) -> io::Result<()> {
        let Some(pid) = Pid::from_raw(pid) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a pid"));
        };
        let signal = match signal {
            VmSignal::Stop => Signal::STOP,
            VmSignal::Continue => Signal::CONT,
            VmSignal::Kill => Signal::KILL,
        };
        match kill_process(pid, signal) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    fn vm_exists(&self, name: &str) -> bool {
        Path::new("/dev/vmm").join(name).exists()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn test_a_spawned_process_runs_in_its_own_group_and_dies_when_killed() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("vm.log");
        let sys = HostBhyveSys;
        // Shaped like bhyve's command line: the program, then the VM's name last.
        let argv = ["sh", "-c", "echo booted; sleep 30; : bhyve", "coppice-a1"].map(str::to_owned);
        let pid = sys.spawn(&argv, &log).unwrap();
        assert!(sys.runs_vm(pid, "coppice-a1"));
        assert!(!sys.runs_vm(pid, "coppice-b2"), "another VM's pid");
        sys.signal(pid, VmSignal::Stop).unwrap();
        sys.signal(pid, VmSignal::Continue).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&log).unwrap_or_default() != "booted\n" {
            assert!(Instant::now() < deadline, "no output in the log");
            std::thread::sleep(Duration::from_millis(10));
        }
        sys.signal(pid, VmSignal::Kill).unwrap();
        while sys.runs_vm(pid, "coppice-a1") {
            assert!(Instant::now() < deadline, "still alive after SIGKILL");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Signalling what is gone is not an error.
        sys.signal(pid, VmSignal::Kill).unwrap();
    }

    #[test]
    fn test_run_returns_output_and_names_a_failure() {
        let sys = HostBhyveSys;
        let echoed = sys
            .run(&["cat".to_owned()], Some("mkpeer . bridge x link2\n"))
            .unwrap();
        assert_eq!(echoed, "mkpeer . bridge x link2\n");
        let error = sys
            .run(
                &["sh", "-c", "echo nope >&2; exit 3"].map(str::to_owned),
                None,
            )
            .unwrap_err();
        assert!(error.to_string().ends_with(": nope"), "{error}");
        assert!(!sys.vm_exists("coppice-no-such-vm"));
    }
}
