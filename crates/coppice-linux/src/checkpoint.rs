//! Durable pause with CRIU: which of a sandbox's mounts a checkpoint names rather than
//! carries, and the `criu dump` and `criu restore` command lines (pure), and what CRIU's log
//! says went wrong.
//!
//! A sandbox's tree is checkpointable because of how the init builds it (see
//! `sys/linux/builder.rs`): every namespace belongs to the sandbox's user namespace, and
//! nothing it runs or holds lies outside its root. What the host bound into the root (the
//! template's directories, volumes, device nodes, `/dev`, the port and the binaries in it) is
//! "external" to CRIU: the dump records it by key, and the restore binds the same host paths
//! again. The root itself is mounted again by the restore helper and given as `--root`;
//! `/proc`, `/tmp`, `/run`, `/dev/shm` and devpts are restored by CRIU, tmpfs contents
//! included.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::protocol::{
    ENVD_BINARY, INIT_BINARY, InitConfig, MountStep, NetworkSetup, PORT_IN_ROOT,
};

/// The log CRIU writes into the images directory on dump.
pub const DUMP_LOG: &str = "dump.log";
/// The log CRIU writes into the images directory on restore.
pub const RESTORE_LOG: &str = "restore.log";

/// A host path bound into the sandbox, named in a checkpoint by `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalMount {
    /// The name the checkpoint records it under.
    pub key: String,
    /// Where it is mounted, as an absolute path inside the sandbox.
    pub inside: PathBuf,
    /// The host path bound there.
    pub source: PathBuf,
}

/// Why a sandbox cannot be checkpointed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Its network namespace belongs to the host's user namespace (a bridge network's, as
    /// daemons before bridge endpoints had user namespaces of their own made them).
    #[error(
        "the sandbox's network namespace belongs to the host, so it cannot be checkpointed (pause it without memory, or make it again)"
    )]
    HostNetwork,
}

/// The host binds of `config`, in mount order, each with a key stable for that config.
pub fn external_mounts(config: &InitConfig) -> Vec<ExternalMount> {
    let mut externals = Vec::new();
    let mut add = |inside: PathBuf, source: &Path| {
        externals.push(ExternalMount {
            key: format!("m{}", externals.len()),
            inside,
            source: source.to_owned(),
        });
    };
    let port = Path::new("/").join(PORT_IN_ROOT);
    add(port.clone(), &config.port_dir);
    add(port.join(INIT_BINARY), &config.init_program);
    if let Some(envd) = &config.envd {
        add(port.join(ENVD_BINARY), &envd.binary);
    }
    for step in &config.mounts {
        match step {
            // The root itself (a directory root is a bind onto the root).
            MountStep::Overlay { .. } => {}
            MountStep::Bind { target, .. } if target.as_os_str().is_empty() => {}
            MountStep::Bind { source, target, .. } | MountStep::DevNode { source, target } => {
                add(Path::new("/").join(target), source);
            }
            MountStep::Proc { .. }
            | MountStep::Devpts { .. }
            | MountStep::Tmpfs { .. }
            | MountStep::Symlink { .. } => {}
        }
    }
    externals
}

/// Refuses a sandbox whose tree CRIU would refuse to dump.
///
/// # Errors
/// [`CheckpointError`] saying why.
pub fn check(config: &InitConfig) -> Result<(), CheckpointError> {
    match config.network {
        NetworkSetup::Loopback | NetworkSetup::Join { user: Some(_), .. } => Ok(()),
        NetworkSetup::Join { user: None, .. } => Err(CheckpointError::HostNetwork),
    }
}

/// Options both directions share.
fn common(images: &Path, log: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--images-dir".into(),
        images.into(),
        "--log-file".into(),
        log.into(),
    ];
    for flag in [
        // The sandbox's cgroups belong to the runtime, which puts the restored tree in them.
        "--manage-cgroups=ignore",
        "--tcp-established",
        "--file-locks",
    ] {
        args.push(flag.into());
    }
    args
}

/// `criu dump` of the tree whose root is `pid1` into `images`; CRIU runs `action_script` once
/// the images are written (see [`post_dump_script`]) and then kills the tree.
pub fn dump_args(
    pid1: i32,
    images: &Path,
    action_script: &Path,
    externals: &[ExternalMount],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["dump".into(), "--tree".into(), pid1.to_string().into()];
    args.extend(common(images, DUMP_LOG));
    args.push("--action-script".into());
    args.push(action_script.into());
    // The hosts have nftables but no iptables tools.
    args.push("--network-lock".into());
    args.push("nftables".into());
    for external in externals {
        args.push("--external".into());
        let mut spec = OsString::from("mnt[");
        spec.push(&external.inside);
        spec.push("]:");
        spec.push(&external.key);
        args.push(spec);
    }
    args
}

