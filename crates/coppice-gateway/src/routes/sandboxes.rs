//! The E2B sandbox endpoints: create (v2 and legacy), list (v2 with filters and
//! `X-Next-Token` pages, and legacy), info, kill, timeout, refresh, connect (v2, legacy and
//! the old resume, each resuming a paused sandbox), pause (memory kept or filesystem only),
//! metrics and logs.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use coppice_core::manager::{ListFilter, ResumeOptions, ResumeOutcome};
use coppice_core::volume::VolumeMount;
use coppice_core::{PauseMode, Sandbox, SandboxId, SandboxSpec, SandboxState, TimeoutAction};
use serde::Deserialize;

use crate::AppState;
use crate::envd;
use crate::error::ApiError;
use crate::lifecycle;
use crate::wire::{self, CreatedSandbox, ListedSandbox};

/// Lifetime of a sandbox whose create names none, and the most `connect` adds by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a strict pause waits for envd's health answer.
const GUEST_HEALTH_WAIT: Duration = Duration::from_secs(2);

/// The sandbox routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/sandboxes", post(create).get(list_v2))
        .route("/sandboxes", post(create).get(list_running))
        .route("/sandboxes/{id}", get(info).delete(kill))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/refreshes", post(refresh))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/metrics", get(metrics))
        .route("/sandboxes/{id}/logs", get(logs))
        .route("/v2/sandboxes/{id}/logs", get(logs))
}

pub(crate) fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(value)| value)
        .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
}

/// An optional body: empty is the default.
pub(super) fn optional_body<T: Default + serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}

pub(crate) fn sandbox_id(raw: &str) -> Result<SandboxId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("{raw:?} is not a sandbox id")))
}

pub(super) fn seconds(value: i64, what: &str) -> Result<Duration, ApiError> {
    u64::try_from(value)
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| {
            ApiError::bad_request(format!("{what} must be a positive number of seconds"))
        })
}

fn live(state: &AppState, id: &SandboxId) -> Result<Sandbox, ApiError> {
    state
        .manager
        .get(id)
        .map_err(|_| ApiError::not_found(format!("sandbox {id} not found")))
}

async fn create(
    State(state): State<AppState>,
    request: Result<Json<wire::NewSandbox>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = body(request)?;
    let template = request.template_id.parse().map_err(|_| {
        ApiError::bad_request(format!("{:?} is not a template id", request.template_id))
    })?;
    let mut spec = SandboxSpec::new(template);
    spec.timeout = match request.timeout {
        Some(timeout) => seconds(timeout, "timeout")?,
        None => DEFAULT_TIMEOUT,
    };
    spec.metadata = request.metadata.unwrap_or_default();
    spec.env = request.env_vars.unwrap_or_default();
    let keep_memory = match request.pause_mode.as_deref() {
        None => request.auto_pause_memory.unwrap_or(true),
        Some("full") => true,
        Some("filesystem") => false,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "pauseMode {other:?} is not \"full\" or \"filesystem\""
            )));
        }
    };
    spec.on_timeout = if request.auto_pause.unwrap_or(false) {
        TimeoutAction::Pause(if keep_memory {
            PauseMode::Memory
        } else {
            PauseMode::Filesystem
        })
    } else {
        TimeoutAction::Kill
    };
    spec.auto_resume = request.auto_resume.is_some_and(|auto| auto.enabled);
    spec.public_traffic = request
        .network
        .as_ref()
        .and_then(|network| network.allow_public_traffic)
        .unwrap_or(true);
    spec.network = super::network::spec(request.allow_internet_access, request.network)?;
    for mount in request.volume_mounts.unwrap_or_default() {
        spec.volume_mounts.push(VolumeMount {
            name: mount
                .name
                .parse()
                .map_err(|e| ApiError::bad_request(format!("volume name {:?}: {e}", mount.name)))?,
            path: mount.path.into(),
        });
    }
    // envd keeps the token (across its own restarts); until it has it, no traffic is let in.
    let sandbox = lifecycle::hand_out(&state, state.manager.create(spec).await?).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedSandbox::from_domain(&sandbox, state.envd_version)),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    state: Option<String>,
    metadata: Option<String>,
    limit: Option<usize>,
    next_token: Option<String>,
    template: Option<String>,
}

