//! The [`Runtime`] trait every backend implements.

use std::{collections::BTreeSet, fmt, time::Duration};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{
    Command, ContainerHandle, ContainerSpec, ContainerSummary, Error, ExitStatus, ImageRef,
    LogOptions, Output, Platform, Process, Result, Signal,
};

/// Something a runtime may or may not be able to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Capability {
    /// Running host commands ([`Runtime::run_command`], [`Runtime::spawn`]).
    Commands,
    /// Running OCI containers and managing their life cycle.
    Containers,
    /// Pulling images from registries.
    Images,
    /// Running commands inside running containers ([`Runtime::exec`]).
    Exec,
    /// Safe Mode for untrusted workloads.
    SafeMode,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::Commands => "running commands",
            Capability::Containers => "running containers",
            Capability::Images => "pulling images",
            Capability::Exec => "exec into containers",
            Capability::SafeMode => "safe mode",
        })
    }
}

/// What a runtime says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RuntimeInfo {
    /// A short backend name: `process`, `container`, `lima`, `wsl`, `remote`.
    pub name: String,
    /// The platform the work runs on.
    pub platform: Platform,
    /// What it can do.
    pub capabilities: BTreeSet<Capability>,
}

impl RuntimeInfo {
    /// A description of a runtime.
    pub fn new(
        name: impl Into<String>,
        platform: Platform,
        capabilities: impl IntoIterator<Item = Capability>,
    ) -> Self {
        RuntimeInfo {
            name: name.into(),
            platform,
            capabilities: capabilities.into_iter().collect(),
        }
    }

    /// True when the runtime has `capability`.
    pub fn supports(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }

    /// The error to return for a missing capability.
    pub fn unsupported(&self, capability: Capability) -> Error {
        Error::Unsupported {
            capability,
            runtime: self.name.clone(),
            platform: self.platform,
        }
    }
}

/// Options for [`Runtime::pull_image`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PullOptions {
    /// The platform to pick from a multi-platform image, as `os/arch[/variant]`
    /// (default: the runtime's own).
    pub platform: Option<String>,
    /// Allow plain HTTP or unverified TLS for this registry.
    pub insecure: bool,
}

/// What a pulled or stored image is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ImageSummary {
    /// The reference it was pulled or tagged as.
    pub reference: ImageRef,
    /// The manifest digest.
    pub digest: String,
    /// The total size of its layers in bytes (compressed, as stored).
    pub size: u64,
}

/// A stream of container log chunks, in the order they were written.
pub type LogChunks =
    std::pin::Pin<Box<dyn futures_core::Stream<Item = Result<(crate::LogStream, Vec<u8>)>> + Send>>;

/// Runs commands and containers somewhere: on this host, in a Lima VM, in WSL2, or
/// through a locald daemon. Object safe: hold it as `Arc<dyn Runtime>`.
///
/// Every method a backend cannot serve returns [`Error::Unsupported`] naming the
/// capability, the backend and the platform; the provided defaults do exactly that.
#[async_trait]
pub trait Runtime: Send + Sync + fmt::Debug {
    /// The backend's name, platform and capabilities.
    fn info(&self) -> RuntimeInfo;

    /// Starts a command and returns at once with a handle to it.
    async fn spawn(&self, command: Command) -> Result<Process>;

    /// Runs a command to completion and returns its exit status and captured output.
    ///
    /// A command that outlives its [`timeout`](Command::timeout) is killed with its
    /// whole process group and this returns [`Error::Timeout`].
    async fn run_command(&self, command: Command) -> Result<Output> {
        self.spawn(command).await?.output().await
    }

    /// Creates and starts a container.
    async fn run_container(&self, spec: ContainerSpec) -> Result<ContainerHandle> {
        let _ = spec;
        Err(self.info().unsupported(Capability::Containers))
    }

    /// Lists containers: running ones, or all with `all`.
    async fn list_containers(&self, all: bool) -> Result<Vec<ContainerSummary>> {
        let _ = all;
        Err(self.info().unsupported(Capability::Containers))
    }

    /// Describes one container, by id, unique id prefix or name.
    async fn inspect_container(&self, id: &str) -> Result<ContainerSummary> {
        let _ = id;
        Err(self.info().unsupported(Capability::Containers))
    }

    /// Waits for a container's main process to end.
    async fn wait_container(&self, id: &str) -> Result<ExitStatus> {
        let _ = id;
        Err(self.info().unsupported(Capability::Containers))
    }

    /// Sends SIGTERM, then SIGKILL after `grace` if it is still running.
    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let _ = (id, grace);
        Err(self.info().unsupported(Capability::Containers))
    }

    /// Sends a signal to a container's main process.
    async fn kill_container(&self, id: &str, signal: Signal) -> Result<()> {
        let _ = (id, signal);
        Err(self.info().unsupported(Capability::Containers))
    }

    /// Removes a stopped container (a running one too with `force`).
    async fn remove_container(&self, id: &str, force: bool) -> Result<()> {
        let _ = (id, force);
        Err(self.info().unsupported(Capability::Containers))
    }

    /// Reads a container's logs.
    async fn container_logs(&self, id: &str, options: LogOptions) -> Result<LogChunks> {
        let _ = (id, options);
        Err(self.info().unsupported(Capability::Containers))
    }

    /// Runs a command inside a running container.
    async fn exec(&self, id: &str, command: Command) -> Result<Process> {
        let _ = (id, command);
        Err(self.info().unsupported(Capability::Exec))
    }

    /// Pulls an image into the runtime's store.
    async fn pull_image(&self, image: &ImageRef, options: PullOptions) -> Result<ImageSummary> {
        let _ = (image, options);
        Err(self.info().unsupported(Capability::Images))
    }
}
