//! Sandboxes as the gateway hands them out: a new one, or a resumed one that booted afresh,
//! gets its envd the access token before any traffic reaches it; paused ones are brought back
//! for their traffic.

use axum::http::StatusCode;
use coppice_core::manager::{ResumeOutcome, Resumed};
use coppice_core::{ManagerError, Sandbox, SandboxId};

use crate::AppState;
use crate::error::ApiError;

/// A new sandbox (created or forked) handed out once its envd has its token; one whose envd
/// cannot be told is killed, since envd would otherwise serve anyone.
///
/// # Errors
/// 500 when envd could not be told.
pub async fn hand_out(state: &AppState, sandbox: Sandbox) -> Result<Sandbox, ApiError> {
    if let Err(error) = state.envd_init.init(&sandbox).await {
        let _ = state.manager.kill(&sandbox.id).await;
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("sandbox {} did not start its envd: {error}", sandbox.id),
        ));
    }
    Ok(sandbox)
}

/// The running sandbox after `resumed`, its envd told its settings when it was rebooted.
///
/// # Errors
/// 500 when a rebooted sandbox's envd cannot be told (it is paused again, files kept).
pub async fn settle(state: &AppState, resumed: Resumed) -> Result<Sandbox, ApiError> {
    if resumed.outcome != ResumeOutcome::Rebooted {
        return Ok(resumed.sandbox);
    }
    let sandbox = resumed.sandbox;
    if let Err(error) = state.envd_init.init(&sandbox).await {
        // Without its token envd would serve anyone: keep the sandbox paused instead.
        let _ = state
            .manager
            .pause(&sandbox.id, coppice_core::PauseMode::Filesystem)
            .await;
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "sandbox {} was resumed but its envd did not start: {error}",
                sandbox.id
            ),
        ));
    }
    Ok(sandbox)
}

/// The running sandbox for traffic to `id`, resumed first when it is paused with
/// auto-resume. `Err` carries the reason to report.
///
/// # Errors
/// `NotRunning` for a paused sandbox without auto-resume, `SandboxNotFound`, resume
/// failures.
pub async fn running_for_traffic(state: &AppState, id: &SandboxId) -> Result<Sandbox, ApiError> {
    let resumed = state
        .manager
        .ensure_running(id)
        .await
        .map_err(|error| match error {
            ManagerError::NotRunning { .. } => ApiError::new(
                StatusCode::CONFLICT,
                format!("sandbox {id} is paused; connect to it (or create it with auto-resume)"),
            ),
            other => ApiError::from(other),
        })?;
    settle(state, resumed).await
}
