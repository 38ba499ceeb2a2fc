//! Container state, shared by every locald process on the machine.
//!
//! Each container has two directories. Its **data directory**, on disk, holds what
//! outlives a reboot: what `list` and `inspect` report, the logs and the writable
//! layer. Its **runtime directory** holds what only a running container needs, on a
//! tmpfs when there is one (as crun keeps its state under `/run/crun`): each file made
//! and removed on a journaled disk costs a container run time, the more so when the
//! disk is mounted with `discard`.
//!
//! ```text
//! $LOCALD_HOME/containers/<id>/       the data directory
//!     state.json      what list/inspect report (written with temp + rename) while
//!                     the container is created and once it has exited
//!     rootfs/         the overlay mount point; upper/ and work/ beside it
//!     container.log   stdout and stderr, framed (see `logs`)
//!     shim.log        the shim's own diagnostics (never the container's output)
//! $LOCALD_HOME/container-run/<id>/    the runtime directory
//!     config.json     the OCI runtime configuration (this directory is the bundle)
//!     shim.json       what the shim needs to start and supervise the container
//!     hosts, hostname, resolv.conf   bind-mounted into the container
//!     lock            flock-ed by the shim for as long as it supervises
//!     started.json    the running container's init (pid, start time): what makes
//!                     `state.json`'s "created" read as running (see `read_state`)
//!     lc/             the runtime library's own state
//! $LOCALD_HOME/container-names/<name>   the id, created exclusively: names are unique
//! $LOCALD_HOME/volumes/<name>/_data     named volumes
//! ```
//!
//! `$LOCALD_HOME/container-run` is made on first use: a symbolic link to a private directory on
//! a tmpfs (`/run/locald/<home>` as root, `$XDG_RUNTIME_DIR/locald/<home>` for a user,
//! else `/dev/shm/locald-<uid>/<home>`), or a plain directory when none is usable. The
//! link makes every process that shares the home agree on the place, whatever its
//! environment; after a reboot emptied the tmpfs, the target is made again.

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
    /// Where the runtime directories are: see the module's documentation.
    pub(crate) fn run(&self) -> PathBuf {
        self.home.join("container-run")
    }
    /// The two directories of container `id`.
    pub(crate) fn dirs(&self, id: &str) -> Dirs {
        Dirs {
            data: self.container(id),
            run: self.run().join(id),
        }
    }

    /// Creates the runtime directory of `dirs` (mode 0711: a Safe Mode container's
    /// mapped root must reach the files bind-mounted from it), setting up
    /// `$LOCALD_HOME/container-run` first when it is missing or its tmpfs target was emptied.
    pub(crate) fn create_run_dir(&self, dirs: &Dirs) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        // The link's target is checked each time: after a reboot, a tmpfs place could
        // have been made again by another user, who must not get this user's files.
        if !self.run_is_private() {
            self.prepare_run()?;
        }
        let mkdir = || fs::DirBuilder::new().mode(0o711).create(&dirs.run);
        match mkdir() {
            // Emptied by a reboot since the check.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.prepare_run()?;
                mkdir()
            }
            other => other,
        }
    }

    /// True when `$LOCALD_HOME/container-run` is a private directory of this user, or a link to
    /// one whose parent is private too.
    fn run_is_private(&self) -> bool {
        let link = self.run();
        match fs::read_link(&link) {
            Ok(target) => {
                target
                    .parent()
                    .is_some_and(|base| is_private(base).unwrap_or(false))
                    && is_private(&target).unwrap_or(false)
            }
            Err(_) => is_private(&link).unwrap_or(false),
        }
    }

    /// Makes `$LOCALD_HOME/container-run` usable: see the module's documentation.
    fn prepare_run(&self) -> io::Result<()> {
        let link = self.run();
        match fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&link)?;
                if target
                    .parent()
                    .is_some_and(|base| private_dir(base).is_ok())
                    && private_dir(&target).is_ok()
                {
                    return Ok(());
                }
                // Its tmpfs place is taken by someone else now: choose again.
                fs::remove_file(&link)?;
            }
            Ok(_) => return private_dir(&link),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fs::create_dir_all(&self.home)?;
        let target = tmpfs_base().and_then(|base| {
            let target = base.join(home_key(&self.home));
            private_dir(&target).is_ok().then_some(target)
        });
        let made = match &target {
            Some(target) => std::os::unix::fs::symlink(target, &link),
            None => private_dir(&link),
        };
        match made {
            // Another process made it first.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }
}

/// A container's data directory (on disk) and runtime directory (on a tmpfs when
/// there is one): see the module's documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Dirs {
    pub(crate) data: PathBuf,
    pub(crate) run: PathBuf,
}

