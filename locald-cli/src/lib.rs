//! The `locald` command-line tool and daemon, as a library.
//!
//! Both are thin consumers of the `locald` SDK: [`main`] parses a command line and
//! hands each subcommand to a [`Runtime`](locald::Runtime) (in process, or a
//! `locald daemon` reached with `-H`); [`daemon`] serves any runtime over the daemon
//! API, which is how `locald daemon` works and how another program can serve one.
//!
//! The `locald` binary is `fn main() { locald_cli::main() }`.

mod cli;
mod cmd;
pub mod daemon;

pub use cli::main;
