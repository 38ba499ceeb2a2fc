//! The project commands that talk to the daemon's supervisor: `up -d`, `down`,
//! `status`, `logs`, `restart`, `stop`, `start`, `dashboard`. Without `--host`, the
//! daemon on the default socket is used, and started when none answers.

use std::{
    io::{IsTerminal, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{bail, Context};
use locald::{
    remote::{protocol::segment, Host, RemoteRuntime},
    services::{Project, ServiceState},
    Paths,
};

use crate::daemon::projects::{LogEntry, ProjectStatus, UpRequest};

/// Which project a command means.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Which {
    /// The project file [default: locald.toml here or in a parent directory].
    #[arg(long = "file", value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
    /// The project, by name (one the daemon has up).
    #[arg(
        short = 'p',
        long = "project",
        value_name = "NAME",
        conflicts_with = "file"
    )]
    pub(crate) project: Option<String>,
}

impl Which {
    /// The project file this names or finds, if any.
    pub(crate) fn find_file(&self) -> Option<PathBuf> {
        if self.project.is_some() {
            return None;
        }
        if let Some(file) = &self.file {
            return Some(file.clone());
        }
        let here = std::env::current_dir().ok()?;
        here.ancestors()
            .map(|dir| dir.join("locald.toml"))
            .find(|f| f.is_file())
    }

    /// The project's name: `-p`, else the name in its file.
    pub(crate) fn name(&self) -> anyhow::Result<String> {
        if let Some(name) = &self.project {
            return Ok(name.clone());
        }
        match self.find_file() {
            Some(file) => Ok(Project::load(&file)?.name),
            None => bail!(
                "no locald.toml here or in a parent directory: name the project with -p NAME or its file with --file FILE"
            ),
        }
    }

    /// Whether `name` is a service of the project this names (with `-p`, whatever
    /// the name: the daemon says whether it is).
    pub(crate) fn is_service(&self, name: &str) -> bool {
        if self.project.is_some() {
            return true;
        }
        self.find_file()
            .and_then(|file| Project::load(&file).ok())
            .is_some_and(|p| p.services.contains_key(name))
    }

    /// Whether the command runs in a project's context (`-f`, `-p`, or a
    /// `locald.toml` found from here).
    pub(crate) fn given(&self) -> bool {
        self.project.is_some() || self.find_file().is_some()
    }
}

