//! `coppiced` started for real: embedded defaults plus a private data dir, `/health` answers,
//! the base template is built on first start and reused on the second. Root only; run with
//! `COPPICE_PRIVILEGED_TESTS=1 cargo test -p coppice-gateway --test privileged -- --ignored`.
#![cfg(target_os = "linux")]
// Test helpers outside `#[test]` functions unwrap too: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The SDK suites' PASS lines are the test's report (shown with --nocapture).
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

mod daemon;

use daemon::{
    API_KEY, call, e2b_python, finish_suite, free_port, kill_all_sandboxes, passed_suite,
    run_sdk_step, sdk_dir, sdk_env, start, start_with, wait_healthy,
};

#[test]
#[ignore = "privileged: starts coppiced, which builds a template and checks cgroups"]
fn test_coppiced_starts_with_defaults_and_answers_health() {
    coppice_core::require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let daemon = start(dir.path(), port);

    let response = wait_healthy(port);

    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("Health check successful"), "{response}");
    assert!(dir.path().join("storage/templates/base.json").is_file());
    assert!(dir.path().join("state.db").is_file());
    drop(daemon);
}

#[test]
#[ignore = "privileged: starts coppiced, which builds a template and checks cgroups"]
fn test_coppiced_restart_reuses_the_base_template() {
    coppice_core::require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let first = start(dir.path(), port);
    wait_healthy(port);
    drop(first);
    let template = std::fs::read(dir.path().join("storage/templates/base.json")).unwrap();

    let port = free_port();
    let _second = start(dir.path(), port);
    wait_healthy(port);

    assert_eq!(
        std::fs::read(dir.path().join("storage/templates/base.json")).unwrap(),
        template
    );
}

/// Runs the Python SDK suite `script` (in `tests/sdk`) against a fresh coppiced.
fn run_python_suite(script: &str) {
    let mut command = Command::new(e2b_python());
    command.arg(sdk_dir().join(script));
    run_suite_against_coppiced(command);
}

#[test]
#[ignore = "privileged: builds templates from recipes (the Debian archive, PyPI) in a real coppiced; needs mmdebstrap and the E2B SDK venv"]
fn test_templates_built_from_recipes_reuse_their_cached_steps() {
    coppice_core::require_privileged!();
    run_python_suite("template_build_sdk.py");
}

#[test]
#[ignore = "privileged: builds templates through E2B's template-build API (the Debian archive) in a real coppiced; needs mmdebstrap and the E2B SDK venv"]
fn test_the_sdks_template_build_makes_templates_from_their_steps() {
    coppice_core::require_privileged!();
    run_python_suite("template_build_e2b_sdk.py");
}

#[test]
#[ignore = "privileged: builds the shipped templates from their recipes (the Debian archive) in a real coppiced and drives them with both SDKs; needs mmdebstrap, the E2B SDK venv and tests/sdk/node_modules"]
fn test_shipped_templates_are_built_from_their_recipes_and_serve_both_sdks() {
    coppice_core::require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let flags = ["--shipped-templates", "build"];
    let daemon = start_with(dir.path(), port, &flags);
    wait_healthy(port);
    let url = format!("http://127.0.0.1:{port}");
    let python = |script: &str| {
        let mut command = Command::new(e2b_python());
        command.arg(sdk_dir().join(script));
        command
    };
    let node = |script: &str| {
        let mut command = Command::new("node");
        command.arg(script).current_dir(sdk_dir());
        command
    };
    // The first waits for the builds; the code interpreter's own suites then run against
    // the built template.
    let suites = [
        python("shipped_templates_sdk.py"),
        python("code_interpreter_sdk.py"),
        node("code_interpreter_sdk.mjs"),
        node("shipped_templates_sdk.mjs"),
    ];
    for mut suite in suites {
        let output = suite
            .envs(sdk_env(&url))
            .env_remove("E2B_DEBUG")
            .output()
            .unwrap();
        if !output.status.success() {
            finish_suite(port, daemon, &output);
            unreachable!("finish_suite fails a failed suite");
        }
        println!("{}", passed_suite(&output));
    }
    let built = call(port, "GET", "/templates/code-interpreter-v1");
    kill_all_sandboxes(port);
    drop(daemon);

    // At the next start neither the stand-in nor a rebuild takes the built template's place.
    let port = free_port();
    let again = start_with(dir.path(), port, &flags);
    wait_healthy(port);
    // Both recipes looked at again (the log is shared with the first start, which built).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while again
        .log_tail(400)
        .matches("template up to date with its recipe")
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the second start did not find both templates up to date:\n{}",
            again.log_tail(60)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let kept = call(port, "GET", "/templates/code-interpreter-v1");
    let identity = |response: &str| {
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        (value["builtFrom"].clone(), value["createdAt"].clone())
    };
    let (built_from, _) = identity(&built);
    assert!(
        built_from
            .as_str()
            .is_some_and(|b| b.starts_with("recipe:")),
        "{built}"
    );
    assert_eq!(identity(&kept), identity(&built));
}

