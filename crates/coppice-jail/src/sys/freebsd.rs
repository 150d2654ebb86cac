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
        let params: [EncodedParam; 1] = [(
            b"name\0".to_vec(),
            Some(format!("{}\0", name.as_str()).into_bytes()),
        )];
        let mut iov = iovecs(&params);
        let niov = count(&iov)?;
        // SAFETY: the iovecs point into `params`, alive for the call; with only a `name` key
        // jail_get writes nothing back and returns the matching jail's id.
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

    fn mount_devfs(&self, target: &Path, ruleset: u16) -> io::Result<()> {
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
        command("rctl", &["-r", filter]).map(drop)
    }
}
