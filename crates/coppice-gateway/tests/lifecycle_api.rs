//! Pause, resume and connect over fake backends: the statuses and bodies the SDKs expect.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::http::StatusCode;
use coppice_core::testing::FakeRuntime;

mod common;

use common::call;

async fn app() -> (axum::Router, Arc<FakeRuntime>) {
    let runtime = Arc::new(FakeRuntime::default());
    (common::app_with(runtime.clone()).await, runtime)
}

async fn create(app: &axum::Router, body: &str) -> String {
    let (status, _, created) = call(app, "POST", "/v2/sandboxes", &[], body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["sandboxID"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn test_pause_resume_and_connect_answer_as_the_sdks_expect() {
    let (app, runtime) = app().await;
    let id = create(&app, r#"{"templateID":"base"}"#).await;
    let sandbox = |path: &str| format!("/sandboxes/{id}{path}");

    assert_eq!(
        call(&app, "POST", &sandbox("/pause"), &[], "").await.0,
        StatusCode::NO_CONTENT
    );
    assert!(runtime.is_frozen(&id.parse().unwrap()));
    let (_, _, info) = call(&app, "GET", &sandbox(""), &[], "").await;
    assert_eq!(
        (info["state"].as_str(), info["pauseMode"].as_str()),
        (Some("paused"), Some("full"))
    );
    let (status, _, again) = call(&app, "POST", &sandbox("/pause"), &[], "{}").await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "pausing a paused sandbox: {again}"
    );
    assert_eq!(again["code"], 409);

    // A paused sandbox without auto-resume takes no traffic.
    let headers = [
        ("e2b-sandbox-id", id.as_str()),
        ("e2b-sandbox-port", "49983"),
    ];
    let (status, _, refused) = call(&app, "GET", "/health", &headers, "").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        refused["message"].as_str().unwrap().contains("paused"),
        "{refused}"
    );

    let (status, _, resumed) = call(&app, "POST", &sandbox("/resume"), &[], "{}").await;
    assert_eq!(status, StatusCode::CREATED, "{resumed}");
    assert_eq!(resumed["sandboxID"], id.as_str());
    assert_eq!(resumed["envdAccessToken"].as_str().unwrap().len(), 64);
    assert!(!runtime.is_frozen(&id.parse().unwrap()));
    assert_eq!(
        call(&app, "POST", &sandbox("/resume"), &[], "").await.0,
        StatusCode::CONFLICT
    );

    let connect = format!("/v2/sandboxes/{id}/connect");
    assert_eq!(
        call(&app, "POST", &connect, &[], r#"{"timeout":60}"#)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, "POST", &sandbox("/pause"), &[], r#"{"memory":false}"#)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (_, _, info) = call(&app, "GET", &sandbox(""), &[], "").await;
    assert_eq!(info["pauseMode"], "filesystem");
    let (status, _, connected) = call(&app, "POST", &connect, &[], "{}").await;
    assert_eq!(status, StatusCode::CREATED, "{connected}");
    let (_, _, info) = call(&app, "GET", &sandbox(""), &[], "").await;
    assert_eq!(info["state"], "running");

    assert_eq!(
        call(&app, "DELETE", &sandbox(""), &[], "").await.0,
        StatusCode::NO_CONTENT
    );
    let (status, _, gone) = call(&app, "POST", &connect, &[], "{}").await;
    assert_eq!(
        (status, gone["code"].as_u64()),
        (StatusCode::NOT_FOUND, Some(404))
    );
    assert_eq!(
        call(&app, "POST", &sandbox("/pause"), &[], "").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn test_lifecycle_options_are_kept_and_reported() {
    let (app, _) = app().await;
    let id = create(
        &app,
        r#"{"templateID":"base","autoPause":true,"autoPauseMemory":false,"autoResume":{"enabled":true}}"#,
    )
    .await;
    let (_, _, info) = call(&app, "GET", &format!("/sandboxes/{id}"), &[], "").await;
    assert_eq!(
        info["lifecycle"],
        serde_json::json!({"autoResume": true, "onTimeout": "pause"})
    );
    assert_eq!(info["pauseMode"], "filesystem");
    // Traffic to any of its ports wakes an auto-resume sandbox (nothing listens on this
    // one, so the answer is still a 502).
    assert_eq!(
        call(&app, "POST", &format!("/sandboxes/{id}/pause"), &[], "")
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let headers = [
        ("e2b-sandbox-id", id.as_str()),
        ("e2b-sandbox-port", "8080"),
    ];
    assert_eq!(
        call(&app, "GET", "/", &headers, "").await.0,
        StatusCode::BAD_GATEWAY
    );
    let (_, _, info) = call(&app, "GET", &format!("/sandboxes/{id}"), &[], "").await;
    assert_eq!(info["state"], "running");

    let worded = create(
        &app,
        r#"{"templateID":"base","autoPause":true,"pauseMode":"filesystem"}"#,
    )
    .await;
    let (_, _, info) = call(&app, "GET", &format!("/sandboxes/{worded}"), &[], "").await;
    assert_eq!(info["pauseMode"], "filesystem");
    let (status, _, refused) = call(
        &app,
        "POST",
        "/v2/sandboxes",
        &[],
        r#"{"templateID":"base","autoPause":true,"pauseMode":"sometimes"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");

    let plain = create(&app, r#"{"templateID":"base"}"#).await;
    let (_, _, info) = call(&app, "GET", &format!("/sandboxes/{plain}"), &[], "").await;
    assert_eq!(
        info["lifecycle"],
        serde_json::json!({"autoResume": false, "onTimeout": "kill"})
    );
}

#[tokio::test]
async fn test_bad_pause_and_connect_bodies_are_400() {
    let (app, _) = app().await;
    let id = create(&app, r#"{"templateID":"base"}"#).await;
    for (path, body) in [
        (format!("/sandboxes/{id}/pause"), r#"{"memory":"yes"}"#),
        (format!("/v2/sandboxes/{id}/connect"), r#"{"timeout":-5}"#),
        (format!("/v2/sandboxes/{id}/connect"), "not json"),
    ] {
        let (status, _, error) = call(&app, "POST", &path, &[], body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {error}");
        assert_eq!(error["code"], 400);
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    let (_, _, info) = call(&app, "GET", &format!("/sandboxes/{id}"), &[], "").await;
    assert_eq!(info["state"], "running", "bad input changed nothing");
}

#[tokio::test]
async fn test_snapshots_and_forks_answer_as_the_sdks_expect() {
    let (app, _) = app().await;
    let id = create(&app, r#"{"templateID":"base","metadata":{"k":"v"}}"#).await;
    let snapshots = format!("/sandboxes/{id}/snapshots");

    let (status, _, taken) = call(&app, "POST", &snapshots, &[], r#"{"name":"s1"}"#).await;
    assert_eq!(status, StatusCode::CREATED, "{taken}");
    assert_eq!(
        taken,
        serde_json::json!({"snapshotID": "s1", "names": ["s1"]})
    );
    let (status, _, again) = call(&app, "POST", &snapshots, &[], r#"{"name":"s1"}"#).await;
    assert_eq!(
        (status, again["code"].as_u64()),
        (StatusCode::CONFLICT, Some(409))
    );
    for (body, wanted) in [
        (r#"{"name":"Not A Name"}"#, StatusCode::BAD_REQUEST),
        (r#"{"name":"fork-mine"}"#, StatusCode::BAD_REQUEST),
        (r#"{"memory":true}"#, StatusCode::NOT_IMPLEMENTED),
    ] {
        let (status, _, error) = call(&app, "POST", &snapshots, &[], body).await;
        assert_eq!(status, wanted, "{body}: {error}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    let (_, _, generated) = call(&app, "POST", &snapshots, &[], "").await;
    assert!(
        generated["snapshotID"]
            .as_str()
            .unwrap()
            .starts_with("snap-")
    );
    let (status, _, listed) =
        call(&app, "GET", &format!("/snapshots?sandboxID={id}"), &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let (_, headers, page) = call(&app, "GET", "/snapshots?limit=1", &[], "").await;
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert!(headers.contains_key("x-next-token"));

    let from_snapshot = create(&app, r#"{"templateID":"s1"}"#).await;
    assert_ne!(from_snapshot, id);

    let fork = format!("/sandboxes/{id}/fork");
    let (status, _, forks) = call(&app, "POST", &fork, &[], r#"{"count":3,"timeout":60}"#).await;
    assert_eq!(status, StatusCode::CREATED, "{forks}");
    let forks = forks.as_array().unwrap();
    assert_eq!(forks.len(), 3);
    let mut ids: Vec<&str> = forks
        .iter()
        .map(|f| f["sandbox"]["sandboxID"].as_str().unwrap())
        .collect();
    let mut tokens: Vec<&str> = forks
        .iter()
        .map(|f| f["sandbox"]["envdAccessToken"].as_str().unwrap())
        .collect();
    ids.push(&id);
    ids.sort_unstable();
    ids.dedup();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!((ids.len(), tokens.len()), (4, 3));
    for (body, wanted) in [
        (r#"{"count":21}"#, StatusCode::BAD_REQUEST),
        (r#"{"count":0}"#, StatusCode::BAD_REQUEST),
        (r#"{"count":-1}"#, StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(
            call(&app, "POST", &fork, &[], body).await.0,
            wanted,
            "{body}"
        );
    }

    assert_eq!(
        call(&app, "DELETE", "/templates/s1", &[], "").await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&app, "DELETE", "/templates/s1", &[], "").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&app, "DELETE", "/templates/base", &[], "").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        call(&app, "DELETE", &format!("/sandboxes/{id}"), &[], "")
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (status, _, gone) = call(&app, "POST", &fork, &[], "{}").await;
    assert_eq!(
        (status, gone["code"].as_u64()),
        (StatusCode::NOT_FOUND, Some(404))
    );
}