#[test]
#[ignore = "privileged: imports an OCI image into a real coppiced and boots sandboxes from it; needs the E2B SDK venv"]
fn test_templates_imported_from_oci_images_boot_with_the_image_configuration() {
    coppice_core::require_privileged!();
    // The image carries the shared libraries coppice's own binaries (init and envd, bound
    // into every sandbox) load from the sandbox's root.
    let daemon = Path::new(env!("CARGO_BIN_EXE_coppiced"));
    let binaries: Vec<String> = ["coppiced", "coppice-init", "coppice-envd"]
        .iter()
        .map(|name| daemon.with_file_name(name))
        .filter(|path| path.is_file())
        .map(|path| path.display().to_string())
        .collect();
    let mut command = Command::new(e2b_python());
    command
        .arg(sdk_dir().join("template_import_sdk.py"))
        .env("COPPICE_BINARIES", binaries.join(":"));
    run_suite_against_coppiced(command);
}

#[test]
#[ignore = "privileged: starts coppiced and sandboxes; needs the E2B SDK venv (COPPICE_E2B_PYTHON)"]
fn test_e2b_python_sdk_runs_against_coppiced() {
    coppice_core::require_privileged!();
    run_python_suite("gateway_sdk.py");
}

#[test]
#[ignore = "privileged: starts coppiced and sandboxes; needs the E2B SDK venv (COPPICE_E2B_PYTHON)"]
fn test_e2b_python_sdk_pauses_and_resumes_sandboxes() {
    coppice_core::require_privileged!();
    run_python_suite("lifecycle_sdk.py");
}

#[test]
#[ignore = "privileged: starts coppiced and sandboxes; needs the E2B SDK venv (COPPICE_E2B_PYTHON)"]
fn test_e2b_python_sdk_keeps_volume_data_across_sandboxes() {
    coppice_core::require_privileged!();
    run_python_suite("volumes_sdk.py");
}

#[test]
#[ignore = "privileged: starts coppiced and sandboxes; needs the E2B SDK venv (COPPICE_E2B_PYTHON)"]
fn test_directory_snapshots_are_captured_downloaded_and_restored() {
    coppice_core::require_privileged!();
    run_python_suite("dir_snapshots_sdk.py");
}

#[test]
#[ignore = "privileged: starts coppiced and a sandbox; needs the E2B SDK venv with e2b-code-interpreter"]
fn test_code_interpreter_answers_the_e2b_code_interpreter_sdk() {
    coppice_core::require_privileged!();
    run_python_suite("code_interpreter_sdk.py");
}

#[test]
#[ignore = "privileged: starts coppiced and a sandbox; needs the E2B JS SDKs in tests/sdk/node_modules"]
fn test_code_interpreter_answers_the_e2b_code_interpreter_js_sdk() {
    coppice_core::require_privileged!();
    assert!(
        sdk_dir()
            .join("node_modules/@e2b/code-interpreter")
            .is_dir(),
        "the pinned @e2b/code-interpreter is missing: run `npm ci` in tests/sdk (scripts/test.sh does)"
    );
    let mut command = Command::new("node");
    command
        .arg("code_interpreter_sdk.mjs")
        .current_dir(sdk_dir());
    run_suite_against_coppiced(command);
}

