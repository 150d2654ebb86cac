//! The guest agent, `coppice-guest`: the first service of a sandbox VM's image. It reads the
//! seed disk (waiting while the VM sits in the warm pool without a sandbox), takes the
//! sandbox's hostname and network, serves the control channel on a TCP port to connections
//! that open with the seed's token, and keeps envd running on its own port. The host reaches
//! both through the relays of [`crate::relay`].

use std::ffi::OsString;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use coppice_init::envd::{self, PreparedEnvd};
use coppice_init::server::{self, ControlListener};
use subtle::ConstantTimeEq;

use crate::relay::read_preamble;
use crate::seed::{self, GuestNetwork, GuestSeed, SEED_BYTES};

/// How often an unassigned VM looks at its seed again.
const SEED_POLL: Duration = Duration::from_millis(100);
/// How long a connection may take to present its token.
const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest token line read.
const MAX_PREAMBLE: usize = 128;
/// Where envd keeps `/init`'s settings in the guest.
const ENVD_STATE_FILE: &str = "/var/run/coppice-envd/settings.json";
/// Most bytes of stdout and of stderr kept per exec.
const OUTPUT_LIMIT: usize = 4 << 20;

/// The guest's operating system, for the commands that configure its network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestOs {
    /// `ip`.
    Linux,
    /// `ifconfig` and `route`.
    FreeBsd,
}

impl GuestOs {
    /// The OS this agent was built for.
    pub fn this() -> Self {
        if cfg!(target_os = "freebsd") {
            Self::FreeBsd
        } else {
            Self::Linux
        }
    }
}

fn owned(words: &[&str]) -> Vec<String> {
    words.iter().map(|&word| word.to_owned()).collect()
}

/// The commands that give `interface` the sandbox's MAC, addresses and routes.
pub fn network_commands(os: GuestOs, interface: &str, network: &GuestNetwork) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    match os {
        GuestOs::Linux => {
            commands.push(owned(&["ip", "link", "set", "dev", interface, "down"]));
            commands.push(owned(&[
                "ip",
                "link",
                "set",
                "dev",
                interface,
                "address",
                &network.mac,
            ]));
            commands.push(owned(&["ip", "link", "set", "dev", interface, "up"]));
            for (address, prefix) in &network.addresses {
                let cidr = format!("{address}/{prefix}");
                commands.push(owned(&[
                    "ip", "addr", "add", &cidr, "dev", interface, "nodad",
                ]));
            }
            for gateway in &network.gateways {
                let family = if gateway.is_ipv6() { "-6" } else { "-4" };
                commands.push(owned(&[
                    "ip",
                    family,
                    "route",
                    "replace",
                    "default",
                    "via",
                    &gateway.to_string(),
                ]));
            }
        }
        GuestOs::FreeBsd => {
            commands.push(owned(&["ifconfig", interface, "ether", &network.mac]));
            for (address, prefix) in &network.addresses {
                let (family, alias) = if address.is_ipv6() {
                    ("inet6", format!("{address}/{prefix}"))
                } else {
                    ("inet", format!("{address}/{prefix}"))
                };
                commands.push(owned(&["ifconfig", interface, family, &alias, "alias"]));
            }
            commands.push(owned(&["ifconfig", interface, "up"]));
            for gateway in &network.gateways {
                let family = if gateway.is_ipv6() { "-inet6" } else { "-inet" };
                commands.push(owned(&[
                    "route",
                    "add",
                    family,
                    "default",
                    &gateway.to_string(),
                ]));
            }
        }
    }
    commands
}