/// The daemon at `host`, or the one on the default socket, started in the
/// background (its log in `$LOCALD_HOME/daemon.log`) when none answers there.
pub(crate) async fn daemon(host: Option<&str>) -> anyhow::Result<RemoteRuntime> {
    if let Some(host) = host.filter(|h| !h.is_empty()) {
        return Ok(RemoteRuntime::connect(crate::cmd::daemon::parse_host(host)?).await?);
    }
    let paths = Paths::from_process_env();
    let socket = crate::daemon::default_socket(&paths);
    if let Ok(daemon) = RemoteRuntime::connect(Host::Unix(socket.clone())).await {
        return Ok(daemon);
    }
    let log = paths.data_home().join("daemon.log");
    start_daemon(&log)?;
    let mut last = None;
    for _ in 0..200 {
        match RemoteRuntime::connect(Host::Unix(socket.clone())).await {
            Ok(daemon) => return Ok(daemon),
            Err(err) => last = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tail = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: Vec<&str> = tail.lines().rev().take(5).collect();
    bail!(
        "the locald daemon did not start on {} ({}); the end of {}:\n{}",
        socket.display(),
        last.map(|e| e.to_string()).unwrap_or_default(),
        log.display(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

fn start_daemon(log: &Path) -> anyhow::Result<()> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let exe = std::env::current_exe().context("finding the locald executable")?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("daemon")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    #[cfg(unix)]
    {
        // Its own session: the terminal's Ctrl-C and hang-up do not reach it.
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    command.spawn().context("starting the locald daemon")?;
    Ok(())
}

fn absolute(file: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(file).with_context(|| format!("resolving {}", file.display()))
}

/// `locald up -d`: the project in the daemon, then a summary once it settled.
#[allow(clippy::print_stdout)]
pub(crate) async fn up_detached(
    which: &Which,
    services: Vec<String>,
    host: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let Some(file) = which.find_file() else {
        bail!("no locald.toml here or in a parent directory (give one with -f FILE)");
    };
    // The file is checked here first, so that its mistakes read as they do in `up`.
    let project = Project::load(&file)?;
    let daemon = daemon(host).await?;
    let project_dir = locald::Paths::from_process_env()
        .data_home()
        .join("projects")
        .join(&project.name);
    crate::cmd::up::take_over(&project_dir, &daemon, &project.name).await?;
    let request = UpRequest {
        file: absolute(&file)?,
        services,
        wait_ms: 60_000,
    };
    let up = daemon.post_json::<ProjectStatus>("/projects/up", &request);
    let status = with_progress(up, &daemon, &project.name).await?;
    print_table(&status);
    Ok(exit_for(&status))
}

/// Runs `up` (the daemon's answer once the services have settled) while saying on
/// stderr each state a service reaches, with the time since the start, as `docker
/// compose up -d` shows its containers' progress: a database's first start can take
/// seconds.
#[allow(clippy::print_stderr)]
async fn with_progress(
    up: impl std::future::Future<Output = locald::Result<ProjectStatus>>,
    daemon: &RemoteRuntime,
    name: &str,
) -> anyhow::Result<ProjectStatus> {
    let started = std::time::Instant::now();
    let path = format!("/projects/{}", segment(name));
    let mut said: std::collections::BTreeMap<String, String> = Default::default();
    let mut say = |status: &ProjectStatus| {
        for s in &status.services {
            let state = s.state.to_string();
            if said.get(&s.name) != Some(&state) {
                eprintln!(
                    " {:<16} {:<10} {:>5.1}s",
                    s.name,
                    state,
                    started.elapsed().as_secs_f64()
                );
                said.insert(s.name.clone(), state);
            }
        }
    };
    tokio::pin!(up);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            status = &mut up => {
                let status = status?;
                say(&status);
                return Ok(status);
            }
            _ = tick.tick() => {
                // The project is there once the daemon has started its services.
                if let Ok(status) = daemon.get_json::<ProjectStatus>(&path).await {
                    say(&status);
                }
            }
        }
    }
}

fn exit_for(status: &ProjectStatus) -> ExitCode {
    let failed = status
        .services
        .iter()
        .any(|s| matches!(s.state, ServiceState::Failed(_) | ServiceState::Exited));
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[allow(clippy::print_stdout)]
fn print_table(status: &ProjectStatus) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "project {} ({})", status.name, status.file.display());
    let _ = writeln!(
        out,
        "{:<16} {:<12} {:>8} {:>6} {:>8}  DETAIL",
        "SERVICE", "STATE", "PID", "PORT", "RESTARTS"
    );
    for s in &status.services {
        let (state, detail) = match &s.state {
            ServiceState::Failed(why) => ("failed".to_owned(), why.clone()),
            other => (other.to_string(), String::new()),
        };
        let detail = match (&s.state, s.last_exit) {
            (ServiceState::Exited | ServiceState::Completed, Some(exit)) => format!("{exit:?}"),
            _ => detail,
        };
        let _ = writeln!(
            out,
            "{:<16} {:<12} {:>8} {:>6} {:>8}  {}",
            s.name,
            state,
            s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            s.port.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            s.restarts,
            detail
        );
    }
}

/// Arguments of `locald down`.
#[derive(Debug, clap::Args)]
pub(crate) struct DownArgs {
    #[command(flatten)]
    which: Which,
}

pub(crate) async fn down(args: DownArgs, host: Option<&str>) -> anyhow::Result<ExitCode> {
    let name = args.which.name()?;
    let daemon = daemon(host).await?;
    let status: ProjectStatus = daemon
        .post_json(&format!("/projects/{}/down", segment(&name)), &())
        .await?;
    print_table(&status);
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `locald status`.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    which: Which,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `locald status`: one project's services, or, outside any project, every
/// project's.
#[allow(clippy::print_stdout)]
pub(crate) async fn status(args: StatusArgs, host: Option<&str>) -> anyhow::Result<ExitCode> {
    let daemon = daemon(host).await?;
    let statuses: Vec<ProjectStatus> = if args.which.given() {
        let name = args.which.name()?;
        vec![
            daemon
                .get_json(&format!("/projects/{}", segment(&name)))
                .await?,
        ]
    } else {
        daemon.get_json("/projects").await?
    };
    if args.json {
        let mut out = std::io::stdout().lock();
        if args.which.given() {
            serde_json::to_writer_pretty(&mut out, &statuses[0])?;
        } else {
            serde_json::to_writer_pretty(&mut out, &statuses)?;
        }
        let _ = writeln!(out);
    } else if statuses.is_empty() {
        println!("no project is up");
    } else {
        for status in &statuses {
            print_table(status);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `locald restart|stop|start SERVICE…` in a project.
#[allow(clippy::print_stdout)]
pub(crate) async fn act(
    which: &Which,
    services: &[String],
    verb: &str,
    host: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let name = which.name()?;
    let daemon = daemon(host).await?;
    let mut last = None;
    for service in services {
        let status: ProjectStatus = daemon
            .post_json(
                &format!(
                    "/projects/{}/services/{}/{verb}",
                    segment(&name),
                    segment(service)
                ),
                &(),
            )
            .await?;
        last = Some(status);
    }
    if let Some(status) = last {
        print_table(&status);
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `locald restart` and `locald start`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServiceArgs {
    #[command(flatten)]
    which: Which,
    /// The services.
    #[arg(required = true, value_name = "SERVICE")]
    services: Vec<String>,
}

pub(crate) async fn restart(args: ServiceArgs, host: Option<&str>) -> anyhow::Result<ExitCode> {
    act(&args.which, &args.services, "restart", host).await
}

pub(crate) async fn start(args: ServiceArgs, host: Option<&str>) -> anyhow::Result<ExitCode> {
    act(&args.which, &args.services, "start", host).await
}

/// `locald logs [-f] [-n N] [-t] [SERVICE]` in a project: each service's lines
/// prefixed with its name (and, with `-t`, the time it was written), all services'
/// lines in the order they were written.
pub(crate) async fn logs(
    which: &Which,
    service: Option<&str>,
    tail: Option<usize>,
    follow: bool,
    timestamps: bool,
    host: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let name = which.name()?;
    let daemon = daemon(host).await?;
    let mut query = format!("/projects/{}/logs?follow={follow}", segment(&name));
    if let Some(service) = service {
        query.push_str(&format!("&service={}", segment(service)));
    }
    if let Some(tail) = tail {
        query.push_str(&format!("&tail={tail}"));
    }
    let mut lines = daemon.get_lines::<LogEntry>(&query).await?;
    let colour = std::io::stdout().is_terminal();
    let mut width = 0;
    loop {
        let entry = tokio::select! {
            entry = lines.next() => entry,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        let Some(entry) = entry else { break };
        let entry = entry?;
        width = width.max(entry.service.len());
        let mut prefix = format!("{:<width$} | ", entry.service);
        if timestamps {
            // A line of a log from before times were kept has none: blank, aligned.
            let time = entry.time.as_deref().unwrap_or("");
            prefix.push_str(&format!("{time:<30} "));
        }
        let mut out = std::io::stdout().lock();
        if colour {
            let _ = writeln!(out, "\x1b[36m{prefix}\x1b[0m{}", entry.line);
        } else {
            let _ = writeln!(out, "{prefix}{}", entry.line);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `locald dashboard`.
#[derive(Debug, clap::Args)]
pub(crate) struct DashboardArgs {
    /// Print the link without opening a browser.
    #[arg(long)]
    no_open: bool,
}

/// `locald dashboard`: a one-time link to the daemon's dashboard, opened in the
/// browser when there is a terminal.
#[allow(clippy::print_stdout)]
pub(crate) async fn dashboard(args: DashboardArgs, host: Option<&str>) -> anyhow::Result<ExitCode> {
    let daemon = daemon(host).await?;
    let answer: serde_json::Value = daemon.post_json("/dashboard/login", &()).await?;
    let url = answer["url"]
        .as_str()
        .context("the daemon sent no dashboard link")?
        .to_owned();
    println!("{url}");
    if !args.no_open && std::io::stdout().is_terminal() {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        let opened = std::process::Command::new(opener)
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if opened.is_err() {
            println!("(open it in a browser: the link works once)");
        }
    }
    Ok(ExitCode::SUCCESS)
}
