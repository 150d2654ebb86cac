//! Network policy: `PUT /sandboxes/{id}/network` (E2B's `update_network`), and the reading
//! of `network` and `allow_internet_access` that create shares with it.

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::put;
use coppice_core::spec::NetworkSpec;

use super::sandboxes::{body, sandbox_id};
use crate::AppState;
use crate::error::ApiError;
use crate::wire::NetworkConfig;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new().route("/sandboxes/{id}/network", put(update))
}

/// Replaces the sandbox's egress policy; omitted fields are cleared (internet access then
/// defaults to on), as the SDKs document.
async fn update(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    request: Result<Json<NetworkConfig>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let id = sandbox_id(&raw)?;
    let config = body(request)?;
    let network = spec(config.allow_internet_access, Some(config))?;
    state.manager.update_network(&id, network).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The policy that `allow_internet_access` and `network` ask for. Entries are checked by the
/// network backend; settings it has no mechanism for are refused here by name.
pub(super) fn spec(
    allow_internet: Option<bool>,
    config: Option<NetworkConfig>,
) -> Result<NetworkSpec, ApiError> {
    let config = config.unwrap_or_default();
    if config
        .dns_servers
        .as_ref()
        .is_some_and(|servers| !servers.is_empty())
    {
        return Err(unsupported("dnsServers"));
    }
    if config
        .egress_proxy
        .as_ref()
        .is_some_and(|proxy| !proxy.is_null())
    {
        return Err(unsupported("egressProxy"));
    }
    if config
        .rules
        .as_ref()
        .is_some_and(|rules| !rules.is_null() && rules.as_object().is_none_or(|r| !r.is_empty()))
    {
        return Err(unsupported("rules"));
    }
    Ok(NetworkSpec {
        allow_internet: allow_internet.unwrap_or(true),
        allow_out: config.allow_out.unwrap_or_default(),
        deny_out: config.deny_out.unwrap_or_default(),
    })
}

fn unsupported(field: &str) -> ApiError {
    ApiError::bad_request(format!(
        "network.{field} is not supported by this gateway; use allowOut, denyOut and allow_internet_access"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_absent_network_is_the_default_policy() {
        assert_eq!(spec(None, None).unwrap(), NetworkSpec::default());
    }

    #[test]
    fn test_lists_and_air_gap_are_taken() {
        let config = NetworkConfig {
            allow_out: Some(vec!["10.0.0.0/8".into()]),
            deny_out: Some(vec!["0.0.0.0/0".into()]),
            ..NetworkConfig::default()
        };
        let spec = spec(Some(false), Some(config)).unwrap();
        assert!(!spec.allow_internet);
        assert_eq!(spec.allow_out, vec!["10.0.0.0/8".to_owned()]);
        assert_eq!(spec.deny_out, vec!["0.0.0.0/0".to_owned()]);
    }

    #[test]
    fn test_settings_without_a_mechanism_are_refused_by_name() {
        let config = NetworkConfig {
            egress_proxy: Some(serde_json::json!({"address": "proxy:3128"})),
            ..NetworkConfig::default()
        };
        let error = spec(None, Some(config)).unwrap_err();
        assert!(error.message.contains("egressProxy"), "{}", error.message);
        let empty_rules = NetworkConfig {
            rules: Some(serde_json::json!({})),
            ..NetworkConfig::default()
        };
        assert!(spec(None, Some(empty_rules)).is_ok());
    }
}
