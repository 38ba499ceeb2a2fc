//! The docker containers and execs this daemon created: what docker's API knows about
//! a container beyond what [`Runtime`](locald::Runtime) keeps (a container created and
//! not started yet, its docker id, the configuration it was created with).
//!
//! With a state directory, each entry is also a JSON file in `<state>/docker/`, so a
//! restarted daemon knows its docker ids and the containers created and not started;
//! without one (`--stdio`, tests) the table lives in memory only and a restarted
//! daemon serves the containers under their runtime ids.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::SystemTime,
};

use locald::{ContainerSpec, ExitStatus};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot, watch};

use crate::daemon::session::Pipes;

/// Every docker container and exec of this daemon.
#[derive(Debug)]
pub(crate) struct Containers {
    entries: Mutex<Vec<Arc<Entry>>>,
    execs: Mutex<HashMap<String, Arc<super::exec::Exec>>>,
    events: broadcast::Sender<Event>,
    /// Where entries are recorded, if anywhere.
    dir: Option<PathBuf>,
}

/// An entry as recorded on disk.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    id: String,
    name: String,
    image: String,
    created: SystemTime,
    config: serde_json::Value,
    host_config: serde_json::Value,
    spec: ContainerSpec,
    runtime_id: Option<String>,
}

/// A docker event (`GET /events`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Event {
    #[serde(rename = "Type")]
    kind: &'static str,
    #[serde(rename = "Action")]
    action: String,
    #[serde(rename = "Actor")]
    actor: Actor,
    status: String,
    id: String,
    from: String,
    time: u64,
    #[serde(rename = "timeNano")]
    time_nano: u128,
}

#[derive(Debug, Clone, Serialize)]
struct Actor {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Attributes")]
    attributes: HashMap<String, String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Containers {
    /// The table recorded in `dir` (`None`: in memory only). Records that cannot be
    /// read are skipped with a warning.
    pub(crate) fn open(dir: Option<PathBuf>) -> Self {
        let mut entries = Vec::new();
        if let Some(dir) = &dir {
            for file in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = file.path();
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let record: Record = match std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                {
                    Ok(r) => r,
                    Err(err) => {
                        tracing::warn!(path = %path.display(), %err, "skipping a docker container record");
                        continue;
                    }
                };
                entries.push(Arc::new(Entry {
                    id: record.id,
                    name: record.name,
                    image: record.image,
                    created: record.created,
                    config: record.config,
                    host_config: record.host_config,
                    spec: record.spec,
                    live: Mutex::new(Live {
                        runtime_id: record.runtime_id,
                        ..Live::default()
                    }),
                    exit: watch::channel(None).0,
                }));
            }
        }
        Containers {
            entries: Mutex::new(entries),
            execs: Mutex::default(),
            events: broadcast::channel(256).0,
            dir,
        }
    }

    fn record_path(&self, id: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{id}.json")))
    }

    /// Records `entry` as it is now (created, or started with its runtime id).
    pub(crate) fn save(&self, entry: &Entry) {
        let (Some(dir), Some(path)) = (&self.dir, self.record_path(&entry.id)) else {
            return;
        };
        let record = Record {
            id: entry.id.clone(),
            name: entry.name.clone(),
            image: entry.image.clone(),
            created: entry.created,
            config: entry.config.clone(),
            host_config: entry.host_config.clone(),
            spec: entry.spec.clone(),
            runtime_id: entry.runtime_id(),
        };
        let written = std::fs::create_dir_all(dir).and_then(|()| {
            let bytes = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
            crate::daemon::state::write_atomic(&path, &bytes)
        });
        if let Err(err) = written {
            tracing::warn!(path = %path.display(), %err, "cannot record a docker container; a restarted daemon will not know its docker id");
        }
    }

    pub(crate) fn insert(&self, entry: Arc<Entry>) {
        self.save(&entry);
        lock(&self.entries).push(entry);
    }

