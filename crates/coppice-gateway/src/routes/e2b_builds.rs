//! E2B's template-build API, the one `Template.build` in the SDKs calls: `POST /v3/templates`
//! opens a build of a name, `GET /templates/{id}/files/{hash}` says whether a `COPY` step's
//! files are here (else where to `PUT` them: an upload URL outside the API key, its token
//! the credential), `POST /v2/templates/{id}/builds/{buildID}` starts it from the recorded
//! steps (as a recipe, `steps.rs`), `GET /templates/{id}/builds/{buildID}/status` polls it
//! with its log, and `GET /templates/aliases/{alias}` answers `Template.exists`. A build
//! replaces an earlier build of its name, never a snapshot or an imported image.

mod jobs;
mod steps;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use coppice_core::manager::ManagerError;
use coppice_core::recipe::MAX_STEP_INPUT_BYTES;
use serde::Deserialize;

use self::jobs::{BuildState, Failure, Jobs, UploadError};
use crate::AppState;
use crate::error::ApiError;
use crate::wire::rfc3339;

/// Most log lines one status answer carries (the SDKs ask again for the rest).
const MAX_LOG_LINES: usize = 100;

/// The build routes (behind the API key), and the upload route (outside it), sharing one
/// registry of builds.
pub fn routes() -> (Router<AppState>, Router<AppState>) {
    let jobs = Arc::new(Jobs::default());
    let api = Router::new()
        .route("/v3/templates", post(open))
        .route("/templates/{id}/files/{hash}", get(upload_link))
        .route("/v2/templates/{id}/builds/{build}", post(start))
        .route("/templates/{id}/builds/{build}/status", get(status))
        .route("/templates/aliases/{alias}", get(alias))
        .layer(Extension(Arc::clone(&jobs)));
    let uploads = Router::new()
        .route("/template-uploads/{token}", put(upload))
        .layer(DefaultBodyLimit::max(MAX_STEP_INPUT_BYTES))
        .layer(Extension(jobs));
    (api, uploads)
}

/// A fresh random token (hex), as the sandboxes' access tokens are made.
fn random_token() -> Result<String, ApiError> {
    coppice_core::sandbox::AccessToken::generate()
        .map(|token| token.expose().to_owned())
        .map_err(|error| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("no randomness: {error}"),
            )
        })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpenRequest {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    alias: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// `POST /v3/templates`: a build of `name` (`name:tag` keeps the tag with the answer only).
async fn open(
    State(state): State<AppState>,
    Extension(jobs): Extension<Arc<Jobs>>,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let request: OpenRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"name\", \"tags\"?}}: {e}")))?;
    let full = request
        .name
        .or(request.alias)
        .ok_or_else(|| ApiError::bad_request("the template needs a name"))?;
    let (name, tag) = full.split_once(':').unwrap_or((&full, ""));
    let id = super::templates::parse_template_id(name)?;
    coppice_core::SandboxManager::check_template_name(&id)?;
    let existing = match state.manager.template(&id).await {
        Ok(existing) => Some(existing),
        Err(ManagerError::TemplateNotFound { .. }) => None,
        Err(error) => return Err(error.into()),
    };
    if existing.is_some_and(|existing| {
        !existing
            .built_from
            .is_some_and(|digest| digest.starts_with(coppice_core::recipe::RECIPE_DIGEST_PREFIX))
    }) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "template {id} exists and was not made by a build (a snapshot or an imported image): pick another name"
            ),
        ));
    }
    let mut tags = request.tags;
    if !tag.is_empty() {
        tags.push(tag.to_owned());
    }
    // Refused now, not after a build replaced the name.
    for tag in &tags {
        id.with_tag(tag)
            .map_err(|e| ApiError::bad_request(format!("tag {tag:?} is not valid: {e}")))?;
    }
    // A UUID, as the SDKs parse it.
    let build_id = super::template_tags::uuid_of_hex(&random_token()?)
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "a token is too short"))?;
    jobs.open(&build_id, id.clone(), tags.clone());
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "templateID": id.to_string(),
            "buildID": build_id,
            "public": false,
            "names": [id.to_string()],
            "aliases": [id.to_string()],
            "tags": tags,
        })),
    ))
}

/// `GET /templates/{id}/files/{hash}`: whether the files are here, else where to put them.
async fn upload_link(
    Extension(jobs): Extension<Arc<Jobs>>,
    Path((raw, hash)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let id = super::templates::parse_template_id(&raw)?;
    if hash.is_empty() || hash.len() > 128 || !hash.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::bad_request(format!(
            "{hash:?} is not a files hash"
        )));
    }
    let answer = match jobs.upload_slot(&id, &hash, random_token()?) {
        Ok(()) => serde_json::json!({ "present": true }),
        Err(token) => {
            // The address the client reached us at, so the upload goes the same way.
            let host = headers
                .get(header::HOST)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("127.0.0.1");
            let scheme = headers
                .get("x-forwarded-proto")
                .and_then(|value| value.to_str().ok())
                .filter(|proto| *proto == "https")
                .unwrap_or("http");
            serde_json::json!({
                "present": false,
                "url": format!("{scheme}://{host}/template-uploads/{token}"),
            })
        }
    };
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `PUT /template-uploads/{token}`: a `COPY` step's files (a tar, gzipped or not). The
/// token is checked before the body is read, and only a few bodies are read at once.
async fn upload(
    Extension(jobs): Extension<Arc<Jobs>>,
    Path(token): Path<String>,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    jobs.awaits(&token).map_err(refused_upload)?;
    let _receiving =
        jobs.receiving.acquire().await.map_err(|_| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping")
        })?;
    let files = axum::body::to_bytes(body, MAX_STEP_INPUT_BYTES)
        .await
        .map_err(|error| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the upload passes {} MiB, or broke off: {error}",
                    MAX_STEP_INPUT_BYTES >> 20
                ),
            )
        })?;
    jobs.put(&token, files).map_err(refused_upload)?;
    Ok(StatusCode::OK)
}

