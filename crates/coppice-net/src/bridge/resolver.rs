//! The sandboxes' DNS resolver on the bridge. It knows each sandbox by the source address of
//! its query: a name the sandbox may not resolve gets NXDOMAIN without leaving the host; any
//! other question is relayed upstream on a socket of its own; and the addresses in an answer
//! for a name in the sandbox's `allowOut` are opened to it (pinned into its nftables set for
//! the answer's lifetime) before the answer is passed on.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RData;

use crate::egress::NameVerdict;

/// How long one query waits for its upstream answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(4);
/// Queries in flight at most; more are dropped (clients retry).
const MAX_IN_FLIGHT: usize = 256;
/// Largest DNS message over UDP with EDNS.
const MAX_MESSAGE: usize = 4096;
/// How often the listening threads look at the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// Who may resolve what, and how answers become reachable.
pub(crate) trait Directory: Send + Sync + 'static {
    /// The verdict for `name` asked by the sandbox at `client`; unknown clients are refused.
    fn verdict(&self, client: IpAddr, name: &str) -> NameVerdict;

    /// Opens `addresses` (each with its lifetime in seconds) to the sandbox at `client`.
    ///
    /// # Errors
    /// The rules could not be changed; the answer is then withheld.
    fn pin(&self, client: IpAddr, addresses: &[(IpAddr, u32)]) -> io::Result<()>;
}

/// A running resolver; dropping it stops its listeners.
#[derive(Debug)]
pub(crate) struct Resolver {
    stop: Arc<AtomicBool>,
}

impl Resolver {
    /// Listens on each of `listen` and answers for `directory`, relaying to `upstream`.
    /// Addresses that cannot be bound are logged and skipped.
    pub(crate) fn start(
        listen: &[SocketAddr],
        upstream: SocketAddr,
        directory: &Arc<dyn Directory>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(AtomicUsize::new(0));
        for address in listen {
            let socket = match UdpSocket::bind(address) {
                Ok(socket) => socket,
                Err(error) => {
                    tracing::warn!(%address, error = %error, "sandbox resolver not listening here");
                    continue;
                }
            };
            let _ = socket.set_read_timeout(Some(POLL));
            let server = Server {
                socket,
                upstream,
                directory: Arc::clone(directory),
                in_flight: Arc::clone(&in_flight),
            };
            let stop = Arc::clone(&stop);
            let started = thread::Builder::new()
                .name("dns-resolver".into())
                .spawn(move || server.serve(&stop));
            if let Err(error) = started {
                tracing::warn!(%address, error = %error, "sandbox resolver not started");
            }
        }
        Self { stop }
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

struct Server {
    socket: UdpSocket,
    upstream: SocketAddr,
    directory: Arc<dyn Directory>,
    in_flight: Arc<AtomicUsize>,
}

impl Server {
    fn serve(&self, stop: &AtomicBool) {
        let mut buffer = [0u8; MAX_MESSAGE];
        while !stop.load(Ordering::SeqCst) {
            let Ok((len, client)) = self.socket.recv_from(&mut buffer) else {
                continue;
            };
            if self.in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let query = buffer[..len].to_vec();
            let (Ok(reply), directory, in_flight, upstream) = (
                self.socket.try_clone(),
                Arc::clone(&self.directory),
                Arc::clone(&self.in_flight),
                self.upstream,
            ) else {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                continue;
            };
            let spawned = thread::Builder::new()
                .name("dns-query".into())
                .spawn(move || {
                    if let Some(answer) = answer(&*directory, upstream, client.ip(), &query) {
                        let _ = reply.send_to(&answer, client);
                    }
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            if spawned.is_err() {
                tracing::warn!("cannot start a DNS query thread; query dropped");
            }
        }
    }
}

/// The bytes to send back for `query` from `client`, if any.
fn answer(
    directory: &dyn Directory,
    upstream: SocketAddr,
    client: IpAddr,
    query: &[u8],
) -> Option<Vec<u8>> {
    let parsed = Message::from_vec(query).ok()?;
    let question = parsed.queries.first()?;
    match directory.verdict(client, &question.name().to_string()) {
        NameVerdict::Refuse => error_reply(&parsed, ResponseCode::NXDomain),
        NameVerdict::Forward => ask(upstream, query),
        NameVerdict::Pin => {
            let answer = ask(upstream, query)?;
            let addresses = Message::from_vec(&answer)
                .map(|message| addresses(&message))
                .unwrap_or_default();
            match directory.pin(client, &addresses) {
                Ok(()) => Some(answer),
                Err(error) => {
                    tracing::warn!(%client, error = %error, "cannot open resolved addresses; answer withheld");
                    error_reply(&parsed, ResponseCode::ServFail)
                }
            }
        }
    }
}

/// The A and AAAA records of an answer, with their lifetimes.
fn addresses(message: &Message) -> Vec<(IpAddr, u32)> {
    message
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some((IpAddr::V4(a.0), record.ttl)),
            RData::AAAA(aaaa) => Some((IpAddr::V6(aaaa.0), record.ttl)),
            _ => None,
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

fn ask(upstream: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
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
        fn verdict(&self, _client: IpAddr, name: &str) -> NameVerdict {
            match name {
                "ok.test." => NameVerdict::Pin,
                "no.test." => NameVerdict::Refuse,
                _ => NameVerdict::Forward,
            }
        }

        fn pin(&self, client: IpAddr, addresses: &[(IpAddr, u32)]) -> io::Result<()> {
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

    /// An upstream on loopback that answers every A question with 192.0.2.7, TTL 120.
    fn upstream() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = socket.local_addr().unwrap();
        thread::spawn(move || {
            let mut buffer = [0u8; 512];
            while let Ok((len, from)) = socket.recv_from(&mut buffer) {
                let question = Message::from_vec(&buffer[..len]).unwrap();
                let mut reply = Message::response(question.metadata.id, OpCode::Query);
                reply.add_queries(question.queries.clone());
                let name = question.queries[0].name().clone();
                reply.add_answer(Record::from_rdata(
                    name,
                    120,
                    RData::A(rdata::A(Ipv4Addr::new(192, 0, 2, 7))),
                ));
                socket.send_to(&reply.to_vec().unwrap(), from).unwrap();
            }
        });
        address
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
        let listen = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let resolver = Resolver::start(
            &[listen],
            upstream(),
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
}
