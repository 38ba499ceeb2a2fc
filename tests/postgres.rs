//! Managed PostgreSQL services with the real server (Debian's `postgresql-15`):
//! created once, reached by a dependent through `DATABASE_URL`, kept across
//! `down`/`up`, restarted after a `kill -9` of the postmaster, and a clear error when
//! its port is taken. As root the server runs as the `postgres` user.

use std::process::Stdio;

use locald::services::{PostgresConnection, PostgresInstallation, ServiceState};

#[path = "services_common.rs"]
#[allow(dead_code)]
mod common;
use common::{settled, up, WAIT};

/// The installation the tests use, or a loud skip (a failure under CI).
fn installation(test: &str) -> Option<PostgresInstallation> {
    PostgresInstallation::find("15")
        .map_err(|err| locald_test_support::unavailable(test, &err.to_string()))
        .ok()
}

/// Runs `sql` with psql against the project's database; its output without alignment.
fn psql(install: &PostgresInstallation, connection: &PostgresConnection, sql: &str) -> String {
    let out = std::process::Command::new(install.program("psql"))
        .arg(connection.url())
        .args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn a_dependent_writes_through_database_url_and_the_row_survives_down_and_up() {
    let Some(install) = installation("postgres: data kept across up") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let psql_bin = install.program("psql");
    let toml = format!(
        r#"
name = "shop"

[services.db]
postgres = "15"

[services.writer]
command = "{} \"$DATABASE_URL\" -Xq -v ON_ERROR_STOP=1 -c 'CREATE TABLE IF NOT EXISTS orders (item text)' -c \"INSERT INTO orders VALUES ('$ITEM')\""
env = {{ ITEM = "${{services.db.port}}" }}
depends_on = {{ db = "healthy" }}
restart = "no"
"#,
        psql_bin.display()
    );
    let s = up(dir.path(), &toml).await;
    let db = settled(&s, "db", |st| *st == ServiceState::Healthy).await;
    let writer = settled(&s, "writer", |st| {
        matches!(st, ServiceState::Completed | ServiceState::Exited)
    })
    .await;
    assert_eq!(
        writer.state,
        ServiceState::Completed,
        "{}",
        std::fs::read_to_string(s.log_file("writer")).unwrap_or_default()
    );
    let cluster = dir.path().join("postgres/db");
    let connection = PostgresConnection::load(&cluster).unwrap();
    assert_eq!(Some(connection.port), db.port);
    assert_eq!(connection.user, "shop");
    assert_eq!(connection.database, "shop");
    assert_eq!(
        psql(&install, &connection, "SELECT item FROM orders"),
        connection.port.to_string()
    );
    // The password is the project's own: the URL without it is refused.
    let anonymous = std::process::Command::new(install.program("psql"))
        .arg(format!(
            "postgres://shop@127.0.0.1:{}/shop",
            connection.port
        ))
        .args(["-XAtqw", "-c", "SELECT 1"])
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert!(!anonymous.status.success());
    // As root the server runs as the `postgres` user, which owns the cluster.
    if locald_test_support::is_root() {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(cluster.join("data")).unwrap().uid();
        let postgres = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        assert_eq!(owner, postgres.uid.as_raw());
        let status = std::fs::read_to_string(format!("/proc/{}/status", db.pid.unwrap())).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid.split_whitespace()
                .skip(1)
                .all(|u| u == postgres.uid.to_string()),
            "{uid}"
        );
    }
    let pid = db.pid.unwrap();
    s.down().await;
    assert!(
        !locald_test_support::process_alive(pid),
        "the postmaster {pid} still runs after down"
    );
    let mode = std::fs::metadata(cluster.join("connection.toml"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // Up again: the same cluster, the same port while it is free, the row still there.
    let s = up(
        dir.path(),
        "name = \"shop\"\n[services.db]\npostgres = \"15\"\n",
    )
    .await;
    let again = settled(&s, "db", |st| *st == ServiceState::Healthy).await;
    assert_eq!(again.port, db.port);
    assert_eq!(
        psql(&install, &connection, "SELECT count(*) FROM orders"),
        "1"
    );
    s.down().await;
}

#[tokio::test]
async fn a_killed_postmaster_is_restarted_by_the_supervisor() {
    let Some(install) = installation("postgres: kill -9 of the postmaster") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = up(
        dir.path(),
        "name = \"crashy\"\n[services.db]\npostgres = 15\nrestart = { backoff = \"200ms\" }\n",
    )
    .await;
    let first = settled(&s, "db", |st| *st == ServiceState::Healthy).await;
    let pid = first.pid.unwrap();
    let connection = PostgresConnection::load(&dir.path().join("postgres/db")).unwrap();
    psql(
        &install,
        &connection,
        "CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)",
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let back = s
        .wait_for("db", WAIT, |st| {
            st.state == ServiceState::Healthy && st.pid.is_some_and(|p| p != pid)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "not back: {:?}\n{}",
                s.status(),
                std::fs::read_to_string(s.log_file("db")).unwrap_or_default()
            )
        });
    assert_eq!(back.restarts, 1);
    assert_eq!(psql(&install, &connection, "SELECT n FROM kept"), "7");
    s.down().await;
}

#[tokio::test]
async fn a_taken_port_is_a_clear_error() {
    if installation("postgres: port clash").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let s = up(
        dir.path(),
        &format!("name = \"clash\"\n[services.db]\npostgres = \"15\"\nport = {port}\n"),
    )
    .await;
    let st = settled(&s, "db", |st| matches!(st, ServiceState::Failed(_))).await;
    assert_eq!(
        st.state,
        ServiceState::Failed(format!(
            "PostgreSQL of service `db` cannot listen on 127.0.0.1:{port}: \
             another program uses that port (choose another `port`, or stop that program)"
        ))
    );
    s.down().await;
}

#[test]
fn a_missing_version_says_how_to_install_it() {
    let err = PostgresInstallation::find("4").unwrap_err().to_string();
    assert!(
        err.contains("PostgreSQL 4 is not installed")
            && err.contains("apt-get install postgresql-4"),
        "{err}"
    );
}

#[tokio::test]
async fn the_shop_example_records_visits_in_its_database() {
    let Some(install) = installation("postgres: examples/shop") else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shop/locald.toml");
    let s = locald::services::Project::load(&file)
        .unwrap()
        .up(
            std::sync::Arc::new(locald::native::ProcessRuntime::new()),
            locald::services::UpOptions::new(state.path().join("logs")),
        )
        .await
        .unwrap();
    settled(&s, "worker", |st| *st == ServiceState::Running).await;
    let log = s.log_file("worker");
    let deadline = std::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("visit recorded")
    {
        assert!(std::time::Instant::now() < deadline, "{:?}", s.status());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let connection = PostgresConnection::load(&state.path().join("postgres/db")).unwrap();
    let visits: u32 = psql(&install, &connection, "SELECT count(*) FROM visits")
        .parse()
        .unwrap();
    assert!(visits >= 1);
    s.down().await;
}
