//! `locald up` as a user runs it: the example project in `examples/project` comes up
//! in dependency order, its services' output is prefixed with their names, Ctrl-C
//! stops everything, and a bad `locald.toml` is one clear error with its line.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

fn locald(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_locald"));
    command.env("LOCALD_HOME", home).env_remove("LOCALD_HOST");
    command
}

/// An attached `locald up` of the example project, once its greeter reached the web
/// service: the CLI, its stderr lines so far, and the services' pids.
fn up_until_greeted(home: &Path) -> (std::process::Child, Vec<String>, Vec<u32>) {
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/project");
    let mut child = locald(home)
        .arg("up")
        .current_dir(&project)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<(bool, String)>();
    for (is_out, pipe) in [
        (
            true,
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        ),
        (false, Box::new(child.stderr.take().unwrap())),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send((is_out, line));
            }
        });
    }
    // The status lines (stderr) and the services' output (stdout) come through two
    // pipes: read until both the greeting and the two services' pids are in.
    let pid_of = |l: &String| -> Option<u32> {
        l.split("(pid ")
            .nth(1)?
            .split([',', ')'])
            .next()?
            .parse()
            .ok()
    };
    let mut stderr = Vec::new();
    let mut greeted = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !(greeted && stderr.iter().filter_map(pid_of).count() >= 2) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok((is_out, line)) = rx.recv_timeout(left) else {
            break;
        };
        if is_out {
            if !greeted {
                assert_eq!(
                    line, "greeter | hello from locald up",
                    "stdout is prefixed output"
                );
            }
            greeted = true;
        } else {
            stderr.push(line);
        }
    }
    assert!(greeted, "the greeter reached the web service: {stderr:#?}");
    let pids: Vec<u32> = stderr.iter().filter_map(pid_of).collect();
    assert_eq!(pids.len(), 2, "{stderr:#?}");
    (child, stderr, pids)
}

fn interrupt(child: &std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
}

#[test]
fn the_example_project_comes_up_in_order_and_ctrl_c_stops_it() {
    let home = tempfile::tempdir().unwrap();
    let (mut child, stderr, pids) = up_until_greeted(home.path());
    let pos = |want: &str| {
        stderr
            .iter()
            .position(|l| l.starts_with(want))
            .unwrap_or_else(|| panic!("no {want:?} in {stderr:#?}"))
    };
    assert!(
        pos("locald: web healthy") < pos("locald: greeter running"),
        "the greeter waits until the web service is healthy: {stderr:#?}"
    );

    interrupt(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    for pid in pids {
        assert!(
            !locald_test_support::process_alive(pid),
            "{pid} still runs after Ctrl-C"
        );
    }
    // Each service kept its output in its log.
    let log = home.path().join("projects/hello/logs/greeter.log");
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("hello from locald up"));
}

#[test]
fn a_second_up_refuses_and_one_after_a_kill_9_ends_what_it_left() {
    let home = tempfile::tempdir().unwrap();
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/project");
    let (mut first, _, old) = up_until_greeted(home.path());

    // The project has a supervisor already: a second one would start it twice.
    let out = locald(home.path())
        .arg("up")
        .current_dir(&project)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "already up in another `locald up` (pid {})",
            first.id()
        )),
        "{err}"
    );
    for pid in &old {
        assert!(
            locald_test_support::process_alive(*pid),
            "{pid} was stopped"
        );
    }

    // Killed without a chance to stop them, the first leaves its services running...
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(old
        .iter()
        .all(|pid| locald_test_support::process_alive(*pid)));
    // ...until the next `up` of the project ends them and starts its own, once.
    let (mut second, stderr, new) = up_until_greeted(home.path());
    for pid in &old {
        assert!(
            !locald_test_support::process_alive(*pid),
            "{pid} survived the next up"
        );
    }
    assert!(new.iter().all(|pid| !old.contains(pid)));
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("left by a `locald up` that was killed")),
        "{stderr:#?}"
    );
    interrupt(&second);
    assert_eq!(second.wait().unwrap().code(), Some(130));
    for pid in &new {
        assert!(!locald_test_support::process_alive(*pid));
    }
    assert!(!home.path().join("projects/hello/attached.json").exists());
}

#[test]
fn a_bad_project_file_is_one_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("locald.toml"),
        "[services.web]\ncommand = \"true\"\ndepends_on = [\"db\"]\n",
    )
    .unwrap();
    let out = locald(home.path())
        .arg("up")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "locald: locald.toml:3:15: service `web` depends on `db`, which is not defined (services: web)\n"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn an_unknown_service_is_named_with_the_ones_there_are() {
    let home = tempfile::tempdir().unwrap();
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/project");
    let out = locald(home.path())
        .args(["up", "api"])
        .current_dir(&project)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "locald: invalid service \"api\": project hello has no such service (services: greeter, web)\n"
    );
}
