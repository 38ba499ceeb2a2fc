//! What this Linux host offers containers: cgroup version, overlayfs, user namespaces,
//! seccomp. Everything is read from files under a root directory that tests replace.

use std::{
    fs,
    path::{Path, PathBuf},
};

use procfs_core::process::MountInfo;
use serde::{Deserialize, Serialize};

/// Which cgroup hierarchy the host mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CgroupMode {
    /// Only cgroup v2 (unified), at `/sys/fs/cgroup`.
    V2,
    /// v1 controllers at `/sys/fs/cgroup/<controller>` with a v2 tree beside them
    /// (usually `/sys/fs/cgroup/unified`).
    Hybrid,
    /// Only cgroup v1.
    V1,
    /// No cgroup filesystem is mounted.
    None,
}

/// Kernel features that containers use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HostFeatures {
    /// The cgroup layout.
    pub cgroup: CgroupMode,
    /// Where the cgroup v2 tree is mounted, if anywhere.
    pub cgroup2_mount: Option<PathBuf>,
    /// v1 controllers that are mounted (empty on pure v2).
    pub cgroup_v1_controllers: Vec<String>,
    /// The kernel knows the `overlay` filesystem (loaded, or as a module).
    pub overlayfs: bool,
    /// User namespaces can be created (`user.max_user_namespaces` > 0).
    pub user_namespaces: bool,
    /// Unprivileged users may create them too.
    pub unprivileged_user_namespaces: bool,
    /// seccomp filters are available.
    pub seccomp: bool,
}

impl HostFeatures {
    /// Probes the running host.
    pub fn probe() -> HostFeatures {
        Self::probe_root(Path::new("/"))
    }

