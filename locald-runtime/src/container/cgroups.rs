//! The few things locald does to cgroups itself: find a container's cgroup in every
//! mounted hierarchy (v1, hybrid or v2), read its OOM-kill count, and remove what the
//! runtime library left.
//!
//! Containers live under a `locald` parent cgroup (`/locald/<id>`), kept between
//! containers like docker's `/docker`: removing the shared parent while another
//! container is being created under it would race with that creation.

use std::path::PathBuf;

/// Every mounted cgroup hierarchy: (mount point, is cgroup v2).
fn hierarchies() -> Vec<(PathBuf, bool)> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fstype = right.split_whitespace().next().unwrap_or("");
        let mount_point = left.split_whitespace().nth(4).unwrap_or("");
        match fstype {
            "cgroup2" => out.push((PathBuf::from(mount_point), true)),
            "cgroup" => out.push((PathBuf::from(mount_point), false)),
            _ => {}
        }
    }
    out
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
