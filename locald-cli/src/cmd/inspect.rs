//! `locald inspect`: a container's details as JSON.

use std::{io::Write, process::ExitCode};

/// Arguments of `locald inspect`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The container (id, id prefix or name).
    container: String,
}

pub(crate) async fn run(args: Args, host: Option<&str>) -> anyhow::Result<ExitCode> {
    let runtime = crate::cli::runtime(host).await?;
    let summary = runtime.inspect_container(&args.container).await?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &summary)?;
    writeln!(out)?;
    Ok(ExitCode::SUCCESS)
}