/// Reads the seed from the first [`SEED_BYTES`] of `device`, bypassing the guest's page
/// cache where it has one (the host rewrites the seed of a pooled VM behind its back).
///
/// # Errors
/// The device cannot be read, or holds no seed.
pub fn read_seed(device: &Path) -> io::Result<GuestSeed> {
    /// One sector-aligned block, as direct reads need.
    #[repr(C, align(4096))]
    struct Block([u8; 4096]);

    let direct = rustix::fs::open(
        device,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC | direct_flag(),
        rustix::fs::Mode::empty(),
    );
    let fd: OwnedFd = match direct {
        Ok(fd) => fd,
        // Not every file system takes direct reads (tmpfs does not); a plain read will do
        // there, as nothing caches a file the host rewrote for another reader.
        Err(rustix::io::Errno::INVAL) => fs::File::open(device)?.into(),
        Err(error) => return Err(error.into()),
    };
    let mut bytes = Vec::with_capacity(SEED_BYTES);
    let mut block = Box::new(Block([0; 4096]));
    while bytes.len() < SEED_BYTES {
        let offset = u64::try_from(bytes.len()).map_err(io::Error::other)?;
        let read = rustix::io::pread(&fd, &mut block.0, offset)?;
        bytes.extend_from_slice(&block.0[..read]);
        if read < block.0.len() || block.0[..read].contains(&0) {
            break;
        }
    }
    seed::decode(&bytes).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

#[cfg(target_os = "linux")]
fn direct_flag() -> rustix::fs::OFlags {
    rustix::fs::OFlags::DIRECT
}

#[cfg(not(target_os = "linux"))]
fn direct_flag() -> rustix::fs::OFlags {
    // A FreeBSD disk device is read around the buffer cache already.
    rustix::fs::OFlags::empty()
}

/// Control connections that opened with the right token; the others are closed. Each is
/// checked on a thread of its own, so a silent client holds up nobody.
#[derive(Debug)]
pub struct TokenListener {
    connections: mpsc::Receiver<OwnedFd>,
}

impl TokenListener {
    /// Checks every connection to `listener` against `token`.
    ///
    /// # Errors
    /// The checking thread cannot start.
    pub fn start(listener: TcpListener, token: String) -> io::Result<Self> {
        let (accepted, connections) = mpsc::channel();
        thread::Builder::new()
            .name("agent-accept".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let (accepted, token) = (accepted.clone(), token.clone());
                    let _ = thread::Builder::new()
                        .name("agent-token".into())
                        .spawn(move || {
                            let _ = stream.set_read_timeout(Some(PREAMBLE_TIMEOUT));
                            let presented = read_preamble(&stream, MAX_PREAMBLE);
                            let valid = presented.is_ok_and(|presented| {
                                !token.is_empty() && bool::from(presented.ct_eq(token.as_bytes()))
                            });
                            if valid && stream.set_read_timeout(None).is_ok() {
                                let _ = accepted.send(OwnedFd::from(stream));
                            }
                        });
                }
            })?;
        Ok(Self { connections })
    }
}

impl ControlListener for TokenListener {
    fn accept_one(&self) -> io::Result<OwnedFd> {
        self.connections
            .recv()
            .map_err(|_| io::Error::other("the agent's listener stopped"))
    }
}

/// The first network interface that is not loopback.
fn first_interface(os: GuestOs) -> Option<String> {
    match os {
        GuestOs::Linux => {
            let mut names: Vec<String> = fs::read_dir("/sys/class/net")
                .ok()?
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name != "lo")
                .collect();
            names.sort();
            names.into_iter().next()
        }
        GuestOs::FreeBsd => {
            let output = Command::new("ifconfig").arg("-l").output().ok()?;
            String::from_utf8_lossy(&output.stdout)
                .split_whitespace()
                .find(|name| !name.starts_with("lo"))
                .map(str::to_owned)
        }
    }
}

