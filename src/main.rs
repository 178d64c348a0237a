//! Thin binary: parse the command line, run, print the whole error chain, map to exit codes
//! (0 ok, 1 failure, 2 usage error from clap; a closed output pipe ends the process by
//! SIGPIPE, like any Unix filter).

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // `diffnmf status DIR | head -1`: once `head` exits, writes to stdout fail. Rust's runtime
    // ignores SIGPIPE, so every `println!` then panics ("failed printing to stdout: Broken
    // pipe"). Restore the default action instead, so the process ends quietly as coreutils
    // do. Chosen over handling EPIPE at each print site because printing is spread over every
    // command, and a process ended this way leaves no more behind than `kill -9`, which the
    // runner recovers from anyway (stale markers and temp files of dead processes are swept
    // by the next run). Child processes get the default action from `Command` either way.
    // SAFETY: first statement of `main`, before any other thread exists; SIG_DFL is a valid
    // disposition and no handler function is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = diffnmf::cli::Cli::parse();
    match diffnmf::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
