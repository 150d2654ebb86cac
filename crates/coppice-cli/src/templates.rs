//! `coppice template …`: list, inspect, import, build, delete and tag templates.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use coppice_gateway::client::Client;

use crate::storage::{print_all, print_one};

/// `coppice template …`.
#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Lists templates: id, size, default user, created.
    List,
    /// Shows one template: its defaults, start command and environment.
    Info {
        /// The template.
        id: String,
    },
    /// Makes a template from an OCI image on the gateway's host: an image layout directory,
    /// or a `docker save` tarball.
    Import {
        /// The image (made absolute here; the gateway reads it on its own host).
        image: PathBuf,
        /// The new template's id.
        #[arg(long)]
        name: String,
    },
    /// Builds a template from a recipe file (JSON; see `docs/templates.md`), printing the
    /// build's log as it goes. Steps an earlier build made are reused.
    Build {
        /// The recipe.
        recipe: PathBuf,
    },
    /// Deletes a template and its tags (sandboxes made from them keep their files).
    Delete {
        /// The template.
        id: String,
    },
    /// Points tags of a built template's name at one of its builds (`name` or `name:tag`);
    /// sandboxes start from a tagged build as `name:tag`.
    Tag {
        /// The build: `name` (its latest) or `name:tag`.
        target: String,
        /// The tags.
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// Removes tags of a template.
    Untag {
        /// The template's name.
        name: String,
        /// The tags.
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// Lists a template's tags and the builds they stand for.
    Tags {
        /// The template's name.
        name: String,
    },
    /// Deletes build cache steps unused for a while (the next build needing one makes it
    /// again; templates keep their files).
    PruneCache {
        /// Steps unused for this many hours go (at least one).
        #[arg(long, default_value_t = 24 * 7)]
        older_than_hours: u64,
    },
    /// Prints the log of the build that made a template.
    Log {
        /// The template (`name` or `name:tag`).
        id: String,
    },
}

/// Runs a `template` command.
///
/// # Errors
/// The gateway refuses or cannot be reached.
pub async fn run(
    client: &Client,
    command: &TemplateCommand,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        TemplateCommand::List => {
            let templates = client.templates().await?;
            print_all(
                out,
                json,
                &templates,
                &["templateID", "sizeBytes", "defaultUser", "createdAt"],
            )?;
        }
        TemplateCommand::Info { id } => {
            let template = client.template(id).await?;
            if json {
                print_one(out, json, &template, &[])?;
            } else {
                for field in [
                    "templateID",
                    "createdAt",
                    "sizeBytes",
                    "defaultUser",
                    "defaultWorkdir",
                    "startCommand",
                    "readyCommand",
                    "snapshotOf",
                    "builtFrom",
                    "envVars",
                ] {
                    let value = match &template[field] {
                        serde_json::Value::String(text) => text.clone(),
                        serde_json::Value::Null => "-".into(),
                        other => other.to_string(),
                    };
                    writeln!(out, "{field:<15} {value}")?;
                }
            }
        }
        TemplateCommand::Import { image, name } => {
            let image = std::path::absolute(image)
                .with_context(|| format!("resolving {}", image.display()))?;
            let template = client.import_template(name, &image).await?;
            print_one(out, json, &template, &["templateID", "sizeBytes"])?;
        }
        TemplateCommand::Build { recipe } => {
            let text =
                std::fs::read(recipe).with_context(|| format!("reading {}", recipe.display()))?;
            let recipe: serde_json::Value = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not JSON", recipe.display()))?;
            let mut failed_to_print = None;
            let template = client
                .build_template(recipe, |line| {
                    if let Err(error) = writeln!(out, "{line}") {
                        failed_to_print.get_or_insert(error);
                    }
                })
                .await?;
            if let Some(error) = failed_to_print {
                return Err(error.into());
            }
            print_one(out, json, &template, &["templateID", "sizeBytes"])?;
        }
        TemplateCommand::Delete { id } => {
            client.delete_template(id).await?;
            writeln!(out, "deleted {id}")?;
        }
        TemplateCommand::Tag { target, tags } => {
            client.tag_template(target, tags).await?;
            writeln!(out, "tagged {target}: {}", tags.join(", "))?;
        }
        TemplateCommand::Untag { name, tags } => {
            client.untag_template(name, tags).await?;
            writeln!(out, "untagged {name}: {}", tags.join(", "))?;
        }
        TemplateCommand::PruneCache { older_than_hours } => {
            let pruned = client
                .prune_build_cache(std::time::Duration::from_secs(
                    older_than_hours.saturating_mul(3600),
                ))
                .await?;
            writeln!(out, "pruned {} build steps", pruned.len())?;
        }
        TemplateCommand::Log { id } => {
            let lines = client.template_build_log(id).await?;
            if json {
                writeln!(out, "{}", serde_json::json!({ "lines": lines }))?;
            } else {
                for line in lines {
                    writeln!(out, "{line}")?;
                }
            }
        }
        TemplateCommand::Tags { name } => {
            let tags = client.template_tags(name).await?;
            print_all(out, json, &tags, &["tag", "buildID", "createdAt"])?;
        }
    }
    Ok(())
}
