//! Template recipes: what a template is built from (a Debian release and packages, pip and
//! npm packages, files, run steps, its environment and service), checked once, and the
//! steps a build runs, each keyed by a digest of itself and every step before it, so a
//! rebuild reuses every step up to the first that changed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::id::TemplateId;
use crate::storage::TemplateStart;

/// Template ids with this prefix are the build cache's own.
pub const CACHE_PREFIX: &str = "build-";
/// Largest file a recipe may carry.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// How [`Recipe::digest`] starts, telling a recipe build from other builds coppice makes.
pub const RECIPE_DIGEST_PREFIX: &str = "recipe:";
/// Largest input one run step may take (an archive a copy unpacks).
pub const MAX_STEP_INPUT_BYTES: usize = 64 << 20;
/// Most packages of one kind a recipe may name.
const MAX_PACKAGES: usize = 500;

/// A template recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// The template it builds.
    pub id: TemplateId,
    /// The Debian root everything else is installed into.
    pub debian: DebianBase,
    /// Python packages (`pip install` specifiers).
    pub pip: Vec<String>,
    /// Node packages (`npm install -g` specifiers).
    pub npm: Vec<String>,
    /// Files written after the packages.
    pub files: Vec<RecipeFile>,
    /// Shell commands run last, in order.
    pub run: Vec<RunStep>,
    /// Environment variables of every process of the template's sandboxes.
    pub env: BTreeMap<String, String>,
    /// The service every sandbox of the template starts.
    pub start: Option<TemplateStart>,
    /// The user its sandboxes' processes run as by default (`None`: the Debian root's
    /// `user`).
    pub user: Option<String>,
    /// Their default working directory (`None`: that user's home).
    pub workdir: Option<String>,
}

/// A shell command of a build, with what it runs as and in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStep {
    /// What the log calls it (`None`: the command itself).
    pub label: Option<String>,
    /// The command, run by `/bin/sh -c` with `args` as `$1`...
    pub script: String,
    /// Its positional arguments.
    pub args: Vec<String>,
    /// Its standard input (an archive a copy unpacks), shared by every copy of the step.
    pub stdin: Arc<[u8]>,
    /// The user it runs as (`None`: sandbox root).
    pub user: Option<String>,
    /// Its working directory (`None`: `/`).
    pub workdir: Option<String>,
    /// Variables it gets besides the build's own.
    pub env: BTreeMap<String, String>,
}

impl RunStep {
    /// `script` as sandbox root in `/`, with nothing else.
    pub fn root(script: impl Into<String>) -> Self {
        Self {
            label: None,
            script: script.into(),
            args: Vec::new(),
            stdin: Arc::from(Vec::new()),
            user: None,
            workdir: None,
            env: BTreeMap::new(),
        }
    }
}

/// A Debian root made from the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianBase {
    /// The release (`bookworm`).
    pub release: String,
    /// Packages installed besides the essential ones, sorted and without repeats.
    pub packages: Vec<String>,
}

/// A file a recipe writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeFile {
    /// Absolute path inside the sandbox.
    pub path: String,
    /// Its contents.
    pub contents: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// One step of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildStep {
    /// Make the Debian root.
    Debian(DebianBase),
    /// Write files.
    Files(Vec<RecipeFile>),
    /// Run a shell command.
    Command {
        /// What the log calls it.
        label: String,
        /// The command, its arguments, input, user, directory and variables.
        run: RunStep,
    },
}

/// A step with its cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStep {
    /// Hex digest of this step and every step before it.
    pub key: String,
    /// The step.
    pub step: BuildStep,
}

impl PlannedStep {
    /// The hidden template that holds this step's result.
    pub fn cache_template(&self) -> Result<TemplateId, crate::id::ParseIdError> {
        format!("{CACHE_PREFIX}{}", &self.key[..32]).parse()
    }

    /// What the log calls this step.
    pub fn label(&self) -> String {
        match &self.step {
            BuildStep::Debian(base) => {
                format!("debian {} ({} packages)", base.release, base.packages.len())
            }
            BuildStep::Files(files) => format!("files ({})", files.len()),
            BuildStep::Command { label, .. } => label.clone(),
        }
    }
}

