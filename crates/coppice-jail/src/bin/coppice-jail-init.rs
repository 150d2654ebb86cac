//! `coppice-jail-init`: the first process of a sandbox's jail (see `coppice_jail::init_main`).

use std::process::ExitCode;

#[cfg(any(target_os = "linux", target_os = "freebsd"))]
fn main() -> ExitCode {
    coppice_jail::init_main()
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
fn main() -> ExitCode {
    #[allow(clippy::print_stderr)]
    eprintln!("coppice-jail-init runs on FreeBSD (and on Linux for tests)");
    ExitCode::FAILURE
}
