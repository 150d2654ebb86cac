//! The templates coppice ships, `python` and `code-interpreter-v1`: their recipes and the
//! code interpreter's files (embedded in the daemon), and their background builds, each of
//! which swaps its template in for the stand-in the platform made at start.

use coppice_core::SandboxManager;
use coppice_core::error::ErrorKind;
use coppice_core::recipe::{Recipe, RecipeFile};
use coppice_gateway::routes::builds::parse_recipe;

/// The code interpreter's template, the one the e2b-code-interpreter SDKs ask for.
pub(crate) const INTERPRETER_TEMPLATE: &str = "code-interpreter-v1";
/// The plain Python template.
pub(crate) const PYTHON_TEMPLATE: &str = "python";
/// Where the interpreter's package lives inside the sandbox (below `/`).
pub(crate) const INTERPRETER_DIR: &str = "opt/coppice/code-interpreter/coppice_interpreter";

/// The interpreter's files, as the daemon was built with them.
pub(crate) const INTERPRETER_FILES: &[(&str, &[u8])] = &[
    (
        "__init__.py",
        include_bytes!(
            "../../../../../templates/code-interpreter/server/coppice_interpreter/__init__.py"
        ),
    ),
    (
        "contexts.py",
        include_bytes!(
            "../../../../../templates/code-interpreter/server/coppice_interpreter/contexts.py"
        ),
    ),
    (
        "js_worker.js",
        include_bytes!(
            "../../../../../templates/code-interpreter/server/coppice_interpreter/js_worker.js"
        ),
    ),
    (
        "python_worker.py",
        include_bytes!(
            "../../../../../templates/code-interpreter/server/coppice_interpreter/python_worker.py"
        ),
    ),
    (
        "server.py",
        include_bytes!(
            "../../../../../templates/code-interpreter/server/coppice_interpreter/server.py"
        ),
    ),
];

const PYTHON_RECIPE: &[u8] = include_bytes!("../../../../../templates/python/recipe.json");
const INTERPRETER_RECIPE: &[u8] =
    include_bytes!("../../../../../templates/code-interpreter/recipe.json");

/// The shipped recipes, in the order they are built (`python` first: the interpreter's
/// template shares its Debian root).
pub(crate) fn recipes() -> anyhow::Result<Vec<Recipe>> {
    let python = parse_recipe(PYTHON_RECIPE).map_err(anyhow::Error::msg)?;
    let interpreter = interpreter_recipe()?;
    // The stand-ins are made under these names: a recipe of another would never replace them.
    anyhow::ensure!(
        python.id.as_str() == PYTHON_TEMPLATE && interpreter.id.as_str() == INTERPRETER_TEMPLATE,
        "the shipped recipes build {} and {}",
        python.id,
        interpreter.id
    );
    Ok(vec![python, interpreter])
}

/// The code interpreter's recipe, its server's files included.
pub(crate) fn interpreter_recipe() -> anyhow::Result<Recipe> {
    let mut interpreter = parse_recipe(INTERPRETER_RECIPE).map_err(anyhow::Error::msg)?;
    interpreter
        .files
        .extend(INTERPRETER_FILES.iter().map(|(name, contents)| RecipeFile {
            path: format!("/{INTERPRETER_DIR}/{name}"),
            contents: contents.to_vec(),
            mode: 0o644,
        }));
    Ok(interpreter)
}

/// Builds every shipped template not yet built from its current recipe, one at a time, in
/// the background; each replaces its stand-in once built. Failures are logged: the
/// stand-ins keep serving.
pub(crate) fn build_in_background(manager: SandboxManager) {
    let recipes = match recipes() {
        Ok(recipes) => recipes,
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "the shipped recipes do not parse"
            );
            return;
        }
    };
    tokio::spawn(async move {
        // Each round builds every recipe not built yet, so one that fails holds up no other.
        let mut pending = recipes;
        for (round, pause) in RETRY_PAUSES.iter().enumerate() {
            if !pause.is_zero() {
                tokio::time::sleep(*pause).await;
            }
            let mut failed = Vec::new();
            for recipe in pending {
                match build_one(&manager, recipe.clone()).await {
                    Outcome::Done => {}
                    Outcome::Unsupported => return,
                    Outcome::Failed => failed.push(recipe),
                }
            }
            if failed.is_empty() {
                return;
            }
            if round + 1 < RETRY_PAUSES.len() {
                tracing::info!(count = failed.len(), "will try the failed builds again");
            }
            pending = failed;
        }
    });
}

/// Pauses before each attempt at a shipped build: a failure (the archive out of reach) is
/// tried again a few times before the stand-in is left to serve until the next start.
const RETRY_PAUSES: [std::time::Duration; 3] = [
    std::time::Duration::ZERO,
    std::time::Duration::from_secs(60),
    std::time::Duration::from_secs(600),
];

enum Outcome {
    Done,
    Failed,
    Unsupported,
}

async fn build_one(manager: &SandboxManager, recipe: Recipe) -> Outcome {
    let id = recipe.id.clone();
    let before = manager.template(&id).await.ok().and_then(|t| t.built_from);
    let (log, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let logged = id.clone();
    let printer = tokio::spawn(async move {
        while let Some(line) = lines.recv().await {
            // Step headers and timings tell an operator where a build is.
            if line.starts_with("==>") || line.starts_with("    done in") {
                tracing::info!(template = %logged, "{}", line.trim());
            } else {
                tracing::debug!(template = %logged, "{line}");
            }
        }
    });
    let started = std::time::Instant::now();
    let built = manager.ensure_recipe_template(recipe, log).await;
    let _ = printer.await;
    match built {
        Ok(template) if template.built_from == before => {
            tracing::info!(template = %template.id, "template up to date with its recipe");
            Outcome::Done
        }
        Ok(template) => {
            tracing::info!(
                template = %template.id,
                seconds = started.elapsed().as_secs(),
                "template built from its recipe"
            );
            Outcome::Done
        }
        Err(error) if error.kind() == ErrorKind::Unsupported => {
            tracing::info!(template = %id, "this platform does not build templates from recipes");
            Outcome::Unsupported
        }
        Err(error) => {
            tracing::warn!(
                template = %id,
                error = %error,
                "cannot build the template from its recipe; its stand-in stays"
            );
            Outcome::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_the_shipped_recipes_parse_and_share_their_debian_root() {
        let recipes = recipes().unwrap();
        let ids: Vec<&str> = recipes.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, [PYTHON_TEMPLATE, INTERPRETER_TEMPLATE]);
        let (python, interpreter) = (&recipes[0], &recipes[1]);
        assert_eq!(python.steps()[0].key, interpreter.steps()[0].key);
        for module in ["numpy", "pandas", "matplotlib"] {
            let package = format!("python3-{module}");
            assert!(interpreter.debian.packages.contains(&package), "{package}");
        }
        let server = interpreter.start.as_ref().unwrap();
        assert!(server.command.contains("coppice_interpreter.server"));
        assert_eq!(interpreter.files.len(), INTERPRETER_FILES.len());
        assert!(
            interpreter
                .files
                .iter()
                .all(|file| file.path.starts_with("/opt/coppice/code-interpreter/"))
        );
    }
}
