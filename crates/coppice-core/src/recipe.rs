//! Template recipes: what a template is built from (a Debian release and packages, pip and
//! npm packages, files, run steps, its environment and service), checked once, and the
//! steps a build runs, each keyed by a digest of itself and every step before it, so a
//! rebuild reuses every step up to the first that changed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::id::TemplateId;
use crate::storage::TemplateStart;

/// Template ids with this prefix are the build cache's own.
pub const CACHE_PREFIX: &str = "build-";
/// Largest file a recipe may carry.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// How [`Recipe::digest`] starts, telling a recipe build from other builds coppice makes.
pub const RECIPE_DIGEST_PREFIX: &str = "recipe:";
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
    /// Shell commands run last, in order, as sandbox root.
    pub run: Vec<String>,
    /// Environment variables of every process of the template's sandboxes.
    pub env: BTreeMap<String, String>,
    /// The service every sandbox of the template starts.
    pub start: Option<TemplateStart>,
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
    /// Run a shell command as sandbox root.
    Command {
        /// What the log calls it.
        label: String,
        /// The command.
        script: String,
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
const RESERVED_TEMPLATE_IDS: [&str; 2] = ["imports", "builds"];

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
    if RESERVED_TEMPLATE_IDS.contains(&id.as_str()) {
        return Err(refuse("templateID", format!("{id:?} is reserved")));
    }
    Ok(())
}

impl Recipe {
    /// Checks every field; sorts and dedupes the Debian packages.
    ///
    /// # Errors
    /// [`RecipeError`] naming the first bad field.
    pub fn validate(mut self) -> Result<Self, RecipeError> {
        check_template_name(&self.id)?;
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
        for (n, step) in self.run.iter().enumerate() {
            if step.trim().is_empty() || step.contains('\0') {
                return Err(refuse(
                    format!("run[{n}]"),
                    "an empty command, or one with a NUL byte",
                ));
            }
        }
        for (name, value) in &self.env {
            if name.is_empty() || name.contains('=') || name.contains('\0') || value.contains('\0')
            {
                return Err(refuse(
                    "env",
                    format!("{name:?} is not a variable name, or its value has a NUL byte"),
                ));
            }
        }
        Ok(self)
    }

    /// The steps a build runs, in order, each with its cache key.
    pub fn steps(&self) -> Vec<PlannedStep> {
        let mut steps = vec![BuildStep::Debian(self.debian.clone())];
        if !self.pip.is_empty() {
            steps.push(BuildStep::Command {
                label: format!("pip install {}", self.pip.join(" ")),
                script: format!(
                    "pip install --no-cache-dir --break-system-packages -- {}",
                    quote_all(&self.pip)
                ),
            });
        }
        if !self.npm.is_empty() {
            steps.push(BuildStep::Command {
                label: format!("npm install -g {}", self.npm.join(" ")),
                script: format!(
                    "npm install -g --no-audit --no-fund -- {}",
                    quote_all(&self.npm)
                ),
            });
        }
        if !self.files.is_empty() {
            steps.push(BuildStep::Files(self.files.clone()));
        }
        for (n, script) in self.run.iter().enumerate() {
            steps.push(BuildStep::Command {
                label: format!("run[{n}]: {}", script.chars().take(60).collect::<String>()),
                script: script.clone(),
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
        field(
            self.steps()
                .last()
                .map_or("", |step| step.key.as_str())
                .as_bytes(),
        );
        for (name, value) in &self.env {
            field(name.as_bytes());
            field(value.as_bytes());
        }
        if let Some(start) = &self.start {
            field(start.command.as_bytes());
            field(start.ready.as_deref().unwrap_or("").as_bytes());
        }
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
        BuildStep::Command { script, .. } => {
            field(b"command");
            field(script.as_bytes());
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
            run: vec!["echo done > /etc/done".into()],
            env: BTreeMap::new(),
            start: None,
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
        assert!(matches!(&steps[1].step, BuildStep::Command { script, .. }
            if script == "pip install --no-cache-dir --break-system-packages -- 'six'"));
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
        assert_eq!(refused(|r| r.run.push("  ".into())), "run[1]");
        assert_eq!(refused(|r| r.run.push("echo \0".into())), "run[1]");
        assert_eq!(
            refused(|r| {
                r.env.insert("A".into(), "x\0y".into());
            }),
            "env"
        );
        assert_eq!(refused(|r| r.id = "build-x".parse().unwrap()), "templateID");
    }
}