/// Why a recipe is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("recipe field {field}: {reason}")]
pub struct RecipeError {
    /// The field.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn refuse(field: impl Into<String>, reason: impl Into<String>) -> RecipeError {
    RecipeError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Template ids no caller may give a new template, besides the cache's: the names of the
/// template routes' own paths.
const RESERVED_TEMPLATE_IDS: [&str; 4] = ["imports", "builds", "aliases", "tags"];
/// The templates coppice ships (built from its own recipes, and replaced when those change),
/// which no caller may build, import or snapshot over.
pub const SHIPPED_TEMPLATE_IDS: [&str; 2] = ["python", "code-interpreter-v1"];
/// Most run steps a recipe may have.
const MAX_RUN_STEPS: usize = 500;
/// Most input all of a recipe's run steps may take together.
pub const MAX_RECIPE_INPUT_BYTES: usize = 256 << 20;

/// Refuses an id a caller may not give a new template (made by a build, an import or a
/// snapshot): the build cache's, and the template routes' own names.
///
/// # Errors
/// [`RecipeError`] on `templateID`, saying why.
pub fn check_template_name(id: &TemplateId) -> Result<(), RecipeError> {
    if id.as_str().starts_with(CACHE_PREFIX) {
        return Err(refuse(
            "templateID",
            format!("ids starting with {CACHE_PREFIX:?} are the build cache's"),
        ));
    }
    if id.tag().is_some() {
        return Err(refuse(
            "templateID",
            format!("{id:?} names a tag: tags are given to built templates (tags)"),
        ));
    }
    if RESERVED_TEMPLATE_IDS.contains(&id.as_str()) {
        return Err(refuse("templateID", format!("{id:?} is reserved")));
    }
    if SHIPPED_TEMPLATE_IDS.contains(&id.as_str()) {
        return Err(refuse(
            "templateID",
            format!("{id:?} is a template coppice ships: pick another name"),
        ));
    }
    Ok(())
}

impl Recipe {
    /// Checks every field but the template's name (see [`check_template_name`], which
    /// callers building for users apply); sorts and dedupes the Debian packages.
    ///
    /// # Errors
    /// [`RecipeError`] naming the first bad field.
    pub fn validate(mut self) -> Result<Self, RecipeError> {
        let release = &self.debian.release;
        if release.is_empty()
            || release.len() > 32
            || !release.bytes().all(|b| b.is_ascii_lowercase())
        {
            return Err(refuse(
                "debian.release",
                format!("{release:?} is not a release name (e.g. \"bookworm\")"),
            ));
        }
        self.debian.packages.sort();
        self.debian.packages.dedup();
        check_names("debian.packages", &self.debian.packages, |name| {
            name.len() >= 2
                && name.len() <= 100
                && name
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b))
        })?;
        check_names("pip", &self.pip, |spec| {
            !spec.starts_with('-')
                && spec
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-[],<>=!~*+".contains(&b))
        })?;
        check_names("npm", &self.npm, |spec| {
            !spec.starts_with('-')
                && spec.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b"@/._-^~<>=*".contains(&b)
                })
        })?;
        for (n, file) in self.files.iter().enumerate() {
            let field = format!("files[{n}].path");
            if !file.path.starts_with('/')
                || file.path.split('/').any(|part| part == ".." || part == ".")
                || file.path.len() > 4096
                || file.path.contains('\0')
                || file.path.ends_with('/')
            {
                return Err(refuse(
                    field,
                    format!(
                        "{:?} is not an absolute path to a file without '..'",
                        file.path
                    ),
                ));
            }
            if file.contents.len() > MAX_FILE_BYTES {
                return Err(refuse(format!("files[{n}].content"), "more than 1 MiB"));
            }
            if file.mode > 0o7777 {
                return Err(refuse(format!("files[{n}].mode"), "not permission bits"));
            }
        }
        if self.run.len() > MAX_RUN_STEPS {
            return Err(refuse("run", format!("more than {MAX_RUN_STEPS} steps")));
        }
        for (n, step) in self.run.iter().enumerate() {
            step.check(&format!("run[{n}]"))?;
        }
        let input: usize = self.run.iter().map(|step| step.stdin.len()).sum();
        if input > MAX_RECIPE_INPUT_BYTES {
            return Err(refuse(
                "run",
                format!(
                    "the steps' input passes {} MiB",
                    MAX_RECIPE_INPUT_BYTES >> 20
                ),
            ));
        }
        if let Some(user) = &self.user {
            check_user("user", user)?;
        }
        if let Some(workdir) = &self.workdir {
            check_dir("workdir", workdir)?;
        }
        check_env("env", &self.env)?;
        Ok(self)
    }

    /// The steps a build runs, in order, each with its cache key.
    pub fn steps(&self) -> Vec<PlannedStep> {
        let mut steps = vec![BuildStep::Debian(self.debian.clone())];
        if !self.pip.is_empty() {
            steps.push(BuildStep::Command {
                label: format!("pip install {}", self.pip.join(" ")),
                run: RunStep::root(format!(
                    "pip install --no-cache-dir --break-system-packages -- {}",
                    quote_all(&self.pip)
                )),
            });
        }
        if !self.npm.is_empty() {
            steps.push(BuildStep::Command {
                label: format!("npm install -g {}", self.npm.join(" ")),
                run: RunStep::root(format!(
                    "npm install -g --no-audit --no-fund -- {}",
                    quote_all(&self.npm)
                )),
            });
        }
        if !self.files.is_empty() {
            steps.push(BuildStep::Files(self.files.clone()));
        }
        for (n, run) in self.run.iter().enumerate() {
            let said = run.label.as_deref().unwrap_or(&run.script);
            steps.push(BuildStep::Command {
                label: format!("run[{n}]: {}", said.chars().take(60).collect::<String>()),
                run: run.clone(),
            });
        }
        let mut key = String::new();
        steps
            .into_iter()
            .map(|step| {
                key = step_key(&key, &step);
                PlannedStep {
                    key: key.clone(),
                    step,
                }
            })
            .collect()
    }
}

