//! `locald psql` against a real managed PostgreSQL (Debian's `postgresql-15`) that a
//! project brought up: arguments after `--` reach psql, which talks to the project's
//! database as the project's role; a project without one gets a clear error.

use std::{path::Path, process::Output, sync::Arc, time::Duration};

use locald::native::ProcessRuntime;
use locald::services::{PostgresInstallation, Project, ServiceState, UpOptions};

fn locald(home: &Path, dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_locald"))
        .args(args)
        .current_dir(dir)
        .env("LOCALD_HOME", home)
        .output()
        .unwrap()
}

#[tokio::test]
async fn psql_reaches_the_projects_database() {
    if let Err(err) = PostgresInstallation::find("15") {
        return locald_test_support::unavailable("psql", &err.to_string());
    }
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("locald.toml");
    std::fs::write(
        &file,
        "name = \"notes\"\n[services.db]\npostgres = \"15\"\n[services.web]\ncommand = \"sleep 60\"\n",
    )
    .unwrap();
    // The same place `locald up` keeps it: $LOCALD_HOME/projects/<name>/.
    let project_dir = home.path().join("projects/notes");
    let s = Project::load(&file)
        .unwrap()
        .up(
            Arc::new(ProcessRuntime::new()),
            UpOptions::new(project_dir.join("logs")),
        )
        .await
        .unwrap();
    s.wait_for("db", Duration::from_secs(60), |st| {
        st.state == ServiceState::Healthy
    })
    .await
    .expect("the database got healthy");

    let out = locald(
        home.path(),
        dir.path(),
        &[
            "psql",
            "--",
            "-XAt",
            "-c",
            "SELECT current_user || '@' || current_database()",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "notes@notes\n");

    // psql's own failure is psql's exit code.
    let out = locald(
        home.path(),
        dir.path(),
        &["psql", "db", "--", "-Xc", "SELEC 1"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("syntax error"));

    let out = locald(home.path(), dir.path(), &["psql", "web"]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "locald: project notes has no PostgreSQL service `web` (PostgreSQL services: db)"
    );
    s.down().await;
}
