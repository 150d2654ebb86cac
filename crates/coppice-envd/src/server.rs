//! The envd HTTP service: Connect RPCs (`process.Process`, `filesystem.Filesystem`) and the
//! plain routes behind one access-token check, served on a Unix socket (host side) and on TCP
//! inside the sandbox.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tower_http::decompression::RequestDecompressionLayer;

use crate::filesystem::service::FilesystemService;
use crate::http;
use crate::process::service::ProcessService;
use crate::state::Envd;

/// Largest Connect request body (unary or one streamed message).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Who reaches a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// The host (the Unix socket): everything, including `/init` and `/tunnel`.
    Host,
    /// Anything in the sandbox's network (TCP 49983): everything but `/init` and `/tunnel`.
    Sandbox,
}

/// The whole envd service for one kind of listener.
pub fn router(envd: &Arc<Envd>, exposure: Exposure) -> Router {
    let rpc = connectrpc::Router::new()
        .add_service(Arc::new(ProcessService::new(Arc::clone(envd))))
        .add_service(Arc::new(FilesystemService::new(Arc::clone(envd))));
    let limits = connectrpc::Limits::default()
        .with_max_request_body_size(MAX_MESSAGE_BYTES)
        .with_max_message_size(MAX_MESSAGE_BYTES);
    let rpc = connectrpc::ConnectRpcService::new(rpc).with_limits(limits);
    let files = Router::new()
        .route(
            "/files",
            get(http::files::download).post(http::files::upload),
        )
        .layer(
            RequestDecompressionLayer::new()
                .gzip(true)
                .pass_through_unaccepted(false),
        )
        .layer(DefaultBodyLimit::disable());
    let mut app = Router::new()
        .route("/health", get(http::health))
        .route("/envs", get(http::envs))
        .route("/metrics", get(http::metrics))
        .merge(files);
    if exposure == Exposure::Host {
        app = app
            .route("/init", post(http::init))
            .route("/tunnel/{port}", get(http::tunnel::open));
    }
    app.fallback_service(rpc)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(envd),
            crate::auth::require_token,
        ))
        .with_state(Arc::clone(envd))
}

/// Serves `router` on a Unix listener until the task is dropped.
///
/// # Errors
/// Accept errors that are not per-connection.
pub async fn serve_unix(listener: tokio::net::UnixListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}

/// Serves `router` on a TCP listener until the task is dropped.
///
/// # Errors
/// Accept errors that are not per-connection.
pub async fn serve_tcp(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}
