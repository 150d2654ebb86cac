//! `coppice files ls|cat|cp`.

use std::io::Write;

use anyhow::Context;
use coppice_gateway::client::Client;

use crate::FilesCommand;
use crate::output::table;

/// Runs a files command.
///
/// # Errors
/// The gateway refuses or a local file cannot be read or written.
pub async fn run(
    client: &Client,
    command: &FilesCommand,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        FilesCommand::Ls { id, path, depth } => {
            let sandbox = client.attach(id).await?;
            let listed = client
                .unary(
                    &sandbox,
                    "filesystem.Filesystem/ListDir",
                    &serde_json::json!({ "path": path, "depth": depth }),
                )
                .await?;
            let entries = listed["entries"].as_array().cloned().unwrap_or_default();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&entries)?)?;
                return Ok(());
            }
            let rows: Vec<[String; 5]> = entries
                .iter()
                .map(|e| {
                    let text = |key: &str| e[key].as_str().unwrap_or_default().to_owned();
                    [
                        text("permissions"),
                        text("owner"),
                        e["size"]
                            .as_str()
                            .map_or_else(|| e["size"].to_string(), str::to_owned),
                        text("modifiedTime"),
                        text("path"),
                    ]
                })
                .collect();
            table(out, &["MODE", "OWNER", "SIZE", "MODIFIED", "PATH"], &rows)?;
        }
        FilesCommand::Cat { id, path } => {
            let sandbox = client.attach(id).await?;
            let bytes = client.read_file(&sandbox, path).await?;
            out.write_all(&bytes)?;
        }
        FilesCommand::Cp { from, to } => match (remote(from), remote(to)) {
            (Some((id, path)), None) => {
                let sandbox = client.attach(id).await?;
                let bytes = client.read_file(&sandbox, path).await?;
                std::fs::write(to, &bytes).with_context(|| format!("writing {to}"))?;
            }
            (None, Some((id, path))) => {
                let sandbox = client.attach(id).await?;
                let bytes = std::fs::read(from).with_context(|| format!("reading {from}"))?;
                client.write_file(&sandbox, path, bytes.into()).await?;
            }
            _ => anyhow::bail!("name exactly one side as <sandbox id>:<path>"),
        },
    }
    Ok(())
}

/// `<id>:<path>` with an id of `[a-z0-9]`.
fn remote(spec: &str) -> Option<(&str, &str)> {
    let (id, path) = spec.split_once(':')?;
    (!id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
    .then_some((id, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_remote_paths_name_a_sandbox() {
        assert_eq!(remote("abc123:/tmp/x"), Some(("abc123", "/tmp/x")));
        assert_eq!(remote("./local"), None);
        assert_eq!(remote("C:/x"), None);
    }
}
