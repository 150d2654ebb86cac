//! Template tags, as E2B's API has them (`Template.assign_tags`, `remove_tags`, `get_tags`
//! in the SDKs): `POST /templates/tags` points tags of a name at a build, `DELETE
//! /templates/tags` removes them, `GET /templates/{id}/tags` lists them. A sandbox starts
//! from a tagged build as `name:tag`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use coppice_core::storage::TemplateInfo;
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiError;
use crate::wire::rfc3339;

/// The tag routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/templates/tags", post(assign).delete(remove))
        .route("/templates/{id}/tags", get(list))
}

/// The id E2B's clients expect of a build (a UUID): the first half of its recipe's digest,
/// so every tag of one build shows the same id; the template's name for one no build made.
pub(crate) fn build_id(template: &TemplateInfo) -> String {
    template
        .built_from
        .as_deref()
        .and_then(|digest| digest.strip_prefix(coppice_core::recipe::RECIPE_DIGEST_PREFIX))
        .and_then(uuid_of_hex)
        .unwrap_or_else(|| template.id.to_string())
}

/// The first 32 hex digits of `hex` written as a UUID (8-4-4-4-12), if it has them.
pub(crate) fn uuid_of_hex(hex: &str) -> Option<String> {
    let hex = hex
        .get(..32)
        .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignRequest {
    /// `name` or `name:tag`: the build the tags are to stand for.
    target: String,
    tags: Vec<String>,
}

async fn assign(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let request: AssignRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"target\": \"name:tag\", \"tags\": [...]}}: {e}"
        ))
    })?;
    if request.tags.is_empty() {
        return Err(ApiError::bad_request("no tags to assign"));
    }
    let target = super::templates::parse_template_id(&request.target)?;
    state.manager.tag_template(&target, &request.tags).await?;
    let build = state.manager.template(&target).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "buildID": build_id(&build), "tags": request.tags })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveRequest {
    name: String,
    tags: Vec<String>,
}

async fn remove(State(state): State<AppState>, body: Bytes) -> Result<StatusCode, ApiError> {
    let request: RemoveRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("expected {{\"name\", \"tags\": [...]}}: {e}"))
    })?;
    let name = super::templates::parse_template_id(&request.name)?;
    state.manager.untag_template(&name, &request.tags).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = super::templates::parse_template_id(&raw)?;
    let tags = state.manager.template_tags(&name).await?;
    Ok(Json(serde_json::Value::Array(
        tags.iter()
            .map(|(tag, build)| {
                serde_json::json!({
                    "tag": tag,
                    "buildID": build_id(build),
                    "createdAt": rfc3339(build.created_at),
                })
            })
            .collect(),
    )))
}
