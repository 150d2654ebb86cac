//! The sandboxes' DNS resolver on the bridge. It knows each sandbox by the source address of
//! its query (which the bridge's port guard makes trustworthy): a name the sandbox may not
//! resolve gets NXDOMAIN without leaving the host; any other question is relayed upstream on
//! a socket of its own; and the addresses in an answer for a name in the sandbox's
//! `allowOut` are opened to it (pinned into its nftables set for the answer's lifetime)
//! before the answer is passed on. It serves UDP and, for answers too large for a datagram,
//! TCP. Only plain one-question queries are relayed, and no sandbox can hold more than a
//! small share of the relay's capacity.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RData;

use crate::egress::NameVerdict;

/// How long one query waits for its upstream answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(4);
/// Queries and TCP connections in flight at most, in all.
const MAX_IN_FLIGHT: usize = 256;
/// ... and from one client.
const MAX_PER_CLIENT: usize = 16;
/// Largest DNS message over UDP with EDNS.
const MAX_MESSAGE: usize = 4096;
/// How often the listening threads look at the stop flag.
const POLL: Duration = Duration::from_millis(200);
/// How long a TCP client may stay silent, and keep its connection in all.
const TCP_IDLE: Duration = Duration::from_secs(10);
const TCP_LIFETIME: Duration = Duration::from_secs(30);

/// Where relayed questions go: `configured`, or else the host's first `nameserver`.
pub(crate) fn upstream(configured: Option<SocketAddr>) -> Option<SocketAddr> {
    let upstream = configured.or_else(|| {
        std::fs::read_to_string("/etc/resolv.conf")
            .ok()
            .and_then(|text| upstream_from_resolv_conf(&text))
    });
    if upstream.is_none() {
        tracing::warn!("no upstream resolver known; sandbox names outside the host do not resolve");
    }
    upstream
}

/// Where the resolver listens: port 53 of both of the bridge's addresses.
pub(crate) fn listen_addresses(config: &crate::BridgeConfig) -> [SocketAddr; 2] {
    [
        SocketAddr::new(IpAddr::V4(config.bridge_v4()), 53),
        SocketAddr::new(IpAddr::V6(config.bridge_v6()), 53),
    ]
}

/// Who may resolve what, and how answers become reachable.
pub(crate) trait Directory: Send + Sync + 'static {
    /// The verdict for `name` asked by the sandbox at `client` (unknown clients are
    /// refused), with a ticket that `pin` checks is still current.
    fn verdict(&self, client: IpAddr, name: &str) -> (NameVerdict, u64);

    /// Opens `addresses` (each with its lifetime in seconds) to the sandbox at `client`,
    /// if `name` is still allowed under the policy `ticket` came from; otherwise nothing.
    ///
    /// # Errors
    /// The rules could not be changed; the answer is then withheld.
    fn pin(
        &self,
        client: IpAddr,
        name: &str,
        ticket: u64,
        addresses: &[(IpAddr, u32)],
    ) -> io::Result<()>;
}

/// Counts work in flight, in all and per client.
#[derive(Debug, Default)]
struct Admission {
    clients: Mutex<HashMap<IpAddr, usize>>,
}

impl Admission {
    /// A slot for `client`, or `None` when it or everyone is at the limit.
    fn admit(self: &Arc<Self>, client: IpAddr) -> Option<Slot> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let total: usize = clients.values().sum();
        let mine = clients.entry(client).or_insert(0);
        if total >= MAX_IN_FLIGHT || *mine >= MAX_PER_CLIENT {
            return None;
        }
        *mine += 1;
        Some(Slot {
            admission: Arc::clone(self),
            client,
        })
    }
}

/// One admitted query or connection; gives its place back when dropped.
struct Slot {
    admission: Arc<Admission>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut clients = self
            .admission
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = clients.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                clients.remove(&self.client);
            }
        }
    }
}

/// A running resolver; dropping it stops its listeners.
#[derive(Debug)]
pub(crate) struct Resolver {
    stop: Arc<AtomicBool>,
    /// The TCP listeners, woken by a connection of our own when stopping.
    tcp: Vec<SocketAddr>,
    /// The UDP listeners that are up.
    udp: Vec<SocketAddr>,
}

