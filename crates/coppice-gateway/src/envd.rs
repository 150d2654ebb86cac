//! Talking to a sandbox's envd over its host-side Unix socket: the gateway's own calls
//! (`/init`, `/metrics`) and forwarding of sandbox traffic, bodies streamed both ways.

use std::path::Path;

use axum::body::Body;
use axum::http::{HeaderMap, Request, Response, header};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

/// How the gateway hands a new sandbox's envd its settings (a seam, so that component tests
/// over fake backends need no envd).
pub trait EnvdInit: Send + Sync + std::fmt::Debug {
    /// Gives the sandbox's envd its access token; a sandbox whose envd cannot be told is
    /// not handed out.
    fn init<'a>(
        &'a self,
        sandbox: &'a coppice_core::Sandbox,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), EnvdCallError>> + Send + 'a>>;
}

/// [`EnvdInit`] over the sandbox's envd Unix socket (`POST /init`).
#[derive(Debug, Clone, Copy, Default)]
pub struct UnixEnvdInit;

impl EnvdInit for UnixEnvdInit {
    fn init<'a>(
        &'a self,
        sandbox: &'a coppice_core::Sandbox,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), EnvdCallError>> + Send + 'a>>
    {
        Box::pin(async move {
            let (Some(endpoints), Some(token)) = (&sandbox.endpoints, &sandbox.access_token) else {
                return Ok(());
            };
            let init = serde_json::json!({ "accessToken": token.expose() });
            post_json(&endpoints.envd_socket, "/init", Some(token.expose()), &init).await?;
            Ok(())
        })
    }
}

/// Why envd could not be reached or answered badly.
#[derive(Debug, thiserror::Error)]
pub enum EnvdCallError {
    /// The socket refused or the connection broke.
    #[error("envd at {socket} is unreachable: {source}")]
    Unreachable {
        /// The socket.
        socket: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// envd answered with a failure status.
    #[error("envd answered {status}: {body}")]
    Status {
        /// The status.
        status: u16,
        /// Its body, as text.
        body: String,
    },
}

fn unreachable(
    socket: &Path,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> EnvdCallError {
    EnvdCallError::Unreachable {
        socket: socket.display().to_string(),
        source: source.into(),
    }
}

/// Sends `request` to envd at `socket` and returns its response with the body still
/// streaming. A protocol switch (WebSocket) is passed through byte for byte once both sides
/// have switched.
///
/// # Errors
/// [`EnvdCallError::Unreachable`].
pub async fn forward(
    socket: &Path,
    request: Request<Body>,
) -> Result<Response<Body>, EnvdCallError> {
    // The socket's directory is the sandbox's port, where sandbox root may plant a link.
    let pinned = coppice_init::socket::pin(socket).map_err(|e| unreachable(socket, e))?;
    let stream = tokio::net::UnixStream::connect(pinned.path())
        .await
        .map_err(|e| unreachable(socket, e))?;
    forward_over(socket, TokioIo::new(stream), request).await
}

/// The `Upgrade` token of envd's tunnels.
const TUNNEL_PROTOCOL: &str = "coppice-tunnel";

/// Sends `request` to `port` on the sandbox's loopback, through a tunnel envd at `socket`
/// opens (authorised by the sandbox's `token`); the answer streams back as from
/// [`forward`].
///
/// # Errors
/// [`EnvdCallError::Status`] when envd cannot reach the port (nothing listens there);
/// [`EnvdCallError::Unreachable`] when envd or the tunnel fails.
pub async fn forward_to_port(
    socket: &Path,
    token: Option<&str>,
    port: u16,
    request: Request<Body>,
) -> Result<Response<Body>, EnvdCallError> {
    // The socket's directory is the sandbox's port, where sandbox root may plant a link.
    let pinned = coppice_init::socket::pin(socket).map_err(|e| unreachable(socket, e))?;
    let stream = tokio::net::UnixStream::connect(pinned.path())
        .await
        .map_err(|e| unreachable(socket, e))?;
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(socket, e))?;
    tokio::spawn(connection.with_upgrades());
    let mut open = Request::get(format!("/tunnel/{port}"))
        .header(header::HOST, "envd")
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, TUNNEL_PROTOCOL);
    if let Some(token) = token {
        open = open.header("x-access-token", token);
    }
    let open = open
        .body(Body::empty())
        .map_err(|e| unreachable(socket, e))?;
    let mut response = sender
        .send_request(open)
        .await
        .map_err(|e| unreachable(socket, e))?;
    if response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status().as_u16();
        // envd's refusals are short; a sandbox cannot make the gateway hold more.
        let body = http_body_util::Limited::new(response.into_body(), 64 << 10)
            .collect()
            .await
            .map(|body| String::from_utf8_lossy(&body.to_bytes()).into_owned())
            .unwrap_or_default();
        return Err(EnvdCallError::Status { status, body });
    }
    let tunnel = hyper::upgrade::on(&mut response)
        .await
        .map_err(|e| unreachable(socket, e))?;
    forward_over(socket, tunnel, request).await
}

/// Sends `request` over `io` (a connection to envd, or a tunnel through it).
async fn forward_over<I>(
    socket: &Path,
    io: I,
    mut request: Request<Body>,
) -> Result<Response<Body>, EnvdCallError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    // Taken before the request moves on: the client's side of a protocol switch.
    let client_upgrade = request
        .headers()
        .contains_key(header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut request));
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(4 << 20)
        .handshake(io)
        .await
        .map_err(|e| unreachable(socket, e))?;
    tokio::spawn(connection.with_upgrades());
    strip_hop_by_hop(request.headers_mut());
    let mut response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(socket, e))?;
    if response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let (Ok(client), Ok(upstream)) = tokio::join!(client_upgrade, upstream_upgrade) {
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
    }
    Ok(response.map(Body::new))
}

/// Drops the headers that describe one hop (RFC 9110 §7.6.1), keeping upgrades intact.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let upgrading = headers.contains_key(header::UPGRADE);
    for name in ["keep-alive", "proxy-connection", "te", "trailer"] {
        headers.remove(name);
    }
    if !upgrading {
        headers.remove(header::CONNECTION);
    }
}

/// POSTs JSON to envd and expects a 2xx.
///
/// # Errors
/// [`EnvdCallError`].
pub async fn post_json(
    socket: &Path,
    path: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> Result<Bytes, EnvdCallError> {
    let mut request = Request::post(path)
        .header(header::HOST, "envd")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header("x-access-token", token);
    }
    let request = request
        .body(Body::from(body.to_string()))
        .map_err(|e| unreachable(socket, e))?;
    collect(socket, request).await
}

/// GETs `path` from envd and expects a 2xx.
///
/// # Errors
/// [`EnvdCallError`].
pub async fn get(socket: &Path, path: &str, token: Option<&str>) -> Result<Bytes, EnvdCallError> {
    let mut request = Request::get(path).header(header::HOST, "envd");
    if let Some(token) = token {
        request = request.header("x-access-token", token);
    }
    let request = request
        .body(Body::empty())
        .map_err(|e| unreachable(socket, e))?;
    collect(socket, request).await
}

async fn collect(socket: &Path, request: Request<Body>) -> Result<Bytes, EnvdCallError> {
    let response = forward(socket, request).await?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(socket, e))?
        .to_bytes();
    if status.is_success() {
        Ok(body)
    } else {
        Err(EnvdCallError::Status {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}
