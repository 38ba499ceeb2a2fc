//! The real `docker` CLI against `locald daemon`'s Docker Engine API: what a user
//! types with `DOCKER_HOST=unix://…/locald.sock`, and what they see (output, exit
//! codes). The docker client comes from Debian's `docker.io` (scripts/packages.sh);
//! no dockerd is ever started. Containers need root.

#![cfg(target_os = "linux")]

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use locald_test_support as support;

const LOCALD: &str = env!("CARGO_BIN_EXE_locald");
const BUSYBOX: &str = "localhost/locald/busybox";

/// A `locald daemon` on a socket in its own home, and a docker client configured for
/// it; the daemon gets SIGTERM when this is dropped.
struct Docker {
    home: tempfile::TempDir,
    /// The daemon's socket: the raw requests of the tests go there.
    socket: PathBuf,
    /// `--docker-socket`: the docker clients go there (the same API on both).
    docker_socket: PathBuf,
    daemon: Child,
}

impl Docker {
    /// Starts a daemon, or returns `None` (after a loud SKIP) when the docker client or
    /// root is missing outside CI.
    fn start(test: &str) -> Option<Docker> {
        if !support::require(test, true, &["docker"]) {
            return None;
        }
        Some(Self::start_daemon())
    }

    fn start_daemon() -> Docker {
        let home = tempfile::tempdir().expect("a temporary home");
        let socket = home.path().join("run/locald.sock");
        let docker_socket = home.path().join("run/docker.sock");
        let daemon = spawn_daemon(home.path(), &socket, &docker_socket);
        std::fs::create_dir_all(home.path().join("docker-config")).unwrap();
        Docker {
            home,
            socket,
            docker_socket,
            daemon,
        }
    }

    /// Stops the daemon with SIGTERM and starts a new one on the same home.
    fn restart_daemon(&mut self) {
        self.stop_daemon();
        self.daemon = spawn_daemon(self.home.path(), &self.socket, &self.docker_socket);
    }

    fn stop_daemon(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.daemon.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.daemon.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }

    fn cmd(&self, args: &[&str]) -> Command {
        self.program("docker", args)
    }