fn run(command: &[String]) -> Result<(), String> {
    let (program, args) = command.split_first().ok_or("empty command")?;
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", command.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            command.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Takes on the seed's hostname and network.
fn become_sandbox(os: GuestOs, seed: &GuestSeed) -> Result<(), String> {
    run(&owned(&["hostname", &seed.hostname]))?;
    let Some(network) = &seed.network else {
        return Ok(());
    };
    let interface = first_interface(os).ok_or("no network interface")?;
    for command in network_commands(os, &interface, network) {
        run(&command)?;
    }
    if !network.dns.is_empty() {
        let text: String = network
            .dns
            .iter()
            .map(|dns| format!("nameserver {dns}\n"))
            .collect();
        fs::write("/etc/resolv.conf", text).map_err(|e| format!("/etc/resolv.conf: {e}"))?;
    }
    Ok(())
}

/// What the agent was told on its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestOptions {
    /// The seed disk's device.
    pub seed: PathBuf,
    /// envd's binary in the guest, if it runs envd.
    pub envd: Option<PathBuf>,
    /// Whether to configure hostname and network (off where something else does).
    pub configure: bool,
}

fn parse(args: impl IntoIterator<Item = OsString>) -> Result<GuestOptions, String> {
    let mut options = GuestOptions {
        seed: PathBuf::new(),
        envd: None,
        configure: true,
    };
    let mut args = args.into_iter().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .map(PathBuf::from)
                .ok_or(format!("{} needs a value", arg.to_string_lossy()))
        };
        match arg.to_str() {
            Some("--seed") => options.seed = value()?,
            Some("--envd") => options.envd = Some(value()?),
            Some("--no-configure") => options.configure = false,
            _ => return Err(format!("unknown argument {}", arg.to_string_lossy())),
        }
    }
    if options.seed.as_os_str().is_empty() {
        return Err(
            "usage: coppice-guest --seed <device> [--envd <binary>] [--no-configure]".into(),
        );
    }
    Ok(options)
}

/// Runs the agent; returns only when it cannot serve.
pub fn guest_main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let failed = |message: String| {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("coppice-guest: {message}");
        }
        ExitCode::FAILURE
    };
    let options = match parse(args) {
        Ok(options) => options,
        Err(message) => return failed(message),
    };
    let seed = loop {
        match read_seed(&options.seed) {
            Ok(seed) if seed.assigned() => break seed,
            Ok(_) => thread::sleep(SEED_POLL),
            // The host may be rewriting the seed of a pooled VM right now: a seed that does
            // not read as one yet is waited for, like an unassigned one.
            Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
                thread::sleep(SEED_POLL);
            }
            Err(error) => return failed(format!("{}: {error}", options.seed.display())),
        }
    };
    if options.configure
        && let Err(message) = become_sandbox(GuestOs::this(), &seed)
    {
        return failed(message);
    }
    match serve(&options, seed) {
        Ok(shared) => server::reap_forever(&shared),
        Err(message) => failed(message),
    }
}

