//! Outbound network of `private` containers through `pasta` (Debian's `passt`
//! package). These need root and `pasta`; without either each test says so loudly
//! and skips (CI installs `passt` through scripts/packages.sh and runs them as root).
//!
//! Traffic stays on this machine: the container reaches a server on the host's
//! loopback through pasta's mapping of the gateway address to the host; nothing is
//! sent to the gateway itself or anywhere else.
#![cfg(target_os = "linux")]
#![allow(clippy::print_stderr)]

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener},
    os::unix::fs::PermissionsExt,
    path::PathBuf,
};

use locald_core::{ContainerSpec, ContainerSpecBuilder, ExitStatus, Runtime};
use locald_runtime::{testing, ContainerRuntime};
use tokio::io::AsyncReadExt;

struct Env {
    home: tempfile::TempDir,
    rootfs: PathBuf,
}

fn env() -> Option<Env> {
    if !testing::is_root() {
        eprintln!("SKIP: container tests need root (CI runs them as root)");
        return None;
    }
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let rootfs = testing::shared_busybox_rootfs().expect("busybox rootfs");
    Some(Env { home, rootfs })
}

/// `pasta` on `PATH`, or a loud skip.
fn pasta() -> Option<PathBuf> {
    let found = which::which("pasta").ok();
    if found.is_none() {
        eprintln!("SKIP: pasta is not installed (apt-get install passt; CI has it)");
    }
    found
}

/// The host's IPv4 default gateway, which pasta gives the container and maps to the
/// host's loopback; a loud skip without one (pasta copies the host's routes).
fn gateway() -> Option<Ipv4Addr> {
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let gw = routes.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"00000000"))
            .then(|| u32::from_str_radix(f.get(2)?, 16).ok())
            .flatten()
            .map(|g| Ipv4Addr::from(g.to_le_bytes()))
    });
    if gw.is_none() {
        eprintln!("SKIP: the host has no IPv4 default route for pasta to copy");
    }
    gw
}

impl Env {
    fn rt(&self) -> ContainerRuntime {
        ContainerRuntime::with_home(self.home.path())
            .shim_program(env!("CARGO_BIN_EXE_locald-shim"))
    }

    fn spec(&self) -> ContainerSpecBuilder {
        ContainerSpec::builder_from_rootfs(&self.rootfs)
    }

    /// Runs to completion; returns status, stdout, stderr; removes the container.
    async fn run(
        &self,
        rt: &ContainerRuntime,
        b: ContainerSpecBuilder,
    ) -> (ExitStatus, String, String) {
        let mut h = rt.run_container(b.build().unwrap()).await.unwrap();
        let id = h.id().to_owned();
        let mut out = h.process().take_stdout().unwrap();
        let mut err = h.process().take_stderr().unwrap();
        let (mut o, mut e) = (String::new(), String::new());
        let (a, b2, status) = tokio::join!(
            out.read_to_string(&mut o),
            err.read_to_string(&mut e),
            h.wait()
        );
        a.unwrap();
        b2.unwrap();
        let status = status.unwrap();
        rt.remove_container(&id, false).await.unwrap();
        (status, o, e)
    }

    fn mounts_left(&self) -> usize {
        locald_test_support::mounts_under_home(self.home.path()).len()
    }

    fn containers_left(&self) -> usize {
        locald_test_support::container_dirs_left(self.home.path()).len()
    }

    /// Processes whose command line mentions this test's home (pasta's does: its
    /// netns and pid file paths are in the container's state directory).
    fn processes_left(&self) -> Vec<String> {
        locald_test_support::processes_mentioning(self.home.path().to_str().unwrap())
    }

    /// [`Self::processes_left`] once they have had 5 s to end: a container's exit is
    /// reported before its pasta has ended (the kernel takes 20-30 ms to remove its
    /// tap device), and its shim waits for that before it exits.
    fn processes_ending(&self) -> Vec<String> {
        locald_test_support::settle(
            std::time::Duration::from_secs(5),
            || self.processes_left(),
            Vec::is_empty,
        )
    }
}

/// Removes the container (force) when dropped, so a failing test leaves no server
/// running.
struct Remove<'a>(&'a ContainerRuntime, String);

