//! The coppice gateway: the HTTP front door over `SandboxManager`, and the `coppiced` daemon
//! that assembles the backends.
//!
//! # Layout
//! - [`config`]: the daemon's validated configuration.
//! - [`routes`]: one module per resource; [`router`] builds the whole app.
//! - [`serve`]: runs the app on a listener until the shutdown future resolves.
//!
//! - [`auth`]: API keys; [`error`]: the `{code, message}` error body; [`wire`]: E2B JSON.
//! - [`proxy`]: sandbox traffic (by header or Host) to the sandbox's envd; [`envd`]: the
//!   Unix-socket client for it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
#[cfg(feature = "client")]
pub mod client;
pub mod config;
pub mod envd;
pub mod error;
pub mod lifecycle;
pub mod proxy;
pub mod routes;
pub mod wire;

use std::future::Future;

use axum::Router;
use coppice_core::SandboxManager;
use tokio::net::TcpListener;

/// What every handler can reach. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Every sandbox operation.
    pub manager: SandboxManager,
    /// The keys the control plane accepts.
    pub api_keys: auth::ApiKeys,
    /// The envd version reported to the SDKs (it unlocks their feature gates).
    pub envd_version: &'static str,
    /// How new sandboxes' envd gets its settings.
    pub envd_init: std::sync::Arc<dyn envd::EnvdInit>,
}

/// The whole HTTP application: `/health` open, the control plane behind API keys, and
/// sandbox traffic routed before either.
pub fn router(state: AppState) -> Router {
    let (template_builds, template_uploads) = routes::e2b_builds::routes();
    let control_plane = Router::new()
        .merge(template_builds)
        .merge(routes::sandboxes::routes())
        .merge(routes::templates::routes())
        .merge(routes::template_tags::routes())
        .merge(routes::builds::routes())
        .merge(routes::snapshots::routes())
        .merge(routes::volumes::routes())
        .merge(routes::dir_snapshots::routes())
        .merge(routes::network::routes())
        .fallback(|| async { error::ApiError::not_found("no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(
            state.api_keys.clone(),
            auth::require_api_key,
        ));
    Router::new()
        .merge(routes::health::routes())
        .merge(routes::volume_content::routes())
        .merge(template_uploads)
        .merge(control_plane)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            proxy::route_sandbox_traffic,
        ))
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
    // Without TCP_NODELAY, a response written in two pieces waits for the client's delayed ACK
    // (about 40 ms per request on Linux).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
