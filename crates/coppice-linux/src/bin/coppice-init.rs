//! `coppice-init`: started by the Linux runtime to build a sandbox; becomes its PID 1.
#![forbid(unsafe_code)]

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    coppice_linux::init_main(std::env::args_os().skip(1))
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    #[allow(clippy::print_stderr)]
    {
        eprintln!("coppice-init: the namespace runtime needs Linux");
    }
    std::process::ExitCode::FAILURE
}