impl Drop for Remove<'_> {
    fn drop(&mut self) {
        let (rt, id) = (self.0, &self.1);
        tokio::task::block_in_place(|| {
            let _ = tokio::runtime::Handle::current().block_on(rt.remove_container(id, true));
        });
    }
}

/// A server on the host's loopback that sends one line to its first client.
fn line_server(line: &'static str) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(line.as_bytes()).unwrap();
    });
    (port, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_reaches_the_host_loopback_through_pasta_and_publishes() {
    let (Some(e), Some(pasta), Some(gw)) = (env(), pasta(), gateway()) else {
        return;
    };
    let rt = e.rt().pasta_program(&pasta);
    let (port, server) = line_server("hello from the host\n");
    // The container serves a published port too, and answers it while pasta runs.
    // nc's input stays open (`sleep 1 |`): when the container half-closes first, pasta
    // 2023-03-09 sometimes never delivers the host's FIN and nc would hang.
    let script = format!(
        "ls /sys/class/net; sleep 1 | timeout 5 nc {gw} {port}; \
         mkdir /www && echo pong > /www/index.html && exec httpd -f -p 8080 -h /www"
    );
    let spec = e
        .spec()
        .cmd(["sh", "-c", &script])
        .publish("127.0.0.1::8080")
        .build()
        .unwrap();
    let mut h = rt.run_container(spec).await.unwrap();
    let id = h.id().to_owned();
    let _remove = Remove(&rt, id.clone());
    let host_port = rt.inspect_container(&id).await.unwrap().ports[0]
        .host_port
        .unwrap();
    server.join().unwrap();
    // One pasta for the container while it runs.
    let during = e.processes_left();
    assert_eq!(
        during.iter().filter(|c| c.contains("pasta")).count(),
        1,
        "{during:?}"
    );
    let mut out = h.process().take_stdout().unwrap();
    let mut text = String::new();
    while !text.contains("hello from the host\n") {
        let mut buf = [0u8; 256];
        let n = out.read(&mut buf).await.unwrap();
        assert!(n > 0, "output ended early: {text:?}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let ifaces: Vec<&str> = text.lines().filter(|l| !l.contains("hello")).collect();
    assert!(ifaces.contains(&"lo"), "{ifaces:?}");
    assert!(
        ifaces.len() >= 2,
        "pasta's interface is missing: {ifaces:?}"
    );
    let mut answer = String::new();
    for _ in 0..200 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", host_port)) {
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            answer.clear();
            let _ = s.read_to_string(&mut answer);
            if answer.contains("pong") {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(answer.contains("pong"), "{answer:?}");
    h.kill(locald_core::Signal::KILL).await.unwrap();
    h.wait().await.unwrap();
    drop(h);
    rt.remove_container(&id, false).await.unwrap();
    assert_eq!(
        e.processes_ending(),
        Vec::<String>::new(),
        "pasta left running"
    );
    assert_eq!(e.mounts_left(), 0);
    assert_eq!(e.containers_left(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_and_private_without_pasta_have_only_loopback() {
    let Some(e) = env() else { return };
    let rt = e.rt().without_pasta();
    let (status, out, _) = e
        .run(&rt, e.spec().cmd(["sh", "-c", "ls /sys/class/net"]))
        .await;
    assert_eq!(status, ExitStatus::Exited(0));
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    if pasta().is_some() {
        let rt = e.rt();
        let (status, out, _) = e
            .run(
                &rt,
                e.spec()
                    .cmd(["sh", "-c", "ls /sys/class/net"])
                    .network(locald_core::NetworkMode::None),
            )
            .await;
        assert_eq!(status, ExitStatus::Exited(0));
        assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    }
    assert!(e.processes_ending().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pasta_fails_the_start_clearly_and_leaves_nothing() {
    let Some(e) = env() else { return };
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("pasta");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'Failed to send 30 bytes to syslog' >&2\necho 'no tap device today' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rt = e.rt().pasta_program(&fake);
    let spec = e
        .spec()
        .cmd(["sleep", "30"])
        .publish("127.0.0.1::8080")
        .build()
        .unwrap();
    let err = rt.run_container(spec).await.unwrap_err();
    let mut msg = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    assert!(msg.contains("pasta"), "{msg}");
    assert!(msg.contains("no tap device today"), "{msg}");
    assert!(!msg.contains("syslog"), "{msg}");
    assert_eq!(e.containers_left(), 0);
    assert_eq!(e.mounts_left(), 0);
    let left = e.processes_ending();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_mode_gets_pasta_without_the_host_loopback() {
    let (Some(e), Some(pasta)) = (env(), pasta()) else {
        return;
    };
    // A wrapper that records pasta's arguments, then runs the real one. Nothing is
    // sent anywhere: the gateway would be the real one without the mapping.
    let bin = tempfile::tempdir().unwrap();
    let wrapper = bin.path().join("pasta");
    let args = bin.path().join("args");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\nexec {} \"$@\"\n",
            args.display(),
            pasta.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rt = e.rt().pasta_program(&wrapper);
    // /proc/net/dev: in a user namespace /sys is the host's.
    let script = "tail -n +3 /proc/net/dev | wc -l";
    let (status, out, err) = e.run(&rt, e.spec().cmd(["sh", "-c", script])).await;
    assert_eq!(status, ExitStatus::Exited(0), "{err}");
    assert_eq!(out.trim(), "2");
    let (status, out, err) = e
        .run(&rt, e.spec().safe(true).cmd(["sh", "-c", script]))
        .await;
    assert_eq!(status, ExitStatus::Exited(0), "{err}");
    assert_eq!(out.trim(), "2");
    let recorded = std::fs::read_to_string(&args).unwrap();
    let runs: Vec<&str> = recorded.lines().collect();
    assert_eq!(runs.len(), 2, "{recorded}");
    assert!(!runs[0].contains("--no-map-gw"), "{recorded}");
    assert!(runs[1].contains("--no-map-gw"), "{recorded}");
    for run in runs {
        assert!(run.contains("-t none -u none -T none -U none"), "{run}");
    }
    assert!(e.processes_ending().is_empty());
    assert_eq!(e.mounts_left(), 0);
}

/// Set in the child that [`an_offline_host_runs_private_with_loopback_only`] starts in
/// a network namespace of its own, without routes.
const OFFLINE_CHILD: &str = "LOCALD_TEST_OFFLINE_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_host_runs_private_with_loopback_only() {
    let (Some(e), Some(_)) = (env(), pasta()) else {
        return;
    };
    if std::env::var_os(OFFLINE_CHILD).is_none() {
        // This test again, in a new network namespace (only loopback, down): a host
        // without a default route, where pasta cannot start.
        let out = std::process::Command::new("unshare")
            .arg("-n")
            .arg(std::env::current_exe().unwrap())
            .args([
                "an_offline_host_runs_private_with_loopback_only",
                "--exact",
                "--nocapture",
            ])
            .env(OFFLINE_CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("1 passed"), "{text}");
        return;
    }
    // The default: pasta on PATH, but no route out.
    let rt = e.rt();
    let (status, out, err) = e
        .run(&rt, e.spec().cmd(["sh", "-c", "ls /sys/class/net"]))
        .await;
    assert_eq!(status, ExitStatus::Exited(0), "{err}");
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    assert!(e.processes_ending().is_empty());
}

/// Set in the child that [`a_host_without_pasta_runs_private_with_loopback_only`]
/// starts with a `PATH` where there is no pasta.
const NO_PASTA_CHILD: &str = "LOCALD_TEST_NO_PASTA_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_pasta_runs_private_with_loopback_only() {
    let Some(e) = env() else { return };
    if std::env::var_os(NO_PASTA_CHILD).is_none() {
        let empty = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "a_host_without_pasta_runs_private_with_loopback_only",
                "--exact",
                "--nocapture",
            ])
            .env(NO_PASTA_CHILD, "1")
            .env("PATH", empty.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("1 passed"), "{text}");
        return;
    }
    assert!(
        which::which("pasta").is_err(),
        "the child's PATH has no pasta"
    );
    let rt = e.rt();
    let (status, out, err) = e
        .run(&rt, e.spec().cmd(["sh", "-c", "ls /sys/class/net"]))
        .await;
    assert_eq!(status, ExitStatus::Exited(0), "{err}");
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["lo"]);
}