    /// Probes the tree under `root` (`proc/self/mountinfo`, `proc/filesystems`, ...).
    pub fn probe_root(root: &Path) -> HostFeatures {
        let read = |rel: &str| fs::read_to_string(root.join(rel)).unwrap_or_default();
        let mut cgroup2_mount = None;
        let mut v1 = Vec::new();
        for mount in mounts(&root.join("proc/self/mountinfo")) {
            match mount.fs_type.as_str() {
                "cgroup2" if cgroup2_mount.is_none() => {
                    cgroup2_mount = Some(mount.mount_point);
                }
                "cgroup" => {
                    for opt in mount.super_options.keys() {
                        if matches!(
                            opt.as_str(),
                            "cpu"
                                | "cpuacct"
                                | "cpuset"
                                | "memory"
                                | "pids"
                                | "blkio"
                                | "devices"
                                | "freezer"
                                | "net_cls"
                                | "net_prio"
                                | "perf_event"
                                | "hugetlb"
                                | "rdma"
                                | "misc"
                        ) && !v1.contains(opt)
                        {
                            v1.push(opt.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        v1.sort();
        let cgroup = match (&cgroup2_mount, v1.is_empty()) {
            (Some(_), true) => CgroupMode::V2,
            (Some(_), false) => CgroupMode::Hybrid,
            (None, false) => CgroupMode::V1,
            (None, true) => CgroupMode::None,
        };
        let filesystems = read("proc/filesystems");
        let overlayfs = filesystems
            .lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"))
            || root.join("sys/module/overlay").exists()
            || modules_have_overlay(root, read("proc/sys/kernel/osrelease").trim());
        let number = |rel: &str| read(rel).trim().parse::<i64>().ok();
        let user_namespaces = number("proc/sys/user/max_user_namespaces").unwrap_or(0) > 0;
        let unprivileged_user_namespaces = user_namespaces
            && number("proc/sys/kernel/unprivileged_userns_clone").unwrap_or(1) != 0
            && number("proc/sys/kernel/apparmor_restrict_unprivileged_userns").unwrap_or(0) == 0;
        let seccomp = root.join("proc/sys/kernel/seccomp/actions_avail").exists()
            || read("proc/self/status")
                .lines()
                .any(|l| l.starts_with("Seccomp:"));
        HostFeatures {
            cgroup,
            cgroup2_mount,
            cgroup_v1_controllers: v1,
            overlayfs,
            user_namespaces,
            unprivileged_user_namespaces,
            seccomp,
        }
    }
}

/// The mounts listed in a `mountinfo` file (`/proc/<pid>/mountinfo` format), parsed
/// by `procfs-core`; a line it cannot parse is skipped, a missing file is no mounts.
pub(crate) fn mounts(path: &Path) -> Vec<MountInfo> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| MountInfo::from_line(line).ok())
        .collect()
}

fn modules_have_overlay(root: &Path, release: &str) -> bool {
    if release.is_empty() {
        return false;
    }
    let dir = root.join("lib/modules").join(release);
    fs::read_to_string(dir.join("modules.dep"))
        .map(|deps| deps.lines().any(|l| l.contains("/overlay.ko")))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
27 26 0:25 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw
29 26 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,memory
30 26 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpu,cpuacct
31 26 0:29 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,pids
";

    const UNIFIED: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:8 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn hybrid_host() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "proc/self/mountinfo", HYBRID);
        write(
            root.path(),
            "proc/filesystems",
            "nodev\tsysfs\nnodev\toverlay\n",
        );
        write(root.path(), "proc/sys/user/max_user_namespaces", "63704\n");
        write(
            root.path(),
            "proc/sys/kernel/unprivileged_userns_clone",
            "0\n",
        );
        write(root.path(), "proc/self/status", "Name:\tx\nSeccomp:\t0\n");
        let f = HostFeatures::probe_root(root.path());
        assert_eq!(f.cgroup, CgroupMode::Hybrid);
        assert_eq!(
            f.cgroup2_mount.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            f.cgroup_v1_controllers,
            ["cpu", "cpuacct", "memory", "pids"]
        );
        assert!(f.overlayfs);
        assert!(f.user_namespaces);
        assert!(!f.unprivileged_user_namespaces);
        assert!(f.seccomp);
    }

    #[test]
    fn unified_host() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "proc/self/mountinfo", UNIFIED);
        write(
            root.path(),
            "proc/sys/kernel/osrelease",
            "6.8.0-40-generic\n",
        );
        write(
            root.path(),
            "lib/modules/6.8.0-40-generic/modules.dep",
            "kernel/fs/overlayfs/overlay.ko.zst:\n",
        );
        write(root.path(), "proc/sys/user/max_user_namespaces", "0\n");
        let f = HostFeatures::probe_root(root.path());
        assert_eq!(f.cgroup, CgroupMode::V2);
        assert_eq!(
            f.cgroup2_mount.as_deref(),
            Some(Path::new("/sys/fs/cgroup"))
        );
        assert!(f.cgroup_v1_controllers.is_empty());
        assert!(f.overlayfs, "overlay found as a module");
        assert!(!f.user_namespaces);
        assert!(!f.seccomp);
    }

    #[test]
    fn bad_mountinfo_lines_are_skipped() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("mountinfo");
        fs::write(
            &path,
            "not a mountinfo line\n\
             40 26 0:35 / /sys/fs/cgroup/v2 rw,relatime shared:20 - cgroup2 cgroup2 rw\n",
        )
        .unwrap();
        let found = mounts(&path);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].mount_point, Path::new("/sys/fs/cgroup/v2"));
        assert_eq!(found[0].fs_type, "cgroup2");
    }

    #[test]
    fn nothing_mounted() {
        let root = tempfile::tempdir().unwrap();
        let f = HostFeatures::probe_root(root.path());
        assert_eq!(f.cgroup, CgroupMode::None);
        assert!(!f.overlayfs && !f.user_namespaces && !f.seccomp);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_host_has_cgroups() {
        let f = HostFeatures::probe();
        assert_ne!(f.cgroup, CgroupMode::None, "{f:?}");
    }
}
