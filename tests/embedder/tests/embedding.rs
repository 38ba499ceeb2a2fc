//! Programs that embed locald the way a user's crate does (`src/bin/`): each runs a
//! container from the built-in image and passes on its output and exit code, whatever
//! its `main` looks like, with no call before the async runtime starts; a helper that
//! cannot start is an error naming the step and carrying what the helper said.
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
    let containers = home.join("containers");
    let left: Vec<_> = std::fs::read_dir(&containers)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter().all(|n| n == "names"),
        "left behind in {}: {left:?}",
        containers.display()
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