/// What the serving threads share.
#[derive(Clone)]
struct Shared {
    upstream: Option<SocketAddr>,
    directory: Arc<dyn Directory>,
    admission: Arc<Admission>,
}

/// Records `address` among those served over `transport` when its thread started; logs why
/// not otherwise.
fn note_listener<T>(
    started: std::io::Result<thread::JoinHandle<T>>,
    transport: &'static str,
    address: &SocketAddr,
    served: &mut Vec<SocketAddr>,
) {
    match started {
        Ok(_) => served.push(*address),
        Err(error) => {
            tracing::warn!(%address, transport, error = %error, "sandbox resolver not listening here");
        }
    }
}

impl Resolver {
    /// Listens on each of `listen` (UDP and TCP) and answers for `directory`, relaying to
    /// `upstream` (without one, relayed questions fail). Addresses that cannot be bound are
    /// logged and skipped; [`Resolver::listens_on`] tells which are up.
    pub(crate) fn start(
        listen: &[SocketAddr],
        upstream: Option<SocketAddr>,
        directory: &Arc<dyn Directory>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Shared {
            upstream,
            directory: Arc::clone(directory),
            admission: Arc::default(),
        };
        let mut resolver = Self {
            stop: Arc::clone(&stop),
            tcp: Vec::new(),
            udp: Vec::new(),
        };
        for address in listen {
            let tcp = TcpListener::bind(address).and_then(|listener| {
                let (shared, stop) = (shared.clone(), Arc::clone(&stop));
                thread::Builder::new()
                    .name("dns-resolver-tcp".into())
                    .spawn(move || serve_tcp(&shared, &listener, &stop))
            });
            note_listener(tcp, "TCP", address, &mut resolver.tcp);
            let udp = UdpSocket::bind(address).and_then(|socket| {
                let _ = socket.set_read_timeout(Some(POLL));
                let (shared, stop) = (shared.clone(), Arc::clone(&stop));
                thread::Builder::new()
                    .name("dns-resolver".into())
                    .spawn(move || serve_udp(&shared, &socket, &stop))
            });
            note_listener(udp, "UDP", address, &mut resolver.udp);
        }
        resolver
    }

    /// Whether the resolver answers (over UDP) on `address`.
    pub(crate) fn listens_on(&self, address: SocketAddr) -> bool {
        self.udp.contains(&address)
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for address in &self.tcp {
            let _ = TcpStream::connect_timeout(address, POLL);
        }
    }
}

fn serve_udp(shared: &Shared, socket: &UdpSocket, stop: &AtomicBool) {
    let mut buffer = [0u8; MAX_MESSAGE];
    while !stop.load(Ordering::SeqCst) {
        let Ok((len, client)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        let Some(slot) = shared.admission.admit(client.ip()) else {
            continue;
        };
        let query = buffer[..len].to_vec();
        let Ok(reply) = socket.try_clone() else {
            continue;
        };
        let shared = shared.clone();
        let spawned = thread::Builder::new()
            .name("dns-query".into())
            .spawn(move || {
                let upstream = shared.upstream;
                let ask = |query: &[u8]| upstream.and_then(|upstream| ask_udp(upstream, query));
                if let Some(answer) = answer(&*shared.directory, client.ip(), &query, ask) {
                    let _ = reply.send_to(&answer, client);
                }
                drop(slot);
            });
        if spawned.is_err() {
            tracing::warn!("cannot start a DNS query thread; query dropped");
        }
    }
}

fn serve_tcp(shared: &Shared, listener: &TcpListener, stop: &AtomicBool) {
    for connection in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(connection) = connection else {
            continue;
        };
        let Ok(peer) = connection.peer_addr() else {
            continue;
        };
        let Some(slot) = shared.admission.admit(peer.ip()) else {
            continue;
        };
        let shared = shared.clone();
        let spawned = thread::Builder::new()
            .name("dns-tcp".into())
            .spawn(move || {
                let _ = converse(&shared, peer.ip(), connection);
                drop(slot);
            });
        if spawned.is_err() {
            tracing::warn!("cannot start a DNS connection thread; connection dropped");
        }
    }
}

