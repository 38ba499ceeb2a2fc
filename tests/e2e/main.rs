//! End-to-end tests of the `locald` binary, run as a user runs it.
//!
//! Each test gets its own `LOCALD_HOME` in a temporary directory.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

struct Locald {
    home: tempfile::TempDir,
}

impl Locald {
    fn new() -> Self {
        Locald {
            home: tempfile::tempdir().expect("a temporary LOCALD_HOME"),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_locald"));
        cmd.args(args)
            .env("LOCALD_HOME", self.home.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("locald runs")
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn exec_prints_output_and_exits_with_the_command_code() {
    let out = Locald::new().run(&["exec", "--", "sh", "-c", "echo hi; exit 7"]);
    assert_eq!(stdout(&out), "hi\n");
    assert_eq!(out.status.code(), Some(7), "stderr: {}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

#[test]
fn exec_keeps_stdout_and_stderr_apart() {
    let out = Locald::new().run(&["exec", "--", "sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
    assert!(out.status.success());
}

#[test]
fn exec_reports_a_signal_as_128_plus_n() {
    let out = Locald::new().run(&["exec", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(143));
    let out = Locald::new().run(&["exec", "--", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(out.status.code(), Some(137));
}

#[test]
fn exec_sets_env_and_workdir() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let out = Locald::new()
        .cmd(&[
            "exec",
            "--env",
            "GREETING=hello",
            "-e",
            "FROM_HERE",
            "-e",
            "UNSET_HERE",
            "--workdir",
            dir.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "echo \"$GREETING $FROM_HERE [${UNSET_HERE-unset}] $(pwd)\"",
        ])
        .env("FROM_HERE", "passed")
        .env("UNSET_HERE", "x")
        .env_remove("UNSET_HERE")
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out),
        format!("hello passed [unset] {}\n", dir.display()),
        "stderr: {}",
        stderr(&out)
    );
}

#[test]
fn exec_timeout_kills_and_exits_124() {
    let started = Instant::now();
    let out = Locald::new().run(&[
        "exec",
        "--timeout",
        "300ms",
        "--",
        "sh",
        "-c",
        "sleep 30; echo late",
    ]);
    assert_eq!(out.status.code(), Some(124));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "locald: sh timed out after 300ms and was killed\n"
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the timeout did not fire"
    );
}

#[test]
fn exec_missing_program_exits_127_naming_it() {
    let out = Locald::new().run(&["exec", "--", "locald-no-such-program", "arg"]);
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        stderr(&out),
        "locald: program not found: locald-no-such-program\n"
    );
}

#[test]
fn exec_missing_workdir_is_a_clear_error() {
    let out = Locald::new().run(&["exec", "-w", "/no/such/dir", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        stderr(&out),
        "locald: working directory not found: /no/such/dir\n"
    );
}

#[test]
fn exec_bad_flags_are_usage_errors() {
    let l = Locald::new();
    let out = l.run(&["exec"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("required"), "{}", stderr(&out));
    let out = l.run(&["exec", "--timeout", "soon", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not a duration"), "{}", stderr(&out));
    let out = l.run(&["exec", "-e", "=x", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("invalid environment variable name"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn exec_interactive_forwards_stdin() {
    let mut child = Locald::new()
        .cmd(&["exec", "-i", "--", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "HELLO\n");
    assert!(out.status.success());
}

#[test]
fn exec_without_interactive_gives_empty_stdin() {
    let out = Locald::new()
        .cmd(&["exec", "--", "cat"])
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "");
    assert!(out.status.success());
}

#[test]
fn exec_forwards_ctrl_c_to_the_command() {
    let mut child = Locald::new()
        .cmd(&["exec", "--", "sh", "-c", "echo started; exec sleep 30"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "started\n");
    let pid = child.id().to_string();
    let kill = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "sleep was interrupted and locald reports it"
    );
}

#[test]
fn logs_go_to_stderr_never_into_the_command_output() {
    let out = Locald::new().run(&["-vvv", "exec", "--", "echo", "clean"]);
    assert_eq!(stdout(&out), "clean\n");
    assert!(
        stderr(&out).contains("exec"),
        "expected logs on stderr: {}",
        stderr(&out)
    );
    let out = Locald::new()
        .cmd(&["exec", "--", "echo", "clean"])
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "clean\n");
}

fn expected_platform() -> &'static str {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let in_container = std::path::Path::new("/.dockerenv").exists()
        || std::path::Path::new("/run/.containerenv").exists();
    if in_container || !release.to_lowercase().contains("microsoft") {
        "linux"
    } else if release.trim_end().ends_with("-Microsoft") {
        "wsl1"
    } else {
        "wsl2"
    }
}

#[test]
fn info_json_reports_this_machine() {
    let l = Locald::new();
    let out = l.run(&["info", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(info["platform"], expected_platform());
    assert_eq!(info["os"], "linux");
    assert_eq!(info["arch"], std::env::consts::ARCH);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(info["kernel"], release.trim());
    assert_eq!(info["runtime"]["name"], "container");
    assert_eq!(
        info["runtime"]["capabilities"],
        serde_json::json!(["commands", "containers", "exec", "safe-mode"])
    );
    assert_eq!(info["data_home"], l.home.path().to_str().unwrap());
    let backends: Vec<_> = info["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap(),
                b["available"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        backends,
        [
            ("process", true),
            ("container", true),
            ("lima", false),
            ("wsl", false)
        ]
    );
    let cgroup = info["host"]["cgroup"].as_str().unwrap();
    let unified = std::fs::metadata("/sys/fs/cgroup/cgroup.controllers").is_ok();
    let hybrid = std::path::Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists();
    let want = if unified {
        "v2"
    } else if hybrid {
        "hybrid"
    } else {
        "v1"
    };
    assert_eq!(cgroup, want);
    for key in ["overlayfs", "user_namespaces", "seccomp"] {
        assert!(info["host"][key].is_boolean(), "{key}");
    }
}

#[test]
fn info_text_is_readable() {
    let out = Locald::new().run(&["info"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for needle in [
        "Platform:",
        "Runtime:       container",
        "Backends:",
        "cgroups",
        "Data:",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

#[test]
fn info_piped_into_a_closed_reader_exits_quietly() {
    let mut child = Locald::new()
        .cmd(&["info", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(stderr(&out), "");
}

#[test]
fn every_command_has_help() {
    let l = Locald::new();
    for args in [
        &["--help"][..],
        &["info", "--help"],
        &["exec", "--help"],
        &["help", "exec"],
    ] {
        let out = l.run(args);
        assert!(out.status.success(), "{args:?}");
        assert!(
            stdout(&out).contains("Usage: locald"),
            "{args:?}: {}",
            stdout(&out)
        );
    }
    let out = l.run(&["--version"]);
    assert_eq!(
        stdout(&out),
        format!("locald {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = l.run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let out = l.run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unrecognized subcommand"));
}
