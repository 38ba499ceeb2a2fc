//! `locald ps`: list containers.

use std::{io::Write, process::ExitCode};

use locald::{ContainerState, ExitStatus};

/// Arguments of `locald ps`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Show every container, not only running ones.
    #[arg(short, long)]
    all: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn status_text(state: &ContainerState) -> String {
    match state {
        ContainerState::Running => "running".into(),
        ContainerState::Created => "created".into(),
        ContainerState::Paused => "paused".into(),
        ContainerState::Exited(ExitStatus::Exited(code)) => format!("exited ({code})"),
        ContainerState::Exited(ExitStatus::Signaled(sig)) => format!("killed ({sig})"),
        _ => "unknown".into(),
    }
}

pub(crate) async fn run(args: Args, host: Option<&str>) -> anyhow::Result<ExitCode> {
    let runtime = crate::cli::runtime(host).await?;
    let list = runtime.list_containers(args.all).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &list)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<12}  {:<20}  {:<14}  {:<24}  COMMAND",
        "ID", "NAME", "STATUS", "PORTS"
    )?;
    for c in list {
        let ports = c
            .ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        writeln!(
            out,
            "{:<12}  {:<20}  {:<14}  {:<24}  {}",
            &c.id[..12.min(c.id.len())],
            c.name,
            status_text(&c.state),
            ports,
            c.command.join(" ")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
