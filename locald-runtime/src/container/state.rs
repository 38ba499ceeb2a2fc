//! Container state on disk, shared by every locald process on the machine.
//!
//! ```text
//! $LOCALD_HOME/containers/<id>/
//!     state.json      what list/inspect report (written with temp + rename)
//!     config.json     the OCI runtime configuration (the state dir is the bundle)
//!     shim.json       what the shim needs to start and supervise the container
//!     hosts, hostname, resolv.conf   bind-mounted into the container
//!     rootfs/         the overlay mount point; upper/ and work/ beside it
//!     container.log   stdout and stderr, framed (see `logs`)
//!     shim.log        the shim's own diagnostics (never the container's output)
//!     lock            flock-ed by the shim for as long as it supervises
//!     lc/             the runtime library's own state
//! $LOCALD_HOME/container-names/<name>   the id, created exclusively: names are unique
//! $LOCALD_HOME/volumes/<name>/_data     named volumes
//! ```

use std::{
    fs, io,
    io::Write,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use locald_core::{
    ContainerSpec, ContainerState, ContainerSummary, Error, ExitStatus, ImageRef, PortMapping,
    Result,
};
use serde::{Deserialize, Serialize};

/// Where locald keeps containers and volumes.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) home: PathBuf,
}

impl Layout {
    pub(crate) fn containers(&self) -> PathBuf {
        self.home.join("containers")
    }
    pub(crate) fn container(&self, id: &str) -> PathBuf {
        self.containers().join(id)
    }
    pub(crate) fn names(&self) -> PathBuf {
        self.home.join("container-names")
    }
    pub(crate) fn volumes(&self) -> PathBuf {
        self.home.join("volumes")
    }
}

/// The life-cycle phase recorded in `state.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Phase {
    Created,
    Running,
    Exited,
}

/// `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) image: Option<ImageRef>,
    pub(crate) command: Vec<String>,
    pub(crate) created: u64,
    pub(crate) phase: Phase,
    pub(crate) pid: Option<u32>,
    /// The init's start time in clock ticks since boot, to tell it from a later
    /// process that reuses its pid.
    pub(crate) pid_start: Option<u64>,
    pub(crate) exit: Option<ExitStatus>,
    pub(crate) oom_killed: bool,
    pub(crate) finished: Option<u64>,
    pub(crate) ports: Vec<PortMapping>,
    pub(crate) spec: ContainerSpec,
    /// Why starting failed, if it did.
    pub(crate) error: Option<String>,
}

impl State {
    pub(crate) fn summary(&self, shim_alive: bool) -> ContainerSummary {
        let state = match self.phase {
            Phase::Created => ContainerState::Created,
            Phase::Running if shim_alive => ContainerState::Running,
            // The supervisor died without recording an exit.
            Phase::Running => ContainerState::Exited(ExitStatus::Exited(-1)),
            Phase::Exited => ContainerState::Exited(self.exit.unwrap_or(ExitStatus::Exited(-1))),
        };
        let running = matches!(state, ContainerState::Running);
        let mut s = summary_new(self.id.clone(), self.name.clone(), state);
        s.image = self.image.clone();
        s.command = self.command.clone();
        s.created = self.created;
        s.pid = if running { self.pid } else { None };
        s.labels = self.spec.labels.clone();
        s.ports = self.ports.clone();
        s.oom_killed = self.oom_killed;
        s
    }
}

fn summary_new(id: String, name: String, state: ContainerState) -> ContainerSummary {
    ContainerSummary::new(id, name, state)
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes `value` as JSON to `path` atomically: a temporary file beside it, then a
/// rename; not synced (state is advisory across a power loss), mode 0644.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    let options = crate::util::AtomicWrite::new().durable(false).mode(0o644);
    crate::util::write_atomic_with(path, &bytes, &options)
        .map_err(crate::util::Error::into_io_error)
}

/// Reads a JSON file.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<T> {
    let bytes = fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(io::Error::other)
}

/// Reads a container's `state.json`.
pub(crate) fn read_state(dir: &Path) -> io::Result<State> {
    read_json(&dir.join("state.json"))
}

/// True while a shim holds the container's lock.
pub(crate) fn shim_alive(dir: &Path) -> bool {
    let Ok(file) = fs::File::open(dir.join("lock")) else {
        return false;
    };
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock).is_err()
}

/// A fresh random container id: 64 hexadecimal characters.
pub(crate) fn new_id() -> io::Result<String> {
    crate::util::random_id().map_err(crate::util::Error::into_io_error)
}

/// Finds a container by full id, unique id prefix or name; returns its id.
pub(crate) fn lookup(layout: &Layout, key: &str) -> Result<String> {
    let not_found = || Error::NotFound {
        kind: "container",
        name: key.to_owned(),
    };
    if key.is_empty() || key.contains('/') || key.starts_with('.') {
        return Err(not_found());
    }
    if let Ok(id) = fs::read_to_string(layout.names().join(key)) {
        let id = id.trim().to_owned();
        if layout.container(&id).join("state.json").exists() {
            return Ok(id);
        }
    }
    if key.len() == 64 && layout.container(key).join("state.json").exists() {
        return Ok(key.to_owned());
    }
    let mut found = Vec::new();
    if key.chars().all(|c| c.is_ascii_hexdigit()) {
        for id in list_ids(layout) {
            if id.starts_with(key) {
                found.push(id);
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(not_found()),
        _ => Err(Error::invalid(
            "container id",
            key,
            "the prefix matches more than one container",
        )),
    }
}

/// The ids of every container with a state file.
pub(crate) fn list_ids(layout: &Layout) -> Vec<String> {
    let Ok(entries) = fs::read_dir(layout.containers()) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.len() == 64 && n.chars().all(|c| c.is_ascii_hexdigit()))
        .collect()
}

/// Claims a container name for `id`: fails when another container has it.
pub(crate) fn claim_name(layout: &Layout, name: &str, id: &str) -> Result<()> {
    let dir = layout.names();
    fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let path = dir.join(name);
    let mut attempt = 0;
    loop {
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                return f
                    .write_all(id.as_bytes())
                    .map_err(|e| Error::io(format!("writing {}", path.display()), e))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt == 0 => {
                attempt += 1;
                // A name whose container is gone (removed by hand) is free again.
                let owner = fs::read_to_string(&path).unwrap_or_default();
                if !owner.is_empty() && layout.container(owner.trim()).exists() {
                    return Err(Error::invalid(
                        "container name",
                        name,
                        format!(
                            "already in use by container {}",
                            &owner.trim()[..12.min(owner.trim().len())]
                        ),
                    ));
                }
                let _ = fs::remove_file(&path);
            }
            Err(e) => return Err(Error::io(format!("claiming container name {name}"), e)),
        }
    }
}

/// Releases a container name if it still points at `id`.
pub(crate) fn release_name(layout: &Layout, name: &str, id: &str) {
    let path = layout.names().join(name);
    if fs::read_to_string(&path)
        .map(|s| s.trim() == id)
        .unwrap_or(false)
    {
        let _ = fs::remove_file(path);
    }
}

pub(crate) use crate::util::process_start_time;
