//! Real containers on the real kernel, through the `Runtime` trait. These need root;
//! without it each test says so loudly and skips (CI runs them as root).
#![cfg(target_os = "linux")]
#![allow(clippy::print_stderr)]

use std::{
    io::{Read, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use locald_core::{
    ContainerSpec, ContainerSpecBuilder, ContainerState, Error, ExitStatus, LogOptions, LogStream,
    NetworkMode, Runtime, Signal,
};
use locald_runtime::{testing, ContainerRuntime};
use locald_test_support::{cmdline_of, parent_of, Compression, Layer, Layout};
use tokio::io::AsyncReadExt;

struct Env {
    home: tempfile::TempDir,
    rt: ContainerRuntime,
    rootfs: PathBuf,
}

fn env() -> Option<Env> {
    if !testing::is_root() {
        eprintln!("SKIP: container tests need root (CI runs them as root)");
        return None;
    }
    let home = tempfile::tempdir().unwrap();
    // Searchable by others, so that Safe Mode's mapped root can reach the state.
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let rt =
        ContainerRuntime::with_home(home.path()).shim_program(env!("CARGO_BIN_EXE_locald-shim"));
    let rootfs = testing::shared_busybox_rootfs().expect("busybox rootfs");
    Some(Env { home, rt, rootfs })
}

impl Env {
    fn spec(&self) -> ContainerSpecBuilder {
        ContainerSpec::builder_from_rootfs(&self.rootfs)
    }

    /// Runs to completion; returns status, stdout, stderr; removes the container.
    async fn run(&self, b: ContainerSpecBuilder) -> (ExitStatus, String, String) {
        let mut h = self.rt.run_container(b.build().unwrap()).await.unwrap();
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
        self.rt.remove_container(&id, false).await.unwrap();
        (status, o, e)
    }

    async fn sh(&self, script: &str) -> (ExitStatus, String, String) {
        self.run(self.spec().cmd(["sh", "-c", script])).await
    }

    fn containers_left(&self) -> usize {
        locald_test_support::container_dirs_left(self.home.path()).len()
    }

    fn mounts_left(&self) -> usize {
        locald_test_support::mounts_under_home(self.home.path()).len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_and_exit_code() {
    let Some(e) = env() else { return };
    let (status, out, err) = e.sh("echo out; echo err >&2; exit 3").await;
    assert_eq!(status, ExitStatus::Exited(3));
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    assert_eq!(e.containers_left(), 0);
    assert_eq!(e.mounts_left(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid_one_hostname_env_user_workdir() {
    let Some(e) = env() else { return };
    let (_, out, _) = e
        .run(
            e.spec()
                .cmd([
                    "sh",
                    "-c",
                    "echo $$ $(hostname) $GREETING $(id -u):$(id -g):$(id -G) $(pwd) $HOME",
                ])
                .hostname("box")
                .env("GREETING", "hi")
                .user("app")
                .workdir("/tmp"),
        )
        .await;
    assert_eq!(out, "1 box hi 1000:1000:1000 50 /tmp /home/app\n");
    // A missing working directory is created, as docker does.
    let (_, out, _) = e.run(e.spec().cmd(["pwd"]).workdir("/new/dir")).await;
    assert_eq!(out, "/new/dir\n");
    let (_, out, _) = e.run(e.spec().cmd(["id", "-u"]).user("4242:4242")).await;
    assert_eq!(out, "4242\n");
    let (_, out, _) = e.sh("cat /etc/hostname; grep -c localhost /etc/hosts; test -s /etc/resolv.conf && echo resolv").await;
    assert!(
        out.ends_with("1\nresolv\n") || out.ends_with("2\nresolv\n"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_reach_the_container() {
    let Some(e) = env() else { return };
    let spec = e
        .spec()
        .cmd([
            "sh",
            "-c",
            "trap 'exit 42' TERM; echo ready; while true; do sleep 0.05; done",
        ])
        .build()
        .unwrap();
    let mut h = e.rt.run_container(spec).await.unwrap();
    let mut out = h.process().take_stdout().unwrap();
    let mut buf = [0u8; 6];
    out.read_exact(&mut buf).await.unwrap();
    h.kill(Signal::TERM).await.unwrap();
    assert_eq!(h.wait().await.unwrap(), ExitStatus::Exited(42));
    let id = h.id().to_owned();
    e.rt.remove_container(&id, false).await.unwrap();

    let spec = e.spec().cmd(["sleep", "100"]).build().unwrap();
    let mut h = e.rt.run_container(spec).await.unwrap();
    e.rt.kill_container(h.id(), Signal::KILL).await.unwrap();
    assert_eq!(h.wait().await.unwrap(), ExitStatus::Signaled(Signal::KILL));
    let id = h.id().to_owned();
    assert!(matches!(
        e.rt.inspect_container(&id).await.unwrap().state,
        ContainerState::Exited(ExitStatus::Signaled(Signal::KILL))
    ));
    e.rt.remove_container(&id, false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_tmpfs_and_volume_mounts() {
    let Some(e) = env() else { return };
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "from host\n").unwrap();
    let ro = format!("{}:/ro:ro", host.path().display());
    let rw = format!("{}:/rw", host.path().display());
    let (status, out, err) = e
        .run(
            e.spec()
                .cmd(["sh", "-c", "cat /ro/in; touch /ro/x 2>/dev/null || echo ro-refused; echo hi > /rw/out; grep -c ' /scratch tmpfs' /proc/mounts; echo kept > /data/v"])
                .volume(ro)
                .volume(rw)
                .volume("vol1:/data")
                .tmpfs("/scratch:size=1m"),
        )
        .await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "from host\nro-refused\n1\n");
    assert_eq!(
        std::fs::read_to_string(host.path().join("out")).unwrap(),
        "hi\n"
    );
    let (_, out, _) = e
        .run(e.spec().cmd(["cat", "/data/v"]).volume("vol1:/data"))
        .await;
    assert_eq!(out, "kept\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_is_a_snapshot_and_can_be_read_only() {
    let Some(e) = env() else { return };
    let (status, _, _) = e.sh("echo x > /written && rm /bin/ls").await;
    assert!(status.success());
    assert!(
        !e.rootfs.join("written").exists(),
        "the lower directory was modified"
    );
    assert!(e.rootfs.join("bin/ls").exists());
    let (status, _, err) = e
        .run(e.spec().cmd(["sh", "-c", "touch /x"]).read_only(true))
        .await;
    assert!(!status.success());
    assert!(err.contains("Read-only file system"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_oom_kill_is_reported() {
    let Some(e) = env() else { return };
    let spec = e
        .spec()
        .cmd([
            "sh",
            "-c",
            "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
        ])
        .memory("16m")
        .build()
        .unwrap();
    let mut h = e.rt.run_container(spec).await.unwrap();
    let id = h.id().to_owned();
    let status = h.wait().await.unwrap();
    let summary = e.rt.inspect_container(&id).await.unwrap();
    assert!(summary.oom_killed, "{status:?} {summary:?}");
    e.rt.remove_container(&id, false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pids_limit_contains_a_fork_bomb() {
    let Some(e) = env() else { return };
    let spec = e
        .spec()
        .cmd([
            "sh",
            "-c",
            "(for i in $(seq 1 200); do sleep 30 & done) 2>/dev/null; echo done; sleep 30",
        ])
        .pids_limit(20)
        .build()
        .unwrap();
    let mut h = e.rt.run_container(spec).await.unwrap();
    let id = h.id().to_owned();
    let mut out = h.process().take_stdout().unwrap();
    let mut buf = [0u8; 5];
    out.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"done\n", "the shell survived the bomb");
    let current = ["/sys/fs/cgroup/pids/locald", "/sys/fs/cgroup/locald"]
        .iter()
        .map(|p| Path::new(p).join(&id).join("pids.current"))
        .find_map(|p| std::fs::read_to_string(p).ok())
        .expect("the container's pids cgroup");
    let n: u64 = current.trim().parse().unwrap();
    assert!(n > 1 && n <= 20, "{n} processes");
    e.rt.remove_container(&id, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_none_has_only_loopback_and_host_shares() {
    let Some(e) = env() else { return };
    let (_, out, _) = e
        .run(
            e.spec()
                .cmd(["sh", "-c", "ls /sys/class/net"])
                .network(NetworkMode::None),
        )
        .await;
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    let (_, out, _) = e
        .run(
            e.spec()
                .cmd([
                    "sh",
                    "-c",
                    "ping -c1 -W1 127.0.0.1 >/dev/null && echo lo-up",
                ])
                .network(NetworkMode::None),
        )
        .await;
    assert_eq!(out, "lo-up\n");
    let host_ifaces = std::fs::read_dir("/sys/class/net").unwrap().count();
    let (_, out, _) = e
        .run(
            e.spec()
                .cmd(["sh", "-c", "ls /sys/class/net | wc -l"])
                .network(NetworkMode::Host),
        )
        .await;
    assert_eq!(out.trim(), host_ifaces.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_port_answers_from_the_host() {
    let Some(e) = env() else { return };
    let spec = e
        .spec()
        .cmd([
            "sh",
            "-c",
            "mkdir /www && echo pong > /www/index.html && exec httpd -f -p 8080 -h /www",
        ])
        .publish("127.0.0.1::8080")
        .build()
        .unwrap();
    let h = e.rt.run_container(spec).await.unwrap();
    let id = h.id().to_owned();
    let port = e.rt.inspect_container(&id).await.unwrap().ports[0]
        .host_port
        .unwrap();
    let mut answer = String::new();
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.contains("pong") {
                answer = buf;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answer.contains("200 OK"), "{answer}");
    // The port is taken while the container runs.
    let err =
        e.rt.run_container(
            e.spec()
                .cmd(["true"])
                .publish(format!("127.0.0.1:{port}:80"))
                .build()
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already in use"), "{err}");
    e.rt.remove_container(&id, true).await.unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert_eq!(e.containers_left(), 0);
}

/// `-p 127.0.0.1::53/udp`: a UDP echo server inside the container (the host's
/// python3, bound in read-only: busybox has no UDP server) answers two clients on the
/// host's loopback, each getting its own replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_udp_port_echoes_to_each_host_client() {
    let Some(e) = env() else { return };
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 is missing (CI installs it)"
        );
        eprintln!("SKIP published_udp_port_echoes_to_each_host_client: no /usr/bin/python3");
        return;
    }
    let server = "import socket\n\
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
        s.bind(('127.0.0.1', 53))\n\
        while True:\n    \
            d, a = s.recvfrom(65536)\n    \
            s.sendto(b'echo:' + d, a)\n";
    let spec = e
        .spec()
        .mount(locald_core::Mount::bind("/usr", "/usr", true))
        .cmd([
            "sh",
            "-c",
            "ln -s usr/lib /lib && ln -s usr/lib64 /lib64 && exec /usr/bin/python3 -c \"$0\"",
            server,
        ])
        .network(NetworkMode::Private)
        .publish("127.0.0.1::53/udp")
        .build()
        .unwrap();
    let h = e.rt.run_container(spec).await.unwrap();
    let id = h.id().to_owned();
    let mapping = e.rt.inspect_container(&id).await.unwrap().ports[0];
    assert_eq!(mapping.protocol, locald_core::Protocol::Udp);
    let port = mapping.host_port.unwrap();
    let ask = |sock: &std::net::UdpSocket, msg: &[u8]| -> Option<Vec<u8>> {
        sock.send_to(msg, ("127.0.0.1", port)).ok()?;
        let mut buf = [0u8; 256];
        let (n, from) = sock.recv_from(&mut buf).ok()?;
        assert_eq!(from.port(), port, "the reply comes from the published port");
        Some(buf[..n].to_vec())
    };
    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    // The server may still be starting: ask until it answers.
    let mut first = None;
    for _ in 0..100 {
        first = ask(&a, b"one");
        if first.is_some() {
            break;
        }
    }
    assert_eq!(first.as_deref(), Some(&b"echo:one"[..]));
    assert_eq!(ask(&b, b"two").as_deref(), Some(&b"echo:two"[..]));
    assert_eq!(ask(&a, b"three").as_deref(), Some(&b"echo:three"[..]));
    // The port is taken while the container runs, and freed with it.
    let taken = std::net::UdpSocket::bind(("127.0.0.1", port));
    assert!(taken.is_err(), "the published udp port was not bound");
    e.rt.remove_container(&id, true).await.unwrap();
    assert!(std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok());
    assert_eq!(e.containers_left(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_mode_drops_privileges() {
    let Some(e) = env() else { return };
    let (status, out, err) = e
        .run(e.spec().safe(true).cmd([
            "sh",
            "-c",
            "grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status; \
             unshare -n true 2>/dev/null || echo unshare-blocked; \
             touch /x 2>/dev/null || echo root-read-only; \
             touch /tmp/ok && echo tmp-writable; \
             awk '{print $2}' /proc/self/uid_map; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
        ]))
        .await;
    assert!(status.success(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "CapEff:\t0000000000000000");
    assert_eq!(lines[1], "NoNewPrivs:\t1");
    assert_eq!(
        &lines[2..5],
        ["unshare-blocked", "root-read-only", "tmp-writable"]
    );
    // Container root is an unprivileged host uid where user namespaces are usable.
    if std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .map(|s| s.trim() != "0")
        .unwrap_or(false)
    {
        assert_eq!(lines[5], "1000000");
    }
    // Its own network: loopback, and pasta's interface when pasta is installed.
    assert!(lines[6..].contains(&"lo"), "{out}");
    assert!(!lines[6..].is_empty() && lines[6..].len() <= 2, "{out}");
}

/// True when the kernel allows user namespaces (Safe Mode then maps container root).
fn user_namespaces_allowed() -> bool {
    std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .map(|s| s.trim() != "0")
        .unwrap_or(false)
}

/// Safe Mode on an image, with a home searchable by others, so container root is host
/// uid 1000000 (it used to fail with "failed to prepare rootfs": the mapped root could
/// not create `/etc/hosts` in the snapshot). The mount points the image lacks are made
/// in the container's snapshot, never in the stored layer; an image whose `/etc` is a
/// symlink out of its root (absolute, or through `..`) makes nothing outside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_mode_on_an_image_with_a_user_namespace() {
    let Some(e) = env() else { return };
    if !user_namespaces_allowed() {
        eprintln!("SKIP safe_mode_on_an_image_with_a_user_namespace: user namespaces are off");
        return;
    }
    let script = "cat /proc/self/uid_map; grep -c localhost /etc/hosts; \
                  test -f /etc/resolv.conf && echo resolv; touch /x 2>/dev/null || echo ro";
    // The built-in image, made on demand: a single layer with no /etc/hosts.
    let builtin = ContainerSpec::builder("localhost/locald/busybox")
        .safe(true)
        .cmd(["sh", "-c", script]);
    let (status, out, err) = e.run(builtin).await;
    assert!(status.success(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let uid_map: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(uid_map, ["0", "1000000", "65536"], "{out}");
    assert_eq!(&lines[1..], ["2", "resolv", "ro"], "{out}");
    let layers = e.home.path().join("images/layers");
    for layer in std::fs::read_dir(&layers).unwrap() {
        let layer = layer.unwrap().path();
        assert!(
            !layer.join("etc/hosts").exists(),
            "a mount point was created in the stored layer {}",
            layer.display()
        );
    }

    // A host directory that must stay empty, and images whose /etc leads to it.
    let outside = tempfile::tempdir().unwrap();
    let escaped = outside.path().to_str().unwrap();
    let inside = escaped.trim_start_matches('/');
    let layouts = tempfile::tempdir().unwrap();
    let busybox = Layer::from_dir(&e.rootfs).expect("the busybox rootfs as a layer");
    let image = |name: &str, etc: Layer| {
        let mut layout = Layout::new(layouts.path().join(name.replace(['/', ':'], "-")));
        let info = layout.image(
            std::env::consts::ARCH.replace("x86_64", "amd64").as_str(),
            &[
                (busybox.clone(), Compression::Gzip),
                (etc, Compression::Gzip),
            ],
            serde_json::json!({}),
        );
        layout.name_image(name, &info);
        layout
    };
    let safe_id = |image: &str| {
        ContainerSpec::builder(image)
            .safe(true)
            .cmd(["sh", "-c", "cat /proc/self/uid_map"])
    };
    // The symlink's target exists inside the image: the container runs, its /etc/hosts
    // made at that path in the snapshot, whether the link is absolute or climbs out.
    let mut parents = Layer::new();
    let mut dir = String::new();
    for part in inside.split('/') {
        dir = if dir.is_empty() {
            part.to_owned()
        } else {
            format!("{dir}/{part}")
        };
        parents = parents.dir(&dir);
    }
    let climbing = format!("../../../../../../../..{escaped}");
    for (name, target) in [
        ("localhost/etc-absolute:1", escaped),
        ("localhost/etc-climbing:1", climbing.as_str()),
    ] {
        let layout = image(name, parents.clone().symlink("etc", target));
        e.rt.load_image(&layout.dir).await.unwrap();
        let (status, out, err) = e.run(safe_id(name)).await;
        assert!(status.success(), "{name}: {err}");
        assert!(out.contains("1000000"), "{name}: {out}");
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "{name} made something outside its root"
        );
    }
    // The target is missing inside the image: a clear error, nothing created anywhere.
    let layout = image(
        "localhost/etc-dangling:1",
        Layer::new().symlink("etc", &format!("{escaped}/etc")),
    );
    e.rt.load_image(&layout.dir).await.unwrap();
    let err =
        e.rt.run_container(safe_id("localhost/etc-dangling:1").build().unwrap())
            .await
            .unwrap_err();
    let err = locald_runtime::util::error_chain(&err);
    assert!(err.contains("mount point /etc/hosts"), "{err}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert_eq!(e.containers_left(), 0);
    assert_eq!(e.mounts_left(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_inside_a_running_container() {
    let Some(e) = env() else { return };
    let spec = e
        .spec()
        .cmd(["sleep", "100"])
        .hostname("inner")
        .name("sleeper")
        .build()
        .unwrap();
    let h = e.rt.run_container(spec).await.unwrap();
    let out =
        e.rt.exec(
            "sleeper",
            locald_core::Command::new("sh")
                .args(["-c", "hostname; cat /proc/1/cmdline | tr '\\0' ' '; exit 5"]),
        )
        .await
        .unwrap()
        .output()
        .await
        .unwrap();
    assert_eq!(out.status, ExitStatus::Exited(5));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "inner\nsleep 100 ");
    let err =
        e.rt.exec("sleeper", locald_core::Command::new("nope"))
            .await
            .unwrap_err();
    assert!(matches!(err, Error::ProgramNotFound { .. }), "{err}");
    let list = e.rt.list_containers(false).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "sleeper");
    e.rt.stop_container(h.id(), Duration::from_millis(200))
        .await
        .unwrap();
    assert!(e.rt.list_containers(false).await.unwrap().is_empty());
    assert_eq!(e.rt.list_containers(true).await.unwrap().len(), 1);
    e.rt.remove_container("sleeper", false).await.unwrap();
    assert!(matches!(
        e.rt.inspect_container("sleeper").await.unwrap_err(),
        Error::NotFound { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_logs_and_auto_remove() {
    let Some(e) = env() else { return };
    let spec = e
        .spec()
        .cmd(["sh", "-c", "echo one; echo two >&2; echo three"])
        .build()
        .unwrap();
    let h = e.rt.run_container(spec).await.unwrap();
    let id = h.id().to_owned();
    drop(h);
    e.rt.wait_container(&id).await.unwrap();
    let mut logs =
        e.rt.container_logs(&id, LogOptions::default())
            .await
            .unwrap();
    let mut got = Vec::new();
    while let Some(chunk) =
        std::future::poll_fn(|cx| futures_core::Stream::poll_next(logs.as_mut(), cx)).await
    {
        got.push(chunk.unwrap());
    }
    let out: Vec<u8> = got
        .iter()
        .filter(|(s, _)| *s == LogStream::Stdout)
        .flat_map(|(_, d)| d.clone())
        .collect();
    let err: Vec<u8> = got
        .iter()
        .filter(|(s, _)| *s == LogStream::Stderr)
        .flat_map(|(_, d)| d.clone())
        .collect();
    assert_eq!(out, b"one\nthree\n");
    assert_eq!(err, b"two\n");
    e.rt.remove_container(&id, false).await.unwrap();

    let spec = e.spec().cmd(["true"]).auto_remove(true).build().unwrap();
    let mut h = e.rt.run_container(spec).await.unwrap();
    let id = h.id().to_owned();
    assert!(h.wait().await.unwrap().success());
    for _ in 0..200 {
        if e.containers_left() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(e.rt.inspect_container(&id).await.is_err());
    assert_eq!(e.containers_left(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_at_once() {
    let Some(e) = env() else { return };
    let e = std::sync::Arc::new(e);
    let mut tasks = Vec::new();
    for i in 0..32 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            let (status, out, _) = e.sh(&format!("echo container-{i}; exit {}", i % 7)).await;
            (i, status, out)
        }));
    }
    for t in tasks {
        let (i, status, out) = t.await.unwrap();
        assert_eq!(out, format!("container-{i}\n"));
        assert_eq!(status, ExitStatus::Exited(i % 7));
    }
    assert_eq!(e.containers_left(), 0);
    assert_eq!(e.mounts_left(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_fail_clearly_and_leave_nothing() {
    let Some(e) = env() else { return };
    let cases: Vec<(ContainerSpecBuilder, &str)> = vec![
        (
            e.spec().cmd(["true"]).volume("/does/not/exist:/x"),
            "invalid mount \"/does/not/exist\": the host path does not exist",
        ),
        (
            e.spec().cmd(["no-such-program"]),
            "program not found: no-such-program",
        ),
        (e.spec().cmd(["/bin/nope"]), "program not found: /bin/nope"),
        (
            e.spec().cmd(["true"]).user("ghost"),
            "invalid user \"ghost\": no user \"ghost\" in the container's /etc/passwd",
        ),
        (
            ContainerSpec::builder_from_rootfs("/does/not/exist").cmd(["true"]),
            "no such root filesystem: /does/not/exist",
        ),
        (
            e.spec().cmd(["true"]).workdir("/etc/passwd"),
            "invalid working directory \"/etc/passwd\": not a directory in the container",
        ),
    ];
    for (b, want) in cases {
        let err = e.rt.run_container(b.build().unwrap()).await.unwrap_err();
        assert_eq!(err.to_string(), want);
    }
    // An image that is not stored is pulled first, as docker run does; here its
    // registry is not there.
    let missing = ContainerSpec::builder("127.0.0.1:9/nope:1").cmd(["true"]);
    let err =
        e.rt.run_container(missing.build().unwrap())
            .await
            .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("registry 127.0.0.1:9: unreachable"),
        "{err}"
    );
    // A failure inside the runtime library (the mount target's parent is a file): the
    // shim reports it, reaps the library's intermediate process and removes everything.
    let host = tempfile::tempdir().unwrap();
    let err =
        e.rt.run_container(
            e.spec()
                .cmd(["true"])
                .volume(format!("{}:/etc/passwd/sub", host.path().display()))
                .build()
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("starting container c-"),
        "{err}"
    );
    assert_eq!(e.containers_left(), 0);
    let err = e.spec().memory("lots").build().unwrap_err();
    assert!(err.to_string().starts_with("invalid memory limit"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err =
        e.rt.run_container(
            e.spec()
                .cmd(["true"])
                .publish(format!("{port}:80"))
                .build()
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("invalid port mapping \"{port}:80/tcp\": host port {port} is already in use")
    );
    e.rt.run_container(e.spec().cmd(["sleep", "10"]).name("dup").build().unwrap())
        .await
        .unwrap();
    let err =
        e.rt.run_container(e.spec().cmd(["true"]).name("dup").build().unwrap())
            .await
            .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid container name \"dup\": already in use"),
        "{err}"
    );
    let err = e.rt.remove_container("dup", false).await.unwrap_err();
    assert!(err.to_string().contains("is running"), "{err}");
    e.rt.remove_container("dup", true).await.unwrap();
    assert_eq!(e.containers_left(), 0);
    assert_eq!(e.mounts_left(), 0);
    assert!(std::fs::read_dir(e.home.path().join("container-names"))
        .unwrap()
        .next()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_and_stdin() {
    let Some(e) = env() else { return };
    let spec = e
        .spec()
        .cmd([
            "sh",
            "-c",
            "read line; test -t 0 && test -t 1 && echo \"tty $TERM $line\"",
        ])
        .tty(true)
        .stdin(true)
        .build()
        .unwrap();
    let mut h = e.rt.run_container(spec).await.unwrap();
    let mut input = h.process().take_stdin().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut input, b"typed\n")
        .await
        .unwrap();
    let mut out = h.process().take_stdout().unwrap();
    let mut text = String::new();
    let (r, status) = tokio::join!(out.read_to_string(&mut text), h.wait());
    r.unwrap();
    assert!(status.unwrap().success());
    // The terminal echoes the input and ends lines with CR LF.
    assert!(text.contains("tty xterm typed\r\n"), "{text:?}");
    let id = h.id().to_owned();
    e.rt.remove_container(&id, false).await.unwrap();

    // Without a terminal, stdin is a pipe the caller writes to.
    let spec = e
        .spec()
        .cmd(["tr", "a-z", "A-Z"])
        .stdin(true)
        .build()
        .unwrap();
    let mut h = e.rt.run_container(spec).await.unwrap();
    let mut input = h.process().take_stdin().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut input, b"loud\n")
        .await
        .unwrap();
    drop(input);
    let mut out = h.process().take_stdout().unwrap();
    let mut text = String::new();
    out.read_to_string(&mut text).await.unwrap();
    assert_eq!(text, "LOUD\n");
    h.wait().await.unwrap();
    let id = h.id().to_owned();
    e.rt.remove_container(&id, false).await.unwrap();
}

/// From its second container on, a runtime has its shims forked by a resident forker
/// instead of executing each. A forker killed while containers run takes none of them
/// down: they run on, report their exit and are removed as usual, and the next
/// containers start (the runtime makes a new forker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shims_from_the_second_container_on_are_forked_and_outlive_their_forker() {
    let Some(e) = env() else { return };
    let me = std::process::id();
    async fn start(e: &Env) -> locald_core::ContainerHandle {
        let spec = e.spec().cmd(["sleep", "30"]).network(NetworkMode::None);
        e.rt.run_container(spec.build().unwrap()).await.unwrap()
    }
    let mut first = start(&e).await;
    let shim_of = |h: &mut locald_core::ContainerHandle| parent_of(h.process().id().unwrap());
    let first_shim = shim_of(&mut first);
    assert_eq!(
        parent_of(first_shim),
        me,
        "the first shim is spawned by the runtime"
    );

    let mut second = start(&e).await;
    let forker = parent_of(shim_of(&mut second));
    assert_ne!(forker, me);
    assert!(
        cmdline_of(forker).contains("__locald-shim forker"),
        "the second shim's parent is {:?}",
        cmdline_of(forker)
    );
    let mut third = start(&e).await;
    assert_eq!(
        parent_of(shim_of(&mut third)),
        forker,
        "one forker serves on"
    );

    // The forker dies: its shims and their containers do not.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(forker as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let gone = locald_test_support::settle(
        Duration::from_secs(5),
        || locald_test_support::process_alive(forker),
        |alive| !alive,
    );
    assert!(!gone, "the forker did not end");
    let listed = e.rt.list_containers(false).await.unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    // The runtime finds its forker gone: it spawns this shim itself, and makes a new
    // forker for the next.
    let mut fourth = start(&e).await;
    assert_eq!(parent_of(shim_of(&mut fourth)), me);
    let mut fifth = start(&e).await;
    let new_forker = parent_of(shim_of(&mut fifth));
    assert!(
        cmdline_of(new_forker).contains("__locald-shim forker") && new_forker != forker,
        "the fifth shim's parent is {:?}",
        cmdline_of(new_forker)
    );
    for mut h in [first, second, third, fourth, fifth] {
        h.process().kill(Signal::KILL).await.unwrap();
        assert_eq!(h.wait().await.unwrap(), ExitStatus::Signaled(Signal::KILL));
        let id = h.id().to_owned();
        e.rt.remove_container(&id, false).await.unwrap();
    }
    assert_eq!(e.containers_left(), 0);
    assert_eq!(e.mounts_left(), 0);
    // The forker ends with the runtime.
    drop(e);
    assert!(!locald_test_support::process_alive(new_forker));
}

/// A container's processes start with every signal at its default, as crun's and
/// docker's do: a pipeline whose reader ends early ends its writer quietly with
/// SIGPIPE, instead of the writer failing with "Broken pipe".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_containers_processes_start_with_no_signal_ignored() {
    let Some(e) = env() else { return };
    // The first container's shim is spawned, the next ones' forked.
    for _ in 0..2 {
        let (status, out, err) = e
            .run(
                e.spec()
                    .network(NetworkMode::None)
                    .cmd(["sh", "-c", "yes | head -n 1"]),
            )
            .await;
        assert_eq!(status, ExitStatus::Exited(0), "{err}");
        assert_eq!(out, "y\n");
        assert_eq!(err, "", "the writer did not end quietly");
        let (status, out, err) = e
            .run(
                e.spec()
                    .network(NetworkMode::None)
                    .cmd(["grep", "SigIgn", "/proc/self/status"]),
            )
            .await;
        assert_eq!(status, ExitStatus::Exited(0), "{err}");
        let ignored = u64::from_str_radix(out.trim().trim_start_matches("SigIgn:").trim(), 16)
            .unwrap_or_else(|_| panic!("{out:?}"));
        // Signals 1 to 31. The C library keeps 32 and 33 for itself and refuses to
        // change them; a caller that ignores those passes them on.
        assert_eq!(ignored & 0x7fff_ffff, 0, "ignored signals: {ignored:#x}");
    }
}
