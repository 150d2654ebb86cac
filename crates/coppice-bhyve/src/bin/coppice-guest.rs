//! `coppice-guest`: the agent inside a sandbox VM (see `coppice_bhyve::guest`).

use std::process::ExitCode;

#[cfg(any(target_os = "linux", target_os = "freebsd"))]
fn main() -> ExitCode {
    coppice_bhyve::guest::guest_main(std::env::args_os())
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
fn main() -> ExitCode {
    #[allow(clippy::print_stderr)]
    eprintln!("coppice-guest runs in Linux and FreeBSD guests");
    ExitCode::FAILURE
}
