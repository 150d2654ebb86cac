//! The E2B control-plane JSON, as the SDKs send and read it (field names are theirs).

use std::collections::BTreeMap;
use std::time::SystemTime;

use coppice_core::{PauseMode, Sandbox, SandboxState, TimeoutAction};
use serde::{Deserialize, Serialize};

/// `POST /v2/sandboxes` and the legacy `POST /sandboxes`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    /// Template id or alias.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Lifetime in seconds.
    pub timeout: Option<i64>,
    /// User metadata.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Variables for every process.
    #[serde(default)]
    pub env_vars: Option<BTreeMap<String, String>>,
    /// Pause instead of kill at the end time.
    #[serde(default)]
    pub auto_pause: Option<bool>,
    /// With `autoPause`: `false` keeps only the filesystem.
    #[serde(default)]
    pub auto_pause_memory: Option<bool>,
    /// Resume on any request that touches the paused sandbox.
    #[serde(default)]
    pub auto_resume: Option<AutoResume>,
    /// What a pause at the timeout keeps: `full` (memory too) or `filesystem`; the same as
    /// `autoPauseMemory`, in get-info's words.
    #[serde(default)]
    pub pause_mode: Option<String>,
    /// Internet access (snake case on the wire).
    #[serde(default, rename = "allow_internet_access")]
    pub allow_internet_access: Option<bool>,
    /// Persistent volumes to mount, by name.
    #[serde(default)]
    pub volume_mounts: Option<Vec<VolumeMount>>,
    /// Egress lists and the other network settings.
    #[serde(default)]
    pub network: Option<NetworkConfig>,
}

/// `network` of create, and the body of `PUT /sandboxes/{id}/network` (which also carries
/// `allow_internet_access`). Fields coppice cannot honour are kept so that a request using
/// them is refused by name, never silently weakened.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfig {
    /// CIDRs or addresses always reachable.
    #[serde(default)]
    pub allow_out: Option<Vec<String>>,
    /// CIDRs or addresses never reachable unless also allowed.
    #[serde(default)]
    pub deny_out: Option<Vec<String>>,
    /// Internet access (update only; snake case on the wire).
    #[serde(default, rename = "allow_internet_access")]
    pub allow_internet_access: Option<bool>,
    /// Whether exposed ports need the traffic token.
    #[serde(default)]
    pub allow_public_traffic: Option<bool>,
    /// Host header rewriting for exposed ports.
    #[serde(default)]
    pub mask_request_host: Option<String>,
    /// Resolvers of the sandbox (not supported).
    #[serde(default)]
    pub dns_servers: Option<Vec<String>>,
    /// A proxy for all egress (not supported).
    #[serde(default)]
    pub egress_proxy: Option<serde_json::Value>,
    /// Per-host request transforms (not supported).
    #[serde(default)]
    pub rules: Option<serde_json::Value>,
}

/// `network` of get-info.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInfo {
    allow_out: Vec<String>,
    deny_out: Vec<String>,
    allow_public_traffic: bool,
}

/// One entry of `volumeMounts`, in create and in get-info.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct VolumeMount {
    /// The volume's name.
    pub name: String,
    /// Where it appears inside the sandbox.
    pub path: String,
}

/// `autoResume` of create.
#[derive(Debug, Default, Deserialize)]
pub struct AutoResume {
    /// Whether it is on.
    #[serde(default)]
    pub enabled: bool,
}

/// `POST …/pause`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pause {
    /// `false` keeps only the filesystem; absent or `true` keeps memory too.
    pub memory: Option<bool>,
    /// Refuse when the sandbox's envd does not answer.
    #[serde(default)]
    pub require_healthy_guest: bool,
    /// coppice: with memory, write it to disk at once (a durable pause, which frees the
    /// sandbox's memory and outlives a host restart) instead of after the idle time.
    #[serde(default)]
    pub durable: bool,
}

/// `POST …/snapshots`.
#[derive(Debug, Default, Deserialize)]
pub struct SnapshotRequest {
    /// The snapshot's name (its template id); generated when absent.
    pub name: Option<String>,
    /// Whether memory is captured too.
    pub memory: Option<bool>,
}

