//! API keys: every control-plane call carries `X-API-KEY`. The key comes from
//! `COPPICE_API_KEY`, else from `<data dir>/admin-api-key`, which the first start creates
//! (owner-only) and announces once.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// File, in the data dir, holding the generated admin key.
pub const ADMIN_KEY_FILE: &str = "admin-api-key";

/// The keys the control plane accepts.
#[derive(Clone)]
pub struct ApiKeys {
    keys: Arc<Vec<String>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.keys.len())
    }
}

/// Where the key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// The environment (`COPPICE_API_KEY`).
    Environment,
    /// The key file from an earlier start.
    File,
    /// Generated now (to be announced once).
    Generated,
}

impl ApiKeys {
    /// Exactly these keys.
    pub fn new(keys: Vec<String>) -> Self {
        Self {
            keys: Arc::new(keys),
        }
    }

    /// The configured key, else the one in `data_dir`, else a new one written there.
    ///
    /// # Errors
    /// The key file cannot be read or written, or entropy fails.
    pub fn load_or_generate(
        configured: Option<&str>,
        data_dir: &Path,
    ) -> std::io::Result<(Self, String, KeySource)> {
        if let Some(key) = configured.filter(|k| !k.is_empty()) {
            return Ok((
                Self::new(vec![key.to_owned()]),
                key.to_owned(),
                KeySource::Environment,
            ));
        }
        let path = data_dir.join(ADMIN_KEY_FILE);
        if let Ok(existing) = std::fs::read_to_string(&path) {
            let key = existing.trim().to_owned();
            if !key.is_empty() {
                return Ok((Self::new(vec![key.clone()]), key, KeySource::File));
            }
        }
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
        let key = format!(
            "e2b_{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(format!("{key}\n").as_bytes())?;
        Ok((Self::new(vec![key.clone()]), key, KeySource::Generated))
    }

    /// Whether `offered` is one of the keys (constant time per key).
    pub fn accepts(&self, offered: &[u8]) -> bool {
        self.keys.iter().fold(false, |found, key| {
            found | bool::from(key.as_bytes().ct_eq(offered))
        })
    }
}

/// Middleware: refuses control-plane calls without a valid `X-API-KEY`.
pub async fn require_api_key(
    State(keys): State<ApiKeys>,
    request: Request,
    next: Next,
) -> Response {
    let offered = request.headers().get("x-api-key").map(|v| v.as_bytes());
    match offered {
        Some(offered) if keys.accepts(offered) => next.run(request).await,
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "Invalid API key").into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Missing API key: send it in the X-API-KEY header",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_key_is_generated_once_then_reused_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let (_, first, source) = ApiKeys::load_or_generate(None, dir.path()).unwrap();
        assert_eq!(source, KeySource::Generated);
        let (keys, second, source) = ApiKeys::load_or_generate(None, dir.path()).unwrap();
        assert_eq!((first.as_str(), source), (second.as_str(), KeySource::File));
        assert!(keys.accepts(first.as_bytes()));
        assert!(!keys.accepts(b"nope"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(ADMIN_KEY_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let (keys, _, source) = ApiKeys::load_or_generate(Some("env-key"), dir.path()).unwrap();
        assert_eq!(source, KeySource::Environment);
        assert!(keys.accepts(b"env-key") && !keys.accepts(first.as_bytes()));
    }
}