fn serve(
    options: &GuestOptions,
    seed: GuestSeed,
) -> Result<std::sync::Arc<server::Shared>, String> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, seed.agent_port)))
        .map_err(|e| format!("cannot listen on port {}: {e}", seed.agent_port))?;
    let listener = TokenListener::start(listener, seed.token.clone())
        .map_err(|e| format!("cannot start the agent: {e}"))?;
    let shared = server::start(seed.env.clone(), OUTPUT_LIMIT, listener)?;
    if let Some(binary) = &options.envd {
        let args = owned(&[
            "--port",
            &seed.envd_port.to_string(),
            "--sandbox-id",
            &seed.sandbox_id,
            "--state-file",
            ENVD_STATE_FILE,
        ]);
        envd::start(
            &shared,
            PreparedEnvd::listening_itself(binary, args)?,
            seed.env,
        )?;
    }
    Ok(shared)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Instant;

    use super::*;
    use crate::relay::Relay;
    use crate::seed::SEED_VERSION;

    fn network() -> GuestNetwork {
        GuestNetwork {
            mac: "02:c0:ff:ee:00:07".into(),
            addresses: vec![
                ("10.213.0.8".parse().unwrap(), 16),
                ("fd00:c0:ffee::8".parse().unwrap(), 64),
            ],
            gateways: vec![
                "10.213.0.1".parse().unwrap(),
                "fd00:c0:ffee::1".parse().unwrap(),
            ],
            dns: vec!["10.213.0.1".parse().unwrap()],
        }
    }

    fn lines(commands: &[Vec<String>]) -> Vec<String> {
        commands.iter().map(|c| c.join(" ")).collect()
    }

    #[test]
    fn test_network_commands_per_guest_os() {
        assert_eq!(
            lines(&network_commands(GuestOs::Linux, "enp0s3", &network())),
            [
                "ip link set dev enp0s3 down",
                "ip link set dev enp0s3 address 02:c0:ff:ee:00:07",
                "ip link set dev enp0s3 up",
                "ip addr add 10.213.0.8/16 dev enp0s3 nodad",
                "ip addr add fd00:c0:ffee::8/64 dev enp0s3 nodad",
                "ip -4 route replace default via 10.213.0.1",
                "ip -6 route replace default via fd00:c0:ffee::1",
            ]
        );
        assert_eq!(
            lines(&network_commands(GuestOs::FreeBsd, "vtnet0", &network())),
            [
                "ifconfig vtnet0 ether 02:c0:ff:ee:00:07",
                "ifconfig vtnet0 inet 10.213.0.8/16 alias",
                "ifconfig vtnet0 inet6 fd00:c0:ffee::8/64 alias",
                "ifconfig vtnet0 up",
                "route add -inet default 10.213.0.1",
                "route add -inet6 default fd00:c0:ffee::1",
            ]
        );
    }

    fn seed(token: &str) -> GuestSeed {
        GuestSeed {
            version: SEED_VERSION,
            sandbox_id: "a1".into(),
            hostname: "a1".into(),
            token: token.into(),
            env: Vec::new(),
            network: None,
            agent_port: 0,
            envd_port: 0,
        }
    }

    #[test]
    fn test_a_rewritten_seed_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("seed.img");
        let mut pooled = seed("");
        pooled.sandbox_id = String::new();
        fs::write(&device, seed::encode(&pooled).unwrap()).unwrap();
        assert!(!read_seed(&device).unwrap().assigned());
        fs::write(&device, seed::encode(&seed("t0k")).unwrap()).unwrap();
        assert_eq!(read_seed(&device).unwrap(), seed("t0k"));
        fs::write(&device, b"not a seed").unwrap();
        assert!(read_seed(&device).is_err());
    }

    #[test]
    fn test_only_connections_with_the_token_reach_the_control_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let tokens = TokenListener::start(listener, "t0k".into()).unwrap();
        let _shared = server::start(Vec::new(), 1024, tokens).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.sock");
        let bad = dir.path().join("bad.sock");
        let _good = Relay::start(&good, address, b"t0k\n".to_vec()).unwrap();
        let _bad = Relay::start(&bad, address, b"guess\n".to_vec()).unwrap();
        coppice_init::client::ping(&good, Duration::from_secs(5)).unwrap();
        let started = Instant::now();
        assert!(coppice_init::client::ping(&bad, Duration::from_secs(5)).is_err());
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "closed, not left waiting"
        );
        // A client that never presents a token is dropped after the timeout and holds up
        // nobody meanwhile.
        let mut silent = std::net::TcpStream::connect(address).unwrap();
        coppice_init::client::ping(&good, Duration::from_secs(5)).unwrap();
        silent.write_all(b"").unwrap();
    }

    #[test]
    fn test_arguments() {
        let args = [
            "coppice-guest",
            "--seed",
            "/dev/vtbd1",
            "--envd",
            "/usr/local/bin/coppice-envd",
        ]
        .map(OsString::from);
        assert_eq!(
            parse(args).unwrap(),
            GuestOptions {
                seed: "/dev/vtbd1".into(),
                envd: Some("/usr/local/bin/coppice-envd".into()),
                configure: true,
            }
        );
        assert!(parse(["coppice-guest"].map(OsString::from)).is_err());
        assert!(parse(["coppice-guest", "--seed"].map(OsString::from)).is_err());
        assert!(parse(["coppice-guest", "--bogus"].map(OsString::from)).is_err());
    }
}
