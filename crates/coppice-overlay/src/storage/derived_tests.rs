//! Templates built from sources: built once, rebuilt when the sources change, laid over the
//! base template, with their service recorded, and refused for deletion.

use std::fs;

use coppice_core::storage::{RootFs, Storage, TemplateStart};

use super::tests::{harness, sandbox_id, template_id};
use super::{SourceFile, TemplateSource};

fn source(script: &str) -> TemplateSource {
    TemplateSource {
        id: template_id("code-interpreter-v1"),
        description: "the code interpreter".into(),
        files: vec![SourceFile {
            path: "opt/coppice/server/main.py".into(),
            contents: script.as_bytes().to_vec(),
            mode: 0o644,
        }],
        start: Some(TemplateStart {
            command: "python3 -m server".into(),
            ready: Some("true".into()),
            user: None,
        }),
    }
}

fn top_layer(harness: &super::tests::Harness) -> crate::layer::LayerId {
    harness
        .storage
        .read_template(&template_id("code-interpreter-v1"))
        .unwrap()
        .layers[0]
        .clone()
}

#[test]
fn test_a_template_is_built_over_the_base_once_and_again_when_its_sources_change() {
    let harness = harness();
    let info = harness.storage.ensure_template(&source("v1")).unwrap();
    assert_eq!(
        info.start,
        Some(TemplateStart {
            command: "python3 -m server".into(),
            ready: Some("true".into()),
            user: None,
        })
    );
    let first = top_layer(&harness);
    let tree = harness.storage.layers().tree_dir(&first);
    assert_eq!(
        fs::read_to_string(tree.join("opt/coppice/server/main.py")).unwrap(),
        "v1"
    );

    harness.storage.ensure_template(&source("v1")).unwrap();
    assert_eq!(top_layer(&harness), first, "the same sources build nothing");

    // A sandbox on the first build keeps its layer through a rebuild.
    let sandbox = sandbox_id("sbx1");
    harness
        .storage
        .create_rootfs(&sandbox, &template_id("code-interpreter-v1"), 512)
        .unwrap();
    harness.storage.ensure_template(&source("v2")).unwrap();
    let second = top_layer(&harness);
    assert_ne!(second, first);
    let tree = harness.storage.layers().tree_dir(&second);
    assert_eq!(
        fs::read_to_string(tree.join("opt/coppice/server/main.py")).unwrap(),
        "v2"
    );
    assert!(
        harness.storage.layers().get(&first).is_ok(),
        "still used by sbx1"
    );
    let RootFs::Overlay { lower, .. } = harness.storage.rootfs(&sandbox).unwrap() else {
        panic!("an overlay root");
    };
    assert_eq!(lower.len(), 2, "its own layer over the base's: {lower:?}");

    harness.storage.destroy_rootfs(&sandbox).unwrap();
    harness.storage.ensure_template(&source("v2")).unwrap();
    harness.storage.prune_layers().unwrap();
    assert!(
        harness.storage.layers().get(&first).is_err(),
        "pruned once unused"
    );
}

#[test]
fn test_a_template_of_that_name_not_built_from_sources_is_never_replaced() {
    let harness = harness();
    harness.storage.ensure_base_template().unwrap();
    let sandbox = sandbox_id("sbx1");
    harness
        .storage
        .create_rootfs(&sandbox, &template_id("base"), 512)
        .unwrap();
    harness
        .storage
        .snapshot_rootfs(&sandbox, &template_id("code-interpreter-v1"))
        .unwrap();

    let refused = harness.storage.ensure_template(&source("v1")).unwrap_err();

    assert!(
        matches!(refused, crate::OverlayError::TemplateExists { .. }),
        "{refused:?}"
    );
    let kept = harness
        .storage
        .template(&template_id("code-interpreter-v1"))
        .unwrap();
    assert_eq!(
        kept.snapshot_of,
        Some(sandbox),
        "the snapshot is still there"
    );
}

#[test]
fn test_a_template_built_from_sources_cannot_be_deleted() {
    let harness = harness();
    harness.storage.ensure_template(&source("v1")).unwrap();
    let refused = harness
        .storage
        .delete_template(&template_id("code-interpreter-v1"))
        .unwrap_err();
    assert!(
        matches!(refused, crate::OverlayError::BuiltinTemplate { .. }),
        "{refused:?}"
    );
}

