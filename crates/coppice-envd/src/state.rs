//! The state every envd handler shares: settings that `/init` can change, the process table,
//! the polling watchers and the account database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use crate::config::EnvdConfig;
use crate::error::EnvdError;
use crate::filesystem::watch::WatcherTable;
use crate::process::table::ProcessTable;
use crate::users::{User, UserDb};

/// Settings `/init` may change after start-up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    /// Variables given to every process.
    pub env: BTreeMap<String, String>,
    /// The token every request must carry once set.
    pub access_token: Option<String>,
    /// The user of requests that name none.
    pub default_user: String,
    /// The working directory of requests that name none.
    pub default_workdir: Option<PathBuf>,
}

impl Settings {
    /// Where a request of `user` starts when it names no directory.
    #[must_use]
    pub fn default_dir(&self, user: &User) -> PathBuf {
        self.default_workdir
            .clone()
            .unwrap_or_else(|| user.home.clone())
    }
}

/// Shared envd state.
#[derive(Debug)]
pub struct Envd {
    /// Start-up settings.
    pub config: EnvdConfig,
    settings: RwLock<Settings>,
    /// Processes started here.
    pub processes: Arc<ProcessTable>,
    /// Watchers polled through `GetWatcherEvents`.
    pub watchers: WatcherTable,
    /// Sandbox accounts.
    pub users: UserDb,
}

impl Envd {
    /// State for a fresh envd: the settings a previous instance kept in the state file if
    /// there is one, else those of `config`.
    #[must_use]
    pub fn new(config: EnvdConfig) -> Arc<Self> {
        let kept = config
            .state_file
            .as_deref()
            .and_then(|path| std::fs::read(path).ok())
            .and_then(|bytes| serde_json::from_slice::<Settings>(&bytes).ok());
        let settings = kept.unwrap_or_else(|| Settings {
            env: config.env.clone(),
            access_token: None,
            default_user: config.default_user.clone(),
            default_workdir: config.default_workdir.clone(),
        });
        Arc::new(Self {
            users: UserDb::new(&config.etc_dir),
            config,
            settings: RwLock::new(settings),
            processes: Arc::new(ProcessTable::default()),
            watchers: WatcherTable::default(),
        })
    }

    /// A copy of the current settings.
    #[must_use]
    pub fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes the settings under the write lock and keeps them in the state file.
    ///
    /// # Errors
    /// [`EnvdError::Internal`] when the state file cannot be written (the change then holds
    /// only until envd restarts).
    pub fn update_settings(&self, change: impl FnOnce(&mut Settings)) -> Result<(), EnvdError> {
        let mut settings = self
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        change(&mut settings);
        match &self.config.state_file {
            Some(path) => persist(path, &settings),
            None => Ok(()),
        }
    }

    /// The user a request runs as: the named one, else the default.
    ///
    /// # Errors
    /// [`EnvdError::Unauthenticated`] for a name with no account.
    pub fn user(&self, name: Option<&str>) -> Result<User, EnvdError> {
        let name = match name {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => self.settings().default_user,
        };
        self.users
            .user(&name)
            .ok_or_else(|| EnvdError::Unauthenticated(format!("invalid username: '{name}'")))
    }

    /// Where a request of `user` starts when it names no directory.
    #[must_use]
    pub fn default_dir(&self, user: &User) -> PathBuf {
        self.settings().default_dir(user)
    }
}

/// Writes `settings` to `path` atomically, readable by envd's user only.
fn persist(path: &Path, settings: &Settings) -> Result<(), EnvdError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let failed = |e: std::io::Error| {
        EnvdError::Internal(format!("keep settings in {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed)?;
    }
    let bytes = serde_json::to_vec(settings)
        .map_err(|e| EnvdError::Internal(format!("encode settings: {e}")))?;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(failed)?;
    file.write_all(&bytes).map_err(failed)?;
    std::fs::rename(&temporary, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_settings_survive_a_restart_through_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = EnvdConfig {
            state_file: Some(dir.path().join("state/settings.json")),
            ..EnvdConfig::default()
        };
        let first = Envd::new(config.clone());
        first
            .update_settings(|s| {
                s.access_token = Some("tok".into());
                s.env.insert("A".into(), "1".into());
            })
            .unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("state/settings.json"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let second = Envd::new(config);
        assert_eq!(second.settings(), first.settings());
        assert_eq!(second.settings().access_token.as_deref(), Some("tok"));
    }
}
