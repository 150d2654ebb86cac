//! `GET /templates`: the templates sandboxes can be created from.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;

use crate::AppState;
use crate::error::ApiError;
use crate::wire::rfc3339;

/// The template routes.
pub fn routes() -> Router<AppState> {
    Router::new().route("/templates", get(list))
}

async fn list(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let templates = state.manager.templates().await?;
    Ok(Json(serde_json::Value::Array(
        templates
            .iter()
            .map(|t| {
                serde_json::json!({
                    "templateID": t.id.to_string(),
                    "buildID": t.id.to_string(),
                    "aliases": [t.id.to_string()],
                    "public": true,
                    "cpuCount": 1,
                    "memoryMB": 512,
                    "diskSizeMB": t.size_bytes >> 20,
                    "createdAt": rfc3339(t.created_at),
                    "updatedAt": rfc3339(t.created_at),
                    "envdVersion": state.envd_version,
                    "buildStatus": "ready",
                })
            })
            .collect(),
    )))
}
