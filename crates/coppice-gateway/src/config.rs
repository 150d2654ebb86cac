//! The daemon's configuration: command-line flags and `COPPICE_*` environment variables over
//! embedded defaults, validated into [`GatewayConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use ipnet::{Ipv4Net, Ipv6Net};

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
    /// How sandboxes are networked: `bridge` (own addresses on a host bridge, NAT to the
    /// outside, egress policy), `loopback` (nothing beyond loopback), or `auto` (the bridge,
    /// or loopback with a logged error when the host cannot set it up).
    #[arg(long, env = "COPPICE_NETWORK", value_enum, default_value_t = NetworkMode::Auto)]
    pub network: NetworkMode,
    /// The host bridge of the sandboxes (at most 9 characters; also names the nftables table
    /// `coppice_<bridge>`). One bridge per daemon.
    #[arg(long, env = "COPPICE_NET_BRIDGE", default_value = "coppice0")]
    pub net_bridge: String,
    /// Sandbox IPv4 prefix; its first address is the bridge's.
    #[arg(long, env = "COPPICE_NET_IPV4", default_value = "10.213.0.0/16")]
    pub net_ipv4: Ipv4Net,
    /// Sandbox IPv6 prefix; its first address is the bridge's.
    #[arg(long, env = "COPPICE_NET_IPV6", default_value = "fd00:c0:ffee::/64")]
    pub net_ipv6: Ipv6Net,
    /// Where the sandboxes' resolver forwards queries (default: the host's first
    /// `nameserver`).
    #[arg(long, env = "COPPICE_NET_DNS_UPSTREAM")]
    pub net_dns_upstream: Option<SocketAddr>,
    /// FreeBSD: the ZFS dataset under which templates, sandboxes and volumes live (its pool
    /// must exist; the dataset and its children are made). Unused on Linux.
    #[arg(long, env = "COPPICE_ZFS_DATASET", default_value = "zroot/coppice")]
    pub zfs_dataset: String,
    /// FreeBSD: the VM template (a volume template) whose VMs the warm pool keeps booted
    /// and held, sized as sandboxes are by default. Unused on Linux.
    #[arg(long, env = "COPPICE_VM_POOL_TEMPLATE")]
    pub vm_pool_template: Option<String>,
    /// FreeBSD: how many VMs the warm pool keeps ready.
    #[arg(long, env = "COPPICE_VM_POOL_SIZE", default_value_t = 2)]
    pub vm_pool_size: usize,
    /// The CRIU binary that writes paused sandboxes to disk (default: `criu` on the `PATH`,
    /// else `/usr/local/sbin/criu`; without one, paused sandboxes stay in memory).
    #[arg(long, env = "COPPICE_CRIU")]
    pub criu: Option<PathBuf>,
    /// Seconds a sandbox stays paused in memory before its memory is written to disk and
    /// freed (0: never).
    #[arg(long, env = "COPPICE_DURABLE_PAUSE_AFTER", default_value_t = 600)]
    pub durable_pause_after: u64,
    /// Below this share of the host's memory available (percent), every sandbox paused in
    /// memory is written to disk at once (0: never).
    #[arg(long, env = "COPPICE_DURABLE_PAUSE_MEMORY_LOW", default_value_t = 10,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub durable_pause_memory_low: u8,
    /// Where the shipped templates (`python`, `code-interpreter-v1`) come from: `build`
    /// makes stand-ins over the host's `/usr` at start, then builds each from its recipe in
    /// the background (from the Debian archive the host's apt uses) and swaps it in once
    /// built; `host` builds nothing (a template built at an earlier start stays).
    #[arg(long, env = "COPPICE_SHIPPED_TEMPLATES", value_enum, default_value_t = ShippedTemplates::Build)]
    pub shipped_templates: ShippedTemplates,
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
    /// How sandboxes are networked.
    pub network: NetworkSettings,
    /// FreeBSD: the ZFS dataset of templates, sandboxes and volumes.
    pub zfs_dataset: String,
    /// FreeBSD: the VM template the warm pool boots, and how many it keeps.
    pub vm_pool: Option<(String, usize)>,
    /// The CRIU binary asked for, if any.
    pub criu: Option<PathBuf>,
    /// How long a memory pause lasts before it is written to disk; `None`: never.
    pub durable_pause_after: Option<std::time::Duration>,
    /// Below this percentage of host memory available, memory pauses go to disk at once.
    pub durable_pause_memory_low: u8,
    /// Where the shipped templates come from.
    pub shipped_templates: ShippedTemplates,
}

/// Where the templates coppice ships come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShippedTemplates {
    /// Stand-ins over the host's `/usr` first, then each built from its recipe.
    Build,
    /// The stand-ins over the host's `/usr` only.
    Host,
}

/// Which network backend connects sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkMode {
    /// The bridge where the host allows it (tools present, root), else loopback only.
    Auto,
    /// A host bridge with NAT and per-sandbox egress policy.
    Bridge,
    /// Loopback only.
    Loopback,
}

/// The network settings of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    /// The backend.
    pub mode: NetworkMode,
    /// The bridge's name.
    pub bridge: String,
    /// Sandbox IPv4 prefix.
    pub ipv4: Ipv4Net,
    /// Sandbox IPv6 prefix.
    pub ipv6: Ipv6Net,
    /// The resolver's upstream, if not the host's.
    pub dns_upstream: Option<SocketAddr>,
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
            network: NetworkSettings {
                mode: cli.network,
                bridge: cli.net_bridge.clone(),
                ipv4: cli.net_ipv4,
                ipv6: cli.net_ipv6,
                dns_upstream: cli.net_dns_upstream,
            },
            zfs_dataset: cli.zfs_dataset.clone(),
            vm_pool: cli
                .vm_pool_template
                .clone()
                .filter(|_| cli.vm_pool_size > 0)
                .map(|template| (template, cli.vm_pool_size)),
            criu: cli.criu.clone(),
            durable_pause_after: (cli.durable_pause_after > 0)
                .then(|| std::time::Duration::from_secs(cli.durable_pause_after)),
            durable_pause_memory_low: cli.durable_pause_memory_low,
            shipped_templates: cli.shipped_templates,
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

    /// Network attachments of live sandboxes.
    pub fn net_dir(&self) -> PathBuf {
        self.data_dir.join("net")
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
        assert_eq!(config.network.mode, NetworkMode::Auto);
        assert_eq!(config.network.ipv4, "10.213.0.0/16".parse().unwrap());
    }

    #[test]
    fn test_network_flags_are_parsed_and_bad_prefixes_refused() {
        let cli = Cli::try_parse_from([
            "coppiced",
            "--network",
            "loopback",
            "--net-ipv4",
            "10.50.0.0/24",
        ])
        .unwrap();
        let config = GatewayConfig::from_cli(&cli).unwrap();
        assert_eq!(config.network.mode, NetworkMode::Loopback);
        assert_eq!(config.network.ipv4, "10.50.0.0/24".parse().unwrap());
        assert!(Cli::try_parse_from(["coppiced", "--net-ipv4", "10.0.0.0/99"]).is_err());
        assert!(Cli::try_parse_from(["coppiced", "--network", "wifi"]).is_err());
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
