//! Runs each example as a newcomer would and checks what they would look at: the
//! output and the exit code.
//!
//! `cargo test` builds the examples into the target directory's `examples/` folder,
//! next to this test's `deps/`. The remote example also needs the `locald` binary
//! (`cargo test --workspace` or `cargo build -p locald-cli` builds it). The container
//! examples need root: elsewhere they say SKIP loudly (CI runs as root, so there they
//! really run).

#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The target directory's profile folder (`target/debug`), from this test's path
/// (`target/debug/deps/examples-HASH`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test runs from the target directory's deps/ folder")
        .to_owned()
}

/// A command running the built example `name`, with its own `LOCALD_HOME` (`home`).
fn example(name: &str, home: &Path) -> Command {
    let path = profile_dir()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "the example {name} is not built at {}: build the examples first \
         (`cargo test -p locald` or `cargo build --examples`)",
        path.display()
    );
    let mut cmd = Command::new(path);
    cmd.env("LOCALD_HOME", home)
        .env_remove("LOCALD_HOST")
        .env_remove("RUST_LOG");
    cmd
}

/// The `locald` binary of this target directory.
fn locald_bin() -> PathBuf {
    let path = profile_dir().join(format!("locald{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "the remote example needs the locald binary, not built at {}: run \
         `cargo build -p locald-cli` first (`cargo test --workspace` builds it)",
        path.display()
    );
    path
}

/// Runs an example; returns its output and stdout. Its stderr goes to the test's, which
/// the harness shows when the test fails.
#[allow(clippy::print_stderr)]
fn run(cmd: &mut Command) -> (Output, String) {
    let out = cmd.output().expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    (out, stdout)
}

fn home() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary LOCALD_HOME")
}

#[test]
fn backends_lists_every_backend_and_the_one_picked() {
    let home = home();
    let (out, stdout) = run(&mut example("backends", home.path()));
    assert!(out.status.success(), "{stdout}");
    let platform = locald::Platform::detect();
    assert!(
        stdout.starts_with(&format!("platform: {platform}\n")),
        "{stdout}"
    );
    for backend in locald::backends(platform) {
        assert!(
            stdout.contains(&format!(" {:<10} {}\n", backend.name, backend.detail)),
            "{stdout}"
        );
    }
    let picked = locald::runtime().unwrap().info().name;
    assert!(
        stdout.contains(&format!(
            "locald::runtime() picks: {picked} on {platform}\n"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("yes running commands\n"), "{stdout}");
}

/// Without `LOCALD_HOST` or a daemon on the default socket, the example bridges to a
/// `locald daemon --stdio` it starts.
#[test]
fn remote_through_a_stdio_bridge() {
    let home = home();
    let locald = locald_bin();
    let (out, stdout) = run(example("remote", home.path())
        .env("XDG_RUNTIME_DIR", home.path().join("run"))
        .env("LOCALD_BIN", &locald));
    assert!(out.status.success(), "{stdout}");
    let serves = locald::runtime().unwrap().info();
    for line in [
        format!("connecting to {} daemon --stdio\n", locald.display()),
        format!(
            "serves: the {} runtime on {}\n",
            serves.name, serves.platform
        ),
        "  can: running commands\n".into(),
        "finished with exit code 0\n".into(),
    ] {
        assert!(stdout.contains(&line), "no {line:?} in {stdout}");
    }
    assert!(stdout.contains("\nhello from pid "), "{stdout}");
}

/// With `LOCALD_HOST`, the example connects to that daemon: the pid it reports is the
/// daemon's.
#[cfg(unix)]
#[test]
fn remote_to_the_daemon_locald_host_names() {
    let home = home();
    let socket = home.path().join("daemon.sock");
    let mut daemon = Command::new(locald_bin())
        .args(["daemon", "--socket"])
        .arg(&socket)
        .env("LOCALD_HOME", home.path())
        .env_remove("LOCALD_HOST")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("the daemon starts");
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(daemon.try_wait().unwrap().is_none(), "the daemon exited");
        assert!(
            std::time::Instant::now() < give_up,
            "the daemon never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let host = format!("unix://{}", socket.display());
    let (out, stdout) = run(example("remote", home.path()).env("LOCALD_HOST", &host));
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.starts_with(&format!("connecting to {host}\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(", pid {})\n", daemon.id())),
        "{stdout}"
    );
    assert!(stdout.contains("finished with exit code 0\n"), "{stdout}");
}

#[cfg(target_os = "linux")]
#[test]
fn run_container_pulls_the_builtin_image_and_exits_with_the_container_code() {
    if !locald_test_support::require("run_container example", true, &[]) {
        return;
    }
    let home = home();
    let (out, stdout) = run(&mut example("run_container", home.path()));
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("pulled localhost/locald/busybox:latest (sha256:"),
        "{stdout}"
    );
    assert!(lines[1].starts_with("hello from "), "{stdout}");
    assert!(
        lines[2].starts_with("container ") && lines[2].ends_with(" ended with exit code 3"),
        "{stdout}"
    );

    // A command of one's own, on the image now stored.
    let (out, stdout) =
        run(example("run_container", home.path()).args(["localhost/locald/busybox", "echo", "hi"]));
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(stdout.lines().nth(1), Some("hi"), "{stdout}");
}

#[cfg(target_os = "linux")]
#[test]
fn safe_mode_takes_away_what_the_default_allows() {
    if !locald_test_support::require("safe_mode example", true, &[]) {
        return;
    }
    // Private, as root's default home (/root/.local/share/locald) is: Safe Mode without
    // a user namespace (container root stays host root, without capabilities). The
    // searchable home is `safe_mode_on_an_image_with_a_user_namespace`.
    let home = home();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let (out, stdout) = run(&mut example("safe_mode", home.path()));
    assert!(out.status.success(), "{stdout}");
    let (default, safe) = stdout
        .split_once("safe mode:\n")
        .expect("a safe mode section");
    assert!(default.starts_with("default:\n"), "{stdout}");
    for line in ["no new privileges: 0", "write /: allowed", "chown: allowed"] {
        assert!(default.contains(line), "no {line:?} in {default}");
    }
    assert!(
        !default.contains("capabilities: 0000000000000000"),
        "{default}"
    );
    for line in [
        "capabilities: 0000000000000000",
        "no new privileges: 1",
        "write /: denied",
        "write /tmp: allowed",
        "chown: denied",
    ] {
        assert!(safe.contains(line), "no {line:?} in {safe}");
    }
}

/// Safe Mode maps container root to an unprivileged host uid when the home is
/// searchable by others; on an image's root filesystem the mount points the image
/// lacks (`/etc/hosts`, ...) are made in the container's snapshot before it starts,
/// which that uid could not do itself ("failed to prepare rootfs" before).
#[cfg(target_os = "linux")]
#[test]
fn safe_mode_on_an_image_with_a_user_namespace() {
    if !locald_test_support::require("safe_mode example (user namespace)", true, &[]) {
        return;
    }
    let home = home();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (out, stdout) = run(&mut example("safe_mode", home.path()));
    assert!(out.status.success(), "{stdout}");
    let (_, safe) = stdout
        .split_once("safe mode:\n")
        .expect("a safe mode section");
    assert!(!safe.contains("the probe failed"), "{stdout}");
    for line in [
        "capabilities: 0000000000000000",
        "no new privileges: 1",
        "write /: denied",
        "write /tmp: allowed",
        "chown: denied",
    ] {
        assert!(safe.contains(line), "no {line:?} in {safe}");
    }
}