#[test]
fn test_a_source_path_that_leaves_the_tree_is_refused() {
    let harness = harness();
    for path in ["../escape", "/etc/passwd", "opt/../../x", ""] {
        let mut bad = source("v1");
        bad.files[0].path = path.into();
        assert!(
            harness.storage.ensure_template(&bad).is_err(),
            "{path:?} accepted"
        );
    }
    assert!(
        harness
            .storage
            .template(&template_id("code-interpreter-v1"))
            .is_err(),
        "no half-made template is listed"
    );
}

#[test]
fn test_a_derived_template_shares_its_parents_layers_with_its_own_environment_and_service() {
    let harness = harness();
    let base = harness.storage.ensure_base_template().unwrap();
    let meta = coppice_core::storage::TemplateMeta {
        env: vec![("LANG".into(), "C.UTF-8".into())],
        start: Some(TemplateStart {
            command: "serve".into(),
            ready: None,
            user: None,
        }),
        default_user: Some("root".into()),
        default_workdir: Some("/srv".into()),
        built_from: None,
    };

    let derived = harness
        .storage
        .derive_template(&template_id("derived"), &base.id, &meta)
        .unwrap();

    assert_eq!(derived.env, meta.env);
    assert_eq!(derived.start, meta.start);
    assert_eq!(derived.default_user, "root");
    assert_eq!(derived.default_workdir, "/srv");
    let record = harness.storage.read_template(&derived.id).unwrap();
    let parent = harness.storage.read_template(&base.id).unwrap();
    assert_eq!(record.layers, parent.layers, "nothing copied");
    assert!(matches!(
        harness
            .storage
            .derive_template(&template_id("derived"), &base.id, &meta),
        Err(coppice_core::storage::StorageError::TemplateExists { .. })
    ));
    assert!(matches!(
        harness
            .storage
            .derive_template(&template_id("other"), &template_id("nope"), &meta),
        Err(coppice_core::storage::StorageError::TemplateNotFound { .. })
    ));
}

#[test]
fn test_a_recipe_build_replaces_the_stand_in_and_later_builds_but_never_a_users_template() {
    use coppice_core::storage::{StorageError, TemplateMeta};
    let harness = harness();
    let base = harness.storage.ensure_base_template().unwrap();
    let stand_in = harness.storage.ensure_template(&source("v1")).unwrap();
    let stand_in_layer = top_layer(&harness);
    let recipe_build = |digest: &str| TemplateMeta {
        env: vec![("MPLBACKEND".into(), "Agg".into())],
        start: None,
        built_from: Some(digest.into()),
        ..TemplateMeta::default()
    };

    assert!(
        harness.storage.delete_template(&stand_in.id).is_err(),
        "a stand-in made from sources is coppice's"
    );
    let built = harness
        .storage
        .derive_template(&stand_in.id, &base.id, &recipe_build("recipe:1"))
        .unwrap();
    assert_eq!(built.built_from.as_deref(), Some("recipe:1"));
    assert_eq!(built.env, vec![("MPLBACKEND".to_owned(), "Agg".to_owned())]);
    assert!(
        !harness.storage.layers().tree_dir(&stand_in_layer).exists(),
        "the stand-in's own layer is pruned"
    );
    // The stand-in's sources at the next start do not take the template back.
    let kept = harness.storage.ensure_template(&source("v1")).unwrap();
    assert_eq!(kept.built_from.as_deref(), Some("recipe:1"));
    // A newer recipe replaces the older build.
    let rebuilt = harness
        .storage
        .derive_template(&stand_in.id, &base.id, &recipe_build("recipe:2"))
        .unwrap();
    assert_eq!(rebuilt.built_from.as_deref(), Some("recipe:2"));
    // A plain derive never replaces it, nor does a recipe build replace a user's template.
    let plain = TemplateMeta::default();
    assert!(matches!(
        harness
            .storage
            .derive_template(&stand_in.id, &base.id, &plain),
        Err(StorageError::TemplateExists { .. })
    ));
    harness
        .storage
        .derive_template(&template_id("mine"), &base.id, &plain)
        .unwrap();
    assert!(matches!(
        harness
            .storage
            .derive_template(&template_id("mine"), &base.id, &recipe_build("recipe:3")),
        Err(StorageError::TemplateExists { .. })
    ));
    assert_eq!(
        harness
            .storage
            .template(&template_id("mine"))
            .unwrap()
            .built_from,
        None
    );
    // A recipe's build may be deleted (a shipped one comes back at the next start).
    harness.storage.delete_template(&stand_in.id).unwrap();
}