async fn list_v2(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mut filter = ListFilter::default();
    if let Some(states) = query.state.as_deref().filter(|s| !s.is_empty()) {
        for name in states.split(',') {
            filter.states.push(match name.trim() {
                "running" => SandboxState::Running,
                "paused" => SandboxState::Paused,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "state {other:?} is not running or paused"
                    )));
                }
            });
        }
    }
    if let Some(metadata) = query.metadata.as_deref() {
        filter.metadata = serde_urlencoded::from_str::<BTreeMap<String, String>>(metadata)
            .map_err(|e| ApiError::bad_request(format!("bad metadata filter: {e}")))?;
    }
    if let Some(template) = query.template.as_deref() {
        filter.template =
            Some(template.parse().map_err(|_| {
                ApiError::bad_request(format!("{template:?} is not a template id"))
            })?);
    }
    let mut sandboxes = state.manager.list(&filter);
    // Newest first, then by id: a stable order for the cursor.
    sandboxes.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| a.id.cmp(&b.id))
    });
    let (page, next) = super::page(
        &sandboxes,
        |s| s.id.as_str(),
        query.limit,
        query.next_token.as_deref(),
    )?;
    let body: Vec<_> = page
        .iter()
        .map(|s| ListedSandbox::from_domain(s, state.envd_version, false))
        .collect();
    let mut response = Json(body).into_response();
    if let Some(value) = next.and_then(|next| HeaderValue::from_str(&next).ok()) {
        response.headers_mut().insert("x-next-token", value);
    }
    Ok(response)
}

async fn list_running(State(state): State<AppState>) -> Json<Vec<ListedSandbox>> {
    let filter = ListFilter {
        states: vec![SandboxState::Running],
        ..ListFilter::default()
    };
    Json(
        state
            .manager
            .list(&filter)
            .iter()
            .map(|s| ListedSandbox::from_domain(s, state.envd_version, false))
            .collect(),
    )
}

async fn info(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let sandbox = live(&state, &sandbox_id(&raw)?)?;
    Ok(Json(ListedSandbox::from_domain(
        &sandbox,
        state.envd_version,
        true,
    ))
    .into_response())
}