/// `criu restore` from `images` onto the root mounted at `root`, detached, writing the
/// restored PID 1's host pid to `pidfile`. CRIU makes the sandbox's network namespace
/// again, and moves the host device `restore_device` (prepared by the network policy, already
/// connected on the host) into it as the sandbox's `eth0`, with that interface's MAC and
/// index. (CRIU can also make a veth pair itself, but not into a user namespace's network
/// namespace on current kernels: the kernel refuses the request with `EOPNOTSUPP`.)
pub fn restore_args(
    images: &Path,
    root: &Path,
    pidfile: &Path,
    externals: &[ExternalMount],
    restore_device: Option<&str>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["restore".into()];
    args.extend(common(images, RESTORE_LOG));
    for (flag, value) in [("--root", root), ("--pidfile", pidfile)] {
        args.push(flag.into());
        args.push(value.into());
    }
    args.push("--restore-detached".into());
    args.push("--network-lock".into());
    args.push("nftables".into());
    for external in externals {
        args.push("--external".into());
        let mut spec = OsString::from(format!("mnt[{}]:", external.key));
        spec.push(&external.source);
        args.push(spec);
    }
    if let Some(device) = restore_device {
        args.push("--external".into());
        args.push(format!("netdev[{SANDBOX_INTERFACE}]:{device}").into());
    }
    args
}

/// The name of a sandbox's network interface inside its namespace.
const SANDBOX_INTERFACE: &str = "eth0";

/// The host device a restore of `config` moves in as the sandbox's interface, if any.
pub fn restore_device(config: &InitConfig) -> Option<&str> {
    match &config.network {
        NetworkSetup::Join {
            restore_device: Some(name),
            ..
        } => Some(name),
        _ => None,
    }
}

/// The action script that marks a dump complete by creating `marker` once CRIU has written
/// every image (its `post-dump` stage), before it ends the tree. CRIU does it, not the
/// daemon, so a daemon that dies during a dump still leaves a checkpoint it can trust.
pub fn post_dump_script(marker: &Path) -> String {
    let quoted = marker.to_string_lossy().replace('\'', "'\\''");
    format!("#!/bin/sh\nif [ \"$CRTOOLS_SCRIPT_ACTION\" = post-dump ]; then : > '{quoted}'; fi\n")
}

