//! The FreeBSD host: jail(2) through `libc`, and the base system's `mount`, `umount` and
//! `rctl`. Type-checked from Linux with `--target x86_64-unknown-freebsd`; not yet run on
//! FreeBSD.

use std::ffi::c_void;
use std::io;
use std::path::Path;
use std::process::Command;

use super::JailSys;
use crate::params::{EncodedParam, JailName};

/// The host's jail(2) and commands.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostJailSys;

/// One iovec entry over `bytes` (empty for a flag's absent value).
fn entry(bytes: Option<&[u8]>) -> libc::iovec {
    match bytes {
        Some(bytes) => libc::iovec {
            iov_base: bytes.as_ptr().cast_mut().cast::<c_void>(),
            iov_len: bytes.len(),
        },
        None => libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        },
    }
}

fn iovecs(params: &[EncodedParam]) -> Vec<libc::iovec> {
    params
        .iter()
        .flat_map(|(name, value)| [entry(Some(name)), entry(value.as_deref())])
        .collect()
}

fn count(iov: &[libc::iovec]) -> io::Result<libc::c_uint> {
    libc::c_uint::try_from(iov.len()).map_err(|_| io::Error::other("too many jail parameters"))
}

fn command(program: &str, args: &[&str]) -> io::Result<std::process::Output> {
    let output = Command::new(program).args(args).output()?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(io::Error::other(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

impl JailSys for HostJailSys {
    fn jail_create(&self, params: &[EncodedParam]) -> io::Result<i32> {
        let mut iov = iovecs(params);
        let niov = count(&iov)?;
        // SAFETY: every iovec points into `params`, which outlives the call; with JAIL_CREATE
        // and no `errmsg` parameter jail_set only reads through them.
        let jid = unsafe { libc::jail_set(iov.as_mut_ptr(), niov, libc::JAIL_CREATE) };
        if jid < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(jid)
        }
    }

    fn jail_id(&self, name: &JailName) -> io::Result<Option<i32>> {
        // jail_get copies every parameter's value back, so both buffers are writable.
        let mut key = b"name\0".to_vec();
        let mut value = format!("{}\0", name.as_str()).into_bytes();
        let mut iov = [
            libc::iovec {
                iov_base: key.as_mut_ptr().cast::<c_void>(),
                iov_len: key.len(),
            },
            libc::iovec {
                iov_base: value.as_mut_ptr().cast::<c_void>(),
                iov_len: value.len(),
            },
        ];
        let niov = count(&iov)?;
        // SAFETY: both iovecs point into vectors we own, alive and writable for the call, of
        // the lengths given; jail_get writes at most that many bytes back into each.
        let jid = unsafe { libc::jail_get(iov.as_mut_ptr(), niov, 0) };
        if jid >= 0 {
            return Ok(Some(jid));
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ENOENT) {
            Ok(None)
        } else {
            Err(error)
        }
    }

    fn jail_remove(&self, jid: i32) -> io::Result<()> {
        // SAFETY: jail_remove takes a plain integer and touches no memory of ours.
        if unsafe { libc::jail_remove(jid) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn load_devfs_ruleset(&self, _number: u16, commands: &[Vec<String>]) -> io::Result<()> {
        for command_line in commands {
            let (program, args) = command_line
                .split_first()
                .ok_or_else(|| io::Error::other("empty devfs command"))?;
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            command(program, &args)?;
        }
        Ok(())
    }

    fn mount_devfs(&self, target: &Path, ruleset: u16) -> io::Result<()> {
        // mount(8) resolves links: a sandbox's `dev -> ../../etc` would put devfs on a host
        // directory. No process runs in a new jail yet, so this check is not raced.
        if !std::fs::symlink_metadata(target)?.file_type().is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a plain directory", target.display()),
            ));
        }
        let target = target.to_string_lossy();
        let options = format!("ruleset={ruleset}");
        command("mount", &["-t", "devfs", "-o", &options, "devfs", &target]).map(drop)
    }

    fn unmount(&self, target: &Path) -> io::Result<bool> {
        let target = target.to_string_lossy();
        match command("umount", &["-f", &target]) {
            Ok(_) => Ok(true),
            // umount(8) says so for a directory that is no mount point, or is gone.
            Err(error)
                if error
                    .to_string()
                    .contains("not a file system root directory")
                    || error.to_string().contains("No such file or directory") =>
            {
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    fn rctl_add(&self, rule: &str) -> io::Result<()> {
        command("rctl", &["-a", rule]).map(drop)
    }

    fn rctl_remove(&self, filter: &str) -> io::Result<()> {
        match command("rctl", &["-r", filter]) {
            Ok(_) => Ok(()),
            // The kernel answers ESRCH when no rule matched: nothing was left to remove.
            Err(error) if error.to_string().contains("No such process") => Ok(()),
            Err(error) => Err(error),
        }
    }
}