#[test]
#[ignore = "privileged: starts coppiced and sandboxes; needs the E2B JS SDK in tests/sdk/node_modules"]
fn test_e2b_js_sdk_runs_against_coppiced() {
    coppice_core::require_privileged!();
    assert!(
        sdk_dir().join("node_modules/e2b").is_dir(),
        "the pinned e2b JS SDK is missing: run `npm ci` in tests/sdk (scripts/test.sh does)"
    );
    let mut command = Command::new("node");
    command.arg("gateway_sdk.mjs").current_dir(sdk_dir());
    run_suite_against_coppiced(command);
}

/// Runs an SDK suite against a fresh coppiced; fails with its output unless all passed.
fn run_suite_against_coppiced(mut command: Command) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let daemon = start(dir.path(), port);
    wait_healthy(port);
    let url = format!("http://127.0.0.1:{port}");
    let output = command
        .envs(sdk_env(&url))
        .env_remove("E2B_DEBUG")
        .output()
        .unwrap();
    // Sandboxes outlive the daemon by design: a failed run must not leave any behind.
    println!("{}", finish_suite(port, daemon, &output));
}

#[test]
#[ignore = "privileged: SIGKILLs a coppiced with live sandboxes; needs the E2B SDK venv"]
fn test_sandboxes_survive_sigkill_of_coppiced_mid_stream() {
    coppice_core::require_privileged!();
    let python = e2b_python();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut daemon = start(dir.path(), port);
    wait_healthy(port);
    let url = format!("http://127.0.0.1:{port}");
    let script = sdk_dir().join("gateway_restart.py");
    let mut setup = Command::new(&python)
        .arg(&script)
        .arg("setup")
        .envs(sdk_env(&url))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(setup.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    // The command is streaming through the daemon right now.
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    let _ = setup.kill();
    let _ = setup.wait();
    let state: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(state.first(), Some(&"STATE"), "setup printed {line:?}");
    assert_eq!(state.len(), 5, "setup printed {line:?}");

    let restarted = start(dir.path(), port);
    wait_healthy(port);
    let output = run_sdk_step(&script, "verify", &state[1..], &url);
    finish_suite(port, restarted, &output);
}

/// Runs the `coppice` CLI against the gateway at `port`, with `stdin` as its input.
fn coppice(port: u16, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let binary = Path::new(env!("CARGO_BIN_EXE_coppiced")).with_file_name("coppice");
    assert!(
        binary.is_file(),
        "{} is missing: build the CLI first (`cargo build -p coppice-cli`; scripts/test.sh does)",
        binary.display()
    );
    let mut child = Command::new(binary)
        .args([
            "--api-url",
            &format!("http://127.0.0.1:{port}"),
            "--api-key",
            API_KEY,
        ])
        .args(args)
        .env_remove("E2B_SANDBOX_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
#[ignore = "privileged: starts coppiced and sandboxes, drives them with the coppice CLI"]
fn test_coppice_cli_end_to_end() {
    coppice_core::require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let daemon = start(dir.path(), port);
    wait_healthy(port);

    let created = coppice(port, &["sandbox", "create", "--metadata", "via=cli"], b"");
    assert!(created.status.success(), "{}", text(&created.stderr));
    let id = text(&created.stdout).trim().to_owned();
    let listed = coppice(port, &["sandbox", "list"], b"");
    assert!(text(&listed.stdout).contains(&id) && text(&listed.stdout).contains("via=cli"));
    let listed = coppice(port, &["--json", "sandbox", "list"], b"");
    let json: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(json[0]["sandboxID"], id.as_str());

    let network = coppice(
        port,
        &[
            "sandbox",
            "network",
            &id,
            "--deny-out",
            "192.0.2.0/24",
            "--no-internet",
        ],
        b"",
    );
    assert!(network.status.success(), "{}", text(&network.stderr));
    assert!(text(&network.stdout).contains("internet off, 0 allowed, 1 denied"));
    let refused = coppice(
        port,
        &["sandbox", "network", &id, "--allow-out", "no/such"],
        b"",
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("allowOut"),
        "{}",
        text(&refused.stderr)
    );
    let reopened = coppice(port, &["sandbox", "network", &id], b"");
    assert!(reopened.status.success(), "{}", text(&reopened.stderr));

    let templates = coppice(port, &["template", "list"], b"");
    assert!(
        text(&templates.stdout)
            .lines()
            .any(|l| l.starts_with("base ")),
        "{}",
        text(&templates.stdout)
    );
    let base = coppice(port, &["template", "info", "base"], b"");
    assert!(
        text(&base.stdout).contains("defaultUser     user"),
        "{}",
        text(&base.stdout)
    );
    let missing = coppice(
        port,
        &["template", "import", "/no/such/layout", "--name", "img"],
        b"",
    );
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("not found"),
        "{}",
        text(&missing.stderr)
    );
    let untaggable = coppice(port, &["template", "tag", "base", "v1"], b"");
    assert!(!untaggable.status.success());
    assert!(
        text(&untaggable.stderr).contains("only builds are tagged"),
        "{}",
        text(&untaggable.stderr)
    );
    let tags = coppice(port, &["template", "tags", "base"], b"");
    assert!(
        text(&tags.stdout).lines().any(|l| l.starts_with("latest ")),
        "{}",
        text(&tags.stdout)
    );
    let log = coppice(port, &["template", "log", "base"], b"");
    assert!(
        log.status.success() && log.stdout.is_empty(),
        "no build made base"
    );
    let unknown = coppice(port, &["template", "delete", "nope"], b"");
    assert!(!unknown.status.success());
    assert!(
        text(&unknown.stderr).contains("404"),
        "{}",
        text(&unknown.stderr)
    );

    let exec = coppice(
        port,
        &[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ],
        b"",
    );
    assert_eq!(exec.status.code(), Some(7));
    assert_eq!(
        (text(&exec.stdout), text(&exec.stderr)),
        ("out\n".to_owned(), "err\n".to_owned())
    );

    let local = dir.path().join("local.txt");
    std::fs::write(&local, "from the host\n").unwrap();
    let remote = format!("{id}:/home/user/cli/x.txt");
    assert!(
        coppice(
            port,
            &["files", "cp", local.to_str().unwrap(), &remote],
            b""
        )
        .status
        .success()
    );
    let cat = coppice(port, &["files", "cat", &id, "/home/user/cli/x.txt"], b"");
    assert_eq!(text(&cat.stdout), "from the host\n");
    let ls = coppice(port, &["files", "ls", &id, "/home/user/cli"], b"");
    assert!(
        text(&ls.stdout).contains("/home/user/cli/x.txt"),
        "{}",
        text(&ls.stdout)
    );
    let back = dir.path().join("back.txt");
    assert!(
        coppice(port, &["files", "cp", &remote, back.to_str().unwrap()], b"")
            .status
            .success()
    );
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "from the host\n");

    let snapshot = coppice(
        port,
        &["dir-snapshot", "create", &id, "/home/user/cli"],
        b"",
    );
    assert!(snapshot.status.success(), "{}", text(&snapshot.stderr));
    let snapshot_id = text(&snapshot.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let restored = coppice(
        port,
        &[
            "dir-snapshot",
            "restore",
            &snapshot_id,
            &id,
            "--path",
            "/home/user/cli-copy",
        ],
        b"",
    );
    assert_eq!(
        text(&restored.stdout),
        format!("restored 1 entries into {id}\n"),
        "{}",
        text(&restored.stderr)
    );
    let copy = coppice(
        port,
        &["files", "cat", &id, "/home/user/cli-copy/x.txt"],
        b"",
    );
    assert_eq!(text(&copy.stdout), "from the host\n");
    let tar = dir.path().join("cli.tar");
    let download = coppice(
        port,
        &[
            "dir-snapshot",
            "download",
            &snapshot_id,
            tar.to_str().unwrap(),
        ],
        b"",
    );
    assert!(download.status.success(), "{}", text(&download.stderr));
    assert!(std::fs::metadata(&tar).unwrap().len() >= 1024);
    assert!(
        coppice(port, &["dir-snapshot", "delete", &snapshot_id], b"")
            .status
            .success()
    );
    let volume = coppice(port, &["volume", "create", "cli-vol"], b"");
    assert!(volume.status.success(), "{}", text(&volume.stderr));
    let volume_id = text(&volume.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let volumes = coppice(port, &["volume", "list"], b"");
    assert!(
        text(&volumes.stdout).contains("cli-vol"),
        "{}",
        text(&volumes.stdout)
    );
    assert!(
        coppice(port, &["volume", "delete", &volume_id], b"")
            .status
            .success()
    );

    let shell = coppice(port, &["shell", &id], b"echo shell-$((6*7)); exit 3\n");
    assert_eq!(shell.status.code(), Some(3), "{}", text(&shell.stderr));
    assert!(
        text(&shell.stdout).contains("shell-42"),
        "{}",
        text(&shell.stdout)
    );

    assert!(
        coppice(port, &["sandbox", "timeout", &id, "600"], b"")
            .status
            .success()
    );
    let info = coppice(port, &["--json", "sandbox", "info", &id], b"");
    let json: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(json["sandboxID"], id.as_str());
    let logs = coppice(port, &["logs", &id], b"");
    assert!(
        text(&logs.stdout).contains("Created"),
        "{}",
        text(&logs.stdout)
    );

    let paused = coppice(port, &["sandbox", "pause", &id], b"");
    assert!(paused.status.success(), "{}", text(&paused.stderr));
    let info = coppice(port, &["--json", "sandbox", "info", &id], b"");
    let json: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(json["state"], "paused");
    let again = coppice(port, &["sandbox", "pause", &id], b"");
    assert!(!again.status.success() && text(&again.stderr).contains("409"));
    let resumed = coppice(port, &["sandbox", "resume", &id], b"");
    assert_eq!(text(&resumed.stdout), format!("resumed {id}\n"));

    let snapshot = coppice(
        port,
        &["sandbox", "snapshot", &id, "--name", "cli-snap"],
        b"",
    );
    assert_eq!(
        text(&snapshot.stdout),
        "cli-snap\n",
        "{}",
        text(&snapshot.stderr)
    );
    let listed = coppice(port, &["sandbox", "snapshots", "--of", &id], b"");
    assert_eq!(text(&listed.stdout), "cli-snap\n");
    let forks = coppice(port, &["sandbox", "fork", &id, "--count", "2"], b"");
    assert!(forks.status.success(), "{}", text(&forks.stderr));
    let fork_ids: Vec<String> = text(&forks.stdout).lines().map(str::to_owned).collect();
    assert_eq!(fork_ids.len(), 2, "{fork_ids:?}");
    for fork in &fork_ids {
        let cat = coppice(port, &["files", "cat", fork, "/home/user/cli/x.txt"], b"");
        assert_eq!(text(&cat.stdout), "from the host\n", "fork {fork}");
    }
    assert!(
        coppice(port, &["sandbox", "delete-snapshot", "cli-snap"], b"")
            .status
            .success()
    );

    assert!(
        coppice(port, &["sandbox", "kill", &id], b"")
            .status
            .success()
    );
    let gone = coppice(port, &["sandbox", "info", &id], b"");
    assert!(
        !gone.status.success() && text(&gone.stderr).contains("404"),
        "{}",
        text(&gone.stderr)
    );
    kill_all_sandboxes(port);
    drop(daemon);
}
