//! `locald rm`: remove containers.

use std::process::ExitCode;

/// Arguments of `locald rm`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Kill and remove running containers too.
    #[arg(short, long)]
    force: bool,
    /// The containers (id, id prefix or name).
    #[arg(required = true)]
    containers: Vec<String>,
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: Args, host: Option<&str>) -> anyhow::Result<ExitCode> {
    let runtime = crate::cli::runtime(host).await?;
    for c in &args.containers {
        runtime.remove_container(c, args.force).await?;
        println!("{c}");
    }
    Ok(ExitCode::SUCCESS)
}
