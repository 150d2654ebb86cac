//! Network policy and exposed ports over fake backends: `PUT /sandboxes/{id}/network`, the
//! `network` of create and get-info, and the traffic token of private sandboxes.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::http::StatusCode;
use coppice_core::testing::FakeRuntime;

mod common;

use common::call;

async fn create(app: &axum::Router, body: &str) -> serde_json::Value {
    let (status, _, created) = call(app, "POST", "/v2/sandboxes", &[], body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

#[tokio::test]
async fn test_network_is_taken_at_create_reported_and_replaced() {
    let app = common::app_with(Arc::new(FakeRuntime::default())).await;
    let created = create(
        &app,
        r#"{"templateID":"base","allow_internet_access":false,"network":{"allowOut":["10.0.0.0/8","pypi.org"]}}"#,
    )
    .await;
    let id = created["sandboxID"].as_str().unwrap();
    let info_path = format!("/sandboxes/{id}");
    let (_, _, info) = call(&app, "GET", &info_path, &[], "").await;
    assert_eq!(info["allowInternetAccess"], false);
    assert_eq!(
        info["network"],
        serde_json::json!({"allowOut": ["10.0.0.0/8", "pypi.org"], "denyOut": [], "allowPublicTraffic": true})
    );

    let network = format!("/sandboxes/{id}/network");
    let (status, _, body) = call(
        &app,
        "PUT",
        &network,
        &[],
        r#"{"denyOut":["192.0.2.0/24"]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, _, info) = call(&app, "GET", &info_path, &[], "").await;
    // Omitted fields are cleared: internet access is back on, allowOut is empty.
    assert_eq!(info["allowInternetAccess"], true);
    assert_eq!(info["network"]["allowOut"], serde_json::json!([]));
    assert_eq!(
        info["network"]["denyOut"],
        serde_json::json!(["192.0.2.0/24"])
    );
}

#[tokio::test]
async fn test_network_update_refuses_what_it_cannot_enforce_and_unknown_sandboxes() {
    let app = common::app_with(Arc::new(FakeRuntime::default())).await;
    let created = create(&app, r#"{"templateID":"base"}"#).await;
    let id = created["sandboxID"].as_str().unwrap();
    let network = format!("/sandboxes/{id}/network");

    let (status, _, body) = call(
        &app,
        "PUT",
        &network,
        &[],
        r#"{"egressProxy":{"address":"proxy.test:3128"}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap().contains("egressProxy"),
        "{body}"
    );
    let (status, _, _) = call(&app, "PUT", &network, &[], "not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, body) = call(&app, "PUT", "/sandboxes/nosuchbox/network", &[], "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], 404);
}

#[tokio::test]
async fn test_private_ports_need_the_traffic_token() {
    let app = common::app_with(Arc::new(FakeRuntime::default())).await;
    let created = create(
        &app,
        r#"{"templateID":"base","network":{"allowPublicTraffic":false}}"#,
    )
    .await;
    let id = created["sandboxID"].as_str().unwrap();
    let token = created["trafficAccessToken"].as_str().unwrap();
    assert_eq!(token.len(), 64);
    let public = create(&app, r#"{"templateID":"base"}"#).await;
    assert!(public["trafficAccessToken"].is_null());

    let port = [("e2b-sandbox-id", id), ("e2b-sandbox-port", "8080")];
    let (status, _, body) = call(&app, "GET", "/", &port, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("E2B-Traffic-Access-Token")
    );
    let wrong = [
        ("e2b-sandbox-id", id),
        ("e2b-sandbox-port", "8080"),
        ("e2b-traffic-access-token", "0000"),
    ];
    assert_eq!(
        call(&app, "GET", "/", &wrong, "").await.0,
        StatusCode::FORBIDDEN
    );
    // With the token the request goes on to the sandbox (whose fake envd does not answer).
    let right = [
        ("e2b-sandbox-id", id),
        ("e2b-sandbox-port", "8080"),
        ("e2b-traffic-access-token", token),
    ];
    assert_eq!(
        call(&app, "GET", "/", &right, "").await.0,
        StatusCode::BAD_GATEWAY
    );
    // envd's own port keeps its own token check, not this one.
    let envd = [("e2b-sandbox-id", id), ("e2b-sandbox-port", "49983")];
    assert_ne!(
        call(&app, "GET", "/health", &envd, "").await.0,
        StatusCode::FORBIDDEN
    );
    // The tunnel is envd's host-side door, never reachable as sandbox traffic.
    let (status, _, _) = call(&app, "GET", "/tunnel/22", &envd, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
