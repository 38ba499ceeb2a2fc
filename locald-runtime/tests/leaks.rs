//! 300 containers in a row must leave nothing behind: no mounts, cgroups, state
//! directories, processes (pasta included: its command line names the container's
//! state directory), zombies or open descriptors. Its own test binary, so that
//! no other test opens descriptors or starts processes meanwhile. Needs root.
#![cfg(target_os = "linux")]
#![allow(clippy::print_stderr)]

use std::{os::unix::fs::PermissionsExt, path::Path};

use locald_core::{ContainerSpec, ExitStatus, Runtime};
use locald_runtime::{testing, ContainerRuntime};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Processes whose command line mentions `needle`, and zombie children of this process.
fn processes_mentioning(needle: &str) -> (usize, usize) {
    let me = std::process::id().to_string();
    let (mut mentions, mut zombies) = (0, 0);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().into_string().unwrap_or_default();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            mentions += 1;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str()) {
                zombies += 1;
            }
        }
    }
    (mentions, zombies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_runs_leave_nothing_behind() {
    if !testing::is_root() {
        eprintln!("SKIP: container tests need root (CI runs them as root)");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let rt =
        ContainerRuntime::with_home(home.path()).shim_program(env!("CARGO_BIN_EXE_locald-shim"));
    let rootfs = testing::shared_busybox_rootfs().unwrap();
    // Two runs first, so that lazily opened descriptors exist: the async runtime's,
    // and the socket of the shim forker, which the runtime starts at its second
    // container and keeps.
    for _ in 0..2 {
        let warm = ContainerSpec::builder_from_rootfs(&rootfs)
            .cmd(["true"])
            .auto_remove(false)
            .build()
            .unwrap();
        let mut h = rt.run_container(warm).await.unwrap();
        h.wait().await.unwrap();
        let id = h.id().to_owned();
        drop(h);
        rt.remove_container(&id, false).await.unwrap();
    }
    let fds_before = open_fds();
    let mut ids = Vec::new();
    for i in 0..300 {
        let spec = ContainerSpec::builder_from_rootfs(&rootfs)
            .cmd(["sh", "-c", "echo hi"])
            .memory("64m")
            .pids_limit(64)
            .build()
            .unwrap();
        let mut h = rt.run_container(spec).await.unwrap();
        let status = h.wait().await.unwrap();
        assert_eq!(status, ExitStatus::Exited(0), "run {i}");
        let id = h.id().to_owned();
        drop(h);
        rt.remove_container(&id, false).await.unwrap();
        ids.push(id);
    }
    let mounts = locald_test_support::mounts_under_home(home.path());
    assert!(mounts.is_empty(), "mounts left:\n{mounts:#?}");
    for id in &ids {
        for root in [
            "/sys/fs/cgroup/memory/locald",
            "/sys/fs/cgroup/pids/locald",
            "/sys/fs/cgroup/cpu,cpuacct/locald",
            "/sys/fs/cgroup/locald",
        ] {
            assert!(
                !Path::new(root).join(id).exists(),
                "cgroup {root}/{id} left"
            );
        }
    }
    assert_eq!(
        locald_test_support::container_dirs_left(home.path()),
        Vec::<String>::new()
    );
    assert_eq!(
        std::fs::read_dir(home.path().join("container-names"))
            .unwrap()
            .count(),
        0
    );
    // A container's exit is reported before its pasta has ended (the kernel takes
    // 20-30 ms to remove its tap device); its shim waits for that, then ends and is
    // reaped. Both get 5 s.
    let (mentions, zombies) = locald_test_support::settle(
        std::time::Duration::from_secs(5),
        || processes_mentioning(home.path().to_str().unwrap()),
        |left| *left == (0, 0),
    );
    assert_eq!(mentions, 0, "processes left");
    assert_eq!(zombies, 0, "zombies left");
    assert_eq!(open_fds(), fds_before, "descriptors leaked");
}