impl Dirs {
    pub(crate) fn state_file(&self) -> PathBuf {
        self.data.join("state.json")
    }
    /// The OCI bundle's configuration.
    pub(crate) fn config_file(&self) -> PathBuf {
        self.run.join("config.json")
    }
    /// The record of the container's start, beside the runtime files.
    pub(crate) fn started_file(&self) -> PathBuf {
        self.run.join("started.json")
    }
    pub(crate) fn rootfs(&self) -> PathBuf {
        self.data.join("rootfs")
    }
    pub(crate) fn log_file(&self) -> PathBuf {
        self.data.join("container.log")
    }
    /// The runtime library's state root.
    pub(crate) fn lc_root(&self) -> PathBuf {
        self.run.join("lc")
    }

    /// Removes both directories; a missing one is not an error.
    pub(crate) fn remove(&self) -> io::Result<()> {
        let mut result = Ok(());
        for dir in [&self.run, &self.data] {
            match fs::remove_dir_all(dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => result = Err(e),
                _ => {}
            }
        }
        result
    }
}

/// Where runtime directories go: `/run/locald` as root, `$XDG_RUNTIME_DIR/locald`
/// otherwise, then `/dev/shm/locald-<uid>`; the first on a tmpfs that is, or can be
/// made, a private directory of this user.
fn tmpfs_base() -> Option<PathBuf> {
    let uid = nix::unistd::geteuid();
    let mut candidates = Vec::new();
    if uid.is_root() {
        candidates.push(PathBuf::from("/run/locald"));
    } else if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        if run.is_absolute() {
            candidates.push(run.join("locald"));
        }
    }
    candidates.push(PathBuf::from(format!("/dev/shm/locald-{uid}")));
    candidates
        .into_iter()
        .find(|base| base.parent().is_some_and(is_tmpfs) && private_dir(base).is_ok())
}

fn is_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// Creates `dir` with mode 0711 or accepts it when it is already a private directory
/// of this user (see [`is_private`]).
fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(0o711).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if !is_private(dir)? {
                return Err(io::Error::other(format!(
                    "{} is not a private directory of this user",
                    dir.display()
                )));
            }
            Ok(())
        }
        other => other,
    }
}

/// True when `dir` is a directory (not a link) of this user that nobody else can
/// write to.
fn is_private(dir: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(dir)?;
    Ok(m.is_dir() && m.uid() == nix::unistd::geteuid().as_raw() && m.mode() & 0o022 == 0)
}

/// A short name for a home, so that homes sharing one tmpfs stay apart.
fn home_key(home: &Path) -> String {
    use sha2::Digest;
    let home = std::path::absolute(home).unwrap_or_else(|_| home.to_owned());
    let digest = sha2::Sha256::digest(home.as_os_str().as_encoded_bytes());
    hex::encode(&digest[..8])
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
    /// A container just created: not started, nothing of its run recorded yet.
    pub(crate) fn created(
        id: String,
        name: String,
        image: Option<ImageRef>,
        command: Vec<String>,
        ports: Vec<PortMapping>,
        spec: ContainerSpec,
    ) -> Self {
        State {
            id,
            name,
            image,
            command,
            created: now(),
            phase: Phase::Created,
            pid: None,
            pid_start: None,
            exit: None,
            oom_killed: false,
            finished: None,
            ports,
            spec,
            error: None,
        }
    }

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

/// What the shim records, in the runtime directory, once the container has started.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Started {
    pub(crate) pid: u32,
    pub(crate) pid_start: Option<u64>,
}

/// Records that the container started, with its init: on the runtime directory's
/// tmpfs, since a start record only means something until the machine restarts, so
/// that a start does not wait on the disk (`state.json` is written on disk again when
/// the container exits).
pub(crate) fn write_started(dirs: &Dirs, started: Started) -> io::Result<()> {
    write_json(&dirs.started_file(), &started)
}

/// Reads a container's state: `state.json`, with the start record over it.
///
/// `state.json` says "created" until the container exits; the start record in the
/// runtime directory makes that "running", with the init's pid. A created container
/// whose runtime directory is gone was running, or starting, when the machine
/// restarted: it reads as running, and its missing shim makes it exited (see
/// [`State::summary`]), as before the two records were split.
pub(crate) fn read_state(dirs: &Dirs) -> io::Result<State> {
    let mut st: State = read_json(&dirs.state_file())?;
    if st.phase == Phase::Created {
        match read_json::<Started>(&dirs.started_file()) {
            Ok(started) => {
                st.phase = Phase::Running;
                st.pid = Some(started.pid);
                st.pid_start = started.pid_start;
            }
            Err(_) if !dirs.run.exists() => st.phase = Phase::Running,
            Err(_) => {}
        }
    }
    Ok(st)
}

