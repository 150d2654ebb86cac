//! Template builds from recipes. Each step's result is kept as a hidden cache template
//! (`build-<key>`), so a build reuses every step up to the first one that changed: the
//! Debian root is made by the storage, every later step runs as sandbox root in a build
//! sandbox made from the step before, whose writes are then captured as the step's template.
//! The template itself is the last step's layers with the recipe's environment and service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::{ManagerError, SandboxManager, blocking};
use crate::exec::{ExecRequest, ExecUser, ExitStatus};
use crate::id::TemplateId;
use crate::recipe::{
    BuildStep, CACHE_PREFIX, PlannedStep, RECIPE_DIGEST_PREFIX, Recipe, RecipeFile, RunStep,
};
use crate::spec::SandboxSpec;
use crate::storage::{StorageError, TemplateInfo, TemplateMeta};

/// Longest one build step may run.
const STEP_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Memory of a build sandbox.
const BUILD_MEMORY_MB: u32 = 2048;
/// The host's CA bundle, handed to build steps so that registries behind an intercepting
/// proxy the host trusts are trusted too.
const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Where a build sandbox finds it: on its `/tmp`, a tmpfs, so no template keeps it.
const BUILD_CA_BUNDLE: &str = "/tmp/.coppice-build-ca.crt";
/// Lines of a failed step's output its error carries.
const FAILED_TAIL_LINES: usize = 12;

/// Where a build's log lines go.
pub type BuildLog = UnboundedSender<String>;

impl SandboxManager {
    /// Builds template `recipe.id`, sending its log line by line to `log`.
    ///
    /// # Errors
    /// `InvalidRecipe`; `TemplateExists`-like storage refusals when the template exists;
    /// `BuildFailed` naming the step that failed with its last output (nothing of that step
    /// is kept, and no template is made); backend failures.
    pub async fn build_template(
        &self,
        recipe: Recipe,
        log: BuildLog,
    ) -> Result<TemplateInfo, ManagerError> {
        Self::check_template_name(&recipe.id)?;
        self.build_over(recipe, &[], &log, |_| false).await
    }

    /// Builds template `recipe.id` as [`Self::build_template`] does, replacing a template of
    /// that id built earlier (from a recipe, or a stand-in coppice made); sandboxes made from
    /// it keep their files.
    ///
    /// # Errors
    /// As [`Self::build_template`], and `TemplateExists`-like storage refusals when a
    /// template of that id was not built (a snapshot, an import).
    pub async fn rebuild_template(
        &self,
        recipe: Recipe,
        log: BuildLog,
    ) -> Result<TemplateInfo, ManagerError> {
        self.rebuild_tagged_template(recipe, &[], log).await
    }

    /// [`Self::rebuild_template`], then `tags` of the name pointed at the new build, before
    /// any other build of the name may replace it. Tags are checked before anything is built.
    ///
    /// # Errors
    /// As [`Self::rebuild_template`]; `InvalidId` for a bad tag.
    pub async fn rebuild_tagged_template(
        &self,
        recipe: Recipe,
        tags: &[String],
        log: BuildLog,
    ) -> Result<TemplateInfo, ManagerError> {
        Self::check_template_name(&recipe.id)?;
        for tag in tags {
            recipe
                .id
                .with_tag(tag)
                .map_err(|source| ManagerError::InvalidId { source })?;
        }
        // A build a user asked for replaces builds, never a stand-in coppice made.
        self.build_over(recipe, tags, &log, |existing| {
            existing
                .built_from
                .as_deref()
                .is_some_and(|digest| digest.starts_with(RECIPE_DIGEST_PREFIX))
        })
        .await
    }