/// The last error lines of a CRIU log, for a report that says why.
pub fn log_errors(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("Error") && !line.contains("iptables"))
        .collect();
    let shown = errors[errors.len().saturating_sub(3)..].join("; ");
    if shown.is_empty() {
        format!("see {}", log.display())
    } else {
        format!("{shown} (log: {})", log.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{EnvdLaunch, INIT_CONFIG_VERSION};

    fn config(network: NetworkSetup) -> InitConfig {
        InitConfig {
            version: INIT_CONFIG_VERSION,
            sandbox_id: "a".into(),
            hostname: "a".into(),
            rootfs: "/run/a/root".into(),
            mounts: crate::mount_plan::plan(
                &coppice_core::storage::RootFs::Overlay {
                    lower: vec!["/t/base".into()],
                    upper: "/s/upper".into(),
                    work: "/s/work".into(),
                    binds: vec![coppice_core::storage::BindMount {
                        source: "/usr".into(),
                        target: "/usr".into(),
                        read_only: true,
                    }],
                },
                &[],
                Path::new("/dev"),
                Path::new("/run/a/dev"),
                64,
            )
            .expect("plan"),
            cgroup_procs: Vec::new(),
            port_dir: "/run/a/port".into(),
            init_program: "/bin/coppice-init".into(),
            init_leading_args: Vec::new(),
            network,
            host_uid_base: 1000,
            host_gid_base: 1000,
            id_count: 65536,
            env: Vec::new(),
            exec_output_limit: 1,
            envd: Some(EnvdLaunch {
                binary: "/bin/coppice-envd".into(),
                args: Vec::new(),
            }),
            resolv_conf: None,
        }
    }

    #[test]
    fn test_externals_are_the_port_its_binaries_and_every_host_bind_but_the_root() {
        let externals = external_mounts(&config(NetworkSetup::Loopback));
        let pairs: Vec<(&str, &str)> = externals
            .iter()
            .map(|e| {
                (
                    e.inside.to_str().expect("utf-8"),
                    e.source.to_str().expect("utf-8"),
                )
            })
            .collect();
        assert_eq!(
            pairs[..5],
            [
                ("/.coppice", "/run/a/port"),
                ("/.coppice/coppice-init", "/bin/coppice-init"),
                ("/.coppice/coppice-envd", "/bin/coppice-envd"),
                ("/usr", "/usr"),
                ("/dev", "/run/a/dev"),
            ]
        );
        assert!(pairs.contains(&("/dev/null", "/dev/null")));
        assert!(
            !pairs
                .iter()
                .any(|(inside, _)| *inside == "/tmp" || *inside == "/proc")
        );
        let keys: std::collections::HashSet<&str> =
            externals.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys.len(), externals.len(), "keys are unique");
    }

    #[test]
    fn test_dump_names_externals_by_path_and_restore_binds_them_by_key() {
        let externals = vec![ExternalMount {
            key: "m3".into(),
            inside: "/usr".into(),
            source: "/host/usr".into(),
        }];
        let dump = dump_args(
            42,
            Path::new("/img"),
            Path::new("/img/post-dump"),
            &externals,
        );
        assert_eq!(dump[..3], ["dump", "--tree", "42"]);
        assert!(
            dump.windows(2)
                .any(|w| w[0] == "--external" && w[1] == "mnt[/usr]:m3")
        );
        assert!(
            dump.windows(2)
                .any(|w| w[0] == "--network-lock" && w[1] == "nftables")
        );
        assert!(
            dump.windows(2)
                .any(|w| w[0] == "--action-script" && w[1] == "/img/post-dump")
        );

        let restore = restore_args(
            Path::new("/img"),
            Path::new("/run/a/root"),
            Path::new("/img/pid"),
            &externals,
            None,
        );
        assert_eq!(restore[0], "restore");
        assert!(
            !restore
                .iter()
                .any(|arg| arg.to_string_lossy().starts_with("veth["))
        );
        assert!(
            restore
                .windows(2)
                .any(|w| w[0] == "--external" && w[1] == "mnt[m3]:/host/usr")
        );
        assert!(
            restore
                .windows(2)
                .any(|w| w[0] == "--root" && w[1] == "/run/a/root")
        );
        assert!(restore.contains(&OsString::from("--restore-detached")));
        assert!(restore.contains(&OsString::from("--manage-cgroups=ignore")));
    }

    #[test]
    fn test_post_dump_script_marks_only_the_post_dump_stage_and_quotes_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("it's complete");
        let script = dir.path().join("post-dump");
        std::fs::write(&script, post_dump_script(&marker)).expect("write");
        let run = |stage: &str| {
            std::process::Command::new("sh")
                .arg(&script)
                .env("CRTOOLS_SCRIPT_ACTION", stage)
                .status()
                .expect("sh")
        };
        assert!(run("pre-dump").success());
        assert!(!marker.exists());
        assert!(run("post-dump").success());
        assert!(marker.is_file());
    }

    #[test]
    fn test_only_sandboxes_whose_network_is_their_own_can_be_checkpointed() {
        assert_eq!(check(&config(NetworkSetup::Loopback)), Ok(()));
        let joined = |user: Option<&str>| NetworkSetup::Join {
            path: "/proc/1/fd/3".into(),
            user: user.map(PathBuf::from),
            restore_device: Some("cpn0r7".into()),
        };
        assert_eq!(check(&config(joined(Some("/proc/1/fd/4")))), Ok(()));
        assert_eq!(
            check(&config(joined(None))),
            Err(CheckpointError::HostNetwork)
        );
    }

    #[test]
    fn test_restore_moves_the_prepared_device_in_as_the_sandbox_interface() {
        let mut bridged = config(NetworkSetup::Join {
            path: "/proc/1/fd/3".into(),
            user: Some("/proc/1/fd/4".into()),
            restore_device: Some("cpn0r7".into()),
        });
        assert_eq!(restore_device(&bridged), Some("cpn0r7"));
        let restore = restore_args(
            Path::new("/img"),
            Path::new("/run/a/root"),
            Path::new("/img/pid"),
            &[],
            restore_device(&bridged),
        );
        assert!(
            restore
                .windows(2)
                .any(|w| w[0] == "--external" && w[1] == "netdev[eth0]:cpn0r7"),
            "{restore:?}"
        );

        bridged.network = NetworkSetup::Loopback;
        assert_eq!(restore_device(&bridged), None);
    }
}
