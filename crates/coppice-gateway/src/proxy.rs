//! Sandbox traffic: a request naming a sandbox (`E2b-Sandbox-Id` / `E2b-Sandbox-Port`
//! headers, or a `{port}-{id}.…` Host) goes to that sandbox; everything else is control
//! plane. Port 49983 is envd, reached over its Unix socket; envd checks its own token. Any
//! other port is reached through an envd tunnel to the sandbox's loopback; a sandbox created
//! with `allowPublicTraffic: false` answers there only with its traffic token.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use coppice_core::SandboxId;

use crate::AppState;
use crate::envd;

/// envd's port.
pub const ENVD_PORT: u16 = 49983;

/// envd paths only the control plane may call.
const INTERNAL_PATHS: [&str; 7] = [
    "/init",
    "/freeze",
    "/unfreeze",
    "/collapse",
    "/fsfreeze",
    "/fsthaw",
    "/upgrade",
];

/// Where a sandbox request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The sandbox.
    pub sandbox: String,
    /// The port inside it.
    pub port: u16,
}

/// Reads the target from the headers, else from the Host; `Ok(None)` for control plane.
///
/// # Errors
/// A message for a malformed target (one header without the other, a bad port or id).
pub fn target(headers: &HeaderMap) -> Result<Option<Target>, String> {
    let id = headers
        .get("e2b-sandbox-id")
        .map(|v| v.to_str().unwrap_or(""));
    let port = headers
        .get("e2b-sandbox-port")
        .map(|v| v.to_str().unwrap_or(""));
    match (id, port) {
        (None, None) => Ok(host_target(headers)),
        (Some(id), Some(port)) => Ok(Some(Target {
            sandbox: valid_id(id)?,
            port: port
                .trim()
                .parse()
                .map_err(|_| format!("E2b-Sandbox-Port {port:?} is not a port number"))?,
        })),
        _ => Err("send both E2b-Sandbox-Id and E2b-Sandbox-Port, or neither".into()),
    }
}

fn valid_id(id: &str) -> Result<String, String> {
    let id = id.trim();
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(format!("{id:?} is not a sandbox id"));
    }
    Ok(id.to_owned())
}

/// `{port}-{id}.{domain}` in the Host header.
fn host_target(headers: &HeaderMap) -> Option<Target> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let label = host.split('.').next()?;
    let (port, id) = label.split_once('-')?;
    if !host.contains('.') {
        return None;
    }
    Some(Target {
        port: port.parse().ok()?,
        sandbox: valid_id(id).ok()?,
    })
}

