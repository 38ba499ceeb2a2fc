//! The cost of going through the daemon: a request the runtime answers at once (an
//! invalid command: the round trip alone) and `run_command("true")`, in process against
//! the same calls through a daemon on a Unix socket (the daemon serves from its own tokio
//! runtime in this process, over a real socket and real HTTP), and, once the runtime
//! runs containers (as root) on a root filesystem with `/bin/true` (`LOCALD_BENCH_ROOTFS`,
//! default: the shared busybox fixture), a container run both ways.
//!
//! `scripts/bench daemon` runs this, prints the medians and their difference, and
//! measures an idle daemon's memory.

use std::{sync::Arc, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use locald::remote::{Host, RemoteRuntime};
use locald::{Capability, Command, ContainerSpec, Runtime};
use locald_cli::daemon::{bind_unix, Listener, Server};

fn daemon_round_trip(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let socket = dir.path().join("locald.sock");
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let local: Arc<dyn Runtime> = locald::runtime().expect("a runtime");
    let listener = server_rt.block_on(async { bind_unix(&socket).expect("the socket binds") });
    let server = Server::new(local.clone());
    server_rt.spawn(async move {
        let _ = server
            .serve(
                vec![Listener::Unix(listener)],
                std::future::pending(),
                Duration::from_secs(1),
            )
            .await;
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let remote: Arc<dyn Runtime> = Arc::new(
        rt.block_on(RemoteRuntime::connect(Host::Unix(socket.clone())))
            .expect("the daemon answers"),
    );

    // The round trip alone: a command the runtime rejects before starting anything
    // (an empty program) comes back as the same error either way.
    let mut group = c.benchmark_group("round_trip_daemon");
    for (name, runtime) in [("in_process", &local), ("daemon", &remote)] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let err = runtime
                    .run_command(Command::new(""))
                    .await
                    .expect_err("an empty program is invalid");
                assert!(matches!(err, locald::Error::InvalidInput { .. }));
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("run_true_daemon");
    for (name, runtime) in [("in_process", &local), ("daemon", &remote)] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let out = runtime
                    .run_command(Command::new("true"))
                    .await
                    .expect("true runs");
                assert!(out.status.success());
            })
        });
    }
    group.finish();

    // The streaming path (an upgraded connection per process), as `locald exec` uses it.
    let mut group = c.benchmark_group("spawn_true_daemon");
    for (name, runtime) in [("in_process", &local), ("daemon", &remote)] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let process = runtime
                    .spawn(Command::new("true"))
                    .await
                    .expect("true starts");
                assert!(process.output().await.expect("true runs").status.success());
            })
        });
    }
    group.finish();

    match bench_rootfs() {
        Some(rootfs) if local.info().supports(Capability::Containers) => {
            let spec = ContainerSpec::builder_from_rootfs(rootfs.as_str())
                .cmd(["/bin/true"])
                // As benches/containers.rs: the container's own cost, without pasta's
                // start, which would hide the transport's share.
                .network(locald::NetworkMode::None)
                .build()
                .expect("a valid spec");
            let mut group = c.benchmark_group("container_true_daemon");
            for (name, runtime) in [("in_process", &local), ("daemon", &remote)] {
                group.bench_function(name, |b| {
                    b.to_async(&rt).iter(|| async {
                        let mut handle = runtime
                            .run_container(spec.clone())
                            .await
                            .expect("the container runs");
                        assert!(handle.wait().await.expect("it ends").success());
                        runtime
                            .remove_container(handle.id(), false)
                            .await
                            .expect("it is removed");
                    })
                });
            }
            group.finish();
        }
        _ => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "SKIP container_true_daemon: needs a runtime that runs containers, and root or LOCALD_BENCH_ROOTFS"
                );
            }
        }
    }
    drop(server_rt);
}

/// `LOCALD_BENCH_ROOTFS`, else (on Linux, as root) the shared busybox fixture.
fn bench_rootfs() -> Option<String> {
    if let Ok(rootfs) = std::env::var("LOCALD_BENCH_ROOTFS") {
        return Some(rootfs);
    }
    #[cfg(target_os = "linux")]
    if locald::native::testing::is_root() {
        let rootfs = locald::native::testing::shared_busybox_rootfs().expect("busybox rootfs");
        return rootfs.to_str().map(str::to_owned);
    }
    None
}

criterion_group!(benches, daemon_round_trip);
criterion_main!(benches);
