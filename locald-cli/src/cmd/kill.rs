//! `locald kill`: send a signal (default SIGKILL) to containers.

use std::process::ExitCode;

use locald::Signal;

/// Arguments of `locald kill`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The signal, by name (TERM, SIGTERM) or number.
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    /// The containers (id, id prefix or name).
    #[arg(required = true)]
    containers: Vec<String>,
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: Args, host: Option<&str>) -> anyhow::Result<ExitCode> {
    let signal: Signal = match args.signal.parse::<i32>() {
        Ok(n) => Signal::from_number(n)?,
        Err(_) => args.signal.trim_start_matches("SIG").parse()?,
    };
    let runtime = crate::cli::runtime(host).await?;
    for c in &args.containers {
        runtime.kill_container(c, signal).await?;
        println!("{c}");
    }
    Ok(ExitCode::SUCCESS)
}
