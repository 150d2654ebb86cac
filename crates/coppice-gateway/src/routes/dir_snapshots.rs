//! Directory snapshots (a coppice extension): `POST /sandboxes/{id}/directory-snapshots`
//! captures one directory as a tar, `GET /directory-snapshots[/{id}]` lists and describes
//! them, `GET …/{id}/archive` downloads the tar, `POST …/{id}/restore` writes it into a
//! sandbox, `DELETE …/{id}` removes it.

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use coppice_core::DirSnapshotId;
use coppice_core::volume::DirSnapshot;
use serde::{Deserialize, Serialize};

use super::sandboxes::{body, sandbox_id};
use crate::AppState;
use crate::error::ApiError;
use crate::wire::rfc3339;

/// The directory snapshot routes (behind the API key).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sandboxes/{id}/directory-snapshots", post(create))
        .route("/directory-snapshots", get(list))
        .route("/directory-snapshots/{id}", get(info).delete(remove))
        .route("/directory-snapshots/{id}/archive", get(archive))
        .route("/directory-snapshots/{id}/restore", post(restore))
}

/// `POST /sandboxes/{id}/directory-snapshots`.
#[derive(Debug, Deserialize)]
struct NewDirSnapshot {
    path: String,
}

/// `POST /directory-snapshots/{id}/restore`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Restore {
    #[serde(rename = "sandboxID")]
    sandbox_id: String,
    /// Where to write it; where it was taken when absent.
    path: Option<String>,
}

/// A directory snapshot on the wire.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WireDirSnapshot {
    #[serde(rename = "snapshotID")]
    snapshot_id: String,
    #[serde(rename = "sandboxID")]
    sandbox_id: String,
    path: String,
    sha256: String,
    size_bytes: u64,
    entries: u64,
    created_at: String,
}

impl WireDirSnapshot {
    fn from_domain(snapshot: &DirSnapshot) -> Self {
        Self {
            snapshot_id: snapshot.id.to_string(),
            sandbox_id: snapshot.sandbox.to_string(),
            path: snapshot.path.clone(),
            sha256: snapshot.sha256.clone(),
            size_bytes: snapshot.size_bytes,
            entries: snapshot.entries,
            created_at: rfc3339(snapshot.created_at),
        }
    }
}

fn snapshot_id(raw: &str) -> Result<DirSnapshotId, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::not_found(format!("directory snapshot {raw:?} not found: {e}")))
}

async fn create(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    request: Result<Json<NewDirSnapshot>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id = sandbox_id(&raw)?;
    let request = body(request)?;
    let snapshot = state
        .manager
        .create_dir_snapshot(&id, &request.path)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(WireDirSnapshot::from_domain(&snapshot)),
    )
        .into_response())
}

async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let snapshots: Vec<WireDirSnapshot> = state
        .manager
        .dir_snapshots()
        .await?
        .iter()
        .map(WireDirSnapshot::from_domain)
        .collect();
    Ok(Json(snapshots).into_response())
}

async fn info(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let snapshot = state.manager.dir_snapshot(&snapshot_id(&raw)?).await?;
    Ok(Json(WireDirSnapshot::from_domain(&snapshot)).into_response())
}

async fn archive(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let (snapshot, file) = state.manager.dir_snapshot_file(&snapshot_id(&raw)?).await?;
    let file = tokio::fs::File::open(&file).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot open directory snapshot {}: {e}", snapshot.id),
        )
    })?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_owned()),
            (header::CONTENT_LENGTH, snapshot.size_bytes.to_string()),
            (
                header::HeaderName::from_static("x-checksum-sha256"),
                snapshot.sha256.clone(),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn restore(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    request: Result<Json<Restore>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id = snapshot_id(&raw)?;
    let request = body(request)?;
    let sandbox = sandbox_id(&request.sandbox_id)?;
    let entries = state
        .manager
        .restore_dir_snapshot(&id, &sandbox, request.path.as_deref())
        .await?;
    Ok(Json(serde_json::json!({ "entries": entries })).into_response())
}

async fn remove(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    state
        .manager
        .delete_dir_snapshot(&snapshot_id(&raw)?)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
