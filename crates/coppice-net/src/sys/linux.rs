//! Linux: network namespaces made on a throw-away thread; links through `ip -batch`, rules
//! through `nft -f`, both fed on standard input.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::thread::UnshareFlags;

use super::{BridgeSys, NetnsSys};

/// The kernel and the host's `ip` and `nft`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealNetnsSys;

impl NetnsSys for RealNetnsSys {
    fn new_namespace(&self) -> io::Result<OwnedFd> {
        // unshare moves only the calling thread; a thread made for it takes the namespace
        // with it when it ends, leaving the descriptor as the only reference.
        std::thread::Builder::new()
            .name("netns".into())
            .spawn(|| {
                // SAFETY: CLONE_NEWNET is not CLONE_FILES, the flag whose effect on other
                // threads' descriptor tables `unshare_unsafe` warns about; this thread ends
                // right after and shares nothing that depends on its network namespace.
                unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }?;
                // Sandbox addresses are unique by construction, and duplicate address
                // detection would hold IPv6 back for a second after the link comes up. The
                // write lands in the new namespace: /proc/sys/net follows the writer's.
                fs::write("/proc/sys/net/ipv6/conf/default/accept_dad", "0")?;
                Ok(OwnedFd::from(File::open("/proc/thread-self/ns/net")?))
            })?
            .join()
            .map_err(|_| io::Error::other("network namespace thread panicked"))?
    }

    fn path_of(&self, fd: &OwnedFd) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            fd.as_raw_fd()
        ))
    }
}

/// Where the bridges' locks live.
const LOCK_DIR: &str = "/run/coppice";

impl BridgeSys for RealNetnsSys {
    fn lock_bridge(&self, bridge: &str) -> io::Result<OwnedFd> {
        fs::create_dir_all(LOCK_DIR)?;
        let file = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(Path::new(LOCK_DIR).join(format!("bridge-{bridge}.lock")))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)?;
        Ok(OwnedFd::from(file))
    }

    fn link_exists(&self, name: &str) -> bool {
        Path::new("/sys/class/net").join(name).exists()
    }

    fn links(&self) -> io::Result<Vec<String>> {
        let mut links = Vec::new();
        for entry in fs::read_dir("/sys/class/net")? {
            links.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(links)
    }

    fn ip_batch(&self, netns: Option<&Path>, script: &str) -> io::Result<()> {
        let mut command = match netns {
            Some(path) => {
                let mut command = Command::new("nsenter");
                command.arg(format!("--net={}", path.display())).arg("ip");
                command
            }
            None => Command::new("ip"),
        };
        command.args(["-batch", "-"]);
        run_with_input(command, "ip", script)
    }

    fn nft_listing(&self, table: &str) -> io::Result<String> {
        let output = Command::new("nft")
            .args(["-j", "-a", "list", "table", "inet", table])
            .stdin(Stdio::null())
            .output()
            .map_err(|error| io::Error::new(error.kind(), format!("cannot run nft: {error}")))?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "nft list failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        String::from_utf8(output.stdout).map_err(io::Error::other)
    }

    fn nft(&self, script: &str) -> io::Result<()> {
        let mut command = Command::new("nft");
        command.args(["-f", "-"]);
        run_with_input(command, "nft", script)
    }

    fn forget_flows(&self, address: std::net::IpAddr) -> io::Result<()> {
        let family = if address.is_ipv4() { "ipv4" } else { "ipv6" };
        let output = Command::new("conntrack")
            .args(["-D", "-f", family, "-s", &address.to_string()])
            .stdin(Stdio::null())
            .output()
            .map_err(|error| {
                io::Error::new(error.kind(), format!("cannot run conntrack: {error}"))
            })?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        // conntrack exits 1 when there was nothing to delete.
        if output.status.success() || stderr.contains("flow entries have been deleted") {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "conntrack failed ({}): {}",
            output.status,
            stderr.trim()
        )))
    }

    fn enable_forwarding(&self) -> io::Result<()> {
        // With forwarding on, an interface whose accept_ra is 1 stops taking router
        // advertisements; 2 keeps a host that autoconfigures its uplink reachable.
        for entry in fs::read_dir("/proc/sys/net/ipv6/conf")? {
            let accept_ra = entry?.path().join("accept_ra");
            if fs::read_to_string(&accept_ra).is_ok_and(|value| value.trim() == "1") {
                fs::write(&accept_ra, "2")?;
            }
        }
        fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
        fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")
    }
}

fn run_with_input(mut command: Command, tool: &str, input: &str) -> io::Result<()> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| io::Error::new(error.kind(), format!("cannot run {tool}: {error}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if output.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{tool} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}
