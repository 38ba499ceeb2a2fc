//! What the daemon keeps on disk so that a restart after a crash finds its way:
//! the processes it started for clients, and the containers it must remove.
//!
//! ```text
//! $LOCALD_HOME/daemon/
//!   lock                      flock(2)ed while a daemon serves this home
//!   processes/<pid>.json      a command a client spawned, while it runs
//!   containers/<id>.json      a container started with auto_remove, until removed
//! ```
//!
//! Containers themselves belong to the runtime, which keeps their state under
//! `$LOCALD_HOME/containers/` and lists them from there after a restart.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::Arc,
};

use locald::{ContainerState, Runtime};
use serde::{Deserialize, Serialize};

use crate::daemon::{Error, Result};

/// The daemon's state directory, locked for the life of this value.
#[derive(Debug)]
pub struct StateDir {
    root: PathBuf,
    #[cfg(unix)]
    _lock: nix::fcntl::Flock<fs::File>,
}

/// A running command a client spawned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ProcessEntry {
    /// Its process id, which is also its process group id.
    pid: u32,
    /// Its start time in clock ticks since boot (`/proc/PID/stat`, field 22), which
    /// tells it apart from a later process that got the same id.
    start_time: Option<u64>,
}

/// A container the daemon must remove once it exited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ContainerEntry {
    id: String,
}

/// What [`StateDir::recover`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Process groups left by a previous daemon that were killed (their ids).
    pub killed_processes: Vec<u32>,
    /// Containers found running.
    pub running_containers: Vec<String>,
    /// Containers found exited.
    pub exited_containers: Vec<String>,
    /// Exited auto-remove containers that were removed.
    pub removed_containers: Vec<String>,
    /// Running auto-remove containers to remove once they exit.
    pub watch_containers: Vec<String>,
}

/// Removes its process record when the process is gone.
#[derive(Debug)]
pub(crate) struct ProcessRecord {
    path: PathBuf,
}

impl Drop for ProcessRecord {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Writes `bytes` to `path` (mode 0600) through a temporary file and a rename, so
/// that a crash leaves the old file or the new one, never half of one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    locald::native::util::write_atomic(path, bytes).map_err(|e| e.into_io_error())
}

