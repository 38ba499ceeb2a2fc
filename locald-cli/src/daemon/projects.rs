//! Projects in the daemon: one supervisor per `locald.toml` project, held by the
//! daemon so that services outlive the CLI that started them, and brought back after
//! the daemon itself was killed.
//!
//! # Recovery
//!
//! Each project that is up has a record, `$LOCALD_HOME/projects/<name>/daemon.json`
//! (written through a temporary file and a rename): its file, the services asked for,
//! and each running service's process group and the start time of its leader. A
//! daemon that starts finds the records of projects a previous daemon left up, kills
//! the process groups that are still the same processes (same start time: a pid may
//! have been reused), removes the containers of their image services, and brings the
//! projects up again. So after a `kill -9` of the daemon the services run once, under
//! the new daemon's supervision, and nothing is orphaned.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use locald::services::logfile::{read_tail, LogRecord};
use locald::services::{LogLine, Project, Run, ServiceStatus, Supervisor, UpOptions};
use locald::{Error, LogStream, Result, Runtime};
use serde::{Deserialize, Serialize};

use crate::daemon::dashboard::{self, ProjectEntry};

/// `POST /projects/up`: bring a project up (or start its stopped services).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpRequest {
    /// The project file, as an absolute path.
    pub file: PathBuf,
    /// Only these services and what they depend on (empty: all).
    #[serde(default)]
    pub services: Vec<String>,
    /// How long to wait for the services to settle before answering, in ms.
    #[serde(default)]
    pub wait_ms: u64,
}

/// A project and its services' status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectStatus {
    /// The project's name.
    pub name: String,
    /// Its file.
    pub file: PathBuf,
    /// Its services, in start order.
    pub services: Vec<ServiceStatus>,
    /// The host names set in `locald.toml` (`hosts`), by service.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, Vec<String>>,
}

/// One line of a project's logs, as the logs route streams them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEntry {
    /// The service.
    pub service: String,
    /// `stdout` or `stderr` (`log` for a line of a log file written before lines
    /// kept their stream).
    pub stream: String,
    /// The line.
    pub line: String,
    /// When the service wrote it (RFC 3339), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// What the daemon (`daemon.json`), or an attached `locald up` (`attached.json`),
/// records of a project that is up.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) file: PathBuf,
    pub(crate) services: Vec<String>,
    /// Running services: the leader's pid (its process group) and its start time.
    pub(crate) running: BTreeMap<String, (u32, u64)>,
    /// The names of its image services' containers.
    pub(crate) containers: Vec<String>,
    /// The attached `locald up` that supervises the project: its pid and start time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) owner: Option<(u32, u64)>,
}

impl Record {
    /// A new record of `project`'s services, none running yet.
    pub(crate) fn of(project: &Project, file: PathBuf, services: Vec<String>) -> Record {
        let containers = project
            .services
            .values()
            .filter(|s| matches!(s.run, Run::Image { .. }))
            .map(|s| format!("{}-{}", project.name, s.name))
            .collect();
        Record {
            file,
            services,
            containers,
            ..Record::default()
        }
    }

    /// Reads a record; `None` when there is none (or it is damaged, which is logged).
    pub(crate) fn read(path: &Path) -> Option<Record> {
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text)
            .inspect_err(|err| {
                tracing::warn!(record = %path.display(), %err, "ignoring a damaged project record")
            })
            .ok()
    }

    /// Ends what a supervisor that died left: the process groups of its services that
    /// are still the same processes, and its image services' containers.
    pub(crate) async fn reap(&self, runtime: &dyn Runtime) {
        for (service, (pid, started)) in &self.running {
            if locald::native::util::process_start_time(*pid) == Some(*started) {
                tracing::warn!(
                    service,
                    pid,
                    "stopping a service left by a supervisor that died"
                );
                kill_group(*pid);
            }
        }
        for container in &self.containers {
            match runtime.remove_container(container, true).await {
                Ok(()) => {
                    tracing::warn!(
                        container,
                        "removed a container left by a supervisor that died"
                    )
                }
                Err(Error::NotFound { .. }) => {}
                Err(err) => {
                    tracing::warn!(container, %err, "cannot remove a container left by a supervisor that died")
                }
            }
        }
    }
}