/// Answers the length-prefixed queries of one TCP client until it is done, idle, or has
/// had its connection long enough.
fn converse(shared: &Shared, peer: IpAddr, mut client: TcpStream) -> io::Result<()> {
    let opened = Instant::now();
    client.set_read_timeout(Some(TCP_IDLE))?;
    while opened.elapsed() < TCP_LIFETIME {
        let Some(query) = read_framed(&mut client)? else {
            return Ok(());
        };
        let upstream = shared.upstream;
        let ask = |query: &[u8]| upstream.and_then(|upstream| ask_tcp(upstream, query));
        let Some(reply) = answer(&*shared.directory, peer, &query, ask) else {
            return Ok(());
        };
        write_framed(&mut client, &reply)?;
    }
    Ok(())
}

/// One DNS message over TCP (RFC 1035 §4.2.2: a two-byte length, then the message);
/// `None` at a clean end of stream.
fn read_framed(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 2];
    match stream.read_exact(&mut length) {
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut message)?;
    Ok(Some(message))
}

fn write_framed(stream: &mut TcpStream, message: &[u8]) -> io::Result<()> {
    let length = u16::try_from(message.len()).map_err(io::Error::other)?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed)
}

fn ask_tcp(upstream: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&upstream, UPSTREAM_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(UPSTREAM_TIMEOUT)).ok()?;
    write_framed(&mut stream, query).ok()?;
    read_framed(&mut stream).ok().flatten()
}

/// The bytes to send back for `query` from `client`, if any; `ask` gets the upstream's
/// answer. Anything but a plain query with one question is refused here.
fn answer(
    directory: &dyn Directory,
    client: IpAddr,
    query: &[u8],
    ask: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let parsed = Message::from_vec(query).ok()?;
    let plain = parsed.metadata.message_type == MessageType::Query
        && parsed.metadata.op_code == OpCode::Query
        && parsed.queries.len() == 1
        && parsed.answers.is_empty()
        && parsed.authorities.is_empty();
    let [question] = parsed.queries.as_slice() else {
        return error_reply(&parsed, ResponseCode::FormErr);
    };
    if !plain {
        return error_reply(&parsed, ResponseCode::Refused);
    }
    let name = question.name().to_string();
    let (verdict, ticket) = directory.verdict(client, &name);
    match verdict {
        NameVerdict::Refuse => error_reply(&parsed, ResponseCode::NXDomain),
        NameVerdict::Forward => ask(query).or_else(|| error_reply(&parsed, ResponseCode::ServFail)),
        NameVerdict::Pin => {
            let Some(answer) = ask(query) else {
                return error_reply(&parsed, ResponseCode::ServFail);
            };
            let addresses = Message::from_vec(&answer)
                .map(|message| pinnable(&message))
                .unwrap_or_default();
            match directory.pin(client, &name, ticket, &addresses) {
                Ok(()) => Some(answer),
                Err(error) => {
                    tracing::warn!(%client, error = %error, "cannot open resolved addresses; answer withheld");
                    error_reply(&parsed, ResponseCode::ServFail)
                }
            }
        }
    }
}

/// The A and AAAA records of an answer that may be opened, with their lifetimes: never
/// loopback, unspecified, link-local or multicast addresses.
fn pinnable(message: &Message) -> Vec<(IpAddr, u32)> {
    message
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some((IpAddr::V4(a.0), record.ttl)),
            RData::AAAA(aaaa) => Some((IpAddr::V6(aaaa.0), record.ttl)),
            _ => None,
        })
        .filter(|(address, _)| match address {
            IpAddr::V4(v4) => {
                !(v4.is_loopback()
                    || v4.is_unspecified()
                    || v4.is_link_local()
                    || v4.is_multicast()
                    || v4.is_broadcast())
            }
            IpAddr::V6(v6) => {
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_unicast_link_local()
                    || v6.is_multicast())
            }
        })
        .collect()
}

