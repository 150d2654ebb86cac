//! Host-side Unix sockets in front of a VM's TCP services: the gateway and the runtime reach
//! a VM's agent and envd exactly as they reach a jail's or a namespace sandbox's (a socket in
//! the run dir), and each connection is carried to the guest over the sandbox's network.
//! A preamble (the agent's token) is written to the guest before the caller's bytes.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

/// How long a connection to the guest may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// One relay; dropping it stops accepting and removes its socket (open connections finish).
#[derive(Debug)]
pub struct Relay {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Listens on a new owner-only socket at `path` and carries each connection to `target`,
    /// after writing `preamble` there.
    ///
    /// # Errors
    /// The socket cannot be bound or the thread started.
    pub fn start(path: &Path, target: SocketAddr, preamble: Vec<u8>) -> io::Result<Self> {
        let listener = coppice_init::envd::bind_private(path).map_err(io::Error::other)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let preamble = Arc::new(preamble);
        thread::Builder::new()
            .name("vm-relay".into())
            .spawn(move || accept_loop(&listener, target, &preamble, &stopping))?;
        Ok(Self {
            path: path.to_owned(),
            stop,
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept so the thread sees the flag.
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: &UnixListener, target: SocketAddr, preamble: &[u8], stop: &AtomicBool) {
    for client in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let preamble = preamble.to_vec();
        let _ = thread::Builder::new()
            .name("vm-relay-conn".into())
            .spawn(move || {
                // A guest that cannot be reached closes the client's connection: it sees
                // the same failure as a sandbox whose init is gone.
                let _ = carry(&client, target, &preamble);
            });
    }
}

fn carry(client: &UnixStream, target: SocketAddr, preamble: &[u8]) -> io::Result<()> {
    let guest = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
    guest.set_nodelay(true)?;
    (&guest).write_all(preamble)?;
    let (client_up, guest_up) = (client.try_clone()?, guest.try_clone()?);
    let upstream = thread::Builder::new()
        .name("vm-relay-up".into())
        .spawn(move || {
            let _ = io::copy(&mut &client_up, &mut &guest_up);
            let _ = guest_up.shutdown(Shutdown::Write);
        })?;
    let _ = io::copy(&mut &guest, &mut &*client);
    let _ = client.shutdown(Shutdown::Write);
    let _ = upstream.join();
    Ok(())
}

/// Reads a preamble line of at most `max` bytes from `stream` without reading past it, so
/// what follows stays for the protocol behind it.
///
/// # Errors
/// The stream failed, ended, or sent a longer line.
pub fn read_preamble(mut stream: impl Read, max: usize) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if byte[0] == b'\n' {
            return Ok(line);
        }
        if line.len() == max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "preamble too long",
            ));
        }
        line.push(byte[0]);
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn test_each_connection_reaches_the_guest_after_the_preamble() {
        let guest = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = guest.local_addr().unwrap();
        // The guest: checks the preamble, then echoes lines in upper case.
        thread::spawn(move || {
            for stream in guest.incoming().flatten() {
                thread::spawn(move || {
                    let token = read_preamble(&stream, 64).unwrap();
                    assert_eq!(token, b"t0k");
                    let mut reader = io::BufReader::new(&stream);
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap() > 0 {
                        (&stream).write_all(line.to_uppercase().as_bytes()).unwrap();
                        line.clear();
                    }
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let relay = Relay::start(&path, target, b"t0k\n".to_vec()).unwrap();
        for word in ["ping", "exec"] {
            let mut client = UnixStream::connect(&path).unwrap();
            client.write_all(format!("{word}\n").as_bytes()).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            let mut answer = String::new();
            client.read_to_string(&mut answer).unwrap();
            assert_eq!(answer, format!("{}\n", word.to_uppercase()));
        }
        drop(relay);
        assert!(!path.exists(), "the socket goes with the relay");
    }

    #[test]
    fn test_an_unreachable_guest_closes_the_client() {
        let unused = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = unused.local_addr().unwrap();
        drop(unused);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("envd.sock");
        let _relay = Relay::start(&path, target, Vec::new()).unwrap();
        let mut client = UnixStream::connect(&path).unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).unwrap();
        assert!(answer.is_empty());
    }

    #[test]
    fn test_a_preamble_is_read_to_its_end_and_no_further() {
        let mut input: &[u8] = b"secret\n{\"kind\":\"ping\"}\n";
        assert_eq!(read_preamble(&mut input, 16).unwrap(), b"secret");
        assert_eq!(input, b"{\"kind\":\"ping\"}\n");
        assert!(read_preamble(&b"x".repeat(40)[..], 16).is_err());
        assert!(read_preamble(&b"short"[..], 16).is_err());
    }
}
