//! `locald daemon` as a user (and an attacker) meets it: the real binary on a real
//! socket, killed with -9, stopped with SIGTERM, reached by 50 clients at once, fed
//! bad requests, knocked on by another user, and bridged over stdio.

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use locald::remote::{Host, RemoteRuntime};
use locald_conformance::Subject;

const LOCALD: &str = env!("CARGO_BIN_EXE_locald");

/// A `locald daemon` process on `$home/run/locald.sock`; stopped with SIGTERM when
/// dropped.
pub(crate) struct Daemon {
    child: Option<Child>,
    home: PathBuf,
    socket: PathBuf,
}

impl Daemon {
    pub(crate) fn start(home: &Path, extra: &[&str]) -> Daemon {
        let socket = home.join("run/locald.sock");
        let child = Command::new(LOCALD)
            .args(["daemon", "--socket", socket.to_str().unwrap()])
            .args(extra)
            .env("LOCALD_HOME", home)
            .env_remove("LOCALD_HOST")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the daemon starts");
        let mut daemon = Daemon {
            child: Some(child),
            home: home.to_owned(),
            socket,
        };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let mut err = String::new();
                let _ = self
                    .child
                    .as_mut()
                    .unwrap()
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err);
                panic!("the daemon exited with {status}: {err}");
            }
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the daemon did not listen on {}", self.socket.display());
    }

    pub(crate) fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn locald(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(LOCALD);
        cmd.args(args)
            .env("LOCALD_HOME", &self.home)
            .env("LOCALD_HOST", self.host())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the daemon to exit, at most `limit`.
    fn wait(&mut self, limit: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                self.child = None;
                return (status, err);
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while locald_test_support::process_alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} still runs");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Starts `locald exec` of a script printing its pid through the daemon; returns the
/// client and the remote command's pid. The script prints it once it is ready.
fn spawn_remote_sleeper(daemon: &Daemon, script: &str) -> (Child, u32) {
    let mut client = daemon
        .locald(&["exec", "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(client.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = line
        .trim()
        .parse()
        .expect("the script prints its pid first");
    (client, pid)
}

#[test]
fn status_tells_whether_a_daemon_runs() {
    let home = tempfile::tempdir().unwrap();
    let socket = home.path().join("run/locald.sock");
    let host = format!("unix://{}", socket.display());
    let status = |host: &str| {
        Command::new(LOCALD)
            .args(["daemon", "status"])
            .env("LOCALD_HOME", home.path())
            .env("LOCALD_HOST", host)
            .output()
            .unwrap()
    };
    let out = status(&host);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).starts_with(&format!("no locald daemon runs at {host}: ")),
        "{}",
        text(&out.stdout)
    );

    let daemon = Daemon::start(home.path(), &[]);
    let out = status(&host);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "locald daemon {} (pid {}, API v1) runs at {host}, serving the container runtime on Linux\n",
            env!("CARGO_PKG_VERSION"),
            daemon.pid()
        )
    );
    let out = daemon
        .locald(&["daemon", "status", "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["running"], true);
    assert_eq!(json["daemon"]["api_version"], 1);
    assert_eq!(json["daemon"]["runtime"]["name"], "container");

    // A second daemon on the same home or socket refuses to start.
    let out = Command::new(LOCALD)
        .args(["daemon", "--socket", socket.to_str().unwrap()])
        .env("LOCALD_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("a locald daemon already runs at"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn kill_9_then_restart_cleans_up_what_the_dead_daemon_left() {
    let home = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(home.path(), &[]);
    let (client, pid) = spawn_remote_sleeper(&daemon, "echo $$; exec sleep 1000");
    let record = home.path().join(format!("daemon/processes/{pid}.json"));
    assert!(record.exists(), "the daemon records what it spawned");

    daemon.signal("-KILL");
    let (status, _) = daemon.wait(Duration::from_secs(10));
    assert_eq!(status.code(), None, "killed");
    // The client learns it lost the daemon; the command is orphaned, still running.
    let out = client.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("lost the connection to the locald daemon"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        locald_test_support::process_alive(pid),
        "an orphan is left behind by kill -9"
    );
    assert!(daemon.socket.exists(), "kill -9 leaves the socket");

    // A new daemon replaces the stale socket and kills the orphan.
    let restarted = Daemon::start(home.path(), &[]);
    wait_gone(pid);
    assert!(!record.exists(), "the record is gone with the process");
    let out = restarted
        .locald(&["exec", "--", "echo", "back"])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "back\n");
}

#[test]
fn a_reused_pid_is_not_killed_after_a_restart() {
    let home = tempfile::tempdir().unwrap();
    // A record of a "dead" command whose pid now belongs to an unrelated process
    // (this test's own sleeper, with another start time).
    let mut bystander = Command::new("sleep").arg("1000").spawn().unwrap();
    let dir = home.path().join("daemon/processes");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{}.json", bystander.id())),
        format!("{{\"pid\":{},\"start_time\":1}}", bystander.id()),
    )
    .unwrap();
    std::fs::write(dir.join("junk.json"), "{not json").unwrap();
    let _daemon = Daemon::start(home.path(), &[]);
    assert!(
        locald_test_support::process_alive(bystander.id()),
        "a process that merely reuses the pid lives"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "records are consumed"
    );
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}