struct Entry {
    file: PathBuf,
    hosts: BTreeMap<String, Vec<String>>,
    supervisor: Supervisor,
    recorder: tokio::task::JoinHandle<()>,
}

/// The projects a daemon supervises.
pub struct Projects {
    runtime: Arc<dyn Runtime>,
    root: PathBuf,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Serializes `up` and `down`.
    changing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Projects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projects")
            .field("root", &self.root)
            .field(
                "up",
                &self.entries.lock().unwrap().keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Projects {
    /// Projects whose logs, data and records live under `root`
    /// (`$LOCALD_HOME/projects`).
    pub fn new(runtime: Arc<dyn Runtime>, root: PathBuf) -> Arc<Self> {
        Arc::new(Projects {
            runtime,
            root,
            entries: Mutex::default(),
            changing: tokio::sync::Mutex::new(()),
        })
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.root.join(name).join("daemon.json")
    }

    /// Brings the project in `request.file` up, or, when it is up already, starts
    /// those of its services that are not running.
    pub async fn up(self: &Arc<Self>, request: UpRequest) -> Result<ProjectStatus> {
        let mut project = Project::load(&request.file).map_err(|e| {
            Error::invalid("project", request.file.display().to_string(), e.to_string())
        })?;
        if !request.services.is_empty() {
            project = project.select(&request.services).map_err(|e| {
                Error::invalid("service", request.services.join(" "), e.to_string())
            })?;
        }
        let name = project.name.clone();
        let _changing = self.changing.lock().await;
        let existing = self
            .entries
            .lock()
            .unwrap()
            .get(&name)
            .map(|e| (e.file.clone(), e.supervisor.clone()));
        let supervisor = match existing {
            Some((file, supervisor)) => {
                if file != request.file {
                    return Err(Error::invalid(
                        "project",
                        name.clone(),
                        format!(
                            "a project named {name} is already up from {}; run `locald down -p {name}` first",
                            file.display()
                        ),
                    ));
                }
                let have: Vec<String> = supervisor.status().into_iter().map(|s| s.name).collect();
                for service in project.services.keys() {
                    if !have.contains(service) {
                        return Err(Error::invalid(
                            "service",
                            service.clone(),
                            format!(
                                "project {name} is up without it; run `locald down -p {name}` and up again"
                            ),
                        ));
                    }
                    supervisor.start_service(service).await?;
                }
                supervisor
            }
            None => {
                let dir = self.root.join(&name);
                let record = Record::of(&project, request.file.clone(), request.services.clone());
                write_record(&self.record_path(&name), &record)?;
                let supervisor = match project
                    .up(self.runtime.clone(), UpOptions::new(dir.join("logs")))
                    .await
                {
                    Ok(s) => s,
                    Err(err) => {
                        let _ = std::fs::remove_file(self.record_path(&name));
                        return Err(err);
                    }
                };
                let recorder = tokio::spawn(record_changes(
                    self.record_path(&name),
                    record,
                    supervisor.clone(),
                ));
                self.entries.lock().unwrap().insert(
                    name.clone(),
                    Entry {
                        file: request.file.clone(),
                        hosts: hosts_of(&project),
                        supervisor: supervisor.clone(),
                        recorder,
                    },
                );
                supervisor
            }
        };
        let services = if request.wait_ms > 0 {
            supervisor
                .wait_ready(Duration::from_millis(request.wait_ms))
                .await
        } else {
            supervisor.status()
        };
        Ok(ProjectStatus {
            hosts: hosts_of(&project),
            name,
            file: request.file,
            services,
        })
    }

    fn get(&self, name: &str) -> Result<(PathBuf, Supervisor)> {
        self.entry(name)
            .map(|(file, supervisor, _)| (file, supervisor))
    }

    fn entry(&self, name: &str) -> Result<(PathBuf, Supervisor, BTreeMap<String, Vec<String>>)> {
        let entries = self.entries.lock().unwrap();
        match entries.get(name) {
            Some(e) => Ok((e.file.clone(), e.supervisor.clone(), e.hosts.clone())),
            None => {
                let up: Vec<&str> = entries.keys().map(String::as_str).collect();
                Err(Error::NotFound {
                    kind: "project",
                    name: if up.is_empty() {
                        format!("{name} (no project is up)")
                    } else {
                        format!("{name} (up: {})", up.join(", "))
                    },
                })
            }
        }
    }

    /// Stops every service of project `name` and forgets it.
    pub async fn down(&self, name: &str) -> Result<ProjectStatus> {
        let _changing = self.changing.lock().await;
        let (file, supervisor, hosts) = self.entry(name)?;
        supervisor.down().await;
        if let Some(entry) = self.entries.lock().unwrap().remove(name) {
            entry.recorder.abort();
        }
        let _ = std::fs::remove_file(self.record_path(name));
        Ok(ProjectStatus {
            name: name.to_owned(),
            file,
            services: supervisor.status(),
            hosts,
        })
    }

    /// The status of project `name`.
    pub fn status(&self, name: &str) -> Result<ProjectStatus> {
        let (file, supervisor, hosts) = self.entry(name)?;
        Ok(ProjectStatus {
            name: name.to_owned(),
            file,
            services: supervisor.status(),
            hosts,
        })
    }

    /// Every project that is up.
    pub fn list(&self) -> Vec<ProjectStatus> {
        self.entries
            .lock()
            .unwrap()
            .iter()
            .map(|(name, e)| ProjectStatus {
                name: name.clone(),
                file: e.file.clone(),
                services: e.supervisor.status(),
                hosts: e.hosts.clone(),
            })
            .collect()
    }

    /// `restart`, `stop` or `start` one service.
    pub async fn act(&self, name: &str, service: &str, verb: &str) -> Result<ProjectStatus> {
        let (_, supervisor) = self.get(name)?;
        match verb {
            "restart" | "start" => {
                if verb == "restart" {
                    supervisor.restart_service(service).await?;
                } else {
                    supervisor.start_service(service).await?;
                }
                // Answer once it runs again (or could not), not while it waits.
                supervisor
                    .wait_for(service, Duration::from_secs(10), |s| {
                        !matches!(s.state, locald::services::ServiceState::Waiting)
                    })
                    .await;
            }
            "stop" => supervisor.stop_service(service).await?,
            _ => {
                return Err(Error::invalid(
                    "action",
                    verb,
                    "the actions are restart, stop and start",
                ))
            }
        }
        self.status(name)
    }

    /// The last `tail` lines of each asked service's log (all services', one after
    /// the other), and, with `follow`, the lines they write from now on.
    pub fn logs(
        &self,
        name: &str,
        service: Option<&str>,
        tail: Option<usize>,
        follow: bool,
    ) -> Result<tokio::sync::mpsc::Receiver<LogEntry>> {
        let (_, supervisor) = self.get(name)?;
        let names: Vec<String> = supervisor.status().into_iter().map(|s| s.name).collect();
        let wanted: Vec<String> = match service {
            None => names,
            Some(one) if names.iter().any(|n| n == one) => vec![one.to_owned()],
            Some(one) => {
                return Err(Error::invalid(
                    "service",
                    one,
                    format!(
                        "project {name} has no such service (services: {})",
                        names.join(", ")
                    ),
                ))
            }
        };
        // Subscribe first, so that no line falls between the file and the live ones.
        let mut live = follow.then(|| supervisor.subscribe_logs());
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let files: Vec<(String, PathBuf)> = wanted
            .iter()
            .map(|s| (s.clone(), supervisor.log_file(s)))
            .collect();
        tokio::spawn(async move {
            // Each service's last lines, then all of them in the order they were
            // written, as `docker compose logs` interleaves its containers.
            let mut history: Vec<(String, LogRecord)> = files
                .into_iter()
                .flat_map(|(service, file)| {
                    read_tail(&file, tail)
                        .into_iter()
                        .map(move |record| (service.clone(), record))
                })
                .collect();
            history.sort_by_key(|(_, record)| record.time);
            for (service, record) in history {
                let entry = LogEntry {
                    service,
                    stream: record.stream.map_or("log", LogStream::as_str).into(),
                    line: record.line,
                    time: record.time.map(rfc3339),
                };
                if tx.send(entry).await.is_err() {
                    return;
                }
            }
            let Some(live) = live.as_mut() else { return };
            loop {
                match live.recv().await {
                    Ok(line) if wanted.contains(&line.service) => {
                        if tx.send(entry_of(line)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(rx)
    }

    /// Cleans up after a daemon that was killed while projects were up (see the
    /// module's docs) and brings those projects up again. Returns their names.
    pub async fn recover(self: &Arc<Self>) -> Vec<String> {
        let Ok(dirs) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut recovered = Vec::new();
        for dir in dirs.flatten() {
            let path = dir.path().join("daemon.json");
            let Some(record) = Record::read(&path) else {
                continue;
            };
            record.reap(self.runtime.as_ref()).await;
            let _ = std::fs::remove_file(&path);
            let request = UpRequest {
                file: record.file.clone(),
                services: record.services.clone(),
                wait_ms: 0,
            };
            match self.up(request).await {
                Ok(status) => recovered.push(status.name),
                Err(err) => tracing::warn!(
                    file = %record.file.display(),
                    %err,
                    "cannot bring a project up again after the daemon died"
                ),
            }
        }
        recovered
    }

    /// Stops every project's services because the daemon stops, keeping their
    /// records (with nothing running) so that the next daemon brings them up again.
    pub async fn shutdown(&self) {
        let _changing = self.changing.lock().await;
        let entries = std::mem::take(&mut *self.entries.lock().unwrap());
        for (name, entry) in entries {
            entry.recorder.abort();
            entry.supervisor.down().await;
            let path = self.record_path(&name);
            if let Ok(mut record) = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_slice::<Record>(&t).map_err(|e| e.to_string()))
            {
                record.running.clear();
                let _ = write_record(&path, &record);
            }
        }
    }
}

impl dashboard::Projects for Projects {
    fn projects(&self) -> Vec<ProjectEntry> {
        self.entries
            .lock()
            .unwrap()
            .iter()
            .map(|(name, e)| ProjectEntry {
                name: name.clone(),
                file: e.file.display().to_string(),
                supervisor: e.supervisor.clone(),
            })
            .collect()
    }
}

/// The host names `project`'s services set, by service.
fn hosts_of(project: &Project) -> BTreeMap<String, Vec<String>> {
    project
        .services
        .values()
        .filter(|s| !s.hosts.is_empty())
        .map(|s| (s.name.clone(), s.hosts.clone()))
        .collect()
}

fn entry_of(line: LogLine) -> LogEntry {
    LogEntry {
        service: line.service,
        stream: line.stream.as_str().into(),
        line: line.line,
        time: Some(rfc3339(line.time)),
    }
}

/// `time` as RFC 3339 in UTC, to the nanosecond, as the log files keep it.
fn rfc3339(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_nanos(time).to_string()
}

pub(crate) fn write_record(path: &Path, record: &Record) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    let json = serde_json::to_vec_pretty(record).expect("a record serializes");
    locald::native::util::write_atomic(path, &json)?;
    Ok(())
}

/// Keeps the record's running services in step with the supervisor's.
pub(crate) async fn record_changes(path: PathBuf, mut record: Record, supervisor: Supervisor) {
    let mut changes = supervisor.changes();
    loop {
        let running: BTreeMap<String, (u32, u64)> = changes
            .borrow_and_update()
            .values()
            .filter_map(|s| {
                let pid = s.pid?;
                let started = locald::native::util::process_start_time(pid)?;
                Some((s.name.clone(), (pid, started)))
            })
            .collect();
        if running != record.running {
            record.running = running;
            if let Err(err) = write_record(&path, &record) {
                tracing::warn!(%err, "cannot record a project's services");
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// SIGKILL to the process group led by `pid` (services lead their own group), and
/// to `pid` itself.
fn kill_group(pid: u32) {
    #[cfg(unix)]
    {
        use nix::{sys::signal::Signal, unistd::Pid};
        let Ok(pid) = i32::try_from(pid) else { return };
        let _ = nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    #[cfg(not(unix))]
    let _ = pid;
}
