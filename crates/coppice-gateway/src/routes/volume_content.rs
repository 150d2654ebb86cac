//! E2B's volume-content API, `/volumecontent/{id}/…`, authorised by the volume's own bearer
//! token: `dir` (list, make), `file` (read, write) and `path` (stat, change owner and mode,
//! remove). Paths are confined to the volume by `coppice-volume`.

use std::time::SystemTime;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use coppice_core::manager::VolumeAccess;
use coppice_volume::{
    Entry, EntryKind, Ownership, VolumeFs, VolumeFsError, VolumeFsErrorKind, VolumePath,
};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::volumes::volume_id;
use crate::AppState;
use crate::error::ApiError;
use crate::wire::rfc3339;

/// The content routes (outside the API key: the volume's token authorises them).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/volumecontent/{id}/dir", get(list_dir).post(make_dir))
        .route("/volumecontent/{id}/file", get(read_file).put(write_file))
        .route(
            "/volumecontent/{id}/path",
            get(stat).patch(set_attributes).delete(remove),
        )
}

/// The query every content call takes; which fields matter depends on the call.
#[derive(Debug, Deserialize)]
struct ContentQuery {
    path: String,
    depth: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
    force: Option<bool>,
}

impl ContentQuery {
    fn ownership(&self) -> Ownership {
        Ownership {
            uid: self.uid,
            gid: self.gid,
            mode: self.mode,
        }
    }
}

/// `PATCH …/path`.
#[derive(Debug, Default, Deserialize)]
struct Attributes {
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
}

/// One entry on the wire.
#[derive(Debug, Serialize)]
struct WireEntry {
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    path: String,
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    atime: String,
    mtime: String,
    ctime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
}

impl WireEntry {
    fn from_domain(entry: Entry) -> Self {
        let time = |at: SystemTime| rfc3339(at);
        Self {
            name: entry.name,
            kind: match entry.kind {
                EntryKind::File => "file",
                EntryKind::Directory => "directory",
                EntryKind::Symlink => "symlink",
                EntryKind::Unknown => "unknown",
            },
            path: entry.path,
            size: entry.size,
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
            atime: time(entry.atime),
            mtime: time(entry.mtime),
            ctime: time(entry.ctime),
            target: entry.target,
        }
    }
}

impl From<VolumeFsError> for ApiError {
    fn from(error: VolumeFsError) -> Self {
        fs_error(&error)
    }
}

fn fs_error(error: &VolumeFsError) -> ApiError {
    let status = match error.kind() {
        VolumeFsErrorKind::Invalid => StatusCode::BAD_REQUEST,
        VolumeFsErrorKind::NotFound => StatusCode::NOT_FOUND,
        VolumeFsErrorKind::Conflict => StatusCode::CONFLICT,
        VolumeFsErrorKind::OutOfSpace => StatusCode::INSUFFICIENT_STORAGE,
        VolumeFsErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, coppice_core::manager::error_chain(error))
}

/// What every content call starts from: the volume (its token checked), the path asked for,
/// and the rest of the query.
struct Content {
    access: VolumeAccess,
    path: VolumePath,
    query: ContentQuery,
}

impl FromRequestParts<AppState> for Content {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        let id = volume_id(&raw)?;
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "send the volume's token as Authorization: Bearer <token>",
                )
            })?;
        let access = state.manager.volume_access(&id, token.trim()).await?;
        let Query(query) = Query::<ContentQuery>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        let path = VolumePath::parse(&query.path)?;
        Ok(Self {
            access,
            path,
            query,
        })
    }
}

/// Runs `work` on the opened volume on the blocking pool.
async fn on_volume<T, F>(access: VolumeAccess, work: F) -> Result<T, ApiError>
where
    F: FnOnce(&VolumeFs) -> Result<T, VolumeFsError> + Send + 'static,
    T: Send + 'static,
{
    blocking(move || {
        let volume = VolumeFs::open(&access.root, access.ids)?;
        work(&volume)
    })
    .await
}

async fn blocking<T, F>(work: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, VolumeFsError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("volume task: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

fn entry(status: StatusCode, entry: Entry) -> Response {
    (status, Json(WireEntry::from_domain(entry))).into_response()
}

async fn list_dir(content: Content) -> Result<Response, ApiError> {
    let Content {
        access,
        path,
        query,
    } = content;
    let depth = query.depth.unwrap_or(1);
    let entries = on_volume(access, move |volume| volume.list(&path, depth)).await?;
    let entries: Vec<WireEntry> = entries.into_iter().map(WireEntry::from_domain).collect();
    Ok(Json(entries).into_response())
}

async fn make_dir(content: Content) -> Result<Response, ApiError> {
    let Content {
        access,
        path,
        query,
    } = content;
    let (ownership, parents) = (query.ownership(), query.force.unwrap_or(false));
    let made = on_volume(access, move |volume| {
        volume.make_dir(&path, &ownership, parents)
    })
    .await?;
    Ok(entry(StatusCode::CREATED, made))
}

async fn read_file(content: Content) -> Result<Response, ApiError> {
    let Content { access, path, .. } = content;
    let (file, entry) = on_volume(access, move |volume| volume.open_file(&path)).await?;
    // No more than the length announced, whatever the file does meanwhile.
    let content = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), entry.size);
    let stream = tokio_util::io::ReaderStream::with_capacity(content, 256 * 1024);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, entry.size.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn write_file(content: Content, mut body: Body) -> Result<Response, ApiError> {
    let Content {
        access,
        path,
        query,
    } = content;
    let shown = path.to_string();
    let (ownership, parents) = (query.ownership(), query.force.unwrap_or(false));
    let mut pending = on_volume(access, move |volume| {
        volume.begin_write(&path, &ownership, parents)
    })
    .await?;
    let file = pending.take_file().ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "upload file already taken",
        )
    })?;
    let mut file = tokio::fs::File::from_std(file);
    let write_error = |source: std::io::Error| {
        ApiError::from(VolumeFsError::Io {
            op: "write",
            path: shown.clone(),
            source,
        })
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("reading the upload: {e}")))?;
        if let Ok(data) = frame.into_data() {
            file.write_all(&data).await.map_err(write_error)?;
        }
    }
    file.flush().await.map_err(write_error)?;
    let file = file.into_std().await;
    // `pending` removes the half-written file if anything above failed.
    let written = blocking(move || pending.commit(file)).await?;
    Ok(entry(StatusCode::CREATED, written))
}

async fn stat(content: Content) -> Result<Response, ApiError> {
    let Content { access, path, .. } = content;
    let found = on_volume(access, move |volume| volume.stat(&path)).await?;
    Ok(entry(StatusCode::OK, found))
}

async fn set_attributes(
    content: Content,
    attributes: Result<Json<Attributes>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Content { access, path, .. } = content;
    let Json(attributes) =
        attributes.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let ownership = Ownership {
        uid: attributes.uid,
        gid: attributes.gid,
        mode: attributes.mode,
    };
    let changed = on_volume(access, move |volume| {
        volume.set_attributes(&path, &ownership)
    })
    .await?;
    Ok(entry(StatusCode::OK, changed))
}

async fn remove(content: Content) -> Result<Response, ApiError> {
    let Content { access, path, .. } = content;
    on_volume(access, move |volume| volume.remove(&path)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
