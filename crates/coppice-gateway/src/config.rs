//! The daemon's configuration: command-line flags and `COPPICE_*` environment variables over
//! embedded defaults, validated into [`GatewayConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/coppice";

/// `coppiced` command line. Every flag also reads a `COPPICE_*` variable.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "coppiced",
    version,
    about = "coppice gateway daemon: runs sandboxes behind an E2B-compatible API"
)]
pub struct Cli {
    /// Address to listen on.
    #[arg(long, env = "COPPICE_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Where state, templates and sandbox files live.
    #[arg(long, env = "COPPICE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` wins when set.
    #[arg(long, env = "COPPICE_LOG")]
    pub log_filter: Option<String>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    pub print_config: bool,
    /// The API key clients must send as `X-API-KEY`; without one, the first start generates
    /// a key, keeps it in the data dir and prints it once.
    #[arg(long, env = "COPPICE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// Validated configuration; every field is usable as-is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Absolute data directory.
    pub data_dir: PathBuf,
}

/// Why the configuration is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The data dir is relative and the working directory is unknown.
    #[error("cannot resolve data dir {path}")]
    DataDir {
        /// The configured path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl GatewayConfig {
    /// Validates the command line.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn from_cli(cli: &Cli) -> Result<Self, ConfigError> {
        let data_dir = if cli.data_dir.is_absolute() {
            cli.data_dir.clone()
        } else {
            std::env::current_dir()
                .map_err(|source| ConfigError::DataDir {
                    path: cli.data_dir.clone(),
                    source,
                })?
                .join(&cli.data_dir)
        };
        Ok(Self {
            listen: cli.listen,
            data_dir,
        })
    }

    /// The SQLite database.
    pub fn state_db(&self) -> PathBuf {
        self.data_dir.join("state.db")
    }

    /// Templates, layers and sandbox root filesystems.
    pub fn storage_dir(&self) -> PathBuf {
        self.data_dir.join("storage")
    }

    /// Per-sandbox runtime state (sockets, init config).
    pub fn run_dir(&self) -> PathBuf {
        self.data_dir.join("run")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cli_defaults_listen_on_loopback_3000() {
        let cli = Cli::try_parse_from(["coppiced"]).unwrap();
        let config = GatewayConfig::from_cli(&cli).unwrap();
        assert_eq!(config.listen, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn test_relative_data_dir_becomes_absolute() {
        let cli = Cli::try_parse_from(["coppiced", "--data-dir", "rel"]).unwrap();
        assert!(
            GatewayConfig::from_cli(&cli)
                .unwrap()
                .data_dir
                .is_absolute()
        );
    }

    #[test]
    fn test_bad_listen_address_is_refused() {
        assert!(Cli::try_parse_from(["coppiced", "--listen", "nonsense"]).is_err());
    }
}
