//! A template's service over the fake backends: started and waited for at create and at a
//! reboot, and a sandbox whose service never gets ready is not handed out.

use std::time::Duration;

use super::tests::{Harness, spec};
use super::*;
use crate::state::PauseMode;
use crate::storage::TemplateStart;

fn serving(harness: &Harness) {
    harness.storage.set_start(
        &"base".parse().unwrap(),
        TemplateStart {
            command: "serve --port 49999".into(),
            ready: Some("probe 49999".into()),
            user: None,
        },
    );
}

async fn manager_waiting(harness: &Harness, timeout: Duration) -> SandboxManager {
    let config = ManagerConfig {
        monitor_interval: Duration::from_secs(3600),
        template_ready_timeout: timeout,
        ..ManagerConfig::default()
    };
    SandboxManager::start(
        config,
        harness.backends(),
        Store::in_memory().unwrap(),
        harness.clock.clone(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn test_create_starts_the_service_and_waits_until_it_is_ready() {
    let harness = Harness::new();
    serving(&harness);
    let manager = manager_waiting(&harness, Duration::from_secs(5)).await;
    harness.runtime.fail_execs_containing("probe");
    let waiter = {
        let runtime = harness.runtime.clone();
        tokio::spawn(async move {
            // Ready after a few checks.
            tokio::time::sleep(Duration::from_millis(60)).await;
            runtime.stop_failing_execs();
        })
    };

    let sandbox = manager.create(spec()).await.unwrap();
    waiter.await.unwrap();

    let execs = harness.runtime.execs(&sandbox.id);
    assert_eq!(
        execs[0],
        format!(
            "/bin/sh -c (serve --port 49999) </dev/null >>{} 2>&1 &",
            start::START_LOG
        )
    );
    let checks = execs
        .iter()
        .filter(|line| line.ends_with("probe 49999"))
        .count();
    assert!(checks >= 2, "ready checked until it passed: {execs:?}");
    assert_eq!(
        execs.len(),
        checks + 1,
        "nothing after the check passed: {execs:?}"
    );
    assert_eq!(sandbox.state, SandboxState::Running);
}

#[tokio::test]
async fn test_a_service_that_never_gets_ready_fails_the_create_and_leaves_nothing() {
    let harness = Harness::new();
    serving(&harness);
    let manager = manager_waiting(&harness, Duration::from_millis(200)).await;
    harness.runtime.fail_execs_containing("probe");

    let error = manager.create(spec()).await.unwrap_err();

    assert!(
        matches!(&error, ManagerError::TemplateNotReady { detail, .. } if detail.contains("not ready")),
        "{error:?}"
    );
    assert!(manager.list(&ListFilter::default()).is_empty());
    let created = harness.runtime.calls().iter().find_map(|call| match call {
        crate::testing::FakeCall::Create(id) => Some(id.clone()),
        _ => None,
    });
    let created = created.unwrap();
    assert!(!harness.holds_anything(&created), "rolled back");
}

#[tokio::test]
async fn test_a_reboot_starts_the_service_again_and_a_template_without_one_starts_nothing() {
    let harness = Harness::new();
    let manager = manager_waiting(&harness, Duration::from_millis(300)).await;
    let plain = manager.create(spec()).await.unwrap();
    assert!(harness.runtime.execs(&plain.id).is_empty());

    serving(&harness);
    let sandbox = manager.create(spec()).await.unwrap();
    manager
        .pause(&sandbox.id, PauseMode::Filesystem)
        .await
        .unwrap();
    let options = ResumeOptions {
        timeout: Duration::from_secs(60),
        keep_memory: None,
    };
    let resumed = manager.resume(&sandbox.id, options).await.unwrap();

    assert_eq!(resumed.outcome, ResumeOutcome::Rebooted);
    let starts = harness
        .runtime
        .execs(&sandbox.id)
        .iter()
        .filter(|line| line.contains("serve --port 49999"))
        .count();
    assert_eq!(starts, 2);

    // A service that no longer gets ready does not keep the sandbox's files from coming back.
    manager
        .pause(&sandbox.id, PauseMode::Filesystem)
        .await
        .unwrap();
    harness.runtime.fail_execs_containing("probe");
    let resumed = manager.resume(&sandbox.id, options).await.unwrap();
    assert_eq!(resumed.outcome, ResumeOutcome::Rebooted);
    assert_eq!(resumed.sandbox.state, SandboxState::Running);
}

#[tokio::test]
async fn test_a_sandbox_takes_its_template_environment_user_and_directory() {
    let harness = Harness::new();
    harness.storage.set_defaults(
        &"base".parse().unwrap(),
        "app",
        "/srv",
        &[("LANG", "C.UTF-8"), ("MODE", "template")],
    );
    let base: TemplateId = "base".parse().unwrap();
    let service = |command: &str| TemplateStart {
        command: command.into(),
        ready: None,
        user: None,
    };
    harness.storage.set_start(&base, service("serve v1"));
    let manager = harness.manager().await;
    let mut asked = spec();
    asked.env.insert("MODE".into(), "mine".into());

    let sandbox = manager.create(asked).await.unwrap();

    let runtime = harness.runtime.spec_of(&sandbox.id).unwrap();
    assert_eq!(runtime.defaults.user.as_deref(), Some("app"));
    assert_eq!(runtime.defaults.workdir.as_deref(), Some("/srv"));
    assert!(runtime.env.contains(&("LANG".into(), "C.UTF-8".into())));
    // What the caller asked for wins over the template.
    assert!(runtime.env.contains(&("MODE".into(), "mine".into())));
    assert!(!runtime.env.contains(&("MODE".into(), "template".into())));

    // A reboot keeps them, as recorded at create.
    manager
        .pause(&sandbox.id, PauseMode::Filesystem)
        .await
        .unwrap();
    // What the template is now does not change a sandbox made from it before.
    harness.storage.set_defaults(&base, "other", "/", &[]);
    harness.storage.set_start(&base, service("serve v2"));
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
    let rebooted = harness.runtime.spec_of(&sandbox.id).unwrap();
    assert_eq!(rebooted.defaults, runtime.defaults);
    assert!(rebooted.env.contains(&("LANG".into(), "C.UTF-8".into())));
    let started = |version: &str| {
        harness
            .runtime
            .execs(&sandbox.id)
            .iter()
            .filter(|line| line.contains(&format!("serve {version}")))
            .count()
    };
    assert_eq!((started("v1"), started("v2")), (2, 0));
}

#[tokio::test]
async fn test_a_service_with_its_own_user_runs_as_that_user_and_group() {
    let harness = Harness::new();
    let base: TemplateId = "base".parse().unwrap();
    harness.storage.set_defaults(&base, "app", "/srv", &[]);
    harness.storage.set_start(
        &base,
        TemplateStart {
            command: "serve".into(),
            ready: Some("probe".into()),
            user: Some("app:staff".into()),
        },
    );
    let manager = harness.manager().await;

    manager.create(spec()).await.unwrap();

    let requests = harness.runtime.exec_requests();
    let by = |needle: &str| {
        requests
            .iter()
            .find(|r| r.argv.join(" ").contains(needle))
            .map(|r| (r.user.clone(), r.cwd.clone()))
    };
    let expected = Some((
        crate::exec::ExecUser::Named("app:staff".into()),
        Some("/srv".into()),
    ));
    assert_eq!(by("serve"), expected);
    assert_eq!(by("probe"), expected, "its ready check too");
}
