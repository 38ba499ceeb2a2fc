//! `locald`: run commands and containers on any laptop, without Docker Desktop.
//!
//! The binary is thin: the command line, its subcommands and the daemon live in the
//! `locald_cli` library, which hands each subcommand to the `locald` SDK.

use std::process::ExitCode;

fn main() -> ExitCode {
    // `locald __locald-shim ...` (the container shim) never gets here: a constructor
    // that the runtime links in runs it before `main`.
    locald_cli::main()
}
