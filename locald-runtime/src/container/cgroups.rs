//! The few things locald does to cgroups itself: find a container's cgroup in every
//! mounted hierarchy (v1, hybrid or v2), read its OOM-kill count, and remove what the
//! runtime library left.
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

/// The container's cgroup directories that exist.
pub(crate) fn dirs(id: &str) -> Vec<PathBuf> {
    hierarchies()
        .into_iter()
        .map(|(m, _)| m.join("locald").join(id))
        .filter(|p| p.is_dir())
        .collect()
}

/// How many times the OOM killer struck in the container's memory cgroup.
pub(crate) fn oom_kills(id: &str) -> u64 {
    for (mount, v2) in hierarchies() {
        let dir = mount.join("locald").join(id);
        let file = if v2 {
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
