//! The control plane over fake backends: status codes, the `{code, message}` error body for
//! bad input, API keys, pagination and sandbox-traffic routing errors.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use coppice_core::testing::FakeRuntime;
use http_body_util::BodyExt;
use tower::ServiceExt;

mod common;

use common::call;

async fn app() -> axum::Router {
    common::app_with(Arc::new(FakeRuntime::default())).await
}

fn assert_error(answer: &(StatusCode, axum::http::HeaderMap, serde_json::Value), status: u16) {
    assert_eq!(answer.0.as_u16(), status, "{:?}", answer.2);
    assert_eq!(answer.2["code"], status);
    assert!(answer.2["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn test_create_answers_201_with_the_sandbox_body() {
    let app = app().await;
    let answer = call(
        &app,
        "POST",
        "/v2/sandboxes",
        &[],
        r#"{"templateID":"base","metadata":{"k":"v"}}"#,
    )
    .await;
    assert_eq!(answer.0, StatusCode::CREATED);
    assert_eq!(answer.2["templateID"], "base");
    assert_eq!(answer.2["envdVersion"], "0.6.13");
    assert_eq!(answer.2["envdAccessToken"].as_str().unwrap().len(), 64);
    assert!(answer.2["domain"].is_null());
}

#[tokio::test]
async fn test_bad_input_gets_documented_4xx_errors() {
    let app = app().await;
    let huge = format!(
        r#"{{"templateID":"base","metadata":{{"k":"{}"}}}}"#,
        "x".repeat(1 << 20)
    );
    let answer = call(&app, "POST", "/v2/sandboxes", &[], &huge).await;
    assert!(answer.0.is_client_error(), "{:?}", answer.0);
    let refused: [(&str, &str, &str, u16); 11] = [
        ("POST", "/v2/sandboxes", "{\"templateID\":", 400),
        ("POST", "/v2/sandboxes", r#"{"templateID":"nope"}"#, 404),
        ("POST", "/v2/sandboxes", r#"{"templateID":"Bad/Id"}"#, 400),
        (
            "POST",
            "/v2/sandboxes",
            r#"{"templateID":"base","timeout":-5}"#,
            400,
        ),
        (
            "POST",
            "/v2/sandboxes",
            r#"{"templateID":"base","timeout":99999999999}"#,
            400,
        ),
        ("GET", "/sandboxes/NOT-AN-ID", "", 400),
        ("GET", "/sandboxes/abc123", "", 404),
        ("DELETE", "/sandboxes/abc123", "", 404),
        (
            "POST",
            "/sandboxes/abc123/timeout",
            r#"{"timeout":"x"}"#,
            400,
        ),
        ("GET", "/v2/sandboxes?state=frozen", "", 400),
        ("GET", "/v2/sandboxes?limit=0", "", 400),
    ];
    for (method, path, body, status) in refused {
        assert_error(&call(&app, method, path, &[], body).await, status);
    }
    assert_error(&call(&app, "GET", "/no/such/endpoint", &[], "").await, 404);
    let header_only = call(&app, "GET", "/health", &[("e2b-sandbox-id", "abc")], "").await;
    assert_error(&header_only, 400);
    let bad_port = call(
        &app,
        "GET",
        "/health",
        &[("e2b-sandbox-id", "abc"), ("e2b-sandbox-port", "x")],
        "",
    )
    .await;
    assert_error(&bad_port, 400);
}

#[tokio::test]
async fn test_unknown_sandbox_traffic_is_502_was_not_found() {
    let app = app().await;
    let answer = call(
        &app,
        "GET",
        "/health",
        &[("e2b-sandbox-id", "abc123"), ("e2b-sandbox-port", "49983")],
        "",
    )
    .await;
    assert_eq!(answer.0, StatusCode::BAD_GATEWAY);
    assert_eq!(
        answer.2,
        serde_json::json!({"sandboxId": "abc123", "message": "The sandbox was not found", "code": 502})
    );
}

#[tokio::test]
async fn test_wrong_or_missing_api_key_is_401_but_health_is_open() {
    let app = app().await;
    let response = app
        .clone()
        .oneshot(
            Request::get("/v2/sandboxes")
                .header("x-api-key", "nope")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = app
        .clone()
        .oneshot(Request::get("/v2/sandboxes").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = app
        .oneshot(Request::get("/health").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"Health check successful");
}

#[tokio::test]
async fn test_list_pages_with_next_token_and_filters_by_metadata() {
    let app = app().await;
    for index in 0..3 {
        let body = format!(r#"{{"templateID":"base","metadata":{{"suite":"s","n":"{index}"}}}}"#);
        call(&app, "POST", "/v2/sandboxes", &[], &body).await;
    }
    call(
        &app,
        "POST",
        "/v2/sandboxes",
        &[],
        r#"{"templateID":"base"}"#,
    )
    .await;
    let first = call(
        &app,
        "GET",
        "/v2/sandboxes?metadata=suite%3Ds&limit=2",
        &[],
        "",
    )
    .await;
    assert_eq!(first.2.as_array().unwrap().len(), 2);
    let token = first.1["x-next-token"].to_str().unwrap().to_owned();
    let second = call(
        &app,
        "GET",
        &format!("/v2/sandboxes?metadata=suite%3Ds&limit=2&nextToken={token}"),
        &[],
        "",
    )
    .await;
    assert_eq!(second.2.as_array().unwrap().len(), 1);
    assert!(!second.1.contains_key("x-next-token"));
    let all = call(&app, "GET", "/v2/sandboxes?state=running,paused", &[], "").await;
    assert_eq!(all.2.as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn test_signed_file_urls_are_routed_to_the_sandbox_whose_token_signed_them() {
    let app = app().await;
    let created = call(
        &app,
        "POST",
        "/v2/sandboxes",
        &[],
        r#"{"templateID":"base"}"#,
    )
    .await;
    let id = created.2["sandboxID"].as_str().unwrap().to_owned();
    let token = created.2["envdAccessToken"].as_str().unwrap().to_owned();
    let signature = coppice_envd::auth::file_signature(
        "/home/user/a.txt",
        coppice_envd::auth::FileOperation::Read,
        "",
        &token,
        None,
    );
    let encoded: String = serde_urlencoded::to_string([("signature", signature.as_str())]).unwrap();
    let signed = call(
        &app,
        "GET",
        &format!("/files?path=%2Fhome%2Fuser%2Fa.txt&{encoded}"),
        &[],
        "",
    )
    .await;
    // The fake runtime runs no envd, so the routed request ends at the sandbox's door.
    assert_eq!(signed.0, StatusCode::BAD_GATEWAY, "{:?}", signed.2);
    assert_eq!(signed.2["sandboxId"], id.as_str());
    let forged = call(
        &app,
        "GET",
        "/files?path=%2Fhome%2Fuser%2Fa.txt&signature=v1_forged",
        &[],
        "",
    )
    .await;
    assert_error(&forged, 404);
}

/// A Unix-socket server that switches every request to a byte echo.
async fn echo_upgrade_server(socket: std::path::PathBuf) {
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                |mut request: hyper::Request<hyper::body::Incoming>| async move {
                    let upgrade = hyper::upgrade::on(&mut request);
                    tokio::spawn(async move {
                        if let Ok(upgraded) = upgrade.await {
                            let (mut read, mut write) =
                                tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
                            let _ = tokio::io::copy(&mut read, &mut write).await;
                        }
                    });
                    hyper::Response::builder()
                        .status(101)
                        .header("connection", "upgrade")
                        .header("upgrade", "echo")
                        .body(http_body_util::Empty::<bytes::Bytes>::new())
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

#[tokio::test]
async fn test_protocol_switches_pass_through_the_envd_forwarder() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("up.sock");
    tokio::spawn(echo_upgrade_server(socket.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let socket = socket.clone();
        async move {
            coppice_gateway::envd::forward(&socket, request)
                .await
                .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        client.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    client.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        client.read_exact(&mut echoed),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(&echoed, b"ping");
}

#[tokio::test]
async fn test_templates_are_listed_and_described_and_imports_check_their_input() {
    let app = app().await;
    let listed = call(&app, "GET", "/templates", &[], "").await;
    assert_eq!(listed.0, StatusCode::OK);
    assert_eq!(listed.2[0]["templateID"], "base");
    let one = call(&app, "GET", "/templates/base", &[], "").await;
    assert_eq!(one.0, StatusCode::OK, "{:?}", one.2);
    assert_eq!(one.2["defaultUser"], "user");
    assert_eq!(one.2["defaultWorkdir"], "/home/user");
    assert!(one.2["startCommand"].is_null());

    assert_error(&call(&app, "GET", "/templates/nope", &[], "").await, 404);
    assert_error(
        &call(&app, "GET", "/templates/Bad%2FId", &[], "").await,
        400,
    );
    let refused: [(&str, u16); 4] = [
        ("{", 400),
        (r#"{"templateID":"img","image":"relative/layout"}"#, 400),
        (r#"{"templateID":"Bad/Id","image":"/srv/layout"}"#, 400),
        (
            r#"{"templateID":"img","image":"/srv/layout","extra":1}"#,
            400,
        ),
    ];
    for (body, status) in refused {
        assert_error(
            &call(&app, "POST", "/templates/imports", &[], body).await,
            status,
        );
    }
}
