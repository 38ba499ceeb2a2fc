//! End-to-end tests of the `locald` binary, run as a user runs it.
//!
//! Each test gets its own `LOCALD_HOME` in a temporary directory. Every test of the
//! CLI runs twice: in process, and again (module `through_daemon`) with a `locald
//! daemon` started on that home and `LOCALD_HOST` pointing every invocation at it;
//! output and exit codes must be the same.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Output, Stdio},
    rc::Rc,
    time::{Duration, Instant},
};

mod daemon;

struct Locald {
    home: Rc<tempfile::TempDir>,
    host: Option<String>,
}

thread_local! {
    /// Set by the `through_daemon` copies of the tests.
    static THROUGH_DAEMON: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The daemons (and their homes) of the running test: they live until the test
    /// ends, even when a test drops its `Locald` while the CLI still runs.
    static DAEMONS: std::cell::RefCell<Vec<(Rc<tempfile::TempDir>, daemon::Daemon)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Locald {
    fn new() -> Self {
        let home = Rc::new(tempfile::tempdir().expect("a temporary LOCALD_HOME"));
        let mut host = None;
        if THROUGH_DAEMON.with(|d| d.get()) {
            let daemon = daemon::Daemon::start(home.path(), &[]);
            host = Some(daemon.host());
            DAEMONS.with(|d| d.borrow_mut().push((home.clone(), daemon)));
        }
        Locald { home, host }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        self.command(env!("CARGO_BIN_EXE_locald"), args)
    }

    /// `program` (locald, or what runs it) with `args`, for this home (and daemon).
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("LOCALD_HOME", self.home.path())
            .env_remove("RUST_LOG")
            .env_remove("LOCALD_HOST")
            .stdin(Stdio::null());
        if let Some(host) = &self.host {
            cmd.env("LOCALD_HOST", host);
        }
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
        serde_json::json!(["commands", "containers", "images", "exec", "safe-mode"])
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

/// The shared busybox fixture as an image layer.
#[cfg(target_os = "linux")]
fn busybox_layer() -> locald_test_support::Layer {
    let rootfs = locald::native::testing::shared_busybox_rootfs().expect("busybox rootfs");
    locald_test_support::Layer::from_dir(&rootfs).expect("the busybox rootfs as a layer")
}

#[cfg(target_os = "linux")]
#[test]
fn pull_then_images_lists_it() {
    use locald_test_support as support;
    if !support::require(
        "pull_then_images_lists_it",
        true,
        &["docker-registry", "skopeo"],
    ) {
        return;
    }
    let registry = support::Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let mut layout = support::Layout::new(dir.path().join("oci"));
    let image = layout.image(
        "amd64",
        &[(busybox_layer(), support::Compression::Gzip)],
        serde_json::json!({"Cmd": ["sh"]}),
    );
    layout.name_image("img", &image);
    let name = format!("{}/busybox:latest", registry.addr);
    support::push(&layout.dir, "img", &name, &[]);

    let l = Locald::new();
    let out = l.run(&["pull", &name]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("needs --insecure"),
        "{}",
        stderr(&out)
    );

    let out = l.run(&["pull", "--insecure", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "Digest: {}\nStatus: pulled linux/amd64 for {name}\n{name}\n",
            image.manifest_digest
        )
    );
    assert!(
        stderr(&out).contains(": done"),
        "plain progress lines when not a terminal: {}",
        stderr(&out)
    );

    let out = l.run(&["pull", "--insecure", &name]);
    assert!(
        stdout(&out).contains("Status: image is up to date for"),
        "{}",
        stdout(&out)
    );

    let out = l.run(&["images"]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("REPOSITORY"));
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cols[0], format!("{}/busybox", registry.addr));
    assert_eq!(cols[1], "latest");
    assert_eq!(
        cols[2],
        &image.config_digest["sha256:".len().."sha256:".len() + 12]
    );

    let out = l.run(&["images", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["digest"], image.manifest_digest);

    let out = l.run(&["rmi", &name, "nope:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), format!("Untagged: {name}\n"));
    assert_eq!(stderr(&out), "locald: no such image: nope:1\n");
    let out = l.run(&["image", "prune"]);
    assert!(
        stdout(&out).starts_with("Removed 3 blobs and 1 layers"),
        "{}",
        stdout(&out)
    );
    assert_eq!(stdout(&l.run(&["images", "-q"])), "");
}

#[test]
fn bad_image_references_are_usage_errors() {
    let out = Locald::new().run(&["pull", "Not/Valid"]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        stderr(&out),
        "locald: invalid image reference \"Not/Valid\": repository name must be lowercase\n"
    );
}

#[test]
fn a_pull_killed_mid_layer_leaves_no_image_and_the_next_pull_works() {
    use locald_test_support as support;
    use std::sync::atomic::Ordering;
    if !support::require(
        "a_pull_killed_mid_layer_leaves_no_image_and_the_next_pull_works",
        true,
        &["docker-registry", "skopeo"],
    ) {
        return;
    }
    let registry = support::Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let mut layout = support::Layout::new(dir.path().join("oci"));
    let data = support::noise(4 << 20);
    let image = layout.image(
        "amd64",
        &[(
            support::Layer::new().file("big", data),
            support::Compression::Gzip,
        )],
        serde_json::json!({}),
    );
    layout.name_image("img", &image);
    support::push(&layout.dir, "img", &format!("{}/big:1", registry.addr), &[]);
    let proxy = support::Proxy::start(&registry.addr);
    proxy.faults.delay_us.store(20_000, Ordering::SeqCst);

    let l = Locald::new();
    let name = format!("{}/big:1", proxy.addr);
    let mut child = l
        .cmd(&["pull", "--insecure", &name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let give_up = Instant::now() + Duration::from_secs(30);
    while proxy.relayed.load(Ordering::SeqCst) < (1 << 20) {
        assert!(Instant::now() < give_up, "the pull never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL: no cleanup code runs
    child.wait().unwrap();

    let out = l.run(&["images", "-q"]);
    assert_eq!(stdout(&out), "", "a half-pulled image is visible");
    let layers = l.home.path().join("images/layers");
    assert_eq!(
        std::fs::read_dir(&layers).unwrap().count(),
        0,
        "a half-unpacked layer is visible"
    );

    proxy.faults.delay_us.store(0, Ordering::SeqCst);
    let out = l.run(&["pull", "--insecure", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = l.run(&["image", "prune"]);
    assert!(out.status.success());
    let tmp = l.home.path().join("images/tmp");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "prune left the killed pull's temp files"
    );
    assert_eq!(stdout(&l.run(&["images", "-q"])).lines().count(), 1);
}

#[test]
fn import_a_directory_and_load_a_layout() {
    use locald_test_support as support;
    if !support::require("import_a_directory_and_load_a_layout", true, &[]) {
        return;
    }
    let l = Locald::new();
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hostname"), "imported\n").unwrap();
    let out = l.run(&["import", rootfs.to_str().unwrap(), "local/imported:1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("sha256:"));

    let mut layout = support::Layout::new(dir.path().join("oci"));
    let image = layout.image(
        "amd64",
        &[(
            support::Layer::new().file("x", "y"),
            support::Compression::Gzip,
        )],
        serde_json::json!({}),
    );
    layout.name_image("example.com/loaded:2", &image);
    let out = l.run(&["load", layout.dir.to_str().unwrap()]);
    assert_eq!(
        stdout(&out),
        "Loaded image: example.com/loaded:2\n",
        "{}",
        stderr(&out)
    );

    let out = l.run(&["images"]);
    let text = stdout(&out);
    assert!(
        text.contains("local/imported") && text.contains("example.com/loaded"),
        "{text}"
    );

    let out = l.run(&["import", "/no/such/dir", "x:1"]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        stderr(&out),
        "locald: reading /no/such/dir: No such file or directory (os error 2)\n"
    );
    let out = l.run(&["load", rootfs.to_str().unwrap()]);
    assert!(
        stderr(&out).contains("not an OCI image layout"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn login_stores_private_credentials_and_pull_uses_them() {
    use locald_test_support as support;
    if !support::require(
        "login_stores_private_credentials_and_pull_uses_them",
        true,
        &["docker-registry", "skopeo", "openssl", "htpasswd"],
    ) {
        return;
    }
    let registry = support::Registry::start_with(support::RegistryOptions {
        tls: true,
        basic_auth: Some(("bob".into(), "pa55word".into())),
    });
    let certs = tempfile::tempdir().unwrap();
    std::fs::copy(
        registry.ca_cert.as_ref().unwrap(),
        certs.path().join("ca.crt"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut layout = support::Layout::new(dir.path().join("oci"));
    let image = layout.image(
        "amd64",
        &[(
            support::Layer::new().file("x", "y"),
            support::Compression::Gzip,
        )],
        serde_json::json!({}),
    );
    layout.name_image("img", &image);
    let name = format!("{}/private:1", registry.addr);
    support::push(
        &layout.dir,
        "img",
        &name,
        &[
            "--dest-cert-dir",
            certs.path().to_str().unwrap(),
            "--dest-creds",
            "bob:pa55word",
        ],
    );

    let l = Locald::new();
    let ca_dir = l.home.path().join("certs.d").join(&registry.addr);
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::copy(registry.ca_cert.as_ref().unwrap(), ca_dir.join("ca.crt")).unwrap();

    let out = l.run(&["pull", &name]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("refused access") && stderr(&out).contains("locald login"),
        "{}",
        stderr(&out)
    );

    let login = |password: &str| {
        let mut child = l
            .cmd(&["login", &registry.addr, "-u", "bob", "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = login("nope");
    assert_eq!(out.status.code(), Some(125));
    assert!(!stderr(&out).contains("nope"), "the password was printed");
    let out = login("pa55word");
    assert_eq!(stdout(&out), "Login Succeeded\n", "{}", stderr(&out));
    use std::os::unix::fs::PermissionsExt;
    let auth = l.home.path().join("auth.json");
    assert_eq!(
        std::fs::metadata(&auth).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let out = l.run(&["pull", "-q", &name]);
    assert_eq!(stdout(&out), format!("{name}\n"), "{}", stderr(&out));
    let out = l.run(&["logout", &registry.addr]);
    assert_eq!(
        stdout(&out),
        format!("Removed login credentials for {}\n", registry.addr)
    );
}
/// Runs a test of the CLI with a daemon behind it.
fn run_through_daemon(test: fn()) {
    THROUGH_DAEMON.with(|d| d.set(true));
    test();
    DAEMONS.with(|d| d.borrow_mut().clear());
}

/// The same tests again, every CLI invocation going through a daemon.
macro_rules! through_daemon {
    ($($test:ident),* $(,)?) => {
        mod through_daemon {
            $(
                #[test]
                fn $test() {
                    super::run_through_daemon(super::$test);
                }
            )*
        }
    };
}

through_daemon!(
    exec_prints_output_and_exits_with_the_command_code,
    exec_keeps_stdout_and_stderr_apart,
    exec_reports_a_signal_as_128_plus_n,
    exec_sets_env_and_workdir,
    exec_timeout_kills_and_exits_124,
    exec_missing_program_exits_127_naming_it,
    exec_missing_workdir_is_a_clear_error,
    exec_bad_flags_are_usage_errors,
    exec_interactive_forwards_stdin,
    exec_without_interactive_gives_empty_stdin,
    exec_forwards_ctrl_c_to_the_command,
    logs_go_to_stderr_never_into_the_command_output,
    info_json_reports_this_machine,
    info_text_is_readable,
    info_piped_into_a_closed_reader_exits_quietly,
    every_command_has_help,
    pull_then_images_lists_it,
    bad_image_references_are_usage_errors,
    import_a_directory_and_load_a_layout,
    login_stores_private_credentials_and_pull_uses_them,
    run_an_image_pulled_from_a_registry_and_the_builtin_image,
);
/// Containers: Linux only, and they need root (CI runs as root).
#[cfg(target_os = "linux")]
mod containers {
    use super::*;

    #[allow(clippy::print_stderr)]
    fn rootfs() -> Option<String> {
        if !locald::native::testing::is_root() {
            eprintln!("SKIP: container tests need root (CI runs them as root)");
            return None;
        }
        let dir = locald::native::testing::shared_busybox_rootfs().expect("busybox rootfs");
        Some(dir.to_str().unwrap().to_owned())
    }

    impl Locald {
        fn containers_left(&self) -> usize {
            locald_test_support::container_dirs_left(self.home.path()).len()
        }
    }

    /// `locald run` forks its container's helper from a forker that it forked from
    /// itself at its start, instead of executing the helper: the helper has the CLI's
    /// command line and is the forker's child, the forker the CLI's. The forker ends
    /// with the CLI.
    #[test]
    fn the_cli_forks_the_container_helper_instead_of_executing_it() {
        use locald_test_support::{cmdline_of, parent_of};
        let Some(r) = rootfs() else { return };
        let l = Locald::new();
        let mut cli = l
            .cmd(&[
                "run",
                "--rm",
                "--name",
                "forked",
                "--network",
                "none",
                "--rootfs",
                &r,
                "sleep",
                "30",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let init = loop {
            let inspect: serde_json::Value =
                serde_json::from_slice(&l.run(&["inspect", "forked"]).stdout).unwrap_or_default();
            if let Some(pid) = inspect["pid"].as_u64() {
                break pid as u32;
            }
            assert!(Instant::now() < deadline, "the container did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        let shim = parent_of(init);
        let forker = parent_of(shim);
        let cli_line = cmdline_of(cli.id());
        assert!(
            forker != cli.id() && parent_of(forker) == cli.id(),
            "the helper's parent is {forker}, the CLI is {}",
            cli.id()
        );
        assert_eq!(
            cmdline_of(shim),
            cli_line,
            "the helper was executed, not forked"
        );
        assert_eq!(cmdline_of(forker), cli_line);
        assert!(l.run(&["kill", "forked"]).status.success());
        assert_eq!(cli.wait().unwrap().code(), Some(137));
        let forker_alive = locald_test_support::settle(
            Duration::from_secs(5),
            || locald_test_support::process_alive(forker),
            |alive| !alive,
        );
        assert!(!forker_alive, "the forker outlived the CLI");
        assert_eq!(l.containers_left(), 0);
    }

    #[test]
    fn run_prints_output_and_exits_with_the_container_code() {
        let Some(r) = rootfs() else { return };
        let l = Locald::new();
        let out = l.run(&[
            "run",
            "--rm",
            "--rootfs",
            &r,
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ]);
        assert_eq!(stdout(&out), "out\n");
        assert_eq!(stderr(&out), "err\n");
        assert_eq!(out.status.code(), Some(7));
        assert_eq!(l.containers_left(), 0);
        // A container killed by signal N exits 128 + N, like docker.
        let mut child = l
            .cmd(&[
                "run",
                "--rm",
                "--name",
                "victim",
                "--rootfs",
                &r,
                "sh",
                "-c",
                "echo up; exec sleep 100",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "up\n");
        assert!(l.run(&["kill", "victim"]).status.success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
        assert_eq!(l.containers_left(), 0);
    }

    #[test]
    fn run_never_mixes_locald_logs_into_container_output() {
        let Some(r) = rootfs() else { return };
        let out = Locald::new().run(&["-vvv", "run", "--rm", "--rootfs", &r, "echo", "clean"]);
        assert_eq!(stdout(&out), "clean\n");
        assert!(out.status.success(), "{}", stderr(&out));
    }

    #[test]
    fn run_flags_reach_the_container() {
        let Some(r) = rootfs() else { return };
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("f"), "hostfile\n").unwrap();
        let vol = format!("{}:/h:ro", host.path().display());
        let out = Locald::new().run(&[
            "run", "--rm", "--rootfs", &r, "-e", "A=1", "-v", &vol, "--tmpfs", "/scratch",
            "--user", "app", "--workdir", "/tmp", "--hostname", "h1", "--network", "none",
            "--memory", "32m", "--cpus", "0.5", "--pids-limit", "50", "--read-only",
            "sh", "-c", "echo $A $(id -un) $(pwd) $(hostname) $(cat /h/f) $(ls /sys/class/net); touch /x 2>/dev/null || echo ro",
        ]);
        assert_eq!(
            stdout(&out),
            "1 app /tmp h1 hostfile lo\nro\n",
            "{}",
            stderr(&out)
        );
    }

    #[test]
    fn run_interactive_forwards_stdin() {
        let Some(r) = rootfs() else { return };
        let l = Locald::new();
        let mut child = l
            .cmd(&["run", "--rm", "-i", "--rootfs", &r, "tr", "a-z", "A-Z"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(stdout(&out), "SHOUT\n");
    }

    #[test]
    fn detached_container_life_cycle() {
        let Some(r) = rootfs() else { return };
        let l = Locald::new();
        let out = l.run(&[
            "run",
            "-d",
            "--name",
            "web",
            "--rootfs",
            &r,
            "sh",
            "-c",
            "echo started; exec sleep 100",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let id = stdout(&out).trim().to_owned();
        assert_eq!(id.len(), 64);
        let ps = stdout(&l.run(&["ps"]));
        assert!(ps.contains("web") && ps.contains("running"), "{ps}");
        let json: serde_json::Value =
            serde_json::from_slice(&l.run(&["ps", "--json"]).stdout).unwrap();
        assert_eq!(json[0]["name"], "web");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !stdout(&l.run(&["logs", "web"])).contains("started") {
            assert!(Instant::now() < deadline, "no logs");
            std::thread::sleep(Duration::from_millis(20));
        }
        // `exec CONTAINER CMD` runs in the container; `exec -- CMD` on the host.
        let out = l.run(&["exec", "web", "sh", "-c", "cat /proc/1/cmdline; exit 3"]);
        assert_eq!(stdout(&out), "sleep\x00100\x00");
        assert_eq!(out.status.code(), Some(3));
        let out = l.run(&["exec", "--", "echo", "host"]);
        assert_eq!(stdout(&out), "host\n");
        let inspect: serde_json::Value =
            serde_json::from_slice(&l.run(&["inspect", &id[..8]]).stdout).unwrap();
        assert_eq!(inspect["id"], id);
        let out = l.run(&["rm", "web"]);
        assert_eq!(out.status.code(), Some(125));
        assert!(stderr(&out).contains("is running"), "{}", stderr(&out));
        let out = l.run(&["kill", "-s", "TERM", "web"]);
        assert!(out.status.success());
        let out = l.run(&["stop", "-t", "1", "web"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let ps = stdout(&l.run(&["ps", "-a"]));
        assert!(ps.contains("killed (SIGKILL)"), "{ps}");
        assert!(l.run(&["rm", "web"]).status.success());
        assert_eq!(l.containers_left(), 0);
        let out = l.run(&["logs", "web"]);
        assert_eq!(stderr(&out), "locald: no such container: web\n");
    }

    #[test]
    fn run_bad_inputs_are_clear_and_leave_nothing() {
        let Some(r) = rootfs() else { return };
        let l = Locald::new();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let busy = format!("{port}:80");
        let cases: Vec<(Vec<&str>, i32, String)> = vec![
            (vec!["-v", "/no/such/dir:/x"], 125, "locald: invalid mount \"/no/such/dir\": the host path does not exist\n".into()),
            (vec!["--memory", "12q"], 125, "locald: invalid memory limit \"12q\": unknown unit; use b, k, m, g, t or p\n".into()),
            (vec!["-p", &busy], 125, format!("locald: invalid port mapping \"{port}:80/tcp\": host port {port} is already in use\n")),
            (vec!["--network", "bogus"], 2, String::new()),
        ];
        for (flags, code, want) in cases {
            let mut args = vec!["run", "--rm", "--rootfs", &r];
            args.extend(flags.iter().copied());
            args.push("true");
            let out = l.run(&args);
            assert_eq!(out.status.code(), Some(code), "{flags:?}: {}", stderr(&out));
            if !want.is_empty() {
                assert_eq!(stderr(&out), want);
            }
        }
        let out = l.run(&["run", "--rm", "--rootfs", &r, "no-such-command"]);
        assert_eq!(out.status.code(), Some(127));
        assert_eq!(stderr(&out), "locald: program not found: no-such-command\n");
        // A missing image is pulled first, as docker run does; here its registry is
        // not there.
        let out = l.run(&["run", "--rm", "127.0.0.1:9/nope:1", "true"]);
        assert_eq!(out.status.code(), Some(125));
        assert!(
            stderr(&out).starts_with(
                "Unable to find image '127.0.0.1:9/nope:1' locally\nlocald: registry 127.0.0.1:9: unreachable"
            ),
            "{}",
            stderr(&out)
        );
        assert_eq!(l.containers_left(), 0);
    }

    #[test]
    fn three_hundred_cli_runs_leave_nothing_behind() {
        let Some(r) = rootfs() else { return };
        let l = Locald::new();
        let home = l.home.path().to_str().unwrap().to_owned();
        for i in 0..300 {
            let out = l.run(&["run", "--rm", "--memory", "32m", "--rootfs", &r, "true"]);
            assert!(out.status.success(), "run {i}: {}", stderr(&out));
        }
        assert_eq!(l.containers_left(), 0);
        let names = std::fs::read_dir(l.home.path().join("container-names"))
            .unwrap()
            .count();
        assert_eq!(names, 0);
        let mounts = locald_test_support::mounts_under_home(l.home.path());
        assert!(mounts.is_empty(), "mounts left: {mounts:#?}");
        // Cgroups are checked by id in locald-runtime's leak test. A run returns
        // once the container is gone; its shim may still wait some milliseconds for
        // its pasta's end (the kernel removing the tap device): 5 s for both.
        let left = locald_test_support::settle(
            std::time::Duration::from_secs(5),
            || locald_test_support::processes_mentioning(&home),
            Vec::is_empty,
        );
        assert!(left.is_empty(), "processes left: {left:?}");
    }

    /// `LOCALD_PHASES` (what `scripts/bench-containers --phases` sets): the CLI, the
    /// SDK and the container shim each append their phases of one run to the file.
    #[test]
    fn run_records_its_phases_across_processes_when_asked() {
        let Some(r) = rootfs() else { return };
        let l = Locald::new();
        let file = l.home.path().join("phases.jsonl");
        let out = l
            .cmd(&["run", "--rm", "--network", "none", "--rootfs", &r, "true"])
            .env("LOCALD_PHASES", &file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let text = std::fs::read_to_string(&file).expect("the phases file was written");
        let mut by_name = std::collections::HashMap::new();
        let mut pids = std::collections::HashSet::new();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect(line);
            let ms = v["ms"].as_f64().expect(line);
            assert!((0.0..60_000.0).contains(&ms), "{line}");
            pids.insert(v["pid"].as_u64().expect(line));
            by_name.insert(v["phase"].as_str().unwrap().to_owned(), ms);
        }
        for phase in [
            "cli: arguments + logging + async runtime",
            "cli: run_container (total)",
            "shim: overlay mount",
            "shim: libcontainer build (create)",
            "shim: libcontainer start",
            "shim: container runs (wait)",
            "shim: unmount",
        ] {
            assert!(by_name.contains_key(phase), "{phase} missing from:\n{text}");
        }
        // The CLI and the shim are different processes.
        assert!(pids.len() >= 2, "{text}");
        // Without the variable nothing is written anywhere.
        let out = l.run(&["run", "--rm", "--network", "none", "--rootfs", &r, "true"]);
        assert!(out.status.success());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    }

    /// Runs `args` as if typed at a terminal of 24x80 (the CLI leads a session whose
    /// controlling terminal it is), resizes that terminal to 50x132 once `24 80` shows,
    /// and returns what appeared on it and the exit code.
    fn on_a_terminal(l: &Locald, args: &[&str]) -> (String, Option<i32>) {
        use std::io::Read;
        let size = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).unwrap();
        let slave = nix::unistd::ttyname(&pty.slave).unwrap();
        // util-linux's `setsid --ctty` makes the terminal on stdin the session's.
        let mut cmd = l.command("setsid", &["-w", "-c", env!("CARGO_BIN_EXE_locald")]);
        cmd.args(args)
            .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pty.slave));
        let mut child = cmd.spawn().unwrap();
        // Only the CLI holds the terminal now: its output ends when the CLI's does.
        drop(cmd);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut master = std::fs::File::from(pty.master);
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut seen = String::new();
        let mut resized = false;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !seen.contains("50 132") && Instant::now() < deadline {
            if let Ok(bytes) = rx.recv_timeout(Duration::from_millis(100)) {
                seen.push_str(&String::from_utf8_lossy(&bytes));
            }
            if !resized && seen.contains("24 80") {
                resized = true;
                let status = Command::new("stty")
                    .arg("-F")
                    .arg(&slave)
                    .args(["rows", "50", "cols", "132"])
                    .status()
                    .unwrap();
                assert!(status.success());
            }
        }
        let code = child.wait().unwrap().code();
        while let Ok(bytes) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push_str(&String::from_utf8_lossy(&bytes));
        }
        (seen, code)
    }

    /// Prints the terminal's size, then the new size after a resize, and exits 7.
    const ON_A_TERMINAL: &str =
        "trap 'stty size; exit 7' WINCH; stty size; while :; do sleep 0.1; done";

    #[test]
    fn run_t_and_exec_t_follow_the_callers_terminal() {
        let Some(r) = rootfs() else { return };
        let l = Locald::new();
        let (seen, code) = on_a_terminal(
            &l,
            &[
                "run",
                "--rm",
                "-t",
                "--rootfs",
                &r,
                "sh",
                "-c",
                ON_A_TERMINAL,
            ],
        );
        assert!(seen.contains("24 80\r\n"), "{seen:?}");
        assert!(seen.contains("50 132\r\n"), "{seen:?}");
        assert_eq!(code, Some(7), "{seen:?}");

        let out = l.run(&[
            "run", "-d", "--name", "shell", "--rootfs", &r, "sleep", "300",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let (seen, code) = on_a_terminal(&l, &["exec", "-it", "shell", "sh", "-c", ON_A_TERMINAL]);
        assert!(seen.contains("24 80\r\n"), "{seen:?}");
        assert!(seen.contains("50 132\r\n"), "{seen:?}");
        assert_eq!(code, Some(7), "{seen:?}");

        // On the host there is no terminal to make.
        let out = l.run(&["exec", "-t", "--", "true"]);
        assert_eq!(out.status.code(), Some(125));
        assert!(stderr(&out).contains("containers only"), "{}", stderr(&out));
        assert!(l.run(&["rm", "-f", "shell"]).status.success());
        assert_eq!(l.containers_left(), 0);
    }
}

#[cfg(target_os = "linux")]
#[test]
fn run_an_image_pulled_from_a_registry_and_the_builtin_image() {
    use locald_test_support as support;
    if !support::require(
        "run_an_image_pulled_from_a_registry_and_the_builtin_image",
        true,
        &["docker-registry", "skopeo"],
    ) {
        return;
    }
    let registry = support::Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let mut layout = support::Layout::new(dir.path().join("oci"));
    let image = layout.image(
        "amd64",
        &[
            (busybox_layer(), support::Compression::Gzip),
            (support::Layer::new().dir("etc").file("etc/motd", "from the second layer\n").whiteout("etc/group"), support::Compression::Zstd),
        ],
        serde_json::json!({"Cmd": ["cat", "/etc/motd"], "Env": ["PATH=/bin", "GREETING=image"], "WorkingDir": "/etc"}),
    );
    layout.name_image("img", &image);
    let name = format!("{}/app:1", registry.addr);
    support::push(&layout.dir, "img", &name, &[]);

    let l = Locald::new();
    // Not stored yet: pulled first, then run with the image's command.
    let out = l.run(&["run", "--rm", "--insecure", &name]);
    assert_eq!(stdout(&out), "from the second layer\n", "{}", stderr(&out));
    assert!(stderr(&out).starts_with(&format!("Unable to find image '{name}' locally\n")));
    assert_eq!(out.status.code(), Some(0));
    // Stored now: the image's env and working dir, the whiteout applied, the exit code.
    let out = l.run(&[
        "run",
        "--rm",
        "-e",
        "EXTRA=1",
        &name,
        "sh",
        "-c",
        "echo $GREETING $EXTRA $(pwd); test -e /etc/group || echo no-group; exit 4",
    ]);
    assert_eq!(stdout(&out), "image 1 /etc\nno-group\n", "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    assert_eq!(out.status.code(), Some(4));

    // The built-in image needs no registry at all.
    let out = l.run(&["run", "--rm", "localhost/locald/busybox", "echo", "hello"]);
    assert_eq!(stdout(&out), "hello\n", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&l.run(&["images"])).contains("localhost/locald/busybox"));
    assert_eq!(
        locald_test_support::container_dirs_left(l.home.path()),
        Vec::<String>::new(),
        "--rm left a container"
    );
}