impl RunStep {
    fn check(&self, field: &str) -> Result<(), RecipeError> {
        if self.script.trim().is_empty()
            || self.script.contains('\0')
            || self.args.iter().any(|arg| arg.contains('\0'))
        {
            return Err(refuse(field, "an empty command, or one with a NUL byte"));
        }
        if self.stdin.len() > MAX_STEP_INPUT_BYTES {
            return Err(refuse(
                format!("{field}.input"),
                format!("more than {} MiB", MAX_STEP_INPUT_BYTES >> 20),
            ));
        }
        if let Some(user) = &self.user {
            check_user(&format!("{field}.user"), user)?;
        }
        if let Some(workdir) = &self.workdir {
            check_dir(&format!("{field}.workdir"), workdir)?;
        }
        check_env(&format!("{field}.env"), &self.env)
    }
}

/// A user name as `useradd` takes it (or a numeric uid).
fn check_user(field: &str, user: &str) -> Result<(), RecipeError> {
    let valid = !user.is_empty()
        && user.len() <= 32
        && user
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(refuse(field, format!("{user:?} is not a user name")))
    }
}

fn check_dir(field: &str, dir: &str) -> Result<(), RecipeError> {
    if dir.starts_with('/') && dir.len() <= 4096 && !dir.contains('\0') {
        Ok(())
    } else {
        Err(refuse(field, format!("{dir:?} is not an absolute path")))
    }
}

fn check_env(field: &str, env: &BTreeMap<String, String>) -> Result<(), RecipeError> {
    for (name, value) in env {
        if name.is_empty() || name.contains('=') || name.contains('\0') || value.contains('\0') {
            return Err(refuse(
                field,
                format!("{name:?} is not a variable name, or its value has a NUL byte"),
            ));
        }
    }
    Ok(())
}

fn check_names(
    field: &str,
    names: &[String],
    valid: impl Fn(&str) -> bool,
) -> Result<(), RecipeError> {
    if names.len() > MAX_PACKAGES {
        return Err(refuse(field, format!("more than {MAX_PACKAGES} entries")));
    }
    match names
        .iter()
        .find(|name| name.is_empty() || name.len() > 200 || !valid(name))
    {
        Some(bad) => Err(refuse(field, format!("{bad:?} is not a package name"))),
        None => Ok(()),
    }
}

