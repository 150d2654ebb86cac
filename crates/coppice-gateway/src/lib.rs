//! The coppice gateway: the HTTP front door over `SandboxManager`, and the `coppiced` daemon
//! that assembles the backends.
//!
//! # Layout
//! - [`config`]: the daemon's validated configuration.
//! - [`routes`]: one module per resource; [`router`] builds the whole app.
//! - [`serve`]: runs the app on a listener until the shutdown future resolves.
//!
//! The E2B control-plane API and sandbox traffic routing arrive with the gateway work; today
//! the router answers `GET /health` once the manager has reconciled its sandboxes.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod routes;

use std::future::Future;

use axum::Router;
use coppice_core::SandboxManager;
use tokio::net::TcpListener;

/// What every handler can reach. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Every sandbox operation.
    pub manager: SandboxManager,
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(routes::health::routes())
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains open connections.
///
/// # Errors
/// The server's I/O failure.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
