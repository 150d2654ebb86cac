//! `GET /health`: answers 200 once the daemon is serving (the manager reconciles before the
//! listener accepts, so a 200 means every surviving sandbox has been re-adopted). Tested with
//! the rest of the router in `tests/api.rs`.

use axum::Router;
use axum::routing::get;

use crate::AppState;

/// The health routes.
pub fn routes() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

async fn health() -> &'static str {
    "Health check successful"
}
