//! A test envd on a Unix socket in a temp dir, and a small HTTP/1.1 client for it.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use coppice_envd::{Envd, EnvdConfig, Exposure};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// A running envd.
pub struct TestEnvd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub envd: Arc<Envd>,
}

/// The account name of the user running the tests (envd cannot switch users here).
pub fn current_user() -> String {
    let uid = rustix::process::geteuid().as_raw().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find(|line| line.split(':').nth(2) == Some(uid.as_str()))
        .and_then(|line| line.split(':').next())
        .unwrap()
        .to_owned()
}

/// Starts envd on a fresh socket, with the current user as default and a short output grace.
pub async fn start() -> TestEnvd {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("envd.sock");
    let config = EnvdConfig {
        default_user: current_user(),
        default_workdir: Some(dir.path().to_path_buf()),
        ..EnvdConfig::default()
    };
    let envd = Envd::new(config);
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let router = coppice_envd::router(&envd, Exposure::Host);
    tokio::spawn(coppice_envd::server::serve_unix(listener, router));
    TestEnvd { dir, socket, envd }
}

/// A response, whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The JSON messages of a Connect stream, the end-stream one last.
    pub fn envelopes(&self) -> Vec<(u8, serde_json::Value)> {
        let mut out = Vec::new();
        let mut rest = &self.body[..];
        while rest.len() >= 5 {
            let flags = rest[0];
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            let payload = &rest[5..5 + len];
            out.push((flags, serde_json::from_slice(payload).unwrap()));
            rest = &rest[5 + len..];
        }
        assert!(rest.is_empty(), "trailing bytes in stream");
        out
    }
}

/// Sends one request over the socket.
pub async fn send(
    socket: &PathBuf,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "envd");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

/// A unary Connect call with a JSON body.
pub async fn unary(socket: &PathBuf, rpc: &str, body: &str) -> Answer {
    send(
        socket,
        "POST",
        &format!("/{rpc}"),
        &[
            ("content-type", "application/json"),
            ("connect-protocol-version", "1"),
        ],
        body.to_owned(),
    )
    .await
}

/// Frames one JSON message as a Connect envelope.
pub fn envelope(message: &serde_json::Value) -> Vec<u8> {
    let payload = serde_json::to_vec(message).unwrap();
    let mut out = vec![0u8];
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// A server-streaming Connect call with a JSON request; returns the whole stream.
pub async fn stream(
    socket: &PathBuf,
    rpc: &str,
    message: &serde_json::Value,
    headers: &[(&str, &str)],
) -> Answer {
    let mut all = vec![
        ("content-type", "application/connect+json"),
        ("connect-protocol-version", "1"),
    ];
    all.extend_from_slice(headers);
    send(socket, "POST", &format!("/{rpc}"), &all, envelope(message)).await
}

/// Writes `request` (raw HTTP/1.1) while reading the answer, ignoring write errors: a server
/// may answer and close before an oversized body is sent whole.
pub async fn send_raw(socket: &PathBuf, request: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
    });
    let mut answer = Vec::new();
    let _ = reader.read_to_end(&mut answer).await;
    writing.abort();
    String::from_utf8_lossy(&answer).into_owned()
}
