//! envd's start-up settings and the ones `/init` may change later.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The envd version reported to the SDKs; every feature gate up to it is implemented here.
pub const ENVD_VERSION: &str = "0.6.13";

/// Settings fixed at start-up.
#[derive(Debug, Clone)]
pub struct EnvdConfig {
    /// Where `passwd` and `group` are read from.
    pub etc_dir: PathBuf,
    /// The user a request runs as when it names none.
    pub default_user: String,
    /// The working directory when a request names none (else the user's home).
    pub default_workdir: Option<PathBuf>,
    /// Environment given to every process (the sandbox's variables).
    pub env: BTreeMap<String, String>,
    /// Output bytes kept per process for late subscribers.
    pub output_history_bytes: usize,
    /// How long an exited process's end event stays reachable.
    pub exited_retention: Duration,
    /// Keepalive interval of streams whose client sets none.
    pub default_keepalive: Duration,
    /// How long the output of an exited process may still be drained (a background child can
    /// hold its pipes open forever).
    pub output_grace: Duration,
    /// Where `/init`'s settings are kept (owner-only), so that a restarted envd still
    /// requires the access token and keeps the variables; `None` keeps them in memory only.
    pub state_file: Option<PathBuf>,
}

impl Default for EnvdConfig {
    fn default() -> Self {
        Self {
            etc_dir: PathBuf::from("/etc"),
            default_user: "user".into(),
            default_workdir: None,
            env: BTreeMap::new(),
            output_history_bytes: 4 << 20,
            exited_retention: Duration::from_secs(30),
            default_keepalive: Duration::from_secs(90),
            output_grace: Duration::from_millis(200),
            state_file: None,
        }
    }
}