fn error_reply(query: &Message, code: ResponseCode) -> Option<Vec<u8>> {
    let mut reply = Message::error_msg(query.metadata.id, query.metadata.op_code, code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_queries(query.queries.clone());
    reply.to_vec().ok()
}

fn ask_udp(upstream: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let local: SocketAddr = match upstream.ip() {
        IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).ok()?;
    socket.connect(upstream).ok()?;
    socket.set_read_timeout(Some(UPSTREAM_TIMEOUT)).ok()?;
    socket.send(query).ok()?;
    let mut buffer = vec![0u8; MAX_MESSAGE];
    // Only the answer to this query's id is relayed.
    loop {
        let len = socket.recv(&mut buffer).ok()?;
        if len >= 2 && query.len() >= 2 && buffer[..2] == query[..2] {
            buffer.truncate(len);
            return Some(buffer);
        }
    }
}

/// The first `nameserver` of a resolv.conf text, on port 53.
pub(crate) fn upstream_from_resolv_conf(text: &str) -> Option<SocketAddr> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == "nameserver")
            .then(|| words.next()?.parse::<IpAddr>().ok())
            .flatten()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Mutex;

    use hickory_proto::op::{MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, Record, RecordType, rdata};

    use super::*;

    /// A client and the addresses pinned for it.
    type Pinned = (IpAddr, Vec<(IpAddr, u32)>);

    /// Allows `ok.test` (pinned), refuses `no.test`, forwards the rest; records pins.
    #[derive(Default)]
    struct FakeDirectory {
        pinned: Mutex<Vec<Pinned>>,
    }

    impl Directory for FakeDirectory {
        fn verdict(&self, _client: IpAddr, name: &str) -> (NameVerdict, u64) {
            let verdict = match name {
                "ok.test." => NameVerdict::Pin,
                "no.test." => NameVerdict::Refuse,
                _ => NameVerdict::Forward,
            };
            (verdict, 7)
        }

        fn pin(
            &self,
            client: IpAddr,
            name: &str,
            ticket: u64,
            addresses: &[(IpAddr, u32)],
        ) -> io::Result<()> {
            assert_eq!((name, ticket), ("ok.test.", 7));
            self.pinned
                .lock()
                .unwrap()
                .push((client, addresses.to_vec()));
            Ok(())
        }
    }

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut message = Message::new(id, MessageType::Query, OpCode::Query);
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        message.to_vec().unwrap()
    }

    /// The upstream's answer to `query`: its question with 192.0.2.7, TTL 120.
    fn upstream_reply(query: &[u8]) -> Vec<u8> {
        let question = Message::from_vec(query).unwrap();
        let mut reply = Message::response(question.metadata.id, OpCode::Query);
        reply.add_queries(question.queries.clone());
        let name = question.queries[0].name().clone();
        reply.add_answer(Record::from_rdata(
            name,
            120,
            RData::A(rdata::A(Ipv4Addr::new(192, 0, 2, 7))),
        ));
        reply.to_vec().unwrap()
    }

    /// An upstream on loopback, on UDP and TCP at the same port.
    fn upstream() -> SocketAddr {
        let (socket, tcp) = same_port();
        let address = socket.local_addr().unwrap();
        thread::spawn(move || {
            let mut buffer = [0u8; 512];
            while let Ok((len, from)) = socket.recv_from(&mut buffer) {
                socket
                    .send_to(&upstream_reply(&buffer[..len]), from)
                    .unwrap();
            }
        });
        thread::spawn(move || {
            for mut connection in tcp.incoming().flatten() {
                while let Ok(Some(query)) = read_framed(&mut connection) {
                    write_framed(&mut connection, &upstream_reply(&query)).unwrap();
                }
            }
        });
        address
    }

    /// A UDP socket and a TCP listener on one loopback port.
    fn same_port() -> (UdpSocket, TcpListener) {
        loop {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()) {
                return (udp, tcp);
            }
        }
    }

    fn resolve(listen: SocketAddr, name: &str) -> Message {
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.send_to(&query(0x1234, name), listen).unwrap();
        let mut buffer = [0u8; 512];
        let len = client.recv(&mut buffer).unwrap();
        let answer = Message::from_vec(&buffer[..len]).unwrap();
        assert_eq!(answer.metadata.id, 0x1234);
        answer
    }

    fn started() -> (SocketAddr, Arc<FakeDirectory>, Resolver) {
        let directory = Arc::new(FakeDirectory::default());
        let listen = {
            let (udp, _tcp) = same_port();
            udp.local_addr().unwrap()
        };
        let resolver = Resolver::start(
            &[listen],
            Some(upstream()),
            &(Arc::clone(&directory) as Arc<dyn Directory>),
        );
        (listen, directory, resolver)
    }

    #[test]
    fn test_upstream_is_the_first_nameserver() {
        let text = "# comment\nsearch lan\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n";
        assert_eq!(
            upstream_from_resolv_conf(text),
            Some("192.0.2.53:53".parse().unwrap())
        );
        assert_eq!(upstream_from_resolv_conf("search lan\n"), None);
    }

    #[test]
    fn test_refused_name_is_nxdomain_and_never_asked_upstream() {
        let (listen, directory, _resolver) = started();
        let answer = resolve(listen, "no.test.");
        assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
        assert!(answer.answers.is_empty());
        assert!(directory.pinned.lock().unwrap().is_empty());
    }

    #[test]
    fn test_forwarded_name_is_answered_without_pins() {
        let (listen, directory, _resolver) = started();
        let answer = resolve(listen, "any.test.");
        assert_eq!(answer.answers.len(), 1);
        assert!(directory.pinned.lock().unwrap().is_empty());
    }

    #[test]
    fn test_allowed_name_pins_its_addresses_before_answering() {
        let (listen, directory, _resolver) = started();
        let answer = resolve(listen, "ok.test.");
        assert_eq!(answer.answers.len(), 1);
        let pinned = directory.pinned.lock().unwrap().clone();
        assert_eq!(
            pinned,
            vec![(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                vec![(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 120)]
            )]
        );
    }

    #[test]
    fn test_tcp_clients_get_the_same_answers() {
        let (listen, directory, resolver) = started();
        let mut client = TcpStream::connect(listen).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();

        write_framed(&mut client, &query(9, "ok.test.")).unwrap();
        let pinned = Message::from_vec(&read_framed(&mut client).unwrap().unwrap()).unwrap();
        write_framed(&mut client, &query(10, "no.test.")).unwrap();
        let refused = Message::from_vec(&read_framed(&mut client).unwrap().unwrap()).unwrap();

        assert_eq!((pinned.metadata.id, pinned.answers.len()), (9, 1));
        assert_eq!(directory.pinned.lock().unwrap().len(), 1);
        assert_eq!(refused.metadata.response_code, ResponseCode::NXDomain);
        drop(resolver);
    }

    #[test]
    fn test_anything_but_a_plain_one_question_query_is_refused() {
        let (listen, directory, _resolver) = started();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut update = Message::new(3, MessageType::Query, OpCode::Update);
        update.add_query(Query::query(
            Name::from_ascii("ok.test.").unwrap(),
            RecordType::A,
        ));
        let mut two = Message::new(4, MessageType::Query, OpCode::Query);
        two.add_query(Query::query(
            Name::from_ascii("a.test.").unwrap(),
            RecordType::A,
        ));
        two.add_query(Query::query(
            Name::from_ascii("ok.test.").unwrap(),
            RecordType::A,
        ));
        for (message, code) in [
            (update, ResponseCode::Refused),
            (two, ResponseCode::FormErr),
        ] {
            client.send_to(&message.to_vec().unwrap(), listen).unwrap();
            let mut buffer = [0u8; 512];
            let len = client.recv(&mut buffer).unwrap();
            let reply = Message::from_vec(&buffer[..len]).unwrap();
            assert_eq!(reply.metadata.response_code, code);
            assert!(reply.answers.is_empty());
        }
        assert!(directory.pinned.lock().unwrap().is_empty());
    }

    #[test]
    fn test_loopback_and_link_local_answers_are_not_pinned() {
        let mut message = Message::response(1, OpCode::Query);
        let name = Name::from_ascii("ok.test.").unwrap();
        for address in ["127.0.0.1", "169.254.1.1", "192.0.2.9"] {
            let address: std::net::Ipv4Addr = address.parse().unwrap();
            message.add_answer(Record::from_rdata(
                name.clone(),
                60,
                RData::A(rdata::A(address)),
            ));
        }
        assert_eq!(
            pinnable(&message),
            vec![(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)), 60)]
        );
    }
}