#[test]
fn sigterm_stops_gracefully_and_terminates_spawned_commands() {
    let home = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(home.path(), &["--grace", "5s"]);
    let (client, pid) = spawn_remote_sleeper(
        &daemon,
        "trap 'echo got TERM; exit 3' TERM; echo $$; while :; do sleep 0.05; done",
    );
    let started = Instant::now();
    daemon.signal("-TERM");
    let out = client.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "got TERM\n");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let (status, _) = daemon.wait(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "no need to wait for the grace period"
    );
    assert!(!daemon.socket.exists(), "the socket is removed");
    wait_gone(pid);
}

#[test]
fn sigterm_kills_commands_that_outlive_the_grace_period() {
    let home = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(home.path(), &["--grace", "300ms"]);
    let (client, pid) = spawn_remote_sleeper(&daemon, "trap '' TERM; echo $$; exec sleep 1000");
    daemon.signal("-TERM");
    let (status, _) = daemon.wait(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    wait_gone(pid);
    let out = client.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn fifty_concurrent_clients() {
    let home = tempfile::tempdir().unwrap();
    let daemon = Arc::new(Daemon::start(home.path(), &[]));
    let clients: Vec<_> = (0..50)
        .map(|i| {
            let daemon = daemon.clone();
            std::thread::spawn(move || {
                let mut child = daemon
                    .locald(&[
                        "exec",
                        "-i",
                        "--",
                        "sh",
                        "-c",
                        "read x; echo client-$1-$x; exit $(($1 % 7))",
                        "sh",
                        &i.to_string(),
                    ])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(format!("{i}\n").as_bytes())
                    .unwrap();
                let out = child.wait_with_output().unwrap();
                assert_eq!(
                    text(&out.stdout),
                    format!("client-{i}-{i}\n"),
                    "{}",
                    text(&out.stderr)
                );
                assert_eq!(out.status.code(), Some(i % 7));
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let out = daemon.locald(&["daemon", "status"]).output().unwrap();
    assert!(out.status.success());
}

/// Sends raw bytes and returns the raw answer (until the daemon closes or 1 s of
/// silence).
fn raw(socket: &Path, request: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let request = request.to_vec();
    // The daemon may answer (and close) before reading everything: write aside.
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") && text(&answer).contains("}") {
                    break;
                }
            }
        }
    }
    drop(stream);
    let _ = sender.join();
    text(&answer)
}

#[test]
fn bad_requests_get_a_4xx_with_a_reason_and_the_daemon_stays_up() {
    let home = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(home.path(), &[]);
    let s = &daemon.socket;
    let post = |path: &str, ctype: &str, body: &[u8]| -> Vec<u8> {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (
            b"GET /locald/v1/nope HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "404",
            "unknown route GET /locald/v1/nope",
        ),
        (
            b"DELETE /locald/v1/info HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "405",
            "/locald/v1/info does not take DELETE",
        ),
        (
            post(
                "/locald/v1/commands/run",
                "application/json",
                b"{\"program\":",
            ),
            "400",
            "malformed request body",
        ),
        (
            post(
                "/locald/v1/commands/run",
                "application/json",
                b"{\"nope\":1}",
            ),
            "400",
            "missing field `program`",
        ),
        (
            post("/locald/v1/commands/run", "text/plain", b"{}"),
            "415",
            "must be JSON",
        ),
        (
            post(
                "/locald/v1/commands/run",
                "application/json",
                &vec![b' '; 17 << 20],
            ),
            "413",
            "larger than the limit",
        ),
        (
            post(
                "/locald/v1/processes",
                "application/json",
                b"{\"program\":\"true\"}",
            ),
            "400",
            "this route streams",
        ),
        (
            post(
                "/locald/v1/commands/run",
                "application/json",
                b"{\"program\":\"true\",\"stdout\":\"inherit\"}",
            ),
            "400",
            "inherited stdio is not available through the daemon",
        ),
        (
            b"GET /locald/v1/containers?all=maybe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "400",
            "malformed query",
        ),
    ];
    for (request, status, reason) in cases {
        let answer = raw(s, &request);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{reason}: {answer}"
        );
        assert!(answer.contains(reason), "{reason}: {answer}");
        assert!(
            answer.contains("\"message\""),
            "Docker's error body: {answer}"
        );
    }
    // Not HTTP at all, and headers far too large: hyper answers or closes; either way
    // the daemon lives on.
    let answer = raw(s, b"\x00\x01\x02 garbage\r\n\r\n");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    let mut huge = b"GET /_ping HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1 << 20));
    huge.extend_from_slice(b"\r\n\r\n");
    let answer = raw(s, &huge);
    assert!(!answer.contains("200 OK"), "{answer}");

    // A stream that sends a malformed frame is ended and its command killed.
    let mut stream = UnixStream::connect(s).unwrap();
    let body = br#"{"program":"sh","args":["-c","echo $$; exec sleep 1000"],"stdout":"piped"}"#;
    write!(
        stream,
        "POST /locald/v1/processes HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: locald-stream/1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 101"), "{line}");
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    let mut header = [0u8; 8];
    reader.read_exact(&mut header).unwrap();
    assert_eq!(header[0], 1, "a stdout frame");
    let mut payload = vec![0u8; u32::from_be_bytes(header[4..8].try_into().unwrap()) as usize];
    reader.read_exact(&mut payload).unwrap();
    let pid: u32 = text(&payload).trim().parse().unwrap();
    assert!(locald_test_support::process_alive(pid));
    stream.write_all(&[9, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    wait_gone(pid);

    // Still serving.
    let out = daemon
        .locald(&["exec", "--", "echo", "still up"])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "still up\n");
    assert!(raw(
        s,
        b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ends_with("OK"));
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    text(&out.stdout).trim() == "0"
}

#[test]
#[allow(clippy::print_stderr)]
fn another_user_is_refused() {
    if !is_root() {
        eprintln!("SKIP another_user_is_refused: needs root to act as uid 65534 (scripts/test runs it as root in CI)");
        return;
    }
    use std::os::unix::{fs::PermissionsExt, process::CommandExt};
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = home.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = Daemon::start(home.path(), &[]);
    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let as_nobody = || {
        Command::new(LOCALD)
            .args(["-H", &daemon.host(), "exec", "--", "id", "-u"])
            .env("LOCALD_HOME", "/nonexistent")
            .current_dir("/")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    // The socket's mode keeps other users out...
    let out = as_nobody();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    // ...and were it opened up, the peer credentials still do.
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody();
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(text(&out.stdout), "");
    assert!(
        text(&out.stderr)
            .contains("connection refused: uid 65534 is not the daemon's owner (uid 0)"),
        "{}",
        text(&out.stderr)
    );
    let out = daemon.locald(&["exec", "--", "id", "-u"]).output().unwrap();
    assert_eq!(text(&out.stdout), "0\n", "the owner is still served");
}

#[test]
fn tcp_listens_on_loopback_only_and_wants_the_token() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(LOCALD)
        .args(["daemon", "--tcp", "0.0.0.0:7077"])
        .env("LOCALD_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("only listens on loopback"),
        "{}",
        text(&out.stderr)
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token_file = home.path().join("token");
    let daemon = Daemon::start(
        home.path(),
        &[
            "--tcp",
            &format!("127.0.0.1:{port}"),
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let host = format!("tcp://127.0.0.1:{port}");
    let exec = |token: Option<&str>| {
        let mut cmd = daemon.locald(&["exec", "--", "echo", "over tcp"]);
        cmd.env("LOCALD_HOST", &host)
            .env_remove("LOCALD_TOKEN")
            .env_remove("LOCALD_TOKEN_FILE");
        if let Some(token) = token {
            cmd.env("LOCALD_TOKEN", token);
        }
        cmd.output().unwrap()
    };
    let out = exec(None);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("needs its token"),
        "{}",
        text(&out.stderr)
    );
    let out = exec(Some("wrong-token-wrong-token"));
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("a valid token is required"),
        "{}",
        text(&out.stderr)
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    let out = exec(Some(token.trim()));
    assert_eq!(text(&out.stdout), "over tcp\n", "{}", text(&out.stderr));
}

#[test]
fn stdio_serves_one_client_without_a_socket() {
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(LOCALD)
        .args(["daemon", "--stdio"])
        .env("LOCALD_HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let body = br#"{"program":"echo","args":["via stdio"]}"#;
    let mut stdin = child.stdin.take().unwrap();
    write!(
        stdin,
        "POST /locald/v1/commands/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stdin.write_all(body).unwrap();
    stdin.flush().unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut answer = String::new();
    while !answer.ends_with('}') {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        answer.push_str(&line);
    }
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // "via stdio\n" as bytes.
    assert!(
        answer.contains("\"stdout\":[118,105,97,32,115,116,100,105,111,10]"),
        "{answer}"
    );
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "the daemon ends with its client");
    assert!(!home.path().join("run").exists(), "no socket was made");
}

/// The conformance suite through `locald daemon --stdio`, the bridge a macOS or
/// Windows host runs through `limactl shell` or `wsl.exe --exec`.
async fn stdio_bridge() -> Subject {
    let home = tempfile::tempdir().unwrap();
    let host = Host::command(
        "env",
        [
            format!("LOCALD_HOME={}", home.path().display()),
            LOCALD.to_owned(),
            "daemon".to_owned(),
            "--stdio".to_owned(),
        ],
    );
    let runtime = RemoteRuntime::connect(host).await.unwrap();
    Subject::with_guard(Arc::new(runtime), home)
}

/// The conformance suite through the `locald daemon` binary on its Unix socket.
async fn daemon_binary() -> Subject {
    let home = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(home.path(), &[]);
    let runtime = RemoteRuntime::connect(Host::Unix(daemon.socket.clone()))
        .await
        .unwrap();
    Subject::with_guard(Arc::new(runtime), (daemon, home))
}

mod conformance_stdio {
    locald_conformance::conformance_suite!(super::stdio_bridge);
}

mod conformance_daemon_binary {
    locald_conformance::conformance_suite!(super::daemon_binary);
}

#[cfg(target_os = "linux")]
#[test]
#[allow(clippy::print_stderr)]
fn kill_9_with_containers_running_then_restart_finds_them() {
    if !is_root() {
        eprintln!("\n!!! SKIPPED kill_9_with_containers_running_then_restart_finds_them: needs root !!!\n");
        return;
    }
    let rootfs = locald::native::testing::shared_busybox_rootfs().unwrap();
    let rootfs = rootfs.to_str().unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(home.path(), &[]);
    // One long-running container, one that exits while the daemon is down, and one
    // auto-removed container that exits while the daemon is down.
    let run = |d: &Daemon, args: &[&str]| {
        let out = d.locald(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    let long = run(
        &daemon,
        &[
            "run", "-d", "--name", "long", "--rootfs", rootfs, "sleep", "1000",
        ],
    );
    let short = run(
        &daemon,
        &[
            "run",
            "-d",
            "--name",
            "short",
            "--rootfs",
            rootfs,
            "sh",
            "-c",
            "sleep 1; exit 3",
        ],
    );
    let auto = run(
        &daemon,
        &[
            "run", "-d", "--rm", "--name", "auto", "--rootfs", rootfs, "sh", "-c", "sleep 1",
        ],
    );
    assert!(!long.is_empty() && !short.is_empty() && !auto.is_empty());

    daemon.signal("-KILL");
    daemon.wait(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(2500));

    let restarted = Daemon::start(home.path(), &[]);
    let out = restarted.locald(&["ps", "-a", "--json"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ps --json");
    let state = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["state"].clone())
    };
    assert_eq!(state("long").unwrap()["state"], "running", "{list}");
    assert_eq!(state("short").unwrap()["state"], "exited", "{list}");
    assert_eq!(
        state("short").unwrap()["status"],
        serde_json::json!({"exited": 3}),
        "{list}"
    );
    // The auto-removed container is gone (the restarted daemon removes it if its own
    // shim did not get to).
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = restarted.locald(&["ps", "-a", "--json"]).output().unwrap();
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if !list.as_array().unwrap().iter().any(|c| c["name"] == "auto") {
            break;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "auto-remove container left: {list}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The survivor is still under control: stop and remove it.
    let out = restarted
        .locald(&["stop", "-t", "1", "long"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = restarted.locald(&["rm", "long", "short"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = restarted.locald(&["ps", "-a", "-q"]).output().unwrap();
    assert_eq!(text(&out.stdout), "");
}

#[cfg(target_os = "linux")]
#[test]
#[allow(clippy::print_stderr)]
fn sigterm_leaves_containers_running() {
    if !is_root() {
        eprintln!("\n!!! SKIPPED sigterm_leaves_containers_running: needs root !!!\n");
        return;
    }
    let rootfs = locald::native::testing::shared_busybox_rootfs().unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(home.path(), &["--grace", "1s"]);
    let out = daemon
        .locald(&[
            "run",
            "-d",
            "--name",
            "keeper",
            "--rootfs",
            rootfs.to_str().unwrap(),
            "sleep",
            "1000",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    daemon.signal("-TERM");
    let (status, _) = daemon.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "a graceful stop");
    // No daemon now: the CLI works in process on the same home and finds it running.
    let ps = Command::new(LOCALD)
        .args(["ps", "--json"])
        .env("LOCALD_HOME", home.path())
        .env_remove("LOCALD_HOST")
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
    assert_eq!(list[0]["name"], "keeper", "{list}");
    assert_eq!(list[0]["state"]["state"], "running", "{list}");
    let rm = Command::new(LOCALD)
        .args(["rm", "-f", "keeper"])
        .env("LOCALD_HOME", home.path())
        .env_remove("LOCALD_HOST")
        .output()
        .unwrap();
    assert!(rm.status.success(), "{}", text(&rm.stderr));
}
