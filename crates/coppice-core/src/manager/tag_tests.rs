//! Template tags over the fake backends: tags stand for builds, stay when the name is built
//! again, move, and go with their template; only builds are tagged.

use std::collections::BTreeMap;

use super::tests::Harness;
use super::*;
use crate::recipe::{DebianBase, Recipe, RunStep};

fn recipe(run: &str) -> Recipe {
    Recipe {
        id: "py".parse().unwrap(),
        debian: DebianBase {
            release: "bookworm".into(),
            packages: Vec::new(),
        },
        pip: Vec::new(),
        npm: Vec::new(),
        files: Vec::new(),
        run: vec![RunStep::root(run)],
        env: BTreeMap::new(),
        start: None,
        user: None,
        workdir: None,
    }
}

fn id(text: &str) -> TemplateId {
    text.parse().unwrap()
}

#[tokio::test]
async fn test_tags_stand_for_builds_and_stay_when_the_name_is_built_again() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let (log, _lines) = tokio::sync::mpsc::unbounded_channel();
    let first = manager
        .rebuild_template(recipe("one"), log.clone())
        .await
        .unwrap();

    let made = manager
        .tag_template(&id("py"), &["v1".into(), "stable".into()])
        .await
        .unwrap();
    assert_eq!(made, [id("py:v1"), id("py:stable")]);
    let second = manager.rebuild_template(recipe("two"), log).await.unwrap();
    assert_ne!(second.built_from, first.built_from);

    let tags: Vec<(String, Option<String>)> = manager
        .template_tags(&id("py"))
        .await
        .unwrap()
        .into_iter()
        .map(|(tag, template)| (tag, template.built_from))
        .collect();
    assert_eq!(
        tags,
        [
            ("latest".into(), second.built_from.clone()),
            ("stable".into(), first.built_from.clone()),
            ("v1".into(), first.built_from.clone()),
        ]
    );
    let listed: Vec<String> = manager
        .templates()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id.to_string())
        .collect();
    assert!(
        listed.contains(&"py".into()) && !listed.iter().any(|t| t.contains(':')),
        "{listed:?}"
    );

    // `latest` from a tag rolls the name back to that build.
    manager
        .tag_template(&id("py:v1"), &["latest".into()])
        .await
        .unwrap();
    assert_eq!(
        manager.template(&id("py")).await.unwrap().built_from,
        first.built_from
    );

    manager
        .untag_template(&id("py"), &["stable".into()])
        .await
        .unwrap();
    assert!(manager.template(&id("py:stable")).await.is_err());
    let latest = manager
        .untag_template(&id("py"), &["latest".into()])
        .await
        .unwrap_err();
    assert!(
        matches!(latest, ManagerError::InvalidTag { .. }),
        "{latest}"
    );
    let missing = manager
        .untag_template(&id("py"), &["nope".into()])
        .await
        .unwrap_err();
    assert_eq!(
        missing.kind(),
        crate::error::ErrorKind::NotFound,
        "{missing}"
    );

    // Each build keeps its log, and a tag its build's.
    let log = manager.template_build_log(&id("py:v1")).await.unwrap();
    assert!(
        log.iter().any(|l| l.starts_with("==> template py ready")),
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l.contains("run[0]: one")),
        "the first build's: {log:?}"
    );
    assert!(
        manager
            .template_build_log(&id("base"))
            .await
            .unwrap()
            .is_empty(),
        "no build made base"
    );

    // Deleting the template takes its tags and their logs.
    manager.delete_template(&id("py")).await.unwrap();
    assert!(manager.template(&id("py:v1")).await.is_err());
    assert_eq!(manager.inner.store.build_log(&id("py:v1")).unwrap(), None);
}

#[tokio::test]
async fn test_only_builds_are_tagged() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let refused = manager
        .tag_template(&id("base"), &["v1".into()])
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ManagerError::NotABuild { .. }),
        "{refused}"
    );
    let missing = manager
        .tag_template(&id("nope"), &["v1".into()])
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), crate::error::ErrorKind::NotFound);
    let (log, _lines) = tokio::sync::mpsc::unbounded_channel();
    manager.rebuild_template(recipe("one"), log).await.unwrap();
    let bad = manager
        .tag_template(&id("py"), &["Bad Tag".into()])
        .await
        .unwrap_err();
    assert_eq!(bad.kind(), crate::error::ErrorKind::Invalid, "{bad}");
}

#[tokio::test]
async fn test_a_tagged_build_checks_its_tags_first_and_a_shipped_name_keeps_its_latest() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let (log, _lines) = tokio::sync::mpsc::unbounded_channel();
    let bad = manager
        .rebuild_tagged_template(recipe("one"), &["Bad".into()], log.clone())
        .await
        .unwrap_err();
    assert_eq!(bad.kind(), crate::error::ErrorKind::Invalid, "{bad}");
    assert!(
        !harness
            .storage
            .calls()
            .iter()
            .any(|call| matches!(call, crate::testing::FakeCall::Bootstrap(_))),
        "nothing was built"
    );
    let built = manager
        .rebuild_tagged_template(recipe("one"), &["v1".into()], log)
        .await
        .unwrap();
    let tagged = manager.template(&id("py:v1")).await.unwrap();
    assert_eq!(tagged.built_from, built.built_from);

    // A shipped template's own name is coppice's: a tag cannot replace it.
    let mut shipped = recipe("one");
    shipped.id = id("python");
    let (log, _lines) = tokio::sync::mpsc::unbounded_channel();
    manager.ensure_recipe_template(shipped, log).await.unwrap();
    manager
        .tag_template(&id("python"), &["mine".into()])
        .await
        .unwrap();
    let refused = manager
        .tag_template(&id("python:mine"), &["latest".into()])
        .await
        .unwrap_err();
    assert_eq!(
        refused.kind(),
        crate::error::ErrorKind::Invalid,
        "{refused}"
    );
}
