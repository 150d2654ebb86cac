//! The state every envd handler shares: settings that `/init` can change, the process table,
//! the polling watchers and the account database.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use crate::config::EnvdConfig;
use crate::error::EnvdError;
use crate::filesystem::watch::WatcherTable;
use crate::process::table::ProcessTable;
use crate::users::{User, UserDb};

/// Settings `/init` may change after start-up.
#[derive(Debug, Clone)]
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
    /// State for a fresh envd.
    #[must_use]
    pub fn new(config: EnvdConfig) -> Arc<Self> {
        let settings = Settings {
            env: config.env.clone(),
            access_token: None,
            default_user: config.default_user.clone(),
            default_workdir: config.default_workdir.clone(),
        };
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

    /// Changes the settings under the write lock.
    pub fn update_settings(&self, change: impl FnOnce(&mut Settings)) {
        change(
            &mut self
                .settings
                .write()
                .unwrap_or_else(PoisonError::into_inner),
        );
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
        self.settings()
            .default_workdir
            .unwrap_or_else(|| user.home.clone())
    }
}
