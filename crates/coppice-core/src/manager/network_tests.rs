//! Replacing a sandbox's network policy over the fake backends.

use std::time::Duration;

use super::tests::{Harness, spec};
use super::*;
use crate::spec::NetworkSpec;
use crate::state::PauseMode;

fn air_gapped() -> NetworkSpec {
    NetworkSpec {
        allow_internet: false,
        allow_out: vec!["10.0.0.0/8".into()],
        deny_out: Vec::new(),
    }
}

#[tokio::test]
async fn test_update_reaches_the_backend_and_is_persisted() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();

    let updated = manager
        .update_network(&sandbox.id, air_gapped())
        .await
        .unwrap();

    assert_eq!(updated.spec.network, air_gapped());
    assert_eq!(harness.net.spec_of(&sandbox.id), Some(air_gapped()));
    assert_eq!(manager.get(&sandbox.id).unwrap().spec.network, air_gapped());
    let events = manager.events(&sandbox.id).await.unwrap();
    assert!(events.iter().any(|e| e.kind == EventKind::NetworkChanged));
}

#[tokio::test]
async fn test_refused_update_changes_nothing() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();
    harness.net.fail_next("update");

    manager
        .update_network(&sandbox.id, air_gapped())
        .await
        .unwrap_err();

    assert_eq!(
        manager.get(&sandbox.id).unwrap().spec.network,
        NetworkSpec::default()
    );
    assert_eq!(
        harness.net.spec_of(&sandbox.id),
        Some(NetworkSpec::default())
    );
}

#[tokio::test]
async fn test_filesystem_paused_sandbox_gets_the_policy_when_it_resumes() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();
    manager
        .pause(&sandbox.id, PauseMode::Filesystem)
        .await
        .unwrap();

    manager
        .update_network(&sandbox.id, air_gapped())
        .await
        .unwrap();
    assert!(!harness.net.holds(&sandbox.id));

    manager
        .resume(
            &sandbox.id,
            ResumeOptions {
                timeout: Duration::from_secs(60),
                keep_memory: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(harness.net.spec_of(&sandbox.id), Some(air_gapped()));
}

#[tokio::test]
async fn test_update_of_a_killed_sandbox_is_not_found() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let sandbox = manager.create(spec()).await.unwrap();
    manager.kill(&sandbox.id).await.unwrap();

    let error = manager
        .update_network(&sandbox.id, air_gapped())
        .await
        .unwrap_err();

    assert!(
        matches!(error, ManagerError::SandboxNotFound { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn test_private_sandboxes_get_their_own_traffic_token() {
    let harness = Harness::new();
    let manager = harness.manager().await;
    let public = manager.create(spec()).await.unwrap();
    let mut private_spec = spec();
    private_spec.public_traffic = false;
    let first = manager.create(private_spec.clone()).await.unwrap();
    let second = manager.create(private_spec).await.unwrap();

    assert_eq!(public.traffic_token, None);
    let (Some(first), Some(second)) = (first.traffic_token, second.traffic_token) else {
        panic!("private sandboxes need a traffic token");
    };
    assert_ne!(first, second);
    assert_eq!(first.expose().len(), 64);
}
