//! `locald::services` with real processes: a `locald.toml` project brought up on the
//! host-process runtime, in dependency order and by health, with restarts, logs and a
//! clean `down`. (busybox, from Debian's busybox-static, serves HTTP.)

use std::{sync::Arc, time::Duration};

use locald::native::ProcessRuntime;
use locald::services::{ServiceState, UpOptions};

#[path = "services_common.rs"]
#[allow(dead_code)]
mod common;
use common::{project, settled, up, WAIT};

#[tokio::test]
async fn dependents_start_once_what_they_need_is_healthy_and_down_stops_all() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/index.html"), "hello from web\n").unwrap();
    let s = up(
        dir.path(),
        r#"
name = "shop"

[services.web]
command = "exec busybox httpd -f -p 127.0.0.1:$PORT -h www"
health = { http = "/index.html", interval = "100ms" }

[services.worker]
command = "busybox wget -qO- $WEB_URL/index.html > got && exec sleep 60"
env = { WEB_URL = "${services.web.url}" }
depends_on = { web = "healthy" }
"#,
    )
    .await;
    let statuses = s.wait_ready(WAIT).await;
    assert_eq!(
        statuses
            .iter()
            .map(|st| st.name.as_str())
            .collect::<Vec<_>>(),
        ["web", "worker"]
    );
    assert_eq!(statuses[0].state, ServiceState::Healthy, "{statuses:?}");
    let worker = settled(&s, "worker", |st| *st == ServiceState::Running).await;
    // The worker reached the web service through the reference to its URL.
    let got = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            std::fs::read_to_string(dir.path().join("got"))
                .ok()
                .filter(|g| !g.is_empty())
        })
        .expect("the worker fetched the page");
    assert_eq!(got, "hello from web\n");
    let pids: Vec<u32> = s.status().iter().filter_map(|st| st.pid).collect();
    assert_eq!(pids.len(), 2);
    assert!(worker.pid.is_some_and(locald_test_support::process_alive));

    s.down().await;
    for st in s.status() {
        assert_eq!(st.state, ServiceState::Stopped, "{st:?}");
    }
    for pid in pids {
        assert!(
            !locald_test_support::process_alive(pid),
            "pid {pid} still runs after down"
        );
    }
}

#[tokio::test]
async fn a_crashing_service_is_restarted_with_backoff_then_given_up() {
    let dir = tempfile::tempdir().unwrap();
    let s = up(
        dir.path(),
        r#"
[services.crash]
command = "echo run >> runs; echo failing >&2; exit 3"
restart = { policy = "on-failure", max_restarts = 2, backoff = "50ms" }
"#,
    )
    .await;
    let st = settled(&s, "crash", |st| matches!(st, ServiceState::Failed(_))).await;
    assert_eq!(
        st.state,
        ServiceState::Failed("gave up after 2 restarts; the last run exited with code 3".into())
    );
    assert_eq!(st.restarts, 2);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("runs")).unwrap(),
        "run\nrun\nrun\n"
    );
    // Its output went to its log, and to the live lines from the start.
    let log = std::fs::read_to_string(s.log_file("crash")).unwrap();
    assert_eq!(log.matches("failing").count(), 3, "{log}");
    let mut lines = s.logs();
    let mut seen = Vec::new();
    while let Ok(line) = lines.try_recv() {
        seen.push((line.service, line.stream, line.line));
    }
    assert_eq!(
        seen,
        vec![
            (
                "crash".to_owned(),
                locald::LogStream::Stderr,
                "failing".to_owned()
            );
            3
        ]
    );
    s.down().await;
}

#[tokio::test]
async fn restart_policies() {
    let dir = tempfile::tempdir().unwrap();
    let s = up(
        dir.path(),
        r#"
[services.always]
command = "echo run >> always.runs"
restart = { policy = "always", max_restarts = 3, backoff = "20ms" }

[services.once]
command = "exit 0"
restart = "on-failure"

[services.never]
command = "exit 4"
restart = "no"
"#,
    )
    .await;
    let terminal = |st: &ServiceState| {
        matches!(
            st,
            ServiceState::Failed(_) | ServiceState::Completed | ServiceState::Exited
        )
    };
    for name in ["always", "once", "never"] {
        settled(&s, name, terminal).await;
    }
    let statuses = s.status();
    let by = |name: &str| statuses.iter().find(|st| st.name == name).unwrap().clone();
    assert!(
        matches!(by("always").state, ServiceState::Failed(_)),
        "{statuses:?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("always.runs"))
            .unwrap()
            .lines()
            .count(),
        4,
        "a success is restarted too under `always`"
    );
    assert_eq!(by("once").state, ServiceState::Completed);
    assert_eq!(by("once").restarts, 0);
    assert_eq!(by("never").state, ServiceState::Exited);
    assert_eq!(by("never").last_exit.and_then(|e| e.code()), Some(4));
    s.down().await;
}

