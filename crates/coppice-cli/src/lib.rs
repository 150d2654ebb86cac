//! The `coppice` command line: clap structs, output formatting and exit codes. Sandbox
//! commands arrive with the gateway's typed client; today it checks a gateway's health.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// `coppice`: talk to a coppice gateway.
#[derive(Debug, Parser)]
#[command(
    name = "coppice",
    version,
    about = "Command-line client of a coppice gateway"
)]
pub struct Cli {
    /// Gateway address (host:port), as the SDKs' `E2B_API_URL` without the scheme.
    #[arg(
        long,
        env = "COPPICE_ADDR",
        default_value = "127.0.0.1:3000",
        global = true
    )]
    pub addr: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Checks that the gateway answers `GET /health`; exit code 0 when it does.
    Health,
}

/// Runs a parsed command line; returns what to print.
///
/// # Errors
/// The gateway is unreachable or unhealthy.
pub fn run(cli: &Cli) -> anyhow::Result<String> {
    match cli.command {
        Command::Health => health(&cli.addr),
    }
}

fn health(addr: &str) -> anyhow::Result<String> {
    let address = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .context("reading the answer")?;
    let status = response.split_whitespace().nth(1).unwrap_or_default();
    anyhow::ensure!(status == "200", "gateway at {addr} answered {status:?}");
    Ok(format!("gateway at {addr} is healthy"))
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    fn serve_once(answer: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // Read the whole request first: closing with unread bytes would reset the
            // connection under the client.
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buffer).unwrap();
                assert!(n > 0, "client closed early");
                request.extend_from_slice(&buffer[..n]);
            }
            stream.write_all(answer.as_bytes()).unwrap();
        });
        addr
    }

    #[test]
    fn test_health_ok_gateway_succeeds() {
        let addr = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert!(health(&addr).is_ok());
    }

    #[test]
    fn test_health_failing_gateway_is_an_error() {
        let addr = serve_once("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
        assert!(health(&addr).unwrap_err().to_string().contains("503"));
    }

    #[test]
    fn test_cli_parses_health_with_address() {
        let cli = Cli::try_parse_from(["coppice", "--addr", "127.0.0.1:9", "health"]).unwrap();
        assert_eq!(cli.addr, "127.0.0.1:9");
    }
}