/// True while a shim holds the container's lock.
pub(crate) fn shim_alive(dirs: &Dirs) -> bool {
    let Ok(file) = fs::File::open(dirs.run.join("lock")) else {
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

#[cfg(test)]
#[allow(clippy::print_stderr)] // a test that skips says so
mod tests {
    use super::*;

    fn id() -> String {
        new_id().unwrap()
    }

    /// A container's state as `list` reports it: created until the shim records the
    /// start in the runtime directory, running while the shim lives, exited once it is
    /// gone; and exited after a restart of the machine, which empties the tmpfs.
    #[test]
    fn the_start_record_makes_a_created_container_running_until_a_restart() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout {
            home: home.path().join("locald"),
        };
        let id = id();
        let dirs = layout.dirs(&id);
        fs::create_dir_all(&dirs.data).unwrap();
        layout.create_run_dir(&dirs).unwrap();
        let spec = ContainerSpec::builder_from_rootfs("/").build().unwrap();
        let created = State::created(
            id.clone(),
            "web".into(),
            None,
            vec!["true".into()],
            vec![],
            spec,
        );
        write_json(&dirs.state_file(), &created).unwrap();
        let st = read_state(&dirs).unwrap();
        assert_eq!(st.summary(false).state, ContainerState::Created);

        write_started(
            &dirs,
            Started {
                pid: 4242,
                pid_start: Some(7),
            },
        )
        .unwrap();
        let st = read_state(&dirs).unwrap();
        assert_eq!(
            (st.phase, st.pid, st.pid_start),
            (Phase::Running, Some(4242), Some(7))
        );
        assert_eq!(st.summary(true).state, ContainerState::Running);
        assert_eq!(st.summary(true).pid, Some(4242));
        // The shim died without recording an exit.
        assert_eq!(
            st.summary(false).state,
            ContainerState::Exited(ExitStatus::Exited(-1))
        );
        // The exit recorded on disk is what counts from then on.
        let mut exited = st.clone();
        exited.phase = Phase::Exited;
        exited.exit = Some(ExitStatus::Exited(3));
        write_json(&dirs.state_file(), &exited).unwrap();
        assert_eq!(
            read_state(&dirs).unwrap().summary(false).state,
            ContainerState::Exited(ExitStatus::Exited(3))
        );

        // A restart: state.json still says created, and the runtime directory is gone.
        write_json(&dirs.state_file(), &created).unwrap();
        fs::remove_dir_all(&dirs.run).unwrap();
        assert_eq!(
            read_state(&dirs).unwrap().summary(false).state,
            ContainerState::Exited(ExitStatus::Exited(-1))
        );
        dirs.remove().unwrap();
    }

    #[test]
    fn runtime_directories_are_on_a_tmpfs_and_made_again_after_a_reboot() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout {
            home: home.path().join("locald"),
        };
        let dirs = layout.dirs(&id());
        layout.create_run_dir(&dirs).unwrap();
        assert!(dirs.run.is_dir());
        let link = layout.run();
        let Ok(target) = fs::read_link(&link) else {
            // No tmpfs this user may use: the directory is on disk, in the home.
            assert!(fs::symlink_metadata(&link).unwrap().is_dir());
            eprintln!("SKIP (part): no usable tmpfs here, runtime directories stay on disk");
            return;
        };
        assert!(is_tmpfs(&target), "{} is not on a tmpfs", target.display());
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(&target).unwrap().mode() & 0o777, 0o711);

        // A reboot empties the tmpfs: the next container makes the target again.
        fs::remove_dir_all(&target).unwrap();
        let next = layout.dirs(&id());
        layout.create_run_dir(&next).unwrap();
        assert!(next.run.is_dir());
        assert_eq!(fs::read_link(&link).unwrap(), target);

        // Removing a container removes both of its directories, and only those.
        fs::create_dir_all(&next.data).unwrap();
        next.remove().unwrap();
        assert!(!next.run.exists() && !next.data.exists());
        assert!(target.is_dir());
        // A container with neither directory left is removed without an error.
        next.remove().unwrap();
        fs::remove_dir(&target).unwrap();
    }

    #[test]
    fn a_tmpfs_place_that_someone_else_can_write_to_is_not_used() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout {
            home: home.path().join("locald"),
        };
        let first = layout.dirs(&id());
        layout.create_run_dir(&first).unwrap();
        let Ok(target) = fs::read_link(layout.run()) else {
            eprintln!("SKIP: no usable tmpfs here, runtime directories stay on disk");
            return;
        };
        // After a reboot, someone else made the home's place first, open to all.
        fs::remove_dir_all(&target).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::create_dir(&target).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o777)).unwrap();
        let next = layout.dirs(&id());
        layout.create_run_dir(&next).unwrap();
        // The home's runtime directories are on disk now, in the home itself.
        let run = fs::symlink_metadata(layout.run()).unwrap();
        assert!(run.is_dir(), "run is still a link");
        assert!(next.run.is_dir());
        assert_eq!(
            fs::read_dir(&target).unwrap().count(),
            0,
            "the open place was used"
        );
        fs::remove_dir(&target).unwrap();
    }
}