#[tokio::test]
async fn a_completed_dependency_gates_the_start_and_a_failed_one_fails_dependents() {
    let dir = tempfile::tempdir().unwrap();
    let s = up(
        dir.path(),
        r#"
[services.migrate]
command = "sleep 0.2; echo migrated > state"
restart = "no"

[services.app]
command = "cat state > seen && exec sleep 60"
depends_on = { migrate = "completed" }
"#,
    )
    .await;
    settled(&s, "app", |st| *st == ServiceState::Running).await;
    let seen = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            std::fs::read_to_string(dir.path().join("seen"))
                .ok()
                .filter(|g| !g.is_empty())
        })
        .expect("the app ran after the migration");
    assert_eq!(seen, "migrated\n");
    s.down().await;

    let dir = tempfile::tempdir().unwrap();
    let s = up(
        dir.path(),
        r#"
[services.migrate]
command = "exit 1"
restart = "no"

[services.app]
command = "touch started; exec sleep 60"
depends_on = { migrate = "completed" }
"#,
    )
    .await;
    let st = settled(&s, "app", |st| matches!(st, ServiceState::Failed(_))).await;
    assert_eq!(
        st.state,
        ServiceState::Failed("dependency `migrate` exited with a failure".into())
    );
    assert!(!dir.path().join("started").exists());
    s.down().await;
}

#[tokio::test]
async fn logs_rotate_past_their_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = UpOptions::new(dir.path().join("logs"));
    options.log_limit = 1000;
    let s = project(
        dir.path(),
        r#"
[services.chatty]
command = "for i in $(seq 1 300); do echo line $i; done"
restart = "no"
"#,
    )
    .up(Arc::new(ProcessRuntime::new()), options)
    .await
    .unwrap();
    settled(&s, "chatty", |st| *st == ServiceState::Completed).await;
    s.down().await;
    let log = s.log_file("chatty");
    let rotated = log.with_extension("log.1");
    let current = std::fs::read_to_string(&log).unwrap();
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(current.ends_with(" stdout F line 300\n"), "{current}");
    // Each file holds whole records (a line with its time and stream, about 50 bytes),
    // up to the limit: the rotated one is full to within a record.
    assert!(std::fs::metadata(&log).unwrap().len() <= 1000);
    let old_len = std::fs::metadata(&rotated).unwrap().len();
    assert!((900..=1000).contains(&old_len), "{old_len}");
    assert!(!old.contains("line 300\n"), "{old}");
    for text in [&current, &old] {
        assert!(
            text.lines().all(|l| l.contains(" stdout F line ")),
            "a record was split: {text}"
        );
    }
    // Read back as lines, the current log ends with the last one.
    let tail = locald::services::logfile::read_tail(&log, Some(1));
    assert_eq!(tail[0].line, "line 300");
}

#[tokio::test]
async fn one_service_is_stopped_started_and_restarted_while_the_rest_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s = up(
        dir.path(),
        r#"
[services.web]
command = "exec sleep 60"
stop_grace = "2s"

[services.worker]
command = "exec sleep 60"
depends_on = ["web"]
"#,
    )
    .await;
    let web = settled(&s, "web", |st| *st == ServiceState::Running).await;
    let worker = settled(&s, "worker", |st| *st == ServiceState::Running).await;
    let first = web.pid.unwrap();

    s.restart_service("web").await.unwrap();
    let again = s
        .wait_for("web", WAIT, |st| {
            st.state == ServiceState::Running && st.pid.is_some_and(|p| p != first)
        })
        .await
        .expect("web runs again with a new process");
    assert!(!locald_test_support::process_alive(first));
    assert_eq!(again.restarts, 0);

    s.stop_service("web").await.unwrap();
    let stopped = s.status().into_iter().find(|st| st.name == "web").unwrap();
    assert_eq!((stopped.state, stopped.pid), (ServiceState::Stopped, None));
    assert!(!locald_test_support::process_alive(again.pid.unwrap()));
    // Not restarted behind the user's back, and its dependent keeps running.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now = s.status();
    assert_eq!(now[0].state, ServiceState::Stopped);
    assert_eq!(now[1].pid, worker.pid);

    s.start_service("web").await.unwrap();
    settled(&s, "web", |st| *st == ServiceState::Running).await;
    let err = s.stop_service("nope").await.unwrap_err().to_string();
    assert!(
        err.contains("has no such service (services: web, worker)"),
        "{err}"
    );
    s.down().await;
    assert!(s
        .start_service("web")
        .await
        .unwrap_err()
        .to_string()
        .contains("is down"));
}

#[tokio::test]
async fn a_long_line_is_kept_in_parts_and_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let s = up(
        dir.path(),
        r#"
[services.long]
command = "head -c 40000 /dev/zero | tr '\\0' a; echo; echo short"
restart = "no"
"#,
    )
    .await;
    settled(&s, "long", |st| *st == ServiceState::Completed).await;
    s.down().await;
    let log = s.log_file("long");
    let text = std::fs::read_to_string(&log).unwrap();
    // 16 KiB parts: two partial records and the last part.
    assert_eq!(text.matches(" stdout P ").count(), 2, "{}", text.len());
    let lines = locald::services::logfile::read_tail(&log, None);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].line, "a".repeat(40000));
    assert_eq!(lines[1].line, "short");
}
