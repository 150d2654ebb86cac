//! Templates: `GET /templates` (what sandboxes can be created from), `GET /templates/{id}`,
//! and `POST /templates/imports`, which makes a template from an OCI image on the daemon's
//! host (coppice's own; E2B builds templates from its build API instead).

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use coppice_core::TemplateId;
use coppice_core::storage::TemplateInfo;
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiError;
use crate::wire::rfc3339;

/// The template routes (`DELETE /templates/{id}` lives with the snapshots, which it deletes
/// for the SDKs).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/templates", get(list))
        .route("/templates/imports", post(import))
        .route("/templates/{id}/build-log", get(build_log))
}

pub(crate) fn template_json(state: &AppState, t: &TemplateInfo) -> serde_json::Value {
    serde_json::json!({
        "templateID": t.id.to_string(),
        "buildID": super::template_tags::build_id(t),
        "aliases": [t.id.to_string()],
        "public": true,
        "cpuCount": 1,
        "memoryMB": 512,
        "diskSizeMB": t.size_bytes >> 20,
        "sizeBytes": t.size_bytes,
        "createdAt": rfc3339(t.created_at),
        "updatedAt": rfc3339(t.created_at),
        "envdVersion": state.envd_version,
        "buildStatus": "ready",
        "defaultUser": t.default_user,
        "defaultWorkdir": t.default_workdir,
        "startCommand": t.start.as_ref().map(|start| &start.command),
        "readyCommand": t.start.as_ref().and_then(|start| start.ready.as_ref()),
        "envVars": t.env.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "snapshotOf": t.snapshot_of.as_ref().map(ToString::to_string),
        // For a template coppice ships: what it was built from (`recipe:<digest>` once
        // built from its recipe).
        "builtFrom": t.built_from,
    })
}

async fn list(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let templates = state.manager.templates().await?;
    Ok(Json(serde_json::Value::Array(
        templates.iter().map(|t| template_json(&state, t)).collect(),
    )))
}

/// A template id from a request, or 400 saying why it is not one.
pub(crate) fn parse_template_id(raw: &str) -> Result<TemplateId, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::bad_request(format!("template {raw:?} is not valid: {e}")))
}

/// `GET /templates/{id}`.
pub(crate) async fn info(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_template_id(&raw)?;
    let template = state.manager.template(&id).await?;
    Ok(Json(template_json(&state, &template)))
}

/// `GET /templates/{id}/build-log`: the log of the build that made it (`lines` is empty for
/// a template no build made).
async fn build_log(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_template_id(&raw)?;
    let lines = state.manager.template_build_log(&id).await?;
    Ok(Json(
        serde_json::json!({ "templateID": id.to_string(), "lines": lines }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    #[serde(rename = "templateID")]
    template_id: String,
    /// An OCI image layout directory or a `docker save` tarball on the daemon's host.
    image: std::path::PathBuf,
}

async fn import(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let request: ImportRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"templateID\": \"<name>\", \"image\": \"<absolute path on the daemon's host>\"}}: {e}"
        ))
    })?;
    let id: TemplateId = request.template_id.parse().map_err(|e| {
        ApiError::bad_request(format!(
            "template id {:?} is not valid: {e}",
            request.template_id
        ))
    })?;
    let template = state.manager.import_template(id, request.image).await?;
    Ok((StatusCode::CREATED, Json(template_json(&state, &template))))
}
