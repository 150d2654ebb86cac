//! A stand-in sandbox init for other crates' tests: it answers the control channel in the
//! real protocol without running anything (a real init reaps every child of its process,
//! which a test process must not have done to its other tests' children).

use std::io::{self, BufReader, Read, Write};
use std::thread;

use crate::control::{
    ControlRequest, ControlResponse, WireExit, read_header, read_payload, write_frame,
};

/// Answers one connection: a ping with a pong, an exec with exit code 0 and its argv, joined
/// by spaces, as standard output.
///
/// # Errors
/// The connection failed or broke the protocol.
pub fn answer<S>(stream: &S) -> io::Result<()>
where
    for<'a> &'a S: Read + Write,
{
    let mut reader = BufReader::new(stream);
    match read_header(&mut reader)? {
        ControlRequest::Ping => write_frame(&mut &*stream, &ControlResponse::Pong, &[]),
        ControlRequest::Exec {
            argv, stdin_len, ..
        } => {
            read_payload(&mut reader, stdin_len)?;
            let stdout = argv.join(" ").into_bytes();
            let header = ControlResponse::Exited {
                status: WireExit::Code(0),
                stdout_len: stdout.len(),
                stderr_len: 0,
                truncated: false,
                timed_out: false,
            };
            write_frame(&mut &*stream, &header, &[&stdout])
        }
    }
}

/// Answers every connection `accept` hands over, each on a thread of its own, until it
/// fails.
pub fn serve<S, A>(accept: A)
where
    S: Send + 'static,
    for<'a> &'a S: Read + Write,
    A: Fn() -> io::Result<S> + Send + 'static,
{
    thread::spawn(move || {
        while let Ok(stream) = accept() {
            thread::spawn(move || {
                let _ = answer(&stream);
            });
        }
    });
}
