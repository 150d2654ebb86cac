//! `GET /health`: answers 200 once the daemon is serving (the manager reconciles before the
//! listener accepts, so a 200 means every surviving sandbox has been re-adopted).

use axum::Router;
use axum::routing::get;

use crate::AppState;

/// The health routes.
pub fn routes() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

async fn health() -> &'static str {
    "Health check successful"
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use coppice_core::clock::SystemClock;
    use coppice_core::manager::{Backends, ManagerConfig};
    use coppice_core::store::Store;
    use coppice_core::testing::{FakeNetPolicy, FakeRuntime, FakeStorage};
    use tower::ServiceExt;

    use crate::{AppState, router};

    #[tokio::test]
    async fn test_health_answers_200() {
        let backends = Backends {
            runtime: Arc::new(FakeRuntime::default()),
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
        let app = router(AppState { manager });

        let response = app
            .oneshot(Request::get("/health").body(Body::empty()).unwrap())
            .await
            .unwrap();

        assert_eq!(response.status(), StatusCode::OK);
    }
}
