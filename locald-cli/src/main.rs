//! `locald`: run commands and containers on any laptop, without Docker Desktop.
//!
//! The binary is thin: it parses the command line, sets up logging and hands each
//! subcommand to the `locald` SDK.

use std::process::ExitCode;

mod cli;
mod cmd;

fn main() -> ExitCode {
    // `locald __locald-shim ...` is the container shim: it must run before anything
    // else starts a thread.
    locald::native::run_if_requested();
    cli::main()
}
