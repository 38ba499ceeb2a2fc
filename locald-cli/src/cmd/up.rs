//! `locald up`: run a project's services from its `locald.toml`, attached.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context;
use locald::{
    services::{Project, ServiceState, UpOptions},
    Paths,
};
use tokio::sync::broadcast::error::RecvError;

use crate::daemon::projects::{record_changes, write_record, Record};

/// Arguments of `locald up`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The project file.
    #[arg(short, long, value_name = "FILE", default_value = "locald.toml")]
    file: PathBuf,
    /// Run only these services and what they depend on (default: all).
    #[arg(value_name = "SERVICE")]
    services: Vec<String>,
    /// Run them in the daemon (started if none runs) and return once they settled;
    /// `locald status`, `logs`, `restart` and `down` see them from there.
    #[arg(short, long)]
    detach: bool,
}

/// The record of an attached `locald up`, beside the daemon's `daemon.json`.
pub(crate) const ATTACHED: &str = "attached.json";

/// This process as a record's owner: its pid and start time.
fn this_process() -> Option<(u32, u64)> {
    let pid = std::process::id();
    Some((pid, locald::native::util::process_start_time(pid)?))
}

#[allow(clippy::print_stderr)]
/// Before a project comes up here or in the daemon: refuses when another attached
/// `locald up` still supervises it, and ends what one that was killed left behind.
pub(crate) async fn take_over(
    project_dir: &std::path::Path,
    runtime: &dyn locald::Runtime,
    name: &str,
) -> anyhow::Result<()> {
    let path = project_dir.join(ATTACHED);
    let Some(record) = Record::read(&path) else {
        let _ = std::fs::remove_file(&path);
        return Ok(());
    };
    if let Some((pid, started)) = record.owner {
        if locald::native::util::process_start_time(pid) == Some(started) {
            anyhow::bail!(
                "project {name} is already up in another `locald up` (pid {pid}): stop it \
                 first (Ctrl-C there, or kill {pid})"
            );
        }
    }
    record.reap(runtime).await;
    let _ = std::fs::remove_file(&path);
    if !record.running.is_empty() {
        eprintln!(
            "locald: stopped {} service(s) of {name} left by a `locald up` that was killed",
            record.running.len()
        );
    }
    Ok(())
}

/// Colours for service prefixes, as docker compose cycles them.
const COLOURS: [&str; 6] = ["36", "33", "32", "35", "34", "31"];

#[allow(clippy::print_stderr)] // status lines go to stderr, the services' output to stdout
pub(crate) async fn run(args: Args, host: Option<&str>) -> anyhow::Result<ExitCode> {
    if args.detach {
        let which = crate::cmd::project::Which {
            file: Some(args.file),
            project: None,
        };
        return crate::cmd::project::up_detached(&which, args.services, host).await;
    }
    let mut project = Project::load(&args.file)?;
    if !args.services.is_empty() {
        project = project.select(&args.services)?;
    }
    let runtime = crate::cli::runtime(host).await?;
    let project_dir = Paths::from_process_env()
        .data_home()
        .join("projects")
        .join(&project.name);
    let log_dir = project_dir.join("logs");
    // One supervisor per project: this one records itself so that another `up`
    // refuses to start the services twice, and one after a `kill -9` of this process
    // ends what it left.
    let record_path = project_dir.join(ATTACHED);
    if project_dir.join("daemon.json").exists() {
        anyhow::bail!(
            "project {} is up in the locald daemon: follow it with `locald logs -f`, or \
             `locald down` it first",
            project.name
        );
    }
    take_over(&project_dir, runtime.as_ref(), &project.name).await?;
    let mut record = Record::of(
        &project,
        std::path::absolute(&args.file).unwrap_or_else(|_| args.file.clone()),
        args.services.clone(),
    );
    record.owner = this_process();
    write_record(&record_path, &record)?;
    let supervisor = match project.up(runtime, UpOptions::new(&log_dir)).await {
        Ok(s) => s,
        Err(err) => {
            let _ = std::fs::remove_file(&record_path);
            return Err(err).with_context(|| format!("starting project {}", project.name));
        }
    };
    let recorder = tokio::spawn(record_changes(
        record_path.clone(),
        record,
        supervisor.clone(),
    ));
    let mut lines = supervisor.logs();
    let mut states = supervisor.changes();
    let colour = std::io::stdout().is_terminal();
    let width = project.services.keys().map(String::len).max().unwrap_or(0);
    let prefixes: BTreeMap<&str, String> = project
        .services
        .keys()
        .enumerate()
        .map(|(i, name)| {
            let text = format!("{name:<width$} | ");
            let text = if colour {
                format!("\x1b[{}m{text}\x1b[0m", COLOURS[i % COLOURS.len()])
            } else {
                text
            };
            (name.as_str(), text)
        })
        .collect();
    let print = |line: &locald::services::LogLine| {
        let prefix = prefixes
            .get(line.service.as_str())
            .map_or("", String::as_str);
        let _ = writeln!(std::io::stdout().lock(), "{prefix}{}", line.line);
    };
    let mut reported: BTreeMap<String, ServiceState> = BTreeMap::new();
    let interrupted = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break true,
            line = lines.recv() => match line {
                Ok(line) => print(&line),
                Err(RecvError::Lagged(n)) => eprintln!("locald: {n} lines skipped (see the logs in {})", log_dir.display()),
                Err(RecvError::Closed) => {}
            },
            changed = states.changed() => {
                if changed.is_err() {
                    break false;
                }
                let statuses = supervisor.status();
                for st in &statuses {
                    if reported.get(&st.name) != Some(&st.state) {
                        match (&st.state, st.pid, st.port) {
                            (ServiceState::Running, Some(pid), Some(port)) => {
                                eprintln!("locald: {} running (pid {pid}, PORT {port})", st.name)
                            }
                            (ServiceState::Running, Some(pid), None) => {
                                eprintln!("locald: {} running (pid {pid})", st.name)
                            }
                            _ => eprintln!("locald: {} {}", st.name, st.state),
                        }
                        reported.insert(st.name.clone(), st.state.clone());
                    }
                }
                // Like docker compose: when nothing runs any more, up is over.
                if statuses.iter().all(|st| matches!(st.state, ServiceState::Completed | ServiceState::Exited | ServiceState::Failed(_))) {
                    break false;
                }
            }
        }
    };
    if interrupted {
        eprintln!(
            "locald: stopping {} (Ctrl-C again does not hurry it)",
            project.name
        );
    }
    supervisor.down().await;
    recorder.abort();
    let _ = recorder.await;
    let _ = std::fs::remove_file(&record_path);
    // `down` waited for every service's output to be read: print what is left.
    while let Ok(line) = lines.try_recv() {
        print(&line);
    }
    let failed = supervisor
        .status()
        .iter()
        .any(|st| matches!(st.state, ServiceState::Failed(_) | ServiceState::Exited));
    Ok(if interrupted {
        ExitCode::from(130)
    } else if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