/// `POST …/fork`.
#[derive(Debug, Default, Deserialize)]
pub struct ForkRequest {
    /// Lifetime of each fork, in seconds.
    pub timeout: Option<i64>,
    /// How many forks (1 when absent).
    pub count: Option<i64>,
}

/// One snapshot, as create and list answer.
#[derive(Debug, Serialize)]
pub struct SnapshotInfo {
    /// The template id new sandboxes are created from.
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    /// Its names.
    pub names: Vec<String>,
}

/// One slot of a fork answer: the started sandbox or why it failed.
#[derive(Debug, Serialize)]
pub struct ForkResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<CreatedSandbox>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
}

impl ForkResult {
    /// A fork that runs.
    pub fn started(sandbox: CreatedSandbox) -> Self {
        Self {
            sandbox: Some(sandbox),
            error: None,
        }
    }

    /// A fork that failed with HTTP-like `code`.
    pub fn failed(code: u16, message: &str) -> Self {
        Self {
            sandbox: None,
            error: Some(serde_json::json!({ "code": code, "message": message })),
        }
    }
}

/// `POST …/timeout`.
#[derive(Debug, Deserialize)]
pub struct Timeout {
    /// New lifetime from now, in seconds.
    pub timeout: i64,
}

/// `POST …/connect` (v2 and legacy) and `POST …/resume`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connect {
    /// Lifetime from now, in seconds (only ever extends a running sandbox's).
    pub timeout: Option<i64>,
    /// `false` boots a paused sandbox afresh on its kept filesystem.
    pub memory: Option<bool>,
    /// Legacy resume: pause (not kill) at the next timeout.
    pub auto_pause: Option<bool>,
}

/// `POST …/refreshes`.
#[derive(Debug, Default, Deserialize)]
pub struct Refresh {
    /// Seconds to add from now.
    pub duration: Option<i64>,
}

/// The `Sandbox` answer of create and connect.
#[derive(Debug, Serialize)]
pub struct CreatedSandbox {
    #[serde(rename = "sandboxID")]
    sandbox_id: String,
    #[serde(rename = "templateID")]
    template_id: String,
    #[serde(rename = "clientID")]
    client_id: &'static str,
    #[serde(rename = "envdVersion")]
    envd_version: &'static str,
    #[serde(rename = "envdAccessToken", skip_serializing_if = "Option::is_none")]
    envd_access_token: Option<String>,
    #[serde(rename = "trafficAccessToken")]
    traffic_access_token: Option<String>,
    domain: Option<String>,
}

/// Client id reported for every sandbox (there is one node).
pub const CLIENT_ID: &str = "coppice";

impl CreatedSandbox {
    /// The create/connect answer for `sandbox`.
    pub fn from_domain(sandbox: &Sandbox, envd_version: &'static str) -> Self {
        Self {
            sandbox_id: sandbox.id.to_string(),
            template_id: sandbox.spec.template.to_string(),
            client_id: CLIENT_ID,
            envd_version,
            envd_access_token: exposed_token(sandbox),
            traffic_access_token: sandbox
                .traffic_token
                .as_ref()
                .map(|token| token.expose().to_owned()),
            domain: None,
        }
    }
}

/// `ListedSandbox` and, with the token, `SandboxDetail`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedSandbox {
    #[serde(rename = "sandboxID")]
    sandbox_id: String,
    #[serde(rename = "templateID")]
    template_id: String,
    #[serde(rename = "clientID")]
    client_id: &'static str,
    started_at: String,
    end_at: String,
    cpu_count: u32,
    #[serde(rename = "memoryMB")]
    memory_mb: u32,
    #[serde(rename = "diskSizeMB")]
    disk_size_mb: u32,
    metadata: BTreeMap<String, String>,
    state: &'static str,
    envd_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    envd_access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_internet_access: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lifecycle: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pause_mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_mounts: Option<Vec<VolumeMount>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<NetworkInfo>,
}

