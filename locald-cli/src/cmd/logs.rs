//! `locald logs`: print a container's output, stdout to stdout and stderr to stderr.

use std::{process::ExitCode, task::Poll};

use locald::{LogOptions, LogStream};
use tokio::io::AsyncWriteExt;

/// Arguments of `locald logs`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Keep printing new output until the container exits.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines (of each service, in a project).
    #[arg(short = 'n', long)]
    tail: Option<usize>,
    /// Show when each line was written (services' logs keep the time of each line).
    #[arg(short, long)]
    timestamps: bool,
    /// The container (id, id prefix or name), or, in a project (a `locald.toml` here
    /// or above, `-f` or `-p`), one of its services; none: all its services.
    name: Option<String>,
    #[command(flatten)]
    which: crate::cmd::project::Which,
}

pub(crate) async fn run(args: Args, host: Option<&str>) -> anyhow::Result<ExitCode> {
    let container = match args.name {
        Some(name) if !args.which.is_service(&name) => name,
        service => {
            return crate::cmd::project::logs(
                &args.which,
                service.as_deref(),
                args.tail,
                args.follow,
                args.timestamps,
                host,
            )
            .await
        }
    };
    if args.timestamps {
        anyhow::bail!(
            "--timestamps is for the services of a project: a container's log keeps no \
             times (leave out -t to see {container}'s output)"
        );
    }
    let runtime = crate::cli::runtime(host).await?;
    let mut options = LogOptions::default();
    options.follow = args.follow;
    options.tail = args.tail;
    let mut chunks = runtime.container_logs(&container, options).await?;
    let mut out = tokio::io::stdout();
    let mut err = tokio::io::stderr();
    loop {
        let next =
            std::future::poll_fn(
                |cx| match futures_core::Stream::poll_next(chunks.as_mut(), cx) {
                    Poll::Ready(v) => Poll::Ready(v),
                    Poll::Pending => Poll::Pending,
                },
            )
            .await;
        let Some(chunk) = next else { break };
        let (stream, data) = chunk?;
        match stream {
            LogStream::Stderr => err.write_all(&data).await?,
            _ => out.write_all(&data).await?,
        }
    }
    out.flush().await?;
    err.flush().await?;
    Ok(ExitCode::SUCCESS)
}