    /// A program (the docker CLI, or one that runs it) with the client's environment.
    fn program(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.docker_socket.display()),
            )
            .env("DOCKER_CONFIG", self.home.path().join("docker-config"))
            .env("DOCKER_CLI_HINTS", "false")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the docker CLI and returns what it printed, with a time limit.
    fn run(&self, args: &[&str]) -> Output {
        let mut child = self
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker runs");
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("docker {args:?} did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.wait_with_output().unwrap()
    }

    /// Runs the docker CLI and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed with {}: {}{}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// A raw HTTP/1.1 request on the socket; returns the status line, the headers and
    /// the body as one string.
    fn http(&self, method: &str, path: &str) -> String {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// Containers the runtime has, as `docker ps -aq` lists them.
    fn containers(&self) -> Vec<String> {
        self.ok(&["ps", "-aq"]).lines().map(str::to_owned).collect()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        // Containers left by a failing test go with the daemon's home.
        for id in self.containers() {
            let _ = self.http("DELETE", &format!("/v1.41/containers/{id}?force=1"));
        }
        self.stop_daemon();
    }
}

/// `locald daemon` on `home` with both sockets, once they answer.
fn spawn_daemon(home: &Path, socket: &Path, docker_socket: &Path) -> Child {
    let daemon = Command::new(LOCALD)
        .args(["daemon", "--socket", socket.to_str().unwrap()])
        .args(["--docker-socket", docker_socket.to_str().unwrap()])
        .env("LOCALD_HOME", home)
        .env_remove("LOCALD_HOST")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the daemon starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(socket).is_err() || UnixStream::connect(docker_socket).is_err() {
        assert!(Instant::now() < deadline, "the daemon did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    daemon
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn version_info_and_ping_answer_as_docker_does() {
    let Some(d) = Docker::start("version_info_and_ping_answer_as_docker_does") else {
        return;
    };
    let out = d.ok(&[
        "version",
        "--format",
        "{{.Server.APIVersion}} {{.Server.Os}}",
    ]);
    assert_eq!(out, "1.41 linux\n");
    let out = d.ok(&["version"]);
    assert!(out.contains("Server: locald"), "{out}");
    let out = d.ok(&[
        "info",
        "--format",
        "{{.OSType}} {{.Containers}} {{.Swarm.LocalNodeState}}",
    ]);
    assert_eq!(out, "linux 0 inactive\n");

    for path in ["/_ping", "/v1.41/_ping", "/v1.24/_ping"] {
        let answer = d.http("GET", path);
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        assert!(
            answer.to_ascii_lowercase().contains("api-version: 1.41"),
            "{answer}"
        );
        assert!(answer.ends_with("OK"), "{answer}");
    }
    let answer = d.http("HEAD", "/v1.41/_ping");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = d.http("GET", "/v1.12/version");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("too old"), "{answer}");
    assert_eq!(
        d.ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]),
        "bridge bridge\nhost host\nnone null\n"
    );
    let answer = d.http("GET", "/nonsense/version");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    // Docker's error shape on its routes.
    let answer = d.http("GET", "/v1.41/containers/nope/json");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(
        answer.ends_with(r#"{"message":"No such container: nope"}"#),
        "{answer}"
    );
}

#[test]
fn run_rm_prints_output_and_propagates_the_exit_code() {
    let Some(d) = Docker::start("run_rm_prints_output_and_propagates_the_exit_code") else {
        return;
    };
    let out = d.run(&["run", "--rm", BUSYBOX, "echo", "hi"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n");

    let out = d.run(&[
        "run",
        "--rm",
        "-e",
        "GREETING=hello",
        "-w",
        "/tmp",
        BUSYBOX,
        "sh",
        "-c",
        "echo $GREETING from $(pwd); echo oops >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello from /tmp\n");
    assert_eq!(stderr(&out), "oops\n");

    // Stdin reaches the container with -i.
    let mut child = d
        .cmd(&["run", "--rm", "-i", BUSYBOX, "sh", "-c", "tr a-z A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&out), "SHOUT\n");

    // --rm removed them all.
    assert_eq!(d.containers(), Vec::<String>::new());

    // Docker's code for a program that is not there.
    let out = d.run(&["run", "--rm", BUSYBOX, "/no/such/program"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/no/such/program"),
        "{}",
        stderr(&out)
    );
    assert_eq!(d.containers(), Vec::<String>::new());
}

#[test]
fn detached_container_life_cycle() {
    let Some(d) = Docker::start("detached_container_life_cycle") else {
        return;
    };
    let id = d.ok(&[
        "run",
        "-d",
        "--name",
        "sleeper",
        "-l",
        "app=demo",
        BUSYBOX,
        "sh",
        "-c",
        "echo ready; trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done",
    ]);
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 64, "{id}");

    let ps = d.ok(&["ps", "--format", "{{.ID}} {{.Names}} {{.Image}} {{.State}}"]);
    assert_eq!(ps, format!("{} sleeper {BUSYBOX} running\n", &id[..12]));
    let filtered = d.ok(&["ps", "-q", "--no-trunc", "--filter", "label=app=demo"]);
    assert_eq!(filtered, format!("{id}\n"));
    assert_eq!(d.ok(&["ps", "-q", "--filter", "label=app=other"]), "");
    assert_eq!(
        d.ok(&["ps", "-q", "--filter", "name=sleep"]),
        format!("{}\n", &id[..12])
    );
    assert_eq!(d.ok(&["ps", "-q", "--filter", "status=exited"]), "");

    let deadline = Instant::now() + Duration::from_secs(10);
    while d.ok(&["logs", "sleeper"]) != "ready\n" {
        assert!(Instant::now() < deadline, "no log line");
        std::thread::sleep(Duration::from_millis(50));
    }
    let state = d.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.Running}} {{.Name}} {{.Config.Labels.app}}",
        &id[..12],
    ]);
    assert_eq!(state, "running true /sleeper demo\n");

    // exec: output and exit code.
    let out = d.run(&["exec", "sleeper", "sh", "-c", "echo inside; exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(stdout(&out), "inside\n");

    // A running container is not removed without force: docker's 409.
    let out = d.run(&["rm", "sleeper"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot remove a running container"),
        "{}",
        stderr(&out)
    );
    // The name is taken.
    let out = d.run(&["create", "--name", "sleeper", BUSYBOX, "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is already in use"),
        "{}",
        stderr(&out)
    );

    assert_eq!(d.ok(&["stop", "sleeper"]), "sleeper\n");
    assert_eq!(d.ok(&["logs", "sleeper"]), "ready\nbye\n");
    assert_eq!(
        d.ok(&["ps", "-a", "--format", "{{.Names}} {{.State}} {{.Status}}"])
            .split(" ago")
            .next()
            .unwrap()
            .split(") ")
            .next()
            .unwrap(),
        "sleeper exited Exited (0"
    );
    assert_eq!(d.ok(&["wait", "sleeper"]), "0\n");
    assert_eq!(d.ok(&["rm", "sleeper"]), "sleeper\n");
    let out = d.run(&["rm", "sleeper"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("No such container: sleeper"),
        "{}",
        stderr(&out)
    );

    // rm -f ends a running one.
    let id = d.ok(&["run", "-d", BUSYBOX, "sleep", "100"]);
    assert_eq!(d.ok(&["rm", "-f", id.trim()]), id);
    assert_eq!(d.containers(), Vec::<String>::new());
}

#[test]
fn create_start_attach_and_wait_separately() {
    let Some(d) = Docker::start("create_start_attach_and_wait_separately") else {
        return;
    };
    let id = d.ok(&[
        "create",
        "--name",
        "later",
        BUSYBOX,
        "sh",
        "-c",
        "echo late; exit 7",
    ]);
    let id = id.trim();
    assert_eq!(
        d.ok(&["ps", "-a", "--format", "{{.Names}} {{.State}} {{.Status}}"]),
        "later created Created\n"
    );
    let out = d.run(&["start", "-a", "later"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stdout(&out), "late\n");
    assert_eq!(d.ok(&["wait", id]), "7\n");
    assert_eq!(
        d.ok(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            "later"
        ]),
        "exited 7\n"
    );
    // prune removes stopped containers only.
    let running = d.ok(&["run", "-d", BUSYBOX, "sleep", "100"]);
    let pruned = d.ok(&["container", "prune", "-f"]);
    assert!(
        pruned.starts_with(&format!("Deleted Containers:\n{id}\n")),
        "{pruned}"
    );
    assert_eq!(d.containers(), vec![running[..12].to_owned()]);
    let out = d.ok(&["image", "prune", "-f"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
}

#[test]
fn unknown_images_and_containers_are_docker_errors() {
    let Some(d) = Docker::start("unknown_images_and_containers_are_docker_errors") else {
        return;
    };
    let out = d.run(&["logs", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("No such container: nope"),
        "{}",
        stderr(&out)
    );
    let out = d.run(&["rmi", "nope:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("No such image: nope:1"),
        "{}",
        stderr(&out)
    );
    let out = d.run(&["run", "--rm", "--network", "custom", BUSYBOX, "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("not supported by locald"),
        "{}",
        stderr(&out)
    );
}

/// The shared busybox fixture as an image layer.
fn busybox_layer() -> support::Layer {
    let rootfs = locald::native::testing::shared_busybox_rootfs().expect("busybox rootfs");
    support::Layer::from_dir(&rootfs).expect("the busybox rootfs as a layer")
}

#[test]
fn pull_run_and_remove_an_image_from_a_loopback_registry() {
    let test = "pull_run_and_remove_an_image_from_a_loopback_registry";
    if !support::require(test, true, &["docker-registry", "skopeo"]) {
        return;
    }
    let Some(d) = Docker::start(test) else {
        return;
    };
    let registry = support::Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let mut layout = support::Layout::new(dir.path().join("oci"));
    let image = layout.image(
        "amd64",
        &[(busybox_layer(), support::Compression::Gzip)],
        serde_json::json!({"Cmd": ["echo", "from the image"]}),
    );
    layout.name_image("img", &image);
    let name = format!("{}/busybox", registry.addr);
    support::push(&layout.dir, "img", &format!("{name}:latest"), &[]);

    // Loopback registries are insecure by default, as with dockerd.
    let out = d.run(&["pull", &name]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Pull complete"), "{text}");
    assert!(
        text.contains(&format!("Digest: {}", image.manifest_digest)),
        "{text}"
    );
    assert!(
        text.contains(&format!("Status: Downloaded newer image for {name}:latest")),
        "{text}"
    );
    let again = d.ok(&["pull", &name]);
    assert!(
        again.contains(&format!("Status: Image is up to date for {name}:latest")),
        "{again}"
    );

    let images = d.ok(&["images", "--format", "{{.Repository}} {{.Tag}} {{.ID}}"]);
    let short = &image.config_digest["sha256:".len().."sha256:".len() + 12];
    assert!(
        images.contains(&format!("{name} latest {short}\n")),
        "{images}"
    );
    let filter = format!("reference={}/busy*", registry.addr);
    assert_eq!(
        d.ok(&["images", "-q", "--filter", &filter]),
        format!("{short}\n")
    );
    assert_eq!(
        d.ok(&["images", "-q", "--filter", "reference=nothing*"]),
        ""
    );
    assert_eq!(d.ok(&["images", "-q", "--filter", "dangling=true"]), "");
    assert_eq!(
        d.ok(&["image", "inspect", "--format", "{{.Id}} {{.Os}}", &name]),
        format!("{} linux\n", image.config_digest)
    );

    // The image's own command, and one given.
    assert_eq!(d.ok(&["run", "--rm", &name]), "from the image\n");
    assert_eq!(d.ok(&["run", "--rm", &name, "echo", "hi"]), "hi\n");

    assert_eq!(d.ok(&["rmi", &name]), format!("Untagged: {name}:latest\n"));
    assert!(!d.ok(&["images"]).contains(&name));
    let out = d.run(&["image", "inspect", &name]);
    assert_eq!(out.status.code(), Some(1));

    // A pull that fails says why and exits 1.
    let out = d.run(&["pull", &format!("{}/missing:1", registry.addr)]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));

    // `docker run` of an image not stored pulls it first, as docker does.
    let out = d.run(&["run", "--rm", &name, "echo", "pulled"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "pulled\n");
    assert!(
        stderr(&out).contains("Unable to find image"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn published_ports_reach_the_container() {
    let test = "published_ports_reach_the_container";
    if !support::require(test, true, &["curl"]) {
        return;
    }
    let Some(d) = Docker::start(test) else {
        return;
    };
    // `-p HOST:CONTAINER` without an address: locald binds the host's loopback.
    let port = support::free_port();
    let publish = format!("{port}:8080");
    let id = d.ok(&[
        "run",
        "-d",
        "-p",
        &publish,
        BUSYBOX,
        "sh",
        "-c",
        "mkdir -p /www && echo served > /www/index.html && exec httpd -f -p 8080 -h /www",
    ]);
    let id = id.trim();
    assert_eq!(d.ok(&["port", id, "8080"]), format!("127.0.0.1:{port}\n"));
    let url = format!("http://127.0.0.1:{port}/");
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let out = Command::new("curl").args(["-sf", &url]).output().unwrap();
        if out.status.success() {
            break stdout(&out);
        }
        assert!(Instant::now() < deadline, "nothing served on {port}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(body, "served\n");
    assert!(d
        .ok(&["ps", "--format", "{{.Ports}}"])
        .contains(&format!("127.0.0.1:{port}->8080/tcp")));
    // -P publishes the exposed port on a free one.
    let id2 = d.ok(&[
        "run", "-d", "-P", "--expose", "8080", BUSYBOX, "sleep", "100",
    ]);
    let mapped = d.ok(&["port", id2.trim(), "8080/tcp"]);
    assert!(mapped.starts_with("127.0.0.1:"), "{mapped}");
    d.ok(&["rm", "-f", id, id2.trim()]);
}

#[test]
fn binds_restart_and_events() {
    let Some(d) = Docker::start("binds_restart_and_events") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "from the host\n").unwrap();
    let bind = format!("{}:/data", dir.path().display());
    let out = d.ok(&[
        "run",
        "--rm",
        "-v",
        &bind,
        BUSYBOX,
        "sh",
        "-c",
        "cat /data/in.txt; echo back > /data/out.txt",
    ]);
    assert_eq!(out, "from the host\n");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "back\n"
    );
    let ro = format!("{}:/data:ro", dir.path().display());
    let out = d.run(&["run", "--rm", "-v", &ro, BUSYBOX, "touch", "/data/x"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // GET /events streams container events as JSON lines.
    let mut events = UnixStream::connect(&d.socket).unwrap();
    write!(events, "GET /v1.41/events HTTP/1.1\r\nHost: docker\r\n\r\n").unwrap();
    events
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();

    let id = d.ok(&[
        "run",
        "-d",
        "--name",
        "again",
        BUSYBOX,
        "sh",
        "-c",
        "echo run; sleep 100",
    ]);
    let pid_before = d.ok(&["inspect", "--format", "{{.State.Pid}}", "again"]);
    assert_eq!(d.ok(&["restart", "-t", "0", "again"]), "again\n");
    let pid_after = d.ok(&[
        "inspect",
        "--format",
        "{{.State.Pid}} {{.State.Status}} {{.Id}}",
        "again",
    ]);
    assert_ne!(pid_before.trim(), pid_after.split(' ').next().unwrap());
    assert!(
        pid_after.ends_with(&format!("running {id}")),
        "{pid_after} {id}"
    );
    d.ok(&["rm", "-f", "again"]);

    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let want = ["\"create\"", "\"start\"", "\"die\"", "\"destroy\""];
    while !want.iter().all(|w| seen.contains(w)) {
        let n = events.read(&mut buf).expect("events arrive");
        assert!(n > 0, "the event stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains(id.trim()), "{seen}");
}

#[test]
fn logs_follow_until_the_container_exits() {
    let Some(d) = Docker::start("logs_follow_until_the_container_exits") else {
        return;
    };
    let id = d.ok(&[
        "run",
        "-d",
        BUSYBOX,
        "sh",
        "-c",
        "for i in 1 2 3; do echo line $i; echo warn $i >&2; sleep 0.3; done",
    ]);
    let out = d.run(&["logs", "-f", id.trim()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "line 1\nline 2\nline 3\n");
    assert_eq!(stderr(&out), "warn 1\nwarn 2\nwarn 3\n");
    // The tail counts the lines of both streams, as docker's does.
    let out = d.run(&["logs", "--tail", "2", id.trim()]);
    assert_eq!(
        (stdout(&out).as_str(), stderr(&out).as_str()),
        ("line 3\n", "warn 3\n")
    );
    d.ok(&["rm", id.trim()]);

    // attach to a running container: its output from then on, and its exit code.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        BUSYBOX,
        "sh",
        "-c",
        "i=0; while [ $i -lt 6 ]; do echo tick $i; i=$((i+1)); sleep 0.3; done; exit 4",
    ]);
    let out = d.run(&["attach", "--no-stdin", "talker"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stdout(&out).ends_with("tick 4\ntick 5\n"),
        "{}",
        stdout(&out)
    );
    d.ok(&["rm", "talker"]);
}

/// `docker run -it` under a pseudo-terminal (util-linux `script` provides it): the
/// container sees a TTY of the client's size, what is typed reaches it, its exit code
/// is docker's.
#[test]
fn run_interactive_tty_under_a_pty() {
    let test = "run_interactive_tty_under_a_pty";
    if !support::require(test, true, &["script"]) {
        return;
    }
    let Some(d) = Docker::start(test) else {
        return;
    };
    // The size comes by a resize right after the start (API 1.41), as with dockerd.
    typed_on_a_33x77_terminal(&d, &format!("docker run -it --rm {BUSYBOX}"), 5);
    assert_eq!(d.containers(), Vec::<String>::new());
}

/// Runs `docker_command sh -c '…; exit CODE'` under `script` on a 33x77 terminal, types
/// a word, and checks what a user would see: a terminal of that size, the word echoed
/// back by the command, and the command's exit code.
fn typed_on_a_33x77_terminal(d: &Docker, docker_command: &str, code: i32) {
    let line = format!(
        "stty rows 33 cols 77; \
         {docker_command} sh -c 'tty; sleep 1; stty size; read word; echo got $word; exit {code}'"
    );
    let mut child = d
        .program("script", &["-qec", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    stdin.write_all(b"word\n").unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(code), "{text}{}", stderr(&out));
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("33 77"), "{text}");
    assert!(text.contains("got word"), "{text}");
}

/// `docker exec -it` under a pseudo-terminal: the command gets a terminal, the client's
/// size reaches it (at API 1.41 the docker CLI sends it by a resize right after the
/// start, as it does to dockerd), what is typed reaches it, and its exit code is
/// docker's.
#[test]
fn exec_interactive_tty_under_a_pty() {
    let test = "exec_interactive_tty_under_a_pty";
    if !support::require(test, true, &["script"]) {
        return;
    }
    let Some(d) = Docker::start(test) else {
        return;
    };
    d.ok(&["run", "-d", "--name", "box", BUSYBOX, "sleep", "300"]);
    typed_on_a_33x77_terminal(&d, "docker exec -it box", 4);
    d.ok(&["rm", "-f", "box"]);
}

/// The Python interpreter with docker-py and testcontainers (scripts/test makes a venv
/// and names it in `LOCALD_TEST_PYTHON`), or `None` after a loud SKIP outside CI.
#[allow(clippy::print_stderr)] // the loud SKIP, as support::require prints it
fn python_with_docker(test: &str) -> Option<String> {
    let python = std::env::var("LOCALD_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let found = Command::new(&python)
        .args(["-c", "import docker, testcontainers"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(python);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: CI must provide {python} with the docker and testcontainers packages");
    }
    eprintln!("\n!!! SKIPPED {test}: needs {python} with the docker and testcontainers packages (pip install docker testcontainers) !!!\n");
    None
}

/// Runs a Python script against the daemon; it prints `ok` at its end.
fn python(d: &Docker, python: &str, script: &str) {
    let mut child = d
        .program(python, &["-W", "ignore", "-c", script])
        .env("TESTCONTAINERS_RYUK_DISABLED", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the Python script did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && stdout(&out).ends_with("ok\n"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn docker_py_runs_execs_and_reads_logs() {
    let test = "docker_py_runs_execs_and_reads_logs";
    if !support::require(test, true, &[]) {
        return;
    }
    let Some(py) = python_with_docker(test) else {
        return;
    };
    let d = Docker::start_daemon();
    python(
        &d,
        &py,
        &format!(
            r#"
import docker
c = docker.from_env()
assert c.version()["ApiVersion"] == "1.41"
assert c.ping()
assert c.containers.run("{BUSYBOX}", ["echo", "hi"], remove=True) == b"hi\n"
try:
    c.containers.run("{BUSYBOX}", ["sh", "-c", "echo bad >&2; exit 2"], remove=True)
    raise SystemExit("no error")
except docker.errors.ContainerError as e:
    assert e.exit_status == 2, e
ctr = c.containers.run("{BUSYBOX}", ["sh", "-c", "echo ready; exec sleep 100"],
                       detach=True, labels={{"suite": "py"}}, ports={{"8080/tcp": None}})
ctr.reload()
assert ctr.status == "running", ctr.status
assert ctr.labels == {{"suite": "py"}}, ctr.labels
port = ctr.ports["8080/tcp"][0]
assert port["HostIp"] == "127.0.0.1" and int(port["HostPort"]) > 0, port
assert [x.id for x in c.containers.list(filters={{"label": "suite=py"}})] == [ctr.id]
assert c.containers.list(filters={{"label": "suite=other"}}) == []
r = ctr.exec_run(["sh", "-c", "echo exec; exit 3"])
assert (r.exit_code, r.output) == (3, b"exec\n"), r
assert ctr.logs() == b"ready\n"
ctr.kill()
assert ctr.wait()["StatusCode"] == 137
ctr.remove()
try:
    c.containers.get(ctr.id)
    raise SystemExit("still there")
except docker.errors.NotFound:
    pass
assert "{BUSYBOX}:latest" in [t for i in c.images.list() for t in i.tags]
print("ok")
"#
        ),
    );
    assert_eq!(d.containers(), Vec::<String>::new());
}

#[test]
fn testcontainers_waits_for_a_log_line_and_a_port() {
    let test = "testcontainers_waits_for_a_log_line_and_a_port";
    if !support::require(test, true, &[]) {
        return;
    }
    let Some(py) = python_with_docker(test) else {
        return;
    };
    let d = Docker::start_daemon();
    python(
        &d,
        &py,
        &format!(
            r#"
import urllib.request
from testcontainers.core.container import DockerContainer
from testcontainers.core.waiting_utils import wait_for_logs
cmd = ["sh", "-c", "mkdir /www && echo served > /www/index.html && echo ready && exec httpd -f -p 8080 -h /www"]
with DockerContainer("{BUSYBOX}").with_command(cmd).with_exposed_ports(8080) as c:
    wait_for_logs(c, "ready", timeout=20)
    url = f"http://{{c.get_container_host_ip()}}:{{c.get_exposed_port(8080)}}/"
    assert urllib.request.urlopen(url, timeout=10).read() == b"served\n"
print("ok")
"#
        ),
    );
    assert_eq!(d.containers(), Vec::<String>::new());
}

#[test]
fn cp_copies_files_in_and_out() {
    let Some(d) = Docker::start("cp_copies_files_in_and_out") else {
        return;
    };
    let id = d.ok(&["run", "-d", "--name", "box", BUSYBOX, "sleep", "100"]);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("note.txt");
    std::fs::write(&src, "copied in\n").unwrap();
    d.ok(&["cp", src.to_str().unwrap(), "box:/tmp/"]);
    assert_eq!(
        d.ok(&["exec", "box", "cat", "/tmp/note.txt"]),
        "copied in\n"
    );
    d.ok(&[
        "exec",
        "box",
        "sh",
        "-c",
        "mkdir -p /out/sub && echo deep > /out/sub/f",
    ]);
    let dest = dir.path().join("back");
    d.ok(&["cp", "box:/out", dest.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(dest.join("sub/f")).unwrap(),
        "deep\n"
    );
    let out = d.run(&["cp", "box:/no/such", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    // 404: docker 20.10 says "No such container:path", newer clients repeat ours.
    assert!(stderr(&out).contains("/no/such"), "{}", stderr(&out));
    d.ok(&["rm", "-f", id.trim()]);
}

#[test]
fn login_then_pull_from_a_private_registry() {
    let test = "login_then_pull_from_a_private_registry";
    if !support::require(test, true, &["docker-registry", "skopeo", "htpasswd"]) {
        return;
    }
    let Some(d) = Docker::start(test) else {
        return;
    };
    let registry = support::Registry::start_with(support::RegistryOptions {
        tls: false,
        basic_auth: Some(("bob".into(), "pa55word".into())),
    });
    let dir = tempfile::tempdir().unwrap();
    let mut layout = support::Layout::new(dir.path().join("oci"));
    let image = layout.image(
        "amd64",
        &[(busybox_layer(), support::Compression::Gzip)],
        serde_json::json!({"Cmd": ["echo", "private"]}),
    );
    layout.name_image("img", &image);
    let name = format!("{}/private:1", registry.addr);
    support::push(&layout.dir, "img", &name, &["--dest-creds", "bob:pa55word"]);

    let out = d.run(&["pull", &name]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let out = d.run(&["login", &registry.addr, "-u", "bob", "-p", "wrong"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = d.run(&["login", &registry.addr, "-u", "bob", "--password-stdin"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "no password on stdin: {}",
        stderr(&out)
    );
    let mut child = d
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
        .write_all(b"pa55word\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Login Succeeded"), "{}", stdout(&out));
    assert_eq!(d.ok(&["run", "--rm", &name]), "private\n");
}

#[test]
fn a_restarted_daemon_keeps_docker_ids_and_created_containers() {
    let Some(mut d) = Docker::start("a_restarted_daemon_keeps_docker_ids_and_created_containers")
    else {
        return;
    };
    let created = d.ok(&["create", "--name", "pending", BUSYBOX, "echo", "later"]);
    let running = d.ok(&["run", "-d", "--name", "up", BUSYBOX, "sleep", "100"]);
    let gone = d.ok(&["run", "-d", "--rm", BUSYBOX, "sleep", "0.5"]);
    let before = d.ok(&[
        "ps",
        "-a",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Names}} {{.State}}",
    ]);
    assert!(
        before.contains(&format!("{} pending created", created.trim())),
        "{before}"
    );
    assert!(
        before.contains(&format!("{} up running", running.trim())),
        "{before}"
    );

    d.restart_daemon();
    // The auto-remove container ends while no daemon watches it.
    std::thread::sleep(Duration::from_millis(1000));
    let after = d.ok(&[
        "ps",
        "-a",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Names}} {{.State}}",
    ]);
    let mut lines: Vec<&str> = after.lines().collect();
    lines.sort();
    let mut want = vec![
        format!("{} pending created", created.trim()),
        format!("{} up running", running.trim()),
    ];
    want.sort();
    assert_eq!(lines, want, "{after}");
    let out = d.run(&["inspect", gone.trim()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));

    // The created one starts; the running one is reached by its docker id.
    let out = d.run(&["start", "-a", "pending"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "later\n");
    d.ok(&["kill", running.trim()]);
    assert_eq!(d.ok(&["wait", running.trim()]), "137\n");
    d.ok(&["rm", running.trim(), created.trim()]);
    assert_eq!(d.containers(), Vec::<String>::new());
}
