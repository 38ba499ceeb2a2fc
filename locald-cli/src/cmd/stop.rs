//! `locald stop`: SIGTERM, then SIGKILL after the grace period.

use std::{process::ExitCode, time::Duration};

/// Arguments of `locald stop`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(short, long, default_value_t = 10)]
    time: u64,
    /// The containers (id, id prefix or name), or, in a project (a `locald.toml`
    /// here or above, `-f` or `-p`), its services.
    #[arg(required = true)]
    containers: Vec<String>,
    #[command(flatten)]
    which: crate::cmd::project::Which,
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: Args, host: Option<&str>) -> anyhow::Result<ExitCode> {
    if args
        .containers
        .iter()
        .all(|name| args.which.is_service(name))
    {
        return crate::cmd::project::act(&args.which, &args.containers, "stop", host).await;
    }
    let runtime = crate::cli::runtime(host).await?;
    for c in &args.containers {
        runtime
            .stop_container(c, Duration::from_secs(args.time))
            .await?;
        println!("{c}");
    }
    Ok(ExitCode::SUCCESS)
}