    pub(crate) fn forget(&self, id: &str) {
        lock(&self.entries).retain(|e| e.id != id);
        if let Some(path) = self.record_path(id) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// How many containers are created and not started.
    pub(crate) fn created_count(&self) -> usize {
        lock(&self.entries)
            .iter()
            .filter(|e| e.runtime_id().is_none())
            .count()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Entry>> {
        lock(&self.entries).clone()
    }

    /// True when a docker container (created or started) has this name.
    pub(crate) fn name_taken(&self, name: &str) -> Option<String> {
        lock(&self.entries)
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.id.clone())
    }

    /// The entry `key` names: a docker id, a unique prefix of one, a name (with or
    /// without docker's leading `/`), or the runtime id of a started one.
    pub(crate) fn find(&self, key: &str) -> Option<Arc<Entry>> {
        let key = key.strip_prefix('/').unwrap_or(key);
        let entries = lock(&self.entries);
        if let Some(e) = entries
            .iter()
            .find(|e| e.id == key || e.name == key || e.runtime_id().as_deref() == Some(key))
        {
            return Some(e.clone());
        }
        let mut matches = entries.iter().filter(|e| e.id.starts_with(key));
        match (matches.next(), matches.next()) {
            (Some(e), None) if !key.is_empty() => Some(e.clone()),
            _ => None,
        }
    }

    /// The entry whose started container has this runtime id.
    pub(crate) fn by_runtime_id(&self, runtime_id: &str) -> Option<Arc<Entry>> {
        lock(&self.entries)
            .iter()
            .find(|e| e.runtime_id().as_deref() == Some(runtime_id))
            .cloned()
    }

    pub(crate) fn add_exec(&self, exec: Arc<super::exec::Exec>) {
        lock(&self.execs).insert(exec.id.clone(), exec);
    }

    pub(crate) fn exec(&self, id: &str) -> Option<Arc<super::exec::Exec>> {
        lock(&self.execs).get(id).cloned()
    }

    pub(crate) fn subscribe_events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Sends a container event to `GET /events` listeners.
    pub(crate) fn event(&self, action: &str, id: &str, name: &str, image: &str) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let mut attributes = HashMap::new();
        attributes.insert("name".to_owned(), name.to_owned());
        attributes.insert("image".to_owned(), image.to_owned());
        let _ = self.events.send(Event {
            kind: "container",
            action: action.to_owned(),
            actor: Actor {
                id: id.to_owned(),
                attributes,
            },
            status: action.split(':').next().unwrap_or(action).to_owned(),
            id: id.to_owned(),
            from: image.to_owned(),
            time: now.as_secs(),
            time_nano: now.as_nanos(),
        });
    }
}

/// A docker container: created here, perhaps started.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The docker id (64 hex digits).
    pub(crate) id: String,
    /// Its name, also the runtime container's name.
    pub(crate) name: String,
    /// The image as the client named it.
    pub(crate) image: String,
    pub(crate) created: SystemTime,
    /// `Config` and `HostConfig` as docker's inspect shows them.
    pub(crate) config: serde_json::Value,
    pub(crate) host_config: serde_json::Value,
    pub(crate) spec: ContainerSpec,
    pub(crate) live: Mutex<Live>,
    /// The main process's exit status, once it ended (reset by a restart).
    pub(crate) exit: watch::Sender<Option<ExitStatus>>,
}

/// What changes as the container runs.
#[derive(Default)]
pub(crate) struct Live {
    /// The runtime's id, once started.
    pub(crate) runtime_id: Option<String>,
    /// A start is under way.
    pub(crate) starting: bool,
    /// Attach streams waiting for the start, to take the main process's pipes.
    pub(crate) attachers: Vec<oneshot::Sender<Pipes>>,
    pub(crate) started_at: Option<SystemTime>,
    pub(crate) finished_at: Option<SystemTime>,
    /// This daemon started it and watches its exit (`exit` will be set); false for
    /// one a previous daemon started.
    pub(crate) monitored: bool,
    /// While its main process, started on a terminal, runs: where
    /// `/containers/{id}/resize` sends sizes.
    pub(crate) resize: Option<tokio::sync::mpsc::UnboundedSender<locald::TerminalSize>>,
    /// A size asked for before the start (the initial size of the next start).
    pub(crate) size: Option<locald::TerminalSize>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("runtime_id", &self.runtime_id)
            .field("starting", &self.starting)
            .field("attachers", &self.attachers.len())
            .finish()
    }
}

impl Entry {
    pub(crate) fn live(&self) -> MutexGuard<'_, Live> {
        lock(&self.live)
    }

    pub(crate) fn runtime_id(&self) -> Option<String> {
        self.live().runtime_id.clone()
    }

    pub(crate) fn tty(&self) -> bool {
        self.spec.tty
    }
}