impl ListedSandbox {
    /// `sandbox` as a list entry (`detail` adds the token and lifecycle, as `GET` answers).
    pub fn from_domain(sandbox: &Sandbox, envd_version: &'static str, detail: bool) -> Self {
        Self {
            sandbox_id: sandbox.id.to_string(),
            template_id: sandbox.spec.template.to_string(),
            client_id: CLIENT_ID,
            started_at: rfc3339(sandbox.created_at),
            end_at: rfc3339(sandbox.end_at),
            cpu_count: sandbox.spec.vcpus,
            memory_mb: sandbox.spec.memory_mb,
            disk_size_mb: sandbox.spec.disk_mb,
            metadata: sandbox.spec.metadata.clone(),
            state: state_name(sandbox.state),
            envd_version,
            envd_access_token: detail.then(|| exposed_token(sandbox)).flatten(),
            allow_internet_access: detail.then_some(sandbox.spec.network.allow_internet),
            network: detail.then(|| NetworkInfo {
                allow_out: sandbox.spec.network.allow_out.clone(),
                deny_out: sandbox.spec.network.deny_out.clone(),
                allow_public_traffic: sandbox.spec.public_traffic,
            }),
            lifecycle: detail.then(|| {
                let on_timeout = match sandbox.spec.on_timeout {
                    TimeoutAction::Kill => "kill",
                    TimeoutAction::Pause(_) => "pause",
                };
                serde_json::json!({
                    "autoResume": sandbox.spec.auto_resume,
                    "onTimeout": on_timeout,
                })
            }),
            pause_mode: detail
                .then(|| {
                    let mode = sandbox.pause_mode.or(match sandbox.spec.on_timeout {
                        TimeoutAction::Pause(mode) => Some(mode),
                        TimeoutAction::Kill => None,
                    })?;
                    Some(pause_mode_name(mode))
                })
                .flatten(),
            volume_mounts: detail.then(|| {
                sandbox
                    .spec
                    .volume_mounts
                    .iter()
                    .map(|mount| VolumeMount {
                        name: mount.name.to_string(),
                        path: mount.path.display().to_string(),
                    })
                    .collect()
            }),
        }
    }
}

/// The sandbox's envd token, as the SDKs receive it.
fn exposed_token(sandbox: &Sandbox) -> Option<String> {
    sandbox
        .access_token
        .as_ref()
        .map(|token| token.expose().to_owned())
}

/// The E2B name of a pause mode.
pub fn pause_mode_name(mode: PauseMode) -> &'static str {
    match mode {
        PauseMode::Memory | PauseMode::Durable => "full",
        PauseMode::Filesystem => "filesystem",
    }
}

/// The E2B name of a state (`running` or `paused`; the rest never reach a listing).
pub fn state_name(state: SandboxState) -> &'static str {
    match state {
        SandboxState::Paused => "paused",
        _ => "running",
    }
}

/// RFC 3339 with milliseconds, in UTC.
pub fn rfc3339(at: SystemTime) -> String {
    jiff::Timestamp::try_from(at).map_or_else(
        |_| "1970-01-01T00:00:00Z".to_owned(),
        |t| {
            t.round(jiff::Unit::Millisecond)
                .map_or_else(|_| t.to_string(), |t| t.to_string())
        },
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn test_timestamps_are_rfc3339_utc() {
        let at = UNIX_EPOCH + Duration::from_millis(1_767_225_600_123);
        assert_eq!(rfc3339(at), "2026-01-01T00:00:00.123Z");
    }

    #[test]
    fn test_new_sandbox_reads_the_sdk_body() {
        let body: NewSandbox = serde_json::from_str(
            r#"{"templateID":"base","timeout":120,"metadata":{"k":"v"},"envVars":{"A":"1"},"autoPause":true,"allow_internet_access":false}"#,
        )
        .unwrap();
        assert_eq!(body.template_id, "base");
        assert_eq!(body.timeout, Some(120));
        assert_eq!(body.env_vars.unwrap()["A"], "1");
        assert_eq!(body.allow_internet_access, Some(false));
    }
}
