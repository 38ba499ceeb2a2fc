//! The few things locald does to cgroups itself: find a container's cgroup in every
//! mounted hierarchy (v1, hybrid or v2), read its OOM-kill count, and remove what the
//! runtime library left.
//!
//! It also starts the kernel's wait before the first move of a process into a cgroup
//! early ([`prime_attach`]).
//!
//! Containers live under a `locald` parent cgroup (`/locald/<id>`), kept between
//! containers like docker's `/docker`: removing the shared parent while another
//! container is being created under it would race with that creation.

use std::path::{Path, PathBuf};

/// Every mounted cgroup hierarchy: (mount point, is cgroup v2).
fn hierarchies() -> Vec<(PathBuf, bool)> {
    crate::host::mounts(Path::new("/proc/self/mountinfo"))
        .into_iter()
        .filter_map(|m| match m.fs_type.as_str() {
            "cgroup2" => Some((m.mount_point, true)),
            "cgroup" => Some((m.mount_point, false)),
            _ => None,
        })
        .collect()
}

/// The container's cgroup directories that exist, each with whether it is cgroup v2.
pub(crate) fn found(id: &str) -> Vec<(PathBuf, bool)> {
    hierarchies()
        .into_iter()
        .map(|(m, v2)| (m.join("locald").join(id), v2))
        .filter(|(p, _)| p.is_dir())
        .collect()
}

/// The container's cgroup directories that exist.
pub(crate) fn dirs(id: &str) -> Vec<PathBuf> {
    found(id).into_iter().map(|(dir, _)| dir).collect()
}

/// How many times the OOM killer struck in the memory cgroup among a container's
/// cgroups (as [`found`] gives them).
pub(crate) fn oom_kills(cgroups: &[(PathBuf, bool)]) -> u64 {
    for (dir, v2) in cgroups {
        let file = if *v2 {
            dir.join("memory.events")
        } else {
            dir.join("memory.oom_control")
        };
        if let Ok(text) = std::fs::read_to_string(&file) {
            for line in text.lines() {
                if let Some(n) = line.strip_prefix("oom_kill ") {
                    return n.trim().parse().unwrap_or(0);
                }
            }
        }
    }
    0
}

/// Removes the container's cgroup directories (they must be empty of processes).
pub(crate) fn remove(id: &str) {
    for dir in dirs(id) {
        let _ = std::fs::remove_dir(&dir);
    }
}

/// Removes the cgroups (as [`found`] gives them) of a container that has ended: any
/// process still in one (the
/// container's own went with its PID namespace, but a process can be moved into a
/// cgroup from outside) is killed first, and a directory the kernel still holds a
/// moment is tried again, as the runtime library's removal does (4 tries, at most
/// 80 ms apart).
///
/// This is the runtime library's `delete` for a stopped container, less what locald
/// does not use (hooks, Intel RDT), found from one read of the mount table rather than
/// its cgroup manager's read of the mount table and `/proc/self/cgroup` for each of
/// a dozen controllers (1.2-1.5 ms a container here).
pub(crate) fn remove_ended(cgroups: &[(PathBuf, bool)]) -> std::io::Result<()> {
    let mut result = Ok(());
    for (dir, _) in cgroups {
        if let Err(e) = kill_and_remove(dir) {
            result = Err(e);
        }
    }
    result
}

fn kill_and_remove(dir: &Path) -> std::io::Result<()> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if tries == 3 => return Err(e),
            Err(_) => {}
        }
        // cgroup v2's `cgroup.kill` (Linux 5.14) also reaches processes in cgroups
        // below this one; otherwise each process listed is killed.
        if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        tries += 1;
        std::thread::sleep(std::time::Duration::from_millis(10 << tries));
    }
}

/// Starts, on a thread of its own, the wait that the kernel makes the first move of a
/// process into a cgroup pay, so that it passes while the container is being prepared.
///
/// A write of a pid to `cgroup.procs` takes the kernel's global cgroup threadgroup lock
/// for writing, which first waits for an RCU grace period unless another writer held it
/// within about the last one. The grace period is 8-20 ms on some kernels (6.18 here),
/// more than everything else a container start does, and the runtime library's move of
/// the container's first process into its cgroups pays it in full. This thread makes the
/// same kind of write at once, a move of this process into the cgroup it is already in
/// (nothing changes), so the runtime library's move only waits for what is left of it.
/// Without the right to write there (a rootless caller on cgroup v1) it does nothing.
pub(crate) fn prime_attach() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static PRIMING: AtomicBool = AtomicBool::new(false);
    if PRIMING.swap(true, Ordering::AcqRel) {
        return;
    }
    // Finding the file is the thread's work too, off the caller's way.
    let spawned = std::thread::Builder::new()
        .name("cgroup-prime".into())
        .spawn(|| {
            if let Some(file) = own_procs_file() {
                let _ = std::fs::write(file, std::process::id().to_string());
            }
            PRIMING.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        PRIMING.store(false, Ordering::Release);
    }
}

