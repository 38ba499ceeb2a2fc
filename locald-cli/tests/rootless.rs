//! Rootless containers, as a normal user: the `locald` CLI and daemon, and the
//! conformance suite's container case in process and through a daemon.
//!
//! CI runs the tests as root (`scripts/test`), which also creates the normal user
//! `locald-test` with subordinate id ranges (`LOCALD_TEST_USER` names another). Each
//! test runs its programs as that user: the CLI cases run a copy of the `locald`
//! binary with the user's uid and gid (the copy lives in a directory every user can
//! read, because the build directory may not be), and the in-process cases run a copy
//! of this test binary as the user with `LOCALD_ROOTLESS_INNER` set, which makes the
//! same test do the work instead. Each gets a fresh data home owned by the user.
#![cfg(target_os = "linux")]
#![allow(clippy::print_stderr)]

use std::{
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use locald_test_support::{is_root, unavailable};

const INNER: &str = "LOCALD_ROOTLESS_INNER";

/// The normal user the tests act as, and a fresh home for it.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    /// First host uid of its subordinate range.
    subuid: u32,
    /// First host gid of its subordinate range.
    subgid: u32,
    /// A data home (and `HOME`) owned by the user; removed at the end.
    home: tempfile::TempDir,
    /// Copies of the programs, readable by the user.
    bin: tempfile::TempDir,
    /// Held for the test: the tests share the user, and check that none of its
    /// processes are left.
    _serial: nix::fcntl::Flock<std::fs::File>,
}

impl TestUser {
    /// The user, or `None` after a loud SKIP (a failure under CI) when the test cannot
    /// act as one here.
    fn get(test: &str) -> Option<TestUser> {
        let name = std::env::var("LOCALD_TEST_USER").unwrap_or_else(|_| "locald-test".into());
        Self::named(test, &name, true)
    }

