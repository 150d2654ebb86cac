//! The `coppice` command line: clap structs, dispatch to the gateway's typed client, output
//! as human tables or `--json`, and exit codes (a command's own for `exec` and `shell`).
//! Reads the same variables as the E2B SDKs: `E2B_API_URL`, `E2B_SANDBOX_URL`, `E2B_API_KEY`.
#![forbid(unsafe_code)]

mod files;
mod output;
mod shell;
mod storage;
mod templates;

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;
use clap::{Parser, Subcommand};
use coppice_gateway::client::{Client, Output};

/// `coppice`: talk to a coppice gateway.
#[derive(Debug, Parser)]
#[command(
    name = "coppice",
    version,
    about = "Command-line client of a coppice gateway"
)]
pub struct Cli {
    /// The gateway's control-plane URL.
    #[arg(
        long,
        env = "E2B_API_URL",
        default_value = "http://127.0.0.1:3000",
        global = true
    )]
    pub api_url: String,
    /// Where sandbox traffic goes (default: the API URL).
    #[arg(long, env = "E2B_SANDBOX_URL", global = true)]
    pub sandbox_url: Option<String>,
    /// The API key.
    #[arg(
        long,
        env = "E2B_API_KEY",
        default_value = "",
        hide_env_values = true,
        global = true
    )]
    pub api_key: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Checks that the gateway answers `GET /health`.
    Health,
    /// Sandboxes: create, list, info, kill, timeout, network.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Runs a command in a sandbox, streaming its output; exits with its exit code.
    Exec {
        /// The sandbox.
        id: String,
        /// Run as this user (default: the template's).
        #[arg(long)]
        user: Option<String>,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// An interactive shell on a terminal in a sandbox.
    Shell {
        /// The sandbox.
        id: String,
        /// Run as this user.
        #[arg(long)]
        user: Option<String>,
    },
    /// Files: ls, cat, cp.
    #[command(subcommand)]
    Files(FilesCommand),
    /// A sandbox's lifecycle log.
    Logs {
        /// The sandbox.
        id: String,
    },
    /// Persistent volumes: create, list, delete.
    #[command(subcommand)]
    Volume(storage::VolumeCommand),
    /// Directory snapshots: create, list, restore, download, delete.
    #[command(subcommand)]
    DirSnapshot(storage::DirSnapshotCommand),
    /// Templates: list, info, import (from an OCI image), delete.
    #[command(subcommand)]
    Template(templates::TemplateCommand),
}

