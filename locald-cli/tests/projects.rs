//! Projects in the daemon, through the real `locald` binary as a user runs it: `up
//! -d` starts the daemon on demand and returns while the services keep running;
//! `status`, `logs`, `restart`, `stop`, `start` and `down` manage them from later
//! commands; a daemon killed with -9 is replaced by the next command, which brings
//! the project back with nothing left over and nothing twice; `locald dashboard`
//! gives a link that works once.

use std::{
    path::PathBuf,
    process::Output,
    time::{Duration, Instant},
};

use locald::services::ServiceState;
use locald_cli::daemon::projects::ProjectStatus;
use locald_test_support::process_alive;

/// A home for one test's daemon, stopped (SIGTERM) when the test ends.
struct Home {
    dir: tempfile::TempDir,
    project: PathBuf,
}

impl Home {
    fn new(toml: &str) -> Home {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("app");
        std::fs::create_dir(&project).unwrap();
        std::fs::write(project.join("locald.toml"), toml).unwrap();
        std::fs::write(project.join("index.html"), "hi\n").unwrap();
        Home { dir, project }
    }

    fn locald(&self, args: &[&str]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_locald"))
            .args(args)
            .current_dir(&self.project)
            .env("LOCALD_HOME", self.dir.path().join("home"))
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("LOCALD_HOST")
            .env("LOCALD_DASHBOARD", "none")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.locald(args);
        assert!(
            out.status.success(),
            "locald {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn status(&self) -> ProjectStatus {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }

    fn pid(&self, service: &str) -> Option<u32> {
        self.status()
            .services
            .into_iter()
            .find(|s| s.name == service)
            .and_then(|s| s.pid)
    }

    /// Waits until `check` holds for the status, at most 20 s.
    fn until(&self, what: &str, check: impl Fn(&ProjectStatus) -> bool) -> ProjectStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.status();
            if check(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "{what}: {status:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn daemon_pid(&self) -> Option<u32> {
        let out = self.locald(&["daemon", "status", "--json"]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        json["daemon"]["pid"].as_u64().map(|p| p as u32)
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            for _ in 0..100 {
                if !process_alive(pid) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn state(status: &ProjectStatus, service: &str) -> ServiceState {
    status
        .services
        .iter()
        .find(|s| s.name == service)
        .unwrap()
        .state
        .clone()
}

/// Processes whose command line contains `needle`.
fn count(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            let pid: u32 = e.file_name().to_string_lossy().parse().unwrap();
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            process_alive(pid)
                && String::from_utf8_lossy(&cmdline)
                    .replace('\0', " ")
                    .contains(needle)
        })
        .count()
}

const PROJECT: &str = r#"
name = "shop"

[services.web]
command = "exec busybox httpd -f -p 127.0.0.1:$PORT -h ."
health = { http = "/", interval = "100ms" }

[services.worker]
command = "echo worker started; exec sleep 1001"
depends_on = { web = "healthy" }
stop_grace = "2s"
"#;

#[test]
fn up_detached_then_status_logs_restart_stop_start_down() {
    let home = Home::new(PROJECT);
    let up = home.locald(&["up", "-d"]);
    assert!(up.status.success(), "{up:?}");
    let out = String::from_utf8_lossy(&up.stdout);
    assert!(out.contains("web") && out.contains("healthy"), "{out}");
    // On stderr, the states each service went through while `up -d` waited, in order,
    // with the seconds since it started: worker ran once web was healthy.
    let progress = String::from_utf8_lossy(&up.stderr);
    let at = |service: &str, state: &str| {
        progress
            .lines()
            .position(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.len() == 3 && words[..2] == [service, state] && words[2].ends_with('s')
            })
            .unwrap_or_else(|| panic!("no `{service} {state}` in:\n{progress}"))
    };
    assert!(at("web", "healthy") < at("worker", "running"), "{progress}");

    // The CLI has exited; the daemon supervises the services.
    let status = home.status();
    assert_eq!(status.name, "shop");
    assert_eq!(state(&status, "web"), ServiceState::Healthy);
    assert_eq!(state(&status, "worker"), ServiceState::Running);
    let web = home.pid("web").unwrap();
    let worker = home.pid("worker").unwrap();
    assert!(process_alive(web) && process_alive(worker));

    let logs = home.ok(&["logs", "-n", "5", "worker"]);
    assert_eq!(logs, "worker | worker started\n");

    home.ok(&["restart", "web"]);
    let new_web = home.pid("web").unwrap();
    assert_ne!(new_web, web);
    assert!(!process_alive(web));

    home.ok(&["stop", "worker"]);
    assert_eq!(state(&home.status(), "worker"), ServiceState::Stopped);
    assert!(!process_alive(worker));
    home.ok(&["start", "worker"]);
    home.until("worker runs again", |s| {
        state(s, "worker") == ServiceState::Running
    });

    // `up -d` again leaves running services as they are.
    home.ok(&["up", "-d"]);
    assert_eq!(home.pid("web"), Some(new_web));

    let last = home.pid("worker").unwrap();
    home.ok(&["down"]);
    assert!(!process_alive(new_web) && !process_alive(last));
    let out = home.locald(&["status"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no such project: shop"),
        "{out:?}"
    );
}

#[test]
fn a_daemon_killed_with_9_is_replaced_and_its_projects_come_back_once() {
    let marker = format!("sleep {}", 2000 + std::process::id() % 1000);
    let home = Home::new(&PROJECT.replace("sleep 1001", &marker));
    home.ok(&["up", "-d"]);
    let web = home.pid("web").unwrap();
    let worker = home.pid("worker").unwrap();
    assert_eq!(count(&marker), 1);
    let daemon = home.daemon_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    while process_alive(daemon) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The services outlived it...
    assert!(process_alive(web) && process_alive(worker));
    // ...and the next command's daemon takes over: the old processes are gone, the
    // project runs again, once.
    let status = home.until("the project back", |s| {
        state(s, "web") == ServiceState::Healthy && state(s, "worker") == ServiceState::Running
    });
    assert_ne!(home.daemon_pid(), Some(daemon));
    assert!(!process_alive(web) && !process_alive(worker));
    assert_eq!(count(&marker), 1, "{status:?}");
    home.ok(&["down"]);
    assert_eq!(count(&marker), 0);
}

#[test]
fn a_bad_project_file_is_one_line_naming_its_place() {
    let home =
        Home::new("name = \"x\"\n[services.web]\ncommand = \"true\"\nrestart = \"sometimes\"\n");
    let out = home.locald(&["up", "-d"]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("locald.toml:4:11"), "{err}");
    // Nothing was started for it.
    assert_eq!(home.daemon_pid(), None);
}

#[test]
fn the_dashboard_link_from_the_cli_works_once() {
    let home = Home::new(PROJECT);
    let port = locald_test_support::free_port();
    let daemon = std::process::Command::new(env!("CARGO_BIN_EXE_locald"))
        .args(["daemon", "--dashboard", &format!("127.0.0.1:{port}")])
        .env("LOCALD_HOME", home.dir.path().join("home"))
        .env_remove("XDG_RUNTIME_DIR")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while home.daemon_pid().is_none() {
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = home.ok(&["dashboard", "--no-open"]);
    let url = url.trim();
    let prefix = format!("http://locald.localhost:{port}/login?token=");
    assert!(url.starts_with(&prefix), "{url}");
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: locald.localhost:{port}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let path = &url[url.find("/login").unwrap()..];
    let first = get(path);
    assert!(first.starts_with("HTTP/1.1 303"), "{first}");
    assert!(first.contains("locald_session="), "{first}");
    assert!(get(path).starts_with("HTTP/1.1 401"));
    assert!(get("/api/state").starts_with("HTTP/1.1 401"));
    drop(home);
    let mut daemon = daemon;
    let _ = daemon.wait();
}

/// `locald logs` of a project interleaves its services' lines in the order they were
/// written, as `docker compose logs` does (it printed them service by service), with
/// `-n` counted per service; `-t` shows each line's time; stderr lines are kept.
#[test]
fn logs_of_several_services_come_in_the_order_they_were_written() {
    // ping and pong take turns through files, so the order of their lines is known,
    // and 0.2 s apart, more than the daemon may take to read a line.
    let home = Home::new(
        r#"
name = "turns"

[services.ping]
command = "for i in 1 2 3; do echo ping $i; touch ping.$i; while [ ! -e pong.$i ]; do sleep 0.02; done; sleep 0.2; done; echo ping done >&2; exec sleep 1003"

[services.pong]
command = "for i in 1 2 3; do while [ ! -e ping.$i ]; do sleep 0.02; done; sleep 0.2; echo pong $i; touch pong.$i; done; exec sleep 1003"
"#,
    );
    home.ok(&["up", "-d"]);
    let want = "ping | ping 1\npong | pong 1\nping | ping 2\npong | pong 2\nping | ping 3\npong | pong 3\nping | ping done\n";
    let started = Instant::now();
    let mut logs = home.ok(&["logs"]);
    while logs != want && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
        logs = home.ok(&["logs"]);
    }
    assert_eq!(logs, want);

    // The last line of each service, still in the order written.
    assert_eq!(
        home.ok(&["logs", "-n", "1"]),
        "pong | pong 3\nping | ping done\n"
    );

    // -t: the time each line was written, in order, and recent.
    let timed = home.ok(&["logs", "-t", "ping"]);
    let times: Vec<std::time::SystemTime> = timed
        .lines()
        .map(|l| {
            let rest = l.strip_prefix("ping | ").expect(l);
            let (time, line) = rest.split_once(' ').expect(l);
            assert!(line.trim_start().starts_with("ping "), "{l}");
            humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("{time}: {e}"))
        })
        .collect();
    assert_eq!(times.len(), 4, "{timed}");
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{timed}");
    let age = std::time::SystemTime::now()
        .duration_since(times[0])
        .unwrap();
    assert!(age < Duration::from_secs(60), "{timed}");

    // The log file keeps the stream of each line.
    let log = home.dir.path().join("home/projects/turns/logs/ping.log");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(" stderr F ping done\n"), "{text}");
    assert!(text.contains(" stdout F ping 1\n"), "{text}");

    // Containers keep no times: -t on one is refused, saying so.
    let out = home.locald(&["logs", "-t", "no-such-container"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("keeps no times"),
        "{out:?}"
    );
    home.ok(&["down"]);
}
