//! Template builds over the fake backends: steps in order, each kept and reused by the next
//! build whose steps up to it are the same, and failed steps that leave no template.

use std::collections::BTreeMap;
use std::time::Duration;

use super::tests::Harness;
use super::*;
use crate::recipe::{DebianBase, Recipe, RunStep};
use crate::storage::TemplateInfo;
use crate::testing::FakeCall;

fn recipe(id: &str, pip: &[&str], run: &[&str]) -> Recipe {
    Recipe {
        id: id.parse().unwrap(),
        debian: DebianBase {
            release: "bookworm".into(),
            packages: vec!["python3-pip".into(), "jq".into()],
        },
        pip: pip.iter().map(|p| (*p).to_owned()).collect(),
        npm: Vec::new(),
        files: Vec::new(),
        run: run.iter().map(|r| RunStep::root(*r)).collect(),
        env: BTreeMap::from([("LANG".into(), "C.UTF-8".into())]),
        start: None,
        user: None,
        workdir: None,
    }
}

/// Builds `recipe`; its outcome and its log.
async fn build(
    manager: &SandboxManager,
    recipe: Recipe,
) -> (Result<TemplateInfo, ManagerError>, Vec<String>) {
    let (log, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let outcome = manager.build_template(recipe, log).await;
    let mut seen = Vec::new();
    while let Ok(line) = lines.try_recv() {
        seen.push(line);
    }
    (outcome, seen)
}

fn count(harness: &Harness, wanted: impl Fn(&FakeCall) -> bool) -> usize {
    harness
        .storage
        .calls()
        .iter()
        .filter(|call| wanted(call))
        .count()
}

#[tokio::test]
async fn test_a_build_runs_its_steps_and_a_rebuild_reuses_the_unchanged_ones() {
    let harness = Harness::new();
    let manager = harness.manager().await;

    let (built, log) = build(&manager, recipe("py", &["six"], &["echo done"])).await;

    let built = built.unwrap();
    assert_eq!(built.id.as_str(), "py");
    assert_eq!(built.env, vec![("LANG".to_owned(), "C.UTF-8".to_owned())]);
    assert!(
        log.iter()
            .any(|l| l == "==> step 1/3: debian bookworm (2 packages)"),
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l.starts_with("==> template py ready")),
        "{log:?}"
    );
    assert_eq!(count(&harness, |c| matches!(c, FakeCall::Bootstrap(_))), 1);
    assert_eq!(count(&harness, |c| matches!(c, FakeCall::Snapshot(..))), 2);
    // Only the template is listed; the cache's steps are hidden, and no build sandbox is left.
    let listed: Vec<String> = manager
        .templates()
        .await
        .unwrap()
        .iter()
        .map(|t| t.id.to_string())
        .collect();
    assert!(listed.contains(&"py".to_owned()));
    assert!(
        !listed.iter().any(|id| id.starts_with("build-")),
        "{listed:?}"
    );
    assert!(manager.list(&Default::default()).is_empty());

    // One more pip package: the Debian root is reused, the pip step and those after it run.
    let (rebuilt, log) = build(&manager, recipe("py2", &["six", "idna"], &["echo done"])).await;
    rebuilt.unwrap();
    assert!(
        log.iter()
            .any(|l| l.ends_with("(cached)") && l.contains("debian")),
        "{log:?}"
    );
    assert_eq!(count(&harness, |c| matches!(c, FakeCall::Bootstrap(_))), 1);
    assert_eq!(count(&harness, |c| matches!(c, FakeCall::Snapshot(..))), 4);
    let pip_runs = harness
        .runtime
        .calls()
        .iter()
        .filter(|call| matches!(call, FakeCall::Exec(_, argv) if argv.join(" ").contains("pip install")))
        .count();
    assert_eq!(pip_runs, 2);
}

#[tokio::test]
async fn test_a_failed_step_ends_the_build_with_its_output_and_no_template() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    harness.runtime.fail_execs_containing("exit 3");

    let (failed, _) = build(&manager, recipe("broken", &[], &["exit 3"])).await;

    let error = failed.unwrap_err();
    assert!(
        matches!(&error, ManagerError::BuildFailed { step, .. } if step.starts_with("run[0]")),
        "{error}"
    );
    assert!(matches!(
        manager.template(&"broken".parse().unwrap()).await,
        Err(ManagerError::TemplateNotFound { .. })
    ));
    assert!(
        manager.list(&Default::default()).is_empty(),
        "build sandbox removed"
    );

    let mut unknown = recipe("unknown", &[], &[]);
    unknown.debian.packages.push("no-such-package".into());
    let (failed, log) = build(&manager, unknown).await;
    let error = failed.unwrap_err();
    assert!(error.to_string().contains("no-such-package"), "{error}");
    assert!(log.iter().any(|l| l.contains("fake bootstrap")), "{log:?}");
}

#[tokio::test]
async fn test_bad_recipes_and_taken_names_are_refused_before_anything_runs() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let mut bad = recipe("bad", &[], &[]);
    bad.pip.push("--index-url=http://elsewhere".into());
    assert!(matches!(
        build(&manager, bad).await.0,
        Err(ManagerError::InvalidRecipe(_))
    ));
    assert!(matches!(
        build(&manager, recipe("builds", &[], &[])).await.0,
        Err(ManagerError::InvalidRecipe(_))
    ));
    let taken = build(&manager, recipe("base", &[], &[]))
        .await
        .0
        .unwrap_err();
    assert_eq!(
        taken.kind(),
        crate::error::ErrorKind::AlreadyExists,
        "{taken}"
    );
    assert_eq!(count(&harness, |c| matches!(c, FakeCall::Bootstrap(_))), 0);
}

