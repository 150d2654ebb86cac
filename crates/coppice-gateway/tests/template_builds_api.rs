//! E2B's template-build API over fake backends: a build opened, its files uploaded outside
//! the API key with the token the link carries, started from the SDK's steps, and polled to
//! its end with its log; and what it refuses.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use coppice_core::testing::FakeRuntime;
use tower::ServiceExt;

mod common;

use common::call;

async fn app() -> (axum::Router, Arc<FakeRuntime>) {
    let runtime = Arc::new(FakeRuntime::default());
    (common::app_with(Arc::clone(&runtime)).await, runtime)
}

/// Polls a build until it ends; its last status.
async fn wait(app: &axum::Router, template: &str, build: &str) -> serde_json::Value {
    for _ in 0..200 {
        let (status, _, body) = call(
            app,
            "GET",
            &format!("/templates/{template}/builds/{build}/status"),
            &[],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["status"] != "building" {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("build {build} did not end");
}

#[tokio::test]
async fn test_a_build_uploads_its_files_runs_its_steps_and_reports_its_log() {
    let (app, runtime) = app().await;
    let (status, _, opened) =
        call(&app, "POST", "/v3/templates", &[], r#"{"name": "mine:v1"}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{opened}");
    assert_eq!(opened["templateID"], "mine");
    assert_eq!(opened["tags"], serde_json::json!(["v1"]));
    let build = opened["buildID"].as_str().unwrap().to_owned();

    let (status, _, link) = call(
        &app,
        "GET",
        "/templates/mine/files/abc123",
        &[("host", "gw:3000")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    assert_eq!(link["present"], false);
    let url = link["url"].as_str().unwrap();
    let path = url.strip_prefix("http://gw:3000").unwrap();
    // The SDK uploads without the API key: the token in the link is the credential.
    let put = |path: String| {
        let app = app.clone();
        async move {
            app.oneshot(
                Request::builder()
                    .method("PUT")
                    .uri(path)
                    .body(Body::from(b"a tar".to_vec()))
                    .unwrap(),
            )
            .await
            .unwrap()
            .status()
        }
    };
    assert_eq!(put(path.to_owned()).await, StatusCode::OK);
    assert_eq!(
        put("/template-uploads/not-a-token".into()).await,
        StatusCode::NOT_FOUND
    );
    let (_, _, again) = call(&app, "GET", "/templates/mine/files/abc123", &[], "").await;
    assert_eq!(again["present"], true);

    let steps = serde_json::json!({
        "fromImage": "debian:bookworm",
        "steps": [
            {"type": "COPY", "args": ["app", "/srv/", "", ""], "filesHash": "abc123"},
            {"type": "RUN", "args": ["make"]},
        ],
        "startCmd": "serve",
    });
    let start = format!("/v2/templates/mine/builds/{build}");
    let (status, _, body) = call(&app, "POST", &start, &[], &steps.to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, _, body) = call(&app, "POST", &start, &[], &steps.to_string()).await;
    assert_eq!(status, StatusCode::CONFLICT, "started once: {body}");

    let done = wait(&app, "mine", &build).await;
    assert_eq!(done["status"], "ready", "{done}");
    let messages: Vec<&str> = done["logEntries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("COPY app /srv/")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("==> template mine ready")),
        "{messages:?}"
    );
    assert_eq!(done["logs"].as_array().unwrap().len(), messages.len());
    let (_, _, rest) = call(
        &app,
        "GET",
        &format!(
            "/templates/mine/builds/{build}/status?logsOffset={}",
            messages.len()
        ),
        &[],
        "",
    )
    .await;
    assert_eq!(rest["logEntries"], serde_json::json!([]));
    // The log stays with the template after the build is forgotten.
    let (status, _, kept) = call(&app, "GET", "/templates/mine/build-log", &[], "").await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    assert!(
        kept["lines"].to_string().contains("COPY app /srv/"),
        "{kept}"
    );
    let (_, _, none) = call(&app, "GET", "/templates/base/build-log", &[], "").await;
    assert_eq!(none["lines"], serde_json::json!([]));
    let (status, _, _) = call(&app, "GET", "/templates/nope/build-log", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        runtime
            .exec_requests()
            .iter()
            .any(|request| request.argv.join(" ").contains("make")),
        "the RUN step ran in a build sandbox"
    );

    let (status, _, found) = call(&app, "GET", "/templates/aliases/mine", &[], "").await;
    assert_eq!(
        (status, &found["templateID"]),
        (StatusCode::OK, &serde_json::json!("mine"))
    );
    let (status, _, _) = call(&app, "GET", "/templates/aliases/nope", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A second build of the name replaces the first.
    let (_, _, first) = call(&app, "GET", "/templates/mine", &[], "").await;
    let (_, _, reopened) = call(&app, "POST", "/v3/templates", &[], r#"{"name": "mine"}"#).await;
    let rebuild = reopened["buildID"].as_str().unwrap();
    let steps = serde_json::json!({"fromImage": "debian:bookworm", "steps": [{"type": "RUN", "args": ["make again"]}]});
    let (status, _, _) = call(
        &app,
        "POST",
        &format!("/v2/templates/mine/builds/{rebuild}"),
        &[],
        &steps.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(wait(&app, "mine", rebuild).await["status"], "ready");
    let (_, _, second) = call(&app, "GET", "/templates/mine", &[], "").await;
    assert!(
        second["builtFrom"]
            .as_str()
            .is_some_and(|b| b.starts_with("recipe:"))
    );
    assert_ne!(
        second["builtFrom"], first["builtFrom"],
        "the new build replaced it"
    );
    assert!(
        runtime
            .exec_requests()
            .iter()
            .any(|request| request.argv.join(" ").contains("make again"))
    );
}

#[tokio::test]
async fn test_a_failed_step_ends_the_build_naming_the_sdks_step() {
    let (app, runtime) = app().await;
    runtime.fail_execs_containing("exit 3");
    let (_, _, opened) = call(&app, "POST", "/v3/templates", &[], r#"{"name": "broken"}"#).await;
    let build = opened["buildID"].as_str().unwrap();
    let steps = serde_json::json!({
        "fromImage": "debian:bookworm",
        "steps": [
            {"type": "ENV", "args": ["A", "1"]},
            {"type": "RUN", "args": ["true"]},
            {"type": "RUN", "args": ["exit 3"]},
        ],
    });
    let (status, _, _) = call(
        &app,
        "POST",
        &format!("/v2/templates/broken/builds/{build}"),
        &[],
        &steps.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let done = wait(&app, "broken", build).await;
    assert_eq!(done["status"], "error", "{done}");
    assert_eq!(done["reason"]["step"], "3", "the SDK's third step: {done}");
    assert!(
        done["reason"]["message"]
            .as_str()
            .unwrap()
            .contains("exit 3"),
        "{done}"
    );
    let (status, _, _) = call(&app, "GET", "/templates/aliases/broken", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no half-made template");
}

#[tokio::test]
async fn test_bad_requests_are_refused_with_the_error_body() {
    let (app, _) = app().await;
    let refused = |answer: (StatusCode, axum::http::HeaderMap, serde_json::Value), status: u16| {
        assert_eq!(answer.0.as_u16(), status, "{}", answer.2);
        assert_eq!(answer.2["code"], status);
        answer.2["message"].as_str().unwrap().to_owned()
    };
    // The base template was made by no build: a build never replaces it.
    refused(
        call(&app, "POST", "/v3/templates", &[], r#"{"name": "base"}"#).await,
        409,
    );
    refused(
        call(
            &app,
            "POST",
            "/v3/templates",
            &[],
            r#"{"name": "Bad Name!"}"#,
        )
        .await,
        400,
    );
    refused(
        call(&app, "POST", "/v3/templates", &[], r#"{"name": "build-x"}"#).await,
        400,
    );
    refused(call(&app, "POST", "/v3/templates", &[], "{}").await, 400);
    refused(
        call(
            &app,
            "POST",
            "/v3/templates",
            &[],
            r#"{"name": "mine", "tags": ["V1"]}"#,
        )
        .await,
        400,
    );
    refused(
        call(
            &app,
            "POST",
            "/templates/builds/prune",
            &[],
            r#"{"days": 1}"#,
        )
        .await,
        400,
    );
    let (status, _, pruned) = call(&app, "POST", "/templates/builds/prune", &[], "").await;
    assert_eq!(
        (status, pruned),
        (StatusCode::OK, serde_json::json!({"pruned": []}))
    );
    refused(
        call(&app, "GET", "/templates/mine/builds/nope/status", &[], "").await,
        404,
    );
    refused(
        call(&app, "GET", "/templates/mine/files/not%20a%20hash", &[], "").await,
        400,
    );
    let (_, _, opened) = call(&app, "POST", "/v3/templates", &[], r#"{"name": "mine"}"#).await;
    let start = format!(
        "/v2/templates/mine/builds/{}",
        opened["buildID"].as_str().unwrap()
    );
    let message = refused(
        call(
            &app,
            "POST",
            &start,
            &[],
            r#"{"fromImage": "ubuntu:22.04", "steps": []}"#,
        )
        .await,
        400,
    );
    assert!(message.contains("coppice template import"), "{message}");
    refused(call(&app, "POST", &start, &[], "not json").await, 400);
    // Refused requests leave the build waiting for a good one.
    let good = r#"{"fromImage": "debian:bookworm", "steps": [{"type": "RUN", "args": ["true"]}]}"#;
    let (status, _, _) = call(&app, "POST", &start, &[], good).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    refused(
        call(&app, "POST", "/v2/templates/other/builds/nope", &[], good).await,
        404,
    );
}

#[tokio::test]
async fn test_tags_name_builds_and_sandboxes_start_from_them() {
    let (app, _) = app().await;
    let build = |tags: &'static str, run: &'static str| {
        let app = app.clone();
        async move {
            let (_, _, opened) = call(&app, "POST", "/v3/templates", &[], tags).await;
            let build = opened["buildID"].as_str().unwrap().to_owned();
            assert_eq!(build.len(), 36, "a UUID: {build}");
            let steps = serde_json::json!({"fromImage": "debian:bookworm", "steps": [{"type": "RUN", "args": [run]}]});
            let (status, _, _) = call(
                &app,
                "POST",
                &format!("/v2/templates/tagged/builds/{build}"),
                &[],
                &steps.to_string(),
            )
            .await;
            assert_eq!(status, StatusCode::ACCEPTED);
            assert_eq!(wait(&app, "tagged", &build).await["status"], "ready");
        }
    };
    build(r#"{"name": "tagged:v1", "tags": ["stable"]}"#, "one").await;
    build(r#"{"name": "tagged"}"#, "two").await;

    let (status, _, tags) = call(&app, "GET", "/templates/tagged/tags", &[], "").await;
    assert_eq!(status, StatusCode::OK, "{tags}");
    let names: Vec<&str> = tags
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tag"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["latest", "stable", "v1"]);
    assert_eq!(
        tags[1]["buildID"], tags[2]["buildID"],
        "one build, two tags"
    );
    assert_ne!(tags[0]["buildID"], tags[1]["buildID"]);
    let (_, _, listed) = call(&app, "GET", "/templates", &[], "").await;
    assert!(
        !listed.to_string().contains("tagged:"),
        "tags are not templates of their own: {listed}"
    );

    let (status, _, created) = call(
        &app,
        "POST",
        "/sandboxes",
        &[],
        r#"{"templateID": "tagged:v1"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["templateID"], "tagged:v1");

    let (status, _, assigned) = call(
        &app,
        "POST",
        "/templates/tags",
        &[],
        r#"{"target": "tagged:v1", "tags": ["prod"]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{assigned}");
    assert_eq!(assigned["buildID"], tags[2]["buildID"]);
    let (status, _, _) = call(
        &app,
        "DELETE",
        "/templates/tags",
        &[],
        r#"{"name": "tagged", "tags": ["prod", "stable"]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, _, after) = call(&app, "GET", "/templates/tagged/tags", &[], "").await;
    assert_eq!(after.as_array().unwrap().len(), 2, "{after}");
    let (status, _, refused) = call(
        &app,
        "POST",
        "/templates/tags",
        &[],
        r#"{"target": "base", "tags": ["v1"]}"#,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "only builds are tagged: {refused}"
    );
    let (status, _, _) = call(
        &app,
        "DELETE",
        "/templates/tags",
        &[],
        r#"{"name": "tagged", "tags": ["latest"]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = call(&app, "DELETE", "/templates/tagged", &[], "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = call(&app, "GET", "/templates/tagged/tags", &[], "").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the tags went with the template"
    );
}