fn quote_all(words: &[String]) -> String {
    words
        .iter()
        .map(|word| format!("'{}'", word.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Recipe {
    /// `recipe:<hex>`, a digest of everything the template is built from (every step, its
    /// environment and service): equal digests make equal templates.
    pub fn digest(&self) -> String {
        let mut hash = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        };
        // Each section tagged and counted, and every option marked, so no two recipes
        // share a digest by moving text from one section to another.
        let option = |tag: &[u8], value: Option<&str>, field: &mut dyn FnMut(&[u8])| {
            field(tag);
            match value {
                Some(text) => {
                    field(b"some");
                    field(text.as_bytes());
                }
                None => field(b"none"),
            }
        };
        field(b"steps");
        field(
            self.steps()
                .last()
                .map_or("", |step| step.key.as_str())
                .as_bytes(),
        );
        field(b"env");
        field(&(self.env.len() as u64).to_le_bytes());
        for (name, value) in &self.env {
            field(name.as_bytes());
            field(value.as_bytes());
        }
        let start = self.start.as_ref();
        option(b"start", start.map(|s| s.command.as_str()), &mut field);
        option(b"ready", start.and_then(|s| s.ready.as_deref()), &mut field);
        option(b"user", self.user.as_deref(), &mut field);
        option(b"workdir", self.workdir.as_deref(), &mut field);
        format!("{RECIPE_DIGEST_PREFIX}{}", hex(hash))
    }
}

fn hex(hash: Sha256) -> String {
    hash.finalize().iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

/// The key of `step` after the step whose key is `previous`.
fn step_key(previous: &str, step: &BuildStep) -> String {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(previous.as_bytes());
    match step {
        BuildStep::Debian(base) => {
            field(b"debian");
            field(base.release.as_bytes());
            for package in &base.packages {
                field(package.as_bytes());
            }
        }
        BuildStep::Files(files) => {
            field(b"files");
            for file in files {
                field(file.path.as_bytes());
                field(&file.contents);
                field(&file.mode.to_le_bytes());
            }
        }
        BuildStep::Command { run, .. } => {
            field(b"command");
            field(run.script.as_bytes());
            // What the command runs with, only where it differs from a plain root command,
            // so plain commands keep their keys.
            for arg in &run.args {
                field(b"arg");
                field(arg.as_bytes());
            }
            if !run.stdin.is_empty() {
                field(b"stdin");
                field(&Sha256::digest(&run.stdin));
            }
            if let Some(user) = &run.user {
                field(b"user");
                field(user.as_bytes());
            }
            if let Some(workdir) = &run.workdir {
                field(b"workdir");
                field(workdir.as_bytes());
            }
            for (name, value) in &run.env {
                field(b"env");
                field(name.as_bytes());
                field(value.as_bytes());
            }
        }
    }
    hex(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe() -> Recipe {
        Recipe {
            id: "py".parse().unwrap(),
            debian: DebianBase {
                release: "bookworm".into(),
                packages: vec!["python3-pip".into(), "jq".into(), "jq".into()],
            },
            pip: vec!["six".into()],
            npm: Vec::new(),
            files: vec![RecipeFile {
                path: "/etc/motd".into(),
                contents: b"hi\n".to_vec(),
                mode: 0o644,
            }],
            run: vec![RunStep::root("echo done > /etc/done")],
            env: BTreeMap::new(),
            start: None,
            user: None,
            workdir: None,
        }
    }

    #[test]
    fn test_steps_run_in_order_and_packages_are_sorted_once() {
        let recipe = recipe().validate().unwrap();
        assert_eq!(recipe.debian.packages, ["jq", "python3-pip"]);
        let steps = recipe.steps();
        let labels: Vec<String> = steps.iter().map(PlannedStep::label).collect();
        assert_eq!(
            labels,
            [
                "debian bookworm (2 packages)",
                "pip install six",
                "files (1)",
                "run[0]: echo done > /etc/done"
            ]
        );
        assert!(matches!(&steps[1].step, BuildStep::Command { run, .. }
            if run.script == "pip install --no-cache-dir --break-system-packages -- 'six'"));
        let cache = steps[0].cache_template().unwrap();
        assert!(cache.as_str().starts_with(CACHE_PREFIX));
    }

    #[test]
    fn test_a_changed_step_changes_its_key_and_every_later_one_only() {
        let before = recipe().validate().unwrap().steps();
        let mut more = recipe();
        more.pip.push("idna".into());
        let after = more.validate().unwrap().steps();
        assert_eq!(before[0].key, after[0].key, "the Debian step is reused");
        assert_ne!(before[1].key, after[1].key);
        assert_ne!(
            before[2].key, after[2].key,
            "later steps sit on a new layer"
        );
        assert_ne!(before[3].key, after[3].key);
    }

    #[test]
    fn test_the_digest_covers_steps_environment_and_service_only() {
        let base = recipe().validate().unwrap().digest();
        assert!(base.starts_with(RECIPE_DIGEST_PREFIX));
        assert_eq!(base, recipe().validate().unwrap().digest());
        let changed = |edit: fn(&mut Recipe)| {
            let mut other = recipe();
            edit(&mut other);
            other.validate().unwrap().digest()
        };
        assert_ne!(base, changed(|r| r.pip.push("idna".into())));
        assert_ne!(base, changed(|r| r.files[0].mode = 0o600));
        assert_ne!(base, changed(|r| r.run[0].user = Some("user".into())));
        assert_ne!(
            base,
            changed(|r| r.run[0].stdin = Arc::from(b"tar".as_slice()))
        );
        assert_ne!(base, changed(|r| r.workdir = Some("/srv".into())));
        // A label is only what the log says.
        assert_eq!(base, changed(|r| r.run[0].label = Some("copy".into())));
        assert_ne!(
            base,
            changed(|r| {
                r.env.insert("LANG".into(), "C".into());
            })
        );
        assert_ne!(
            base,
            changed(|r| {
                r.start = Some(TemplateStart {
                    command: "serve".into(),
                    ready: None,
                    user: None,
                });
            })
        );
        // Package order is not what the template is made of.
        assert_eq!(base, changed(|r| r.debian.packages.reverse()));
    }

    #[test]
    fn test_bad_fields_are_refused_by_name() {
        let refused = |edit: fn(&mut Recipe)| {
            let mut recipe = recipe();
            edit(&mut recipe);
            recipe.validate().unwrap_err().field
        };
        assert_eq!(
            refused(|r| r.debian.release = "Bookworm!".into()),
            "debian.release"
        );
        assert_eq!(
            refused(|r| r.debian.packages.push("-oDebug=1".into())),
            "debian.packages"
        );
        assert_eq!(
            refused(|r| r.pip.push("--index-url=http://evil".into())),
            "pip"
        );
        assert_eq!(refused(|r| r.pip.push("six; rm -rf /".into())), "pip");
        assert_eq!(refused(|r| r.npm.push("-g".into())), "npm");
        assert_eq!(
            refused(|r| r.files[0].path = "/etc/../x".into()),
            "files[0].path"
        );
        assert_eq!(
            refused(|r| r.files[0].path = "relative".into()),
            "files[0].path"
        );
        assert_eq!(refused(|r| r.run.push(RunStep::root("  "))), "run[1]");
        assert_eq!(refused(|r| r.run.push(RunStep::root("echo \0"))), "run[1]");
        assert_eq!(
            refused(|r| r.run[0].user = Some("Root;".into())),
            "run[0].user"
        );
        assert_eq!(
            refused(|r| r.run[0].workdir = Some("srv".into())),
            "run[0].workdir"
        );
        assert_eq!(
            refused(|r| r.run[0].stdin = Arc::from(vec![0; MAX_STEP_INPUT_BYTES + 1])),
            "run[0].input"
        );
        assert_eq!(refused(|r| r.user = Some(String::new())), "user");
        assert_eq!(refused(|r| r.workdir = Some("~/x".into())), "workdir");
        assert_eq!(
            refused(|r| {
                r.env.insert("A".into(), "x\0y".into());
            }),
            "env"
        );
    }

    #[test]
    fn test_names_of_the_cache_the_routes_the_shipped_templates_and_tags_are_refused() {
        for name in [
            "build-x",
            "imports",
            "tags",
            "python",
            "code-interpreter-v1",
            "mine:v1",
        ] {
            let error = check_template_name(&name.parse().unwrap()).unwrap_err();
            assert_eq!(error.field, "templateID", "{name}");
        }
        check_template_name(&"python-data".parse().unwrap()).unwrap();
    }
}
