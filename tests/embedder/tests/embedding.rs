//! Programs that embed locald the way a user's crate does (`src/bin/`): each runs a
//! container from the built-in image and passes on its output and exit code, whatever
//! its `main` looks like, with no call before the async runtime starts; a helper that
//! cannot start is an error naming the step and carrying what the helper said.
#![cfg(target_os = "linux")]
#![allow(clippy::print_stderr)]

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

use locald_test_support::require;

const SCRIPT: &str = "echo hello from $(hostname); echo to stderr >&2; exit 3";

fn embedder(bin: &str, home: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(SCRIPT)
        .env("LOCALD_HOME", home)
        .env_remove("LOCALD_SHIM");
    cmd
}

fn check_runs_a_container(test: &str, bin: &str) {
    if !require(test, true, &[]) {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let out = embedder(bin, home.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{bin}: stdout {stdout:?} stderr {stderr:?}"
    );
    assert!(stdout.starts_with("hello from "), "{stdout:?}");
    assert_eq!(stderr, "to stderr\n");
}

#[test]
fn tokio_main_runs_a_container_with_no_call_in_main() {
    check_runs_a_container(
        "tokio_main_runs_a_container_with_no_call_in_main",
        env!("CARGO_BIN_EXE_embedder-tokio-main"),
    );
}

#[test]
fn current_thread_main_calling_run_if_requested_late_runs_a_container() {
    check_runs_a_container(
        "current_thread_main_calling_run_if_requested_late_runs_a_container",
        env!("CARGO_BIN_EXE_embedder-current-thread"),
    );
}

/// The `#[tokio::main]` embedder run by a normal user (`LOCALD_TEST_USER`, default
/// `locald-test`, which `scripts/test` creates with subordinate ids): its containers
/// are rootless, with nothing different in the program.
#[test]
fn tokio_main_as_a_normal_user_runs_a_rootless_container() {
    use std::os::unix::{fs::MetadataExt, process::CommandExt};
    const TEST: &str = "tokio_main_as_a_normal_user_runs_a_rootless_container";
    if !require(TEST, true, &[]) {
        return;
    }
    let name = std::env::var("LOCALD_TEST_USER").unwrap_or_else(|_| "locald-test".into());
    let Some(user) = nix_user(&name) else {
        locald_test_support::unavailable(TEST, &format!("needs the user {name}"));
        return;
    };
    // A copy the user can run, and a data home the user owns.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("embedder");
    std::fs::copy(env!("CARGO_BIN_EXE_embedder-tokio-main"), &bin).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(user.0), Some(user.1)).unwrap();
    let out = Command::new(&bin)
        .arg("echo hello from $(hostname); cat /proc/self/uid_map; exit 3")
        .env_clear()
        .env("HOME", &home)
        .env("PATH", "/usr/bin:/bin")
        .env("LOCALD_HOME", home.join("data"))
        .uid(user.0)
        .gid(user.1)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("hello from "), "{stdout}");
    let root_map: Vec<&str> = stdout.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(root_map, ["0", &user.0.to_string(), "1"], "{stdout}");
    // The store is the user's.
    assert_eq!(
        std::fs::metadata(home.join("data/images")).unwrap().uid(),
        user.0
    );
}

/// The uid and gid of user `name`, from `/etc/passwd`.
fn nix_user(name: &str) -> Option<(u32, u32)> {
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name) && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
}

#[test]
fn hand_built_runtime_runs_a_container() {
    check_runs_a_container(
        "hand_built_runtime_runs_a_container",
        env!("CARGO_BIN_EXE_embedder-hand-built"),
    );
}

/// Runs the `#[tokio::main]` embedder with `LOCALD_SHIM=shim`; returns its stderr
/// after checking that it failed as locald does (125) without running anything.
fn failed_start(home: &Path, shim: &Path) -> String {
    let out = embedder(env!("CARGO_BIN_EXE_embedder-tokio-main"), home)
        .env("LOCALD_SHIM", shim)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(125), "stderr {stderr:?}");
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    // Nothing is left behind: no container directory, no claimed name.
    let left = locald_test_support::container_dirs_left(home);
    assert!(
        left.is_empty(),
        "left behind in {}: {left:?}",
        home.display()
    );
    stderr
}

#[test]
fn a_helper_that_cannot_start_is_an_error_carrying_its_message() {
    if !require(
        "a_helper_that_cannot_start_is_an_error_carrying_its_message",
        true,
        &[],
    ) {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    // A helper that fails the way a broken install does: it says why and exits.
    let broken = home.path().join("broken-helper");
    std::fs::write(
        &broken,
        "#!/bin/sh\necho 'error while loading shared libraries: libseccomp.so.2' >&2\nexit 7\n",
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stderr = failed_start(home.path(), &broken);
    assert!(
        stderr.starts_with("error: starting container c-"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "the container helper {} ended (exit status: 7) without reporting: \
             error while loading shared libraries: libseccomp.so.2",
            broken.display()
        )),
        "{stderr}"
    );

    // One that cannot be executed at all.
    let not_executable = home.path().join("not-executable");
    std::fs::write(&not_executable, "").unwrap();
    std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let stderr = failed_start(home.path(), &not_executable);
    assert!(
        stderr.contains(&not_executable.display().to_string())
            && stderr.contains("Permission denied"),
        "{stderr}"
    );
}
