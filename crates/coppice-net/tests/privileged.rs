//! The bridge network against the real kernel: a test-made "upstream" namespace stands in
//! for the outside, and connections are made from inside sandbox namespaces by threads that
//! join them. Only addresses inside namespaces this test creates are ever contacted. Linux
//! only, root only; run with
//! `COPPICE_PRIVILEGED_TESTS=1 cargo test -p coppice-net --test privileged -- --ignored`.
#![cfg(target_os = "linux")]
// Test helpers outside `#[test]` functions unwrap too: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use coppice_core::SandboxId;
use coppice_core::net::{NetAttachment, NetPolicy};
use coppice_core::spec::NetworkSpec;
use coppice_net::{BridgeConfig, BridgeNetwork, NetnsSys, RealNetnsSys};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType, rdata};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

const PORT: u16 = 8080;

/// A bridge network on its own bridge and prefixes, plus an upstream namespace routed from
/// the host; everything is removed on drop.
struct Lab {
    network: Option<BridgeNetwork>,
    bridge: String,
    upstream_link: String,
    upstream: OwnedFd,
    upstream_v4: Ipv4Addr,
    upstream_v6: Ipv6Addr,
    _state: tempfile::TempDir,
}

fn ip(args: &str) {
    let status = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .unwrap();
    assert!(status.success(), "ip {args}");
}

