//! Who may call envd and as whom: the access token (`X-Access-Token`), signed `/files` URLs,
//! and the Unix user chosen by `Authorization: Basic base64(user:)`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::EnvdError;
use crate::http::error_response;
use crate::state::Envd;

/// The refusal E2B's envd gives a request without the right token.
pub const UNAUTHORIZED: &str =
    "unauthorized access, please provide a valid access token or method signing if supported";

/// The user named by a Connect request's `Authorization: Basic` header, if any.
#[must_use]
pub fn basic_user(ctx: &connectrpc::RequestContext) -> Option<String> {
    basic_user_from(ctx.headers())
}

fn basic_user_from(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split_once(':').map_or(text.as_str(), |(user, _)| user);
    (!user.is_empty()).then(|| user.to_owned())
}

/// Whether `offered` is the token (constant time).
fn token_matches(expected: &str, offered: &[u8]) -> bool {
    expected.as_bytes().ct_eq(offered).into()
}

/// Middleware: once a token is set, every request but `GET /health` and `/files` (which
/// check their own) must carry it.
pub async fn require_token(
    State(envd): State<Arc<Envd>>,
    request: Request,
    next: Next,
) -> Response {
    let exempt = request.uri().path() == "/files"
        || (request.uri().path() == "/health" && request.method() == Method::GET);
    if !exempt && let Some(expected) = envd.settings().access_token {
        let offered = request
            .headers()
            .get("x-access-token")
            .map(axum::http::HeaderValue::as_bytes);
        if !offered.is_some_and(|offered| token_matches(&expected, offered)) {
            return error_response(StatusCode::UNAUTHORIZED, UNAUTHORIZED).into_response();
        }
    }
    next.run(request).await
}

/// What a `/files` request is about to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOperation {
    /// `GET /files`.
    Read,
    /// `POST /files`.
    Write,
}

impl FileOperation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

/// The signing inputs of a `/files` request, as given in its query.
#[derive(Debug, Clone, Default)]
pub struct FileSigning<'a> {
    /// `path` exactly as in the query.
    pub path: &'a str,
    /// `username`, empty when absent.
    pub username: &'a str,
    /// `signature`.
    pub signature: Option<&'a str>,
    /// `signature_expiration` (Unix seconds).
    pub expiration: Option<i64>,
}

/// The signature E2B's SDKs compute for a file URL.
#[must_use]
pub fn file_signature(
    path: &str,
    operation: FileOperation,
    username: &str,
    token: &str,
    expiration: Option<i64>,
) -> String {
    let mut input = format!("{path}:{}:{username}:{token}", operation.as_str());
    if let Some(expiration) = expiration {
        input.push_str(&format!(":{expiration}"));
    }
    let digest = Sha256::digest(input.as_bytes());
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// Checks a `/files` request: with a token set, the header token or a valid, unexpired
/// signature must be present (a header token that does not match is refused outright).
///
/// # Errors
/// [`EnvdError::Unauthenticated`] when neither proves access.
pub fn check_file_access(
    envd: &Envd,
    headers: &HeaderMap,
    operation: FileOperation,
    signing: &FileSigning<'_>,
    now_unix: i64,
) -> Result<(), EnvdError> {
    let Some(token) = envd.settings().access_token else {
        return Ok(());
    };
    if let Some(offered) = headers.get("x-access-token") {
        return if token_matches(&token, offered.as_bytes()) {
            Ok(())
        } else {
            Err(EnvdError::Unauthenticated(UNAUTHORIZED.into()))
        };
    }
    let Some(signature) = signing.signature else {
        return Err(EnvdError::Unauthenticated(UNAUTHORIZED.into()));
    };
    if signing
        .expiration
        .is_some_and(|expiration| expiration < now_unix)
    {
        return Err(EnvdError::Unauthenticated(
            "signature is already expired".into(),
        ));
    }
    let expected = file_signature(
        signing.path,
        operation,
        signing.username,
        &token,
        signing.expiration,
    );
    if token_matches(&expected, signature.as_bytes()) {
        Ok(())
    } else {
        Err(EnvdError::Unauthenticated("invalid signature".into()))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::config::EnvdConfig;

    #[test]
    fn test_basic_user_reads_the_name_before_the_colon() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Basic cm9vdDo="));
        assert_eq!(basic_user_from(&headers).as_deref(), Some("root"));
        headers.insert("authorization", HeaderValue::from_static("Basic !!"));
        assert_eq!(basic_user_from(&headers), None);
    }

    #[test]
    fn test_signed_urls_are_checked_against_the_token_and_expiry() {
        let envd = Envd::new(EnvdConfig::default());
        let headers = HeaderMap::new();
        let unsigned = FileSigning {
            path: "/a",
            ..FileSigning::default()
        };
        assert!(check_file_access(&envd, &headers, FileOperation::Read, &unsigned, 0).is_ok());
        envd.update_settings(|s| s.access_token = Some("tok".into()))
            .unwrap();
        assert!(check_file_access(&envd, &headers, FileOperation::Read, &unsigned, 0).is_err());
        let signature = file_signature("/a", FileOperation::Read, "", "tok", Some(100));
        let signed = FileSigning {
            path: "/a",
            username: "",
            signature: Some(&signature),
            expiration: Some(100),
        };
        assert!(check_file_access(&envd, &headers, FileOperation::Read, &signed, 50).is_ok());
        assert!(check_file_access(&envd, &headers, FileOperation::Write, &signed, 50).is_err());
        assert!(check_file_access(&envd, &headers, FileOperation::Read, &signed, 101).is_err());
        let mut with_token = HeaderMap::new();
        with_token.insert("x-access-token", HeaderValue::from_static("wrong"));
        assert!(check_file_access(&envd, &with_token, FileOperation::Read, &signed, 50).is_err());
    }
}