/// The `cgroup.procs` file of the cgroup this process is in, in the first hierarchy
/// where it can be found.
fn own_procs_file() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = crate::host::mounts(Path::new("/proc/self/mountinfo"));
    procs_files(&own, &mounts).into_iter().find(|f| f.is_file())
}

/// Where the `cgroup.procs` files of the cgroups that `own` (a `/proc/<pid>/cgroup`)
/// names are, in the hierarchies mounted as `mounts` says, in `own`'s order.
fn procs_files(own: &str, mounts: &[procfs_core::process::MountInfo]) -> Vec<PathBuf> {
    own.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let mount = mounts.iter().find(|m| match m.fs_type.as_str() {
                "cgroup2" => controllers.is_empty(),
                "cgroup" => {
                    !controllers.is_empty()
                        && controllers
                            .split(',')
                            .all(|c| m.super_options.contains_key(c))
                }
                _ => false,
            })?;
            // Inside a cgroup namespace the mount's root is where the paths start.
            let rel = Path::new(path).strip_prefix(&mount.root).ok()?;
            Some(mount.mount_point.join(rel).join("cgroup.procs"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts(text: &str) -> Vec<procfs_core::process::MountInfo> {
        text.lines()
            .map(|l| procfs_core::process::MountInfo::from_line(l).unwrap())
            .collect()
    }

    #[test]
    fn the_procs_file_of_each_hierarchy_this_process_is_in() {
        let hybrid = mounts(
            "33 26 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
             35 26 0:30 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             36 26 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
             37 26 0:32 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd",
        );
        let own = "9:name=systemd:/user.slice\n5:pids:/user.slice/u\n3:cpu,cpuacct:/\n0::/x";
        assert_eq!(
            procs_files(own, &hybrid),
            [
                "/sys/fs/cgroup/pids/user.slice/u/cgroup.procs",
                "/sys/fs/cgroup/cpu,cpuacct/cgroup.procs",
                "/sys/fs/cgroup/unified/x/cgroup.procs",
            ]
            .map(PathBuf::from)
        );
        // cgroup v2 in a cgroup namespace whose root is the container's cgroup.
        let v2 = mounts("40 30 0:27 /locald/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw");
        assert_eq!(
            procs_files("0::/locald/abc/sub\n", &v2),
            [PathBuf::from("/sys/fs/cgroup/sub/cgroup.procs")]
        );
        assert!(procs_files("0::/elsewhere\n", &v2).is_empty());
    }

    /// An ended container's cgroups go even with a process left in them: the process
    /// is killed first (as the runtime library's removal does), so nothing is left.
    /// Tried in each kind of hierarchy mounted here: cgroup v1 (`pids`, where each
    /// listed process is killed) and cgroup v2 (where `cgroup.kill` is written).
    #[test]
    #[allow(clippy::print_stderr)] // a test that skips says so
    fn removing_an_ended_containers_cgroups_kills_what_is_left_in_them() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: making cgroups needs root (CI runs this as root)");
            return;
        }
        let kinds: Vec<PathBuf> = hierarchies()
            .into_iter()
            .filter(|(m, v2)| *v2 || m.ends_with("pids"))
            .map(|(m, _)| m)
            .collect();
        if kinds.is_empty() {
            eprintln!("SKIP: no pids or cgroup v2 hierarchy mounted here");
            return;
        }
        for mount in kinds {
            let id = format!("test-remove-ended-{}", std::process::id());
            let dir = mount.join("locald").join(&id);
            std::fs::create_dir_all(&dir).unwrap();
            let mut left = std::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .unwrap();
            std::fs::write(dir.join("cgroup.procs"), left.id().to_string()).unwrap();
            assert_eq!(dirs(&id), std::slice::from_ref(&dir));

            remove_ended(&found(&id)).unwrap();

            let status = left.wait().unwrap();
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(9),
                "{}: {status}",
                mount.display()
            );
            assert!(!dir.exists(), "{} is left", dir.display());
            assert!(dirs(&id).is_empty());
            // Nothing there at all is not an error.
            remove_ended(&found(&id)).unwrap();
        }
    }

    /// Priming moves this process nowhere: it stays in the cgroups it was in.
    #[test]
    fn priming_leaves_the_process_where_it_was() {
        let before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        if let Some(file) = own_procs_file() {
            let listed = std::fs::read_to_string(&file).unwrap();
            let pid = std::process::id().to_string();
            assert!(
                listed.lines().any(|l| l == pid),
                "{} lists {listed}",
                file.display()
            );
        }
        prime_attach();
        // The write is on a thread of its own; give it time to land.
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(
            std::fs::read_to_string("/proc/self/cgroup").unwrap(),
            before
        );
    }
}