fn bad_gateway(sandbox: &str, message: &str) -> Response {
    let body = serde_json::json!({ "sandboxId": sandbox, "message": message, "code": 502 });
    (
        StatusCode::BAD_GATEWAY,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

/// Middleware: sends sandbox traffic to its sandbox, passes the rest on.
pub async fn route_sandbox_traffic(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let target = match target(request.headers()) {
        Ok(Some(target)) => target,
        Ok(None) => {
            // A signed file URL names no sandbox: the signature does.
            return match signed_file_owner(&state, &request) {
                Some(owner) => match crate::lifecycle::running_for_traffic(&state, &owner.id).await
                {
                    Ok(sandbox) => forward_to_envd(sandbox, request).await,
                    Err(error) => bad_gateway(owner.id.as_str(), &error.message),
                },
                None => next.run(request).await,
            };
        }
        Err(message) => {
            return crate::error::ApiError::bad_request(message).into_response();
        }
    };
    let path = request.uri().path();
    if target.port == ENVD_PORT && (INTERNAL_PATHS.contains(&path) || path.starts_with("/tunnel/"))
    {
        return crate::error::ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{} is internal to coppice", request.uri().path()),
        )
        .into_response();
    }
    let Some(found) = target
        .sandbox
        .parse::<SandboxId>()
        .ok()
        .and_then(|id| state.manager.get(&id).ok())
    else {
        return bad_gateway(&target.sandbox, "The sandbox was not found");
    };
    // Checked before any resume: a request without the traffic token must not wake the
    // sandbox either.
    if target.port != ENVD_PORT
        && let Some(refusal) = traffic_refusal(&found, request.headers())
    {
        return refusal;
    }
    if found.state == coppice_core::SandboxState::Running {
        return forward_to_port(found, target.port, request).await;
    }
    let sandbox = match crate::lifecycle::running_for_traffic(&state, &found.id).await {
        Ok(sandbox) => sandbox,
        Err(error) if error.status == StatusCode::NOT_FOUND => {
            return bad_gateway(&target.sandbox, "The sandbox was not found");
        }
        Err(error) => return bad_gateway(&target.sandbox, &error.message),
    };
    forward_to_port(sandbox, target.port, request).await
}

/// The header that carries a private sandbox's traffic token.
const TRAFFIC_TOKEN_HEADER: &str = "e2b-traffic-access-token";

/// The refusal of a request without the traffic token of a sandbox whose ports are private.
fn traffic_refusal(sandbox: &coppice_core::Sandbox, headers: &HeaderMap) -> Option<Response> {
    let expected = sandbox.traffic_token.as_ref()?;
    let given = headers
        .get(TRAFFIC_TOKEN_HEADER)
        .map(|value| value.as_bytes())
        .unwrap_or_default();
    if bool::from(subtle::ConstantTimeEq::ct_eq(
        given,
        expected.expose().as_bytes(),
    )) {
        return None;
    }
    let message = if given.is_empty() {
        "this sandbox's ports are private: send its trafficAccessToken in the E2B-Traffic-Access-Token header"
    } else {
        "the E2B-Traffic-Access-Token header does not match this sandbox's trafficAccessToken"
    };
    Some(crate::error::ApiError::new(StatusCode::FORBIDDEN, message).into_response())
}

/// envd's own port goes to envd; any other through an envd tunnel to that port on the
/// sandbox's loopback, WebSockets included.
async fn forward_to_port(sandbox: coppice_core::Sandbox, port: u16, request: Request) -> Response {
    if port == ENVD_PORT {
        return forward_to_envd(sandbox, request).await;
    }
    let Some(endpoints) = &sandbox.endpoints else {
        return bad_gateway(sandbox.id.as_str(), "The sandbox was not found");
    };
    let (parts, body) = request.into_parts();
    let mut upstream = Request::from_parts(parts, Body::new(body));
    for name in ["e2b-sandbox-id", "e2b-sandbox-port", TRAFFIC_TOKEN_HEADER] {
        upstream.headers_mut().remove(name);
    }
    let token = sandbox.access_token.as_ref().map(|token| token.expose());
    match envd::forward_to_port(&endpoints.envd_socket, token, port, upstream).await {
        Ok(response) => response,
        Err(error) => bad_gateway(
            sandbox.id.as_str(),
            &format!("The sandbox is running but port is not open: {port}: {error}"),
        ),
    }
}

async fn forward_to_envd(sandbox: coppice_core::Sandbox, request: Request) -> Response {
    let Some(endpoints) = sandbox.endpoints else {
        return bad_gateway(sandbox.id.as_str(), "The sandbox was not found");
    };
    let (parts, body) = request.into_parts();
    let mut upstream = Request::from_parts(parts, Body::new(body));
    upstream.headers_mut().remove("e2b-sandbox-id");
    upstream.headers_mut().remove("e2b-sandbox-port");
    match envd::forward(&endpoints.envd_socket, upstream).await {
        Ok(response) => response,
        Err(error) => bad_gateway(
            sandbox.id.as_str(),
            &format!("The sandbox is running but port is not open: {error}"),
        ),
    }
}

/// The signing inputs of a `/files` URL.
#[derive(Debug, serde::Deserialize)]
struct SignedFileQuery {
    path: Option<String>,
    username: Option<String>,
    signature: String,
    signature_expiration: Option<i64>,
}

/// The live sandbox whose access token signed this `/files` URL, if any (the URLs of
/// `download_url()` / `upload_url()` carry no sandbox id).
fn signed_file_owner(state: &AppState, request: &Request) -> Option<coppice_core::Sandbox> {
    if request.uri().path() != "/files" {
        return None;
    }
    let query: SignedFileQuery = serde_urlencoded::from_str(request.uri().query()?).ok()?;
    let operation = if request.method() == axum::http::Method::POST {
        coppice_envd::auth::FileOperation::Write
    } else {
        coppice_envd::auth::FileOperation::Read
    };
    // Paused sandboxes too: one created with auto-resume wakes for its signed URLs.
    let filter = coppice_core::manager::ListFilter {
        states: vec![
            coppice_core::SandboxState::Running,
            coppice_core::SandboxState::Paused,
        ],
        ..Default::default()
    };
    state.manager.list(&filter).into_iter().find(|sandbox| {
        sandbox.access_token.as_ref().is_some_and(|token| {
            let expected = coppice_envd::auth::file_signature(
                query.path.as_deref().unwrap_or(""),
                operation,
                query.username.as_deref().unwrap_or(""),
                token.expose(),
                query.signature_expiration,
            );
            bool::from(subtle::ConstantTimeEq::ct_eq(
                expected.as_bytes(),
                query.signature.as_bytes(),
            ))
        })
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn test_targets_come_from_headers_or_host() {
        let by_headers = headers(&[("e2b-sandbox-id", "abc123"), ("e2b-sandbox-port", "49983")]);
        assert_eq!(
            target(&by_headers).unwrap(),
            Some(Target {
                sandbox: "abc123".into(),
                port: 49983
            })
        );
        let by_host = headers(&[("host", "8080-abc123.localhost:3000")]);
        assert_eq!(
            target(&by_host).unwrap(),
            Some(Target {
                sandbox: "abc123".into(),
                port: 8080
            })
        );
        assert_eq!(
            target(&headers(&[("host", "127.0.0.1:3000")])).unwrap(),
            None
        );
        assert!(target(&headers(&[("e2b-sandbox-id", "abc")])).is_err());
        assert!(
            target(&headers(&[
                ("e2b-sandbox-id", "ABC"),
                ("e2b-sandbox-port", "1")
            ]))
            .is_err()
        );
        assert!(
            target(&headers(&[
                ("e2b-sandbox-id", "abc"),
                ("e2b-sandbox-port", "x")
            ]))
            .is_err()
        );
    }
}