    /// The user `name`; `range`: it must have subordinate ids (else: must not).
    fn named(test: &str, name: &str, range: bool) -> Option<TestUser> {
        let name = name.to_owned();
        if std::env::var_os(INNER).is_some() {
            return None;
        }
        if !is_root() {
            unavailable(test, "needs root, to act as a normal user");
            return None;
        }
        let Some(user) = nix::unistd::User::from_name(&name).ok().flatten() else {
            unavailable(
                test,
                &format!("needs the user {name} (scripts/test creates it with subordinate ids)"),
            );
            return None;
        };
        let first = |file: &str| -> Option<u32> {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    let mut f = l.split(':');
                    (f.next() == Some(name.as_str()))
                        .then(|| f.next()?.parse().ok())
                        .flatten()
                })
        };
        let subuid = first("/etc/subuid");
        let subgid = first("/etc/subgid").unwrap_or(0);
        if subuid.is_some() != range {
            unavailable(
                test,
                &format!(
                    "needs {name} {} a subordinate uid range",
                    if range { "with" } else { "without" }
                ),
            );
            return None;
        }
        let subuid = subuid.unwrap_or(0);
        let private = |prefix: &str| {
            let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            dir
        };
        let home = private("locald-rootless-home-");
        std::os::unix::fs::chown(
            home.path(),
            Some(user.uid.as_raw()),
            Some(user.gid.as_raw()),
        )
        .unwrap();
        let bin = private("locald-rootless-bin-");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::env::temp_dir().join("locald-rootless-tests.lock"))
            .unwrap();
        let serial = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .unwrap();
        Some(TestUser {
            _serial: serial,
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            subuid,
            subgid,
            home,
            bin,
        })
    }

    /// A copy of `program` that the user can run.
    fn install(&self, program: &Path) -> PathBuf {
        let to = self.bin.path().join(program.file_name().unwrap());
        if !to.exists() {
            std::fs::copy(program, &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        to
    }

    /// `program` as the user, with a clean environment and its own data home.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(self.install(program));
        cmd.env_clear()
            .env("HOME", self.home.path())
            .env("USER", &self.name)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("LOCALD_HOME", self.home.path().join("data"))
            .env("XDG_RUNTIME_DIR", self.home.path().join("run"))
            .current_dir(self.home.path())
            .uid(self.uid)
            .gid(self.gid)
            .stdin(Stdio::null());
        cmd
    }

    /// `locald ARGS` as the user.
    fn locald(&self, args: &[&str]) -> Output {
        self.command(Path::new(env!("CARGO_BIN_EXE_locald")))
            .args(args)
            .output()
            .unwrap()
    }

    /// A directory in the user's home, owned by the user, with `mode`.
    fn dir(&self, name: &str, mode: u32) -> PathBuf {
        let dir = self.home.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(self.uid), Some(self.gid)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        dir
    }

    /// Waits until no process of the user is left (shims end right after their
    /// containers); panics naming the ones that stay.
    fn assert_no_processes(&self) {
        let processes = || -> Vec<String> {
            std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .filter(|e| e.metadata().is_ok_and(|m| m.uid() == self.uid))
                .filter(|e| {
                    locald_test_support::process_alive(
                        e.file_name().to_string_lossy().parse().unwrap(),
                    )
                })
                .map(|e| {
                    let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                    format!(
                        "{} {}",
                        e.file_name().to_string_lossy(),
                        String::from_utf8_lossy(&cmd).replace('\0', " ")
                    )
                })
                .collect()
        };
        let left = locald_test_support::settle(Duration::from_secs(10), processes, Vec::is_empty);
        assert!(left.is_empty(), "processes of {} left: {left:?}", self.name);
    }

    /// Checks that the data home holds no container and the runtime dir nothing of
    /// locald's.
    fn assert_nothing_left(&self) {
        let containers = self.home.path().join("data/containers");
        let left: Vec<_> = std::fs::read_dir(&containers)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name())
                    .filter(|n| n != "names")
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "left in {}: {left:?}",
            containers.display()
        );
        let names: Vec<_> = std::fs::read_dir(containers.join("names"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(names.is_empty(), "names left: {names:?}");
        self.assert_no_processes();
    }

    /// [`TestUser::assert_nothing_left`] without the process check, for a shared user
    /// such as `nobody` (pasta started by root runs as it).
    fn assert_no_containers(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let containers = self.home.path().join("data/containers");
        while std::fs::read_dir(&containers)
            .is_ok_and(|d| d.flatten().any(|e| e.file_name() != "names"))
        {
            assert!(
                Instant::now() < deadline,
                "containers left in {}",
                containers.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestUser {
    /// A test that failed half-way may leave containers running: end every process of
    /// the dedicated test user (never of a shared one such as `nobody`).
    fn drop(&mut self) {
        if self.name == "nobody" {
            return;
        }
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if e.metadata().is_ok_and(|m| m.uid() == self.uid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

use std::os::unix::fs::PermissionsExt;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\nstdout {}\nstderr {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

const IMAGE: &str = "localhost/locald/busybox";

#[test]
fn the_readme_first_command_works_as_a_normal_user() {
    let Some(user) = TestUser::get("the_readme_first_command_works_as_a_normal_user") else {
        return;
    };
    let out = user.locald(&["run", "--rm", IMAGE, "echo", "hello from a container"]);
    assert_eq!(assert_ok(&out), "hello from a container\n");
    user.assert_nothing_left();
}

#[test]
fn ids_map_to_the_users_ranges_and_volumes_belong_to_the_user() {
    let Some(user) = TestUser::get("ids_map_to_the_users_ranges_and_volumes_belong_to_the_user")
    else {
        return;
    };
    // Container root is the user; ids from 1 up are the subordinate range.
    let out = user.locald(&["run", "--rm", IMAGE, "cat", "/proc/self/uid_map"]);
    let maps: Vec<Vec<u64>> = assert_ok(&out)
        .lines()
        .map(|l| l.split_whitespace().map(|n| n.parse().unwrap()).collect())
        .collect();
    assert_eq!(maps[0], vec![0, user.uid as u64, 1], "{maps:?}");
    assert_eq!(maps[1][..2], [1, user.subuid as u64], "{maps:?}");
    // The root is an overlay mounted in the user namespace (kernels since 5.11).
    let out = user.locald(&["run", "--rm", IMAGE, "sh", "-c", "grep ' / ' /proc/mounts"]);
    assert!(
        assert_ok(&out).starts_with("overlay / overlay "),
        "{}",
        text(&out.stdout)
    );
    // The image's files belong to root inside.
    let out = user.locald(&["run", "--rm", IMAGE, "stat", "-c", "%u:%g", "/bin/sh"]);
    assert_eq!(assert_ok(&out), "0:0\n");
    // A volume from the user's home: writable, new files the user's on the host...
    let vol = user.dir("vol", 0o755);
    let mount = format!("{}:/data", vol.display());
    let out = user.locald(&[
        "run",
        "--rm",
        "-v",
        &mount,
        IMAGE,
        "sh",
        "-c",
        "echo hi > /data/by-root",
    ]);
    assert_ok(&out);
    let meta = std::fs::metadata(vol.join("by-root")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (user.uid, user.gid));
    assert_eq!(
        std::fs::read_to_string(vol.join("by-root")).unwrap(),
        "hi\n"
    );
    // ...and `--user nobody` (65534 inside) is the range's id on the host.
    let open = user.dir("open", 0o777);
    let mount = format!("{}:/data", open.display());
    let out = user.locald(&[
        "run",
        "--rm",
        "--user",
        "nobody",
        "-v",
        &mount,
        IMAGE,
        "sh",
        "-c",
        "id -u; touch /data/by-nobody",
    ]);
    assert_eq!(assert_ok(&out), "65534\n");
    let meta = std::fs::metadata(open.join("by-nobody")).unwrap();
    assert_eq!(meta.uid(), user.subuid + 65534 - 1);
    user.assert_nothing_left();
}

#[test]
fn without_subordinate_ids_only_root_is_mapped() {
    // `nobody` has no subordinate ids on Debian.
    let Some(user) = TestUser::named(
        "without_subordinate_ids_only_root_is_mapped",
        "nobody",
        false,
    ) else {
        return;
    };
    let out = user.locald(&[
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "cat /proc/self/uid_map; id -u",
    ]);
    let stdout = assert_ok(&out);
    let maps: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        maps[0].split_whitespace().collect::<Vec<_>>(),
        ["0", &user.uid.to_string(), "1"]
    );
    assert_eq!(maps[1..], ["0"], "{stdout}");
    assert!(
        text(&out.stderr).contains("no subordinate id range for this user"),
        "{}",
        text(&out.stderr)
    );
    // Another user inside cannot be: a clear error, before anything starts.
    let out = user.locald(&["run", "--rm", "--user", "nobody", IMAGE, "id"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("id 65534 is not mapped in this rootless container"),
        "{}",
        text(&out.stderr)
    );
    // Layers unpacked by the user itself: every file is root's, and whiteouts and an
    // opaque directory still hide lower files under the `userxattr` overlay.
    let image = load_layered_image(&user);
    let out = sh_in(
        &user,
        image,
        "stat -c '%u:%g' /data/f; ls /o; test -e /gone || echo hidden; grep ' / ' /proc/mounts",
    );
    let stdout = assert_ok(&out);
    assert!(
        stdout.starts_with("0:0\nnew\nhidden\noverlay / overlay ") && stdout.contains("userxattr"),
        "{stdout}"
    );
    user.assert_no_containers();
}

#[test]
fn limits_without_a_delegated_cgroup_are_refused_with_the_reason() {
    let Some(user) = TestUser::get("limits_without_a_delegated_cgroup_are_refused_with_the_reason")
    else {
        return;
    };
    for flag in [
        ["--memory", "64m"],
        ["--cpus", "0.5"],
        ["--pids-limit", "10"],
    ] {
        let out = user.locald(&["run", "--rm", flag[0], flag[1], IMAGE, "true"]);
        assert_eq!(out.status.code(), Some(125), "{flag:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("not available to a rootless container")
                && (err.contains("cgroup v1")
                    || err.contains("not delegated")
                    || err.contains("does not place rootless containers")),
            "{err}"
        );
    }
    user.assert_nothing_left();
}

#[test]
fn safe_mode_works_rootless() {
    let Some(user) = TestUser::get("safe_mode_works_rootless") else {
        return;
    };
    let out = user.locald(&[
        "run",
        "--rm",
        "--safe",
        IMAGE,
        "sh",
        "-c",
        "grep CapEff /proc/self/status; touch /x 2>/dev/null && echo wrote || echo read-only; \
         touch /tmp/x && echo tmp ok",
    ]);
    let stdout = assert_ok(&out);
    assert!(stdout.contains("CapEff:\t0000000000000000"), "{stdout}");
    assert!(stdout.contains("read-only\ntmp ok"), "{stdout}");
    user.assert_nothing_left();
}

#[test]
fn detached_exec_logs_and_forced_removal_leave_nothing() {
    let Some(user) = TestUser::get("detached_exec_logs_and_forced_removal_leave_nothing") else {
        return;
    };
    let out = user.locald(&[
        "run",
        "-d",
        "--name",
        "rl",
        IMAGE,
        "sh",
        "-c",
        "echo started; sleep 60",
    ]);
    assert_ok(&out);
    let out = user.locald(&["exec", "rl", "sh", "-c", "echo in $(hostname) as $(id -u)"]);
    assert!(assert_ok(&out).starts_with("in "), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).ends_with(" as 0\n"),
        "{}",
        text(&out.stdout)
    );
    let out = user.locald(&["logs", "rl"]);
    assert_eq!(assert_ok(&out), "started\n");
    let out = user.locald(&["ps"]);
    assert!(assert_ok(&out).contains("rl"), "{}", text(&out.stdout));
    assert_ok(&user.locald(&["rm", "-f", "rl"]));
    user.assert_nothing_left();
}

#[test]
fn published_ports_reach_a_rootless_container() {
    let Some(user) = TestUser::get("published_ports_reach_a_rootless_container") else {
        return;
    };
    let port = locald_test_support::free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let out = user.locald(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &publish,
        IMAGE,
        "sh",
        "-c",
        "echo served > /tmp/index.html; exec httpd -f -p 8080 -h /tmp",
    ]);
    assert_ok(&out);
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        use std::io::{Read, Write};
        let got = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        });
        match got {
            Ok(text) if text.contains("served") => break text,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("no answer on the published port: {other:?}"),
        }
    };
    assert!(
        body.starts_with("HTTP/1.1 200") || body.starts_with("HTTP/1.0 200"),
        "{body}"
    );
    assert_ok(&user.locald(&["rm", "-f", "web"]));
    user.assert_nothing_left();
}

#[test]
fn the_daemon_as_a_normal_user_runs_containers() {
    let Some(user) = TestUser::get("the_daemon_as_a_normal_user_runs_containers") else {
        return;
    };
    let socket = user.home.path().join("run/locald.sock");
    user.dir("run", 0o700);
    let mut daemon = user
        .command(Path::new(env!("CARGO_BIN_EXE_locald")))
        .args(["daemon", "--socket", socket.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the daemon did not listen");
        assert!(daemon.try_wait().unwrap().is_none(), "the daemon exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    let host = format!("unix://{}", socket.display());
    let out = user.locald(&[
        "-H",
        &host,
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "echo via daemon; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "via daemon\n");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = daemon.wait();
    user.assert_nothing_left();
}

/// Runs this test binary's `test` as the user, with `INNER` set so that the test does
/// its work there; checks it passed.
fn run_inner(user: &TestUser, test: &str, env: &[(&str, &Path)]) {
    let me = std::env::current_exe().unwrap();
    let mut cmd = user.command(&me);
    cmd.args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(INNER, "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = text(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} as {}: {:?}\n{stdout}\n{}",
        user.name,
        out.status,
        text(&out.stderr)
    );
}

fn conformance_rootfs() -> PathBuf {
    locald_runtime::testing::shared_busybox_rootfs().expect("the busybox rootfs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_containers_in_process_as_a_normal_user() {
    const NAME: &str = "conformance_containers_in_process_as_a_normal_user";
    if std::env::var_os(INNER).is_some() {
        assert!(!is_root());
        let rt = std::sync::Arc::new(locald_runtime::ContainerRuntime::new());
        locald_conformance::cases::containers(rt.clone()).await;
        locald_conformance::cases::terminals(rt).await;
        return;
    }
    let Some(user) = TestUser::get(NAME) else {
        return;
    };
    let rootfs = conformance_rootfs();
    tokio::task::spawn_blocking(move || {
        run_inner(&user, NAME, &[("LOCALD_CONFORMANCE_ROOTFS", &rootfs)]);
        user.assert_nothing_left();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_containers_through_a_daemon_as_a_normal_user() {
    const NAME: &str = "conformance_containers_through_a_daemon_as_a_normal_user";
    if std::env::var_os(INNER).is_some() {
        use locald::remote::{Host, RemoteRuntime};
        use locald_cli::daemon::{bind_unix, Listener, Server};
        assert!(!is_root());
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/locald.sock");
        let server = Server::new(std::sync::Arc::new(locald_runtime::ContainerRuntime::new()));
        let listener = Listener::Unix(bind_unix(&socket).unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(async move {
            server
                .serve(
                    vec![listener],
                    async {
                        let _ = stopped.await;
                    },
                    Duration::from_secs(1),
                )
                .await
        });
        let remote = RemoteRuntime::connect(Host::Unix(socket)).await.unwrap();
        let remote = std::sync::Arc::new(remote);
        locald_conformance::cases::containers(remote.clone()).await;
        locald_conformance::cases::terminals(remote).await;
        let _ = stop.send(());
        serving.await.unwrap().unwrap();
        return;
    }
    let Some(user) = TestUser::get(NAME) else {
        return;
    };
    let rootfs = conformance_rootfs();
    tokio::task::spawn_blocking(move || {
        run_inner(&user, NAME, &[("LOCALD_CONFORMANCE_ROOTFS", &rootfs)]);
        user.assert_nothing_left();
    })
    .await
    .unwrap();
}

/// A Debian (bookworm, minbase) root filesystem from the configured Debian mirror,
/// built once with debootstrap and kept under the temp dir; `None` after a loud SKIP
/// when it cannot be built here.
fn debian_rootfs(test: &str) -> Option<PathBuf> {
    let dir = std::env::temp_dir().join("locald-debian-rootfs");
    if dir.join("usr/bin/dpkg").exists() {
        return Some(dir);
    }
    if !locald_test_support::has_tool("debootstrap") {
        unavailable(test, "needs debootstrap");
        return None;
    }
    let mirror = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("URIs:").map(|u| u.trim().to_owned()))
        })
        .and_then(|u| u.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "http://deb.debian.org/debian".into());
    let tmp = std::env::temp_dir().join(format!("locald-debian-rootfs.tmp{}", std::process::id()));
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&tmp)
        .arg(&mirror)
        .output()
        .unwrap();
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        unavailable(
            test,
            &format!(
                "debootstrap from {mirror} failed: {}",
                text(&out.stdout).lines().last().unwrap_or_default()
            ),
        );
        return None;
    }
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Some(dir)
}

/// An OCI layout in `dir` naming `reference`: one uncompressed layer, the tar of
/// `rootfs` made by `tar` with its real owners (devices and pseudo filesystems left
/// out), readable by every user.
fn layout_of(rootfs: &Path, dir: &Path, reference: &str) {
    let layout = locald_test_support::Layout::new(dir);
    let out = Command::new("tar")
        .args(["--numeric-owner", "--exclude=./dev/*", "--exclude=./proc/*"])
        .args(["--exclude=./sys/*", "-C"])
        .arg(rootfs)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let layer = layout.put_blob(&out.stdout);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["bash"]},
        "rootfs": {"type": "layers", "diff_ids": [layer]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = layout.put_blob(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": out.stdout.len()}],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = layout.put_blob(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": reference},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(dir).status();
}

#[test]
fn a_debian_image_runs_rootless() {
    const TEST: &str = "a_debian_image_runs_rootless";
    let Some(user) = TestUser::get(TEST) else {
        return;
    };
    let Some(rootfs) = debian_rootfs(TEST) else {
        return;
    };
    let layout = user.bin.path().join("debian-layout");
    layout_of(&rootfs, &layout, "localhost/debian:rootless");
    let out = user.locald(&["load", layout.to_str().unwrap()]);
    assert_ok(&out);
    let image = "localhost/debian:rootless";
    let out = user.locald(&["run", "--rm", image, "dpkg", "-S", "/bin/ls"]);
    assert_eq!(assert_ok(&out), "coreutils: /bin/ls\n");
    let out = user.locald(&["run", "--rm", image, "stat", "-c", "%U:%G %a", "/bin/ls"]);
    assert_eq!(assert_ok(&out), "root:root 755\n");
    // Files of other owners keep them: the layer was unpacked in the user's namespace.
    let out = user.locald(&[
        "run",
        "--rm",
        image,
        "stat",
        "-c",
        "%U:%G %a %g",
        "/etc/shadow",
    ]);
    let shadow = assert_ok(&out);
    assert!(shadow.starts_with("root:shadow 640 "), "{shadow}");
    let shadow_gid: u32 = shadow.trim().rsplit(' ').next().unwrap().parse().unwrap();
    let out = user.locald(&[
        "run",
        "--rm",
        "--user",
        "nobody",
        image,
        "sh",
        "-c",
        "id -un; touch /tmp/x && echo ok",
    ]);
    assert_eq!(assert_ok(&out), "nobody\nok\n");
    // Outside, the image's root-owned files belong to the user (container root).
    let layers = user.home.path().join("data/images/layers");
    let ls = walk_find(&layers, "bin/ls").expect("/bin/ls in an unpacked layer");
    assert_eq!(std::fs::metadata(ls).unwrap().uid(), user.uid);
    // ... and the others belong to the user's subordinate ids.
    let shadow = walk_find(&layers, "etc/shadow").expect("/etc/shadow in an unpacked layer");
    let meta = std::fs::metadata(shadow).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (user.uid, user.subgid + shadow_gid - 1)
    );
    user.assert_nothing_left();
}

/// A layered image as a normal user: owners other than root are kept (a directory and
/// a private file of uid 1000, which is the user's subordinate uid 999 on the host),
/// whiteouts and an opaque directory hide lower files under overlayfs mounted with
/// `userxattr`, writes into the opaque directory work, and removing the image and
/// pruning removes every layer, subordinate-owned files included.
#[test]
fn layers_keep_their_owners_and_whiteouts_rootless() {
    use locald_test_support::{Compression, Layer, Layout};
    const TEST: &str = "layers_keep_their_owners_and_whiteouts_rootless";
    let Some(user) = TestUser::get(TEST) else {
        return;
    };
    let image = load_layered_image(&user);
    let out = sh_in(
        &user,
        image,
        "stat -c '%u:%g %a' /data /data/f; ls /o; test -e /gone || echo hidden; \
         echo w > /o/w && ls /o",
    );
    assert_eq!(
        assert_ok(&out),
        "1000:1000 700\n1000:0 600\nnew\nhidden\nnew\nw\n"
    );
    let out = user.locald(&["run", "--rm", "--user", "1000", image, "cat", "/data/f"]);
    assert_eq!(assert_ok(&out), "mine");
    // On the host: the user's subordinate ids (the directory, which the user cannot
    // enter, nor remove anything from), and the user's own gid for group root.
    let layers = user.home.path().join("data/images/layers");
    let data = walk_find(&layers, "data").expect("data in an unpacked layer");
    let meta = std::fs::symlink_metadata(&data).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (user.subuid + 999, user.subgid + 999)
    );
    let meta = std::fs::symlink_metadata(data.join("f")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (user.subuid + 999, user.gid));
    let out = user.locald(&["rmi", image]);
    assert_ok(&out);
    let out = user.locald(&["image", "prune"]);
    assert_ok(&out);
    let left = names_in(&layers);
    assert!(left.is_empty(), "layers left after prune: {left:?}");
    // A file owned by an id beyond the user's subordinate range: a clear error, and
    // nothing of the failed unpack is left.
    let far = user.bin.path().join("far-layout");
    let mut layout = Layout::new(&far);
    let info = layout.image(
        oci_arch(),
        &[(
            Layer::new()
                .dir("d")
                .file_with("d/far", "x", 0o644, 4_000_000_000),
            Compression::Gzip,
        )],
        serde_json::json!({"Cmd": ["sh"]}),
    );
    layout.name_image("localhost/far:rootless", &info);
    let _ = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&far)
        .status();
    let out = user.locald(&["load", far.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("d/far to 4000000000:0") && err.contains("beyond your subordinate ids"),
        "{err}"
    );
    for sub in ["layers", "tmp"] {
        let left = names_in(&user.home.path().join("data/images").join(sub));
        assert!(left.is_empty(), "{sub} left after a failed load: {left:?}");
    }
    user.assert_nothing_left();
}

/// `locald run --rm IMAGE sh -c SCRIPT` as the user.
fn sh_in(user: &TestUser, image: &str, script: &str) -> std::process::Output {
    user.locald(&["run", "--rm", image, "sh", "-c", script])
}

/// Loads, as `user`, a three-layer image: busybox; a directory and a private file of
/// uid 1000, a file `gone` and a directory `o` with `old`; then a whiteout of `gone`,
/// `o` made opaque and `o/new`. Returns its name.
fn load_layered_image(user: &TestUser) -> &'static str {
    use locald_test_support::{Compression, Layer, Layout};
    let dir = user.bin.path().join("owners-layout");
    let mut layout = Layout::new(&dir);
    let base = Layer::from_dir(&conformance_rootfs()).unwrap();
    let owned = Layer::new()
        .dir_owned("data", 0o700, 1000)
        .file_with("data/f", "mine", 0o600, 1000)
        .file("gone", "x")
        .dir("o")
        .file("o/old", "o");
    let upper = Layer::new().whiteout("gone").opaque("o").file("o/new", "n");
    let info = layout.image(
        oci_arch(),
        &[
            (base, Compression::Gzip),
            (owned, Compression::Gzip),
            (upper, Compression::None),
        ],
        serde_json::json!({"Cmd": ["sh"]}),
    );
    let image = "localhost/owners:rootless";
    layout.name_image(image, &info);
    let _ = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&dir)
        .status();
    assert_ok(&user.locald(&["load", dir.to_str().unwrap()]));
    image
}

/// This machine's architecture as OCI names it.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A failing `newuidmap` (a fake one first on `PATH`, saying what the real one says
/// when a range is refused) is an error that names the step and carries its message,
/// both for an image unpacked in the user's namespace and for a container's start, and
/// nothing is left behind.
#[test]
fn a_failing_id_mapper_is_a_clear_error_that_leaves_nothing() {
    let Some(user) = TestUser::get("a_failing_id_mapper_is_a_clear_error_that_leaves_nothing")
    else {
        return;
    };
    let fake = user.bin.path().join("fake");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::write(
        fake.join("newuidmap"),
        "#!/bin/sh\necho 'newuidmap: uid range [1-65537) -> [100000-165536) not allowed' >&2\nexit 1\n",
    )
    .unwrap();
    for p in [&fake, &fake.join("newuidmap")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        fake.display()
    );
    let with_fake = |args: &[&str]| {
        user.command(Path::new(env!("CARGO_BIN_EXE_locald")))
            .env("PATH", &path)
            .args(args)
            .output()
            .unwrap()
    };
    // The built-in image is made on first use: its layer is unpacked in the namespace.
    let out = with_fake(&["run", "--rm", IMAGE, "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("in your user namespace") && err.contains("not allowed"),
        "{err}"
    );
    let images = user.home.path().join("data/images");
    for sub in ["layers", "tmp"] {
        let left = names_in(&images.join(sub));
        assert!(
            left.is_empty(),
            "{sub} left after a failed unpack: {left:?}"
        );
    }
    // With the image made, a container's start.
    assert_ok(&user.locald(&["run", "--rm", IMAGE, "true"]));
    let out = with_fake(&["run", "--rm", IMAGE, "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("setting up the user namespace of a rootless container: newuidmap failed")
            && err.contains("not allowed"),
        "{err}"
    );
    user.assert_nothing_left();
}

/// The names of what `dir` holds.
fn names_in(dir: &Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect()
}

/// The first `rel` under a directory of `dir`.
fn walk_find(dir: &Path, rel: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path().join(rel))
        .find(|p| p.symlink_metadata().is_ok())
}

/// The image store's helper works only when locald starts it into the user's
/// namespace: run by hand as the user, it refuses and removes nothing.
#[test]
fn the_store_helper_run_by_hand_refuses_and_removes_nothing() {
    let Some(user) = TestUser::get("the_store_helper_run_by_hand_refuses_and_removes_nothing")
    else {
        return;
    };
    let keep = user.dir("keep", 0o755);
    std::fs::write(keep.join("file"), "mine\n").unwrap();
    let out = user.locald(&["__locald-shim", "remove-tree", keep.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = text(&out.stdout);
    assert!(said.contains("started in the user's namespace"), "{said}");
    assert_eq!(
        std::fs::read_to_string(keep.join("file")).unwrap(),
        "mine\n"
    );
}
