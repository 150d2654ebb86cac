//! `coppice`: the command-line client of a coppice gateway.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use coppice_cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(output) => {
            #[allow(clippy::print_stdout)]
            {
                println!("{output}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {error:#}");
            }
            ExitCode::FAILURE
        }
    }
}
