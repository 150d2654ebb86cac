//! `GET /tunnel/{port}` (host side only): switches the connection to a raw byte stream
//! spliced to `localhost:{port}` inside the sandbox, so the gateway can serve the sandbox's
//! ports without depending on its network settings, services bound to loopback included.

use std::net::{Ipv4Addr, Ipv6Addr};

use axum::body::Body;
use axum::extract::{Path, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::error_response;

/// The `Upgrade` token of a tunnel.
pub const TUNNEL_PROTOCOL: &str = "coppice-tunnel";

/// Opens the tunnel, or answers 502 when nothing listens on the port.
pub async fn open(Path(port): Path<u16>, mut request: Request) -> Response {
    let wants_tunnel = request.headers().get(header::UPGRADE).is_some_and(|value| {
        value
            .as_bytes()
            .eq_ignore_ascii_case(TUNNEL_PROTOCOL.as_bytes())
    });
    if !wants_tunnel {
        return error_response(
            StatusCode::BAD_REQUEST,
            &format!("a tunnel needs \"Upgrade: {TUNNEL_PROTOCOL}\""),
        );
    }
    if port == 0 {
        return error_response(StatusCode::BAD_REQUEST, "port 0 is not a port");
    }
    let mut upstream = match connect(port).await {
        Ok(stream) => stream,
        Err(error) => {
            return error_response(
                StatusCode::BAD_GATEWAY,
                &format!("nothing accepts connections on port {port} in the sandbox: {error}"),
            );
        }
    };
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            let mut client = TokioIo::new(upgraded);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, "upgrade"),
            (header::UPGRADE, TUNNEL_PROTOCOL),
        ],
        Body::empty(),
    )
        .into_response()
}

/// `localhost:port` over IPv4, then IPv6.
async fn connect(port: u16) -> std::io::Result<TcpStream> {
    match TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await {
        Ok(stream) => Ok(stream),
        Err(v4) => TcpStream::connect((Ipv6Addr::LOCALHOST, port))
            .await
            .map_err(|_| v4),
    }
}