/// `coppice sandbox …`.
#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Creates a sandbox and prints its id.
    Create {
        /// Template.
        #[arg(long, default_value = "base")]
        template: String,
        /// Lifetime in seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Metadata, `key=value` (repeatable).
        #[arg(long, value_parser = key_value)]
        metadata: Vec<(String, String)>,
    },
    /// Lists running and paused sandboxes.
    List,
    /// Shows one sandbox.
    Info {
        /// The sandbox.
        id: String,
    },
    /// Kills a sandbox.
    Kill {
        /// The sandbox.
        id: String,
    },
    /// Pauses a sandbox: its processes stop where they are, memory kept (with `--durable`,
    /// written to disk at once; with `--filesystem`, only its files are kept and resume boots
    /// it afresh).
    Pause {
        /// The sandbox.
        id: String,
        /// Keep only the filesystem.
        #[arg(long, conflicts_with = "durable")]
        filesystem: bool,
        /// Write the memory to disk now (it outlives a host restart).
        #[arg(long)]
        durable: bool,
    },
    /// Resumes a paused sandbox (a running one only gets its end time extended).
    Resume {
        /// The sandbox.
        id: String,
        /// Lifetime from now, in seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Snapshots a sandbox's filesystem as a template new sandboxes start from (the sandbox
    /// is frozen only for the capture).
    Snapshot {
        /// The sandbox.
        id: String,
        /// The snapshot's name (generated when absent).
        #[arg(long)]
        name: Option<String>,
    },
    /// Lists snapshots (of one sandbox with `--of`).
    Snapshots {
        /// Only the snapshots of this sandbox.
        #[arg(long)]
        of: Option<String>,
    },
    /// Deletes a snapshot; sandboxes made from it keep running.
    DeleteSnapshot {
        /// The snapshot.
        id: String,
    },
    /// Starts new sandboxes from a snapshot of this one taken now, each with its own id,
    /// token and machine-id.
    Fork {
        /// The sandbox.
        id: String,
        /// How many forks (1 to 20).
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Lifetime of each fork, in seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Sets a sandbox's end time to now plus this many seconds.
    Timeout {
        /// The sandbox.
        id: String,
        /// Seconds from now.
        seconds: u64,
    },
    /// Replaces a sandbox's egress policy, at once (open connections the new policy denies
    /// are cut). Omitted lists are cleared.
    Network {
        /// The sandbox.
        id: String,
        /// A CIDR or address always reachable (repeatable; also opens a host service).
        #[arg(long = "allow-out")]
        allow_out: Vec<String>,
        /// A CIDR or address never reachable unless allowed (repeatable).
        #[arg(long = "deny-out")]
        deny_out: Vec<String>,
        /// Air-gap: nothing but `--allow-out` entries is reachable.
        #[arg(long)]
        no_internet: bool,
    },
}

/// `coppice files …`.
#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// Lists a directory.
    Ls {
        /// The sandbox.
        id: String,
        /// The directory.
        #[arg(default_value = "/home/user")]
        path: String,
        /// How deep to go.
        #[arg(long, default_value_t = 1)]
        depth: u32,
    },
    /// Prints a file.
    Cat {
        /// The sandbox.
        id: String,
        /// The file.
        path: String,
    },
    /// Copies between the host and a sandbox; name the sandbox side `<id>:<path>`.
    Cp {
        /// Source.
        from: String,
        /// Destination.
        to: String,
    },
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not key=value"))
}

/// Runs a parsed command line; returns the process exit code.
///
/// # Errors
/// The gateway is unreachable or refuses the request.
pub async fn run(cli: &Cli) -> anyhow::Result<i32> {
    let client = Client::new(&cli.api_url, cli.sandbox_url.as_deref(), &cli.api_key);
    let mut stdout = std::io::stdout().lock();
    match &cli.command {
        Command::Health => {
            client
                .health()
                .await
                .with_context(|| format!("gateway at {}", cli.api_url))?;
            writeln!(stdout, "gateway at {} is healthy", cli.api_url)?;
        }
        Command::Sandbox(command) => sandbox(&client, command, cli.json, &mut stdout).await?,
        Command::Exec { id, user, command } => {
            drop(stdout);
            return exec(&client, id, user.as_deref(), command).await;
        }
        Command::Shell { id, user } => {
            drop(stdout);
            return shell::run(&client, id, user.as_deref()).await;
        }
        Command::Files(command) => files::run(&client, command, cli.json, &mut stdout).await?,
        Command::Volume(command) => {
            storage::volume(&client, command, cli.json, &mut stdout).await?
        }
        Command::DirSnapshot(command) => {
            storage::dir_snapshot(&client, command, cli.json, &mut stdout).await?;
        }
        Command::Template(command) => {
            templates::run(&client, command, cli.json, &mut stdout).await?;
        }
        Command::Logs { id } => {
            let logs = client.logs(id).await?;
            if cli.json {
                writeln!(stdout, "{}", serde_json::to_string_pretty(&logs)?)?;
            } else {
                for (at, line) in logs {
                    writeln!(stdout, "{at}  {line}")?;
                }
            }
        }
    }
    Ok(0)
}