impl Lab {
    /// `n` keeps concurrent tests apart: bridge `cpt{n}`, 10.23{n}.0.0/24, upstream
    /// 10.24{n}.0.0/24.
    fn new(n: u8) -> Self {
        coppice_core::require_privileged!();
        let state = tempfile::tempdir().unwrap();
        let bridge = format!("cpt{n}");
        let mut config = BridgeConfig::new(&bridge, state.path().join("net"));
        config.ipv4 = format!("10.23{n}.0.0/24").parse().unwrap();
        config.ipv6 = format!("fd23:{n}::/64").parse().unwrap();
        config.pool_size = 2;
        // The resolver asks the test's own DNS server in the upstream namespace, never the
        // host's.
        config.dns_upstream = Some(format!("10.24{n}.0.2:53").parse().unwrap());
        let network = BridgeNetwork::start(config, Arc::new(RealNetnsSys)).unwrap();

        let upstream = RealNetnsSys.new_namespace().unwrap();
        let path = RealNetnsSys.path_of(&upstream);
        let upstream_link = format!("cpu{n}");
        let _ = Command::new("ip")
            .args(["link", "del", &upstream_link])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&format!(
            "link add {upstream_link} type veth peer name up0 netns {}",
            path.display()
        ));
        ip(&format!("addr add 10.24{n}.0.1/24 dev {upstream_link}"));
        ip(&format!(
            "addr add fd24:{n}::1/64 dev {upstream_link} nodad"
        ));
        ip(&format!("link set {upstream_link} up"));
        let inside = format!(
            "link set lo up\naddr add 10.24{n}.0.2/24 dev up0\naddr add fd24:{n}::2/64 dev up0 nodad\nlink set up0 up\n"
        );
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", path.display()))
            .args(["ip", "-batch", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(inside.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        let lab = Self {
            network: Some(network),
            bridge,
            upstream_link,
            upstream,
            upstream_v4: format!("10.24{n}.0.2").parse().unwrap(),
            upstream_v6: format!("fd24:{n}::2").parse().unwrap(),
            _state: state,
        };
        // Flows of an earlier run with the same addresses and ports would skip this run's NAT.
        lab.forget_upstream_flows();
        lab.serve_upstream();
        lab
    }

    /// Deletes the conntrack entries of every flow to this lab's upstream.
    fn forget_upstream_flows(&self) {
        for (family, address) in [
            ("ipv4", self.upstream_v4.to_string()),
            ("ipv6", self.upstream_v6.to_string()),
        ] {
            let _ = Command::new("conntrack")
                .args(["-D", "-f", family, "-d", &address])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }

    fn network(&self) -> &BridgeNetwork {
        self.network.as_ref().unwrap()
    }

    fn attach(&self, name: &str, spec: &NetworkSpec) -> PathBuf {
        match self.network().attach(&name.parse().unwrap(), spec).unwrap() {
            NetAttachment::Namespace { path, .. } => path,
            other => panic!("expected a namespace, got {other:?}"),
        }
    }

    fn update(&self, name: &str, spec: &NetworkSpec) {
        let id: SandboxId = name.parse().unwrap();
        self.network().update(&id, spec).unwrap();
    }

    /// Serves `PORT` on both upstream addresses (each connection gets a byte every 20 ms) and
    /// waits until the host reaches both. A link that has just come up can lose the host's
    /// first neighbour solicitations to it, which would otherwise delay a test's first
    /// packet by a second or two.
    fn serve_upstream(&self) {
        serve_in(self.upstream.try_clone().unwrap(), PORT);
        for v6 in [false, true] {
            let target = self.upstream(v6);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while TcpStream::connect_timeout(&target, Duration::from_millis(500)).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the upstream {target} did not answer the host within 10 s"
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Answers every A question with the upstream's IPv4 address and every AAAA question
    /// with its IPv6 address, TTL 300, from inside the upstream namespace.
    fn serve_dns(&self) {
        let netns = self.upstream.try_clone().unwrap();
        let (v4, v6) = (self.upstream_v4, self.upstream_v6);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            move_into_link_name_space(netns.as_fd(), Some(LinkNameSpaceType::Network)).unwrap();
            let socket = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 53)).unwrap();
            ready_tx.send(()).unwrap();
            let mut buffer = [0u8; 512];
            while let Ok((len, from)) = socket.recv_from(&mut buffer) {
                let question = Message::from_vec(&buffer[..len]).unwrap();
                let mut reply = Message::response(question.metadata.id, OpCode::Query);
                reply.add_queries(question.queries.clone());
                let query = &question.queries[0];
                let data = match query.query_type() {
                    RecordType::A => Some(RData::A(rdata::A(v4))),
                    RecordType::AAAA => Some(RData::AAAA(rdata::AAAA(v6))),
                    _ => None,
                };
                if let Some(data) = data {
                    reply.add_answer(Record::from_rdata(query.name().clone(), 300, data));
                }
                socket.send_to(&reply.to_vec().unwrap(), from).unwrap();
            }
        });
        ready_rx.recv().unwrap();
    }

    /// Asks the sandbox resolver for `name`'s A record from inside `path`: the addresses
    /// answered, or the response code when there are none.
    fn resolve(&self, path: &Path, name: &str) -> Result<Vec<Ipv4Addr>, ResponseCode> {
        let resolver = SocketAddr::new(IpAddr::V4(self.network().config().bridge_v4()), 53);
        let mut query = Message::new(7, MessageType::Query, OpCode::Query);
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        let bytes = query.to_vec().unwrap();
        let answer = inside(path, move || {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            // Asks up to three times, as a stub resolver does over UDP.
            let mut buffer = [0u8; 512];
            let len = (0..3)
                .find_map(|_| {
                    socket.send_to(&bytes, resolver).unwrap();
                    socket.recv(&mut buffer).ok()
                })
                .expect("the sandbox resolver did not answer in three tries");
            Message::from_vec(&buffer[..len]).unwrap()
        });
        let addresses: Vec<Ipv4Addr> = answer
            .answers
            .iter()
            .filter_map(|record| match &record.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        if addresses.is_empty() {
            Err(answer.metadata.response_code)
        } else {
            Ok(addresses)
        }
    }

    /// The distinct generation tags of the rules in the sandbox chains.
    fn rule_generations(&self) -> std::collections::BTreeSet<String> {
        let output = Command::new("nft")
            .args([
                "-j",
                "list",
                "table",
                "inet",
                &format!("coppice_{}", self.bridge),
            ])
            .output()
            .unwrap();
        let listing: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        listing["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|item| {
                item["rule"]["chain"]
                    .as_str()
                    .is_some_and(|chain| chain.starts_with("sbx_"))
            })
            .filter_map(|item| item["rule"]["comment"].as_str().map(str::to_owned))
            .collect()
    }

    fn upstream(&self, v6: bool) -> SocketAddr {
        if v6 {
            SocketAddr::new(IpAddr::V6(self.upstream_v6), PORT)
        } else {
            SocketAddr::new(IpAddr::V4(self.upstream_v4), PORT)
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        drop(self.network.take());
        self.forget_upstream_flows();
        let _ = Command::new("ip")
            .args(["link", "del", &self.upstream_link])
            .status();
        for family in ["inet", "bridge"] {
            let _ = Command::new("nft")
                .args([
                    "delete",
                    "table",
                    family,
                    &format!("coppice_{}", self.bridge),
                ])
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// Listens on `port` (IPv4 and IPv6) inside the namespace `netns`, ticking to every client.
fn serve_in(netns: OwnedFd, port: u16) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        move_into_link_name_space(netns.as_fd(), Some(LinkNameSpaceType::Network)).unwrap();
        // One dual-stack socket serves both families.
        let listener = TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)).unwrap();
        ready_tx.send(()).unwrap();
        accept_ticking(&listener);
    });
    ready_rx.recv().unwrap();
}

