//! Linux: network namespaces made on a throw-away thread; links through `ip -batch`, rules
//! through `nft -f`, both fed on standard input.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::thread::UnshareFlags;

use coppice_core::volume::IdMap;

use super::{BridgeSys, NetnsSys, OwnedNamespace};

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

    fn new_owned_namespace(&self, map: &IdMap) -> io::Result<OwnedNamespace> {
        // Written by this (privileged) process into the helper's maps: a range, not just
        // the helper's own id, needs a writer outside the new user namespace.
        let uid_map = format!("0 {} {}\n", map.uid_base, map.count);
        let gid_map = format!("0 {} {}\n", map.gid_base, map.count);
        let (from_helper, helper_writes) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let (helper_reads, to_helper) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let helper = fork_namespace_helper(&helper_writes, &helper_reads)?;
        drop(helper_writes);
        drop(helper_reads);
        let made = (|| {
            let mut byte = [0u8; 1];
            if rustix::io::read(&from_helper, &mut byte)? != 1 {
                return Err(io::Error::other("namespace helper exited before unsharing"));
            }
            fs::write(format!("/proc/{helper}/uid_map"), &uid_map)?;
            fs::write(format!("/proc/{helper}/gid_map"), &gid_map)?;
            let user = OwnedFd::from(File::open(format!("/proc/{helper}/ns/user"))?);
            let net = OwnedFd::from(File::open(format!("/proc/{helper}/ns/net"))?);
            Ok(OwnedNamespace { user, net })
        })();
        // The helper waits for this end to close, then exits.
        drop(to_helper);
        if let Some(pid) = rustix::process::Pid::from_raw(helper) {
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
        }
        made
    }
}

/// Forks the helper that makes a user namespace with a network namespace inside it: the
/// child unshares both, writes one byte on `writes`, and waits until `reads` reaches end of
/// file. Returns the child's pid (the child never returns).
///
/// The daemon has many threads, so the child calls nothing but async-signal-safe system
/// calls on descriptors it already holds.
fn fork_namespace_helper(writes: &OwnedFd, reads: &OwnedFd) -> io::Result<i32> {
    let (writes, reads) = (writes.as_raw_fd(), reads.as_raw_fd());
    // SAFETY: the child runs only `helper_child`, which makes raw system calls and `_exit`s;
    // it touches no lock, allocator or other state another thread may have held at the fork.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => helper_child(writes, reads),
        pid => Ok(pid),
    }
}

/// The helper's whole life (async-signal-safe calls only).
fn helper_child(writes: i32, reads: i32) -> ! {
    // Every other descriptor of the daemon goes first: the pipes' other ends (or the read
    // below would never see end of file), and the daemon's listeners and files, which must
    // not outlive a daemon that dies meanwhile.
    let (low, high) = (writes.min(reads), writes.max(reads));
    for (first, last) in [(3, low - 1), (low + 1, high - 1), (high + 1, i32::MAX)] {
        if first <= last {
            // SAFETY: close_range(2) on descriptor numbers this child holds no Rust handle
            // to (the handles it inherited are never used or dropped in the child).
            unsafe {
                libc::syscall(
                    libc::SYS_close_range,
                    first.unsigned_abs(),
                    last.unsigned_abs(),
                    0u32,
                )
            };
        }
    }
    // SAFETY: unshare(2) on the calling, single-threaded child; no Rust state depends on its
    // namespaces.
    let unshared = unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) };
    if unshared != 0 {
        // SAFETY: `_exit` ends the child without unwinding (the parent reads end of file).
        unsafe { libc::_exit(1) }
    }
    let byte = [1u8];
    // SAFETY: `writes` is an open pipe end this child inherited; `byte` outlives the call.
    unsafe { libc::write(writes, byte.as_ptr().cast(), 1) };
    let mut sink = [0u8; 1];
    // SAFETY: `reads` is an open pipe end this child inherited; `sink` outlives the call. The
    // read returns at end of file, once the parent has opened the namespaces.
    unsafe { libc::read(reads, sink.as_mut_ptr().cast(), 1) };
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
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

    fn links_in_group(&self, group: u32) -> io::Result<Vec<String>> {
        let mut members = Vec::new();
        for entry in fs::read_dir("/sys/class/net")? {
            let entry = entry?;
            // A link deleted since the listing has no group to read.
            let Ok(text) = fs::read_to_string(entry.path().join("netdev_group")) else {
                continue;
            };
            if text.trim().parse::<u32>().ok() == Some(group) {
                members.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(members)
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
