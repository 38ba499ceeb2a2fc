//! `locald`: run commands and containers on any laptop, without Docker Desktop.
//!
//! The binary is thin: the command line, its subcommands and the daemon live in the
//! `locald_cli` library, which hands each subcommand to the `locald` SDK.

use std::process::ExitCode;

fn main() -> ExitCode {
    // `locald __locald-shim ...` is the container shim: it must run before anything
    // else starts a thread.
    locald::native::run_if_requested();
    locald_cli::main()
}
