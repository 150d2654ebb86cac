//! E2B's template steps (what `Template()` in the SDKs records: a base, then `RUN`, `COPY`,
//! `ENV`, `WORKDIR`, `USER`, and a start and ready command) as a coppice recipe, or why they
//! do not map. Each `RUN` and `COPY` becomes a run step carrying the user, directory and
//! variables the steps before it set; `WORKDIR` makes its directory as Docker does.

use std::collections::BTreeMap;
use std::sync::Arc;

use coppice_core::TemplateId;
use coppice_core::recipe::{DebianBase, Recipe, RunStep};
use coppice_core::storage::TemplateStart;
use serde::Deserialize;

/// Packages every Debian base gets besides Debian's essential set: what the SDKs' ready
/// checks (`wait_for_port`, `wait_for_url`, `wait_for_process`) and TLS need.
const BASE_PACKAGES: [&str; 4] = ["ca-certificates", "curl", "iproute2", "procps"];
/// What E2B's default base (`e2bdev/base`, a template with no `from_*`) adds to those: its
/// Python and Node.js, from Debian.
const E2B_BASE_PACKAGES: [&str; 5] = ["git", "nodejs", "python3", "python3-pip", "python3-venv"];
/// The release E2B's default base maps to.
const E2B_BASE_RELEASE: &str = "bookworm";
/// The user and directory E2B's templates start with (the Debian root's `user`).
const FIRST_USER: &str = "user";
const FIRST_WORKDIR: &str = "/home/user";
/// Unpacks a `COPY` step's upload (stdin) and copies what `$1` matches in it to `$2`, owned
/// by `$3` (`user` or `user:group`), files given mode `$4` when set; `$5` is `z` for a
/// gzipped upload. A directory's contents go into the destination, as Docker copies them.
/// What is copied is staged first and given its owner and mode there, so nothing already
/// in the destination changes but what the copy replaces; a destination directory that did
/// not exist is made for the owner.
const COPY_SCRIPT: &str = r#"set -eu
dest=$2
case "$dest" in /*) ;; *) dest="$(pwd)/$dest" ;; esac
case "$3" in *:*) owner=$3 ;; *) owner="$3:" ;; esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/in"
tar -x"$5"f - -C "$work/in" --no-same-owner
cd "$work/in"
found=0
IFS=''
for item in $1; do
    [ -e "$item" ] || [ -L "$item" ] || continue
    found=1
    rm -rf "$work/out"
    mkdir "$work/out"
    if [ -d "$item" ] && [ ! -L "$item" ]; then
        cp -a -- "$item/." "$work/out/"
        into=$dest
    else
        case "$dest" in
            */) into=$dest; name=$(basename -- "$item") ;;
            *) if [ -d "$dest" ]; then into=$dest; name=$(basename -- "$item")
               else into=$(dirname -- "$dest"); name=$(basename -- "$dest"); fi ;;
        esac
        cp -a -- "$item" "$work/out/$name"
    fi
    for entry in "$work/out"/* "$work/out"/.[!.]* "$work/out"/..?*; do
        [ -e "$entry" ] || [ -L "$entry" ] || continue
        chown -R -h -- "$owner" "$entry"
        if [ -n "$4" ]; then find "$entry" -type f -exec chmod -- "$4" {} +; fi
    done
    [ -d "$into" ] || { mkdir -p -- "$into" && chown -- "$owner" "$into"; }
    for entry in "$work/out"/* "$work/out"/.[!.]* "$work/out"/..?*; do
        [ -e "$entry" ] || [ -L "$entry" ] || continue
        cp -a -- "$entry" "$into/"
    done
done
[ "$found" = 1 ] || { echo "nothing in the upload matches $1" >&2; exit 1; }
"#;
/// Makes `$1` owned by `$2` unless it exists.
const WORKDIR_SCRIPT: &str = r#"[ -d "$1" ] || { mkdir -p -- "$1" && chown -- "$2:" "$1"; }"#;

/// The body of `POST /v2/templates/{templateID}/builds/{buildID}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BuildStart {
    #[serde(default)]
    pub(crate) from_image: Option<String>,
    #[serde(default)]
    pub(crate) from_template: Option<String>,
    #[serde(default)]
    pub(crate) from_image_registry: Option<serde_json::Value>,
    #[serde(default)]
    pub(crate) force: Option<bool>,
    #[serde(default)]
    pub(crate) steps: Vec<Step>,
    #[serde(default)]
    pub(crate) start_cmd: Option<String>,
    #[serde(default)]
    pub(crate) ready_cmd: Option<String>,
}

/// One recorded step.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Step {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) args: Vec<String>,
    #[serde(default)]
    pub(crate) files_hash: Option<String>,
    #[serde(default)]
    pub(crate) force: Option<bool>,
}

/// A recipe made of E2B steps, and for each of its run steps the E2B step it came from
/// (their numbering: 1 is the first step after the base).
#[derive(Debug)]
pub(crate) struct Translated {
    pub(crate) recipe: Recipe,
    pub(crate) e2b_step_of_run: Vec<usize>,
}

/// `start` as a recipe for `id`; `upload` gives a `COPY` step's files by their hash.
///
/// # Errors
/// A message saying which step does not map, and why.
pub(crate) fn translate(
    id: TemplateId,
    start: BuildStart,
    upload: impl Fn(&str) -> Option<bytes::Bytes>,
) -> Result<Translated, String> {
    let debian = base(&start)?;
    let mut user = FIRST_USER.to_owned();
    let mut workdir = FIRST_WORKDIR.to_owned();
    let mut env = BTreeMap::new();
    let mut run = Vec::new();
    let mut e2b_step_of_run = Vec::new();
    // `force` (the SDKs' `skip_cache`) reruns that step and every later one: a fresh value
    // in their variables changes their cache keys.
    let mut forced = start.force.unwrap_or(false);
    let nonce = coppice_core::sandbox::AccessToken::generate()
        .map_err(|error| format!("no randomness: {error}"))?
        .expose()
        .to_owned();
    for (index, step) in start.steps.iter().enumerate() {
        let number = index + 1;
        forced |= step.force.unwrap_or(false);
        let refuse = |why: &str| format!("step {number} ({} {:?}): {why}", step.kind, step.args);
        let mut step_env = env.clone();
        if forced {
            step_env.insert("COPPICE_BUILD_FORCED".to_owned(), nonce.clone());
        }
        let made = match step.kind.as_str() {
            "ENV" => {
                if step.args.len() % 2 != 0 {
                    return Err(refuse("ENV takes names and values in pairs"));
                }
                for pair in step.args.chunks(2) {
                    env.insert(pair[0].clone(), pair[1].clone());
                }
                None
            }
            "USER" => {
                user = step
                    .args
                    .first()
                    .filter(|name| !name.is_empty())
                    .ok_or_else(|| refuse("USER needs a user"))?
                    .clone();
                None
            }
            "WORKDIR" => {
                let dir = step
                    .args
                    .first()
                    .ok_or_else(|| refuse("WORKDIR needs a directory"))?;
                workdir = resolve(&workdir, dir);
                Some(RunStep {
                    label: Some(format!("WORKDIR {workdir}")),
                    args: vec![workdir.clone(), user.clone()],
                    env: step_env,
                    ..RunStep::root(WORKDIR_SCRIPT)
                })
            }
            "RUN" => {
                let command = step
                    .args
                    .first()
                    .ok_or_else(|| refuse("RUN needs a command"))?;
                let as_user = step
                    .args
                    .get(1)
                    .filter(|name| !name.is_empty())
                    .unwrap_or(&user);
                Some(RunStep {
                    label: Some(format!("RUN {command}")),
                    user: (as_user != "root").then(|| as_user.clone()),
                    workdir: Some(workdir.clone()),
                    env: step_env,
                    ..RunStep::root(command.clone())
                })
            }
            "COPY" => {
                let (Some(src), Some(dest)) = (step.args.first(), step.args.get(1)) else {
                    return Err(refuse("COPY needs a source and a destination"));
                };
                let hash = step
                    .files_hash
                    .as_deref()
                    .ok_or_else(|| refuse("COPY needs the hash of its files"))?;
                let files = upload(hash)
                    .ok_or_else(|| refuse("its files were not uploaded (or were too large)"))?;
                let owner = step
                    .args
                    .get(2)
                    .filter(|name| !name.is_empty())
                    .unwrap_or(&user);
                let mode = step.args.get(3).cloned().unwrap_or_default();
                if !mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) || mode.len() > 5 {
                    return Err(refuse("the mode is not octal permission bits"));
                }
                let gzip = if files.starts_with(&[0x1f, 0x8b]) {
                    "z"
                } else {
                    ""
                };
                Some(RunStep {
                    label: Some(format!("COPY {src} {dest}")),
                    args: vec![
                        src.clone(),
                        dest.clone(),
                        owner.clone(),
                        mode,
                        gzip.to_owned(),
                    ],
                    stdin: Arc::from(files.as_ref()),
                    workdir: Some(workdir.clone()),
                    env: step_env,
                    ..RunStep::root(COPY_SCRIPT)
                })
            }
            other => return Err(refuse(&format!("{other} steps are not supported"))),
        };
        if let Some(made) = made {
            run.push(made);
            e2b_step_of_run.push(number);
        }
    }
    let start_command = start.start_cmd.filter(|cmd| !cmd.trim().is_empty());
    let recipe = Recipe {
        id,
        debian,
        pip: Vec::new(),
        npm: Vec::new(),
        files: Vec::new(),
        run,
        // E2B's ENV holds during the build only.
        env: BTreeMap::new(),
        start: start_command.map(|command| TemplateStart {
            command,
            ready: start.ready_cmd.filter(|cmd| !cmd.trim().is_empty()),
            user: None,
        }),
        user: Some(user),
        workdir: Some(workdir),
    };
    let recipe = recipe.validate().map_err(|error| error.to_string())?;
    Ok(Translated {
        recipe,
        e2b_step_of_run,
    })
}

/// The Debian root a base names.
fn base(start: &BuildStart) -> Result<DebianBase, String> {
    if start.from_image_registry.is_some() {
        return Err(
            "images from private registries are not pulled: import the image with \
                    `coppice template import` instead"
                .into(),
        );
    }
    if let Some(template) = &start.from_template {
        return Err(format!(
            "building on template {template:?} (from_template) is not supported yet: start \
             from a Debian release (from_debian_image)"
        ));
    }
    let image = start
        .from_image
        .as_deref()
        .ok_or("the template names no base (from_debian_image)")?;
    let name = image
        .trim_start_matches("docker.io/")
        .trim_start_matches("library/");
    if matches!(name, "e2bdev/base" | "e2bdev/base:latest") {
        return Ok(DebianBase {
            release: E2B_BASE_RELEASE.to_owned(),
            packages: BASE_PACKAGES
                .iter()
                .chain(E2B_BASE_PACKAGES.iter())
                .map(|p| (*p).to_owned())
                .collect(),
        });
    }
    let release = name
        .strip_prefix("debian:")
        .or((name == "debian").then_some("stable"))
        .ok_or_else(|| {
            format!(
                "base image {image:?} would be pulled from a registry, which coppice does not do: \
                 start from a Debian release (from_debian_image), or import the image with \
                 `coppice template import`"
            )
        })?;
    let release = release.strip_suffix("-slim").unwrap_or(release);
    let release = match release {
        "latest" => "stable",
        "11" => "bullseye",
        "12" => "bookworm",
        "13" => "trixie",
        other => other,
    };
    Ok(DebianBase {
        release: release.to_owned(),
        packages: BASE_PACKAGES.iter().map(|p| (*p).to_owned()).collect(),
    })
}

/// `path` against the directory `from`, as `WORKDIR` resolves a relative one.
fn resolve(from: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{}/{path}", from.trim_end_matches('/'))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "steps_tests.rs"]
mod tests;