fn accept_ticking(listener: &TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        thread::spawn(move || {
            while stream.write_all(b".").is_ok() {
                thread::sleep(Duration::from_millis(20));
            }
        });
    }
}

/// Runs `f` on a thread inside the namespace at `path`.
fn inside<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let netns = File::open(path).unwrap();
    thread::spawn(move || {
        move_into_link_name_space(netns.as_fd(), Some(LinkNameSpaceType::Network)).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Whether a connection from inside `path` to `target` gets its first tick. Refusals are
/// resets or ICMP errors and end an attempt at once; the timeout leaves room for the SYN
/// retransmissions (at 1 s and 3 s) a client makes when a first packet is lost on a busy host.
fn reaches(path: &Path, target: SocketAddr) -> bool {
    inside(path, move || {
        let Ok(mut stream) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
            return false;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut byte = [0u8; 1];
        matches!(stream.read(&mut byte), Ok(1))
    })
}

/// `reaches` for a probe that must succeed: a host under load can lose a fresh link's first
/// neighbour solicitations past a connect's retransmissions, so it gets three tries.
/// Probes that must fail use `reaches` once.
fn reaches_eventually(path: &Path, target: SocketAddr) -> bool {
    (0..3).any(|_| reaches(path, target))
}

fn spec(internet: bool, allow: &[String], deny: &[String]) -> NetworkSpec {
    NetworkSpec {
        allow_internet: internet,
        allow_out: allow.to_vec(),
        deny_out: deny.to_vec(),
    }
}

#[test]
#[ignore = "privileged: creates bridges, veths, namespaces and nftables tables"]
fn test_default_sandbox_reaches_upstream_on_both_families_but_not_the_host() {
    let lab = Lab::new(1);
    // A host service on the bridge's own address, where sandboxes must not get.
    let bridge_v4 = lab.network().config().bridge_v4();
    let host = TcpListener::bind((bridge_v4, 0)).unwrap();
    let host_address = host.local_addr().unwrap();
    thread::spawn(move || accept_ticking(&host));

    let sandbox = lab.attach("a", &NetworkSpec::default());

    assert!(
        reaches_eventually(&sandbox, lab.upstream(false)),
        "upstream over IPv4"
    );
    assert!(
        reaches_eventually(&sandbox, lab.upstream(true)),
        "upstream over IPv6"
    );
    assert!(
        !reaches(&sandbox, host_address),
        "host on the bridge address"
    );

    // allowOut is how an operator opens a host service.
    lab.update("a", &spec(true, &[format!("{bridge_v4}/32")], &[]));
    assert!(
        reaches_eventually(&sandbox, host_address),
        "host once allowed"
    );
}

#[test]
#[ignore = "privileged: creates bridges, veths, namespaces and nftables tables"]
fn test_air_gap_and_cidr_lists() {
    let lab = Lab::new(2);
    let upstream_v4 = format!("{}/32", lab.upstream_v4);

    let airgapped = lab.attach("gapped", &spec(false, &[], &[]));
    assert!(!reaches(&airgapped, lab.upstream(false)));
    assert!(!reaches(&airgapped, lab.upstream(true)));

    let allowed = lab.attach(
        "allowed",
        &spec(false, std::slice::from_ref(&upstream_v4), &[]),
    );
    assert!(
        reaches_eventually(&allowed, lab.upstream(false)),
        "allowOut CIDR"
    );
    assert!(!reaches(&allowed, lab.upstream(true)), "not in allowOut");

    let denied = lab.attach(
        "denied",
        &spec(true, &[], std::slice::from_ref(&upstream_v4)),
    );
    assert!(!reaches(&denied, lab.upstream(false)), "denyOut CIDR");
    assert!(
        reaches_eventually(&denied, lab.upstream(true)),
        "not in denyOut"
    );

    let both = lab.attach(
        "both",
        &spec(
            true,
            std::slice::from_ref(&upstream_v4),
            std::slice::from_ref(&upstream_v4),
        ),
    );
    assert!(
        reaches_eventually(&both, lab.upstream(false)),
        "allowOut wins"
    );
}

#[test]
#[ignore = "privileged: creates bridges, veths, namespaces and nftables tables"]
fn test_update_to_deny_cuts_an_open_connection_and_allowing_again_works() {
    let lab = Lab::new(3);
    let sandbox = lab.attach("a", &NetworkSpec::default());
    let target = lab.upstream(false);
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let reader = thread::spawn({
        let sandbox = sandbox.clone();
        move || {
            inside(&sandbox, move || {
                let mut stream =
                    TcpStream::connect_timeout(&target, Duration::from_secs(2)).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut byte = [0u8; 1];
                assert_eq!(stream.read(&mut byte).unwrap(), 1);
                opened_tx.send(()).unwrap();
                loop {
                    match stream.read(&mut byte) {
                        Ok(1) => continue,
                        _ => return Instant::now(),
                    }
                }
            })
        }
    });
    opened_rx.recv().unwrap();
    thread::sleep(Duration::from_millis(100));

    let flipped = Instant::now();
    lab.update("a", &spec(false, &[], &[]));
    let applied = flipped.elapsed();
    let cut = reader.join().unwrap();

    let after = cut.duration_since(flipped);
    assert!(
        after < Duration::from_millis(100),
        "the open connection ended {after:?} after the flip (applied in {applied:?})"
    );
    assert!(!reaches(&sandbox, target), "new flows refused");
    lab.update("a", &NetworkSpec::default());
    assert!(reaches_eventually(&sandbox, target), "allowed again");

    // Shadowed generations are deleted in the background: one generation stays.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let generations = lab.rule_generations();
        if generations.len() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shadowed rules remain: {generations:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "privileged: creates bridges, veths, namespaces and nftables tables"]
fn test_sandboxes_cannot_reach_each_other_and_leave_nothing_behind() {
    let lab = Lab::new(4);
    let a = lab.attach("a", &NetworkSpec::default());
    let b = lab.attach("b", &NetworkSpec::default());
    let b_netns = File::open(&b).unwrap();
    serve_in(OwnedFd::from(b_netns), 9000);
    let b_v4 = lab.network().config().sandbox_addresses(2).0;
    let b_v6 = lab.network().config().sandbox_addresses(2).1;
    // Whichever index b got, try both neighbours' addresses.
    let candidates = [
        SocketAddr::new(IpAddr::V4(b_v4), 9000),
        SocketAddr::new(IpAddr::V6(b_v6), 9000),
        SocketAddr::new(
            IpAddr::V4(lab.network().config().sandbox_addresses(1).0),
            9000,
        ),
    ];
    for target in candidates {
        assert!(!reaches(&a, target), "a reached {target}");
    }
    assert!(reaches_eventually(
        &b,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9000)
    ));

    let a_id: SandboxId = "a".parse().unwrap();
    let b_id: SandboxId = "b".parse().unwrap();
    lab.network().detach(&a_id).unwrap();
    lab.network().detach(&b_id).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let ports = || {
        std::fs::read_dir(format!("/sys/class/net/{}/brif", lab.bridge))
            .unwrap()
            .count()
    };
    // Only the pool's two prepared endpoints stay.
    while ports() > 2 {
        assert!(
            Instant::now() < deadline,
            "veths of detached sandboxes remain"
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert!(lab.network().list().unwrap().is_empty());
}

#[test]
#[ignore = "privileged: creates bridges, veths, namespaces and nftables tables"]
fn test_domains_resolve_only_when_allowed_and_open_their_addresses() {
    let lab = Lab::new(5);
    lab.serve_dns();
    let target = lab.upstream(false);

    let gapped = lab.attach("gapped", &spec(false, &["allowed.test".into()], &[]));
    assert!(!reaches(&gapped, target), "before the name is resolved");
    assert_eq!(
        lab.resolve(&gapped, "allowed.test"),
        Ok(vec![lab.upstream_v4])
    );
    assert!(
        reaches_eventually(&gapped, target),
        "once the allowed name resolved"
    );
    assert_eq!(
        lab.resolve(&gapped, "other.test"),
        Err(ResponseCode::NXDomain),
        "an air-gapped sandbox resolves only allowed names"
    );

    let open = lab.attach(
        "open",
        &spec(true, &[], &["denied.test".into(), "*.denied.test".into()]),
    );
    assert_eq!(
        lab.resolve(&open, "denied.test"),
        Err(ResponseCode::NXDomain)
    );
    assert_eq!(
        lab.resolve(&open, "www.denied.test"),
        Err(ResponseCode::NXDomain)
    );
    assert_eq!(lab.resolve(&open, "other.test"), Ok(vec![lab.upstream_v4]));

    // Dropping the domain from allowOut closes what it opened, open flows included.
    lab.update("gapped", &spec(false, &[], &[]));
    assert!(!reaches(&gapped, target), "after the domain was removed");
}

/// Sends one UDP datagram from inside `path` to `target`, from `source` (bound with
/// FREEBIND when it is not the sandbox's own address, as any unprivileged process may).
fn send_from(path: &Path, source: SocketAddr, target: SocketAddr) -> std::io::Result<()> {
    let netns = File::open(path)?;
    thread::spawn(move || {
        move_into_link_name_space(netns.as_fd(), Some(LinkNameSpaceType::Network))?;
        let domain = if source.is_ipv4() {
            rustix::net::AddressFamily::INET
        } else {
            rustix::net::AddressFamily::INET6
        };
        let socket = rustix::net::socket(domain, rustix::net::SocketType::DGRAM, None)?;
        if source.is_ipv4() {
            rustix::net::sockopt::set_ip_freebind(&socket, true)?;
        } else {
            rustix::net::sockopt::set_ipv6_freebind(&socket, true)?;
        }
        rustix::net::bind(&socket, &source)?;
        rustix::net::sendto(&socket, b"spoof", rustix::net::SendFlags::empty(), &target)?;
        Ok(())
    })
    .join()
    .unwrap()
}

#[test]
#[ignore = "privileged: creates bridges, veths, namespaces and nftables tables"]
fn test_a_sandbox_cannot_send_from_an_address_that_is_not_its_own() {
    let lab = Lab::new(6);
    // A UDP listener in the upstream namespace that reports every sender.
    let netns = lab.upstream.try_clone().unwrap();
    let (received_tx, received) = std::sync::mpsc::channel();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    thread::spawn(move || {
        move_into_link_name_space(netns.as_fd(), Some(LinkNameSpaceType::Network)).unwrap();
        let socket = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 9999)).unwrap();
        ready_tx.send(()).unwrap();
        let mut buffer = [0u8; 16];
        while let Ok((_, from)) = socket.recv_from(&mut buffer) {
            let _ = received_tx.send(from);
        }
    });
    ready.recv().unwrap();
    let gapped = lab.attach("gapped", &spec(false, &[], &[]));
    let config = lab.network().config().clone();
    // An index nobody holds: its address has no rules, so it would be let through.
    let (free_v4, free_v6) = config.sandbox_addresses(200);
    let upstream_v4 = SocketAddr::new(IpAddr::V4(lab.upstream_v4), 9999);
    let upstream_v6 = SocketAddr::new(IpAddr::V6(lab.upstream_v6), 9999);

    let sent_v6 = send_from(&gapped, SocketAddr::new(free_v6.into(), 5000), upstream_v6);
    let sent_v4 = send_from(&gapped, SocketAddr::new(free_v4.into(), 5000), upstream_v4);

    assert!(
        sent_v6.is_ok(),
        "the spoofed datagram must leave the sandbox: {sent_v6:?}"
    );
    let got = received.recv_timeout(Duration::from_millis(500));
    assert!(
        got.is_err(),
        "a spoofed datagram arrived from {got:?} (IPv4 send: {sent_v4:?})"
    );

    // The same path works for an open sandbox sending from its own address.
    let open = lab.attach("open", &NetworkSpec::default());
    let index = (1..=config.capacity())
        .find(|index| {
            let (v4, _) = config.sandbox_addresses(*index);
            reaches_source(&open, v4)
        })
        .unwrap();
    let (_, v6) = config.sandbox_addresses(index);
    send_from(&open, SocketAddr::new(v6.into(), 5001), upstream_v6).unwrap();
    let from = received.recv_timeout(Duration::from_secs(2)).unwrap();
    assert_eq!(from.port(), 5001, "NAT keeps the port of a real sender");
    assert_eq!(
        from.ip(),
        "fd24:6::1".parse::<IpAddr>().unwrap(),
        "the upstream sees the host's address: the sandbox's is masqueraded"
    );
}

/// Whether `address` is the IPv4 address of the namespace at `path`.
fn reaches_source(path: &Path, address: Ipv4Addr) -> bool {
    let netns = File::open(path).unwrap();
    thread::spawn(move || {
        move_into_link_name_space(netns.as_fd(), Some(LinkNameSpaceType::Network)).unwrap();
        UdpSocket::bind((address, 0)).is_ok()
    })
    .join()
    .unwrap()
}

#[test]
#[ignore = "privileged: creates user and network namespaces"]
fn test_loopback_pool_keeps_making_namespaces_inside_user_namespaces_with_the_sandbox_map() {
    coppice_core::require_privileged!();
    let map = coppice_core::volume::IdMap {
        uid_base: 200_000,
        gid_base: 200_000,
        count: 65_536,
    };
    let policy = coppice_net::LoopbackOnly::pooled(2, map);
    // More sandboxes than the pool holds: its refill must go on (a helper that never ended
    // would stop it after the first).
    for round in 0..6 {
        let id: SandboxId = format!("pool{round}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let (net, user) = loop {
            match policy.attach(&id, &NetworkSpec::default()).unwrap() {
                NetAttachment::Namespace {
                    path,
                    user: Some(user),
                    ..
                } => break (path, user),
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "round {round}: the pool ran dry: {other:?}"
                    );
                    policy.detach(&id).unwrap();
                    thread::sleep(Duration::from_millis(10));
                }
            }
        };
        let inside = Command::new("nsenter")
            .arg(format!("--user={}", user.display()))
            .arg(format!("--net={}", net.display()))
            .args([
                "sh",
                "-c",
                "cat /proc/self/uid_map /proc/self/gid_map; ip -o link",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&inside.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert!(inside.status.success(), "{inside:?}");
        for map_line in &lines[..2] {
            let fields: Vec<&str> = map_line.split_whitespace().collect();
            assert_eq!(fields, ["0", "200000", "65536"], "round {round}: {text}");
        }
        // A fresh namespace: loopback only.
        assert_eq!(lines.len(), 3, "round {round}: {text}");
        assert!(lines[2].contains(": lo:"), "round {round}: {text}");
        policy.detach(&id).unwrap();
    }
}
