//! envd inside real sandboxes, driven by the unmodified E2B Python SDK (`tests/sdk/*.py`)
//! through a stand-in control plane. Root only; run with `COPPICE_PRIVILEGED_TESTS=1 cargo
//! test -p coppice-tests --test envd -- --ignored`, with `COPPICE_E2B_PYTHON` naming a Python
//! that has the pinned `e2b` package (`scripts/test.sh` installs one into a venv).
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use coppice_core::SandboxSpec;
use coppice_tests::e2b_stub;
use coppice_tests::harness::ManagerEnv;

const DAEMON: &str = env!("CARGO_BIN_EXE_coppice-test-daemon");
const TOKEN: &str = "sdk-test-token";

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

/// Runs an SDK script against `stub`; returns whether it passed, and its output.
async fn run_sdk_script(name: &str, stub: &e2b_stub::E2bStub, token: &str) -> (bool, String) {
    let output = tokio::process::Command::new(python())
        .arg(script(name))
        .env("E2B_API_KEY", "coppice-test")
        .env("E2B_API_URL", &stub.api_url)
        .env("E2B_SANDBOX_URL", &stub.sandbox_url)
        .env("COPPICE_TEST_ENVD_TOKEN", token)
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
    let sandbox = env
        .manager
        .create(SandboxSpec::new("base".parse().unwrap()))
        .await
        .unwrap();
    let endpoints = env.manager.endpoints(&sandbox.id).unwrap();
    let stub = e2b_stub::start(
        sandbox.id.as_str(),
        &endpoints.envd_socket,
        TOKEN,
        coppice_envd::ENVD_VERSION,
    )
    .await
    .unwrap();
    let (passed, output) = run_sdk_script("envd_sdk.py", &stub, TOKEN).await;

    // What the SDK wrote as the default user is owned by that user on disk too (sandbox uid
    // 1000 is host uid 201000), seen from the host side of the sandbox's upper layer.
    let upper = env
        .paths
        .data_dir
        .join("storage/sandboxes")
        .join(sandbox.id.as_str())
        .join("upper/home/user/sdk/m1.txt");
    let owner = std::fs::metadata(&upper).map(|m| m.uid());
    // Killed before asserting, so that a failure leaves no sandbox running.
    env.manager.kill(&sandbox.id).await.unwrap();
    assert!(passed, "{output}");
    assert_eq!(owner.unwrap(), 201_000);
}
