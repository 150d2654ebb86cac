//! The real `coppice-jail-init` binary, started as the jail runtime starts it but without a
//! jail (Linux cannot make one): launch channel on standard input, descriptors passed, then
//! the control channel and envd as the runtime uses them.

use std::fs;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coppice_core::exec::{ExecRequest, ExitStatus};
use coppice_init::client::{self, ControlError};
use coppice_jail::launch::{self, InitReport, JAIL_INIT_VERSION, JailInitConfig};

/// Kills the init's whole session (it and envd) when the test ends.
struct Session(Child);

impl Drop for Session {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(envd_args: Option<Vec<String>>) -> JailInitConfig {
    JailInitConfig {
        version: JAIL_INIT_VERSION,
        sandbox_id: "a1".into(),
        env: vec![("MARK".into(), "from-the-config".into())],
        exec_output_limit: 1024,
        envd_args,
    }
}

fn spawn_init() -> (Session, std::os::fd::OwnedFd) {
    let (runtime_end, init_end) = launch::channel().expect("a launch channel");
    let child = Command::new(env!("CARGO_BIN_EXE_coppice-jail-init"))
        .stdin(Stdio::from(init_end))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the init binary starts");
    (Session(child), runtime_end)
}

fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn test_the_init_serves_commands_and_runs_envd_from_passed_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let control_path = dir.path().join("control.sock");
    let control = coppice_init::envd::bind_private(&control_path).unwrap();
    let envd_listener = coppice_init::envd::bind_private(&dir.path().join("envd.sock")).unwrap();
    // A stand-in envd: the shell, run from its descriptor, proving it got the config's
    // environment and its listener as standard input.
    let envd_binary = fs::File::open("/bin/sh").unwrap();
    let marker = dir.path().join("envd-ran");
    let script = format!(
        "echo \"$MARK $(readlink /proc/self/fd/0 | cut -c1-6)\" > {}; exec sleep 60",
        marker.display()
    );
    let (_session, channel) = spawn_init();
    launch::send_config(
        &channel,
        &config(Some(vec!["-c".into(), script])),
        &[control.as_fd(), envd_listener.as_fd(), envd_binary.as_fd()],
    )
    .unwrap();
    assert_eq!(
        launch::receive_report(&channel, Duration::from_secs(10)).unwrap(),
        InitReport::Ready
    );
    drop((control, envd_listener, envd_binary));

    client::ping(&control_path, Duration::from_secs(5)).unwrap();
    let outcome = client::exec(
        &control_path,
        &ExecRequest::new(["sh", "-c", "echo out $MARK; echo err >&2; exit 3"]),
        1024,
    )
    .unwrap();
    assert_eq!(outcome.status, ExitStatus::Code(3));
    assert_eq!(outcome.stdout, b"out from-the-config\n");
    assert_eq!(outcome.stderr, b"err\n");

    let error =
        client::exec(&control_path, &ExecRequest::new(["/no/such/program"]), 1024).unwrap_err();
    assert!(matches!(error, ControlError::Refused { .. }), "{error:?}");

    assert_eq!(wait_for_file(&marker), "from-the-config socket\n");
}

#[test]
fn test_a_launch_message_without_its_descriptors_is_reported_as_a_failure() {
    let (mut session, channel) = spawn_init();
    launch::send_config(&channel, &config(Some(vec![])), &[]).unwrap();
    match launch::receive_report(&channel, Duration::from_secs(10)).unwrap() {
        InitReport::Failed { error } => {
            assert!(error.contains("0 descriptors"), "{error}");
        }
        InitReport::Ready => panic!("an init without a control socket reported ready"),
    }
    let status = session.0.wait().unwrap();
    assert!(!status.success());
}
