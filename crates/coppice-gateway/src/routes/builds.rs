//! `POST /templates/builds/prune` deletes build cache steps unused for a while.
//! `POST /templates/builds`: builds a template from a recipe and streams the build's log as
//! NDJSON, `{"log": "..."}` per line, then `{"status": "ready", "template": {...}}` or
//! `{"status": "error", "code": ..., "message": "..."}`. A build goes on if the caller goes
//! away (its finished steps are kept for the next build either way).

use std::collections::BTreeMap;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use coppice_core::recipe::{DebianBase, Recipe, RecipeFile, RunStep};
use coppice_core::storage::TemplateStart;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::AppState;
use crate::error::ApiError;

/// The build route.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/templates/builds", post(build))
        .route("/templates/builds/prune", post(prune))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeBody {
    #[serde(rename = "templateID")]
    template_id: String,
    debian: DebianBody,
    #[serde(default)]
    pip: Vec<String>,
    #[serde(default)]
    npm: Vec<String>,
    #[serde(default)]
    files: Vec<FileBody>,
    #[serde(default)]
    run: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    start: Option<StartBody>,
    /// The default user of the template's sandboxes.
    #[serde(default)]
    user: Option<String>,
    /// Their default working directory.
    #[serde(default)]
    workdir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DebianBody {
    release: String,
    #[serde(default)]
    packages: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBody {
    path: String,
    content: String,
    #[serde(default = "default_mode")]
    mode: u32,
}

fn default_mode() -> u32 {
    0o644
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    command: String,
    #[serde(default)]
    ready: Option<String>,
}

/// The recipe a request body describes, checked.
fn recipe(body: &[u8]) -> Result<Recipe, ApiError> {
    parse_recipe(body).map_err(ApiError::bad_request)
}

/// The recipe a JSON document describes (the body of `POST /templates/builds`, the file
/// `coppice template build` reads), checked; or why it is not one.
///
/// # Errors
/// A message naming what is wrong.
pub fn parse_recipe(body: &[u8]) -> Result<Recipe, String> {
    let body: RecipeBody = serde_json::from_slice(body).map_err(|e| {
        format!(
            "expected a recipe ({{\"templateID\", \"debian\": {{\"release\", \"packages\"}}, \"pip\", \"npm\", \"files\", \"run\", \"env\", \"start\", \"user\", \"workdir\"}}): {e}"
        )
    })?;
    let id = body
        .template_id
        .parse()
        .map_err(|e| format!("template id {:?} is not valid: {e}", body.template_id))?;
    Recipe {
        id,
        debian: DebianBase {
            release: body.debian.release,
            packages: body.debian.packages,
        },
        pip: body.pip,
        npm: body.npm,
        files: body
            .files
            .into_iter()
            .map(|file| RecipeFile {
                path: file.path,
                contents: file.content.into_bytes(),
                mode: file.mode,
            })
            .collect(),
        run: body.run.into_iter().map(RunStep::root).collect(),
        env: body.env,
        start: body.start.map(|start| TemplateStart {
            command: start.command,
            ready: start.ready,
            user: None,
        }),
        user: body.user,
        workdir: body.workdir,
    }
    .validate()
    .map_err(|e| e.to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PruneBody {
    /// Steps unused this long go (at least an hour).
    #[serde(default)]
    older_than_seconds: u64,
}

/// `POST /templates/builds/prune`: deletes the build cache's steps unused for a while.
async fn prune(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let body: PruneBody = if body.is_empty() {
        PruneBody {
            older_than_seconds: 0,
        }
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("expected {{\"olderThanSeconds\"}}: {e}")))?
    };
    let pruned = state
        .manager
        .prune_build_cache(std::time::Duration::from_secs(body.older_than_seconds))
        .await?;
    Ok(axum::Json(serde_json::json!({
        "pruned": pruned.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })))
}

async fn build(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let recipe = recipe(&body)?;
    // Refused before the stream starts, so these get their own status codes.
    coppice_core::SandboxManager::check_template_name(&recipe.id)?;
    if state.manager.template(&recipe.id).await.is_ok() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("template {} already exists", recipe.id),
        ));
    }
    let (log, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (mut writer, reader) = tokio::io::duplex(64 * 1024);
    let manager = state.manager.clone();
    tokio::spawn(async move {
        let building = tokio::spawn({
            let state = state.clone();
            async move {
                let outcome = manager.build_template(recipe, log).await;
                match outcome {
                    Ok(template) => serde_json::json!({
                        "status": "ready",
                        "template": super::templates::template_json(&state, &template),
                    }),
                    Err(error) => {
                        let error = ApiError::from(error);
                        serde_json::json!({
                            "status": "error",
                            "code": error.status.as_u16(),
                            "message": error.message,
                        })
                    }
                }
            }
        });
        // The log ends when the build drops its sender; a caller gone just stops the copy.
        let mut writing = true;
        while let Some(line) = lines.recv().await {
            if writing {
                let text = format!("{}\n", serde_json::json!({ "log": line }));
                writing = writer.write_all(text.as_bytes()).await.is_ok();
            }
        }
        let last = building.await.unwrap_or_else(|error| {
            serde_json::json!({"status": "error", "code": 500, "message": format!("the build stopped: {error}")})
        });
        if writing {
            let _ = writer.write_all(format!("{last}\n").as_bytes()).await;
            let _ = writer.shutdown().await;
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(tokio_util::io::ReaderStream::new(reader)),
    )
        .into_response())
}
