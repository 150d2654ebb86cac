//! envd inside real sandboxes, driven by the unmodified E2B Python SDK (`tests/sdk/*.py`)
//! through the gateway, served in process over the test backends. Root only; run with
//! `COPPICE_PRIVILEGED_TESTS=1 cargo test -p coppice-tests --test envd -- --ignored`, with
//! `COPPICE_E2B_PYTHON` naming a Python that has the pinned `e2b` package (`scripts/test.sh`
//! installs one into a venv).
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use coppice_core::manager::ListFilter;
use coppice_gateway::auth::ApiKeys;
use coppice_gateway::{AppState, router};
use coppice_tests::harness::ManagerEnv;

const DAEMON: &str = env!("CARGO_BIN_EXE_coppice-test-daemon");
const API_KEY: &str = "coppice-test";

async fn env() -> ManagerEnv {
    coppice_core::require_privileged!();
    ManagerEnv::start(Path::new(DAEMON), true).await.unwrap()
}

fn python() -> PathBuf {
    let python = std::env::var_os("COPPICE_E2B_PYTHON").expect(
        "COPPICE_E2B_PYTHON must name a Python with the pinned e2b SDK (scripts/test.sh sets it up)",
    );
    PathBuf::from(python)
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk").join(name)
}

/// Serves the gateway over `env`'s manager on a loopback port; returns its URL.
async fn gateway(env: &ManagerEnv) -> String {
    let state = AppState {
        manager: env.manager.clone(),
        api_keys: ApiKeys::new(vec![API_KEY.to_owned()]),
        envd_version: coppice_envd::ENVD_VERSION,
        envd_init: Arc::new(coppice_gateway::envd::UnixEnvdInit),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(coppice_gateway::serve(
        listener,
        router(state),
        std::future::pending::<()>(),
    ));
    url
}

/// Runs an SDK script against the gateway at `url`; returns whether it passed, and its output.
async fn run_sdk_script(name: &str, url: &str) -> (bool, String) {
    let output = tokio::process::Command::new(python())
        .arg(script(name))
        .env("E2B_API_KEY", API_KEY)
        .env("E2B_API_URL", url)
        .env("E2B_SANDBOX_URL", url)
        .env_remove("E2B_DEBUG")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{name}: {}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success() && text.contains("ALL PASSED"), text)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "privileged: needs root (namespaces, mounts, cgroups) and the E2B SDK venv"]
async fn test_e2b_python_sdk_drives_envd_inside_a_sandbox() {
    let env = env().await;
    let url = gateway(&env).await;
    let (passed, output) = run_sdk_script("envd_sdk.py", &url).await;

    // What the SDK wrote as the default user is owned by that user on disk too (sandbox uid
    // 1000 is host uid 201000), seen from the host side of the sandbox's upper layer.
    let mut filter = ListFilter::default();
    filter.metadata.insert("suite".into(), "envd".into());
    let sandboxes = env.manager.list(&filter);
    let owner = sandboxes.first().map(|sandbox| {
        let upper = env
            .paths
            .data_dir
            .join("storage/sandboxes")
            .join(sandbox.id.as_str())
            .join("upper/home/user/sdk/m1.txt");
        std::fs::metadata(&upper).map(|m| m.uid())
    });
    // Killed before asserting, so that a failure leaves no sandbox running.
    for sandbox in env.manager.list(&ListFilter::default()) {
        env.manager.kill(&sandbox.id).await.unwrap();
    }
    assert!(passed, "{output}");
    assert_eq!(owner.unwrap().unwrap(), 201_000);
}
