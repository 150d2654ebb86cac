//! envd's plain HTTP routes: `/health`, `/init` and `/tunnel/{port}` (host side only),
//! `/envs`, `/metrics`, and `/files` (in `files`).

mod drain;
pub mod files;
mod metrics;
pub mod tunnel;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::EnvdError;
use crate::state::Envd;

/// The error body of every plain route: `{"code": <int>, "message": "…"}`.
pub fn error_response(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "code": status.as_u16(), "message": message });
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for EnvdError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        error_response(status, &self.to_string())
    }
}

/// `GET /health`: 204 while envd serves.
pub async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `GET /envs`: the sandbox's variables.
pub async fn envs(State(envd): State<Arc<Envd>>) -> Json<BTreeMap<String, String>> {
    Json(envd.settings().env)
}

/// `POST /init`: what the control plane tells envd once the sandbox is created or resumed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitRequest {
    /// Variables for every later process (merged over the current ones).
    #[serde(default)]
    env_vars: Option<BTreeMap<String, String>>,
    /// The token every later request must carry.
    #[serde(default)]
    access_token: Option<String>,
    /// The user of requests that name none.
    #[serde(default)]
    default_user: Option<String>,
    /// The working directory of requests that name none.
    #[serde(default)]
    default_workdir: Option<String>,
    /// The caller's clock (Unix ms). A sandbox shares the host's clock, so there is nothing
    /// to correct; accepted for compatibility.
    #[serde(default)]
    #[allow(dead_code)]
    timestamp: Option<serde_json::Value>,
}

/// `POST /init`.
pub async fn init(
    State(envd): State<Arc<Envd>>,
    body: Result<Json<InitRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => {
            return error_response(StatusCode::BAD_REQUEST, &rejection.body_text());
        }
    };
    if let Some(user) = &request.default_user
        && envd.users.user(user).is_none()
    {
        return error_response(
            StatusCode::BAD_REQUEST,
            &format!("default user '{user}' has no account in the sandbox"),
        );
    }
    let updated = envd.update_settings(|settings| {
        if let Some(vars) = request.env_vars {
            settings.env.extend(vars);
        }
        if let Some(token) = request.access_token {
            settings.access_token = (!token.is_empty()).then_some(token);
        }
        if let Some(user) = request.default_user {
            settings.default_user = user;
        }
        if let Some(dir) = request.default_workdir {
            settings.default_workdir = (!dir.is_empty()).then(|| PathBuf::from(dir));
        }
    });
    match updated {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

/// `GET /metrics`.
pub async fn metrics() -> Response {
    match tokio::task::spawn_blocking(metrics::sample).await {
        Ok(sample) => Json(sample).into_response(),
        Err(e) => EnvdError::Internal(format!("metrics: {e}")).into_response(),
    }
}