fn create_private_dir(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

impl StateDir {
    /// Opens (creating it, mode 0700) and locks the state directory `root`. Fails with
    /// [`Error::AlreadyRunning`] while another daemon holds it.
    pub fn open(root: impl Into<PathBuf>) -> Result<StateDir> {
        let root = root.into();
        for dir in [
            root.clone(),
            root.join("processes"),
            root.join("containers"),
        ] {
            create_private_dir(&dir)
                .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        }
        let lock_path = root.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("cannot open {}", lock_path.display()), e))?;
        #[cfg(unix)]
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| {
                if errno == nix::errno::Errno::EWOULDBLOCK {
                    Error::AlreadyRunning { path: root.clone() }
                } else {
                    Error::io(
                        format!("cannot lock {}", lock_path.display()),
                        io::Error::from(errno),
                    )
                }
            })?;
        #[cfg(not(unix))]
        drop(file);
        Ok(StateDir {
            root,
            #[cfg(unix)]
            _lock: lock,
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Records a spawned process until the returned record is dropped.
    pub(crate) fn record_process(&self, pid: u32) -> io::Result<ProcessRecord> {
        let entry = ProcessEntry {
            pid,
            start_time: locald::native::util::process_start_time(pid),
        };
        let path = self.root.join("processes").join(format!("{pid}.json"));
        write_atomic(
            &path,
            &serde_json::to_vec(&entry).expect("entries serialize"),
        )?;
        Ok(ProcessRecord { path })
    }

    /// Records an auto-remove container.
    pub(crate) fn record_container(&self, id: &str) -> io::Result<()> {
        let path = self.container_path(id)?;
        let entry = ContainerEntry { id: id.to_owned() };
        write_atomic(
            &path,
            &serde_json::to_vec(&entry).expect("entries serialize"),
        )
    }

    /// Forgets a container.
    pub(crate) fn forget_container(&self, id: &str) {
        if let Ok(path) = self.container_path(id) {
            let _ = fs::remove_file(path);
        }
    }

    fn container_path(&self, id: &str) -> io::Result<PathBuf> {
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            || id.starts_with('.')
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{id:?} is not a container id"),
            ));
        }
        Ok(self.root.join("containers").join(format!("{id}.json")))
    }

    fn entries<T: serde::de::DeserializeOwned>(&self, dir: &str) -> Vec<(PathBuf, Option<T>)> {
        let Ok(read) = fs::read_dir(self.root.join(dir)) else {
            return Vec::new();
        };
        read.filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                let entry = fs::read(&p)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                (p, entry)
            })
            .collect()
    }

    /// Cleans up after a daemon that died without stopping (`kill -9`, a crash, a
    /// power cut):
    ///
    /// - every process group it had spawned for a client is killed, since no client can
    ///   reach it any more (a process id that now belongs to a newer process is left
    ///   alone);
    /// - the runtime lists its containers (it reloads them from its own state and
    ///   marks the ones whose process died as exited); exited auto-remove containers
    ///   are removed, running ones are returned to watch.
    pub async fn recover(&self, runtime: &Arc<dyn Runtime>) -> Recovery {
        let mut recovery = Recovery::default();
        for (path, entry) in self.entries::<ProcessEntry>("processes") {
            match entry {
                Some(entry) if kill_orphan(&entry) => recovery.killed_processes.push(entry.pid),
                Some(_) => {}
                None => {
                    tracing::warn!(path = %path.display(), "dropping an unreadable process record")
                }
            }
            let _ = fs::remove_file(&path);
        }
        let containers = match runtime.list_containers(true).await {
            Ok(list) => list,
            Err(err) => {
                if !err.is_unsupported() {
                    tracing::warn!(%err, "cannot list containers after a restart");
                }
                return recovery;
            }
        };
        for c in &containers {
            match c.state {
                ContainerState::Exited(_) => recovery.exited_containers.push(c.id.clone()),
                ContainerState::Running | ContainerState::Paused => {
                    recovery.running_containers.push(c.id.clone())
                }
                _ => {}
            }
        }
        for (path, entry) in self.entries::<ContainerEntry>("containers") {
            let Some(entry) = entry else {
                let _ = fs::remove_file(&path);
                continue;
            };
            match containers.iter().find(|c| c.id == entry.id) {
                None => {
                    let _ = fs::remove_file(&path);
                }
                Some(c) if matches!(c.state, ContainerState::Exited(_)) => {
                    match runtime.remove_container(&c.id, false).await {
                        Ok(()) => {
                            recovery.removed_containers.push(c.id.clone());
                            let _ = fs::remove_file(&path);
                        }
                        Err(err) => {
                            tracing::warn!(id = %c.id, %err, "cannot remove an exited auto-remove container")
                        }
                    }
                }
                Some(c) => recovery.watch_containers.push(c.id.clone()),
            }
        }
        recovery
    }
}

/// Kills the process group of a command a dead daemon had spawned. True when a
/// signal went out.
#[cfg(unix)]
fn kill_orphan(entry: &ProcessEntry) -> bool {
    use nix::{sys::signal, unistd::Pid};
    let Ok(pgid) = i32::try_from(entry.pid) else {
        return false;
    };
    if pgid <= 1 {
        return false;
    }
    match (
        locald::native::util::process_start_time(entry.pid),
        entry.start_time,
    ) {
        // The id now belongs to another process: the group it led is gone (a process
        // group keeps its leader's id reserved while any member lives).
        (Some(now), Some(then)) if now != then => return false,
        (Some(_), None) => return false,
        _ => {}
    }
    signal::killpg(Pid::from_raw(pgid), signal::Signal::SIGKILL).is_ok()
}

#[cfg(not(unix))]
fn kill_orphan(_entry: &ProcessEntry) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_daemon_cannot_take_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateDir::open(dir.path().join("daemon")).unwrap();
        let err = StateDir::open(dir.path().join("daemon")).unwrap_err();
        assert!(matches!(err, Error::AlreadyRunning { .. }), "{err}");
        drop(first);
        StateDir::open(dir.path().join("daemon")).expect("free again once the first is gone");
    }

    #[test]
    fn records_are_written_whole_and_removed_with_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let me = std::process::id();
        let record = state.record_process(me).unwrap();
        let written: ProcessEntry = serde_json::from_slice(
            &fs::read(dir.path().join(format!("processes/{me}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(written.pid, me);
        if cfg!(target_os = "linux") {
            assert!(written.start_time.is_some());
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("processes"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
        drop(record);
        assert!(!dir.path().join(format!("processes/{me}.json")).exists());
        assert!(state.record_container("../evil").is_err());
        assert!(state.record_container(".hidden").is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_reused_process_id_is_left_alone() {
        // This very process, recorded with another start time, stands for a newer
        // process that got a dead command's id.
        let me = std::process::id();
        let entry = ProcessEntry {
            pid: me,
            start_time: locald::native::util::process_start_time(me).map(|t| t + 1),
        };
        assert!(!kill_orphan(&entry));
    }
}
