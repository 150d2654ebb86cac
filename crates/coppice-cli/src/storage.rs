//! `coppice volume …` and `coppice dir-snapshot …`: persistent volumes and directory
//! snapshots.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use coppice_gateway::client::Client;

/// `coppice volume …`.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Creates a volume and prints its id and content token.
    Create {
        /// Its unique name, by which sandboxes mount it.
        name: String,
    },
    /// Lists volumes.
    List,
    /// Deletes a volume and its files (refused while a sandbox mounts it).
    Delete {
        /// The volume's id.
        id: String,
    },
}

/// `coppice dir-snapshot …`.
#[derive(Debug, Subcommand)]
pub enum DirSnapshotCommand {
    /// Captures one directory of a sandbox as a tar; prints the snapshot's id and SHA-256.
    Create {
        /// The sandbox.
        sandbox: String,
        /// The directory, an absolute path inside the sandbox.
        path: String,
    },
    /// Lists directory snapshots.
    List,
    /// Writes a snapshot into a sandbox (where it was taken, unless `--path`).
    Restore {
        /// The snapshot.
        id: String,
        /// The sandbox to write into.
        sandbox: String,
        /// Where to write it instead.
        #[arg(long)]
        path: Option<String>,
    },
    /// Saves a snapshot's tar to a host file.
    Download {
        /// The snapshot.
        id: String,
        /// The host file.
        file: PathBuf,
    },
    /// Deletes a snapshot.
    Delete {
        /// The snapshot.
        id: String,
    },
}

/// Runs a `volume` command.
///
/// # Errors
/// The gateway refuses or cannot be reached.
pub async fn volume(
    client: &Client,
    command: &VolumeCommand,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        VolumeCommand::Create { name } => {
            let volume = client.create_volume(name).await?;
            print_one(out, json, &volume, &["volumeID", "token"])?;
        }
        VolumeCommand::List => {
            print_all(out, json, &client.volumes().await?, &["volumeID", "name"])?;
        }
        VolumeCommand::Delete { id } => {
            client.delete_volume(id).await?;
            writeln!(out, "deleted {id}")?;
        }
    }
    Ok(())
}

/// Runs a `dir-snapshot` command.
///
/// # Errors
/// The gateway refuses or cannot be reached; the file cannot be written.
pub async fn dir_snapshot(
    client: &Client,
    command: &DirSnapshotCommand,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        DirSnapshotCommand::Create { sandbox, path } => {
            let snapshot = client.create_dir_snapshot(sandbox, path).await?;
            print_one(out, json, &snapshot, &["snapshotID", "sha256"])?;
        }
        DirSnapshotCommand::List => {
            let snapshots = client.dir_snapshots().await?;
            print_all(
                out,
                json,
                &snapshots,
                &["snapshotID", "sandboxID", "path", "sizeBytes"],
            )?;
        }
        DirSnapshotCommand::Restore { id, sandbox, path } => {
            let entries = client
                .restore_dir_snapshot(id, sandbox, path.as_deref())
                .await?;
            writeln!(out, "restored {entries} entries into {sandbox}")?;
        }
        DirSnapshotCommand::Download { id, file } => {
            let tar = client.download_dir_snapshot(id).await?;
            std::fs::write(file, &tar)?;
            writeln!(out, "wrote {} bytes to {}", tar.len(), file.display())?;
        }
        DirSnapshotCommand::Delete { id } => {
            client.delete_dir_snapshot(id).await?;
            writeln!(out, "deleted {id}")?;
        }
    }
    Ok(())
}

/// One object: as JSON, or its `fields` on one line.
pub(crate) fn print_one(
    out: &mut impl Write,
    json: bool,
    value: &serde_json::Value,
    fields: &[&str],
) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    } else {
        writeln!(out, "{}", line(value, fields))?;
    }
    Ok(())
}

/// A list: as JSON, or one line of `fields` per item.
pub(crate) fn print_all(
    out: &mut impl Write,
    json: bool,
    values: &[serde_json::Value],
    fields: &[&str],
) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(values)?)?;
    } else {
        for value in values {
            writeln!(out, "{}", line(value, fields))?;
        }
    }
    Ok(())
}

fn line(value: &serde_json::Value, fields: &[&str]) -> String {
    fields
        .iter()
        .map(|field| match &value[*field] {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join("  ")
}