async fn kill(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.manager.kill(&sandbox_id(&raw)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_timeout(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    request: Result<Json<wire::Timeout>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let id = sandbox_id(&raw)?;
    let timeout = seconds(body(request)?.timeout, "timeout")?;
    state.manager.set_timeout(&id, timeout).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Moves the end time to `now + extension` unless it is already later (connect and refresh
/// only ever extend).
async fn extend(
    state: &AppState,
    sandbox: &Sandbox,
    extension: Duration,
) -> Result<Sandbox, ApiError> {
    let wanted = SystemTime::now() + extension;
    if wanted <= sandbox.end_at {
        return Ok(sandbox.clone());
    }
    Ok(state.manager.set_timeout(&sandbox.id, extension).await?)
}

async fn refresh(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let sandbox = live(&state, &sandbox_id(&raw)?)?;
    let request: wire::Refresh = optional_body(&bytes)?;
    let extension = match request.duration {
        Some(duration) => seconds(duration, "duration")?,
        None => DEFAULT_TIMEOUT,
    };
    extend(&state, &sandbox, extension).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn connect(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    resume_and_answer(&state, &raw, &bytes, false).await
}

/// The legacy resume (SDK < 2.6): 201 for a paused sandbox, 409 for a running one.
async fn resume(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    resume_and_answer(&state, &raw, &bytes, true).await
}

/// Resumes a paused sandbox (201) or extends a running one (200, or 409 for the legacy
/// resume, which only resumes).
async fn resume_and_answer(
    state: &AppState,
    raw: &str,
    bytes: &[u8],
    paused_only: bool,
) -> Result<Response, ApiError> {
    let id = sandbox_id(raw)?;
    let request: wire::Connect = optional_body(bytes)?;
    if paused_only && live(state, &id)?.state == SandboxState::Running {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("sandbox {id} is already running"),
        ));
    }
    let timeout = match request.timeout {
        Some(timeout) => seconds(timeout, "timeout")?,
        None => DEFAULT_TIMEOUT,
    };
    let options = ResumeOptions {
        timeout,
        keep_memory: request.memory,
    };
    let resumed = state.manager.resume(&id, options).await?;
    let status = if resumed.outcome == ResumeOutcome::AlreadyRunning {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let sandbox = lifecycle::settle(state, resumed).await?;
    Ok((
        status,
        Json(CreatedSandbox::from_domain(&sandbox, state.envd_version)),
    )
        .into_response())
}

async fn pause(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let id = sandbox_id(&raw)?;
    let request: wire::Pause = optional_body(&bytes)?;
    let sandbox = live(&state, &id)?;
    // A paused sandbox is refused by the manager (409) whatever its guest's health.
    if request.require_healthy_guest && sandbox.state == SandboxState::Running {
        let healthy = match &sandbox.endpoints {
            Some(endpoints) => tokio::time::timeout(
                GUEST_HEALTH_WAIT,
                envd::get(&endpoints.envd_socket, "/health", None),
            )
            .await
            .is_ok_and(|answer| answer.is_ok()),
            None => false,
        };
        if !healthy {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("sandbox {id}: envd does not answer, so it was not paused"),
            ));
        }
    }
    let mode = match (request.memory, request.durable) {
        (Some(false), true) => {
            return Err(ApiError::bad_request(
                "durable keeps memory on disk; it cannot go with memory: false",
            ));
        }
        (Some(false), false) => PauseMode::Filesystem,
        (_, true) => PauseMode::Durable,
        (_, false) => PauseMode::Memory,
    };
    state.manager.pause(&id, mode).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct EnvdMetrics {
    ts: i64,
    cpu_count: u32,
    cpu_used_pct: f64,
    mem_total: u64,
    mem_used: u64,
    #[serde(default)]
    mem_cache: u64,
    disk_used: u64,
    disk_total: u64,
}

async fn metrics(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let sandbox = live(&state, &sandbox_id(&raw)?)?;
    let (Some(endpoints), token) = (&sandbox.endpoints, &sandbox.access_token) else {
        return Err(ApiError::not_found(format!(
            "sandbox {} is not running",
            sandbox.id
        )));
    };
    let bytes = envd::get(
        &endpoints.envd_socket,
        "/metrics",
        token.as_ref().map(coppice_core::AccessToken::expose),
    )
    .await
    .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))?;
    let sample: EnvdMetrics = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("envd metrics: {e}")))?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(sample.ts).unwrap_or(0));
    Ok(Json(serde_json::json!([{
        "timestamp": wire::rfc3339(at),
        "timestampUnix": sample.ts,
        "cpuCount": sample.cpu_count,
        "cpuUsedPct": sample.cpu_used_pct,
        "memUsed": sample.mem_used,
        "memTotal": sample.mem_total,
        "memCache": sample.mem_cache,
        "diskUsed": sample.disk_used,
        "diskTotal": sample.disk_total,
    }]))
    .into_response())
}

async fn logs(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    _headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = sandbox_id(&raw)?;
    let events = state
        .manager
        .events(&id)
        .await
        .map_err(|_| ApiError::not_found(format!("sandbox {id} not found")))?;
    let entries: Vec<_> = events
        .iter()
        .map(|event| {
            let line = if event.detail.is_empty() {
                format!("{:?} ({:?})", event.kind, event.reason)
            } else {
                format!("{:?} ({:?}): {}", event.kind, event.reason, event.detail)
            };
            (wire::rfc3339(event.at), line)
        })
        .collect();
    Ok(Json(serde_json::json!({
        "logs": entries.iter().map(|(at, line)| serde_json::json!({"timestamp": at, "line": line})).collect::<Vec<_>>(),
        "logEntries": entries.iter().map(|(at, line)| serde_json::json!({
            "timestamp": at, "level": "info", "message": line, "fields": {}
        })).collect::<Vec<_>>(),
    }))
    .into_response())
}
