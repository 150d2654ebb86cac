//! `coppice shell`: a login shell on a terminal in the sandbox, wired to this terminal (raw
//! mode while it runs, resized with it). Without a terminal on stdin, input is piped as is.

use std::io::Write;

use anyhow::Context;
use coppice_gateway::client::{Client, Output};
use rustix::termios::{self, OptionalActions, Termios};
use tokio::io::AsyncReadExt;

/// Puts stdin's terminal in raw mode until dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).context("reading the terminal's mode")?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw).context("entering raw mode")?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}

fn terminal_size() -> (u16, u16) {
    termios::tcgetwinsize(std::io::stdout())
        .ok()
        .filter(|size| size.ws_col > 0 && size.ws_row > 0)
        .map_or((80, 24), |size| (size.ws_col, size.ws_row))
}

/// Runs the shell; returns its exit code.
///
/// # Errors
/// The sandbox is unreachable or the terminal cannot be set up.
pub async fn run(client: &Client, id: &str, user: Option<&str>) -> anyhow::Result<i32> {
    let sandbox = client.attach(id).await?;
    let interactive = termios::isatty(std::io::stdin());
    let _raw = if interactive {
        Some(RawMode::enter()?)
    } else {
        None
    };
    let (cols, rows) = terminal_size();
    let (pid_sender, pid_receiver) = tokio::sync::oneshot::channel();
    let session = {
        let client = client.clone();
        let sandbox = sandbox.clone();
        let user = user.map(str::to_owned);
        let argv: Vec<String> = [
            "/usr/bin/env",
            "TERM=xterm-256color",
            "/bin/bash",
            "-i",
            "-l",
        ]
        .map(str::to_owned)
        .to_vec();
        tokio::spawn(async move {
            let mut pid_sender = Some(pid_sender);
            client
                .run(
                    &sandbox,
                    &argv,
                    user.as_deref(),
                    Some((cols, rows)),
                    |event| match event {
                        Output::Started(pid) => {
                            if let Some(sender) = pid_sender.take() {
                                let _ = sender.send(pid);
                            }
                        }
                        Output::Pty(bytes) | Output::Stdout(bytes) | Output::Stderr(bytes) => {
                            let mut out = std::io::stdout().lock();
                            let _ = out.write_all(&bytes).and_then(|()| out.flush());
                        }
                        Output::Exited(_) => {}
                    },
                )
                .await
        })
    };
    let pid = pid_receiver.await.context("the shell did not start")?;
    let input = {
        let client = client.clone();
        let sandbox = sandbox.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buffer = vec![0u8; 4096];
            while let Ok(n) = stdin.read(&mut buffer).await {
                if n == 0
                    || client
                        .send_input(&sandbox, pid, &buffer[..n], true)
                        .await
                        .is_err()
                {
                    break;
                }
            }
        })
    };
    let resize = {
        let client = client.clone();
        let sandbox = sandbox.clone();
        tokio::spawn(async move {
            let Ok(mut changes) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while changes.recv().await.is_some() {
                let (cols, rows) = terminal_size();
                let _ = client.resize(&sandbox, pid, cols, rows).await;
            }
        })
    };
    let code = session.await.context("the shell session failed")??;
    input.abort();
    resize.abort();
    Ok(if code < 0 { 128 + 9 } else { code })
}
