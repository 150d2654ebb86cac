//! A stand-in for the E2B control plane in front of one real sandbox's envd, so that the
//! unmodified E2B SDKs can drive envd before the gateway serves the real API: `POST
//! /v2/sandboxes` hands out that sandbox (passing `envVars` and an access token to envd's
//! `/init`), and a second port splices every connection to envd's Unix socket byte for byte.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

/// The running stub.
#[derive(Debug)]
pub struct E2bStub {
    /// `E2B_API_URL`.
    pub api_url: String,
    /// `E2B_SANDBOX_URL`.
    pub sandbox_url: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for E2bStub {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[derive(Debug)]
struct Shared {
    sandbox_id: String,
    envd_socket: PathBuf,
    access_token: String,
    envd_version: String,
}

/// Serves the stub on two loopback ports for the sandbox `sandbox_id` whose envd listens on
/// `envd_socket`.
///
/// # Errors
/// The ports cannot be bound.
pub async fn start(
    sandbox_id: &str,
    envd_socket: &Path,
    access_token: &str,
    envd_version: &str,
) -> anyhow::Result<E2bStub> {
    let shared = Arc::new(Shared {
        sandbox_id: sandbox_id.to_owned(),
        envd_socket: envd_socket.to_owned(),
        access_token: access_token.to_owned(),
        envd_version: envd_version.to_owned(),
    });
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api_addr = api.local_addr()?;
    let app = axum::Router::new()
        .route("/v2/sandboxes", post(create))
        .route(
            "/sandboxes/{id}",
            delete(|| async { StatusCode::NO_CONTENT }),
        )
        .route(
            "/sandboxes/{id}/timeout",
            post(|| async { StatusCode::NO_CONTENT }),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({"code": 404, "message": "not in the stub"})),
            )
        })
        .with_state(Arc::clone(&shared));
    let api_task = tokio::spawn(async move {
        let _ = axum::serve(api, app).await;
    });
    let plane = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let plane_addr = plane.local_addr()?;
    let socket = shared.envd_socket.clone();
    let plane_task = tokio::spawn(splice_all(plane, socket));
    Ok(E2bStub {
        api_url: url(api_addr),
        sandbox_url: url(plane_addr),
        tasks: vec![api_task, plane_task],
    })
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

async fn splice_all(listener: tokio::net::TcpListener, socket: PathBuf) {
    while let Ok((mut client, _)) = listener.accept().await {
        let socket = socket.clone();
        tokio::spawn(async move {
            if let Ok(mut envd) = tokio::net::UnixStream::connect(&socket).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut envd).await;
            }
        });
    }
}

async fn create(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<serde_json::Value>,
) -> axum::response::Response {
    let init = serde_json::json!({
        "envVars": body.get("envVars").cloned().unwrap_or_else(|| serde_json::json!({})),
        "accessToken": shared.access_token,
    });
    // Once a token is set, `/init` itself needs it (a resumed sandbox is re-initialised).
    let headers = [("x-access-token", shared.access_token.as_str())];
    if let Err(error) = post_unix(&shared.envd_socket, "/init", &headers, &init).await {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({"code": 500, "message": format!("{error:#}")})),
        )
            .into_response();
    }
    (
        StatusCode::CREATED,
        Json(serde_json::json!({
            "sandboxID": shared.sandbox_id,
            "templateID": "base",
            "clientID": "coppice",
            "envdVersion": shared.envd_version,
            "envdAccessToken": shared.access_token,
            "domain": null,
        })),
    )
        .into_response()
}

/// POSTs JSON to envd over its Unix socket; fails unless it answers 2xx.
///
/// # Errors
/// Connection failures or a non-2xx answer.
pub async fn post_unix(
    socket: &Path,
    path: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> anyhow::Result<Bytes> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("connect {}", socket.display()))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", "envd")
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        status.is_success(),
        "{path} answered {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    Ok(bytes)
}
