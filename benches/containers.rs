//! The SDK path of a container: `run_container` of `/bin/true` on a busybox root,
//! then wait, then remove; timed per iteration, median printed.
//!
//! A custom timing binary rather than criterion: each iteration forks a shim and a
//! container and the numbers are compared with whole-process peers (`crun run`,
//! `runc run`) that `scripts/bench-containers` times with hyperfine in the same run.
//!
//! It is also how an embedder runs containers: nothing in `main`, this executable
//! serves as its own container shim.
//!
//! Environment: `LOCALD_BENCH_ITERS` (default 200; 3 when run as a test),
//! `LOCALD_BENCH_ROOTFS` (default: the shared busybox fixture), `LOCALD_BENCH_PAUSE_MS`
//! (default 0: a pause before each iteration, untimed, so that each container starts
//! on a quiet host as a lone one does, not right after the last). Prints
//! `sdk_run_true_median_ms <value>` on the last line.
//!
//! With `LOCALD_BENCH_BUNDLE` (an OCI bundle whose process is `/bin/true`, such as the
//! one `scripts/bench-containers` gives crun and runc), it first times the runtime
//! library alone on that bundle: libcontainer's create, start, wait and delete, in
//! this process, with nothing of locald around them. That is the floor under the SDK
//! figure, which the same library's work is part of; it prints
//! `libcontainer_run_true_median_ms <value>`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("SKIP: containers need Linux");
}

#[cfg(target_os = "linux")]
fn main() {
    use std::time::Instant;

    use locald::{native, ContainerSpec, Runtime};

    if !native::testing::is_root() {
        eprintln!("SKIP: the container benchmark needs root");
        return;
    }
    let as_bench = std::env::args().any(|a| a == "--bench");
    let iters: usize = std::env::var("LOCALD_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if as_bench { 200 } else { 3 });
    let pause = std::time::Duration::from_millis(
        std::env::var("LOCALD_BENCH_PAUSE_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    );
    let rootfs = match std::env::var_os("LOCALD_BENCH_ROOTFS") {
        Some(p) => p.into(),
        None => native::testing::shared_busybox_rootfs().expect("busybox rootfs"),
    };
    if let Some(bundle) = std::env::var_os("LOCALD_BENCH_BUNDLE") {
        let times = libcontainer_alone(std::path::Path::new(&bundle), iters, pause);
        let median = times[times.len() / 2];
        println!(
            "libcontainer create -> start -> wait -> delete: {} runs, min {:.2} ms, median {:.2} ms",
            times.len(),
            times[0],
            median
        );
        println!("libcontainer_run_true_median_ms {median:.3}");
    }
    let home = tempfile::tempdir().expect("a temporary home");
    let rt = native::ContainerRuntime::with_home(home.path());
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut times = Vec::with_capacity(iters);
    tokio.block_on(async {
        for i in 0..iters + 3 {
            let spec = ContainerSpec::builder_from_rootfs(&rootfs)
                .cmd(["/bin/true"])
                .network(locald::NetworkMode::None)
                .build()
                .expect("a valid spec");
            std::thread::sleep(pause);
            let start = Instant::now();
            let mut handle = rt.run_container(spec).await.expect("run_container");
            let status = handle.wait().await.expect("wait");
            let id = handle.id().to_owned();
            drop(handle);
            rt.remove_container(&id, false).await.expect("remove");
            let elapsed = start.elapsed();
            assert!(status.success(), "{status}");
            if i >= 3 {
                times.push(elapsed.as_secs_f64() * 1000.0);
            }
        }
    });
    times.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let median = times[times.len() / 2];
    println!(
        "sdk run_container(/bin/true) -> wait -> remove: {} runs, min {:.2} ms, median {:.2} ms",
        times.len(),
        times[0],
        median
    );
    println!("sdk_run_true_median_ms {median:.3}");
}

/// Runs the bundle's container `iters` times (after three untimed runs) with
/// libcontainer alone, as a shim does but without anything else: build (create), start,
/// wait for the process, delete. Returns the sorted times in milliseconds.
#[cfg(target_os = "linux")]
fn libcontainer_alone(
    bundle: &std::path::Path,
    iters: usize,
    pause: std::time::Duration,
) -> Vec<f64> {
    use std::time::Instant;

    use libcontainer::{container::builder::ContainerBuilder, syscall::syscall::SyscallType};
    use nix::sys::wait::waitpid;

    let state = tempfile::tempdir().expect("a state directory");
    let mut times = Vec::with_capacity(iters);
    for i in 0..iters + 3 {
        std::thread::sleep(pause);
        let start = Instant::now();
        let t = locald::native::timing::phase("floor: create");
        let mut container = ContainerBuilder::new(format!("floor-{i}"), SyscallType::default())
            .with_root_path(state.path())
            .expect("a state root")
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .expect("libcontainer create");
        t.end();
        let t = locald::native::timing::phase("floor: start");
        container.start().expect("libcontainer start");
        t.end();
        let t = locald::native::timing::phase("floor: wait");
        let pid = container.pid().expect("the container's pid");
        let status = waitpid(pid, None).expect("waitpid");
        t.end();
        let t = locald::native::timing::phase("floor: delete");
        container.delete(true).expect("libcontainer delete");
        t.end();
        let elapsed = start.elapsed();
        assert!(
            matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
            "{status:?}"
        );
        if i >= 3 {
            times.push(elapsed.as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    times
}
