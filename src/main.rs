//! Thin binary: parse the command line, run, print the whole error chain, map to exit codes
//! (0 ok, 1 failure, 2 usage error from clap).

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = diffnmf::cli::Cli::parse();
    match diffnmf::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