async fn sandbox(
    client: &Client,
    command: &SandboxCommand,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        SandboxCommand::Create {
            template,
            timeout,
            metadata,
        } => {
            let metadata: BTreeMap<_, _> = metadata.iter().cloned().collect();
            let created = client.create(template, *timeout, &metadata).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&created)?)?;
            } else {
                writeln!(out, "{}", created.sandbox_id)?;
            }
        }
        SandboxCommand::List => {
            let sandboxes = client.list().await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&sandboxes)?)?;
            } else {
                output::sandbox_table(out, &sandboxes)?;
            }
        }
        SandboxCommand::Info { id } => {
            let info = client.info(id).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&info)?)?;
            } else {
                output::sandbox_table(out, std::slice::from_ref(&info))?;
            }
        }
        SandboxCommand::Kill { id } => {
            client.kill(id).await?;
            writeln!(out, "killed {id}")?;
        }
        SandboxCommand::Pause {
            id,
            filesystem,
            durable,
        } => {
            if *durable {
                client.pause_durably(id).await?;
            } else {
                client.pause(id, !filesystem).await?;
            }
            let kept = if *filesystem {
                "filesystem"
            } else {
                "memory and filesystem"
            };
            writeln!(out, "paused {id} ({kept} kept)")?;
        }
        SandboxCommand::Resume { id, timeout } => {
            if client.connect(id, *timeout).await? {
                writeln!(out, "resumed {id}")?;
            } else {
                writeln!(out, "{id} was running")?;
            }
        }
        SandboxCommand::Snapshot { id, name } => {
            let snapshot = client.snapshot(id, name.as_deref()).await?;
            writeln!(out, "{snapshot}")?;
        }
        SandboxCommand::Snapshots { of } => {
            let snapshots = client.snapshots(of.as_deref()).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&snapshots)?)?;
            } else {
                for snapshot in snapshots {
                    writeln!(out, "{snapshot}")?;
                }
            }
        }
        SandboxCommand::DeleteSnapshot { id } => {
            client.delete_snapshot(id).await?;
            writeln!(out, "deleted {id}")?;
        }
        SandboxCommand::Fork { id, count, timeout } => {
            let mut failed = 0;
            for fork in client.fork(id, *count, *timeout).await? {
                match fork {
                    Ok(created) => writeln!(out, "{}", created.sandbox_id)?,
                    Err(message) => {
                        failed += 1;
                        writeln!(out, "fork failed: {message}")?;
                    }
                }
            }
            anyhow::ensure!(failed == 0, "{failed} of {count} forks did not start");
        }
        SandboxCommand::Timeout { id, seconds } => {
            client.set_timeout(id, *seconds).await?;
            writeln!(out, "{id} now ends in {seconds} s")?;
        }
        SandboxCommand::Network {
            id,
            allow_out,
            deny_out,
            no_internet,
        } => {
            client
                .update_network(id, !*no_internet, allow_out, deny_out)
                .await?;
            let internet = if *no_internet { "off" } else { "on" };
            writeln!(
                out,
                "{id}: internet {internet}, {} allowed, {} denied",
                allow_out.len(),
                deny_out.len()
            )?;
        }
    }
    Ok(())
}

async fn exec(
    client: &Client,
    id: &str,
    user: Option<&str>,
    command: &[String],
) -> anyhow::Result<i32> {
    let sandbox = client.attach(id).await?;
    let code = client
        .run(&sandbox, command, user, None, |event| {
            // Output goes straight through; a closed pipe downstream is not an error here.
            match event {
                Output::Stdout(bytes) | Output::Pty(bytes) => {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&bytes).and_then(|()| out.flush());
                }
                Output::Stderr(bytes) => {
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(&bytes).and_then(|()| err.flush());
                }
                Output::Started(_) | Output::Exited(_) => {}
            }
        })
        .await?;
    Ok(if code < 0 { 128 + 9 } else { code })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cli_parses_the_sandbox_commands() {
        let cli = Cli::try_parse_from([
            "coppice",
            "--api-url",
            "http://h:1",
            "sandbox",
            "create",
            "--metadata",
            "a=b",
        ])
        .unwrap();
        assert_eq!(cli.api_url, "http://h:1");
        assert!(matches!(
            cli.command,
            Command::Sandbox(SandboxCommand::Create { ref metadata, .. }) if metadata == &[("a".to_owned(), "b".to_owned())]
        ));
        let cli = Cli::try_parse_from(["coppice", "exec", "abc", "--", "ls", "-l"]).unwrap();
        assert!(
            matches!(cli.command, Command::Exec { ref command, .. } if command == &["ls", "-l"])
        );
        assert!(
            Cli::try_parse_from(["coppice", "sandbox", "create", "--metadata", "nope"]).is_err()
        );
    }
}
