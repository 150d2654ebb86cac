//! The gateway over fake backends, shared by the component tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use coppice_core::clock::SystemClock;
use coppice_core::manager::{Backends, ManagerConfig};
use coppice_core::store::Store;
use coppice_core::testing::{FakeNetPolicy, FakeRuntime, FakeStorage};
use coppice_gateway::auth::ApiKeys;
use coppice_gateway::envd::{EnvdCallError, EnvdInit};
use coppice_gateway::{AppState, router};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// The API key every request carries.
pub const KEY: &str = "test-key";

/// The gateway over fake backends, with `runtime` as its runtime.
pub async fn app_with(runtime: Arc<FakeRuntime>) -> axum::Router {
    let backends = Backends {
        runtime,
        storage: Arc::new(FakeStorage::with_templates(&["base"])),
        net: Arc::new(FakeNetPolicy::default()),
    };
    let manager = coppice_core::SandboxManager::start(
        ManagerConfig::default(),
        backends,
        Store::in_memory().unwrap(),
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    router(AppState {
        manager,
        api_keys: ApiKeys::new(vec![KEY.into()]),
        envd_version: "0.6.13",
        envd_init: Arc::new(NoEnvd),
    })
}

/// Fake backends run no envd; there is nothing to initialise.
#[derive(Debug)]
pub struct NoEnvd;

impl EnvdInit for NoEnvd {
    fn init<'a>(
        &'a self,
        _sandbox: &'a coppice_core::Sandbox,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), EnvdCallError>> + Send + 'a>>
    {
        Box::pin(async { Ok(()) })
    }
}

/// One request with the test key: status, headers and the JSON body (`Null` if empty).
pub async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("x-api-key", KEY)
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
    };
    (status, headers, json)
}