fn refused_upload(error: UploadError) -> ApiError {
    match error {
        UploadError::NotFound => ApiError::not_found("no upload waits under that token"),
        UploadError::Done => ApiError::new(
            StatusCode::CONFLICT,
            "the files for that token were uploaded already",
        ),
        UploadError::TooMany => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "uploads waiting for their builds pass {} MiB: try again once builds took theirs",
                jobs::MAX_UPLOADED_BYTES >> 20
            ),
        ),
    }
}

/// `POST /v2/templates/{id}/builds/{build}`: starts the build from its steps.
async fn start(
    State(state): State<AppState>,
    Extension(jobs): Extension<Arc<Jobs>>,
    Path((raw, build_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let id = super::templates::parse_template_id(&raw)?;
    let started_already = || {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("build {build_id} was started already"),
        )
    };
    let tags = match jobs.build(&id, &build_id) {
        None => {
            return Err(ApiError::not_found(format!(
                "no build {build_id} of template {id}"
            )));
        }
        Some(build) if build.state != BuildState::Waiting => return Err(started_already()),
        Some(build) => build.tags,
    };
    let request: steps::BuildStart = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("expected the template's steps: {e}")))?;
    let translated = steps::translate(id.clone(), request, |hash| jobs.files(&id, hash))
        .map_err(ApiError::bad_request)?;
    // Checked again: another request may have started it meanwhile.
    if !jobs.start(&id, &build_id) {
        return Err(started_already());
    }
    let (log, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let manager = state.manager.clone();
    tokio::spawn(async move {
        let building = tokio::spawn(async move {
            manager
                .rebuild_tagged_template(translated.recipe, &tags, log)
                .await
        });
        while let Some(line) = lines.recv().await {
            jobs.log(&build_id, false, line);
        }
        let failure = match building.await {
            Ok(Ok(_)) => None,
            Ok(Err(error)) => Some(failure_of(&error, &translated.e2b_step_of_run)),
            Err(error) => Some(Failure {
                message: format!("the build stopped: {error}"),
                step: None,
            }),
        };
        if let Some(failure) = &failure {
            jobs.log(&build_id, true, failure.message.clone());
        }
        jobs.finish(&build_id, failure);
    });
    Ok(StatusCode::ACCEPTED)
}

/// What the SDK reports for a failed build: the message, and the E2B step it came from.
fn failure_of(error: &ManagerError, e2b_step_of_run: &[usize]) -> Failure {
    let step = match error {
        // The recipe's steps are the Debian root, then its run steps in order.
        ManagerError::BuildFailed { index: Some(0), .. } => Some("base".to_owned()),
        ManagerError::BuildFailed {
            index: Some(index), ..
        } => e2b_step_of_run.get(index - 1).map(ToString::to_string),
        _ => None,
    };
    Failure {
        message: coppice_core::manager::error_chain(error),
        step,
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusQuery {
    #[serde(default)]
    logs_offset: Option<usize>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /templates/{id}/builds/{build}/status`.
async fn status(
    Extension(jobs): Extension<Arc<Jobs>>,
    Path((raw, build_id)): Path<(String, String)>,
    Query(query): Query<StatusQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = super::templates::parse_template_id(&raw)?;
    let build = jobs
        .build(&id, &build_id)
        .ok_or_else(|| ApiError::not_found(format!("no build {build_id} of template {id}")))?;
    let limit = query.limit.unwrap_or(MAX_LOG_LINES).clamp(1, MAX_LOG_LINES);
    let offset = query.logs_offset.unwrap_or(0).min(build.log.len());
    let lines = &build.log[offset..(offset + limit).min(build.log.len())];
    let entry = |line: &jobs::LogLine| {
        serde_json::json!({
            "timestamp": rfc3339(line.at),
            "level": if line.error { "error" } else { "info" },
            "message": line.message,
        })
    };
    let mut answer = serde_json::json!({
        "templateID": id.to_string(),
        "buildID": build_id,
        "status": build.state.wire(),
        "logs": lines.iter().map(|line| line.message.clone()).collect::<Vec<_>>(),
        "logEntries": lines.iter().map(entry).collect::<Vec<_>>(),
    });
    if let (BuildState::Error, Some(failure)) = (build.state, &build.failure) {
        let tail = &build.log[build.log.len().saturating_sub(20)..];
        answer["reason"] = serde_json::json!({
            "message": failure.message,
            "step": failure.step,
            "logEntries": tail.iter().map(entry).collect::<Vec<_>>(),
        });
    }
    Ok(Json(answer))
}

/// `GET /templates/aliases/{alias}`: the template of that name, if there is one.
async fn alias(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = super::templates::parse_template_id(&raw)?;
    let template = state.manager.template(&id).await?;
    Ok(Json(serde_json::json!({
        "templateID": template.id.to_string(),
        "public": false,
    })))
}
