//! Snapshots and forks: `POST /sandboxes/{id}/snapshots`, `GET /snapshots`,
//! `DELETE /templates/{id}` (how the SDKs delete a snapshot; `GET` on it is in `templates`)
//! and `POST /sandboxes/{id}/fork`.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use coppice_core::TemplateId;
use coppice_core::storage::TemplateInfo;
use serde::Deserialize;

use super::sandboxes::{optional_body, sandbox_id, seconds};
use crate::AppState;
use crate::error::ApiError;
use crate::lifecycle;
use crate::wire::{self, CreatedSandbox};

/// The snapshot and fork routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sandboxes/{id}/snapshots", post(create))
        .route("/snapshots", axum::routing::get(list))
        .route(
            "/templates/{id}",
            delete(remove).get(super::templates::info),
        )
        .route("/sandboxes/{id}/fork", post(fork))
}

fn template_id(raw: &str, what: &str) -> Result<TemplateId, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::bad_request(format!("{what} {raw:?} is not valid: {e}")))
}

fn snapshot_info(template: &TemplateInfo) -> wire::SnapshotInfo {
    wire::SnapshotInfo {
        snapshot_id: template.id.to_string(),
        names: vec![template.id.to_string()],
    }
}

async fn create(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let id = sandbox_id(&raw)?;
    let request: wire::SnapshotRequest = optional_body(&bytes)?;
    if request.memory == Some(true) {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "snapshots with memory are not supported by this coppice build; \
             take a filesystem snapshot (mode \"filesystem\")",
        ));
    }
    let name = request
        .name
        .as_deref()
        .map(|name| template_id(name, "snapshot name"))
        .transpose()?;
    let snapshot = state.manager.snapshot(&id, name).await?;
    Ok((StatusCode::CREATED, Json(snapshot_info(&snapshot))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    #[serde(rename = "sandboxID")]
    sandbox_id: Option<String>,
    name: Option<String>,
    limit: Option<usize>,
    next_token: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let of = query.sandbox_id.as_deref().map(sandbox_id).transpose()?;
    let mut snapshots = state.manager.snapshots(of.as_ref()).await?;
    if let Some(name) = query.name.as_deref() {
        snapshots.retain(|snapshot| snapshot.id.as_str() == name);
    }
    let (page, next) = super::page(
        &snapshots,
        |s| s.id.as_str(),
        query.limit,
        query.next_token.as_deref(),
    )?;
    let body: Vec<wire::SnapshotInfo> = page.iter().map(snapshot_info).collect();
    let mut response = Json(body).into_response();
    if let Some(value) = next.and_then(|next| HeaderValue::from_str(&next).ok()) {
        response.headers_mut().insert("x-next-token", value);
    }
    Ok(response)
}

async fn remove(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = template_id(&raw, "template id")?;
    state.manager.delete_template(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn fork(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let id = sandbox_id(&raw)?;
    let request: wire::ForkRequest = optional_body(&bytes)?;
    let timeout = request
        .timeout
        .map(|timeout| seconds(timeout, "timeout"))
        .transpose()?;
    let count = u32::try_from(request.count.unwrap_or(1)).map_err(|_| {
        ApiError::bad_request(format!(
            "count must be between 1 and {}",
            coppice_core::manager::MAX_FORKS
        ))
    })?;
    let forks = state.manager.fork(&id, count, timeout).await?;
    let mut results = Vec::with_capacity(forks.len());
    for fork in forks {
        let handed_out = match fork {
            Ok(sandbox) => lifecycle::hand_out(&state, sandbox).await,
            Err(error) => Err(ApiError::from(error)),
        };
        results.push(match handed_out {
            Ok(sandbox) => {
                wire::ForkResult::started(CreatedSandbox::from_domain(&sandbox, state.envd_version))
            }
            Err(error) => wire::ForkResult::failed(error.status.as_u16(), &error.message),
        });
    }
    Ok((StatusCode::CREATED, Json(results)).into_response())
}
