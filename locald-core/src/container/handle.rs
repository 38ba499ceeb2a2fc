//! A container once it runs: [`ContainerHandle`], [`ContainerSummary`] and its logs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;
use crate::{ImageRef, Process, Result};

/// The state of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state", content = "status")]
#[non_exhaustive]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Its main process runs.
    Running,
    /// Its main process is frozen.
    Paused,
    /// Its main process ended like this.
    Exited(crate::ExitStatus),
}

/// What `list` and `inspect` report about a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ContainerSummary {
    /// The full id (64 hex characters).
    pub id: String,
    /// Its name.
    pub name: String,
    /// The image it was made from, if any.
    pub image: Option<ImageRef>,
    /// The command line its main process runs.
    pub command: Vec<String>,
    /// Its state.
    pub state: ContainerState,
    /// When it was created, in seconds since the Unix epoch.
    pub created: u64,
    /// The main process id on the host, while it runs.
    pub pid: Option<u32>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its published ports, with the host ports actually bound.
    pub ports: Vec<PortMapping>,
    /// True when the kernel's out-of-memory killer ended it (its memory limit was hit).
    #[serde(default)]
    pub oom_killed: bool,
}

impl ContainerSummary {
    /// A summary with the given id, name and state; every other field empty. Backends
    /// fill in the rest field by field.
    pub fn new(id: impl Into<String>, name: impl Into<String>, state: ContainerState) -> Self {
        ContainerSummary {
            id: id.into(),
            name: name.into(),
            image: None,
            command: Vec::new(),
            state,
            created: 0,
            pid: None,
            labels: BTreeMap::new(),
            ports: Vec::new(),
            oom_killed: false,
        }
    }
}

/// A started container: its id and name, and its main process (stdio pipes, wait,
/// kill). Dropping the handle does not stop the container; use
/// [`Runtime::stop_container`](crate::Runtime::stop_container) or
/// [`ContainerSpec::auto_remove`].
#[derive(Debug)]
pub struct ContainerHandle {
    id: String,
    name: String,
    process: Process,
}

impl ContainerHandle {
    /// Assembles a handle from a backend's parts.
    pub fn new(id: impl Into<String>, name: impl Into<String>, process: Process) -> Self {
        ContainerHandle {
            id: id.into(),
            name: name.into(),
            process,
        }
    }

    /// The full container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The main process: take its stdio, wait for it, signal it.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Waits for the main process to end.
    pub async fn wait(&mut self) -> Result<crate::ExitStatus> {
        self.process.wait().await
    }

    /// Signals the main process.
    pub async fn kill(&mut self, signal: crate::Signal) -> Result<()> {
        self.process.kill(signal).await
    }

    /// Gives up the handle, returning the id, the name and the main process.
    pub fn into_parts(self) -> (String, String, Process) {
        (self.id, self.name, self.process)
    }
}

/// Which logs to read and how.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LogOptions {
    /// Keep streaming new output until the container exits.
    pub follow: bool,
    /// Only the last this many lines.
    pub tail: Option<usize>,
}

/// Where a piece of log came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// The container's stdout.
    Stdout,
    /// The container's stderr.
    Stderr,
}

impl LogStream {
    /// `stdout` or `stderr`, as it is serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}
