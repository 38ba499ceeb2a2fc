//! `locald psql`: a `psql` shell on a project's managed PostgreSQL.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{bail, Context};
use locald::{
    services::{PostgresConnection, PostgresInstallation, Project, Run},
    Paths,
};

/// Arguments of `locald psql`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The project file.
    #[arg(short, long, value_name = "FILE", default_value = "locald.toml")]
    file: PathBuf,
    /// The PostgreSQL service (default: the project's only one).
    #[arg(value_name = "SERVICE")]
    service: Option<String>,
    /// Arguments for psql (after `--`), such as `-c 'SELECT 1'`.
    #[arg(last = true, value_name = "PSQL_ARGS")]
    args: Vec<String>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let project = Project::load(&args.file)?;
    let databases: Vec<(&String, &String)> = project
        .services
        .iter()
        .filter_map(|(name, s)| match &s.run {
            Run::Postgres { version } => Some((name, version)),
            _ => None,
        })
        .collect();
    let (name, version) = match (&args.service, databases.as_slice()) {
        (Some(wanted), _) => match databases.iter().find(|(name, _)| *name == wanted) {
            Some(found) => *found,
            None => bail!(
                "project {} has no PostgreSQL service `{wanted}`{}",
                project.name,
                listed(&databases)
            ),
        },
        (None, [only]) => *only,
        (None, []) => bail!(
            "project {} has no PostgreSQL service (add one with `postgres = \"15\"`)",
            project.name
        ),
        (None, _) => bail!(
            "project {} has several PostgreSQL services: name one{}",
            project.name,
            listed(&databases)
        ),
    };
    let cluster = Paths::from_process_env()
        .data_home()
        .join("projects")
        .join(&project.name)
        .join("postgres")
        .join(name);
    let connection = PostgresConnection::load(&cluster).with_context(|| {
        format!("service `{name}` has not been started yet (run `locald up` first)")
    })?;
    let psql = PostgresInstallation::find(version)?.program("psql");
    let mut command = std::process::Command::new(&psql);
    command.arg(connection.url()).args(&args.args);
    exec(command).with_context(|| format!("running {}", psql.display()))
}

fn listed(databases: &[(&String, &String)]) -> String {
    if databases.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = databases.iter().map(|(n, _)| n.as_str()).collect();
    format!(" (PostgreSQL services: {})", names.join(", "))
}

/// Replaces this process with `command` (psql owns the terminal from here on).
fn exec(mut command: std::process::Command) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    Err(command.exec().into())
}