    /// Builds `recipe` unless a template of its id exists that `may_replace` refuses, and
    /// points `tags` at the build, all under the name's lock.
    async fn build_over(
        &self,
        recipe: Recipe,
        tags: &[String],
        log: &BuildLog,
        may_replace: fn(&TemplateInfo) -> bool,
    ) -> Result<TemplateInfo, ManagerError> {
        let recipe = recipe.validate()?;
        let building = self.lock_template_name(&recipe.id).await;
        if let Ok(existing) = self.template(&recipe.id).await
            && !may_replace(&existing)
        {
            return Err(template_exists(&recipe.id));
        }
        // Every line goes to the caller as it comes; the last ones are kept with the template.
        let (teed, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
        let caller = log.clone();
        let collecting = tokio::spawn(async move {
            let mut kept = std::collections::VecDeque::new();
            while let Some(line) = lines.recv().await {
                let _ = caller.send(line.clone());
                if kept.len() == crate::store::MAX_KEPT_LOG_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
            Vec::from(kept)
        });
        let built = {
            // Shared with other builds; pruning waits until none stands on the cache.
            let _using_cache = self.inner.build_cache_use.read().await;
            self.build_recipe(&recipe, &teed).await
        };
        drop(teed);
        let kept = collecting.await.unwrap_or_default();
        let template = built?;
        self.keep_build_log(&template.id, kept).await;
        if !tags.is_empty() {
            self.tag_locked(&template.id, tags).await?;
        }
        drop(building);
        if let Some(age) = self.inner.config.build_cache_max_age
            && let Err(error) = self.prune_build_cache(age).await
        {
            tracing::warn!(error = %super::error_chain(&error), "cannot prune the build cache");
        }
        Ok(template)
    }

    /// Keeps `lines` as template `id`'s build log; a failure to is logged, not fatal (the
    /// template is made).
    pub(super) async fn keep_build_log(&self, id: &TemplateId, lines: Vec<String>) {
        let now = self.inner.clock.now();
        self.store_best_effort("keep build log", id, move |store, template| {
            store.put_build_log(template, &lines, now)
        })
        .await;
    }

    /// Runs `write` about template `id` on the state database off the runtime; a failure is
    /// logged, not returned: what it records (a log, a step's last use) is the template's
    /// metadata, and the template stands either way.
    pub(super) async fn store_best_effort(
        &self,
        op: &'static str,
        id: &TemplateId,
        write: impl FnOnce(&crate::store::Store, &TemplateId) -> Result<(), crate::store::StoreError>
        + Send
        + 'static,
    ) {
        let inner = Arc::clone(&self.inner);
        let template = id.clone();
        let written = blocking(op, move || write(&inner.store, &template)).await;
        if let Err(error) = written.and_then(|stored| stored.map_err(ManagerError::from)) {
            tracing::warn!(template = %id, op, error = %super::error_chain(&error), "cannot record template metadata");
        }
    }

    /// The log of the build that made template `id` (empty for one no build made).
    ///
    /// # Errors
    /// `TemplateNotFound`; store failures.
    pub async fn template_build_log(&self, id: &TemplateId) -> Result<Vec<String>, ManagerError> {
        self.template(id).await?;
        let inner = Arc::clone(&self.inner);
        let template = id.clone();
        Ok(
            blocking("read build log", move || inner.store.build_log(&template))
                .await??
                .unwrap_or_default(),
        )
    }

    /// Makes sure template `recipe.id` is built from exactly `recipe` (a template coppice
    /// ships), building it if not, every unchanged step taken from the cache. An earlier
    /// build of that id, or the stand-in coppice made from sources, is replaced; sandboxes
    /// made from it keep their files.
    ///
    /// # Errors
    /// As [`Self::build_template`]; `TemplateExists`-like storage refusals when a template of
    /// that id is a user's.
    pub async fn ensure_recipe_template(
        &self,
        recipe: Recipe,
        log: BuildLog,
    ) -> Result<TemplateInfo, ManagerError> {
        let recipe = recipe.validate()?;
        if let Ok(existing) = self.template(&recipe.id).await
            && existing.built_from == Some(recipe.digest())
        {
            return Ok(existing);
        }
        // The shipped names are no user's (`check_template_name`): whatever coppice built
        // under one is an earlier stand-in or build of it.
        self.build_over(recipe, &[], &log, |existing| existing.built_from.is_some())
            .await
    }

    /// Runs `recipe`'s steps, each unless cached, and makes its template of the last one.
    async fn build_recipe(
        &self,
        recipe: &Recipe,
        log: &BuildLog,
    ) -> Result<TemplateInfo, ManagerError> {
        let say = |line: String| {
            let _ = log.send(line);
        };
        let steps = recipe.steps();
        let began = Instant::now();
        let mut parent: Option<TemplateId> = None;
        for (n, step) in steps.iter().enumerate() {
            let cache = step
                .cache_template()
                .map_err(|source| ManagerError::InvalidId { source })?;
            let header = format!("==> step {}/{}: {}", n + 1, steps.len(), step.label());
            self.touch_build_step(&cache).await;
            if self.template(&cache).await.is_ok() {
                say(format!("{header} (cached)"));
            } else {
                say(header);
                let started = Instant::now();
                self.build_step(step, &cache, parent.as_ref(), log)
                    .await
                    .map_err(|error| match error {
                        ManagerError::BuildFailed { step, detail, .. } => {
                            ManagerError::BuildFailed {
                                step,
                                index: Some(n),
                                detail,
                            }
                        }
                        other => other,
                    })?;
                say(format!(
                    "    done in {:.1} s",
                    started.elapsed().as_secs_f64()
                ));
            }
            parent = Some(cache);
        }
        let Some(last) = parent else {
            return Err(ManagerError::BuildFailed {
                step: "plan".into(),
                index: None,
                detail: "the recipe has no steps".into(),
            });
        };
        let meta = TemplateMeta {
            env: recipe.env.clone().into_iter().collect(),
            start: recipe.start.clone(),
            default_user: recipe.user.clone(),
            default_workdir: recipe.workdir.clone(),
            built_from: Some(recipe.digest()),
        };
        let storage = Arc::clone(&self.inner.backends.storage);
        let id = recipe.id.clone();
        let template = blocking("derive template", move || {
            storage.derive_template(&id, &last, &meta)
        })
        .await?
        .map_err(|source| ManagerError::from_storage("derive template", source))?;
        say(format!(
            "==> template {} ready in {:.1} s",
            template.id,
            began.elapsed().as_secs_f64()
        ));
        Ok(template)
    }

    async fn build_step(
        &self,
        step: &PlannedStep,
        cache: &TemplateId,
        parent: Option<&TemplateId>,
        log: &BuildLog,
    ) -> Result<(), ManagerError> {
        let made = match (&step.step, parent) {
            (BuildStep::Debian(base), _) => {
                let storage = Arc::clone(&self.inner.backends.storage);
                let ids = self.inner.backends.runtime.id_map();
                let (base, cache, log) = (base.clone(), cache.clone(), log.clone());
                blocking("bootstrap Debian", move || {
                    storage.bootstrap_debian(&cache, &base, ids, &mut |line| {
                        let _ = log.send(format!("    {line}"));
                    })
                })
                .await?
                .map(drop)
            }
            (_, None) => {
                return Err(ManagerError::BuildFailed {
                    step: step.label(),
                    index: None,
                    detail: "a step needs the Debian root under it".into(),
                });
            }
            (_, Some(parent)) => return self.sandbox_step(step, cache, parent, log).await,
        };
        match made {
            // Another build made the same step meanwhile: it is the same.
            Ok(()) | Err(StorageError::TemplateExists { .. }) => Ok(()),
            Err(StorageError::Invalid { reason }) => Err(ManagerError::BuildFailed {
                step: step.label(),
                index: None,
                detail: reason,
            }),
            Err(source) => Err(ManagerError::from_storage("build step", source)),
        }
    }

    /// Runs `step` in a build sandbox made from `parent` and keeps its writes as `cache`.
    async fn sandbox_step(
        &self,
        step: &PlannedStep,
        cache: &TemplateId,
        parent: &TemplateId,
        log: &BuildLog,
    ) -> Result<(), ManagerError> {
        let mut spec = SandboxSpec::new(parent.clone());
        spec.memory_mb = BUILD_MEMORY_MB;
        spec.timeout = STEP_TIMEOUT + Duration::from_secs(60);
        // The key, not the label: a label can be longer than metadata may be.
        spec.metadata
            .insert("coppice.build-step".into(), step.key[..32].to_owned());
        let sandbox = self.create(spec).await?;
        let outcome = self.run_in_build_sandbox(&sandbox.id, step, log).await;
        let kept = match outcome {
            Ok(()) => match self.snapshot_as(&sandbox.id, Some(cache.clone())).await {
                Ok(_)
                | Err(ManagerError::Storage {
                    source: StorageError::TemplateExists { .. },
                    ..
                }) => Ok(()),
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        if let Err(error) = self.kill(&sandbox.id).await {
            tracing::warn!(sandbox_id = %sandbox.id, error = %super::error_chain(&error), "cannot remove a build sandbox");
        }
        kept
    }

    async fn run_in_build_sandbox(
        &self,
        id: &crate::id::SandboxId,
        step: &PlannedStep,
        log: &BuildLog,
    ) -> Result<(), ManagerError> {
        let mut env = Vec::new();
        if let Ok(bundle) = std::fs::read(HOST_CA_BUNDLE) {
            let copy = self
                .exec(
                    id,
                    ExecRequest {
                        stdin: bundle,
                        ..ExecRequest::new(["/bin/sh", "-c", &format!("cat > {BUILD_CA_BUNDLE}")])
                    },
                )
                .await?;
            if copy.status == ExitStatus::Code(0) {
                for name in [
                    "PIP_CERT",
                    "SSL_CERT_FILE",
                    "NODE_EXTRA_CA_CERTS",
                    "npm_config_cafile",
                ] {
                    env.push((name.to_owned(), BUILD_CA_BUNDLE.to_owned()));
                }
            }
        }
        let requests: Vec<ExecRequest> = match &step.step {
            BuildStep::Command { run, .. } => vec![run_request(run)],
            BuildStep::Files(files) => files.iter().map(write_file).collect(),
            BuildStep::Debian(_) => Vec::new(),
        };
        for request in requests {
            let request = ExecRequest {
                // The step's own variables win over the build's.
                env: env.iter().cloned().chain(request.env).collect(),
                timeout: Some(STEP_TIMEOUT),
                ..request
            };
            let outcome = self.exec(id, request).await?;
            let output = format!(
                "{}{}",
                String::from_utf8_lossy(&outcome.stdout),
                String::from_utf8_lossy(&outcome.stderr)
            );
            for line in output.lines() {
                let _ = log.send(format!("    {line}"));
            }
            if outcome.status != ExitStatus::Code(0) {
                let lines: Vec<&str> = output.lines().collect();
                let tail = lines[lines.len().saturating_sub(FAILED_TAIL_LINES)..].join("\n");
                return Err(ManagerError::BuildFailed {
                    step: step.label(),
                    index: None,
                    detail: format!("{:?}: {tail}", outcome.status),
                });
            }
        }
        Ok(())
    }

    /// Whether `id` names a build cache template (hidden from listings).
    pub(super) fn is_build_cache(id: &TemplateId) -> bool {
        id.as_str().starts_with(CACHE_PREFIX)
    }
}

fn template_exists(id: &TemplateId) -> ManagerError {
    ManagerError::from_storage(
        "build template",
        StorageError::TemplateExists { id: id.clone() },
    )
}

/// The command `run` describes, as its user in its directory.
fn run_request(run: &RunStep) -> ExecRequest {
    let argv = ["/bin/sh", "-c", &run.script, "sh"]
        .into_iter()
        .map(str::to_owned)
        .chain(run.args.iter().cloned());
    ExecRequest {
        stdin: run.stdin.to_vec(),
        env: run.env.clone().into_iter().collect(),
        user: match run.user.as_deref() {
            None | Some("root") => ExecUser::Root,
            Some(name) => ExecUser::Named(name.to_owned()),
        },
        cwd: Some(run.workdir.clone().unwrap_or_else(|| "/".into())),
        ..ExecRequest::new(argv)
    }
}

/// The command that writes `file` (its contents on stdin), making its directory.
fn write_file(file: &RecipeFile) -> ExecRequest {
    ExecRequest {
        stdin: file.contents.clone(),
        user: ExecUser::Root,
        cwd: Some("/".into()),
        ..ExecRequest::new([
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            format!(
                "mkdir -p -- \"$(dirname -- \"$1\")\" && cat > \"$1\" && chmod {:o} -- \"$1\"",
                file.mode
            ),
            "sh".to_owned(),
            file.path.clone(),
        ])
    }
}
