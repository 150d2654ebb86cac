//! Persistent volumes, E2B's Volume API: `POST /volumes`, `GET /volumes`, and `GET` /
//! `DELETE /volumes/{id}`. Their files are served by `volume_content`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use coppice_core::volume::Volume;
use coppice_core::{VolumeId, VolumeName};
use serde::{Deserialize, Serialize};

use super::sandboxes::body;
use crate::AppState;
use crate::error::ApiError;

/// The volume routes (behind the API key).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/volumes", get(list).post(create))
        .route("/volumes/{id}", get(info).delete(remove))
}

/// `POST /volumes`.
#[derive(Debug, Deserialize)]
struct NewVolume {
    name: String,
}

/// A volume in a listing.
#[derive(Debug, Serialize)]
struct ListedVolume {
    #[serde(rename = "volumeID")]
    volume_id: String,
    name: String,
}

/// A volume with the token of its content API.
#[derive(Debug, Serialize)]
struct VolumeAndToken {
    #[serde(rename = "volumeID")]
    volume_id: String,
    name: String,
    token: String,
}

impl VolumeAndToken {
    fn from_domain(volume: &Volume) -> Self {
        Self {
            volume_id: volume.id.to_string(),
            name: volume.name.to_string(),
            token: volume.token.expose().to_owned(),
        }
    }
}

/// Parses a volume id from the path.
pub(crate) fn volume_id(raw: &str) -> Result<VolumeId, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::not_found(format!("volume {raw:?} not found: {e}")))
}

async fn create(
    State(state): State<AppState>,
    request: Result<Json<NewVolume>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = body(request)?;
    let name: VolumeName = request
        .name
        .parse()
        .map_err(|e| ApiError::bad_request(format!("volume name {:?}: {e}", request.name)))?;
    let volume = state.manager.create_volume(name).await?;
    Ok((
        StatusCode::CREATED,
        Json(VolumeAndToken::from_domain(&volume)),
    )
        .into_response())
}

async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let volumes: Vec<ListedVolume> = state
        .manager
        .volumes()
        .await?
        .iter()
        .map(|volume| ListedVolume {
            volume_id: volume.id.to_string(),
            name: volume.name.to_string(),
        })
        .collect();
    Ok(Json(volumes).into_response())
}

async fn info(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let volume = state.manager.volume(&volume_id(&raw)?).await?;
    Ok(Json(VolumeAndToken::from_domain(&volume)).into_response())
}

async fn remove(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    state.manager.delete_volume(&volume_id(&raw)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
