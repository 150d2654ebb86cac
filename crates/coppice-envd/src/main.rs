//! `coppice-envd`: the in-sandbox daemon speaking E2B's envd protocol (see `cli`).

fn main() -> std::process::ExitCode {
    coppice_envd::cli::main(std::env::args_os())
}
