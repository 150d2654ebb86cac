//! The Volume API over fake backends: the statuses and bodies the SDKs expect, and the
//! content API's token check.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::http::StatusCode;
use coppice_core::testing::FakeRuntime;

mod common;

use common::call;

#[tokio::test]
async fn test_volumes_are_created_listed_mounted_and_deleted_as_the_sdks_expect() {
    let app = common::app_with(Arc::new(FakeRuntime::default())).await;
    let (status, _, created) = call(&app, "POST", "/volumes", &[], r#"{"name":"data"}"#).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["volumeID"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], "data");
    assert_eq!(created["token"].as_str().unwrap().len(), 64);

    let (status, _, taken) = call(&app, "POST", "/volumes", &[], r#"{"name":"data"}"#).await;
    assert_eq!(
        (status, taken["code"].as_u64()),
        (StatusCode::CONFLICT, Some(409))
    );
    let (status, _, bad) = call(&app, "POST", "/volumes", &[], r#"{"name":"no/slash"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert!(
        bad["message"].as_str().unwrap().contains("volume name"),
        "{bad}"
    );

    let (_, _, listed) = call(&app, "GET", "/volumes", &[], "").await;
    assert_eq!(
        listed,
        serde_json::json!([{"volumeID": id, "name": "data"}])
    );
    let (_, _, info) = call(&app, "GET", &format!("/volumes/{id}"), &[], "").await;
    assert_eq!(info["token"], created["token"]);

    let body = r#"{"templateID":"base","volumeMounts":[{"name":"data","path":"/mnt/data"}]}"#;
    let (status, _, sandbox) = call(&app, "POST", "/v2/sandboxes", &[], body).await;
    assert_eq!(status, StatusCode::CREATED, "{sandbox}");
    let sandbox_id = sandbox["sandboxID"].as_str().unwrap().to_owned();
    let (_, _, detail) = call(&app, "GET", &format!("/sandboxes/{sandbox_id}"), &[], "").await;
    assert_eq!(
        detail["volumeMounts"],
        serde_json::json!([{"name": "data", "path": "/mnt/data"}])
    );
    let (status, _, in_use) = call(&app, "DELETE", &format!("/volumes/{id}"), &[], "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{in_use}");
    assert!(
        in_use["message"].as_str().unwrap().contains(&sandbox_id),
        "{in_use}"
    );

    for (body, why) in [
        (
            r#"{"templateID":"base","volumeMounts":[{"name":"nosuch","path":"/mnt/x"}]}"#,
            "unknown volume",
        ),
        (
            r#"{"templateID":"base","volumeMounts":[{"name":"data","path":"/proc/x"}]}"#,
            "reserved path",
        ),
        (
            r#"{"templateID":"base","volumeMounts":[{"name":"data","path":"relative"}]}"#,
            "relative path",
        ),
    ] {
        let (status, _, refused) = call(&app, "POST", "/v2/sandboxes", &[], body).await;
        assert!(status.is_client_error(), "{why}: {status} {refused}");
        assert!(refused["message"].is_string(), "{why}: {refused}");
    }

    let (status, _, _) = call(&app, "DELETE", &format!("/sandboxes/{sandbox_id}"), &[], "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = call(&app, "DELETE", &format!("/volumes/{id}"), &[], "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, gone) = call(&app, "GET", &format!("/volumes/{id}"), &[], "").await;
    assert_eq!(
        (status, gone["code"].as_u64()),
        (StatusCode::NOT_FOUND, Some(404))
    );
}

#[tokio::test]
async fn test_volume_content_needs_the_volume_token() {
    let app = common::app_with(Arc::new(FakeRuntime::default())).await;
    let (_, _, created) = call(&app, "POST", "/volumes", &[], r#"{"name":"data"}"#).await;
    let id = created["volumeID"].as_str().unwrap();
    let url = format!("/volumecontent/{id}/dir?path=/");

    let (status, _, missing) = call(&app, "GET", &url, &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{missing}");
    let wrong = [("authorization", "Bearer 0000")];
    let (status, _, refused) = call(&app, "GET", &url, &wrong, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
    let (status, _, unknown) =
        call(&app, "GET", "/volumecontent/nosuch/dir?path=/", &wrong, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}");
    let token = format!("Bearer {}", created["token"].as_str().unwrap());
    let bearer = [("authorization", token.as_str())];
    let (status, _, no_path) = call(
        &app,
        "GET",
        &format!("/volumecontent/{id}/dir"),
        &bearer,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{no_path}");
    let (status, _, dotdot) = call(
        &app,
        "GET",
        &format!("/volumecontent/{id}/path?path=/../x"),
        &bearer,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{dotdot}");
}