#[tokio::test]
async fn test_a_shipped_recipe_is_built_once_rebuilt_when_it_changes_and_never_over_a_users_template()
 {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let ensure = |recipe: Recipe| {
        let manager = manager.clone();
        async move {
            let (log, _lines) = tokio::sync::mpsc::unbounded_channel();
            manager.ensure_recipe_template(recipe, log).await
        }
    };
    let derives = || count(&harness, |c| matches!(c, FakeCall::Derive(..)));

    let first = ensure(recipe("python", &["six"], &[])).await.unwrap();
    assert_eq!(
        first.built_from,
        Some(recipe("python", &["six"], &[]).validate().unwrap().digest())
    );
    assert_eq!(derives(), 1);
    // Built from the same recipe: nothing to do.
    let again = ensure(recipe("python", &["six"], &[])).await.unwrap();
    assert_eq!(again.built_from, first.built_from);
    assert_eq!(derives(), 1);
    // A changed recipe replaces it, its unchanged Debian step taken from the cache.
    let changed = ensure(recipe("python", &["six", "idna"], &[]))
        .await
        .unwrap();
    assert_ne!(changed.built_from, first.built_from);
    assert_eq!(derives(), 2);
    assert_eq!(count(&harness, |c| matches!(c, FakeCall::Bootstrap(_))), 1);

    // A template a build made records its recipe, so a rebuild may replace it...
    let (mine, _) = build(&manager, recipe("mine", &[], &["true"])).await;
    assert_eq!(
        mine.unwrap().built_from,
        Some(recipe("mine", &[], &["true"]).validate().unwrap().digest())
    );
    let (log, _lines) = tokio::sync::mpsc::unbounded_channel();
    let rebuilt = manager
        .rebuild_template(recipe("mine", &["six"], &["true"]), log)
        .await
        .unwrap();
    assert_eq!(rebuilt.id.as_str(), "mine");
    // ...but one nobody built (the base, a snapshot, an import) is never built over.
    let refused = ensure(recipe("base", &["six"], &[])).await.unwrap_err();
    assert_eq!(
        refused.kind(),
        crate::error::ErrorKind::AlreadyExists,
        "{refused}"
    );
    assert_eq!(
        manager
            .template(&"base".parse().unwrap())
            .await
            .unwrap()
            .built_from,
        None
    );
}

#[tokio::test]
async fn test_a_run_step_runs_as_its_user_in_its_directory_with_its_input_and_variables() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let mut with_context = recipe("ctx", &[], &[]);
    with_context.run = vec![
        RunStep {
            label: Some("COPY app /srv".into()),
            args: vec!["app".into(), "/srv".into()],
            stdin: Arc::from(b"an archive".as_slice()),
            workdir: Some("/srv".into()),
            env: BTreeMap::from([("GREETING".into(), "hi".into())]),
            ..RunStep::root("unpack \"$1\" \"$2\"")
        },
        RunStep {
            user: Some("user".into()),
            ..RunStep::root("make")
        },
    ];
    with_context.user = Some("root".into());
    with_context.workdir = Some("/srv".into());

    let (built, log) = build(&manager, with_context).await;

    let built = built.unwrap();
    assert_eq!(
        (built.default_user.as_str(), built.default_workdir.as_str()),
        ("root", "/srv")
    );
    assert!(
        log.iter().any(|l| l.contains("run[0]: COPY app /srv")),
        "{log:?}"
    );
    let requests = harness.runtime.exec_requests();
    let copy = requests
        .iter()
        .find(|r| r.argv.get(2).is_some_and(|s| s.starts_with("unpack")))
        .unwrap();
    assert_eq!(copy.argv[3..], ["sh", "app", "/srv"]);
    assert_eq!(copy.stdin, b"an archive");
    assert_eq!(copy.user, crate::exec::ExecUser::Root);
    assert_eq!(copy.cwd.as_deref(), Some("/srv"));
    assert!(copy.env.contains(&("GREETING".to_owned(), "hi".to_owned())));
    let make = requests
        .iter()
        .find(|r| r.argv.get(2).is_some_and(|s| s == "make"))
        .unwrap();
    assert_eq!(make.user, crate::exec::ExecUser::Named("user".into()));
    assert_eq!(make.cwd.as_deref(), Some("/"));
}

#[tokio::test]
async fn test_build_steps_unused_for_a_while_are_pruned_and_rebuilt_when_needed() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let steps = || {
        harness
            .storage
            .calls()
            .iter()
            .filter(|call| matches!(call, FakeCall::Snapshot(..)))
            .count()
    };
    build(&manager, recipe("old", &["six"], &["echo old"]))
        .await
        .0
        .unwrap();
    // Right after a build nothing is old enough, whatever is asked.
    assert!(
        manager
            .prune_build_cache(Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );

    harness.clock.advance(Duration::from_secs(2 * 3600));
    // A second build reuses the Debian and pip steps (marking them used), not the run step.
    build(&manager, recipe("new", &["six"], &["echo new"]))
        .await
        .0
        .unwrap();
    let pruned = manager
        .prune_build_cache(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(pruned.len(), 1, "only old's run step: {pruned:?}");
    assert!(
        manager.template(&"old".parse().unwrap()).await.is_ok(),
        "templates stay"
    );

    // Rebuilding old runs its pruned step again, and only it.
    manager
        .delete_template(&"old".parse().unwrap())
        .await
        .unwrap();
    let before = steps();
    build(&manager, recipe("old", &["six"], &["echo old"]))
        .await
        .0
        .unwrap();
    assert_eq!(steps() - before, 1);
}
